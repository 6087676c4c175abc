"""The raw transport, shared by every driver and by the diagnosis steps: one implementation for all.

- `ssl_context(config)`: the client `SSLContext` a `BrokerConfig` asks for (its CA file or the system
  store, its client certificate and key, host-name checking on or off).
- `classify(exc)`: a socket or `ssl` exception as a cause code (`connection_refused`, `connect_timeout`,
  `dns_failure`, `tls_untrusted`, `tls_expired`, `tls_not_yet_valid`, `tls_hostname_mismatch`,
  `tls_not_offered`, `tls_client_cert_required`, `tls_client_cert_rejected`, ...). A broker refuses a
  client certificate with a TLS alert: with TLS 1.3 the client's handshake completes first and the alert
  arrives at the first read; `CERTIFICATE_REQUIRED` means none was sent, the others (`UNKNOWN_CA`,
  `BAD_CERTIFICATE`, ...) that one was refused, except that nats-server (Go) answers `BAD_CERTIFICATE`
  to both, so only the configuration (`client_cert`: was one sent?) tells them apart.
- `probe_tcp`, `probe_tls`, `speaks_tls`, `exchange`, `closes_at_once`: small deadline-bounded probes of
  one address (`closes_at_once`: the port accepts and closes before a byte, like a load balancer with no
  healthy backend).
- `diagnose(...)`: names the cause when a client library failed without saying why (it timed out, the
  connection was lost, every certificate problem looked the same): TCP first, then either the configured
  TLS handshake or the protocol's own greeting in plaintext, whose answer tells a plaintext broker from a
  TLS port or from another protocol.
- `connect`, `read_answer`, `upgrade`, `unverified_context`, `presented`: the diagnosis steps' raw
  transport: a deadline-bounded connect, the read of a broker's first answer, a TLS upgrade (also after a
  plaintext preamble, as NATS does), and the certificate chain a broker presents.

Every probe connects only to the address it is given and never outlives the time it is given.
"""
from __future__ import annotations

import errno
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from .base import BrokerConfig, CheckFailed, Deadline, Greeting, one_line

_EXPIRED_CODES = {10}
_NOT_YET_VALID_CODES = {9}
_HOSTNAME_CODES = {62, 63, 64}
_NOT_TLS_REASONS = {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG",
                    "HTTP_REQUEST", "UNEXPECTED_EOF_WHILE_READING", "UNKNOWN_PROTOCOL",
                    "UNEXPECTED_RECORD", "BAD_RECORD_TYPE"}
_CLIENT_CERT_ALERTS = ("CERTIFICATE_REQUIRED", "BAD_CERTIFICATE", "UNKNOWN_CA", "CERTIFICATE_UNKNOWN",
                       "CERTIFICATE_EXPIRED", "CERTIFICATE_REVOKED", "ACCESS_DENIED",
                       "UNSUPPORTED_CERTIFICATE")
_MIN_WAIT = 0.001
MAX_ANSWER = 64 * 1024
_now = time.monotonic


class NamedContext(ssl.SSLContext):
    """A client context whose every connection verifies (and sends as SNI) one server name, whatever
    address it connects to and whatever name the client library passes: one address of a host name is
    checked as a node of its own, but its certificate is still the name's."""

    server_name = ""

    def wrap_socket(self, sock: Any, server_side: bool = False, do_handshake_on_connect: bool = True,
                    suppress_ragged_eofs: bool = True, server_hostname: Any = None, session: Any = None) -> Any:
        return super().wrap_socket(sock, server_side=server_side, do_handshake_on_connect=do_handshake_on_connect,
                                   suppress_ragged_eofs=suppress_ragged_eofs, server_hostname=self.server_name,
                                   session=session)

    def wrap_bio(self, incoming: Any, outgoing: Any, server_side: bool = False, server_hostname: Any = None,
                 session: Any = None) -> Any:
        return super().wrap_bio(incoming, outgoing, server_side=server_side, server_hostname=self.server_name,
                                session=session)


def _context(config: BrokerConfig) -> ssl.SSLContext:
    if config.server_name == config.host:
        return ssl.create_default_context(cafile=config.tls_ca_file or None)
    context = NamedContext(ssl.PROTOCOL_TLS_CLIENT)
    context.server_name = config.server_name
    if config.tls_ca_file:
        context.load_verify_locations(cafile=config.tls_ca_file)
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return context


