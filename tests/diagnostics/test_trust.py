"""Trusting CAs without a gap (console/settings/service.py add_ca/remove_ca) and after looking at
them (console/diagnostics trust, POST /api/v1/diagnoses/<id>/trust), against real TLS: a socat TLS
front, started here, in front of the lab's RabbitMQ with a server certificate issued by a CA made
here that the console does not know; it presents its chain (leaf and root), as many brokers do.
A two-CA truststore trusts the lab's own TLS listener and this front at once; a diagnosis of the
front ends in tls_untrusted and shows the chain with fingerprints equal to openssl's; trusting the
root needs the admin's confirmation (a viewer cannot), is an ordinary audited change, and then the
check is up."""
from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from flask import Flask

from console import checks, diagnostics
from console.extensions import db
from console.models import AuditEntry
from console.settings import service
from tests.live_gunicorn import free_port, stop_group


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _issue(tmp: Path) -> tuple[Path, Path]:
    """A new root CA and a server certificate for 127.0.0.1 it signed: (ca.pem, chain+key.pem)."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("Unknown Test Root CA"))
          .issuer_name(_name("Unknown Test Root CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=90))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                         critical=True)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    ca_file, chain_file = tmp / "unknown-ca.pem", tmp / "front.pem"
    ca_file.write_bytes(ca.public_bytes(pem))
    chain_file.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem) + key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return ca_file, chain_file


@pytest.fixture
def front(lab, tmp_path: Path) -> Iterator[dict]:
    """A TLS front (leaf + root presented) to the lab's plain RabbitMQ port."""
    ca_file, chain = _issue(tmp_path)
    port = free_port()
    r = lab["brokers"]["rabbitmq"]
    proc = subprocess.Popen(
        ["socat", f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={chain},verify=0",
         f"TCP:127.0.0.1:{r['plain']}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "the socat front did not listen"
            time.sleep(0.1)
    try:
        yield {"port": port, "ca": ca_file}
    finally:
        stop_group(proc)


def _rabbit(lab: dict, port: int) -> dict:
    r = lab["brokers"]["rabbitmq"]
    return {"enabled": True, "host": "127.0.0.1", "port": port, "tls": True, "username": r["username"],
            "password": r["password"], "vhost": r["vhost"]}


def _status(app: Flask) -> checks.CheckResult:
    with app.app_context():
        return checks.check_settings(service.effective("rabbitmq", reveal=True), 5)


def _openssl_fingerprint(path: Path) -> str:
    out = subprocess.run(["openssl", "x509", "-in", str(path), "-noout", "-fingerprint", "-sha256"],
                         capture_output=True, text=True, check=True).stdout
    return out.strip().split("=", 1)[1]


def test_a_two_ca_truststore_trusts_both_brokers_during_a_rotation(app: Flask, lab, front) -> None:
    lab_ca = Path(lab["certs"]["ca"])
    with app.app_context():
        assert service.apply_changes("rabbitmq", _rabbit(lab, lab["brokers"]["rabbitmq"]["tls"]),
                                     "t").ok
        assert service.add_ca("rabbitmq", lab_ca.read_bytes(), filename="lab-ca.pem", actor="t").ok
        assert service.add_ca("rabbitmq", front["ca"].read_bytes(), filename="new.pem", actor="t").ok
        held = service.truststore_blocks(service.current().state.files["rabbitmq"]["tls_ca"]["certs_pem"])
        assert len(held) == 2
        again = service.add_ca("rabbitmq", lab_ca.read_bytes(), actor="t")      # held already
        assert again.ok and not again.changed and again.warnings
    assert _status(app).status == "up"                          # the lab's listener (old CA)
    with app.app_context():
        assert service.apply_changes("rabbitmq", {"port": front["port"]}, "t").ok
    assert _status(app).status == "up"                          # the front (new CA), same truststore
    with app.app_context():                                     # rotation done: the old CA goes
        old = _openssl_fingerprint(lab_ca)
        assert service.remove_ca("rabbitmq", old, actor="t").ok
        entry = db.session.execute(db.select(AuditEntry).order_by(AuditEntry.id.desc())).scalars().first()
        assert old in entry.summary and "removed CA" in entry.summary
        assert service.remove_ca("rabbitmq", old, actor="t").errors      # gone already
    assert _status(app).status == "up"
    with app.app_context():
        assert service.apply_changes("rabbitmq", {"port": lab["brokers"]["rabbitmq"]["tls"]}, "t").ok
    assert _status(app).cause == "tls_untrusted"


def test_trust_this_ca_after_comparing_its_fingerprint(app: Flask, lab, front, admin_token: str,
                                                       viewer_token: str) -> None:
    client = app.test_client()
    admin = {"Authorization": f"Bearer {admin_token}"}
    with app.app_context():
        assert service.apply_changes("rabbitmq", _rabbit(lab, front["port"]), "t").ok
        assert service.add_ca("rabbitmq", Path(lab["certs"]["ca"]).read_bytes(), actor="t").ok
    assert _status(app).cause == "tls_untrusted"
    found = client.post("/api/v1/brokers/rabbitmq/diagnose?timeout=5", headers=admin).get_json()
    assert found["cause"] == "tls_untrusted", found
    root_print = _openssl_fingerprint(front["ca"])
    chain = {c["subject"]: c for c in found["certificates"]}
    assert chain["CN=Unknown Test Root CA"]["sha256"] == root_print      # openssl's own words
    assert chain["CN=Unknown Test Root CA"]["is_ca"] and not chain["CN=localhost"]["is_ca"]
    trust = f"/api/v1/diagnoses/{found['id']}/trust"

    asked = client.post(trust, json={"sha256": root_print}, headers=admin)    # no confirmation
    assert asked.status_code == 409, asked.data
    shown = asked.get_json()
    assert shown["certificate"]["sha256"] == root_print
    line = shown["openssl"]                          # checks it from "another machine"
    printed = subprocess.run(["bash", "-c", line], capture_output=True, text=True, timeout=30).stdout
    assert root_print in printed, (line, printed)
    assert _status(app).cause == "tls_untrusted"     # nothing changed

    viewer = client.post(trust, json={"sha256": root_print, "confirm": True},
                         headers={"Authorization": f"Bearer {viewer_token}"})
    assert viewer.status_code == 403
    leaf = client.post(trust, json={"sha256": chain["CN=localhost"]["sha256"], "confirm": True},
                       headers=admin)
    assert leaf.status_code == 422 and "leaf" in leaf.get_json()["message"]

    done = client.post(trust, json={"sha256": root_print, "confirm": True}, headers=admin)
    assert done.status_code == 200, done.data
    assert _status(app).status == "up"
    with app.app_context():
        entry = db.session.execute(db.select(AuditEntry).where(AuditEntry.action == "upload")
                                   .order_by(AuditEntry.id.desc())).scalars().first()
        assert root_print in entry.summary and f"diagnosis {found['id']}" in entry.summary
        assert entry.actor and entry.version_id is not None
    held = client.get("/api/v1/brokers/rabbitmq", headers=admin).get_json()
    subjects = [c["subject"] for c in held["settings"]["tls_ca"]["value"]["certificates"]]
    assert "CN=Unknown Test Root CA" in subjects and len(subjects) == 2    # added, not replaced


def test_the_report_page_offers_trust_this_ca_to_an_admin_only(app: Flask, lab, front, admin_client,
                                                               viewer_client) -> None:
    with app.app_context():
        assert service.apply_changes("rabbitmq", _rabbit(lab, front["port"]), "t").ok
        run_id = diagnostics.run_and_store("rabbitmq", 5, actor="t", origin="page").id
    root_print = _openssl_fingerprint(front["ca"])
    page = admin_client.get(f"/settings/messaging/diagnoses/{run_id}/report").get_data(as_text=True)
    assert "Trust this CA" in page and root_print in page and "openssl s_client -connect" in page
    seen = viewer_client.get(f"/settings/messaging/diagnoses/{run_id}/report").get_data(as_text=True)
    assert root_print in seen and "I compared the fingerprint" not in seen
    url = f"/settings/messaging/diagnoses/{run_id}/trust"
    assert viewer_client.post(url, data={"sha256": root_print, "confirm": "1"}).status_code == 403
    unconfirmed = admin_client.post(url, data={"sha256": root_print})
    assert unconfirmed.status_code == 422 and b"Nothing was trusted" in unconfirmed.data
    assert _status(app).cause == "tls_untrusted"
    done = admin_client.post(url, data={"sha256": root_print, "confirm": "1"})
    assert done.status_code == 303, done.data[:500]
    assert _status(app).status == "up"
