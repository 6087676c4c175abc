"""console-agent: commit → the program running on the new settings (goal ≤ 3 s p90).

    .venv/bin/python -m bench agent [--scale 0.25]

The console as `make run` serves it (gunicorn, SQLite, one worker), the lab's two Mosquittos, and
console-agent (`exec`, format streampipes, --settle 1) running Debian's `mosquitto_sub` behind
`sh -c 'echo up $SP_MQTT_PORT; exec mosquitto_sub …'`. Each round PATCHes the MQTT port to the other
broker and times, from just before the PATCH is sent: the new program's first line (it starts on the
new settings: the old one was stopped), and the `applied` acknowledgement (after --settle 1).
"""
from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.delivery import call, free_port  # noqa: E402
from bench.stats import Run, benchmark, main  # noqa: E402

CHANGES = 30


def _lab() -> dict:
    from tests.lab_fixtures import load_brokerlab

    return load_brokerlab().start(os.environ.get("BROKERLAB_DIR") or None)


@benchmark("agent", "console-agent: commit → program running on the new settings, → applied")
def agent(run: Run) -> None:
    lab = _lab()["brokers"]["mqtt"]
    ports = (lab["plain_auth"], lab["restricted"])         # two Mosquitto processes
    instance = tempfile.mkdtemp(prefix="bench-agent-")
    port = free_port()
    env = {**os.environ, "CONSOLE_INSTANCE_PATH": instance, "CONSOLE_CHECK_SCHEDULER": "false",
           "CONSOLE_BIND": f"127.0.0.1:{port}", "CONSOLE_WORKERS": "1"}
    flask = [sys.executable, "-m", "flask", "--app", "app"]
    subprocess.run([*flask, "db", "upgrade"], cwd=ROOT, env=env, check=True, capture_output=True)
    admin = subprocess.run([*flask, "tokens", "create", "bench-admin", "--role", "admin"], cwd=ROOT,
                           env=env, check=True, capture_output=True, text=True).stdout.strip()
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "app:app"],
                              cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    agent_process = None
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                call(port, "GET", "/healthz", admin)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        call(port, "PATCH", "/api/v1/brokers/mqtt", admin,
             {"enabled": True, "host": "127.0.0.1", "port": ports[0], "username": lab["username"],
              "password": lab["password"], "confirm": True})
        token = call(port, "POST", "/api/v1/tokens", admin,
                     {"name": "edge-token", "role": "service", "service": "edge"})["token"]
        token_file = Path(instance) / "edge.token"
        token_file.write_text(token)
        program = ('echo "up $SP_MQTT_PORT"; exec mosquitto_sub -h "$SP_MQTT_HOST" -p "$SP_MQTT_PORT" '
                   '-u "$SP_MQTT_USERNAME" -P "$SP_MQTT_PASSWORD" -t "bench/#"')
        agent_process = subprocess.Popen(
            [sys.executable, "-m", "console_agent", "exec", "--console", f"http://127.0.0.1:{port}",
             "--token-file", str(token_file), "--service", "edge", "--protocols", "mqtt",
             "--format", "streampipes", "--state-dir", str(Path(instance) / "agent"), "--settle", "1",
             "--grace", "5", "--", "sh", "-c", program],
            env={**os.environ, "PYTHONPATH": str(ROOT / "clients" / "agent"), "PYTHONUNBUFFERED": "1"},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        lines: queue.Queue[tuple[float, str]] = queue.Queue()

        def read(stream) -> None:
            for raw in iter(stream.readline, b""):
                lines.put((time.monotonic(), raw.decode(errors="replace").strip()))

        for stream in (agent_process.stdout, agent_process.stderr):
            threading.Thread(target=read, args=(stream,), daemon=True).start()

        def wait_for(predicate, timeout: float = 30) -> float:
            end = time.monotonic() + timeout
            while True:
                left = end - time.monotonic()
                if left <= 0:
                    raise RuntimeError("the agent did not get there in time")
                try:
                    at, text = lines.get(timeout=left)
                except queue.Empty:
                    continue
                if predicate(text):
                    return at

        wait_for(lambda t: "applied" in t)
        running, applied, patch = [], [], []
        for i in range(run.n(CHANGES)):
            new = ports[(i + 1) % 2]
            started = time.monotonic()
            call(port, "PATCH", "/api/v1/brokers/mqtt", admin, {"port": new, "confirm": True})
            patch.append(1000 * (time.monotonic() - started))
            up = wait_for(lambda t, new=new: t == f"up {new}")
            done = wait_for(lambda t: "applied" in t)
            running.append(1000 * (up - started))
            applied.append(1000 * (done - started))
        run.distributions("commit → program running on the new settings", {"running": running,
                                                                              "applied": applied,
                                                                              "PATCH": patch})
        run.value("commit → running p90", sorted(running)[int(0.9 * (len(running) - 1))], "ms", "≤ 3000 ms")
    finally:
        if agent_process is not None and agent_process.poll() is None:
            os.killpg(agent_process.pid, signal.SIGTERM)
            agent_process.wait(30)
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


if __name__ == "__main__":
    main(only="agent")
