"""Environment > saved > default, resolved in one place, with sources, aliases and conflicts."""
from __future__ import annotations

import pytest

from console.brokers import PROTOCOLS
from console.messaging.resolve import MASKED, Saved, resolve, resolve_priorities
from console.messaging.schema import DEFAULT_PORTS, SCHEMA


def test_defaults_follow_the_contract() -> None:
    for protocol in PROTOCOLS:
        s = resolve(protocol, Saved(), {})
        assert s["host"] == "localhost"
        assert s["port"] == DEFAULT_PORTS[protocol]
        assert all(r.source == "default" for r in s.fields.values())
    assert DEFAULT_PORTS == {"kafka": 9092, "pulsar": 6650, "mqtt": 1883, "nats": 4222,
                             "rabbitmq": 5672}
    rabbit = resolve("rabbitmq", Saved(), {})
    assert rabbit["username"] == "guest" and rabbit["password"] == "guest"
    assert rabbit["vhost"] == "/"


def test_saved_beats_default_and_env_beats_saved() -> None:
    saved = Saved(values={"host": "saved-host", "port": 9999})
    s = resolve("kafka", saved, {"SP_KAFKA_HOST": "env-host"})
    assert (s["host"], s.fields["host"].source, s.fields["host"].env_var) == (
        "env-host", "env", "SP_KAFKA_HOST")
    assert s.fields["host"].shadowed is True
    assert (s["port"], s.fields["port"].source) == (9999, "saved")
    assert s.fields["port"].shadowed is False


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_field_has_an_env_variable(protocol: str) -> None:
    env_values = {"bool": "true", "host": "h.example", "port": "1234", "int": "7", "str": "x",
                  "secret": "s3", "hostlist": "a:1", "serverlist": "nats://a:1", "url": "pulsar://p:6650"}
    for f in SCHEMA[protocol]:
        if f.is_file:
            continue
        raw = str(f.choices[-1]) if f.kind == "choice" else env_values[f.kind]
        if f.kind == "int" and f.minimum:
            raw = str(f.minimum)
        s = resolve(protocol, Saved(), {f.env_var(protocol): raw})
        assert s.fields[f.name].source == "env", f.name
        assert s.fields[f.name].env_var == f"SP_{protocol.upper()}_{f.name.upper()}"


def test_file_variables_use_the_contract_names() -> None:
    names = {f.name: f.env_var("mqtt") for f in SCHEMA["mqtt"] if f.is_file}
    assert names == {"tls_ca": "SP_MQTT_TLS_CA_FILE", "tls_cert": "SP_MQTT_TLS_CERT_FILE",
                     "tls_key": "SP_MQTT_TLS_KEY_FILE"}


def test_bad_env_value_is_ignored_with_a_message() -> None:
    s = resolve("mqtt", Saved(values={"port": 1999}), {"SP_MQTT_PORT": "eighty"})
    assert s["port"] == 1999 and s.fields["port"].source == "saved"
    assert "SP_MQTT_PORT is ignored" in s.fields["port"].env_error


def test_empty_env_value_does_not_override() -> None:
    s = resolve("nats", Saved(), {"SP_NATS_HOST": ""})
    assert s.fields["host"].source == "default"


def test_secret_from_env_and_masked_saved_secret() -> None:
    s = resolve("nats", Saved(secrets={"password": MASKED}), {"SP_NATS_TOKEN": "tok"})
    assert s.fields["password"].public() == {"source": "saved", "value": {"set": True}}
    assert s.fields["token"].public() == {"source": "env", "value": {"set": True},
                                          "env": "SP_NATS_TOKEN"}


def test_kafka_security_protocol_from_the_environment_in_any_case() -> None:
    s = resolve("kafka", Saved(), {"SP_KAFKA_SECURITY_PROTOCOL": "sasl_ssl"})
    assert s["security_protocol"] == "SASL_SSL" and s.fields["security_protocol"].source == "env"
    assert resolve("mqtt", Saved(), {"SP_MQTT_CLIENT_ID": "Sensor-A"})["client_id"] == "Sensor-A"


def test_kafka_brokers_alias() -> None:
    s = resolve("kafka", Saved(), {"KAFKA_BROKERS": "k1:9092,k2:9092"})
    assert s["bootstrap_servers"] == "k1:9092,k2:9092"
    assert s.fields["bootstrap_servers"].env_var == "KAFKA_BROKERS"


def test_sp_variable_wins_over_alias_and_conflict_is_flagged() -> None:
    env = {"KAFKA_BROKERS": "k1:9092", "SP_KAFKA_BOOTSTRAP_SERVERS": "k9:9092"}
    s = resolve("kafka", Saved(), env)
    r = s.fields["bootstrap_servers"]
    assert (r.value, r.env_var) == ("k9:9092", "SP_KAFKA_BOOTSTRAP_SERVERS")
    assert "KAFKA_BROKERS also sets bootstrap_servers" in r.conflict


