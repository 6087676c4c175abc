"""examples/extension_service/connectors.py against the real lab brokers: a real publish and receive with
good settings, the broker's own reason with bad ones, TLS from delivered PEM text in private files."""
from __future__ import annotations

import secrets
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from connectors import ConnectFailed, PemFiles, open_connection
from connectors.rabbitmq import addresses
from paho.mqtt.enums import CallbackAPIVersion

from tests.lab_fixtures import load_brokerlab


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The connectors' temporary files go to a directory of this test only."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def _eventually(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.02)
    return predicate()


def _tls_dirs(root: Path) -> list[Path]:
    return sorted(root.glob("console-example-tls-*"))


# -- MQTT ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("listener, version", [("plain", "3.1.1"), ("plain_auth", "3.1.1"), ("plain_auth", "5")])
def test_mqtt_publishes_and_receives_with_good_settings(mqtt_settings, listener: str, version: str) -> None:
    connection = open_connection("mqtt", mqtt_settings(listener, protocol_version=version), "edge")
    try:
        assert connection.connected and connection.broker.endswith(f":{connection.settings['port']}")
        for _ in range(3):
            assert connection.round_trip() > 0      # the network thread now runs: still a real round trip
    finally:
        connection.close()
    assert not connection.connected


@pytest.mark.parametrize("version", ["3.1.1", "5"])
def test_mqtt_wrong_password_is_the_brokers_reason(mqtt_settings, version: str) -> None:
    with pytest.raises(ConnectFailed) as caught:
        open_connection("mqtt", mqtt_settings("plain_auth", password="wrong", protocol_version=version), "edge")
    assert str(caught.value).endswith(":11884: the broker refused the connection: Not authorized")


def test_mqtt_without_credentials_on_the_password_listener(mqtt_settings) -> None:
    with pytest.raises(ConnectFailed, match="Not authorized"):
        open_connection("mqtt", mqtt_settings("plain_auth", username=None, password=None), "edge")


def test_mqtt_tls_from_delivered_pem_in_private_files(mqtt_settings, private_tmp: Path) -> None:
    connection = open_connection("mqtt", mqtt_settings("tls"), "edge")
    try:
        (directory,) = _tls_dirs(private_tmp)
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        (ca,) = directory.iterdir()
        assert ca.name == "tls_ca.pem" and stat.S_IMODE(ca.stat().st_mode) == 0o600
        assert connection.round_trip() > 0
    finally:
        connection.close()
    assert _tls_dirs(private_tmp) == []


def test_mqtt_client_certificate_from_pem(lab: dict, mqtt_settings, private_tmp: Path) -> None:
    cert, key = Path(lab["certs"]["client_crt"]).read_text(), Path(lab["certs"]["client_key"]).read_text()
    connection = open_connection("mqtt", mqtt_settings("tls_client_cert", tls_cert=cert, tls_key=key), "edge")
    try:
        files = sorted(p.name for p in _tls_dirs(private_tmp)[0].iterdir())
        assert files == ["tls_ca.pem", "tls_cert.pem", "tls_key.pem"]
        assert connection.round_trip() > 0
    finally:
        connection.close()
    with pytest.raises(ConnectFailed, match=r":18886: connection lost before CONNACK \(.+\); "
                                             r"the broker may require a client certificate$"):
        open_connection("mqtt", mqtt_settings("tls_client_cert"), "edge")
    assert _tls_dirs(private_tmp) == []


@pytest.mark.parametrize("listener, reason", [
    ("tls_expired", "TLS: certificate verify failed: certificate has expired"),
    ("tls_wronghost", "TLS: certificate verify failed: IP address mismatch"),
])
def test_mqtt_tls_failures_name_the_certificate_problem(mqtt_settings, private_tmp: Path, listener: str,
                                                       reason: str) -> None:
    with pytest.raises(ConnectFailed, match=reason):
        open_connection("mqtt", mqtt_settings(listener), "edge")
    assert _tls_dirs(private_tmp) == []


def test_mqtt_hostname_check_off_accepts_the_wrong_host_certificate(mqtt_settings) -> None:
    connection = open_connection("mqtt", mqtt_settings("tls_wronghost", tls_verify_hostname=False), "edge")
    connection.close()


def test_mqtt_untrusted_ca(lab: dict, mqtt_settings) -> None:
    other = Path(lab["certs"]["other_ca"]).read_text()
    with pytest.raises(ConnectFailed, match="certificate verify failed: (self.signed|unable to get local issuer)"):
        open_connection("mqtt", mqtt_settings("tls", tls_ca=other), "edge")


