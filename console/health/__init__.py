"""Health endpoints for orchestrators: /healthz (liveness), /readyz (readiness from cached check
results, no broker I/O) and /metrics (Prometheus)."""
from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any, Iterator

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from .. import checks, database, diagnostics
from ..brokers import PROTOCOLS
from ..delivery import outbox, plans
from ..extensions import db
from ..models import Delivery, ExtensionService
from ..settings import service as settings_service

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    why = database.probe()
    if why is not None:
        return database.unavailable(why)
    return jsonify(status="ok")


def required_protocols(enabled: list[str]) -> list[str]:
    """Protocols whose outage makes the console not ready: CONSOLE_READY_REQUIRED, else all enabled."""
    wanted = current_app.config["READY_REQUIRED"]
    if not wanted:
        return enabled
    return [p for p in wanted if p in enabled]


def readiness() -> tuple[dict[str, Any], int]:
    """The /readyz document and its HTTP status, from stored results only."""
    brokers = checks.current_statuses()
    enabled = [p for p, b in brokers.items() if b["status"] != "disabled"]
    required = required_protocols(enabled)
    bad = [p for p in enabled if brokers[p]["status"] != "up"]
    if any(p in bad for p in required):
        status, code = "down", 503
    elif bad:
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    return {"status": status, "brokers": brokers, "required": required,
            "certificates": diagnostics.certificate_warnings()}, code


def cached_readiness() -> tuple[bytes, int]:
    """The encoded readiness() answer, reused for CONSOLE_READY_CACHE_SECONDS (default 1 s) by each
    worker: probes and scrapers may call it often, and it changes only with the next check."""
    ttl = current_app.config["READY_CACHE_SECONDS"]
    cache = current_app.extensions.setdefault("console_readiness", {"at": float("-inf")})
    now = time.monotonic()
    if ttl <= 0 or now - cache["at"] >= ttl:
        document, code = readiness()
        cache["value"] = (json.dumps(document).encode(), code)
        cache["at"] = now
    return cache["value"]


@bp.get("/readyz")
def readyz():
    body, code = cached_readiness()     # no database: 503 from console.database
    return Response(body, status=code, mimetype="application/json")


def delivery_metrics(version, target, acked, applied, outbox_gauge):
    """Fill the configuration delivery gauges (one query each)."""
    version.add_metric([], float(outbox.current_version()))
    for row in db.session.execute(db.select(ExtensionService)).scalars():
        if row.config_version is not None:
            target.add_metric([row.name], float(row.config_version))
        if row.acked_version is not None and row.ack_status == "applied":
            acked.add_metric([row.name], float(row.acked_version))
        applied.add_metric([row.name], 1.0 if (row.ack_status == "applied" and row.acked_etag
                                               and row.acked_etag == row.config_etag) else 0.0)
    counts = dict(db.session.execute(db.select(Delivery.state, db.func.count(Delivery.id))
                                     .where(Delivery.state.in_(("pending", "failed")))
                                     .group_by(Delivery.state)).all())
    for state in ("pending", "failed"):
        outbox_gauge.add_metric([state], float(counts.get(state, 0)))
    return version, target, acked, applied, outbox_gauge


def rollout_metrics() -> Iterator[GaugeMetricFamily]:
    """The newest roll-out in waves: its state (1 for the state it is in), whether it is halted,
    its version, and how many services it holds back on the version they run."""
    state = GaugeMetricFamily("messaging_rollout_state",
                              "1 for the state the newest roll-out in waves is in.",
                              labels=["version", "state"])
    halted = GaugeMetricFamily("messaging_rollout_halted",
                               "1 while the newest roll-out in waves is halted (a failed "
                               "acknowledgement or a missed deadline).")
    held = GaugeMetricFamily("messaging_rollout_held_services",
                             "Services a roll-out in progress keeps on the version they run.")
    row = plans.active() or plans.latest()
    doc = plans.document(row)
    if doc is not None:
        for name in ("wave", "halted", "released", "rolled_back", "superseded"):
            state.add_metric([str(doc["version"]), name], 1.0 if doc["state"] == name else 0.0)
    halted.add_metric([], 1.0 if doc is not None and doc["halted"] else 0.0)
    held.add_metric([], float(len(doc["held"])) if doc is not None else 0.0)
    yield from (state, halted, held)