def ssl_context(config: BrokerConfig) -> ssl.SSLContext:
    """The client `SSLContext` for `config`: CA file (else the system store), client certificate and key,
    certificate verification always on, host-name checking as configured (against `config.server_name`:
    the host name an address was resolved from)."""
    try:
        context = _context(config)
        if config.tls_cert_file:
            context.load_cert_chain(config.tls_cert_file, config.tls_key_file or None)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise CheckFailed("unknown", f"cannot load the TLS files: {exc}") from exc
    context.check_hostname = config.tls_verify_hostname
    return context


def system_ca_file() -> str | None:
    """The system CA bundle path OpenSSL uses by default, when there is one."""
    paths = ssl.get_default_verify_paths()
    return paths.cafile or paths.openssl_cafile or None


def _verify_failure(exc: ssl.SSLError | ValueError, where: str) -> CheckFailed:
    code = getattr(exc, "verify_code", None)
    text = getattr(exc, "verify_message", None) or str(exc)
    lowered = text.lower()
    if code in _NOT_YET_VALID_CODES or "not yet valid" in lowered:
        cause = "tls_not_yet_valid"
    elif code in _EXPIRED_CODES or "expired" in lowered:
        cause = "tls_expired"
    elif code in _HOSTNAME_CODES or "mismatch" in lowered or "doesn't match" in lowered:
        cause = "tls_hostname_mismatch"
    else:
        cause = "tls_untrusted"
    return CheckFailed(cause, f"{where}certificate verify failed: {text}")


CLIENT_CERT_CAUSES = ("tls_client_cert_required", "tls_client_cert_rejected")


def client_cert_alert(exc: BaseException) -> str | None:
    """The TLS alert (its OpenSSL reason) with which a broker refused the client certificate, or None."""
    reason = getattr(exc, "reason", None) or ""
    if isinstance(exc, ssl.SSLError) and "ALERT" in reason and any(a in reason for a in _CLIENT_CERT_ALERTS):
        return reason
    return None


def client_cert_failure(reason: str, client_cert: bool | None, where: str = "") -> CheckFailed:
    """`tls_client_cert_required` or `tls_client_cert_rejected` for a broker's TLS alert `reason`;
    `client_cert` says whether a client certificate was configured (None: unknown, judge by the alert)."""
    prefix = f"{where}: " if where else ""
    required = "CERTIFICATE_REQUIRED" in reason if client_cert is None else not client_cert
    if required:
        return CheckFailed("tls_client_cert_required", f"{prefix}the broker requires a TLS client certificate "
                                                       f"and none is configured ({reason})")
    return CheckFailed("tls_client_cert_rejected", f"{prefix}the broker refused the TLS client certificate "
                                                   f"({reason})")


def classify(exc: BaseException, *, during_tls: bool = False, where: str = "",
             client_cert: bool | None = None) -> CheckFailed | None:
    """The cause code of a socket or `ssl` exception, or None when it names none; `during_tls` says the
    exception came from a TLS handshake (a reset or EOF then means the port does not speak TLS);
    `client_cert` whether a client certificate is configured (it tells a refused certificate from a
    missing one where the broker's alert does not)."""
    prefix = f"{where}: " if where else ""
    if isinstance(exc, (ssl.SSLCertVerificationError, ssl.CertificateError)):
        return _verify_failure(exc, prefix)
    if isinstance(exc, socket.gaierror):
        return CheckFailed("dns_failure", f"{prefix}name lookup failed: {exc.strerror or exc}")
    if isinstance(exc, ConnectionRefusedError):
        return CheckFailed("connection_refused", f"{prefix}connection refused")
    if isinstance(exc, (socket.timeout, TimeoutError)):
        if during_tls:
            return CheckFailed("handshake_timeout", f"{prefix}no answer to the TLS handshake")
        return CheckFailed("connect_timeout", f"{prefix}TCP connect timed out")
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or ""
        if reason in _NOT_TLS_REASONS or isinstance(exc, ssl.SSLEOFError):
            return CheckFailed("tls_not_offered", f"{prefix}the port does not speak TLS ({exc})")
        if client_cert_alert(exc):
            return client_cert_failure(reason, client_cert, where)
        return CheckFailed("unknown", f"{prefix}TLS error: {exc}")
    if during_tls and isinstance(exc, (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)):
        return CheckFailed("tls_not_offered", f"{prefix}the port reset the TLS handshake ({exc})")
    if isinstance(exc, OSError) and exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return CheckFailed("connect_timeout", f"{prefix}{exc.strerror}")
    return None


