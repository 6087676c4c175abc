"""SASL front over Tansu — test lab only, not a Kafka broker.

Tansu 0.6.0 keeps no SASL credentials (its storage's SCRAM calls are no-ops), so the lab cannot show a
successful Kafka SASL login against it. This small TCP front can: it answers a Kafka client's first
requests itself — ApiVersions (Tansu's own list, with SaslHandshake and SaslAuthenticate added),
SaslHandshake and SaslAuthenticate — checks the login (PLAIN, or SCRAM-SHA-256/512 done by the `scramp`
library) against the users given on the command line, and then relays the connection to Tansu unchanged.
A refused login is answered as Kafka's brokers answer it (SaslAuthenticate error 58,
SASL_AUTHENTICATION_FAILED, with Kafka's wording) and the connection is closed. The Tansu behind it must
advertise the front's address (`--advertised-listener-url`), or clients would bypass the front.

    python scripts/saslfront.py --listen 127.0.0.1:PORT --backend 127.0.0.1:TANSU_PORT \\
        --user alice:secret [--user bob:other ...]

It prints "saslfront listening on HOST:PORT" when ready and runs until killed.
"""
from __future__ import annotations

import argparse
import signal
import socket
import struct
import sys
import threading
from typing import Any

from scramp import ScramMechanism

API_VERSIONS, SASL_HANDSHAKE, SASL_AUTHENTICATE = 18, 17, 36
MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
UNSUPPORTED_VERSION, UNSUPPORTED_SASL_MECHANISM, ILLEGAL_SASL_STATE, SASL_AUTHENTICATION_FAILED = 35, 33, 34, 58
FRONT_VERSIONS = {SASL_HANDSHAKE: (0, 1), SASL_AUTHENTICATE: (0, 1)}   # non-flexible versions only
MAX_API_VERSIONS = 3
MAX_FRAME = 100 * 1024 * 1024


def _refusal_text(mechanism: str) -> str:
    """Kafka's own wording of a refused login."""
    if mechanism == "PLAIN":
        return "Authentication failed: Invalid username or password"
    return (f"Authentication failed during authentication due to invalid credentials with SASL mechanism "
            f"{mechanism}")


def read_exact(sock: socket.socket, size: int) -> bytes | None:
    """`size` bytes from `sock`, or None when it closes first."""
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 65536))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket) -> bytes | None:
    """One size-prefixed Kafka frame (without its size), or None at the end of the stream."""
    head = read_exact(sock, 4)
    if head is None:
        return None
    size = struct.unpack(">i", head)[0]
    if size < 0 or size > MAX_FRAME:
        return None
    return read_exact(sock, size)


def send_frame(sock: socket.socket, payload: bytes) -> None:
    sock.sendall(struct.pack(">i", len(payload)) + payload)


def string(value: str | None) -> bytes:
    """A Kafka (nullable) STRING."""
    if value is None:
        return struct.pack(">h", -1)
    data = value.encode()
    return struct.pack(">h", len(data)) + data


def uvarint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def request_header(frame: bytes) -> tuple[int, int, int, int]:
    """(api_key, api_version, correlation_id, offset of the body) of a request with a v1 header (the
    non-flexible requests the front reads bodies of)."""
    api_key, api_version, correlation = struct.unpack_from(">hhi", frame)
    client_id = struct.unpack_from(">h", frame, 8)[0]
    return api_key, api_version, correlation, 10 + max(client_id, 0)


def backend_versions(host: str, port: int) -> dict[int, tuple[int, int]]:
    """The API versions Tansu supports (an ApiVersions v0 request)."""
    with socket.create_connection((host, port), timeout=10) as sock:
        send_frame(sock, struct.pack(">hhi", API_VERSIONS, 0, 1) + string("saslfront"))
        reply = read_frame(sock)
    if reply is None:
        raise SystemExit(f"saslfront: {host}:{port} closed the connection on ApiVersions")
    error, count = struct.unpack_from(">hi", reply, 4)
    if error:
        raise SystemExit(f"saslfront: {host}:{port} answered ApiVersions with error {error}")
    versions = {}
    for i in range(count):
        key, low, high = struct.unpack_from(">hhh", reply, 10 + 6 * i)
        versions[key] = (low, high)
    return versions


def api_versions_reply(versions: dict[int, tuple[int, int]], correlation: int, version: int) -> bytes:
    """An ApiVersions response in the version asked for (UNSUPPORTED_VERSION in v0 for a newer one, so the
    client retries with one it finds in the list)."""
    error = 0
    if version > MAX_API_VERSIONS:
        error, version = UNSUPPORTED_VERSION, 0
    entries = sorted(versions.items())
    head = struct.pack(">ih", correlation, error)
    if version < 3:
        body = struct.pack(">i", len(entries)) + b"".join(struct.pack(">hhh", k, lo, hi) for k, (lo, hi) in entries)
        return head + body + (struct.pack(">i", 0) if version >= 1 else b"")
    body = uvarint(len(entries) + 1) + b"".join(struct.pack(">hhh", k, lo, hi) + b"\x00" for k, (lo, hi) in entries)
    return head + body + struct.pack(">i", 0) + b"\x00"


