"""How long the README's commands take when everything is installed already.

    .venv/bin/python bench/readme.py [--repeat 3]

Measured on a temporary instance (CONSOLE_INSTANCE_PATH): `make install` and `make install-dev
system-deps` (nothing to install: targets ≤ 1 s), `make brokers` with the lab running (the lab is
reused, the settings saved the first time; later runs change nothing), and `make run` until /healthz
answers (then stopped by its process group).
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _env(instance: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSOLE_", "SP_", "MAKEFLAGS"))}
    return {**env, "CONSOLE_INSTANCE_PATH": str(instance), **extra}


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True, timeout=600)
    return time.perf_counter() - started


def until_healthy(env: dict[str, str]) -> float:
    started = time.perf_counter()
    server = subprocess.Popen(["make", "run"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        while time.perf_counter() - started < 120:
            try:
                with urllib.request.urlopen(f"http://{env['CONSOLE_BIND']}/healthz", timeout=1):
                    return time.perf_counter() - started
            except OSError:
                time.sleep(0.05)
        raise SystemExit("make run did not answer /healthz within 120 s")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-readme-") as tmp:
        env = _env(Path(tmp))
        rows = {
            "make install (done)": [timed(["make", "install"], env) for _ in range(args.repeat)],
            "make install-dev system-deps (done)": [
                timed(["make", "install-dev", "system-deps"], env) for _ in range(args.repeat)],
            "make brokers": [timed(["make", "brokers"], env) for _ in range(args.repeat)],
        }
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        serving = {**env, "CONSOLE_BIND": f"127.0.0.1:{port}", "CONSOLE_ADMIN_PASSWORD": "bench-pass-1"}
        rows["make run until /healthz"] = [until_healthy(serving) for _ in range(args.repeat)]
    for name, values in rows.items():
        print(f"{name:<38} median {statistics.median(values):6.2f} s   "
              f"(runs: {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