def test_mqtt_refused_and_silent_ports(lab: dict, mqtt_settings) -> None:
    faults = lab["faults"]
    with pytest.raises(ConnectFailed, match=f":{faults['refused']}: connection refused$"):
        open_connection("mqtt", mqtt_settings(port=faults["refused"]), "edge")
    with pytest.raises(ConnectFailed, match="no CONNACK within the connect timeout"):
        open_connection("mqtt", mqtt_settings(port=faults["silent"], connect_timeout=1), "edge")


def test_bad_pem_material_is_a_clear_failure(mqtt_settings, private_tmp: Path) -> None:
    with pytest.raises(ConnectFailed, match="the delivered TLS material cannot be loaded"):
        open_connection("mqtt", mqtt_settings("tls", tls_ca="-----BEGIN CERTIFICATE-----\nnope\n"
                                                          "-----END CERTIFICATE-----\n"), "edge")
    assert _tls_dirs(private_tmp) == []


def test_settings_paho_refuses_are_a_failure_not_a_crash(mqtt_settings, private_tmp: Path) -> None:
    with pytest.raises(ConnectFailed, match="127.0.0.1:18883: the settings cannot be used: .*client id"):
        open_connection("mqtt", mqtt_settings("tls", client_id="", clean_session=False), "edge")
    assert _tls_dirs(private_tmp) == []


def test_a_persistent_session_with_the_delivered_client_id(mqtt_settings) -> None:
    for version in ("3.1.1", "5"):
        connection = open_connection("mqtt", mqtt_settings(client_id=f"edge-persistent-{version}",
                                                           clean_session=False, protocol_version=version), "edge")
        try:
            assert connection.client._client_id == f"edge-persistent-{version}".encode()
            assert connection.round_trip() > 0
        finally:
            connection.close()


def test_pem_files_without_tls_material_make_no_directory(private_tmp: Path) -> None:
    files = PemFiles({"tls_ca": None, "tls_cert": ""})
    assert files.directory is None and files.paths == {} and _tls_dirs(private_tmp) == []


# -- RabbitMQ -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("listener", ["plain", "tls"])
def test_rabbitmq_publishes_and_receives_with_good_settings(rabbitmq_settings, listener: str) -> None:
    connection = open_connection("rabbitmq", rabbitmq_settings(listener), "edge")
    try:
        assert connection.connected
        for _ in range(3):
            assert connection.round_trip() > 0
    finally:
        connection.close()
    assert not connection.connected


def test_rabbitmq_wrong_password_is_the_brokers_reason(rabbitmq_settings) -> None:
    with pytest.raises(ConnectFailed) as caught:
        open_connection("rabbitmq", rabbitmq_settings(password="wrong"), "edge")
    text = str(caught.value)
    assert text.startswith("127.0.0.1:17672: ProbableAuthenticationError")
    assert "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN" in text


def test_rabbitmq_vhost_without_permission(lab: dict, rabbitmq_settings) -> None:
    denied = lab["brokers"]["rabbitmq"]["denied_vhost"]
    refused = f"NOT_ALLOWED - access to vhost '{denied}' refused for user 'labuser'"
    with pytest.raises(ConnectFailed, match=refused):
        open_connection("rabbitmq", rabbitmq_settings(vhost=denied), "edge")


def test_rabbitmq_missing_exchange(rabbitmq_settings) -> None:
    with pytest.raises(ConnectFailed, match="NOT_FOUND - no exchange 'no-such-exchange' in vhost 'labvhost'"):
        open_connection("rabbitmq", rabbitmq_settings(exchange="no-such-exchange"), "edge")
    connection = open_connection("rabbitmq", rabbitmq_settings(exchange="amq.topic"), "edge")
    connection.close()


def test_rabbitmq_tries_every_address_in_order(lab: dict, rabbitmq_settings) -> None:
    refused = lab["faults"]["refused"]
    settings = rabbitmq_settings(addresses=[f"127.0.0.1:{refused}", "127.0.0.1:17672"])
    connection = open_connection("rabbitmq", settings, "edge")
    try:
        assert connection.broker == "127.0.0.1:17672" and connection.round_trip() > 0
    finally:
        connection.close()
    with pytest.raises(ConnectFailed, match=f"127.0.0.1:{refused}: connection refused"):
        open_connection("rabbitmq", rabbitmq_settings(addresses=f"127.0.0.1:{refused}"), "edge")
    nodes = rabbitmq_settings(addresses=None, port=refused, nodes=[f"127.0.0.1:{refused}", "127.0.0.1:17672"])
    connection = open_connection("rabbitmq", nodes, "edge")          # the console's field name
    try:
        assert connection.broker == "127.0.0.1:17672"
    finally:
        connection.close()