def test_alias_agreeing_with_sp_variable_is_no_conflict() -> None:
    s = resolve("nats", Saved(), {"NATS_SERVER_URL": "nats://n:4222", "SP_NATS_HOST": "n"})
    assert s.fields["host"].conflict is None


def test_rabbit_server_url_alias_sets_every_part() -> None:
    env = {"RABBIT_SERVER_URL": "amqps://app:pw@rmq:5671/prod", "SP_RABBITMQ_PORT": "5999"}
    s = resolve("rabbitmq", Saved(), env)
    assert (s["host"], s["tls"], s["username"], s["password"], s["vhost"]) == (
        "rmq", True, "app", "pw", "prod")
    assert s.fields["host"].env_var == "RABBIT_SERVER_URL"
    assert s["port"] == 5999 and "RABBIT_SERVER_URL also sets port" in s.fields["port"].conflict


def test_nats_server_url_alias() -> None:
    s = resolve("nats", Saved(), {"NATS_SERVER_URL": "tls://secret-token@nats.internal:4443"})
    assert (s["host"], s["port"], s["tls"], s["token"]) == ("nats.internal", 4443, True,
                                                              "secret-token")


def test_broken_alias_is_reported_not_applied() -> None:
    s = resolve("rabbitmq", Saved(), {"RABBIT_SERVER_URL": "not-a-url"})
    assert s["host"] == "localhost"
    assert any("RABBIT_SERVER_URL is ignored" in n for n in s.notes)


def test_priorities_default_saved_and_env() -> None:
    order, info = resolve_priorities([], {})
    assert order == ["kafka", "mqtt", "nats", "pulsar", "rabbitmq"] and info["source"] == "default"
    order, info = resolve_priorities(["mqtt", "kafka", "nats", "pulsar", "rabbitmq"],
                                     {"SP_PRIORITIZED_PROTOCOL": "NATS"})
    assert order == ["nats", "mqtt", "kafka", "pulsar", "rabbitmq"]
    assert info["source"] == "env" and info["top"] == "nats"
    order, info = resolve_priorities(["mqtt"], {"SP_PRIORITIZED_PROTOCOL": "jms"})
    assert order[0] == "mqtt" and "SP_PRIORITIZED_PROTOCOL=jms is ignored" in info["env_error"]


def test_default_order_follows_streampipes_for_pulsar_and_mqtt() -> None:
    """A service speaking Pulsar and MQTT gets MQTT, as in StreamPipes (kafka, mqtt, jms, nats, pulsar)."""
    order, _ = resolve_priorities([], {})
    assert order.index("mqtt") < order.index("nats") < order.index("pulsar")
    order, _ = resolve_priorities(["nats"], {})
    assert order == ["nats", "kafka", "mqtt", "pulsar", "rabbitmq"]


def test_nats_server_url_list_sets_servers_and_sp_servers_wins() -> None:
    env = {"NATS_SERVER_URL": "nats://tok@n1:4222,nats://n2:4222"}
    s = resolve("nats", Saved(), env)
    assert (s["servers"], s.fields["servers"].env_var) == ("nats://n1:4222,nats://n2:4222", "NATS_SERVER_URL")
    assert s["token"] == "tok" and s["host"] == "n1"
    s = resolve("nats", Saved(), {**env, "SP_NATS_SERVERS": "n9:4222"})
    assert s["servers"] == "n9:4222" and "NATS_SERVER_URL also sets servers" in s.fields["servers"].conflict


def test_rabbit_server_url_query_parameters_are_fields_or_notes() -> None:
    loaded = []

    def load(path: str, slot: str) -> dict:
        loaded.append((path, slot))
        return {"path": path, "certs_pem": "PEM"}

    env = {"RABBIT_SERVER_URL": "amqps://app:pw@rmq/prod?heartbeat=20&connection_timeout=500"
                                "&cacertfile=/etc/ca.pem&frame_max=4096",
           "SP_RABBITMQ_HEARTBEAT": "25", "SP_RABBITMQ_ADDRESSES": "r1:5671,r2:5671"}
    s = resolve("rabbitmq", Saved(), env, load_file=load)
    assert s["heartbeat"] == 25 and "RABBIT_SERVER_URL also sets heartbeat" in s.fields["heartbeat"].conflict
    assert (s["connect_timeout"], s.fields["connect_timeout"].env_var) == (1, "RABBIT_SERVER_URL")
    assert s["tls_ca"] == {"path": "/etc/ca.pem", "certs_pem": "PEM"} and loaded == [("/etc/ca.pem", "tls_ca")]
    assert s["addresses"] == "r1:5671,r2:5671"
    assert any("frame_max=4096 is ignored" in n for n in s.notes)
