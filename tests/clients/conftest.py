"""Fixtures for the Python client: the client directory on sys.path and a console double per test."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = ROOT / "clients" / "python"
if str(CLIENT_DIR) not in sys.path:
    sys.path.insert(0, str(CLIENT_DIR))

from tests.clients.console_double import ConsoleDouble  # noqa: E402

TOKEN = "svc-token-edge"
OTHER_TOKEN = "svc-token-billing"


@pytest.fixture
def console() -> Iterator[ConsoleDouble]:
    """A console double for services `edge` and `billing`, serving on a free loopback port."""
    double = ConsoleDouble({TOKEN: "edge", OTHER_TOKEN: "billing"}).start()
    yield double
    double.stop()
