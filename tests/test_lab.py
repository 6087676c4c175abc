"""console.lab and `flask brokers use-lab`: the lab's settings come from the files the lab writes, and
a use-lab that changes nothing records nothing."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from flask import Flask

from console.extensions import db
from console.lab import LabUnavailable, lab_dir, lab_settings, read_lab
from console.models import AuditEntry, ConfigVersion
from tests.lab_fixtures import load_brokerlab

BROKERLAB = load_brokerlab()   # now: it fixes its default directories from the temp dir at import



def fake_lab(directory: Path, settings: dict | None = None) -> Path:
    """A lab directory as brokerlab.py leaves it (no broker behind it: use-lab does no I/O)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "lab.json").write_text(json.dumps({"version": 1, "dir": str(directory)}))
    (directory / "console-settings.json").write_text(
        json.dumps(settings if settings is not None else BROKERLAB.console_settings()))
    return directory


def test_lab_dir_is_found_like_the_lab_finds_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert lab_dir({}) == tmp_path / "messaging-console-lab"
    running = fake_lab(tmp_path / "elsewhere")
    (tmp_path / "messaging-console-lab.active").write_text(f"{running}\n")
    assert lab_dir({}) == running
    assert lab_dir({"BROKERLAB_DIR": "/x/y"}) == Path("/x/y")
    (running / "lab.json").unlink()
    assert lab_dir({}) == tmp_path / "messaging-console-lab", "a stopped lab's pointer is ignored"


def test_missing_or_broken_lab_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(LabUnavailable, match="not running.*make brokers"):
        read_lab(tmp_path)
    (tmp_path / "lab.json").write_text("{nope")
    with pytest.raises(LabUnavailable, match="not valid JSON"):
        read_lab(tmp_path)
    (tmp_path / "lab.json").write_text("{}")
    with pytest.raises(LabUnavailable, match="older scripts/brokerlab.py"):
        lab_settings(tmp_path)
    (tmp_path / "console-settings.json").write_text('["kafka"]')
    with pytest.raises(LabUnavailable, match="settings per protocol"):
        lab_settings(tmp_path)


def test_the_running_lab_writes_the_settings_use_lab_saves(lab: dict) -> None:
    settings = lab_settings(Path(lab["dir"]))
    assert settings == BROKERLAB.console_settings()
    assert settings["rabbitmq"]["port"] == str(lab["brokers"]["rabbitmq"]["plain"])
    assert settings["pulsar"]["url"] == lab["brokers"]["pulsar"]["url"]
    env = BROKERLAB.env_vars()
    assert env["SP_RABBITMQ_VHOST"] == lab["brokers"]["rabbitmq"]["vhost"]
    assert env["SP_KAFKA_PORT"] == str(lab["brokers"]["kafka"]["plain"])
    assert not any(name.endswith("_ENABLED") for name in env)


def test_use_lab_saves_once_then_records_nothing(app: Flask, runner, tmp_path: Path,
                                                 monkeypatch) -> None:
    monkeypatch.setenv("BROKERLAB_DIR", str(fake_lab(tmp_path / "lab")))
    first = runner.invoke(args=["brokers", "use-lab"])
    assert first.exit_code == 0, first.output
    assert "RabbitMQ  enabled, host, password, port, username, vhost" in first.output
    assert "labpass" not in first.output
    with app.app_context():
        versions = db.session.execute(db.select(db.func.count(ConfigVersion.id))).scalar()
        audits = db.session.execute(db.select(db.func.count(AuditEntry.id))).scalar()
        entry = db.session.execute(db.select(AuditEntry).order_by(AuditEntry.id.desc())).scalars().first()
        assert (entry.actor, entry.origin) == ("make brokers", "cli")
    again = runner.invoke(args=["brokers", "use-lab"])
    assert again.exit_code == 0
    assert [line.split() for line in again.output.splitlines()] == [
        ["Kafka", "unchanged"], ["Pulsar", "unchanged"], ["MQTT", "unchanged"], ["NATS", "unchanged"],
        ["RabbitMQ", "unchanged"]]
    with app.app_context():
        assert db.session.execute(db.select(db.func.count(ConfigVersion.id))).scalar() == versions
        assert db.session.execute(db.select(db.func.count(AuditEntry.id))).scalar() == audits


def test_re_entering_the_same_secret_is_no_change(app: Flask) -> None:
    """The reason use-lab used to record a version each time: the same password, encrypted again,
    is another ciphertext."""
    from console.settings import service

    with app.app_context():
        assert service.apply_changes("rabbitmq", {"password": "same-pw"}, "t").changed == ["password"]
        again = service.apply_changes("rabbitmq", {"password": "same-pw"}, "t")
        assert again.ok and again.changed == [] and again.outcome.status == "unchanged"
        assert service.apply_changes("rabbitmq", {"password": "other-pw"}, "t").changed == ["password"]


def test_use_lab_without_a_lab_says_how_to_start_one(runner, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("BROKERLAB_DIR", str(tmp_path / "none"))
    result = runner.invoke(args=["brokers", "use-lab"])
    assert result.exit_code == 1 and "make brokers" in result.output


def test_use_lab_refuses_what_the_settings_refuse(app: Flask, runner, tmp_path: Path,
                                                  monkeypatch) -> None:
    monkeypatch.setenv("BROKERLAB_DIR", str(fake_lab(tmp_path / "lab", {"mqtt": {"port": "0"}})))
    result = runner.invoke(args=["brokers", "use-lab"])
    assert result.exit_code == 1 and "MQTT      not saved" in result.output
