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
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .. import checks
from ..brokers import PROTOCOLS
from ..extensions import db
from ..settings import service as settings_service

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    try:
        db.session.execute(text("SELECT 1"))
    except SQLAlchemyError:
        db.session.rollback()
        return jsonify(status="error", message="The database does not answer."), 503
    return jsonify(status="ok")


def required_protocols(enabled: list[str]) -> list[str]:
    """Protocols whose outage makes the console not ready: CONSOLE_READY_REQUIRED, else all enabled."""
    wanted = current_app.config["READY_REQUIRED"]
    if not wanted:
        return enabled
    return [p for p in wanted if p in enabled]


def readiness() -> tuple[dict[str, Any], int]:
    """The /readyz document and its HTTP status, from stored results only."""
    interval = current_app.config["CHECK_INTERVAL"]
    rows = checks.latest()
    brokers: dict[str, Any] = {}
    for protocol in PROTOCOLS:
        settings = settings_service.effective(protocol)
        brokers[protocol] = checks.status_of(protocol, settings, rows.get(protocol), interval)
    enabled = [p for p, b in brokers.items() if b["status"] != "disabled"]
    required = required_protocols(enabled)
    bad = [p for p in enabled if brokers[p]["status"] != "up"]
    if any(p in bad for p in required):
        status, code = "down", 503
    elif bad:
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    from .. import diagnostics

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
    try:
        body, code = cached_readiness()
    except SQLAlchemyError:
        db.session.rollback()
        return jsonify(status="down", message="The database does not answer.", brokers={}), 503
    return Response(body, status=code, mimetype="application/json")


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
        expiry = GaugeMetricFamily("messaging_certificate_expiry_timestamp_seconds",
                                   "notAfter of each certificate the console knows.",
                                   labels=["protocol", "source", "subject", "sha256"])
        with self.app.app_context():
            rows = checks.latest()
            for protocol in PROTOCOLS:
                settings = settings_service.effective(protocol)
                enabled.add_metric([protocol], 1.0 if settings.enabled else 0.0)
                row = rows.get(protocol)
                if row is not None:
                    up.add_metric([protocol], 1.0 if row.status == "up" else 0.0)
                    if row.latency_ms is not None:
                        latency.add_metric([protocol], row.latency_ms / 1000)
                    checked.add_metric([protocol], row.checked_at.timestamp())
            from .. import diagnostics

            for cert in diagnostics.inventory():
                expiry.add_metric([cert["protocol"], cert["source"].split(" ")[0], cert["subject"],
                                   cert["sha256"]],
                                  dt.datetime.fromisoformat(cert["not_after"]).timestamp())
        yield from (up, latency, checked, enabled, expiry)


@bp.get("/metrics")
def metrics():
    registry = current_app.extensions.get("console_metrics")
    if registry is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(BrokerCollector(current_app._get_current_object()))
        current_app.extensions["console_metrics"] = registry
    return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
