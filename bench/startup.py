"""CLI start-up: whole processes of `flask --app app …` against a bare interpreter start.

    .venv/bin/python -m bench startup [--scale 0.2]      (or: make bench)

Each sample starts one process and waits for it to end (wall time); the commands alternate in rounds.
The instance is a fresh SQLite database (migrated once, before the rounds). Beside the bare interpreter,
a process that only imports Flask, Flask-Login and SQLAlchemy shows the floor every command stands on.
Target: every listing command under 0.5 s at the median.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stats import Run, benchmark, main  # noqa: E402 - after the path set-up, as a script too

FLASK = [sys.executable, "-m", "flask", "--app", "app"]
FLOOR = "import flask.cli, flask_login, flask_sqlalchemy, sqlalchemy.orm"   # what every command needs
COMMANDS = {
    "brokers list": ["brokers", "list"],
    "users list": ["users", "list"],
    "config export": ["config", "export"],
    "brokers check mqtt": ["brokers", "check", "mqtt", "--timeout", "1"],
}


def closed_port() -> int:
    """A loopback port nothing listens on (the check is refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wall_ms(command: list[str], env: dict[str, str]) -> float:
    """Milliseconds from starting `command` to its end."""
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - started) * 1000.0


@benchmark("startup", "CLI start-up: whole flask --app app processes vs a bare Python start")
def startup(run: Run) -> None:
    """Every command of COMMANDS and `python -c pass`, alternating in rounds."""
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as instance:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SP_", "CONSOLE_"))}
        env.update({"CONSOLE_INSTANCE_PATH": instance, "CONSOLE_CHECK_SCHEDULER": "false",
                    "SP_MQTT_HOST": "127.0.0.1", "SP_MQTT_PORT": str(closed_port())})
        subprocess.run([*FLASK, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
        sides = {name: (lambda args=args: wall_ms([*FLASK, *args], env)) for name, args in COMMANDS.items()}
        sides["import flask, sqlalchemy"] = lambda: wall_ms([sys.executable, "-c", FLOOR], env)
        sides["python -c pass"] = lambda: wall_ms([sys.executable, "-c", "pass"], env)
        comparison = run.compare("start-up, whole process", sides, rounds=6, per_round=3,
                                 sample=lambda fn: fn(), ratio_of=("brokers list", "import flask, sqlalchemy"))
        for name in COMMANDS:
            p50 = comparison.distribution(name).summary()["p50"]
            if name != "brokers check mqtt":
                run.value(f"{name} p50", p50, "ms", "< 500 ms", p50 < 500)


if __name__ == "__main__":
    main(only="startup")
