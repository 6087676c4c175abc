"""The Settings → Messaging page: rendering, htmx fragments, saving, errors in place, locks, uploads."""
from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient

from console.brokers import PROTOCOLS
from console.messaging.schema import SCHEMA

HX = {"HX-Request": "true"}


def test_login_required(client: FlaskClient) -> None:
    response = client.get("/settings/messaging")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_wrong_password_is_refused(client: FlaskClient, admin_client) -> None:
    response = client.post("/login", data={"username": "admin", "password": "nope"})
    assert response.status_code == 401 and b"Wrong username or password" in response.data


def test_page_shows_every_field_with_source_and_change_kind(admin_client: FlaskClient) -> None:
    for protocol in PROTOCOLS:
        html = admin_client.get(f"/settings/messaging/{protocol}").get_data(as_text=True)
        assert 'src="/static/htmx-2.0.11.min.js"' in html and "cdn" not in html.lower()
        assert html.count('class="card protocol"') == 1, "one protocol at a time"
        section = html[html.index(f'<section id="{protocol}"'):]
        section = section[:section.index("</section>")]
        for f in SCHEMA[protocol]:
            if f.name == "tls_key":
                continue
            assert f'data-field="{f.name}"' in section or f'data-slot="{f.name}"' in section, f.name
        assert "installation-time" in section and "runtime" in section
        # each reason once, in its group's details, not under every field
        groups = section.split("<fieldset")[1:]
        assert all(g.count("<li>Adapters get the broker address copied into them") <= 1 for g in groups)
        assert section.count("<li>Adapters get the broker address copied into them") >= 1
        assert 'class="reason"' not in section
        assert '<details class="reasons">' in section
        assert section.count('class="src src-default"') > 5
        for other in PROTOCOLS:    # the overview and the protocol list link every protocol's own page
            assert html.count(f'href="/settings/messaging/{other}"') >= 2


def test_the_page_opens_on_the_first_protocol_in_priority_order(admin_client: FlaskClient) -> None:
    admin_client.post("/settings/messaging/priorities", data={"move": "kafka:down"})
    html = admin_client.get("/settings/messaging").get_data(as_text=True)
    assert html.count('class="card protocol"') == 1 and '<section id="mqtt"' in html
    assert re.search(r'<a href="/settings/messaging/mqtt" aria-current="page">MQTT', html)
    assert admin_client.get("/settings/messaging/nosuch").status_code == 404


def test_fields_a_node_list_overrides_are_greyed_with_a_note(admin_client: FlaskClient) -> None:
    admin_client.post("/settings/messaging/pulsar", headers=HX,
                      data={"url": "pulsar://p1:6650,p2:6650"})
    html = admin_client.get("/settings/messaging/pulsar").get_data(as_text=True)
    for name in ("host", "port"):
        row = html[html.index(f'data-field="{name}"') - 60:]
        row = row[:row.index("</div>\n</div>") if "</div>\n</div>" in row else 1500]
        assert "overridden" in html[html.index(f'data-field="{name}"') - 60:html.index(f'data-field="{name}"')]
        assert "Not used while Service URL is set" in row or "Not used while" in row
    kafka = admin_client.get("/settings/messaging/kafka").get_data(as_text=True)
    assert "Not used while" not in kafka
    admin_client.post("/settings/messaging/kafka", headers=HX, data={"bootstrap_servers": "k1:9092,k2:9092"})
    kafka = admin_client.get("/settings/messaging/kafka").get_data(as_text=True)
    assert kafka.count("Not used while") == 2 and 'class="field  overridden"' in kafka


def test_protocol_form_carries_the_unsaved_changes_marker(admin_client: FlaskClient) -> None:
    html = admin_client.get("/settings/messaging/nats").get_data(as_text=True)
    assert 'class="unsaved-marker" hidden' in html and "data-track-unsaved" in html
    assert 'src="/static/unsaved.js"' in html
    assert admin_client.get("/static/unsaved.js").status_code == 200


