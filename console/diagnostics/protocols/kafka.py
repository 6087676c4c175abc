"""Kafka diagnosis: the handshake is a raw ApiVersions request; the login and the operation use
confluent-kafka's AdminClient (cluster metadata, then a description of the configured topic).

librdkafka never raises the cause of a failed connection: it only reports it to `error_cb`, which needs
`poll()`. The login therefore loops short `list_topics` calls and polls until a decisive error arrives
(authentication, SSL, all brokers down). `describe_topics` is used for the topic because a metadata
request for a missing topic may create it on brokers with auto-creation on.
"""
from __future__ import annotations

import re
import struct
from dataclasses import replace
from typing import Any

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AdminClient

from ...brokers.base import BrokerConfig, Deadline, one_line
from ...brokers.kafka import KAFKA_GREETING, client_conf, security_protocol
from .base import Link, Passed, Session, StepFailed, Wire, frame_complete

_POLL = 0.05
_DECISIVE = (KafkaError._AUTHENTICATION, KafkaError._SSL, KafkaError._RESOLVE, KafkaError._ALL_BROKERS_DOWN)
_OFFERED = re.compile(r"supported mechanisms: ([A-Z0-9, _-]+|\(n/a\))", re.I)


class KafkaSession(Session):
    """Kafka: ApiVersions, SASL login with cluster metadata, topic description."""

    def __init__(self, config: BrokerConfig) -> None:
        super().__init__(config)
        self.admin: AdminClient | None = None
        self.errors: list[KafkaError] = []
        self.metadata: Any = None

    @staticmethod
    def effective(config: BrokerConfig) -> BrokerConfig:
        return replace(config, tls="SSL" in security_protocol(config))

    @classmethod
    def wire(cls) -> Wire:
        return Wire(KAFKA_GREETING, frame_complete(4))

    def describe_handshake(self, reply: bytes) -> str:
        error, count = struct.unpack(">hi", reply[8:14]) if len(reply) >= 14 else (0, 0)
        versions = f"{count} APIs" if count else "its API versions"
        return f"ApiVersions answered with {versions} (error code {error})"

    @property
    def sasl(self) -> str | None:
        """The configured SASL mechanism; None without SASL."""
        protocol = security_protocol(self.config)
        return str(self.config.options.get("sasl_mechanism") or "PLAIN").upper() if protocol.startswith("SASL") \
            else None

    def auth(self, deadline: Deadline, link: Link) -> Passed:
        self.facts.update(mechanism=self.sasl, username=self.config.username, login=self.login_words(),
                          source="librdkafka reported")
        self.admin = AdminClient(client_conf(self.config, deadline.remaining(), self.errors.append))
        while not deadline.expired:
            try:
                self.metadata = self.admin.list_topics(timeout=max(deadline.remaining(_POLL), 0.01))
                break
            except KafkaException:
                self.admin.poll(0)
                decisive = [e for e in self.errors if e.code() in _DECISIVE]
                if decisive:
                    raise self._refusal(decisive)
        if self.metadata is None:
            raise StepFailed("handshake_timeout", "no cluster metadata within the time left"
                             + (f" ({one_line(self.errors[-1].str())})" if self.errors else ""))
        md = self.metadata
        self.facts.update(cluster=md.cluster_id, brokers=len(md.brokers))
        advertised = ", ".join(f"{b.host}:{b.port}" for b in md.brokers.values())
        how = (f"SASL {self.sasl} login of {self.config.username} accepted" if self.sasl
               else f"anonymous ({security_protocol(self.config)}, no SASL login)")
        return Passed(f"{how}; cluster {md.cluster_id}, {len(md.brokers)} broker(s) advertised at {advertised}",
                      data={"cluster_id": md.cluster_id, "brokers": advertised})

    def _refusal(self, errors: list[KafkaError]) -> StepFailed:
        chosen = next((e for e in errors if e.code() == KafkaError._AUTHENTICATION), None) or \
            next((e for e in errors if e.code() == KafkaError._SSL), None) or \
            next((e for e in reversed(self.errors) if e.code() == KafkaError._TRANSPORT), errors[0])
        words = one_line(chosen.str())
        lowered = words.lower()
        if chosen.code() == KafkaError._AUTHENTICATION:
            offered = _OFFERED.search(words)
            mechanisms = offered.group(1).strip() if offered and offered.group(1) != "(n/a)" else ""
            if "unsupported sasl mechanism" in lowered or "mechanism handshake failed" in lowered:
                listed = self.sasl in mechanisms.replace(",", " ").split()
                return StepFailed("sasl_mechanism_unsupported", words, words=words, offered=mechanisms,
                                  variant="listed" if listed else None)
            return StepFailed("auth_failed", words, words=words)
        if chosen.code() == KafkaError._RESOLVE or any(e.code() == KafkaError._RESOLVE for e in errors):
            return StepFailed("dns_failure", words, words=words, dns_error=f"librdkafka could not resolve a "
                                                                          f"broker address: {words}")
        if chosen.code() == KafkaError._SSL:
            return StepFailed("tls_untrusted" if "verify failed" in lowered else "unknown", words, words=words)
        if not self.sasl:
            return StepFailed("auth_failed", f"the broker closed the connection before answering metadata "
                                             f"({words})", words=words, variant="sasl_required")
        return StepFailed("unknown", words, words=words)

    def operation(self, deadline: Deadline, link: Link) -> Passed:
        assert self.admin is not None
        topic = str(self.config.options.get("topic") or "").strip()
        self.facts["topic"] = topic or None
        if not topic:
            md = self.admin.list_topics(timeout=max(deadline.remaining(), 0.01))
            return Passed(f"no topic configured: cluster metadata instead (cluster {md.cluster_id}, "
                          f"{len(md.brokers)} broker(s), {len(md.topics)} topic(s))")
        futures = self.admin.describe_topics(TopicCollection([topic]),
                                             request_timeout=max(deadline.remaining(), 0.01))
        try:
            described = futures[topic].result(timeout=max(deadline.remaining(), 0.01))
        except KafkaException as exc:
            error = exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None
            words = one_line(error.str() if error else exc)
            code = error.code() if error else None
            if code == KafkaError.UNKNOWN_TOPIC_OR_PART:
                raise StepFailed("not_found", f"topic {topic}: {words}", words=words) from None
            if code in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED):
                raise StepFailed("access_denied", f"topic {topic}: {words}", words=words) from None
            if code == KafkaError._TIMED_OUT:
                raise StepFailed("handshake_timeout", f"no answer to the topic description ({words}): check "
                                 f"that the advertised brokers are reachable", words=words) from None
            raise StepFailed("unknown", f"topic {topic}: {words}", words=words) from None
        except TimeoutError:
            raise StepFailed("handshake_timeout", f"no description of topic {topic} within the time left") from None
        partitions = len(described.partitions)
        self.facts["partitions"] = partitions
        return Passed(f"topic {topic} exists with {partitions} partition(s) (DescribeTopics)",
                      data={"topic": topic, "partitions": partitions})

    def identity(self) -> str:
        brokers = self.facts.get("brokers", 0)
        return f"cluster {self.facts.get('cluster')}, {brokers} broker{'s' if brokers != 1 else ''}"

    def close(self) -> None:
        self.admin = None
