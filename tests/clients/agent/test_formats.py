"""The formats of console-agent on documents shaped as the console gives them: the names each platform
reads, URL encoding, PEM material as 0600 files, one clear line for a field a format cannot carry, and
secrets kept out of messages."""
from __future__ import annotations

import stat
import sys
from pathlib import Path

import pytest

from .conftest import AGENT_DIR

if str(AGENT_DIR) not in sys.path:
    sys.path.insert(0, str(AGENT_DIR))

from console_agent import formats  # noqa: E402

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def doc(**brokers: dict) -> dict:
    return {"service": "edge", "version": 3, "etag": "abc", "priorities": list(brokers),
            "protocol": next(iter(brokers), None), "brokers": brokers}


KAFKA = {"enabled": True, "host": "k1", "port": 9092, "bootstrap_servers": "k1:9092,k2:9093",
         "security_protocol": "", "sasl_mechanism": "", "username": None, "password": None, "tls": False,
         "tls_ca": None, "tls_cert": None, "tls_key": None, "tls_verify_hostname": True,
         "topic": "orders", "nodes": ["k1:9092", "k2:9093"], "tls_active": False}
NATS = {"enabled": True, "host": "n1", "port": 4222, "servers": None, "username": "u", "password": "p@ss/word",
        "token": None, "tls": True, "tls_ca": None, "tls_cert": None, "tls_key": None,
        "tls_verify_hostname": True, "nodes": ["n1:4222"], "tls_active": True}
RABBIT = {"enabled": True, "host": "r1", "port": 5672, "addresses": None, "vhost": "/", "username": "guest",
          "password": "gu:est", "tls": False, "tls_ca": None, "tls_cert": None, "tls_key": None,
          "tls_verify_hostname": True, "exchange": "", "nodes": ["r1:5672"], "tls_active": False}
MQTT = {"enabled": True, "host": "m1", "port": 8883, "username": "u", "password": "pw", "tls": True,
        "tls_ca": PEM, "tls_cert": None, "tls_key": None, "tls_verify_hostname": True, "qos": "1",
        "clean_session": True, "nodes": ["m1:8883"], "tls_active": True}
PULSAR = {"enabled": True, "host": "p", "port": 6650, "url": "pulsar://p1:6650,p2:6650", "token": "tok",
          "nodes": ["p1:6650", "p2:6650"], "tls_active": False}


def test_streampipes_names_every_field_and_writes_pem_files(tmp_path: Path) -> None:
    env = formats.streampipes(doc(mqtt=MQTT, kafka=KAFKA, pulsar=PULSAR), tmp_path / "tls")
    assert env["SP_PRIORITIZED_PROTOCOL"] == "mqtt"
    assert (env["SP_MQTT_HOST"], env["SP_MQTT_PORT"], env["SP_MQTT_TLS"]) == ("m1", "8883", "true")
    assert env["SP_KAFKA_BOOTSTRAP_SERVERS"] == "k1:9092,k2:9093" and env["SP_KAFKA_TOPIC"] == "orders"
    assert env["SP_PULSAR_URL"] == "pulsar://p1:6650,p2:6650" and env["SP_PULSAR_TOKEN"] == "tok"
    ca = Path(env["SP_MQTT_TLS_CA_FILE"])
    assert ca.read_text() == PEM and stat.S_IMODE(ca.stat().st_mode) == 0o600
    assert "SP_MQTT_TLS_CA" not in env and "SP_MQTT_NODES" not in env and "SP_KAFKA_USERNAME" not in env


def test_gateway_urls_are_written_as_the_uri_specs_say() -> None:
    env = formats.gateway(doc(kafka=KAFKA, nats=NATS, rabbitmq=RABBIT))
    assert env == {"KAFKA_BROKERS": "k1:9092,k2:9093", "NATS_SERVER_URL": "tls://u:p%40ss%2Fword@n1:4222",
                   "RABBIT_SERVER_URL": "amqp://guest:gu%3Aest@r1:5672/%2F"}
    vhost = formats.gateway(doc(rabbitmq={**RABBIT, "vhost": "lab/2", "tls_active": True}))
    assert vhost["RABBIT_SERVER_URL"] == "amqps://guest:gu%3Aest@r1:5672/lab%2F2"


@pytest.mark.parametrize("fmt, document, line", [
    ("gateway", doc(kafka={**KAFKA, "tls_ca": PEM}), "format gateway cannot carry kafka.tls_ca"),
    ("gateway", doc(kafka={**KAFKA, "security_protocol": "SASL_SSL"}),
     "format gateway cannot carry kafka.security_protocol"),
    ("gateway", doc(mqtt=MQTT), "format gateway cannot carry mqtt.*"),
    ("gateway", doc(rabbitmq={**RABBIT, "nodes": ["a:1", "b:2"], "addresses": "a:1,b:2"}),
     "format gateway cannot carry rabbitmq.addresses"),
    ("roboconf", doc(rabbitmq={**RABBIT, "tls_cert": PEM}), "format roboconf cannot carry rabbitmq.tls_cert"),
    ("roboconf", doc(rabbitmq={**RABBIT, "vhost": "labvhost"}), "format roboconf cannot carry rabbitmq.vhost"),
    ("template", doc(mqtt=MQTT), "the template names ${NOPE}, which the document does not give"),
])
def test_a_field_a_format_cannot_carry_is_one_line_naming_it(tmp_path: Path, fmt: str, document: dict,
                                                              line: str) -> None:
    with pytest.raises(formats.CannotCarry) as err:
        formats.render(fmt, document, tmp_path, "x=${NOPE}")
    assert str(err.value).startswith(line) and "\n" not in str(err.value)


def test_roboconf_names_the_port_only_when_it_is_not_5672() -> None:
    text = formats.roboconf(doc(rabbitmq=RABBIT))
    assert "message-server-ip = r1\n" in text and "message-server-username = guest\n" in text
    assert "message-server-password = gu:est\n" in text
    text = formats.roboconf(doc(rabbitmq={**RABBIT, "port": 17672, "nodes": ["r1:17672"]}))
    assert "message-server-ip = r1:17672\n" in text


def test_dotenv_quotes_what_needs_it_and_template_fills_names(tmp_path: Path) -> None:
    text = formats.dotenv(doc(nats={**NATS, "password": "it's a secret"}), tmp_path)
    assert "SP_NATS_PASSWORD='it'\\''s a secret'\n" in text and "SP_NATS_HOST=n1\n" in text
    out = formats.template(doc(nats=NATS, rabbitmq=RABBIT), tmp_path,
                           "nats=${NATS_SERVER_URL}\nhost=${SP_RABBITMQ_HOST} $$HOME\n")
    assert out == "nats=tls://u:p%40ss%2Fword@n1:4222\nhost=r1 $HOME\n"


def test_scrub_hides_secrets_as_given_and_percent_encoded() -> None:
    document = doc(nats=NATS, rabbitmq=RABBIT)
    line = "ACCESS_REFUSED for amqp://guest:gu%3Aest@r1 and p@ss/word"
    assert formats.scrub(line, formats.secrets_of(document)) == "ACCESS_REFUSED for amqp://guest:***@r1 and ***"
