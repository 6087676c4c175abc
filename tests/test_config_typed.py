"""Typed configuration: every CONSOLE_* variable is parsed to its declared type, and a wrong one stops
start-up with one line naming it — in create_app, the flask CLI and gunicorn."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from console import create_app
from console.config import ConfigError, Defaults, coerce, declared, parse_environment

ROOT = Path(__file__).resolve().parent.parent


def test_every_annotated_default_is_declared_and_fits_its_type() -> None:
    kinds = declared()
    for key in kinds:
        assert coerce(key, getattr(Defaults, key)) == getattr(Defaults, key), key
    for key in ("CHECK_INTERVAL", "CHECK_TIMEOUT", "CHECK_SCHEDULER", "READY_REQUIRED",
                "READY_CACHE_SECONDS", "MAX_CONTENT_LENGTH", "SESSION_COOKIE_SECURE",
                "WTF_CSRF_TIME_LIMIT", "WORKERS", "THREADS", "BIND"):
        assert key in kinds


@pytest.mark.parametrize(("name", "text", "value"), [
    ("CONSOLE_CHECK_INTERVAL", "12", 12.0),
    ("CONSOLE_CHECK_TIMEOUT", " 2.5 ", 2.5),
    ("CONSOLE_CHECK_SCHEDULER", "false", False),
    ("CONSOLE_CHECK_SCHEDULER", "Yes", True),
    ("CONSOLE_SESSION_COOKIE_SECURE", "false", False),
    ("CONSOLE_SESSION_COOKIE_SECURE", "1", True),
    ("CONSOLE_MAX_CONTENT_LENGTH", "1048576", 1048576),
    ("CONSOLE_READY_REQUIRED", "MQTT, kafka", ["mqtt", "kafka"]),
    ("CONSOLE_READY_REQUIRED", "", None),
    ("CONSOLE_READY_CACHE_SECONDS", "0", 0.0),
    ("CONSOLE_WTF_CSRF_TIME_LIMIT", "600", 600),
    ("CONSOLE_WORKERS", "3", 3),
    ("CONSOLE_BIND", "0.0.0.0:8080", "0.0.0.0:8080"),
    ("CONSOLE_LOGIN_LIMIT_PER_USER", "3 per minute", "3 per minute"),
    ("CONSOLE_SOMETHING_ELSE", "kept as text", "kept as text"),
])
def test_values_are_parsed_to_their_types(name: str, text: str, value) -> None:
    assert parse_environment({name: text})[name.removeprefix("CONSOLE_")] == value


@pytest.mark.parametrize(("name", "text", "words"), [
    ("CONSOLE_CHECK_INTERVAL", "abc", "use a number"),
    ("CONSOLE_CHECK_INTERVAL", "0", "from 1 to 86400"),
    ("CONSOLE_CHECK_INTERVAL", "nan", "finite"),
    ("CONSOLE_CHECK_TIMEOUT", "1000", "from 0.1 to 300"),
    ("CONSOLE_CHECK_SCHEDULER", "maybe", "true or false"),
    ("CONSOLE_SESSION_COOKIE_SECURE", "off-ish", "true or false"),
    ("CONSOLE_MAX_CONTENT_LENGTH", "100", "from 65536"),
    ("CONSOLE_MAX_CONTENT_LENGTH", "2MB", "whole number"),
    ("CONSOLE_READY_REQUIRED", "kafka,jms", "jms is not one of"),
    ("CONSOLE_READY_CACHE_SECONDS", "-1", "from 0"),
    ("CONSOLE_WORKERS", "two", "whole number"),
    ("CONSOLE_BIND", "localhost", "host:port"),
    ("CONSOLE_SESSION_COOKIE_SAMESITE", "None", "Lax, Strict"),
    ("CONSOLE_LOGIN_LIMIT_PER_USER", "lots", "per minute"),
])
def test_a_wrong_value_names_the_variable_in_one_line(name: str, text: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_environment({name: text})
    message = str(caught.value)
    assert message.startswith(f"{name}=") and words in message and "\n" not in message


def test_create_app_stops_on_a_wrong_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONSOLE_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("CONSOLE_CHECK_INTERVAL", "abc")
    with pytest.raises(ConfigError, match="CONSOLE_CHECK_INTERVAL=abc"):
        create_app()


def test_typed_values_reach_the_app(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONSOLE_INSTANCE_PATH", str(tmp_path))
    monkeypatch.setenv("CONSOLE_SESSION_COOKIE_SECURE", "false")
    monkeypatch.setenv("CONSOLE_MAX_CONTENT_LENGTH", "100000")
    monkeypatch.setenv("CONSOLE_CHECK_SCHEDULER", "false")
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'c.db'}"})
    assert app.config["SESSION_COOKIE_SECURE"] is False
    assert app.config["MAX_CONTENT_LENGTH"] == 100000
    assert app.config["CHECK_SCHEDULER"] is False
    response = app.test_client().get("/login")
    assert response.status_code == 200 and "Secure" not in response.headers.get("Set-Cookie", "")
    big = app.test_client().post("/login", data={"username": "x" * 200000, "password": "y"})
    assert big.status_code == 413 and b"0.095" in big.data


def test_test_config_is_checked_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSOLE_INSTANCE_PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="CONSOLE_CHECK_TIMEOUT"):
        create_app({"CHECK_TIMEOUT": "soon"})


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSOLE_", "SP_"))}
    return {**env, "CONSOLE_INSTANCE_PATH": str(tmp_path),
            "CONSOLE_DATABASE_URL": f"sqlite:///{tmp_path / 'console.db'}", **extra}


def test_flask_cli_prints_one_line_and_exits(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "brokers", "list"],
                          cwd=ROOT, env=_env(tmp_path, CONSOLE_CHECK_INTERVAL="abc"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip() == ("Messaging Console: configuration error: CONSOLE_CHECK_INTERVAL=abc "
                                   "is invalid: use a number.")


def test_gunicorn_stops_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py",
                           "--check-config", "app:app"], cwd=ROOT,
                          env=_env(tmp_path, CONSOLE_WORKERS="many"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "CONSOLE_WORKERS=many is invalid: use a whole number." in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_an_instance_directory_that_cannot_be_made_stops_start_up_in_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    bad = str(blocker / "instance")
    expected = (f"Messaging Console: configuration error: CONSOLE_INSTANCE_PATH={bad}: the instance "
                "directory cannot be created (Not a directory); point it at a writable directory")
    cli = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "users", "list"], cwd=ROOT,
                         env={**_env(tmp_path), "CONSOLE_INSTANCE_PATH": bad},
                         capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and cli.stderr.strip() == expected
    served = subprocess.run([sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py",
                             "--check-config", "app:app"], cwd=ROOT,
                            env={**_env(tmp_path), "CONSOLE_INSTANCE_PATH": bad},
                            capture_output=True, text=True, timeout=60)
    assert served.returncode == 2 and expected in served.stderr    # the master stops, no worker loop
    assert "Traceback" not in cli.stderr + served.stderr + served.stdout


def test_brokers_list_shows_every_page_warning(runner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SP_PRIORITIZED_PROTOCOL", "jms")
    monkeypatch.setenv("SP_KAFKA_PORT", "not-a-port")
    text = runner.invoke(args=["brokers", "list"])
    assert text.exit_code == 0
    assert "! SP_PRIORITIZED_PROTOCOL=jms is ignored" in text.output
    assert "SP_KAFKA_PORT is ignored" in text.output
    data = json.loads(runner.invoke(args=["brokers", "list", "--json"]).output)
    messages = [w["message"] for w in data["warnings"]]
    assert any("SP_PRIORITIZED_PROTOCOL=jms is ignored" in m for m in messages)
    assert any("SP_KAFKA_PORT is ignored" in m for m in messages)
    assert {"protocol": None, "field": "priorities"}.items() <= data["warnings"][0].items()


def test_page_warnings_equal_the_cli_list(app, admin_client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SP_PRIORITIZED_PROTOCOL", "jms")
    monkeypatch.setenv("SP_MQTT_QOS", "7")
    from console.settings.environment import settings_warnings

    # every warning is on the page of its protocol (the general ones on every page), and the
    # overview counts them for each protocol
    html = "".join(admin_client.get(f"/settings/messaging/{p}").get_data(as_text=True)
                   for p in ("kafka", "mqtt", "nats", "pulsar", "rabbitmq"))
    assert 'warning</a>' in admin_client.get("/settings/messaging").get_data(as_text=True)
    with app.app_context():
        found = settings_warnings()
    assert len(found) >= 2
    import html as html_module
    for item in found:
        assert html_module.escape(item.message, quote=False) in html_module.unescape(html) or \
            item.message in html_module.unescape(html), item.message


def test_server_logs_ignored_values_at_start_up(app, monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    import logging

    from console.settings.environment import log_environment_warnings

    monkeypatch.setenv("SP_PRIORITIZED_PROTOCOL", "jms")
    monkeypatch.setenv("SP_NATS_PORT", "99999")
    with app.app_context(), caplog.at_level(logging.WARNING, logger="console"):
        log_environment_warnings(logging.getLogger("console"))
    text = caplog.text
    assert "SP_PRIORITIZED_PROTOCOL=jms is ignored" in text and "SP_NATS_PORT is ignored" in text


def test_nothing_starts_at_import_time() -> None:
    code = ("import threading, logging, console.checks, console.brokers.rabbitmq, console.diagnostics;"
            "import console.brokers.nats, console.brokers.pulsar, console.brokers.kafka;"
            "import console.checks as c;"
            "print(threading.active_count(), logging.getLogger('pika').level, c._DNS_POOL,"
            " len(logging.getLogger('asyncio').filters))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert done.stdout.split() == ["1", "0", "None", "0"], done.stderr


def test_readme_documents_every_variable() -> None:
    readme = (ROOT / "README.md").read_text()
    for key in declared():
        assert f"CONSOLE_{key}" in readme, key
