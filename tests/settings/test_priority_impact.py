"""A priority change flags an adapter only when it really changes for it: it was on the protocol new
adapters of its service got, and they will get another. An adapter already on the protocol they get
after the move is not a false alarm (issue 18 item 5), the same on PUT /priorities and its dry run."""
from __future__ import annotations

from tests.adapters.test_adapters import api, fleet, kinds  # noqa: F401 - fixtures

KAFKA_FIRST = ["kafka", "mqtt", "pulsar", "nats", "rabbitmq"]
MQTT_FIRST = ["mqtt", "kafka", "pulsar", "nats", "rabbitmq"]


def test_moving_a_protocol_up_does_not_flag_adapters_already_on_it(fleet) -> None:  # noqa: F811
    moved = fleet.put("/api/v1/priorities", json={"priorities": KAFKA_FIRST, "confirm": True})
    assert moved.status_code == 200, moved.get_json()
    # m1, m2 stay on MQTT; new adapters of edge get Kafka now
    made = fleet.post("/api/v1/adapters", json={"name": "e-k", "service": "edge"})
    assert made.status_code == 201 and made.get_json()["protocol"] == "kafka"
    for dry_run in (True, False):
        back = fleet.put("/api/v1/priorities", json={"priorities": MQTT_FIRST, "dry_run": dry_run})
        body = back.get_json()
        assert body["impact"]["services"] == [{"service": "edge", "from": "kafka", "to": "mqtt"}]
        assert kinds(back) == {"e-k": "protocol_changes"}, body["impact"]["adapters"]


def test_a_move_that_changes_no_adapter_saves_without_confirmation(fleet) -> None:  # noqa: F811
    assert fleet.put("/api/v1/priorities", json={"priorities": KAFKA_FIRST,
                                                 "confirm": True}).status_code == 200
    back = fleet.put("/api/v1/priorities", json={"priorities": MQTT_FIRST})
    assert back.status_code == 200, back.get_json()          # m1, m2 are on MQTT already
    assert fleet.get("/api/v1/priorities").get_json()["priorities"] == MQTT_FIRST


def test_the_page_move_asks_no_confirmation_when_no_adapter_changes(fleet, admin_client) -> None:  # noqa: F811
    assert fleet.put("/api/v1/priorities", json={"priorities": KAFKA_FIRST,
                                                 "confirm": True}).status_code == 200
    moved = admin_client.post("/settings/messaging/priorities", headers={"HX-Request": "true"},
                              data={"move": "mqtt:up"})
    assert moved.status_code == 200, moved.get_data(as_text=True)[:500]
    assert "Confirm new priority" not in moved.get_data(as_text=True)
    assert fleet.get("/api/v1/priorities").get_json()["priorities"][0] == "mqtt"
