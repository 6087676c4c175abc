"""Field value parsing: every rule, good and bad input."""
from __future__ import annotations

import pytest

from console.messaging import values
from console.messaging.schema import FIELDS
from console.messaging.values import (
    Invalid,
    nats_server_addresses,
    parse_amqp_query,
    parse_amqp_url,
    parse_bool,
    parse_host,
    parse_hostlist,
    parse_int,
    parse_nats_servers,
    parse_nats_url,
    parse_port,
    parse_pulsar_url,
    parse_text,
    parse_value,
)


@pytest.mark.parametrize("raw,expected", [
    ("kafka", "kafka"), ("Kafka.Example.COM", "kafka.example.com"), ("my_kafka-1", "my_kafka-1"),
    ("127.0.0.1", "127.0.0.1"), ("::1", "::1"), ("[::1]", "::1"), (" broker ", "broker"),
    ("broker.local.", "broker.local"),
])
def test_hosts_accepted(raw: str, expected: str) -> None:
    assert parse_host(raw) == expected


@pytest.mark.parametrize("raw", ["", "  ", "bad host", "host:9092", "kafka://host", "-lead",
                                 "trail-", "a" * 64, "999.1.1.1", "1.2.3", "héllo", None, 5])
def test_hosts_rejected(raw) -> None:
    with pytest.raises(Invalid):
        parse_host(raw)


def test_host_message_says_what_is_wrong() -> None:
    with pytest.raises(Invalid, match="without port or scheme"):
        parse_host("host:9092")


@pytest.mark.parametrize("raw,expected", [("1", 1), ("65535", 65535), (9092, 9092), (" 443 ", 443)])
def test_ports_accepted(raw, expected: int) -> None:
    assert parse_port(raw) == expected


@pytest.mark.parametrize("raw,message", [
    ("0", "outside 1–65535"), ("65536", "outside 1–65535"), ("-1", "outside"), ("abc", "not a port"),
    ("", "Enter a port"), ("80.5", "not a port"), (True, "Enter a port"), ("99999999999", "not a port"),
])
def test_ports_rejected(raw, message: str) -> None:
    with pytest.raises(Invalid, match=message):
        parse_port(raw)


def test_int_bounds() -> None:
    assert parse_int("30", 0, 60) == 30
    with pytest.raises(Invalid, match="below 1"):
        parse_int("0", 1, None)
    with pytest.raises(Invalid, match="above 10"):
        parse_int("11", None, 10)


@pytest.mark.parametrize("raw,expected", [
    (True, True), ("true", True), ("ON", True), ("1", True), ("yes", True),
    (False, False), ("false", False), ("off", False), ("0", False), ("no", False),
])
def test_bools(raw, expected: bool) -> None:
    assert parse_bool(raw) is expected


def test_bool_rejects_other_words() -> None:
    with pytest.raises(Invalid, match="not true or false"):
        parse_bool("maybe")


def test_hostlist() -> None:
    assert parse_hostlist("a:1, b.example:9093,[::1]:9092") == "a:1,b.example:9093,[::1]:9092"
    assert parse_hostlist(["a:1", "b:2"]) == "a:1,b:2"
    assert parse_hostlist("") is None and parse_hostlist(None) is None
    for bad, message in [("a", "needs a port"), ("a:0", "outside"), ("::1:9092", "brackets"),
                         ("bad host:1", "not a valid host"), (",", "host:port")]:
        with pytest.raises(Invalid, match=message):
            parse_hostlist(bad)


def test_pulsar_url() -> None:
    assert parse_pulsar_url("pulsar://broker:6650") == "pulsar://broker:6650"
    assert parse_pulsar_url("pulsar+ssl://broker") == "pulsar+ssl://broker:6651"
    assert parse_pulsar_url("pulsar://a:6650,b:6650/") == "pulsar://a:6650,b:6650"
    assert parse_pulsar_url("") is None
    for bad in ["http://broker:6650", "broker:6650", "pulsar://", "pulsar://u:p@h:1",
                "pulsar://h:1/path", "pulsar://h:70000"]:
        with pytest.raises(Invalid):
            parse_pulsar_url(bad)


def test_text() -> None:
    assert parse_text("  group ") == "group"
    with pytest.raises(Invalid, match="At most 255"):
        parse_text("x" * 256)
    with pytest.raises(Invalid, match="control characters"):
        parse_text("a\nb")
    with pytest.raises(Invalid):
        parse_text({"a": 1})


def test_choice_and_secret_fields() -> None:
    mechanism = FIELDS["kafka"]["sasl_mechanism"]
    assert parse_value(mechanism, "SCRAM-SHA-512") == "SCRAM-SHA-512"
    with pytest.raises(Invalid, match="not one of"):
        parse_value(mechanism, "GSSAPI")
    password = FIELDS["kafka"]["password"]
    assert parse_value(password, " keeps spaces ") == " keeps spaces "
    with pytest.raises(Invalid):
        parse_value(password, "")
    with pytest.raises(Invalid):
        parse_value(password, 12)


