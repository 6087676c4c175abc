"""TLS uploads behind the confirmation (issue 18 item 1, uploads): an upload that affects adapters
asks first; the file, the key file and the passwords typed are held on the server with the pending
change (never rendered back) and "Confirm upload" applies them without choosing the file again —
with and without htmx. A refused upload says plainly that the file must be chosen again."""
from __future__ import annotations

import io
import re

import pki
import pytest
from flask import Flask

from console.settings import service
from tests import test_certs as certs_helpers
from tests.conftest import ADMIN_PASSWORD, add_user, login

HX = {"HX-Request": "true"}
P12_PASSWORD = "p12-Pa55-typed"
KEY_PASSWORD = "key-Pa55-typed"


@pytest.fixture(scope="module")
def material():
    ca = pki.make_ca()
    leaf = pki.issue(ca, "console-client", client=True)
    return {"ca": ca, "leaf": leaf,
            "p12": certs_helpers.make_p12(leaf, [ca], P12_PASSWORD),
            "cert_pem": certs_helpers.pem(leaf),
            "key_pem": certs_helpers.pkcs8_pem(leaf, KEY_PASSWORD),
            "ca_pem": certs_helpers.pem(ca)}


@pytest.fixture
def fleet(app: Flask, admin_client):
    """MQTT enabled with one adapter created on its current settings: a TLS change affects it."""
    with app.app_context():
        assert service.apply_changes("mqtt", {"enabled": True}, "seed", confirm=True).errors == {}
    assert admin_client.post("/api/v1/services", json={"name": "edge", "protocols": ["mqtt"]}).status_code == 201
    assert admin_client.post("/api/v1/adapters", json={"name": "m1", "service": "edge"}).status_code == 201
    return app


def _stored(app: Flask, slot: str) -> dict | None:
    with app.app_context():
        return service.current().state.files.get("mqtt", {}).get(slot)


def _token(body: str) -> str:
    return re.search(r'name="pending" value="([^"]+)"', body).group(1)


def _asks(response, *, secrets: tuple[str, ...], names: tuple[str, ...]) -> str:
    body = response.get_data(as_text=True)
    assert response.status_code == 409, body[:2000]
    assert "Confirm upload" in body and "kept on the server (not shown)" in body
    for secret in secrets:
        assert secret not in body
    for name in names:
        assert name in body
    return _token(body)


@pytest.mark.parametrize("headers", [HX, {}], ids=["htmx", "no-js"])
def test_a_pkcs12_and_its_password_survive_the_confirmation(fleet: Flask, admin_client, material,
                                                            headers) -> None:
    url = "/settings/messaging/mqtt/files/tls_cert"
    asked = admin_client.post(url, headers=headers, content_type="multipart/form-data", data={
        "file": (io.BytesIO(material["p12"]), "client.p12"), "password": P12_PASSWORD})
    token = _asks(asked, secrets=(P12_PASSWORD,), names=("client.p12", "the keystore password"))
    assert _stored(fleet, "tls_cert") is None
    done = admin_client.post(url, headers=headers, data={"pending": token, "confirm": "1"})
    assert done.status_code in (200, 302), done.get_data(as_text=True)[:2000]
    stored = _stored(fleet, "tls_cert")
    assert stored is not None and stored["filename"] == "client.p12" and stored["key_ciphertext"]
    page = admin_client.get("/settings/messaging/mqtt").get_data(as_text=True)
    assert "Uploaded client.p12." in (page if not headers else done.get_data(as_text=True))
    again = admin_client.post(url, headers=headers, data={"pending": token, "confirm": "1"})
    assert again.status_code == 422 and "Choose a file" in again.get_data(as_text=True)   # used up


