"""The shared steps of a diagnosis, with raw probes only (no client library):

- dns resolves every configured host once (`console.checks.resolve_hosts`, injectable resolver), before
  any client library sees the name;
- tcp connects to the first address of each host;
- tls runs Python's own handshake with the configured truststore and client certificate, so that an
  untrusted chain, an expired certificate and a host-name mismatch are named apart even where the client
  library lumps them together, and records the certificates the broker presents; a port that answers the
  protocol in plaintext is `tls_not_offered`;
- handshake sends the protocol's greeting and judges the answer: the broker's own answer, a TLS port
  (`tls_required`), another protocol (`protocol_mismatch`, named when recognisable), a port that accepts
  and closes at once (`connection_closed`), a missing or refused client certificate
  (`tls_client_cert_required` / `tls_client_cert_rejected`: with TLS 1.3 the broker's alert arrives only
  at this first read after the handshake) or silence (`handshake_timeout`).

Every probe connects to the resolved address with the configured host name for TLS, and waits only for
what is left of the diagnosis's deadline.
"""
from __future__ import annotations

import socket
import ssl
import time
from typing import Any, Callable

from cryptography import x509

from ..brokers import driver_classes
from ..brokers.base import BrokerConfig, Deadline, Driver, Passed, StepFailed, one_line
from ..brokers.net import (
    CLIENT_CERT_CAUSES,
    CLOSE_WAIT,
    classify,
    client_cert_alert,
    client_cert_failure,
    closes_at_once,
    connect,
    identify,
    presented,
    read_answer,
    speaks_tls,
    ssl_context,
    unverified_context,
    upgrade,
)
from ..certs import CertError, CertInfo, load_pem_file
from ..checks import Resolver, resolve_hosts
from .base import Diagnosis

TLS_SHARE = 0.5       # of the time left, for a TLS handshake that may never be answered
TLS_CAP = 2.0         # seconds; no healthy TLS handshake takes longer
PREAMBLE_CAP = 0.5    # seconds a broker that speaks first (NATS INFO) gets before it is nudged
IDENTIFY_CAP = 0.3    # seconds per greeting when naming what another port speaks
ALERT_CAP = 0.5       # seconds to wait for a TLS 1.3 broker's post-handshake alert
LISTEN_CAP = 0.05     # seconds a broker that spoke first gets to follow up (a refusal, a TLS alert); a
                      # slower TLS alert is still named, by the login's first read
_CERT_FAILURES = ("tls_untrusted", "tls_expired", "tls_not_yet_valid", "tls_hostname_mismatch")


