"""The change pipeline announces a committed version (console.signals) instead of importing what acts
on it, and asks DNS before the configuration's write lock, never under it."""
from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, func, select

from console import checks, signals
from console.extensions import db
from console.models import ConfigVersion, Delivery
from console.settings import changes


def _versions_seen_by_another_connection(app: Flask) -> int:
    engine = create_engine(app.config["SQLALCHEMY_DATABASE_URI"])
    try:
        with engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(ConfigVersion)).scalar_one()
    finally:
        engine.dispose()


def test_a_saved_change_is_announced_written_then_committed(app: Flask, client, admin_token) -> None:
    heard: list[tuple[str, Any, int]] = []

    def written(sender: Flask, *, snapshot: Any, version: int | None, **_: Any) -> None:
        heard.append(("written", version, _versions_seen_by_another_connection(app)))

    def committed(sender: Flask, *, snapshot: Any, version: int | None, **_: Any) -> None:
        assert snapshot.settings("mqtt").get("keepalive") == 45
        heard.append(("committed", version, _versions_seen_by_another_connection(app)))

    signals.version_written.connect(written)
    signals.version_committed.connect(committed)
    try:
        answer = client.patch("/api/v1/brokers/mqtt", json={"keepalive": 45},
                              headers={"Authorization": f"Bearer {admin_token}"})
    finally:
        signals.version_written.disconnect(written)
        signals.version_committed.disconnect(committed)
    assert answer.status_code == 200, answer.get_json()
    version = answer.get_json()["version"]
    # written inside the transaction (another connection sees nothing yet: the baseline and the
    # new version are not committed), committed after it (both are visible)
    assert heard == [("written", version, 0), ("committed", version, 2)]


def test_the_outbox_queues_callbacks_through_the_signal(app: Flask, client, admin_token) -> None:
    auth = {"Authorization": f"Bearer {admin_token}"}
    assert client.post("/api/v1/services", json={"name": "edge", "protocols": ["mqtt"],
                                                 "callback_url": "http://127.0.0.1:9/cb"},
                       headers=auth).status_code == 201
    assert client.patch("/api/v1/brokers/mqtt", json={"enabled": True},
                        headers=auth).status_code == 200       # the service's document changes
    with app.app_context():
        assert db.session.execute(select(func.count()).select_from(Delivery)).scalar_one() == 1


@pytest.mark.parametrize("confirm", [False, True])
def test_no_dns_under_the_write_lock(app: Flask, client, admin_token, monkeypatch, confirm) -> None:
    """An adapter on MQTT, whose broker address changes: the pipeline asks whether the old and the
    new address reach the same broker (DNS) before it takes the write lock."""
    auth = {"Authorization": f"Bearer {admin_token}"}
    assert client.patch("/api/v1/brokers/mqtt", json={"enabled": True, "host": "localhost"},
                        headers=auth).status_code == 200
    assert client.post("/api/v1/services", json={"name": "edge", "protocols": ["mqtt"]},
                       headers=auth).status_code == 201
    assert client.post("/api/v1/adapters", json={"name": "temp", "service": "edge"},
                       headers=auth).status_code == 201
    asked: list[tuple[str, bool]] = []
    locked: list[bool] = []
    real_resolver, real_lock = checks.system_resolver, changes.lock

    def system_resolver(host: str, port: int) -> list[str]:       # runs on the DNS pool's thread
        asked.append((host, bool(locked)))
        return real_resolver(host, port)

    def lock() -> None:
        locked.append(True)         # held from here to the end of the request's transaction
        real_lock()

    monkeypatch.setattr(checks, "system_resolver", system_resolver)
    monkeypatch.setattr(changes, "lock", lock)
    answer = client.patch("/api/v1/brokers/mqtt", json={"host": "127.0.0.1", "confirm": confirm},
                          headers=auth)
    assert answer.status_code == (200 if confirm else 409), answer.get_json()
    assert "localhost" in {host for host, _ in asked}
    assert not any(under_lock for _, under_lock in asked)
    # localhost and 127.0.0.1 are the same broker: the adapter is not broken by the respelling
    kinds = {a["kind"] for a in answer.get_json()["impact"]["adapters"]}
    assert "breaks" not in kinds
