"""Migrations: a single head; upgrade leaves nothing for autogenerate; downgrade removes it all —
on SQLite and on the PostgreSQL server of this machine."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask_migrate import downgrade, upgrade

from tests.conftest import _create

ROOT = Path(__file__).resolve().parent.parent
PG_URL = os.environ.get("CONSOLE_TEST_PG_URL",
                        "postgresql+psycopg://postgres@127.0.0.1:5432/console_test")


def pg_available() -> str | None:
    try:
        engine = sa.create_engine(PG_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - any failure means: no server to test against
        return f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    return None


def test_single_head() -> None:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    assert len(ScriptDirectory.from_config(config).get_heads()) == 1


def _roundtrip(app) -> None:
    from console.extensions import db

    with app.app_context():
        upgrade()
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                    db.metadata)
            tables = set(sa.inspect(conn).get_table_names())
        assert diff == []
        assert {"users", "api_tokens", "broker_settings", "tls_files", "priorities"} <= tables
        from console.settings import service
        assert service.apply_changes("kafka", {"host": "k", "password": "p", "username": "u",
                                               "sasl_mechanism": "PLAIN"}, "t").ok
        assert service.set_priorities(["nats", "kafka", "mqtt", "pulsar", "rabbitmq"]).ok
        db.session.remove()
        downgrade(revision="base")
        with db.engine.connect() as conn:
            assert set(sa.inspect(conn).get_table_names()) <= {"alembic_version"}
        upgrade()
        db.engine.dispose()


def test_sqlite_upgrade_check_downgrade(tmp_path: Path) -> None:
    _roundtrip(_create(tmp_path))


def test_postgresql_upgrade_check_downgrade(tmp_path: Path) -> None:
    reason = pg_available()
    if reason:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL must be available in CI ({PG_URL}): {reason}")
        pytest.skip(f"no PostgreSQL at {PG_URL}: {reason}")
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP SCHEMA public CASCADE"))
        conn.execute(sa.text("CREATE SCHEMA public"))
    engine.dispose()
    _roundtrip(_create(tmp_path, SQLALCHEMY_DATABASE_URI=PG_URL))


def test_database_url_setting_normalises_postgres_scheme(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CONSOLE_DATABASE_URL", "postgresql://u@db/console")
    monkeypatch.setenv("CONSOLE_INSTANCE_PATH", str(tmp_path))
    from console import create_app

    app = create_app()
    assert app.config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://u@db/console"


def test_replicas_migrating_one_postgresql_database_at_once_take_turns(tmp_path: Path) -> None:
    """Every container start migrates (docker/entrypoint.sh): three replicas started together on a fresh
    PostgreSQL database all succeed, one after the other (an advisory lock in migrations/env.py), and the
    schema ends at head once. Without the lock they create the same tables at once and fail."""
    import subprocess
    import sys

    from tests.live_gunicorn import pg_database

    url = pg_database("replicas")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SP_", "CONSOLE_"))}
    env.update({"CONSOLE_DATABASE_URL": url, "CONSOLE_INSTANCE_PATH": str(tmp_path)})
    runs = [subprocess.Popen([sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"], cwd=ROOT,
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for _ in range(3)]
    outputs = [run.communicate(timeout=120)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0, 0], outputs
    assert sum("Running upgrade  -> 0001" in out for out in outputs) == 1, outputs
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    head = ScriptDirectory.from_config(config).get_current_head()
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    finally:
        engine.dispose()
    assert versions == [head]


def test_migrating_an_unreachable_database_ends_with_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SP_", "CONSOLE_"))}
    env.update({"CONSOLE_DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/console",
                "CONSOLE_INSTANCE_PATH": str(tmp_path)})
    done = subprocess.run([sys.executable, "-m", "flask", "--app", "app", "db", "upgrade"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("Error: The database cannot be used: connection failed")
    assert "Check CONSOLE_DATABASE_URL" in done.stderr


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_qos_saved_as_text_becomes_an_integer(tmp_path: Path, backend: str) -> None:
    """0150: MQTT qos was saved as the string "2" (settings and stored versions); after the upgrade it
    is the integer 2 there and in the API (issue 18 item 8); the downgrade gives the strings back."""
    from console.extensions import db
    from console.settings import service

    config = {}
    if backend == "postgresql":
        reason = pg_available()
        if reason:
            pytest.skip(f"no PostgreSQL at {PG_URL}: {reason}")
        engine = sa.create_engine(PG_URL)
        with engine.begin() as conn:
            conn.execute(sa.text("DROP SCHEMA public CASCADE"))
            conn.execute(sa.text("CREATE SCHEMA public"))
        engine.dispose()
        config["SQLALCHEMY_DATABASE_URI"] = PG_URL
    app = _create(tmp_path, **config)
    with app.app_context():
        upgrade()
        downgrade(revision="0140")
        settings = sa.table("broker_settings", sa.column("protocol", sa.String),
                            sa.column("values", sa.JSON), sa.column("secrets", sa.JSON),
                            sa.column("updated_at", sa.DateTime(timezone=True)))
        versions = sa.table("config_versions", sa.column("actor", sa.String), sa.column("origin", sa.String),
                            sa.column("summary", sa.Text), sa.column("state", sa.JSON),
                            sa.column("created_at", sa.DateTime(timezone=True)))
        old = {"values": {"mqtt": {"qos": "2", "keepalive": 45}}, "secrets": {}, "files": {},
               "priorities": []}
        with db.engine.begin() as conn:
            conn.execute(settings.insert().values(protocol="mqtt", values={"qos": "2", "keepalive": 45},
                                                  secrets={}, updated_at=sa.func.now()))
            conn.execute(versions.insert().values(actor="t", origin="api", summary="s", state=old,
                                                  created_at=sa.func.now()))
        upgrade()
        with db.engine.connect() as conn:
            saved = conn.execute(sa.select(settings.c["values"])).scalar_one()
            state = conn.execute(sa.select(versions.c.state)).scalar_one()
        assert saved == {"qos": 2, "keepalive": 45} and state["values"]["mqtt"]["qos"] == 2
        assert service.effective("mqtt")["qos"] == 2
        db.session.remove()
        downgrade(revision="0140")
        with db.engine.connect() as conn:
            assert conn.execute(sa.select(settings.c["values"])).scalar_one()["qos"] == "2"
        upgrade()
        db.engine.dispose()
