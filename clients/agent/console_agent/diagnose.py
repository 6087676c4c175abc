"""The network steps of a diagnosis from where the service runs: DNS → TCP → TLS against every node
the service was given, with the console's cause codes (dns_failure, connection_refused,
connect_timeout, connection_closed, handshake_timeout, tls_untrusted, tls_expired, tls_not_yet_valid,
tls_hostname_mismatch, tls_not_offered, unknown). Standard library only."""
from __future__ import annotations

import socket
import ssl
import time
from typing import Any


def _split(node: str, default_port: int) -> tuple[str, int]:
    if "://" in node:
        node = node.split("://", 1)[1].rsplit("@", 1)[-1]
    if node.startswith("["):
        host, _, rest = node[1:].partition("]")
        return host, int(rest.lstrip(":") or default_port)
    host, _, port = node.rpartition(":")
    if not host:
        return port, default_port
    return host, int(port or default_port)


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


def _tls_cause(exc: BaseException) -> str:
    text = str(exc).lower()
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        if code == 10 or "expired" in text:
            return "tls_expired"
        if code == 9 or "not yet valid" in text:
            return "tls_not_yet_valid"
        if code == 62 or "hostname mismatch" in text or "ip address mismatch" in text:
            return "tls_hostname_mismatch"
        return "tls_untrusted"
    if "wrong version number" in text or "packet length too long" in text or "record layer" in text:
        return "tls_not_offered"
    if "certificate required" in text or "handshake failure" in text and "alert" in text:
        return "tls_client_cert_required"
    if isinstance(exc, (ConnectionResetError, EOFError)) or "eof" in text:
        return "connection_closed"
    return "unknown"


def node_steps(node: str, default_port: int, tls: bool, ca_pem: str | None = None,
               verify_hostname: bool = True, timeout: float = 5.0) -> dict[str, Any]:
    """DNS → TCP → TLS against one node: {"node", "ok", "cause", "steps": [...]}."""
    host, port = _split(node, default_port)
    steps: list[dict[str, Any]] = []
    result: dict[str, Any] = {"node": f"{host}:{port}", "ok": False, "cause": "unknown", "steps": steps}

    def skip(*names: str) -> dict[str, Any]:
        steps.extend({"name": n, "status": "skipped"} for n in names)
        return result

    started = time.monotonic()
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        steps.append({"name": "dns", "status": "failed", "ms": _ms(started),
                      "detail": f"{host} does not resolve: {exc.strerror or exc}"})
        result["cause"] = "dns_failure"
        return skip("tcp", "tls")
    addresses = sorted({i[4][0] for i in infos})
    steps.append({"name": "dns", "status": "ok", "ms": _ms(started),
                  "detail": f"{host} → {', '.join(addresses[:4])}"})
    started = time.monotonic()
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        steps.append({"name": "tcp", "status": "failed", "ms": _ms(started),
                      "detail": f"no answer from {host}:{port} within {timeout:g} s"})
        result["cause"] = "connect_timeout"
        return skip("tls")
    except ConnectionRefusedError:
        steps.append({"name": "tcp", "status": "failed", "ms": _ms(started),
                      "detail": f"{host}:{port} refused the connection"})
        result["cause"] = "connection_refused"
        return skip("tls")
    except OSError as exc:
        steps.append({"name": "tcp", "status": "failed", "ms": _ms(started),
                      "detail": f"{host}:{port}: {exc.strerror or exc}"})
        result["cause"] = "connect_timeout" if "timed out" in str(exc) else "unknown"
        return skip("tls")
    steps.append({"name": "tcp", "status": "ok", "ms": _ms(started), "detail": f"connected to {host}:{port}"})
    with sock:
        if not tls:
            steps.append({"name": "tls", "status": "skipped", "detail": "TLS is off"})
            result.update(ok=True, cause="ok")
            return result
        started = time.monotonic()
        context = ssl.create_default_context()
        if ca_pem:
            context.load_verify_locations(cadata=ca_pem)
        context.check_hostname = verify_hostname
        try:
            sock.settimeout(timeout)
            with context.wrap_socket(sock, server_hostname=host) as tls_sock:
                version = tls_sock.version()
        except TimeoutError:
            steps.append({"name": "tls", "status": "failed", "ms": _ms(started),
                          "detail": f"no TLS answer from {host}:{port} within {timeout:g} s"})
            result["cause"] = "handshake_timeout"
            return result
        except (ssl.SSLError, OSError) as exc:
            steps.append({"name": "tls", "status": "failed", "ms": _ms(started),
                          "detail": f"{host}:{port}: {getattr(exc, 'verify_message', None) or exc}"})
            result["cause"] = _tls_cause(exc)
            return result
        steps.append({"name": "tls", "status": "ok", "ms": _ms(started), "detail": f"{version} with {host}"})
        result.update(ok=True, cause="ok")
        return result


DEFAULT_PORTS = {"kafka": 9092, "pulsar": 6650, "mqtt": 1883, "nats": 4222, "rabbitmq": 5672}


def diagnose(document: dict, protocol: str | None = None, timeout: float = 5.0) -> dict | None:
    """The network steps against every node of the service's protocol (the chosen one by default):
    {"protocol", "ok", "cause", "from", "nodes": [...], "steps": [steps of the first failed node, or
    the first node]}; None when the document names no protocol."""
    protocol = protocol or document.get("protocol")
    values = (document.get("brokers") or {}).get(protocol or "")
    if not protocol or values is None:
        return None
    tls = bool(values.get("tls_active") or values.get("tls"))
    ca = values.get("tls_ca") if isinstance(values.get("tls_ca"), str) else None
    nodes = [node_steps(n, DEFAULT_PORTS.get(protocol, 0), tls, ca,
                        values.get("tls_verify_hostname", True) is not False, timeout)
             for n in values.get("nodes") or []]
    bad = [n for n in nodes if not n["ok"]]
    ok = len(bad) < len(nodes)          # one node that works is enough; the others are warnings
    first = ((bad if not ok else [n for n in nodes if n["ok"]]) or [{"steps": [], "cause": "unknown"}])[0]
    return {"protocol": protocol, "ok": ok, "cause": "ok" if ok else first["cause"],
            "from": socket.gethostname(), "nodes": nodes, "steps": first["steps"],
            "warnings": [{"code": "node_unreachable", "node": n["node"], "detail": n["cause"]}
                         for n in bad] if ok else [],
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
