"""Saving settings: all-or-nothing validation, cross-field rules, env locks, uploads, priorities."""
from __future__ import annotations

from pathlib import Path

import jks
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509 import load_pem_x509_certificate
from flask import Flask

from console.extensions import db
from console.models import BrokerSettings, TlsFile
from console.settings import service


@pytest.fixture
def ctx(app: Flask):
    with app.app_context():
        yield app


def saved_row(protocol: str) -> BrokerSettings | None:
    db.session.expire_all()
    return db.session.get(BrokerSettings, protocol)


def test_valid_change_is_saved_and_reported(ctx) -> None:
    result = service.apply_changes("mqtt", {"host": "mqtt.local", "port": "8883", "qos": "2"}, "t")
    assert result.ok and sorted(result.changed) == ["host", "port", "qos"]
    s = service.effective("mqtt")
    assert (s["host"], s["port"], s["qos"]) == ("mqtt.local", 8883, 2)
    assert s.fields["host"].source == "saved"


def test_one_invalid_field_saves_nothing(ctx) -> None:
    result = service.apply_changes("mqtt", {"host": "ok.host", "port": "0", "keepalive": "x"}, "t")
    assert not result.ok
    assert set(result.errors) == {"port", "keepalive"}
    assert saved_row("mqtt") is None


def test_unknown_field_and_file_field_are_errors(ctx) -> None:
    result = service.apply_changes("nats", {"hots": "x", "tls_ca": "abc"}, "t")
    assert "no field 'hots'" in result.errors["hots"]
    assert "Upload" in result.errors["tls_ca"]


def test_value_equal_to_default_is_not_stored_and_none_resets(ctx) -> None:
    service.apply_changes("kafka", {"host": "k1"}, "t")
    service.apply_changes("kafka", {"host": "localhost", "port": 9092}, "t")
    assert saved_row("kafka").values == {}
    service.apply_changes("kafka", {"client_id": "x"}, "t")
    service.apply_changes("kafka", {"client_id": None}, "t")
    assert service.effective("kafka").fields["client_id"].source == "default"


def test_env_locked_field_cannot_be_changed(ctx, monkeypatch) -> None:
    monkeypatch.setenv("SP_NATS_PORT", "4333")
    result = service.apply_changes("nats", {"port": "4444", "host": "n"}, "t")
    assert result.errors == {"port": "Locked: set by the environment variable SP_NATS_PORT."}
    assert saved_row("nats") is None


@pytest.mark.parametrize("changes,field,message", [
    ({"security_protocol": "SASL_SSL", "tls": True}, "sasl_mechanism", "needs a SASL mechanism"),
    ({"security_protocol": "SASL_PLAINTEXT"}, "sasl_mechanism", "needs a SASL mechanism"),
    ({"security_protocol": "SSL"}, "tls", "turn TLS on"),
    ({"security_protocol": "PLAINTEXT", "tls": True}, "security_protocol", "choose SSL"),
    ({"security_protocol": "PLAINTEXT", "sasl_mechanism": "PLAIN", "username": "u",
      "password": "p"}, "security_protocol", "does not log in"),
    ({"sasl_mechanism": "SCRAM-SHA-256", "password": "p"}, "username", "SASL needs a username"),
    ({"sasl_mechanism": "SCRAM-SHA-256", "username": "u"}, "password", "SASL needs a password"),
])
def test_kafka_security_rules(ctx, changes, field: str, message: str) -> None:
    result = service.apply_changes("kafka", changes, "t")
    assert message in result.errors[field]
    assert saved_row("kafka") is None


def test_kafka_sasl_ssl_complete_is_saved_with_a_truststore_warning(ctx) -> None:
    result = service.apply_changes("kafka", {
        "security_protocol": "SASL_SSL", "tls": "true", "sasl_mechanism": "SCRAM-SHA-512",
        "username": "svc", "password": "pw"}, "t")
    assert result.ok, result.errors
    assert any("system CA store" in m for _, m in result.warnings)


def test_kafka_security_protocol_derived_when_empty(ctx) -> None:
    from console.messaging.rules import kafka_security

    service.apply_changes("kafka", {"tls": True, "sasl_mechanism": "PLAIN", "username": "u",
                                    "password": "p"}, "t")
    assert kafka_security(service.effective("kafka")) == "SASL_SSL"


