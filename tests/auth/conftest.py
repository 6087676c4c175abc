"""The identity lab for sign-in tests: a seeded slapd (scripts/identitylab.py) per test session on free
loopback ports; each test that changes the directory restores it."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import identitylab  # scripts/ is on sys.path (tests/conftest.py)
import pytest
from flask import Flask

from tests.conftest import make_app

MAPPING = "admin=console-admins;viewer=console-viewers"


@pytest.fixture(scope="session")
def ldap_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[identitylab.Ldap]:
    identitylab.install()
    lab = identitylab.start_ldap(tmp_path_factory.mktemp("identity") / "ldap")
    yield lab
    lab.stop()


def ldap_config(lab: identitylab.Ldap, **extra: object) -> dict[str, object]:
    """The console's config for the lab's directory, as the README's variables set it."""
    config: dict[str, object] = {key[len("CONSOLE_"):]: value for key, value in lab.env().items()}
    config.update(ROLE_MAPPING=MAPPING, LDAP_TIMEOUT=2.0)
    config.update(extra)
    return config


@pytest.fixture
def ldap_app(tmp_path: Path, ldap_lab: identitylab.Ldap) -> Iterator[Flask]:
    app = make_app(tmp_path / "instance", **ldap_config(ldap_lab))
    yield app
    with app.app_context():
        from console.extensions import db
        db.engine.dispose()