@pytest.mark.parametrize("headers", [HX, {}], ids=["htmx", "no-js"])
def test_a_certificate_a_key_file_and_its_password_survive(fleet: Flask, admin_client, material,
                                                          headers) -> None:
    url = "/settings/messaging/mqtt/files/tls_cert"
    asked = admin_client.post(url, headers=headers, content_type="multipart/form-data", data={
        "file": (io.BytesIO(material["cert_pem"]), "client.crt"),
        "key_file": (io.BytesIO(material["key_pem"]), "client.key"), "key_password": KEY_PASSWORD})
    token = _asks(asked, secrets=(KEY_PASSWORD, "PRIVATE KEY"),
                  names=("client.crt and client.key", "the key password"))
    done = admin_client.post(url, headers=headers, data={"pending": token, "confirm": "1"})
    assert done.status_code in (200, 302), done.get_data(as_text=True)[:2000]
    with fleet.app_context():
        key = service.effective("mqtt", reveal=True).fields["tls_key"].value
    assert certs_helpers.same_key(key, material["leaf"])


def test_a_truststore_survives_and_a_later_rotation_needs_no_confirmation(fleet: Flask, admin_client,
                                                                         material, pki) -> None:
    url = "/settings/messaging/mqtt/files/tls_ca"
    first = admin_client.post(url, headers=HX, content_type="multipart/form-data",
                              data={"file": (pki["ca.crt"].open("rb"), "ca.crt")})
    token = _asks(first, secrets=(), names=("ca.crt",))
    assert admin_client.post(url, headers=HX, data={"pending": token, "confirm": "1"}).status_code == 200
    assert _stored(fleet, "tls_ca")["filename"] == "ca.crt"
    added = admin_client.post(url, headers=HX, content_type="multipart/form-data", data={
        "file": (io.BytesIO(material["ca_pem"]), "next-ca.crt"), "add": "1"})
    assert added.status_code == 200 and "Uploaded next-ca.crt." in added.get_data(as_text=True)
    with fleet.app_context():
        assert len(service.truststore_blocks(_stored(fleet, "tls_ca")["certs_pem"])) == 2


def test_a_held_upload_is_nobody_elses(fleet: Flask, admin_client, material) -> None:
    url = "/settings/messaging/mqtt/files/tls_cert"
    asked = admin_client.post(url, headers=HX, content_type="multipart/form-data", data={
        "file": (io.BytesIO(material["p12"]), "client.p12"), "password": P12_PASSWORD})
    token = _asks(asked, secrets=(P12_PASSWORD,), names=("client.p12",))
    add_user(fleet, "other", "admin", ADMIN_PASSWORD)
    other = login(fleet.test_client(), "other", ADMIN_PASSWORD)
    refused = other.post(url, headers=HX, data={"pending": token, "confirm": "1"})
    assert refused.status_code == 422 and _stored(fleet, "tls_cert") is None
    elsewhere = admin_client.post("/settings/messaging/mqtt/files/tls_ca", headers=HX,
                                  data={"pending": token, "confirm": "1"})
    assert elsewhere.status_code == 422 and _stored(fleet, "tls_ca") is None


@pytest.mark.parametrize("headers", [HX, {}], ids=["htmx", "no-js"])
def test_a_refused_upload_says_to_choose_the_file_again(fleet: Flask, admin_client, material,
                                                        headers) -> None:
    refused = admin_client.post("/settings/messaging/mqtt/files/tls_cert", headers=headers,
                                content_type="multipart/form-data", data={
                                    "file": (io.BytesIO(material["p12"]), "client.p12"),
                                    "password": "wrong", "confirm": "1"})
    body = refused.get_data(as_text=True)
    assert refused.status_code == 422 and "choose the file again" in body
    assert 'value="wrong"' not in body and _stored(fleet, "tls_cert") is None


def test_a_refused_staged_certificate_says_to_choose_the_file_again(fleet: Flask, admin_client,
                                                                   material) -> None:
    refused = admin_client.post("/settings/messaging/mqtt/staged-certificate", headers=HX,
                                content_type="multipart/form-data", data={
                                    "file": (io.BytesIO(material["p12"]), "next.p12"),
                                    "password": "wrong"})
    assert refused.status_code == 422 and "choose the file again" in refused.get_data(as_text=True)
