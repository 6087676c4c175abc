"""A URL urllib cannot split (an unclosed "[" is "Invalid IPv6 URL", a port past 65535 "Port out of
range" — both a bare ValueError) is a 400/422 naming the field, never a 500: NATS servers, the AMQP
and NATS URLs of the environment, callback URLs and CONSOLE_LDAP_URL."""
from __future__ import annotations

import pytest
from flask.testing import FlaskClient

from console.config import ConfigError, coerce
from console.messaging.values import (
    Invalid,
    parse_amqp_query,
    parse_amqp_url,
    parse_nats_servers,
    parse_nats_url,
)

BAD = ("[", "nats://[", "h:99999", "tls://[::1", "a,[")


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("servers", BAD)
def test_patch_nats_servers_that_urllib_cannot_split_is_400_naming_the_field(
        client: FlaskClient, admin_token: str, servers: str) -> None:
    response = client.patch("/api/v1/brokers/nats", headers=_auth(admin_token),
                            json={"servers": servers})
    assert response.status_code in (400, 422), (servers, response.status_code, response.data[:300])
    body = response.get_json()
    assert "servers" in body.get("errors", {}), body
    assert client.get("/api/v1/brokers/nats", headers=_auth(admin_token)).get_json()[
        "settings"]["servers"]["value"] is None


@pytest.mark.parametrize(("parse", "raw"), [
    (parse_nats_servers, "["), (parse_nats_url, "nats://[x"), (parse_nats_url, "nats://h:70000"),
    (parse_amqp_url, "amqp://[x"), (parse_amqp_url, "amqp://h:70000/"),
    (parse_amqp_query, "amqp://[x?heartbeat=5")])
def test_the_parsers_raise_invalid_not_a_bare_value_error(parse, raw: str) -> None:
    with pytest.raises(Invalid):
        parse(raw)


@pytest.mark.parametrize("url", ["http://[", "http://[::1", "https://h:99999/x"])
def test_callback_urls_urllib_cannot_split_are_refused_naming_the_field(
        client: FlaskClient, admin_token: str, url: str) -> None:
    response = client.post("/api/v1/services", headers=_auth(admin_token),
                           json={"name": "edge", "protocols": ["mqtt"], "callback_url": url})
    assert response.status_code in (400, 422), (url, response.status_code, response.data[:300])
    assert "callback_url" in response.get_json()["errors"]


@pytest.mark.parametrize("url", ["ldap://[", "ldaps://h:99999", "ldap://h:0"])
def test_an_ldap_url_urllib_cannot_split_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="CONSOLE_LDAP_URL"):
        coerce("LDAP_URL", url)
    assert coerce("LDAP_URL", "ldaps://[::1]:636/dc=example") == "ldaps://[::1]:636/dc=example"