def test_htmx_save_returns_the_section_fragment(admin_client: FlaskClient) -> None:
    response = admin_client.post("/settings/messaging/mqtt", headers=HX,
                                 data={"host": "127.0.0.1", "port": "17999", "enabled": ["false", "true"],
                                       "save_anyway": "1"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<html" not in html
    assert '<section id="mqtt"' in html and "Saved: enabled, host, port." in html
    assert 'value="127.0.0.1"' in html and "badge on" in html


def test_errors_shown_in_place_with_submitted_values_and_nothing_saved(admin_client) -> None:
    response = admin_client.post("/settings/messaging/kafka", headers=HX,
                                 data={"host": "bad host", "port": "99999", "client_id": "new-id"})
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert "Nothing was saved: correct the 2 fields" in html
    assert re.search(r'id="kafka-host-error"[^>]*>.*not a valid host name', html)
    assert re.search(r'id="kafka-port-error"[^>]*>99999 is outside 1–65535', html)
    assert 'value="bad host"' in html and 'value="new-id"' in html
    api = admin_client.get("/api/v1/brokers/kafka").get_json()["settings"]
    assert api["client_id"]["source"] == "default"


def test_non_htmx_post_redirects_or_renders_full_page(admin_client: FlaskClient) -> None:
    ok = admin_client.post("/settings/messaging/nats", data={"host": "nats.local"})
    assert ok.status_code == 302 and ok.headers["Location"].endswith("/settings/messaging/nats")
    bad = admin_client.post("/settings/messaging/nats", data={"port": "x"})
    assert bad.status_code == 422 and "<html" in bad.get_data(as_text=True)


def test_checkbox_off_is_saved(admin_client: FlaskClient) -> None:
    admin_client.post("/settings/messaging/mqtt", headers=HX, data={"enabled": ["false", "true"]})
    admin_client.post("/settings/messaging/mqtt", headers=HX, data={"enabled": ["false"]})
    assert admin_client.get("/api/v1/brokers/mqtt").get_json()["enabled"] is False


def test_env_set_field_is_locked_and_shadowing_warned(admin_client, monkeypatch) -> None:
    admin_client.post("/settings/messaging/kafka", headers=HX, data={"host": "saved-kafka"})
    monkeypatch.setenv("SP_KAFKA_HOST", "env-kafka")
    html = admin_client.get("/settings/messaging").get_data(as_text=True)
    field = html[html.index('id="kafka-host"') - 400:html.index('id="kafka-host"') + 200]
    assert "env SP_KAFKA_HOST" in html and 'value="env-kafka"' in field and "disabled" in field
    assert "The saved value is shadowed by SP_KAFKA_HOST." in html


def test_alias_conflict_is_flagged_on_the_page(admin_client, monkeypatch) -> None:
    monkeypatch.setenv("KAFKA_BROKERS", "a:9092")
    monkeypatch.setenv("SP_KAFKA_BOOTSTRAP_SERVERS", "b:9092")
    html = admin_client.get("/settings/messaging").get_data(as_text=True)
    assert "KAFKA_BROKERS also sets bootstrap_servers; SP_KAFKA_BOOTSTRAP_SERVERS wins." in html


def test_secret_fields_show_set_and_can_be_replaced_and_cleared(admin_client) -> None:
    admin_client.post("/settings/messaging/nats", headers=HX,
                      data={"username": "svc", "password": "hunter2-secret"})
    html = admin_client.get("/settings/messaging/nats", headers=HX).get_data(as_text=True)
    assert "hunter2-secret" not in html
    pw = html[html.index('data-field="password"'):]
    assert ">set<" in pw[:800] and 'name="password__clear"' in pw[:1500]
    admin_client.post("/settings/messaging/nats", headers=HX,
                      data={"password__clear": "1", "username": ""})
    api = admin_client.get("/api/v1/brokers/nats").get_json()["settings"]
    assert api["password"]["value"] == {"set": False}


def test_priorities_reorder_in_place(admin_client: FlaskClient) -> None:
    response = admin_client.post("/settings/messaging/priorities", headers=HX,
                                 data={"move": "rabbitmq:up"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and html.lstrip().startswith('<section id="priorities"')
    order = re.findall(r'<li data-protocol="(\w+)"', html)
    assert order == ["kafka", "mqtt", "nats", "rabbitmq", "pulsar"]
    assert "Priority saved." in html


def test_priorities_full_order_and_bad_input(admin_client: FlaskClient) -> None:
    good = admin_client.post("/settings/messaging/priorities", headers=HX,
                             data={"order": ["nats", "mqtt", "kafka", "pulsar", "rabbitmq"]})
    assert good.status_code == 200
    bad = admin_client.post("/settings/messaging/priorities", headers=HX,
                            data={"order": ["nats", "nats"]})
    assert bad.status_code == 422 and "exactly once" in bad.get_data(as_text=True)
    junk = admin_client.post("/settings/messaging/priorities", headers=HX, data={"move": "x:sideways"})
    assert junk.status_code == 422


def test_env_prioritized_protocol_shown(admin_client, monkeypatch) -> None:
    monkeypatch.setenv("SP_PRIORITIZED_PROTOCOL", "mqtt")
    html = admin_client.get("/settings/messaging").get_data(as_text=True)
    assert "SP_PRIORITIZED_PROTOCOL=mqtt moves MQTT to the top" in html
    assert re.findall(r'<li data-protocol="(\w+)"', html)[0] == "mqtt"


def test_upload_through_the_page_lists_certificates(admin_client, pki) -> None:
    data = {"file": (pki["ca.crt"].open("rb"), "ca.crt")}
    response = admin_client.post("/settings/messaging/rabbitmq/files/tls_ca", headers=HX, data=data,
                                 content_type="multipart/form-data")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and "Uploaded ca.crt." in html
    assert "CN=Messaging Console Test CA" in html and re.search(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", html)


def test_expiring_and_expired_certificates_are_marked(admin_client, pki) -> None:
    admin_client.post("/settings/messaging/mqtt/files/tls_ca", headers=HX,
                      data={"file": (pki["soon.crt"].open("rb"), "soon.crt")},
                      content_type="multipart/form-data")
    admin_client.post("/settings/messaging/nats/files/tls_ca", headers=HX,
                      data={"file": (pki["expired.crt"].open("rb"), "expired.crt")},
                      content_type="multipart/form-data")
    html = admin_client.get("/settings/messaging/mqtt").get_data(as_text=True)
    assert 'class="cert-expiring"' in html and "expires in" in html
    html = admin_client.get("/settings/messaging/nats").get_data(as_text=True)
    assert 'class="cert-expired"' in html and ">expired<" in html


def test_bad_upload_shows_error_and_saves_nothing(admin_client) -> None:
    response = admin_client.post("/settings/messaging/mqtt/files/tls_ca", headers=HX,
                                 data={"file": (__import__("io").BytesIO(b"junk"), "x.pem")},
                                 content_type="multipart/form-data")
    assert response.status_code == 422 and "None uploaded." in response.get_data(as_text=True)
    missing = admin_client.post("/settings/messaging/mqtt/files/tls_ca", headers=HX, data={},
                                content_type="multipart/form-data")
    assert missing.status_code == 422 and "Choose a file" in missing.get_data(as_text=True)


def test_remove_uploaded_file(admin_client, pki) -> None:
    admin_client.post("/settings/messaging/mqtt/files/tls_ca", headers=HX,
                      data={"file": (pki["ca.crt"].open("rb"), "ca.crt")},
                      content_type="multipart/form-data")
    response = admin_client.post("/settings/messaging/mqtt/files/tls_ca", headers=HX,
                                 data={"delete": "1"})
    assert "Removed." in response.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/settings/messaging/jms", "/settings/messaging/kafka/files/x"])
def test_unknown_protocol_or_slot_is_404(admin_client, path: str) -> None:
    assert admin_client.post(path, headers=HX).status_code == 404


def test_viewer_sees_masked_read_only_page(viewer_client: FlaskClient) -> None:
    html = viewer_client.get("/settings/messaging").get_data(as_text=True)
    assert "Save Kafka" not in html and 'type="file"' not in html and 'name="move"' not in html
    assert 'id="kafka-host"' in html and "disabled" in html[html.index('id="kafka-host"'):][:300]
    assert viewer_client.post("/settings/messaging/kafka", data={"host": "x"}).status_code == 403


def form_as_rendered(admin_client: FlaskClient, protocol: str) -> dict[str, list[str]]:
    """The section form's fields exactly as the browser would submit them, untouched."""
    html = admin_client.get(f"/settings/messaging/{protocol}", headers=HX).get_data(as_text=True)
    form = html[:html.index('<div class="files">')]
    data: dict[str, list[str]] = {}
    for tag in re.findall(r"<input[^>]*>", form):
        name = re.search(r'name="([^"]+)"', tag)
        if not name or "disabled" in tag or name.group(1) == "csrf_token":
            continue
        value = re.search(r'value="([^"]*)"', tag)
        if 'type="checkbox"' in tag and "checked" not in tag:
            continue
        data.setdefault(name.group(1), []).append(value.group(1) if value else "")
    for select in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', form, re.S):
        chosen = re.search(r'<option value="([^"]*)" selected', select[1])
        data[select[0]] = [chosen.group(1) if chosen else ""]
    return data


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_resubmitting_an_untouched_form_changes_nothing(admin_client, protocol: str) -> None:
    data = form_as_rendered(admin_client, protocol)
    assert "host" in data and "enabled" in data
    response = admin_client.post(f"/settings/messaging/{protocol}", headers=HX, data=data)
    assert response.status_code == 200
    assert "No changes." in response.get_data(as_text=True)


def test_the_page_adds_a_ca_to_the_truststore_and_removes_one(app, admin_client, viewer_client,
                                                               pki) -> None:
    """Issue 20 item 3: uploading can add to the truststore (a rotation) instead of replacing it,
    and one CA can be removed while the others stay."""
    import io

    from console.settings import service as settings_service

    url = "/settings/messaging/mqtt/files/tls_ca"
    first = admin_client.post(url, data={"file": (io.BytesIO(pki["ca.crt"].read_bytes()), "ca.crt")})
    assert first.status_code in (200, 302, 303), first.data[:300]
    page = admin_client.get("/settings/messaging/mqtt").get_data(as_text=True)
    assert "Add to the CAs it holds" in page
    added = admin_client.post(url, data={"add": "1", "file": (
        io.BytesIO(pki["other-ca.crt"].read_bytes()), "other.crt")}, headers={"HX-Request": "true"})
    assert added.status_code == 200, added.data[:300]
    with app.app_context():
        held = settings_service.truststore_blocks(
            settings_service.current().state.files["mqtt"]["tls_ca"]["certs_pem"])
        assert len(held) == 2
        gone = held[0][0].sha256
    assert "Remove this CA" in added.get_data(as_text=True)
    remove = "/settings/messaging/mqtt/truststore/remove"
    assert viewer_client.post(remove, data={"sha256": gone}).status_code == 403
    bad = admin_client.post(remove, data={"sha256": "00"}, headers={"HX-Request": "true"})
    assert bad.status_code == 422
    done = admin_client.post(remove, data={"sha256": gone}, headers={"HX-Request": "true"})
    assert done.status_code == 200 and "the others stay trusted" in done.get_data(as_text=True)
    with app.app_context():
        left = settings_service.truststore_blocks(
            settings_service.current().state.files["mqtt"]["tls_ca"]["certs_pem"])
        assert [info.sha256 for info, _ in left] == [held[1][0].sha256]
