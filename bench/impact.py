"""Impact preview and adapters page render time for 50, 500 and 5,000 adapters.

    .venv/bin/python -m bench impact [--scale 0.2]      (or: make bench)

Each size gets a fresh SQLite database with two services and N adapters (half on MQTT, half on
Kafka); the three sizes are measured in alternating rounds. Measured: the impact preview of a change
that affects every MQTT adapter (a dry-run of a new MQTT host, as the page and `PATCH … {"dry_run":
true}` do it) and one render of the adapters page (page 1 of N/50). Targets: the page grows ≤ 2× from
50 to 5,000 (pagination); the preview grows at most linearly (≤ 100×).
"""
from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.stats import Run, benchmark, main  # noqa: E402 - after the path set-up, as a script too

SIZES = (50, 500, 5000)


def build(n: int, directory: Path):
    from tests.conftest import ADMIN_PASSWORD, add_user, login, make_app

    app = make_app(directory)
    add_user(app, "admin", "admin", ADMIN_PASSWORD)
    with app.app_context():
        from console.adapters import service as registry
        from console.extensions import db
        from console.messaging.identity import identity, identity_hash
        from console.models import Adapter
        from console.settings import service

        service.apply_changes("mqtt", {"enabled": True}, "bench")
        service.apply_changes("kafka", {"enabled": True}, "bench")
        edge = registry.register_service("edge", ["mqtt"]).service
        lake = registry.register_service("lake", ["kafka"]).service
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


@benchmark("impact", "Impact preview and adapters page for 50, 500 and 5,000 adapters")
def impact(run: Run) -> None:
    """Both figures per size, the sizes alternating in rounds; growth from 50 to 5,000 with its spread."""
    previews, pages = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in SIZES:
            app, client = build(n, Path(tmp) / str(n))

            def preview(client=client, n=n):
                response = client.patch("/api/v1/brokers/mqtt",
                                        json={"host": "mqtt-moved", "dry_run": True})
                assert response.status_code == 200
                assert response.get_json()["impact"]["counts"]["breaks"] == n // 2

            def page(client=client):
                response = client.get("/adapters")
                assert response.status_code == 200 and b"kafka-00000" in response.data

            previews[f"{n:,} adapters"] = preview
            pages[f"{n:,} adapters"] = page
        big, small = f"{SIZES[-1]:,} adapters", f"{SIZES[0]:,} adapters"
        preview = run.compare("impact preview (dry run of a new MQTT host)", previews, rounds=6,
                              per_round=3, ratio_of=(big, small), target=100)
        run.compare("adapters page, page 1", pages, rounds=6, per_round=3, ratio_of=(big, small),
                    target=2)
        medians = {n: statistics.median(preview.distribution(f"{n:,} adapters").samples) for n in SIZES}
        for n in SIZES[1:]:
            per = (medians[n] - medians[SIZES[0]]) / (n - SIZES[0]) * 1000
            run.value(f"preview cost per extra adapter ({SIZES[0]} → {n:,})", per, "µs")


if __name__ == "__main__":
    main(only="impact")