def connect(ip: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to ip:port, or the socket error (TimeoutError when `timeout` is spent)."""
    if timeout < _MIN_WAIT:
        raise TimeoutError("no time left")
    sock = socket.create_connection((ip, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def probe_tcp(host: str, port: int, timeout: float) -> CheckFailed | None:
    """None when a TCP connection to host:port opens within `timeout`, else the cause."""
    try:
        connect(host, port, timeout).close()
    except OSError as exc:
        return classify(exc, where=f"{host}:{port}") or CheckFailed("unknown", f"{host}:{port}: {exc!r}")
    return None


def closes_at_once(host: str, port: int, timeout: float) -> bool:
    """True when host:port accepts a TCP connection and closes it (FIN or reset) within `timeout` without
    sending a byte and without being sent one: a proxy or load balancer with no healthy backend, an IP
    allow-list. A broker that waits for its client's greeting stays silent instead."""
    try:
        sock = connect(host, port, timeout)
    except OSError:
        return False
    try:
        sock.settimeout(max(timeout, _MIN_WAIT))
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True
    finally:
        sock.close()


def _closed_at_once(host: str, port: int, deadline: Deadline) -> CheckFailed | None:
    if closes_at_once(host, port, deadline.remaining(CLOSE_WAIT)):
        return CheckFailed("connection_closed", f"{host}:{port} accepts TCP connections and closes them at "
                                                f"once, before a byte")
    return None


CLOSE_WAIT = 0.2   # seconds an accepted connection is watched for an immediate close


def probe_tls(config: BrokerConfig, host: str, port: int, timeout: float,
              listen: float = 0.0) -> CheckFailed | None:
    """None when a TLS handshake with `config`'s settings succeeds within `timeout`, else the cause;
    `listen` > 0 also waits that long for a post-handshake alert (TLS 1.3 rejects a client certificate
    only after the handshake)."""
    context = ssl_context(config)
    where = f"{host}:{port}"
    try:
        sock = connect(host, port, timeout)
    except OSError as exc:
        return classify(exc, where=where) or CheckFailed("unknown", f"{where}: {exc!r}")
    try:
        with context.wrap_socket(sock, server_hostname=host) as tls:
            if listen > 0:
                tls.settimeout(listen)
                try:
                    tls.recv(1)
                except TimeoutError:
                    pass
                except ssl.SSLError as exc:
                    return classify(exc, during_tls=True, where=where, client_cert=bool(config.tls_cert_file))
                except OSError:
                    pass
            return None
    except (OSError, ValueError) as exc:
        found = classify(exc, during_tls=True, where=where, client_cert=bool(config.tls_cert_file)) or \
            CheckFailed("unknown", f"{where}: {exc!r}")
    finally:
        sock.close()
    if found.cause == "unknown" and "HANDSHAKE_FAILURE" in found.message and not config.tls_cert_file and \
            presented(lambda left: connect(host, port, left), host, timeout).client_certificate_requested:
        return client_cert_failure("HANDSHAKE_FAILURE after asking for a client certificate", False, where)
    return found


def tls_failure(config: BrokerConfig, host: str, port: int, deadline: Deadline,
                library_words: str) -> CheckFailed:
    """The exact cause behind a library's generic "certificate verify failed", named by a Python
    handshake with the same CA and host-name settings."""
    found = probe_tls(config, host, port, deadline.remaining())
    if found is None or found.cause in ("unknown", "connect_timeout", "handshake_timeout"):
        return CheckFailed("tls_untrusted", library_words)
    return found


def speaks_tls(host: str, port: int, timeout: float) -> bool:
    """True when host:port completes (or answers with an alert) a TLS handshake that checks nothing."""
    try:
        sock = connect(host, port, timeout)
    except OSError:
        return False
    try:
        with unverified_context().wrap_socket(sock, server_hostname=host):
            return True
    except ssl.SSLError as exc:
        return "ALERT" in (exc.reason or "")
    except (OSError, ValueError):
        return False
    finally:
        sock.close()


def exchange(host: str, port: int, payload: bytes, timeout: float) -> bytes | None:
    """Send `payload` in plaintext and return the first bytes answered: b"" when the port closed or reset
    the connection, None when it stayed silent for `timeout`."""
    deadline = Deadline(timeout)
    try:
        sock = connect(host, port, timeout)
    except OSError as exc:
        raise classify(exc, where=f"{host}:{port}") or CheckFailed("unknown", f"{host}:{port}: {exc!r}") from exc
    try:
        sock.settimeout(max(deadline.remaining(), _MIN_WAIT))
        if payload:
            sock.sendall(payload)
        return sock.recv(4096)
    except TimeoutError:
        return None
    except OSError:
        return b""
    finally:
        sock.close()


def identify(data: bytes) -> str | None:
    """The protocol whose first answer looks like `data`, when recognisable."""
    if data[:2] in (b"\x16\x03", b"\x15\x03"):
        return "TLS"
    for prefix, name in ((b"AMQP", "AMQP"), (b"INFO ", "NATS"), (b"-ERR", "NATS"), (b"HTTP/", "HTTP"),
                         (b"SSH-", "SSH"), (b"\x01\x00\x00\x00", "AMQP")):
        if data.startswith(prefix):
            return name
    if len(data) >= 4 and data[0] == 0x20 and data[1] == len(data) - 2:
        return "MQTT"
    return None


def _over_tls(config: BrokerConfig, host: str, port: int, deadline: Deadline, greeting: Greeting,
              fallback: CheckFailed) -> CheckFailed:
    """After a healthy TLS handshake, when the library heard nothing it understood: the greeting sent over
    TLS tells another protocol behind TLS (`protocol_mismatch`) from a broker that is merely slow."""
    if fallback.cause not in ("handshake_timeout", "unknown") or deadline.remaining() < _MIN_WAIT:
        return fallback
    try:
        sock = connect(host, port, deadline.remaining())
    except OSError:
        return fallback
    try:
        with upgrade(sock, ssl_context(config), host, deadline.remaining()) as tls:
            tls.sendall(greeting.payload)
            reply = read_answer(tls, deadline.remaining(), lambda data: True)
    except (OSError, ValueError, CheckFailed):
        return fallback
    finally:
        sock.close()
    name = identify(reply) if reply else None
    if reply and not greeting.expect(reply) and name and name != "TLS":
        return CheckFailed("protocol_mismatch", f"{host}:{port} speaks {name} over TLS, not {greeting.protocol}")
    return fallback


def diagnose(config: BrokerConfig, host: str, port: int, deadline: Deadline, greeting: Greeting,
             fallback: CheckFailed) -> CheckFailed:
    """The cause of an ambiguous library failure, found by probing host:port within `deadline`:
    `fallback` when the transport looks healthy and the problem is above it."""
    where = f"{host}:{port}"
    if deadline.remaining() < _MIN_WAIT:
        return fallback
    found = probe_tcp(host, port, deadline.remaining())
    if found is not None:
        return found
    if config.tls:
        found = probe_tls(config, host, port, deadline.remaining() / 2, listen=deadline.remaining(0.4) / 4)
        if found is None:
            return _over_tls(config, host, port, deadline, greeting, fallback)
        if found.cause == "tls_not_offered":
            return _closed_at_once(host, port, deadline) or found
        if found.cause != "handshake_timeout":
            return found
        try:
            reply = exchange(host, port, greeting.payload, deadline.remaining())
        except CheckFailed:
            return found
        if reply and greeting.expect(reply):
            return CheckFailed("tls_not_offered", f"{where} did not answer the TLS handshake but answers "
                                                  f"{greeting.protocol} in plaintext: TLS is not enabled "
                                                  f"there")
        name = identify(reply) if reply else None
        if name and name != "TLS":
            return CheckFailed("protocol_mismatch", f"{where} speaks {name}, not {greeting.protocol}")
        return found
    try:
        reply = exchange(host, port, greeting.payload, deadline.remaining())
    except CheckFailed as failed:
        return failed
    if reply is None:
        if fallback.cause == "handshake_timeout":
            return fallback
        return CheckFailed("handshake_timeout", f"{where} accepted the connection but never answered")
    if reply and greeting.expect(reply):
        return fallback
    name = identify(reply) if reply else None
    if name == "TLS" or (not reply and speaks_tls(host, port, deadline.remaining())):
        return CheckFailed("tls_required", f"{where} speaks TLS but the settings ask for plaintext: "
                                           f"turn TLS on")
    if name:
        return CheckFailed("protocol_mismatch", f"{where} speaks {name}, not {greeting.protocol}")
    if not reply:
        closed = _closed_at_once(host, port, deadline)
        if closed is not None:
            return closed
        return CheckFailed("protocol_mismatch", f"{where} closed the connection on the {greeting.protocol} "
                                                f"greeting: it does not seem to speak {greeting.protocol}")
    return CheckFailed("protocol_mismatch", f"{where} answered the {greeting.protocol} greeting with "
                                            f"unexpected bytes {one_line(repr(reply[:16]))}")


# -- the diagnosis steps' raw transport ------------------------------------------------------------

def read_answer(sock: socket.socket, timeout: float, complete: Callable[[bytes], bool]) -> bytes | None:
    """The broker's answer: bytes once `complete` says so (or whatever came before the peer closed or the
    time ran out), b"" when the peer closed or reset without a byte, None when it stayed silent. TLS
    errors (alerts) propagate."""
    end = _now() + max(timeout, 0.0)
    data = b""
    while len(data) < MAX_ANSWER:
        left = end - _now()
        if left < _MIN_WAIT:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(16384)
        except TimeoutError:
            break
        except ssl.SSLError:
            if data:
                return data
            raise
        except (ConnectionResetError, ConnectionAbortedError, BrokenPipeError):
            return data
        if not chunk:
            return data
        data += chunk
        if complete(data):
            return data
    return data or None


def upgrade(sock: socket.socket, context: ssl.SSLContext, server_name: str, timeout: float) -> ssl.SSLSocket:
    """Wrap `sock` and complete the TLS handshake within `timeout`; the wrapped socket (closed, with
    `sock`, when the handshake fails)."""
    tls = context.wrap_socket(sock, server_hostname=server_name, do_handshake_on_connect=False)
    try:
        tls.settimeout(max(timeout, _MIN_WAIT))
        tls.do_handshake()
    except BaseException:
        tls.close()
        raise
    return tls


def unverified_context(max_tls12: bool = False) -> ssl.SSLContext:
    """A client context that checks nothing: for looking at what a broker presents, never for trust."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if max_tls12:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass
class Presented:
    """What a broker presents in its TLS handshake: its certificates (DER, leaf first) and whether it
    asks the client for a certificate (None: unknown, seen only in a TLS 1.2 handshake)."""

    chain: list[bytes] = field(default_factory=list)
    client_certificate_requested: bool | None = None


def presented(open_plain: Callable[[float], socket.socket], server_name: str, timeout: float) -> Presented:
    """What a broker presents: the whole chain and the client-certificate request from its TLS 1.2 first
    flight (sent in the clear), else the leaf of a TLS 1.3 handshake; an empty chain when neither works."""
    end = _now() + timeout
    try:
        flight = _tls12_flight(open_plain, server_name, end)
        if flight.chain:
            return flight
    except (OSError, ssl.SSLError, ValueError):
        pass
    try:
        sock = open_plain(end - _now())
    except (OSError, ValueError):
        return Presented()
    try:
        with upgrade(sock, unverified_context(), server_name, end - _now()) as tls:
            leaf = tls.getpeercert(binary_form=True)
            return Presented([leaf] if leaf else [])
    except (OSError, ssl.SSLError, ValueError):
        return Presented()
    finally:
        sock.close()


def _tls12_flight(open_plain: Callable[[float], socket.socket], server_name: str, end: float) -> Presented:
    sock = open_plain(end - _now())
    try:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = unverified_context(max_tls12=True).wrap_bio(incoming, outgoing, server_hostname=server_name)
        received = b""
        while _now() < end:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                pending = outgoing.read()
                if pending:
                    sock.sendall(pending)
                sock.settimeout(max(end - _now(), _MIN_WAIT))
                chunk = sock.recv(16384)
                if not chunk:
                    break
                received += chunk
                flight = server_flight(received)
                if flight is not None:
                    return flight
                incoming.write(chunk)
        return server_flight(received, final=True) or Presented()
    finally:
        sock.close()


def server_flight(data: bytes, final: bool = False) -> Presented | None:
    """The certificates and the client-certificate request of a TLS 1.2 server's first flight in its raw
    bytes, or None while that flight (up to ServerHelloDone) is incomplete (unless `final`)."""
    handshake, i = b"", 0
    while i + 5 <= len(data):
        kind, length = data[i], int.from_bytes(data[i + 3:i + 5], "big")
        fragment = data[i + 5:i + 5 + length]
        if len(fragment) < length or kind in (20, 21):
            break
        if kind == 22:
            handshake += fragment
        i += 5 + length
    found, j = Presented(client_certificate_requested=False), 0
    while j + 4 <= len(handshake):
        kind, length = handshake[j], int.from_bytes(handshake[j + 1:j + 4], "big")
        body = handshake[j + 4:j + 4 + length]
        if len(body) < length:
            break
        if kind == 11:
            total, k = int.from_bytes(body[:3], "big"), 3
            while k + 3 <= min(3 + total, len(body)):
                size = int.from_bytes(body[k:k + 3], "big")
                found.chain.append(bytes(body[k + 3:k + 3 + size]))
                k += 3 + size
        elif kind == 13:
            found.client_certificate_requested = True
        elif kind == 14:
            return found
        j += 4 + length
    return found if final and found.chain else None
