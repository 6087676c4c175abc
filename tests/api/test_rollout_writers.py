"""The other writers take a roll-out plan too: `PUT /api/v1/priorities` with "rollout", and
`config import` (API and CLI) with a top-level `rollout:` key — the same plan, the same validation
(per-field errors, nothing saved), the same roll-out: the first wave gets the new version, the
others keep the one they run."""
from __future__ import annotations

from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from console.extensions import db
from console.models import Rollout
from tests.conftest import make_token

SERVICES = ("canary", "edge-a", "edge-b")
ORDER = ["mqtt", "kafka", "pulsar", "nats", "rabbitmq"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def fleet(app: Flask, client: FlaskClient, admin_token: str) -> dict[str, str]:
    """Three services on MQTT and Kafka, each acknowledged its first document; their tokens."""
    h = bearer(admin_token)
    for protocol in ("mqtt", "kafka"):
        assert client.patch(f"/api/v1/brokers/{protocol}", headers=h, json={
            "enabled": True, "host": "127.0.0.1"}).status_code == 200
    tokens = {"admin": admin_token}
    for name in SERVICES:
        assert client.post("/api/v1/services", headers=h, json={
            "name": name, "protocols": ["mqtt", "kafka"]}).status_code == 201
        tokens[name] = make_token(app, f"{name}-token", "service", name)
        doc = served(client, tokens, name)
        assert client.post(f"/api/v1/services/{name}/ack", headers=bearer(tokens[name]), json={
            "version": doc["version"], "status": "applied"}).status_code == 200
    return tokens


def served(client: FlaskClient, tokens: dict[str, str], name: str) -> dict:
    response = client.get(f"/api/v1/services/{name}/config", headers=bearer(tokens[name]))
    assert response.status_code == 200
    return response.get_json()


def rollouts(app: Flask) -> list[tuple[list[str], str, int]]:
    with app.app_context():
        return [(r.wave, r.state, r.deadline_seconds) for r in db.session.execute(
            db.select(Rollout).order_by(Rollout.id)).scalars()]


def priorities(client: FlaskClient, tokens: dict[str, str]) -> list[str]:
    return client.get("/api/v1/priorities", headers=bearer(tokens["admin"])).get_json()["priorities"]


def test_put_priorities_rolls_out_in_waves(app, client, fleet) -> None:
    before = {n: served(client, fleet, n) for n in SERVICES}
    assert before["canary"]["protocol"] == "kafka"
    response = client.put("/api/v1/priorities", headers=bearer(fleet["admin"]), json={
        "priorities": ORDER, "confirm": True, "rollout": {"wave": ["canary"], "deadline": 90}})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["priorities"] == ORDER
    assert body["rollout"]["state"] == "wave" and body["rollout"]["held"] == ["edge-a", "edge-b"]
    assert rollouts(app) == [(["canary"], "wave", 90)]
    canary = served(client, fleet, "canary")
    assert canary["version"] == body["version"] and canary["protocol"] == "mqtt"
    for name in ("edge-a", "edge-b"):
        doc = served(client, fleet, name)
        assert doc["version"] == before[name]["version"] and doc["protocol"] == "kafka"


def test_put_priorities_dry_run_shows_the_plan(app, client, fleet) -> None:
    response = client.put("/api/v1/priorities", headers=bearer(fleet["admin"]), json={
        "priorities": ORDER, "dry_run": True, "rollout": {"share": 34}})
    assert response.status_code == 200
    plan = response.get_json()["rollout"]
    assert plan["first_wave"] == ["canary", "edge-a"] and plan["later"] == ["edge-b"]
    assert rollouts(app) == [] and priorities(client, fleet) != ORDER


@pytest.mark.parametrize(("plan", "field"), [
    ({"wave": ["ghost"]}, "rollout.wave"),
    ({"share": 0}, "rollout.share"),
    ({"wave": ["canary"], "deadline": "soon"}, "rollout.deadline"),
    ({"wave": ["canary"], "auto_rollback": "maybe"}, "rollout.auto_rollback"),
    ({"wave": ["canary"], "speed": 3}, "rollout"),
    (["canary"], "rollout"),
])
def test_put_priorities_refuses_a_bad_plan_and_saves_nothing(app, client, fleet, plan,
                                                             field) -> None:
    before = priorities(client, fleet)
    response = client.put("/api/v1/priorities", headers=bearer(fleet["admin"]), json={
        "priorities": ORDER, "confirm": True, "rollout": plan})
    assert response.status_code == 422
    body = response.get_json()
    assert body["message"] == "Nothing was saved: the roll-out plan is invalid."
    assert field in body["errors"]
    assert priorities(client, fleet) == before and rollouts(app) == []


IMPORT = """messaging_console: 1
brokers:
  mqtt: {keepalive: 45}
rollout:
"""


def import_yaml(client, tokens, text, query="?confirm=true"):
    return client.post(f"/api/v1/config/import{query}", headers=bearer(tokens["admin"]),
                       data=text, content_type="application/yaml")


def test_api_import_with_a_rollout_key(app, client, fleet) -> None:
    text = IMPORT + "  wave: [edge-b]\n  deadline: 60\n  auto_rollback: true\n"
    preview = import_yaml(client, fleet, text, "?dry_run=true")
    assert preview.status_code == 200
    assert preview.get_json()["rollout"]["first_wave"] == ["edge-b"]
    assert rollouts(app) == []
    response = import_yaml(client, fleet, text)
    assert response.status_code == 200, response.get_json()
    started = response.get_json()["rollout"]
    assert started["wave"] == ["edge-b"] and started["auto_rollback"] is True
    assert rollouts(app) == [(["edge-b"], "wave", 60)]
    assert served(client, fleet, "edge-b")["brokers"]["mqtt"]["keepalive"] == 45
    assert served(client, fleet, "canary")["brokers"]["mqtt"]["keepalive"] == 60


@pytest.mark.parametrize(("plan", "field"), [
    ("rollout:\n  wave: [ghost]\n", "rollout.wave"),
    ("rollout:\n  share: 101\n", "rollout.share"),
    ("rollout:\n  wave: canary\n  deadline: 0\n", "rollout.deadline"),
    ("rollout: {auto_rollback: true}\n", "rollout.wave"),
    ("rollout: [canary]\n", "rollout"),
])
def test_api_import_refuses_a_bad_plan_and_imports_nothing(app, client, fleet, plan,
                                                           field) -> None:
    response = import_yaml(client, fleet, IMPORT.replace("rollout:\n", plan))
    assert response.status_code == 422
    assert field in response.get_json()["errors"], response.get_json()
    assert response.get_json()["message"] == "Nothing was imported."
    assert served(client, fleet, "canary")["brokers"]["mqtt"]["keepalive"] == 60
    assert rollouts(app) == []


def test_cli_import_with_a_rollout_key(app, client, fleet, runner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(IMPORT + "  wave: [ghost]\n")
    result = runner.invoke(args=["config", "import", str(bad), "--confirm"])
    assert result.exit_code == 1
    assert "Nothing was imported:" in result.output
    assert "rollout.wave: No registered service named ghost." in result.output
    assert rollouts(app) == []
    good = tmp_path / "good.yaml"
    good.write_text(IMPORT + "  wave: [canary]\n  deadline: 120\n")
    result = runner.invoke(args=["config", "import", str(good), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "roll-out in waves: First wave: canary; the other 2 service(s) get it" in result.output
    result = runner.invoke(args=["config", "import", str(good), "--confirm"])
    assert result.exit_code == 0, result.output
    assert "roll-out in waves 1: First wave of v" in result.output
    assert rollouts(app) == [(["canary"], "wave", 120)]
