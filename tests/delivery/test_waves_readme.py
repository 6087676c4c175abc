"""The README's "Roll-outs in waves" lines, run as shown: the printf line writes the import file, the
two `flask config import` lines (real processes on the console's database) preview and start roll-out
1, and the curl lines against the console served on a loopback port start roll-out 2 with a priority
change, read it halted by the canary's failure, then resume it (after the canary applied the version)
— and, on a second console brought to the same point, roll it back."""
from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask
from werkzeug.serving import make_server

from console.extensions import db
from console.models import Rollout
from tests.conftest import ROOT, make_app, make_token
from tests.test_readme import section_commands

SERVICES = ("canary", "edge-a", "edge-b")


class Console:
    """A console app served on a loopback port, with its services and their tokens."""

    def __init__(self, instance: Path, workdir: Path) -> None:
        self.instance, self.workdir = instance, workdir
        self.app: Flask = make_app(instance)
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.admin = make_token(self.app, "readme-admin", "admin")
        self.client = self.app.test_client()
        self.tokens: dict[str, str] = {}
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / ".venv").symlink_to(ROOT / ".venv")

    @property
    def env(self) -> dict[str, str]:
        keep = {k: v for k, v in os.environ.items() if not k.startswith(("CONSOLE_", "SP_"))}
        return {**keep, "CONSOLE_INSTANCE_PATH": str(self.instance), "PYTHONPATH": str(ROOT),
                "API": f"http://127.0.0.1:{self.server.server_port}/api/v1",
                "JSON": "Content-Type: application/json", "ADMIN_TOKEN": self.admin}

    def run(self, *lines: str) -> subprocess.CompletedProcess[str]:
        """README lines, as shown, in one shell (an assignment line carries over to the next)."""
        done = subprocess.run(["sh", "-c", "\n".join(lines)], cwd=self.workdir, env=self.env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (lines, done.stdout, done.stderr)
        return done

    def setup(self) -> None:
        h = {"Authorization": f"Bearer {self.admin}"}
        assert self.client.patch("/api/v1/brokers/mqtt", headers=h, json={
            "enabled": True, "host": "127.0.0.1"}).status_code == 200
        for name in SERVICES:
            assert self.client.post("/api/v1/services", headers=h, json={
                "name": name, "protocols": ["mqtt"]}).status_code == 201
            self.tokens[name] = make_token(self.app, f"{name}-token", "service", name)
            self.ack(name, "applied")

    def served(self, name: str) -> dict[str, Any]:
        return self.client.get(f"/api/v1/services/{name}/config", headers={
            "Authorization": f"Bearer {self.tokens[name]}"}).get_json()

    def ack(self, name: str, status: str, message: str = "") -> int:
        version = self.served(name)["version"]
        assert self.client.post(f"/api/v1/services/{name}/ack", headers={
            "Authorization": f"Bearer {self.tokens[name]}"}, json={
            "version": version, "status": status, "message": message}).status_code == 200
        return version

    def states(self) -> list[tuple[int, str]]:
        with self.app.app_context():
            return [(r.id, r.state) for r in db.session.execute(
                db.select(Rollout).order_by(Rollout.id)).scalars()]

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(5)
        with self.app.app_context():
            db.engine.dispose()


@pytest.fixture
def consoles(tmp_path: Path) -> Iterator[list[Console]]:
    made: list[Console] = []
    yield made
    for console in made:
        console.close()


def _halted_by_the_canary(console: Console, lines: list[str]) -> dict[str, Any]:
    """The README's lines up to the roll-out read halted: import (roll-out 1, released by the
    canary), the priority change (roll-out 2), the canary's failure, `rollouts/current`."""
    printf, dry_run, confirm, admin, put, current = lines[:6]
    console.setup()
    before = {n: console.served(n)["version"] for n in SERVICES}
    console.run(printf)
    assert (console.workdir / "waves.yaml").is_file()
    preview = console.run(dry_run).stdout
    assert "roll-out in waves: First wave: canary; the other 2 service(s) get it" in preview
    assert console.states() == []
    started = console.run(confirm).stdout
    assert "Imported (version" in started and "roll-out in waves 1: First wave of v" in started
    assert console.states() == [(1, "wave")]
    assert console.served("edge-a")["version"] == before["edge-a"]
    assert console.served("canary")["brokers"]["mqtt"]["keepalive"] == 45
    console.ack("canary", "applied")
    assert console.states() == [(1, "released")]
    assert console.served("edge-a")["brokers"]["mqtt"]["keepalive"] == 45
    for name in ("edge-a", "edge-b"):
        console.ack(name, "applied")

    answer = json.loads(console.run(admin, put).stdout)
    assert answer["priorities"][0] == "mqtt"
    assert answer["rollout"]["id"] == 2 and answer["rollout"]["wave"] == ["canary", "edge-a"]
    assert answer["rollout"]["held"] == ["edge-b"]
    new, old = answer["version"], console.served("edge-b")["version"]
    assert old < new and console.served("canary")["version"] == new
    assert console.ack("edge-a", "applied") == new
    console.ack("canary", "failed", "Connection Refused: not authorised.")
    rollout = json.loads(console.run(admin, current).stdout)["rollout"]
    assert rollout["id"] == 2 and rollout["state"] == "halted"
    assert "canary failed" in rollout["reason"] and "not authorised" in rollout["reason"]
    assert console.served("edge-b")["version"] == old
    return {"new": new, "old": old}


def test_the_readme_lines_of_roll_outs_in_waves(consoles: list[Console], tmp_path: Path) -> None:
    lines = section_commands("Roll-outs in waves")
    assert len(lines) == 8
    admin, resume, rollback = lines[3], lines[6], lines[7]

    first = Console(tmp_path / "one", tmp_path / "work-one")
    consoles.append(first)
    seen = _halted_by_the_canary(first, lines)
    first.ack("canary", "applied")          # what failed was fixed; the canary applies it
    assert first.states()[-1] == (2, "halted")
    resumed = json.loads(first.run(admin, resume).stdout)["rollout"]
    assert resumed["state"] == "released" and resumed["held"] == []
    assert first.served("edge-b")["version"] == seen["new"]

    second = Console(tmp_path / "two", tmp_path / "work-two")
    consoles.append(second)
    seen = _halted_by_the_canary(second, lines)
    answer = json.loads(second.run(admin, rollback).stdout)
    assert answer["rollout"]["state"] == "rolled_back" and answer["version"] > seen["new"]
    assert second.states()[-1] == (2, "rolled_back")
    for name in SERVICES:       # every service is served the configuration of before the change
        doc = second.served(name)
        assert doc["priorities"][0] != "mqtt"
        # the wave gets the rollback's version; edge-b's document never changed: it stays on its own
        assert doc["version"] == (seen["old"] if name == "edge-b" else answer["version"]), name
