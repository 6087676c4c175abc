"""Raw transport for the diagnosis steps: deadline-bounded connect, read of a broker's first answer,
TLS upgrade (also after a plaintext preamble, as NATS does), and the certificate chain a broker presents.

Everything here talks only to the address it is given and never waits longer than it is told.
"""
from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Callable

MAX_ANSWER = 64 * 1024
_MIN_WAIT = 0.001
_now = time.monotonic


def connect(ip: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to ip:port, or the socket error (TimeoutError when `timeout` is spent)."""
    if timeout < _MIN_WAIT:
        raise TimeoutError("no time left")
    sock = socket.create_connection((ip, port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


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
        except (socket.timeout, TimeoutError):
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