@pytest.mark.parametrize("listener, reason", [
    ("tls_expired", "certificate has expired"), ("tls_wronghost", "IP address mismatch")])
def test_rabbitmq_tls_failures(rabbitmq_settings, private_tmp: Path, listener: str, reason: str) -> None:
    with pytest.raises(ConnectFailed, match=f"TLS: certificate verify failed: {reason}"):
        open_connection("rabbitmq", rabbitmq_settings(listener), "edge")
    assert _tls_dirs(private_tmp) == []


def test_rabbitmq_hostname_check_off_accepts_the_wrong_host_certificate(rabbitmq_settings) -> None:
    connection = open_connection("rabbitmq", rabbitmq_settings("tls_wronghost", tls_verify_hostname=False), "edge")
    try:
        assert connection.round_trip() > 0
    finally:
        connection.close()


def test_rabbitmq_silent_port_ends_at_the_connect_timeout(lab: dict, rabbitmq_settings) -> None:
    silent = lab["faults"]["silent"]
    with pytest.raises(ConnectFailed, match="no AMQP handshake within the connect timeout"):
        open_connection("rabbitmq", rabbitmq_settings(port=silent, addresses=None, connect_timeout=1), "edge")


@pytest.mark.parametrize("value, expected", [
    (None, [("127.0.0.1", 5672)]),
    ("", [("127.0.0.1", 5672)]),
    ("a:1, b", [("a", 1), ("b", 5672)]),
    (["[::1]:5673", "::1", "h2:1234", {"host": "h3"}, {"host": "h4", "port": 7}],
     [("::1", 5673), ("::1", 5672), ("h2", 1234), ("h3", 5672), ("h4", 7)]),
])
def test_rabbitmq_addresses_forms(value, expected) -> None:
    assert addresses(value, "127.0.0.1", 5672) == expected


def test_an_unknown_protocol_is_refused() -> None:
    with pytest.raises(ConnectFailed, match="this service speaks mqtt, rabbitmq, not kafka"):
        open_connection("kafka", {"host": "127.0.0.1", "port": 19092}, "edge")


def _rabbitmqctl(lab: dict, *args: str) -> subprocess.CompletedProcess[str]:
    """rabbitmqctl against the lab's node; retried, as another rabbitmqctl run at the same moment (the
    lab is shared) holds the CLI's distribution port."""
    for _attempt in range(10):
        result = load_brokerlab()._rabbitmqctl(Path(lab["dir"]), "-q", *args)
        if result.returncode == 0:
            return result
        time.sleep(0.5)
    raise AssertionError(f"rabbitmqctl {' '.join(args)} failed: {result.stderr}")


# -- losing the broker --------------------------------------------------------------------------------
def test_mqtt_reconnects_after_the_broker_drops_the_session(mqtt_settings) -> None:
    """Another client taking over the client id makes Mosquitto drop ours; paho reconnects by itself."""
    events: list[str] = []
    client_id = f"example-takeover-{secrets.token_hex(3)}"
    connection = open_connection("mqtt", mqtt_settings(client_id=client_id), "edge")
    connection.on_event = events.append
    intruder = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
    try:
        intruder.connect("127.0.0.1", connection.port)
        intruder.loop(timeout=0.5)
        assert _eventually(lambda: any(e.startswith("connection-lost mqtt 127.0.0.1:11883") for e in events))
        intruder.disconnect()
        assert _eventually(lambda: connection.connected, timeout=10)
        assert "reconnected mqtt 127.0.0.1:11883" in events, events
        assert connection.round_trip() > 0
    finally:
        intruder._reset_sockets()
        connection.close()


def test_rabbitmq_reconnects_after_the_broker_closes_the_connection(lab: dict, rabbitmq_settings) -> None:
    events: list[str] = []
    name = f"reconnect-{secrets.token_hex(4)}"
    connection = open_connection("rabbitmq", rabbitmq_settings(), name)
    connection.on_event = events.append
    try:
        listed = _rabbitmqctl(lab, "list_connections", "--no-table-headers", "pid", "client_properties")
        pids = [line.split("\t")[0] for line in listed.stdout.splitlines()
                if f'{{"connection_name","{name} (console example service)"}}' in line]
        assert len(pids) == 1, listed.stdout + listed.stderr
        _rabbitmqctl(lab, "close_connection", pids[0], "test closes it")
        assert _eventually(lambda: any(e.startswith("connection-lost rabbitmq 127.0.0.1:17672: CONNECTION_FORCED")
                                       for e in events), timeout=10), events
        assert _eventually(lambda: "reconnected rabbitmq 127.0.0.1:17672" in events, timeout=10), events
        assert connection.connected and connection.round_trip() > 0
    finally:
        connection.close()
