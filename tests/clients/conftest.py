"""Fixtures for the Python client: the client directory on sys.path, the real console serving on a
loopback port per test (tests/clients/live_console.py) and service tokens made on it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = ROOT / "clients" / "python"
if str(CLIENT_DIR) not in sys.path:
    sys.path.insert(0, str(CLIENT_DIR))

from tests.clients.live_console import LiveConsole, console  # noqa: E402,F401 - the fixture


@pytest.fixture
def token(console: LiveConsole) -> str:
    """A service token for `edge`."""
    return console.token("edge-token", "edge")


@pytest.fixture
def other_token(console: LiveConsole) -> str:
    """A service token for `billing`."""
    return console.token("billing-token", "billing")
