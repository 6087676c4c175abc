"""Fixtures for the example extension service: its modules on sys.path, lab broker settings in the
console's field names (as GET /api/v1/services/<name>/config delivers them), and the real console on a
loopback port (tests/clients/live_console.py) with a service token for `edge`."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_DIR = ROOT / "examples" / "extension_service"
for _path in (EXAMPLE_DIR, ROOT / "clients" / "python"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from tests.clients.live_console import LiveConsole, console  # noqa: E402,F401 - the fixture


@pytest.fixture
def token(console: LiveConsole) -> str:
    """A service token for `edge`, made with `flask tokens create`."""
    return console.token("edge-token", "edge")


def load_service() -> ModuleType:
    """examples/extension_service/service.py, imported by path as `extension_service`."""
    module = sys.modules.get("extension_service")
    if module is None:
        spec = importlib.util.spec_from_file_location("extension_service", EXAMPLE_DIR / "service.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["extension_service"] = module
        spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def mqtt_settings(lab: dict) -> Callable[..., dict[str, Any]]:
    """MQTT settings for a lab listener (plain, plain_auth, tls, …), overridable field by field."""
    broker = lab["brokers"]["mqtt"]
    ca = Path(lab["certs"]["ca"]).read_text()

    def build(listener: str = "plain", **fields: Any) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "enabled": True, "host": broker["host"], "port": broker[listener], "username": None, "password": None,
            "tls": listener.startswith("tls"), "tls_ca": ca if listener.startswith("tls") else None,
            "tls_cert": None, "tls_key": None, "tls_verify_hostname": True, "client_id": "example-edge",
            "protocol_version": "3.1.1", "keepalive": 60, "clean_session": True, "qos": "1", "connect_timeout": 5,
        }
        if listener in ("plain_auth", "tls"):
            settings.update(username=broker["username"], password=broker["password"])
        settings.update(fields)
        return settings

    return build


@pytest.fixture(scope="session")
def rabbitmq_settings(lab: dict) -> Callable[..., dict[str, Any]]:
    """RabbitMQ settings for a lab listener (plain, tls, …), overridable field by field."""
    broker = lab["brokers"]["rabbitmq"]
    ca = Path(lab["certs"]["ca"]).read_text()

    def build(listener: str = "plain", **fields: Any) -> dict[str, Any]:
        settings: dict[str, Any] = {
            "enabled": True, "host": broker["host"], "port": broker[listener],
            "addresses": [f"{broker['host']}:{broker[listener]}"], "vhost": broker["vhost"],
            "username": broker["username"], "password": broker["password"], "tls": listener.startswith("tls"),
            "tls_ca": ca if listener.startswith("tls") else None, "tls_cert": None, "tls_key": None,
            "tls_verify_hostname": True, "exchange": "", "heartbeat": 60, "prefetch": 10, "connect_timeout": 5,
        }
        settings.update(fields)
        return settings

    return build