def host_port(host: str, port: int) -> str:
    """host:port, with IPv6 addresses bracketed."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class TransportSteps:
    """dns, tcp, tls and handshake of one diagnosis; also the `Link` a driver may use for raw exchanges.

    `facts` is the diagnosis's shared record of concrete values (host, port, certificate, ...) that the
    cause texts name."""

    def __init__(self, driver: Driver, deadline: Deadline, resolver: Resolver, facts: dict[str, Any],
                 diagnosis: Diagnosis) -> None:
        self.driver = driver
        self.config: BrokerConfig = driver.config
        self.wire = driver.wire()
        self.deadline = deadline
        self.resolver = resolver
        self.facts = facts
        self.diagnosis = diagnosis
        self.resolved: dict[str, list[str]] = {}

    def where(self, host: str, port: int) -> str:
        """host:port for messages; also the place the facts now name."""
        where = host_port(host, port)
        self.facts.update(host=host, port=port, where=where)
        return where

    def first_address(self) -> tuple[str, str, int]:
        """(host, first resolved address, port) of the first configured address."""
        host, port = self.config.addresses[0]
        return host, self.resolved[host][0], port

    # -- dns and tcp -----------------------------------------------------------------------------------

    def dns(self) -> Passed:
        """Resolve every configured host once (IP literals need no lookup)."""
        addresses = self.config.addresses
        self.resolved, error = resolve_hosts(addresses, self.deadline.remaining(), self.resolver)
        missing = next((h for h, _ in addresses if not self.resolved.get(h)), None)
        if error or missing:
            host = missing or addresses[0][0]
            raise StepFailed("dns_failure", error or f"{host} resolved to no address", host=host,
                             dns_error=error or f"{host} resolved to no address.")
        parts = []
        for host in dict.fromkeys(h for h, _ in addresses):
            ips = self.resolved[host]
            parts.append(f"{host} is an IP address (no lookup)" if ips == [host] else f"{host} → {', '.join(ips)}")
        return Passed("; ".join(parts), data={"addresses": self.resolved})

    def tcp(self) -> Passed:
        """Connect to the first address of each host."""
        parts = []
        for host, port in self.config.addresses:
            ip = self.resolved[host][0]
            where = self.where(host, port)
            started = time.monotonic()
            try:
                connect(ip, port, self.deadline.remaining()).close()
            except OSError as exc:
                found = classify(exc, where=where)
                raise StepFailed(found.cause if found else "unknown",
                                 found.message if found else f"{where}: {one_line(repr(exc))}", ip=ip) from None
            via = "" if ip == host else f" ({ip})"
            parts.append(f"{where}{via} connected in {(time.monotonic() - started) * 1000:.1f} ms")
        self.where(*self.config.addresses[0])
        return Passed("; ".join(parts))

    # -- tls -------------------------------------------------------------------------------------------

    def server_name(self, host: str) -> str:
        """The name TLS checks the certificate against (SNI)."""
        return str(self.config.options.get("tls_server_name") or self.config.server_names.get(host, host))

    def tls(self) -> Passed:
        """Python's own TLS handshake with the configured trust, against every configured address."""
        if not self.config.tls:
            return Passed("TLS is off", status="not_applicable")
        context = ssl_context(self.config)
        self._note_truststore()
        self._note_client_certificate()
        parts = [self._tls_one(context, host, self.resolved[host][0], port)
                 for host, port in self.config.addresses]
        self.where(*self.config.addresses[0])
        return Passed("; ".join(parts))

    def _note_truststore(self) -> None:
        path = self.config.tls_ca_file
        self.facts["ca_file"] = path
        if path:
            try:
                self.facts["ca_subjects"] = [c.subject for c in load_pem_file(path).certificates]
            except CertError:
                self.facts["ca_subjects"] = None

    def _maybe_no_client_cert(self, failure: StepFailed | None) -> bool:
        """A TLS 1.2 broker that requires a client certificate fails the handshake with a bare
        HANDSHAKE_FAILURE alert when none is sent: whether it asked for one (its CertificateRequest, in the
        clear in TLS 1.2) tells."""
        return failure is not None and failure.cause == "unknown" and not self.config.tls_cert_file and \
            "HANDSHAKE_FAILURE" in failure.message

    def _note_client_certificate(self) -> None:
        path = self.config.tls_cert_file
        if not path:
            return
        try:
            leaf = load_pem_file(path).certificates[0]
        except (CertError, IndexError):
            return
        self.facts.update(client_subject=leaf.subject, client_issuer=leaf.issuer)

    def _client_cert_failure(self, reason: str, where: str) -> StepFailed:
        found = client_cert_failure(reason, bool(self.config.tls_cert_file), where)
        return StepFailed(found.cause, found.message, words=reason)

    def _tls_one(self, context: ssl.SSLContext, host: str, ip: str, port: int) -> str:
        where, name = self.where(host, port), self.server_name(host)
        self.facts["server_name"] = name
        failure: StepFailed | None = None
        version = cipher = ""
        try:
            sock = connect(ip, port, self.deadline.remaining())
        except OSError as exc:
            found = classify(exc, where=where)
            raise StepFailed(found.cause if found else "unknown", found.message if found else repr(exc)) from None
        try:
            self._preamble(sock, check=True)
            with upgrade(sock, context, name, min(self.deadline.remaining() * TLS_SHARE, TLS_CAP)) as tls:
                version, cipher = tls.version() or "", (tls.cipher() or ("",))[0]
        except StepFailed as failed:
            failure = failed
        except (OSError, ValueError) as exc:
            failure = self._tls_failure(exc, ip, port, where)
        finally:
            sock.close()
        if failure is None or failure.cause in _CERT_FAILURES or self._maybe_no_client_cert(failure):
            self._capture(ip, port, name, where)
        if failure is not None and self._maybe_no_client_cert(failure) and \
                self.facts.get("client_certificate_requested"):
            failure = self._client_cert_failure("HANDSHAKE_FAILURE after asking for a client certificate", where)
        if failure is not None:
            raise failure
        leaf = self.facts.get("leaf") or {}
        checked = f"host name {name} matches" if self.config.tls_verify_hostname else \
            "host name not checked (tls_verify_hostname is off)"
        expiry = f"valid until {str(leaf.get('not_after', '?'))[:10]} ({leaf.get('days_left', '?')} days left)"
        if leaf.get("status") == "expiring":
            expiry += " — renew it soon"
        trusted = "the configured truststore" if self.config.tls_ca_file else "the system CA store"
        return (f"{where}: {version} ({cipher}); certificate {leaf.get('subject', '?')} issued by "
                f"{leaf.get('issuer', '?')}, {expiry}; chain trusted by {trusted}; {checked}")

    def _preamble(self, sock: socket.socket, check: bool = False, listen: bool = True) -> bytes:
        """What a broker that speaks before the TLS upgrade (NATS) says first; b"" for the others."""
        if not self.wire.starttls:
            return b""
        preamble = read_answer(sock, self.deadline.remaining(PREAMBLE_CAP), self.wire.complete) or b""
        if listen:
            preamble += self._listen(sock, preamble)
        if check and preamble:
            self.driver.check_preamble(preamble)
        return preamble

    def _listen(self, sock: socket.socket, said: bytes) -> bytes:
        """What a broker that spoke first (`said`) sends next on its own within LISTEN_CAP: a refusal
        after its greeting, or (on a TLS socket) the TLS 1.3 alert refusing a client certificate, which
        propagates as ssl.SSLError."""
        if not self.wire.listen_after_preamble or not said or b"-ERR" in said:
            return b""
        return read_answer(sock, self.deadline.remaining(LISTEN_CAP), self.wire.complete) or b""

    def _tls_failure(self, exc: BaseException, ip: str, port: int, where: str) -> StepFailed:
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return self._not_tls(ip, port, where, timed_out=True, words="no answer to the TLS handshake")
        alert = client_cert_alert(exc)
        if alert:
            return self._client_cert_failure(alert, where)
        found = classify(exc, during_tls=True, where=where)
        if found is None:
            return StepFailed("unknown", f"{where}: TLS error {one_line(repr(exc))}")
        if found.cause == "tls_not_offered":
            return self._not_tls(ip, port, where, timed_out=False, words=found.message)
        return StepFailed(found.cause, found.message)

    def _not_tls(self, ip: str, port: int, where: str, *, timed_out: bool, words: str) -> StepFailed:
        """Why a TLS handshake failed on a port that does not seem to speak TLS: ask in plaintext."""
        label = self.facts["label"]
        try:
            reply = self._exchange(ip, port, self.deadline.remaining(), payload=self.wire.greeting.payload,
                                   server_first=self.wire.server_first)
        except (OSError, ValueError):
            reply = b""
        if reply and self.wire.greeting.expect(reply):
            return StepFailed("tls_not_offered", f"{where} does not speak TLS but answers {label} in plaintext")
        if not reply and reply is not None and closes_at_once(ip, port, self.deadline.remaining(CLOSE_WAIT)):
            return self._closed(where)
        name = identify(reply) if reply else None
        if name and name != "TLS":
            return StepFailed("protocol_mismatch", f"{where} speaks {name} in plaintext, not {label} over TLS",
                              speaks=name)
        if timed_out:
            return StepFailed("handshake_timeout", f"{where} answered neither the TLS handshake nor the {label} "
                                                   f"greeting")
        return StepFailed("tls_not_offered", words)

    def _capture(self, ip: str, port: int, name: str, where: str) -> None:
        def open_plain(timeout: float) -> socket.socket:
            sock = connect(ip, port, timeout)
            self._preamble(sock, listen=False)
            return sock

        seen = {c["sha256"] for c in self.diagnosis.certificates}
        infos: list[CertInfo] = []
        pems: list[str] = []
        offer = presented(open_plain, name, self.deadline.remaining(TLS_CAP))
        if offer.client_certificate_requested:
            self.facts["client_certificate_requested"] = True
        for der in offer.chain:
            try:
                infos.append(CertInfo.from_certificate(x509.load_der_x509_certificate(der)))
            except ValueError:
                continue
            pems.append(ssl.DER_cert_to_PEM_cert(der))     # public: what "Trust this CA" adds
        for info, pem in zip(infos, pems):
            if info.sha256 not in seen:
                seen.add(info.sha256)
                self.diagnosis.certificates.append({**info.as_dict(), "presented_by": where,
                                                    "pem": pem})
        if infos:
            leaf = infos[0].as_dict()
            self.facts.update(leaf=leaf, subject=leaf["subject"], issuer=leaf["issuer"], sans=leaf["sans"],
                              not_after=leaf["not_after"][:10], not_before=leaf["not_before"][:10],
                              not_before_at=infos[0].not_before.strftime("%Y-%m-%d %H:%M:%S UTC"),
                              days_left=leaf["days_left"], cert_status=leaf["status"])

    # -- handshake -------------------------------------------------------------------------------------

    def _exchange(self, ip: str, port: int, timeout: float, *, payload: bytes, server_first: bool = False,
                  complete: Callable[[bytes], bool] | None = None, context: ssl.SSLContext | None = None,
                  server_name: str = "") -> bytes | None:
        """Open a connection (TLS with `context`), send `payload` (after the broker's first words when it
        speaks first) and return the answer: None for silence, b"" for a closed connection."""
        complete = complete or self.wire.complete
        end = time.monotonic() + timeout
        sock: socket.socket = connect(ip, port, timeout)
        try:
            preamble = b""
            if context is not None:
                preamble = self._preamble(sock)
                sock = upgrade(sock, context, server_name or ip, end - time.monotonic())
            if server_first:
                if preamble:
                    preamble += self._listen(sock, preamble)      # after the TLS upgrade
                else:
                    preamble = read_answer(sock, min(PREAMBLE_CAP, (end - time.monotonic()) / 2),
                                           complete) or b""
                    preamble += self._listen(sock, preamble)
                if preamble:
                    return preamble
            try:
                sock.sendall(payload)
            except (ConnectionResetError, BrokenPipeError):
                return b""
            return read_answer(sock, end - time.monotonic(), complete)
        finally:
            sock.close()

    def handshake(self) -> Passed:
        """Send the protocol's greeting and judge the answer."""
        host, ip, port = self.first_address()
        where, label = self.where(host, port), self.facts["label"]
        context = ssl_context(self.config) if self.config.tls else None
        try:
            reply = self._exchange(ip, port, self.deadline.remaining(), payload=self.wire.greeting.payload,
                                   server_first=self.wire.server_first, context=context,
                                   server_name=self.server_name(host))
        except (OSError, ValueError) as exc:
            reply = self._handshake_error(exc, where, label, ip, port, self.server_name(host))
        if reply is None:
            raise StepFailed("handshake_timeout", f"{where} accepted the connection but did not answer the "
                                                  f"{label} greeting in time")
        if reply and self.wire.greeting.expect(reply):
            return Passed(self.driver.describe_handshake(reply))
        if context is not None and reply == b"":
            refused = self._post_handshake_alert(ip, port, where, self.server_name(host))
            if refused is not None:
                raise refused
        raise self._mismatch(reply, host, ip, port, context)

    def _post_handshake_alert(self, ip: str, port: int, where: str, server_name: str) -> StepFailed | None:
        """The client-certificate refusal a broker sends right after a completed TLS 1.3 handshake, read on
        a fresh connection without sending anything; None when it sends none."""
        try:
            sock = connect(ip, port, self.deadline.remaining())
        except OSError:
            return None
        try:
            self._preamble(sock)
            with upgrade(sock, ssl_context(self.config), server_name, self.deadline.remaining(TLS_CAP)) as tls:
                tls.settimeout(max(self.deadline.remaining(ALERT_CAP), 0.001))
                tls.recv(1)
        except ssl.SSLError as exc:
            alert = client_cert_alert(exc)
            if alert:
                return self._client_cert_failure(alert, where)
        except (OSError, ValueError):
            pass
        finally:
            sock.close()
        if self.facts.get("client_certificate_requested") and not self.config.tls_cert_file:
            return self._client_cert_failure("the session ended after the handshake", where)
        return None

    def _closed(self, where: str) -> StepFailed:
        return StepFailed("connection_closed", f"{where} accepted the TCP connection and closed it at once, "
                                               f"before sending or receiving a byte")

    def _handshake_error(self, exc: BaseException, where: str, label: str, ip: str, port: int,
                         server_name: str) -> bytes | None:
        """The answer to assume after `exc` (None: silence, b"": a dropped connection), or StepFailed."""
        found = classify(exc, during_tls=self.config.tls, where=where, client_cert=bool(self.config.tls_cert_file))
        reason = getattr(exc, "reason", None) or one_line(exc)
        dropped = self.config.tls and isinstance(exc, (ssl.SSLError, ConnectionError))
        requested = self.facts.get("client_certificate_requested")
        if dropped and requested and (found is None or found.cause not in CLIENT_CERT_CAUSES):
            refused = self._post_handshake_alert(ip, port, where, server_name)
            if refused is not None:
                raise refused
        if (found is not None and found.cause in CLIENT_CERT_CAUSES) or (dropped and requested):
            cause = found.cause if found is not None and found.cause in CLIENT_CERT_CAUSES else \
                ("tls_client_cert_rejected" if self.config.tls_cert_file else "tls_client_cert_required")
            why = "it requires a client certificate and none is configured" \
                if cause == "tls_client_cert_required" else "it refused the TLS client certificate"
            raise StepFailed(cause, f"{where} ended the TLS session ({reason}) right after the handshake, before "
                                    f"answering {label}: {why}", words=reason)
        if isinstance(exc, (socket.timeout, TimeoutError)):
            return None
        if dropped:
            return b""
        if found is not None:
            raise StepFailed(found.cause, found.message)
        raise StepFailed("unknown", f"{where}: {one_line(repr(exc))}")

    def _mismatch(self, reply: bytes, host: str, ip: str, port: int,
                  context: ssl.SSLContext | None) -> StepFailed:
        where, label = host_port(host, port), self.facts["label"]
        name = identify(reply) if reply else None
        if context is None and (name == "TLS"
                                or (not reply and speaks_tls(ip, port, self.deadline.remaining(TLS_CAP)))):
            how = "a TLS alert" if name == "TLS" else "a closed connection"
            return StepFailed("tls_required", f"{where} answered the plaintext {label} greeting with {how} and "
                                              f"completes a TLS handshake: the port speaks TLS")
        if not name or name == "TLS":
            name = self._identify(ip, port, context is not None, self.server_name(host))
        if name:
            return StepFailed("protocol_mismatch", f"{where} speaks {name}, not {label}", speaks=name)
        if not reply:
            if closes_at_once(ip, port, self.deadline.remaining(CLOSE_WAIT)):
                return self._closed(where)
            return StepFailed("protocol_mismatch", f"{where} closed the connection on the {label} greeting: it "
                                                   f"does not seem to speak {label}")
        return StepFailed("protocol_mismatch", f"{where} answered the {label} greeting with unexpected bytes "
                                               f"{one_line(repr(reply[:16]))}")

    def _identify(self, ip: str, port: int, tls: bool, server_name: str) -> str | None:
        """The protocol another broker's greeting shows `ip:port` to speak, or None."""
        for protocol, cls in driver_classes().items():
            if protocol == self.config.protocol or self.deadline.remaining() < 0.01:
                continue
            other = cls.wire()
            try:
                reply = self._exchange(ip, port, self.deadline.remaining(IDENTIFY_CAP),
                                       payload=other.greeting.payload, complete=other.complete,
                                       context=unverified_context() if tls else None, server_name=server_name)
            except (OSError, ValueError):
                continue
            if reply and other.greeting.expect(reply):
                return other.greeting.protocol
        return None

    def ask(self, payload: bytes, timeout: float, complete: Callable[[bytes], bool]) -> bytes | None:
        """Send `payload` on a fresh connection to the first address (TLS when configured) and return the
        answer: None for silence, b"" for a closed connection."""
        host, ip, port = self.first_address()
        context = ssl_context(self.config) if self.config.tls else None
        return self._exchange(ip, port, timeout, payload=payload, complete=complete, context=context,
                              server_name=self.server_name(host))
