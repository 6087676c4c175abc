"""Impact preview and adapters page render time for 50, 500 and 5,000 adapters.

    .venv/bin/python bench/impact.py [--repeat 5]

Each size gets a fresh SQLite database with two services and N adapters (half on MQTT, half on
Kafka). Measured: the impact preview of a change that affects every MQTT adapter (a dry-run of a
new MQTT host, as the page and `PATCH … {"dry_run": true}` do it) and one render of the adapters
page (page 1 of N/50). Targets: the page grows ≤ 2× from 50 to 5,000 (pagination); the preview grows
linearly (≈ 100×).
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


def build(n: int, directory: Path):
    from tests.conftest import ADMIN_PASSWORD, add_user, login, make_app

    app = make_app(directory)
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    with app.app_context():
        from console.adapters import service as registry
        from console.extensions import db
        from console.models import Adapter
        from console.settings import service
        from console.settings.identity import identity, identity_hash

        service.apply_changes("mqtt", {"enabled": True}, "bench")
        service.apply_changes("kafka", {"enabled": True}, "bench")
        edge, _ = registry.register_service("edge", ["mqtt"])
        lake, _ = registry.register_service("lake", ["kafka"])
        rows = []
        for protocol, svc in (("mqtt", edge), ("kafka", lake)):
            snap = identity(service.effective(protocol))
            digest = identity_hash(snap)
            rows += [{"name": f"{protocol}-{i:05d}", "service_id": svc.id, "protocol": protocol,
                      "snapshot": snap, "snapshot_hash": digest, "created_by": "bench"}
                     for i in range(n // 2)]
        db.session.execute(db.insert(Adapter), rows)
        db.session.commit()
    client = login(app.test_client(), "admin", ADMIN_PASSWORD)
    return app, client


def timed(fn, repeat: int) -> float:
    fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    results = {}
    for n in (50, 500, 5000):
        with tempfile.TemporaryDirectory() as tmp:
            app, client = build(n, Path(tmp))

            def preview():
                response = client.patch("/api/v1/brokers/mqtt",
                                        json={"host": "mqtt-moved", "dry_run": True})
                assert response.status_code == 200
                assert response.get_json()["impact"]["counts"]["breaks"] == n // 2

            def page():
                response = client.get("/adapters")
                assert response.status_code == 200 and b"kafka-00000" in response.data

            results[n] = (timed(preview, args.repeat), timed(page, args.repeat))
            print(f"{n:>5} adapters: impact preview {results[n][0] * 1000:8.1f} ms   "
                  f"adapters page {results[n][1] * 1000:7.1f} ms")
    p50, p5000 = results[50], results[5000]
    print(f"growth 50 → 5,000: preview ×{p5000[0] / p50[0]:.1f} (linear would be ×100), "
          f"page ×{p5000[1] / p50[1]:.2f} (target ≤ 2)")
    per = [(results[n][0] - results[50][0]) / (n - 50) * 1e6 for n in (500, 5000)]
    print(f"preview cost per extra adapter: {per[0]:.1f} µs (500), {per[1]:.1f} µs (5,000)")


if __name__ == "__main__":
    main()