class Session:
    """One client connection: the SASL exchange, then the relay to Tansu."""

    def __init__(self, front: Front, client: socket.socket) -> None:
        self.front = front
        self.client = client
        self.mechanism: str | None = None
        self.scram: Any = None

    def run(self) -> None:
        try:
            if self._login():
                self._relay()
        except OSError:
            pass
        finally:
            self.client.close()

    def _login(self) -> bool:
        """Answer the client's requests until its login succeeded (True) or failed (False)."""
        while True:
            frame = read_frame(self.client)
            if frame is None or len(frame) < 10:
                return False
            api_key, api_version, correlation, offset = request_header(frame)
            if api_key == API_VERSIONS:
                send_frame(self.client, api_versions_reply(self.front.versions, correlation, api_version))
            elif api_key == SASL_HANDSHAKE:
                length = struct.unpack_from(">h", frame, offset)[0]
                asked = frame[offset + 2: offset + 2 + length].decode(errors="replace")
                error = 0 if asked in MECHANISMS else UNSUPPORTED_SASL_MECHANISM
                self.mechanism = asked if error == 0 else None
                offered = b"".join(string(m) for m in MECHANISMS)
                send_frame(self.client, struct.pack(">ihi", correlation, error, len(MECHANISMS)) + offered)
                if error:
                    return False
            elif api_key == SASL_AUTHENTICATE and self.mechanism is not None:
                length = struct.unpack_from(">i", frame, offset)[0]
                token = frame[offset + 4: offset + 4 + length]
                answer, done = self._authenticate(token)
                if answer is None:
                    self._answer(correlation, api_version, SASL_AUTHENTICATION_FAILED,
                                 _refusal_text(self.mechanism), b"")
                    return False
                self._answer(correlation, api_version, 0, None, answer)
                if done:
                    return True
            else:
                # any other request before a login: Kafka's brokers close the connection
                return False

    def _answer(self, correlation: int, version: int, error: int, message: str | None, data: bytes) -> None:
        body = struct.pack(">ih", correlation, error) + string(message) + struct.pack(">i", len(data)) + data
        send_frame(self.client, body + (struct.pack(">q", 0) if version >= 1 else b""))

    def _authenticate(self, token: bytes) -> tuple[bytes | None, bool]:
        """(the server's answer or None for a refusal, whether the login is complete)."""
        users = self.front.users
        if self.mechanism == "PLAIN":
            parts = token.split(b"\x00")
            if len(parts) != 3:
                return None, False
            user, password = parts[1].decode(errors="replace"), parts[2].decode(errors="replace")
            return (b"", True) if user in users and users[user] == password else (None, False)
        try:
            if self.scram is None:
                mechanism = self.front.scram[str(self.mechanism)]
                self.scram = mechanism.make_server(lambda name: self.front.auth_info[str(self.mechanism)][name])
                self.scram.set_client_first(token.decode())
                return self.scram.get_server_first().encode(), False
            self.scram.set_client_final(token.decode())
            return self.scram.get_server_final().encode(), True
        except Exception:  # noqa: BLE001 - unknown user, bad proof, malformed message: all a refusal
            return None, False

    def _relay(self) -> None:
        backend = socket.create_connection(self.front.backend, timeout=10)
        backend.settimeout(None)
        for sock in (backend, self.client):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def pump(source: socket.socket, sink: socket.socket) -> None:
            try:
                while True:
                    data = source.recv(65536)
                    if not data:
                        break
                    sink.sendall(data)
            except OSError:
                pass
            finally:
                for sock in (source, sink):
                    try:
                        sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass

        other = threading.Thread(target=pump, args=(backend, self.client), daemon=True)
        other.start()
        pump(self.client, backend)
        other.join()
        backend.close()


class Front:
    """The listening front: its users, Tansu's API versions and the SCRAM credentials."""

    def __init__(self, listen: tuple[str, int], backend: tuple[str, int], users: dict[str, str]) -> None:
        self.listen, self.backend, self.users = listen, backend, users
        self.versions = dict(backend_versions(*backend))
        self.versions.update(FRONT_VERSIONS)
        low, high = self.versions.get(API_VERSIONS, (0, MAX_API_VERSIONS))
        self.versions[API_VERSIONS] = (low, min(high, MAX_API_VERSIONS))
        self.scram = {name: ScramMechanism(name) for name in MECHANISMS if name.startswith("SCRAM")}
        self.auth_info = {name: {user: mechanism.make_auth_info(password, iteration_count=4096)
                                 for user, password in users.items()}
                          for name, mechanism in self.scram.items()}

    def serve(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(self.listen)
        server.listen(128)
        print(f"saslfront listening on {self.listen[0]}:{self.listen[1]}", flush=True)
        while True:
            client, _ = server.accept()
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=Session(self, client).run, daemon=True).start()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="SASL front over Tansu (test lab only).")
    parser.add_argument("--listen", required=True, type=_address, help="HOST:PORT to listen on")
    parser.add_argument("--backend", required=True, type=_address, help="HOST:PORT of Tansu")
    parser.add_argument("--user", action="append", default=[], help="NAME:PASSWORD (repeatable)")
    args = parser.parse_args(argv)
    users = dict(item.split(":", 1) for item in args.user)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    Front(args.listen, args.backend, users).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
