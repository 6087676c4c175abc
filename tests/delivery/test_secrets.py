"""Secrets travel to one place only: the answer to the service's own token. Never to pages, admin or
viewer answers, exports, callbacks, audit texts or logs."""
from __future__ import annotations

import json
import logging

from console.delivery import outbox
from console.extensions import db
from console.models import AuditEntry
from tests.conftest import make_token
from tests.test_security import secrets_everywhere  # noqa: F401  - the fixture

from .receiver import Receiver


def test_secrets_only_in_the_service_tokens_answer(app, admin_client, viewer_client, runner,
                                                   secrets_everywhere, caplog, tmp_path) -> None:  # noqa: F811
    caplog.set_level(logging.DEBUG)
    receiver = Receiver().start()
    try:
        answer = admin_client.post("/api/v1/services", json={
            "name": "edge", "protocols": ["kafka", "pulsar", "mqtt", "nats", "rabbitmq"],
            "callback_url": receiver.url()})
        receiver.secrets["edge"] = answer.get_json()["signing_secret"]
        for protocol in ("kafka", "pulsar", "mqtt", "nats", "rabbitmq"):
            assert admin_client.patch(f"/api/v1/brokers/{protocol}",
                                      json={"enabled": True}).status_code == 200
        with app.app_context():
            outbox.deliver_due()
        token = make_token(app, "edge-token", "service", "edge")
        own = app.test_client().get("/api/v1/services/edge/config",
                                    headers={"Authorization": f"Bearer {token}"})
        own_text = own.get_data(as_text=True)
        # positive control: the service gets them all (the NATS password was replaced on the
        # page, and the key arrives re-encoded as PKCS#8)
        current = [s for s in secrets_everywhere[:-1] if s != "nats-Pass-Secret-5"]
        for secret in current:
            assert secret in own_text, secret
        assert "-----BEGIN PRIVATE KEY-----" in own_text
        bodies = [c["body"].decode() for c in receiver.wait_for(1)]
        assert bodies
    finally:
        receiver.stop()
    for c in (admin_client, viewer_client):
        for url in ("/adapters", "/adapters/rollout", "/settings/messaging", "/api/v1/services",
                    "/api/v1/services/edge", "/api/v1/services/edge/config", "/api/v1/rollout",
                    "/api/v1/audit", "/api/v1/versions", "/api/v1/config/export", "/audit",
                    "/settings/messaging/history"):
            bodies.append(c.get(url).get_data(as_text=True))
    bodies.append(admin_client.get("/tokens").get_data(as_text=True))
    bodies.append(admin_client.get("/api/v1/tokens").get_data(as_text=True))
    result = runner.invoke(args=["config", "export", "-o", str(tmp_path / "e.yaml")])
    assert result.exit_code == 0
    bodies.append((tmp_path / "e.yaml").read_text())
    with app.app_context():
        for entry in db.session.execute(db.select(AuditEntry)).scalars():
            bodies.append(entry.summary + json.dumps(entry.changes))
    bodies.append(caplog.text)
    everything = "\n".join(bodies)
    assert "edge" in everything and "read_config" in everything
    for secret in secrets_everywhere:
        assert secret not in everything, secret