class BrokerCollector:
    """Prometheus collector that reads the stored check results and certificates at scrape time,
    so every worker answers the same."""

    def __init__(self, app) -> None:
        self.app = app

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("messaging_broker_up", "1 when the last check of the broker passed.",
                               labels=["protocol"])
        latency = GaugeMetricFamily("messaging_broker_check_latency_seconds",
                                    "Duration of the last connection check.", labels=["protocol"])
        checked = GaugeMetricFamily("messaging_broker_last_check_timestamp_seconds",
                                    "When the broker was last checked.", labels=["protocol"])
        enabled = GaugeMetricFamily("messaging_broker_enabled", "1 when the protocol is enabled.",
                                    labels=["protocol"])
        node_up = GaugeMetricFamily("messaging_broker_node_up",
                                    "1 when the node (a configured one, or a broker the cluster "
                                    "advertises) answered the last check.", labels=["protocol", "node"])
        current = GaugeMetricFamily("messaging_broker_check_current",
                                    "1 when the last check was made with the current settings; 0 "
                                    "while the changed settings are re-checked (then the up, "
                                    "latency and last check series are left out).",
                                    labels=["protocol"])
        expiry = GaugeMetricFamily("messaging_certificate_expiry_timestamp_seconds",
                                   "notAfter of each certificate the console knows.",
                                   labels=["protocol", "source", "subject", "sha256"])
        days_left = GaugeMetricFamily("messaging_certificate_days_left",
                                      "Whole days until each certificate the console knows "
                                      "expires (negative once expired; the page warns within 30 "
                                      "and 7).", labels=["protocol", "source", "subject", "sha256"])
        version = GaugeMetricFamily("messaging_config_version",
                                    "The newest configuration version.")
        target = GaugeMetricFamily("messaging_service_config_version",
                                   "The configuration version each service should run.",
                                   labels=["service"])
        acked = GaugeMetricFamily("messaging_service_acknowledged_version",
                                  "The version each service last acknowledged as applied.",
                                  labels=["service"])
        current_ack = GaugeMetricFamily("messaging_service_config_applied",
                                        "1 when the service acknowledged its current configuration "
                                        "as applied.", labels=["service"])
        outbox_gauge = GaugeMetricFamily("messaging_config_deliveries",
                                         "Callbacks to services by state (pending includes retrying).",
                                         labels=["state"])
        database_up = GaugeMetricFamily("messaging_console_database_up",
                                        "1 when the console's database answers; 0 while it is "
                                        "unreachable (then no series read from it follow).")
        with self.app.app_context():
            if database.probe(self.app) is not None:
                database_up.add_metric([], 0.0)
                yield database_up
                return
            try:
                families = list(self._from_database(version, target, acked, current_ack,
                                                    outbox_gauge, up, latency, checked, node_up,
                                                    enabled, current, expiry, days_left))
            except database.SCHEMA_ERRORS:     # went away during the scrape, or no tables
                db.session.rollback()
                database_up.add_metric([], 0.0)
                yield database_up
                return
        database_up.add_metric([], 1.0)
        yield database_up
        yield from families

    def _from_database(self, version, target, acked, current_ack, outbox_gauge, up, latency,
                       checked, node_up, enabled, current, expiry,
                       days_left) -> Iterator[GaugeMetricFamily]:
        yield from delivery_metrics(version, target, acked, current_ack, outbox_gauge)
        yield from rollout_metrics()
        digests = checks.current_digests()
        rows = checks.latest(digests)
        for protocol in PROTOCOLS:
            settings = settings_service.effective(protocol)
            enabled.add_metric([protocol], 1.0 if settings.enabled else 0.0)
            row = rows.get(protocol)
            if row is not None:
                current.add_metric([protocol], 1.0 if row.settings_digest == digests[protocol]
                                   else 0.0)
            if row is not None and row.settings_digest == digests[protocol]:
                up.add_metric([protocol], 1.0 if row.status == "up" else 0.0)
                if row.latency_ms is not None:
                    latency.add_metric([protocol], row.latency_ms / 1000)
                checked.add_metric([protocol], row.checked_at.timestamp())
                for node in row.nodes or ():
                    node_up.add_metric([protocol, str(node.get("node"))],
                                       1.0 if node.get("status") == "up" else 0.0)
        for cert in diagnostics.inventory():
            labels = [cert["protocol"], cert["source"].split(" ")[0], cert["subject"], cert["sha256"]]
            expiry.add_metric(labels, dt.datetime.fromisoformat(cert["not_after"]).timestamp())
            days_left.add_metric(labels, float(diagnostics.refresh_status(cert)["days_left"]))
        yield from (up, latency, checked, node_up, enabled, current, expiry, days_left)


@bp.get("/metrics")
def metrics():
    registry = current_app.extensions.get("console_metrics")
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(BrokerCollector(current_app._get_current_object()))
        current_app.extensions["console_metrics"] = registry
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
