"""Kafka checker (confluent-kafka `AdminClient`, librdkafka): bootstrap, one metadata request, destroy.

Connection string: `config.servers` as the bootstrap list (`host1:9092,host2:9092`), else `host:port`.

Options honoured: `options["security_protocol"]` (the effective one: PLAINTEXT, SSL, SASL_PLAINTEXT,
SASL_SSL; derived from `tls` and `sasl_mechanism` when empty), `options["sasl_mechanism"]` (PLAIN,
SCRAM-SHA-256, SCRAM-SHA-512) with `username`/`password`, `tls_ca_file` (else librdkafka's `probe` of the
system store), `tls_cert_file`/`tls_key_file`, `tls_verify_hostname`
(`ssl.endpoint.identification.algorithm`), `options["client_id"]`.

Identity: `cluster_id`, `controller_id`, `controller` (host:port), `brokers` (count).

Traps handled:
- librdkafka never raises the cause: `list_topics` always fails with "Broker transport failure" and the
  cause reaches `error_cb` only on `poll()`; a refused port is retried until the timeout. The check loops
  `list_topics(timeout=0.05)` + `poll(0)` and stops at the first decisive `error_cb` (authentication, SSL,
  name resolution, all brokers down);
- a fresh client's metadata request lost its bootstrap connection in about one run in four and waited
  ~50 ms: librdkafka (>= 2.10) decommissions the bootstrap broker as soon as its own "connected" metadata
  names the real broker (here the same address), the application's request still in flight on it fails,
  and with sparse connections the new broker is only dialled after `reconnect.backoff.ms / 2` (the
  sparse-connect interval). `enable.sparse.connections=false` dials every learned broker at once, so the
  retried request costs one more connection (~1 ms) instead of 50 ms (bench/README.md has the evidence);
- `socket.connection.setup.timeout.ms` (default 30 s), `socket.timeout.ms` and
  `api.version.request.timeout.ms` are set from the deadline;
- CA, expiry and host-name failures all read "certificate verify failed": a Python handshake with the
  same settings names the exact cause (`net.tls_failure`);
- an SSL client against a plaintext broker hangs in the handshake: an ApiVersions request in plaintext
  then tells `tls_not_offered`; a plaintext client against a TLS port or another protocol is told by
  `net.diagnose`.
"""
from __future__ import annotations

import struct
from dataclasses import replace
from typing import Any, Callable

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from .base import BrokerConfig, CheckFailed, Deadline, DriverChecker, one_line
from .net import Greeting, diagnose, tls_failure

_CORRELATION = 0x6D63C0DE
API_VERSIONS = struct.pack(">ihhih", 10, 18, 0, _CORRELATION, -1)
KAFKA_GREETING = Greeting("Kafka", API_VERSIONS,
                          lambda reply: len(reply) >= 8 and reply[4:8] == struct.pack(">i", _CORRELATION))
_STEP = 0.05


def security_protocol(config: BrokerConfig) -> str:
    """The effective `security.protocol`: the option when set, else derived from TLS and SASL."""
    chosen = str(config.options.get("security_protocol") or "").upper()
    if chosen:
        return chosen
    sasl = bool(config.options.get("sasl_mechanism"))
    return {(False, False): "PLAINTEXT", (True, False): "SSL", (False, True): "SASL_PLAINTEXT",
            (True, True): "SASL_SSL"}[(config.tls, sasl)]


def bootstrap(config: BrokerConfig) -> str:
    """The `bootstrap.servers` string for `config`."""
    return ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in config.addresses)


def client_conf(config: BrokerConfig, budget: float,
                error_cb: Callable[[KafkaError], None]) -> dict[str, Any]:
    """The librdkafka configuration for `config`, every timeout below `budget` seconds."""
    ms = max(int(budget * 1000), 1)
    protocol = security_protocol(config)
    conf: dict[str, Any] = {
        "bootstrap.servers": bootstrap(config),
        "client.id": str(config.options.get("client_id") or "messaging-console"),
        "security.protocol": protocol,
        "error_cb": error_cb,
        "log_level": 0,
        "socket.connection.setup.timeout.ms": max(ms, 1000),
        "socket.timeout.ms": max(ms, 10),
        "api.version.request.timeout.ms": ms,
        "reconnect.backoff.ms": 100,
        "reconnect.backoff.max.ms": 1000,
        "enable.sparse.connections": False,
    }
    if protocol in ("SSL", "SASL_SSL"):
        conf["ssl.ca.location"] = config.tls_ca_file or "probe"
        conf["ssl.endpoint.identification.algorithm"] = "https" if config.tls_verify_hostname else "none"
        if config.tls_cert_file:
            conf["ssl.certificate.location"] = config.tls_cert_file
            conf["ssl.key.location"] = config.tls_key_file or config.tls_cert_file
    if protocol.startswith("SASL"):
        conf["sasl.mechanism"] = str(config.options.get("sasl_mechanism") or "PLAIN").upper()
        conf["sasl.username"] = config.username or ""
        conf["sasl.password"] = config.password or ""
    return conf