def test_nats_url_alias() -> None:
    assert parse_nats_url("nats://u:p%40ss@nats.local:4333") == {
        "host": "nats.local", "port": 4333, "username": "u", "password": "p@ss"}
    assert parse_nats_url("tls://tok@h") == {"host": "h", "port": 4222, "tls": True, "token": "tok"}
    assert parse_nats_url("h1:4222,h2:4222")["host"] == "h1"
    with pytest.raises(Invalid):
        parse_nats_url("http://h:4222")


def test_amqp_url_alias() -> None:
    assert parse_amqp_url("amqps://user:pw@rabbit:5999/%2Fprod") == {
        "host": "rabbit", "port": 5999, "tls": True, "username": "user", "password": "pw",
        "vhost": "/prod"}
    assert parse_amqp_url("amqp://rabbit")["vhost"] == "/"
    assert parse_amqp_url("amqp://rabbit")["port"] == 5672
    with pytest.raises(Invalid):
        parse_amqp_url("rabbit:5672")


def test_nats_servers_take_host_port_and_urls() -> None:
    assert parse_nats_servers("n1, nats://n2:4333,tls://[::1]") == "n1:4222,nats://n2:4333,tls://[::1]:4222"
    assert parse_nats_servers(["a:1", "b"]) == "a:1,b:4222"
    assert parse_nats_servers("") is None and parse_nats_servers(" , ") is None
    assert nats_server_addresses("n1:4222,tls://n2:4443") == (("n1", 4222), ("n2", 4443))
    for bad in ("http://n:4222", "nats://n:99999", "nats://n/path", "nats://user:pw@n"):
        with pytest.raises(Invalid):
            parse_nats_servers(bad)
    with pytest.raises(Invalid) as secret:
        parse_nats_servers("nats://user:pw@n:4222")
    assert "pw" not in str(secret.value)


def test_nats_url_alias_with_several_urls() -> None:
    parsed = parse_nats_url("nats://n1:4222, nats://u:p@n2 ,tls://n3:4443")
    assert parsed == {"host": "n1", "port": 4222, "tls": True, "username": "u", "password": "p",
                      "servers": "nats://n1:4222,nats://n2:4222,tls://n3:4443"}
    assert "servers" not in parse_nats_url("nats://n1:4222")
    with pytest.raises(Invalid):
        parse_nats_url("nats://n1,http://n2")


def test_amqp_query_parameters_become_fields_or_notes() -> None:
    fields, notes = parse_amqp_query("amqps://h/v?heartbeat=30&connection_timeout=2500&cacertfile=/ca.pem"
                                     "&certfile=/c.pem&keyfile=/k.pem&verify=verify_peer")
    assert fields == {"heartbeat": 30, "connect_timeout": 3, "tls_ca": "/ca.pem", "tls_cert": "/c.pem",
                      "tls_key": "/k.pem"} and notes == []
    fields, notes = parse_amqp_query("amqp://h?heartbeat=x&verify=verify_none&server_name_indication=s"
                                     "&channel_max=2&auth_mechanism=external&whatever=1")
    assert fields == {}
    assert [n.split(" ")[1] for n in notes] == ["heartbeat=x", "verify=verify_none", "server_name_indication=s",
                                                "channel_max=2", "auth_mechanism=external", "whatever=1"]
    assert all(n.startswith("RABBIT_SERVER_URL: ") for n in notes)
    assert parse_amqp_query("amqp://h/v") == ({}, [])


@pytest.mark.parametrize(("parse", "text"), [
    (values.parse_nats_servers, "["), (values.parse_nats_servers, "nats://[::1"),
    (values.parse_amqp_url, "amqp://[x"), (values.parse_amqp_query, "amqp://[x?heartbeat=1")])
def test_an_unclosed_ipv6_bracket_is_a_field_error_not_a_crash(parse, text: str) -> None:
    """urllib raises ValueError("Invalid IPv6 URL") for these (found by schemathesis as a 500)."""
    with pytest.raises(values.Invalid, match="is not"):
        parse(text)


def test_the_api_names_the_field_of_an_unclosed_bracket(admin_client) -> None:
    answer = admin_client.patch("/api/v1/brokers/nats", json={"servers": "["})
    assert answer.status_code == 422 and "servers" in answer.get_json()["errors"]
    answer = admin_client.post("/api/v1/services", json={"name": "edge", "protocols": ["mqtt"],
                                                         "callback_url": "http://[x"})
    assert answer.status_code == 422 and "callback_url" in answer.get_json()["errors"]
