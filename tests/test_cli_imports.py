"""The CLI imports what a command needs when it runs: `brokers list` no client library, no Alembic and no
diagnosis engine; `brokers check mqtt` only paho (checked in a fresh interpreter, by sys.modules)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask

from tests.conftest import ROOT, make_app

CLIENTS = {"confluent_kafka", "pulsar", "paho", "nats", "pika"}
HEAVY = CLIENTS | {"alembic", "flask_migrate", "mako"}
ENGINE = ("console.diagnostics.steps", "console.diagnostics.engine")

PROBE = """
import json, sys
from flask.cli import main
sys.argv = ["flask", "--app", "app", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print("\\nMODULES " + json.dumps(sorted(sys.modules)))
"""


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def instance(tmp_path: Path) -> Path:
    app = make_app(tmp_path / "instance")
    with app.app_context():
        from console.extensions import db
        db.engine.dispose()
    return tmp_path / "instance"


def imported(instance: Path, *args: str, **env: str) -> set[str]:
    """The modules a fresh `flask --app app ARGS…` has imported when it finishes."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SP_", "CONSOLE_"))}
    done = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**clean, "CONSOLE_INSTANCE_PATH": str(instance),
                                           "CONSOLE_CHECK_SCHEDULER": "false", **env})
    assert "MODULES " in done.stdout, done.stdout + done.stderr
    return set(json.loads(done.stdout.rsplit("MODULES ", 1)[1]))


def tops(modules: set[str]) -> set[str]:
    return {name.split(".")[0] for name in modules}


@pytest.mark.parametrize("args", [("brokers", "list"), ("brokers", "list", "--json"), ("users", "list"),
                                  ("config", "export"), ("tokens", "list")])
def test_listing_commands_import_no_client_library_nor_alembic(instance: Path, args) -> None:
    modules = imported(instance, *args)
    assert "console.cli" in modules
    assert tops(modules) & HEAVY == set()
    assert not [m for m in modules if m.startswith(ENGINE)]


def test_brokers_check_imports_only_the_client_it_uses(instance: Path) -> None:
    modules = imported(instance, "brokers", "check", "mqtt", "--timeout", "1",
                       SP_MQTT_HOST="127.0.0.1", SP_MQTT_PORT=str(closed_port()))
    assert "console.brokers.mqtt" in modules
    assert tops(modules) & HEAVY == {"paho"}


def test_db_commands_still_load_flask_migrate(app: Flask, runner) -> None:
    result = runner.invoke(args=["db", "current"])
    assert result.exit_code == 0, result.output
    assert type(app.extensions["migrate"]).__module__ == "flask_migrate"
    assert app.extensions["migrate"].directory.endswith("migrations")
    assert "upgrade" in runner.invoke(args=["db", "--help"]).output


# modules that only load when their library really runs (console.lazy.module), and the other dialect
UNUSED_HERE = ("cryptography.x509.base", "email.policy",
               "yaml.loader", "sqlalchemy.dialects.postgresql.base")


@pytest.mark.parametrize("args", [("brokers", "list"), ("users", "list"), ("tokens", "list")])
def test_listing_commands_load_no_certificate_parser_nor_yaml(instance: Path, args) -> None:
    modules = imported(instance, *args)
    assert [m for m in modules if m.startswith(UNUSED_HERE)] == []


def test_config_export_loads_yaml_when_it_writes_it(instance: Path) -> None:
    modules = imported(instance, "config", "export")
    assert "yaml.emitter" in modules
    assert "cryptography.x509.base" not in modules


def test_lazy_module_loads_on_first_use_and_behaves_as_the_module() -> None:
    code = ("import sys; from console import lazy; m = lazy.module('colorsys');"
            "print('colorsys' in sys.modules, type(m).__name__);"
            "print(m.rgb_to_hsv(1, 0, 0), type(sys.modules['colorsys']).__name__);"
            "import colorsys; print(colorsys is m)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, check=True).stdout.split("\n")
    assert out[0] == "True _LazyModule"
    assert out[1] == "(0.0, 1.0, 1) module"
    assert out[2] == "True"


def test_app_start_up_freezes_its_objects_and_leaves_the_collector_on() -> None:
    code = "import gc, app; print(gc.isenabled(), gc.get_freeze_count() > 10000)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={**os.environ, "CONSOLE_CHECK_SCHEDULER": "false"})
    assert out.stdout.strip() == "True True", out.stderr
