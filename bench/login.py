"""Login timing benchmark: an unknown user name must cost as long as a wrong password.

    .venv/bin/python bench/login.py [--repeat 30]

Prints the median and p90 time of a failed log-in for an existing user (wrong password) and for a user
name that does not exist, through the real app on a fresh SQLite database, and their ratio (target
0.8–1.25). The rate limit is lifted for the run.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import add_user, make_app  # noqa: E402


def _time(client, username: str, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = client.post("/login", data={"username": username, "password": "wrong-password"})
        out.append(time.perf_counter() - start)
        assert response.status_code == 401, response.status_code
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    app = make_app(Path(tempfile.mkdtemp()) / "instance", LOGIN_LIMIT_PER_USER="100000 per minute",
                   LOGIN_LIMIT_PER_ADDRESS="100000 per minute")
    add_user(app, "admin", "admin", "a-good-password-1")
    client = app.test_client()
    _time(client, "nobody", 3)                      # warm up (the dummy hash is made once)
    known, unknown = [], []
    for _ in range(args.repeat):                    # interleaved, so that load affects both alike
        known += _time(client, "admin", 1)
        unknown += _time(client, "nobody", 1)
    for name, values in (("wrong password", known), ("unknown user", unknown)):
        values.sort()
        print(f"{name:>15}: median {statistics.median(values) * 1000:7.1f} ms   "
              f"p90 {values[int(len(values) * 0.9) - 1] * 1000:7.1f} ms")
    ratio = statistics.median(unknown) / statistics.median(known)
    print(f"unknown/known median ratio: {ratio:.2f} (target 0.8–1.25)")


if __name__ == "__main__":
    main()