@pytest.mark.parametrize("protocol,changes,field", [
    ("pulsar", {"url": "pulsar+ssl://p:6651"}, "tls"),
    ("pulsar", {"url": "pulsar://p:6650", "tls": True}, "url"),
    ("pulsar", {"oauth2_issuer_url": "https://idp"}, "oauth2_client_id"),
    ("pulsar", {"oauth2_issuer_url": "ftp://idp", "oauth2_client_id": "c"}, "oauth2_issuer_url"),
    ("pulsar", {"token": "t", "oauth2_issuer_url": "https://i", "oauth2_client_id": "c"}, "token"),
    ("nats", {"username": "u"}, "password"),
    ("nats", {"token": "t", "username": "u", "password": "p"}, "token"),
    ("nats", {"password": "p"}, "username"),
    ("mqtt", {"password": "p"}, "username"),
])
def test_other_cross_field_rules(ctx, protocol, changes, field) -> None:
    result = service.apply_changes(protocol, changes, "t")
    assert field in result.errors, result.errors


def test_mqtt_username_without_password_is_allowed(ctx) -> None:
    assert service.apply_changes("mqtt", {"username": "device"}, "t").ok


def test_rule_between_env_fields_does_not_block_other_saves(ctx, monkeypatch) -> None:
    monkeypatch.setenv("SP_KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("SP_KAFKA_TLS", "false")
    result = service.apply_changes("kafka", {"client_id": "other"}, "t")
    assert result.ok
    assert any("environment sets conflicting values" in m for _, m in result.warnings)


def test_secret_set_keep_clear(ctx) -> None:
    service.apply_changes("nats", {"username": "u", "password": "first"}, "t")
    assert service.effective("nats", reveal=True)["password"] == "first"
    service.apply_changes("nats", {"host": "n2"}, "t")
    assert service.effective("nats", reveal=True)["password"] == "first"
    result = service.apply_changes("nats", {"password": None, "username": None}, "t")
    assert result.ok and "password" in result.changed
    assert not service.effective("nats").fields["password"].is_set


def test_secret_is_encrypted_at_rest(ctx) -> None:
    service.apply_changes("rabbitmq", {"password": "plain-text-secret-42"}, "t")
    row = saved_row("rabbitmq")
    assert "plain-text-secret-42" not in str(row.secrets)
    assert row.secrets["password"].startswith("gAAAAA")


def test_undecryptable_secret_gives_a_clear_error(app, monkeypatch) -> None:
    from console.crypto import SecretUnreadable

    with app.app_context():
        service.apply_changes("rabbitmq", {"password": "pw"}, "t")
    app.extensions.pop("console_fernet")
    app.config["ENCRYPTION_KEY"] = "a-different-key"     # as after a restart with another key
    with app.app_context():
        with pytest.raises(SecretUnreadable, match="CONSOLE_ENCRYPTION_KEY"):
            service.effective("rabbitmq", reveal=True)
        assert service.effective("rabbitmq").fields["password"].is_set


def test_encryption_key_rotation(app) -> None:
    from cryptography.fernet import Fernet

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    with app.app_context():
        app.config["ENCRYPTION_KEY"] = old
        app.extensions.pop("console_fernet", None)
        service.apply_changes("nats", {"username": "u", "password": "rotated"}, "t")
        app.config["ENCRYPTION_KEY"] = f"{new},{old}"
        app.extensions.pop("console_fernet")
        assert service.effective("nats", reveal=True)["password"] == "rotated"


def test_generated_key_file_is_private(app) -> None:
    with app.app_context():
        service.apply_changes("nats", {"username": "u", "password": "x"}, "t")
    key_file = Path(app.instance_path) / "encryption.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert (Path(app.instance_path) / "secret.key").stat().st_mode & 0o777 == 0o600


# --- uploads -------------------------------------------------------------------------------------

def _pem(path: Path) -> bytes:
    return path.read_bytes()


def test_pem_truststore_upload(ctx, pki) -> None:
    chain = _pem(pki["ca.crt"]) + _pem(pki["other-ca.crt"])
    result = service.upload_file("mqtt", "tls_ca", chain, filename="cas.pem", actor="t")
    assert result.ok, result.errors
    value = service.effective("mqtt").fields["tls_ca"].value
    assert value["format"] == "PEM" and len(value["certificates"]) == 2
    assert value["certificates"][0]["subject"] == "CN=Messaging Console Test CA"


def test_bad_truststore_saves_nothing(ctx) -> None:
    result = service.upload_file("mqtt", "tls_ca", b"this is not a certificate", filename="x")
    assert "tls_ca" in result.errors
    assert db.session.execute(db.select(TlsFile)).first() is None


def test_pkcs12_keystore_upload_and_wrong_password(ctx, pki) -> None:
    cert = load_pem_x509_certificate(_pem(pki["client.crt"]))
    key = serialization.load_pem_private_key(_pem(pki["client.key"]), None)
    ca = load_pem_x509_certificate(_pem(pki["ca.crt"]))
    p12 = pkcs12.serialize_key_and_certificates(
        b"client", key, cert, [ca], serialization.BestAvailableEncryption(b"p12-pass"))
    bad = service.upload_file("kafka", "tls_cert", p12, filename="c.p12", password="nope")
    assert "password" in bad.errors["tls_cert"].lower()
    good = service.upload_file("kafka", "tls_cert", p12, filename="c.p12", password="p12-pass")
    assert good.ok and good.changed == ["tls_cert", "tls_key"]
    s = service.effective("kafka", reveal=True)
    assert "PRIVATE KEY" in s["tls_key"] and s.fields["tls_key"].public()["value"] == {"set": True}
    row = db.session.execute(db.select(TlsFile)).scalar_one()
    assert "PRIVATE KEY" not in row.key_ciphertext


def test_jks_truststore_upload(ctx, pki) -> None:
    ca = load_pem_x509_certificate(_pem(pki["ca.crt"]))
    entry = jks.TrustedCertEntry.new("ca", ca.public_bytes(serialization.Encoding.DER))
    data = jks.KeyStore.new("jks", [entry]).saves("store-pass")
    assert "tls_ca" in service.upload_file("nats", "tls_ca", data, filename="t.jks",
                                           password="wrong").errors
    assert service.upload_file("nats", "tls_ca", data, filename="t.jks",
                               password="store-pass").ok
    assert service.effective("nats").fields["tls_ca"].value["format"] == "JKS"


def test_key_not_matching_certificate_is_rejected(ctx, pki) -> None:
    result = service.upload_file("mqtt", "tls_cert", _pem(pki["client.crt"]),
                                 key_data=_pem(pki["server.key"]), filename="c.pem")
    assert "does not match" in result.errors["tls_cert"]


def test_upload_of_env_locked_slot_is_refused(ctx, pki, monkeypatch) -> None:
    monkeypatch.setenv("SP_MQTT_TLS_CA_FILE", str(pki["ca.crt"]))
    result = service.upload_file("mqtt", "tls_ca", _pem(pki["ca.crt"]), filename="ca.pem")
    assert "SP_MQTT_TLS_CA_FILE" in result.errors["tls_ca"]


def test_env_pem_files_are_described_and_errors_shown(ctx, pki, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("SP_MQTT_TLS_CA_FILE", str(pki["soon.crt"]))
    s = service.effective("mqtt")
    cert = s.fields["tls_ca"].value["certificates"][0]
    assert cert["status"] == "expiring" and s.fields["tls_ca"].source == "env"
    monkeypatch.setenv("SP_MQTT_TLS_CA_FILE", str(tmp_path / "missing.pem"))
    s = service.effective("mqtt")
    assert "does not exist" in s.fields["tls_ca"].value["error"]
    monkeypatch.setenv("SP_MQTT_TLS_CERT_FILE", str(pki["client.crt"]))
    errors, warnings = service.findings(service.effective("mqtt"))
    assert any("SP_MQTT_TLS_KEY_FILE is not" in m for _, m in warnings)


def test_delete_file(ctx, pki) -> None:
    service.upload_file("mqtt", "tls_ca", _pem(pki["ca.crt"]), filename="ca.pem")
    assert service.delete_file("mqtt", "tls_ca").changed == ["tls_ca"]
    assert not service.effective("mqtt").fields["tls_ca"].is_set


# --- priorities ----------------------------------------------------------------------------------

def test_priorities_validation(ctx) -> None:
    assert "Unknown protocol: jms" in service.set_priorities(
        ["jms", "kafka", "mqtt", "nats", "pulsar"]).errors["priorities"]
    assert "missing rabbitmq" in service.set_priorities(
        ["kafka", "mqtt", "nats", "pulsar"]).errors["priorities"]
    assert "listed twice kafka" in service.set_priorities(
        ["kafka", "kafka", "mqtt", "nats", "pulsar", "rabbitmq"]).errors["priorities"]
    assert "list" in service.set_priorities("kafka").errors["priorities"]
    order = ["rabbitmq", "nats", "mqtt", "pulsar", "kafka"]
    assert service.set_priorities(order).changed == ["priorities"]
    assert service.priorities()[0] == order


def test_move_priority(ctx) -> None:
    service.move_priority("pulsar", "up")
    assert service.priorities()[0] == ["kafka", "mqtt", "pulsar", "nats", "rabbitmq"]
    service.move_priority("kafka", "up")
    assert service.priorities()[0][0] == "kafka"