def _decisive(errors: list[KafkaError]) -> KafkaError | None:
    for code in (KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError._RESOLVE, KafkaError._BAD_MSG):
        for error in errors:
            if error.code() == code:
                return error
    down = [error for error in errors if error.code() == KafkaError._ALL_BROKERS_DOWN]
    if down:
        transport = [error for error in errors if error.code() == KafkaError._TRANSPORT]
        return transport[-1] if transport else down[0]
    return None


class KafkaChecker(DriverChecker):
    """Checks a Kafka cluster with confluent-kafka: bootstrap and one metadata request."""

    protocol = "kafka"
    default_port = 9092

    def probe(self, config: BrokerConfig, deadline: Deadline) -> dict[str, Any]:
        """Fetch cluster metadata within `deadline`; the cluster's identity."""
        library = deadline.share(self.library_share)
        errors: list[KafkaError] = []
        admin: AdminClient | None = AdminClient(client_conf(config, library.remaining(), errors.append))
        try:
            decisive: KafkaError | None = None
            while not library.expired:
                try:
                    metadata = admin.list_topics(timeout=max(library.remaining(_STEP), 0.01))
                except KafkaException:
                    admin.poll(0)
                    decisive = _decisive(errors)
                    if decisive is not None:
                        break
                    continue
                deadline.done()
                controller = metadata.brokers.get(metadata.controller_id)
                return {"cluster_id": metadata.cluster_id, "controller_id": metadata.controller_id,
                        "controller": f"{controller.host}:{controller.port}" if controller else None,
                        "brokers": len(metadata.brokers), "tls": "SSL" in security_protocol(config)}
            admin.poll(0)
            decisive = decisive or _decisive(errors)
        finally:
            admin = None
        raise self._classify(config, deadline, decisive, errors)

    def _classify(self, config: BrokerConfig, deadline: Deadline, error: KafkaError | None,
                  errors: list[KafkaError]) -> CheckFailed:
        host, port = config.addresses[0]
        where = f"{host}:{port}"
        words = one_line(error.str()) if error is not None else ""
        lowered = words.lower()
        tls = "SSL" in security_protocol(config)
        probe_config = config if config.tls == tls else replace(config, tls=tls)
        if error is None:
            fallback = CheckFailed("handshake_timeout", f"{where}: no metadata within the timeout")
            return diagnose(probe_config, host, port, deadline, KAFKA_GREETING, fallback)
        if error.code() == KafkaError._ALL_BROKERS_DOWN and not security_protocol(config).startswith("SASL"):
            fallback = CheckFailed("auth_failed", f"{where} answers Kafka requests but closed the connection "
                                                  f"before sending metadata: it probably requires SASL "
                                                  f"authentication ({words})")
            return diagnose(probe_config, host, port, deadline, KAFKA_GREETING, fallback)
        code = error.code()
        if code == KafkaError._AUTHENTICATION:
            if "unsupported sasl mechanism" in lowered or "mechanism handshake failed" in lowered:
                return CheckFailed("sasl_mechanism_unsupported", words)
            return CheckFailed("auth_failed", words)
        if code == KafkaError._RESOLVE:
            return CheckFailed("dns_failure", words)
        if code == KafkaError._SSL and "certificate verify failed" in lowered:
            return tls_failure(probe_config, host, port, deadline, words)
        if "connection refused" in lowered:
            return CheckFailed("connection_refused", words)
        if "in state connect" in lowered and "timed out" in lowered:
            return CheckFailed("connect_timeout", words)
        if code == KafkaError._BAD_MSG:
            fallback = CheckFailed("protocol_mismatch", f"{where} does not speak Kafka ({words})")
        elif "timed out" in lowered:
            fallback = CheckFailed("handshake_timeout", words)
        else:
            fallback = CheckFailed("unknown", words or f"{where}: all brokers are down")
        return diagnose(probe_config, host, port, deadline, KAFKA_GREETING, fallback)
