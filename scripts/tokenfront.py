"""Token front over pulsar-lite — test lab only, not a Pulsar broker or proxy.

pulsar-lite accepts any credentials, so the lab cannot show a refused Pulsar token against it. This small
TCP front can: it reads the client's CONNECT, checks its token as Pulsar's token authentication does (a JWT
signed with the front's HS256 secret, via PyJWT, with `sub` required and `exp` honoured), answers a bad or
missing one with CommandError(AuthenticationError, "Failed to authenticate") and closes the connection;
a good one is passed to pulsar-lite and the connection is relayed, with pulsar-lite's lookup answers
rewritten to the front's own address (or clients would bypass the front on their next connection).

    python scripts/tokenfront.py --listen 127.0.0.1:PORT --backend 127.0.0.1:PULSAR_LITE_PORT \\
        --secret SECRET

It prints "tokenfront listening on HOST:PORT" when ready and runs until killed.
"""
from __future__ import annotations

import argparse
import signal
import socket
import struct
import sys
import threading

import jwt

CONNECT, ERROR, LOOKUP_RESPONSE = 2, 14, 24
AUTHENTICATION_ERROR = 3          # ServerError.AuthenticationError
MAX_FRAME = 5 * 1024 * 1024 + 64 * 1024


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def read_varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while i < len(data):
        byte = data[i]
        value |= (byte & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if not byte & 0x80:
            break
    return value, i


def fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """The (number, wire type, value) of every field of a protobuf message, in order (varint and
    length-delimited fields; fixed-width ones kept as raw bytes)."""
    out: list[tuple[int, int, int | bytes]] = []
    i = 0
    while i < len(data):
        key, i = read_varint(data, i)
        number, kind = key >> 3, key & 7
        if kind == 0:
            value, i = read_varint(data, i)
            out.append((number, kind, value))
        elif kind == 2:
            size, i = read_varint(data, i)
            out.append((number, kind, data[i:i + size]))
            i += size
        elif kind in (1, 5):
            width = 8 if kind == 1 else 4
            out.append((number, kind, data[i:i + width]))
            i += width
        else:
            raise ValueError(f"protobuf wire type {kind}")
    return out


def encode(items: list[tuple[int, int, int | bytes]]) -> bytes:
    out = bytearray()
    for number, kind, value in items:
        out += varint(number << 3 | kind)
        if kind == 0:
            assert isinstance(value, int)
            out += varint(value)
        elif kind == 2:
            assert isinstance(value, bytes)
            out += varint(len(value)) + value
        else:
            assert isinstance(value, bytes)
            out += value
    return bytes(out)


def field(items: list[tuple[int, int, int | bytes]], number: int) -> int | bytes | None:
    return next((value for n, _, value in items if n == number), None)


def read_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 65536))
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(sock: socket.socket) -> bytes | None:
    """One frame without its total size: [command size][BaseCommand][payload part, if any]."""
    head = read_exact(sock, 4)
    if head is None:
        return None
    size = struct.unpack(">I", head)[0]
    if size < 4 or size > MAX_FRAME:
        return None
    return read_exact(sock, size)


def frame(command: bytes, rest: bytes = b"") -> bytes:
    return struct.pack(">II", 4 + len(command) + len(rest), len(command)) + command + rest


def split(body: bytes) -> tuple[int, list[tuple[int, int, int | bytes]], bytes]:
    """(command type, BaseCommand fields, the rest: checksum, metadata and payload of a message)."""
    size = struct.unpack_from(">I", body)[0]
    top = fields(body[4:4 + size])
    kind = field(top, 1)
    return int(kind) if isinstance(kind, int) else 0, top, body[4 + size:]


def error_frame(message: str) -> bytes:
    error = encode([(1, 0, 0), (2, 0, AUTHENTICATION_ERROR), (3, 2, message.encode())])
    return frame(encode([(1, 0, ERROR), (ERROR, 2, error)]))


class Front:
    def __init__(self, listen: tuple[str, int], backend: tuple[str, int], secret: str) -> None:
        self.listen, self.backend, self.secret = listen, backend, secret
        self.url = f"pulsar://{listen[0]}:{listen[1]}".encode()

    def accepts(self, connect: list[tuple[int, int, int | bytes]]) -> bool:
        """Whether CONNECT carries a token this front signed: method "token", a valid HS256 JWT with `sub`."""
        method, data = field(connect, 5), field(connect, 3)
        if method != b"token" or not isinstance(data, bytes):
            return False
        try:
            claims = jwt.decode(data.decode(), self.secret, algorithms=["HS256"], options={"require": ["sub"]})
        except (jwt.PyJWTError, UnicodeDecodeError):
            return False
        return bool(claims.get("sub"))

    def rewrite(self, body: bytes) -> bytes:
        """A backend frame for the client: lookup answers name the front instead of pulsar-lite."""
        try:
            kind, top, rest = split(body)
        except (ValueError, struct.error):
            return struct.pack(">I", len(body)) + body
        if kind != LOOKUP_RESPONSE:
            return struct.pack(">I", len(body)) + body
        answer = field(top, LOOKUP_RESPONSE)
        if not isinstance(answer, bytes):
            return struct.pack(">I", len(body)) + body
        items = [(n, k, self.url if n == 1 else v) for n, k, v in fields(answer)]
        top = [(n, k, encode(items) if n == LOOKUP_RESPONSE else v) for n, k, v in top]
        return frame(encode(top), rest)

    def session(self, client: socket.socket) -> None:
        backend: socket.socket | None = None
        try:
            first = read_frame(client)
            if first is None:
                return
            kind, top, _ = split(first)
            connect = field(top, CONNECT)
            if kind != CONNECT or not isinstance(connect, bytes) or not self.accepts(fields(connect)):
                client.sendall(error_frame("Failed to authenticate"))
                return
            backend = socket.create_connection(self.backend, timeout=10)
            backend.settimeout(None)
            backend.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            backend.sendall(struct.pack(">I", len(first)) + first)
            threading.Thread(target=self._to_client, args=(backend, client), daemon=True).start()
            while True:
                data = client.recv(65536)
                if not data:
                    break
                backend.sendall(data)
        except (OSError, ValueError, struct.error):
            pass
        finally:
            for sock in (client, backend):
                if sock is None:
                    continue
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                sock.close()

    def _to_client(self, backend: socket.socket, client: socket.socket) -> None:
        try:
            while True:
                body = read_frame(backend)
                if body is None:
                    break
                client.sendall(self.rewrite(body))
        except OSError:
            pass
        finally:
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def serve(self) -> None:
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(self.listen)
        server.listen(128)
        print(f"tokenfront listening on {self.listen[0]}:{self.listen[1]}", flush=True)
        while True:
            client, _ = server.accept()
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self.session, args=(client,), daemon=True).start()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Token front over pulsar-lite (test lab only).")
    parser.add_argument("--listen", required=True, type=_address, help="HOST:PORT to listen on")
    parser.add_argument("--backend", required=True, type=_address, help="HOST:PORT of pulsar-lite")
    parser.add_argument("--secret", required=True, help="the HS256 secret tokens are signed with")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    Front(args.listen, args.backend, args.secret).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
