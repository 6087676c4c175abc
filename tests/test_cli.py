"""The Flask CLI: users, tokens, first admin, brokers list."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from flask import Flask

from tests.conftest import ROOT


def test_users_create_and_login(app: Flask, runner) -> None:
    result = runner.invoke(args=["users", "create", "ops", "--role", "viewer", "--password-stdin"],
                           input="long-enough-pw\n")
    assert result.exit_code == 0 and "Created viewer ops" in result.output
    again = runner.invoke(args=["users", "create", "ops", "--role", "viewer", "--password-stdin"],
                          input="long-enough-pw\n")
    assert again.exit_code != 0 and "exists already" in again.output
    short = runner.invoke(args=["users", "create", "x", "--role", "admin", "--password-stdin"],
                          input="short\n")
    assert short.exit_code != 0 and "at least 8" in short.output
    bad_role = runner.invoke(args=["users", "create", "y", "--role", "root"])
    assert bad_role.exit_code != 0
    client = app.test_client()
    assert client.post("/login", data={"username": "ops", "password": "long-enough-pw"}).status_code == 302


def test_ensure_admin_generates_once(app: Flask, runner, monkeypatch) -> None:
    first = runner.invoke(args=["users", "ensure-admin"])
    assert first.exit_code == 0 and "with password:" in first.output
    password = first.output.split("with password:")[1].split()[0]
    assert app.test_client().post("/login", data={"username": "admin", "password": password}).status_code == 302
    second = runner.invoke(args=["users", "ensure-admin"])
    assert "Users exist" in second.output


def test_ensure_admin_uses_env_password(app: Flask, runner, monkeypatch) -> None:
    monkeypatch.setenv("CONSOLE_ADMIN_PASSWORD", "from-the-env-1")
    result = runner.invoke(args=["users", "ensure-admin"])
    assert "from-the-env-1" not in result.output and "CONSOLE_ADMIN_PASSWORD" in result.output
    assert app.test_client().post("/login", data={"username": "admin", "password": "from-the-env-1"}).status_code == 302


def test_tokens_create_list_revoke(app: Flask, runner) -> None:
    token = runner.invoke(args=["tokens", "create", "ci", "--role", "admin"]).output.strip()
    assert token.startswith("mc_") and len(token) > 40
    listing = runner.invoke(args=["tokens", "list"]).output
    assert "ci\tadmin" in listing and token not in listing
    client = app.test_client()
    assert client.get("/api/v1/brokers", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    runner.invoke(args=["tokens", "revoke", "ci"])
    assert client.get("/api/v1/brokers", headers={"Authorization": f"Bearer {token}"}).status_code == 401


def test_token_stored_as_digest_only(app: Flask, runner) -> None:
    from console.extensions import db
    from console.models import ApiToken

    token = runner.invoke(args=["tokens", "create", "ci", "--role", "viewer"]).output.strip()
    with app.app_context():
        row = db.session.execute(db.select(ApiToken)).scalar_one()
        assert token not in (row.digest, row.prefix) and len(row.digest) == 64


def test_brokers_list_json_and_text(app: Flask, runner, monkeypatch) -> None:
    monkeypatch.setenv("SP_KAFKA_HOST", "kafka.env")
    monkeypatch.setenv("SP_PRIORITIZED_PROTOCOL", "nats")
    data = json.loads(runner.invoke(args=["brokers", "list", "--json"]).output)
    assert data["priorities"][0] == "nats"
    assert data["brokers"]["kafka"]["settings"]["host"] == {"value": "kafka.env", "source": "env",
                                                            "env": "SP_KAFKA_HOST"}
    assert data["brokers"]["rabbitmq"]["settings"]["password"]["value"] == {"set": True}
    text = runner.invoke(args=["brokers", "list"]).output
    assert "kafka.env" in text and "[env SP_KAFKA_HOST]" in text and "guest" in text
    assert "(set)" in text


def _fresh_process(instance, *args: str, **env: str):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SP_", "CONSOLE_"))}
    return subprocess.run([sys.executable, "-m", "flask", "--app", "app", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60,
                          env={**clean, "CONSOLE_INSTANCE_PATH": str(instance),
                               "CONSOLE_CHECK_SCHEDULER": "false", **env})


def test_commands_before_db_upgrade_say_to_run_it(tmp_path) -> None:
    for args in (["brokers", "list"], ["users", "list"], ["tokens", "list"], ["config", "export"]):
        done = _fresh_process(tmp_path, *args)
        assert done.returncode == 1, done
        assert "Traceback" not in done.stderr
        assert "no console tables yet" in done.stderr and "flask --app app db upgrade" in done.stderr


def test_commands_with_an_unreachable_database_name_the_variable(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]    # nothing listens once the socket is closed
    done = _fresh_process(tmp_path, "users", "list",
                          CONSOLE_DATABASE_URL=f"postgresql://postgres@127.0.0.1:{port}/console")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "The database cannot be used" in done.stderr and "CONSOLE_DATABASE_URL" in done.stderr
    assert "refused" in done.stderr.lower()


def test_users_commands_are_audited_like_the_page(app: Flask, runner) -> None:
    from console.extensions import db
    from console.models import AuditEntry

    runner.invoke(args=["users", "create", "ops", "--role", "admin", "--password-stdin"],
                  input="long-enough-pw\n")
    runner.invoke(args=["users", "set-password", "ops", "--password-stdin"], input="another-pw-12\n")
    refused = runner.invoke(args=["users", "set-password", "ops", "--password-stdin"], input="short\n")
    assert refused.exit_code != 0 and "at least 8" in refused.output
    with app.app_context():
        rows = [(e.action, e.outcome, e.origin, e.actor) for e in
                db.session.execute(db.select(AuditEntry).order_by(AuditEntry.id)).scalars()]
    assert rows == [("create_user", "applied", "cli", "cli"), ("reset_password", "applied", "cli", "cli")]
    assert app.test_client().post("/login", data={"username": "ops", "password": "another-pw-12"}).status_code == 302
