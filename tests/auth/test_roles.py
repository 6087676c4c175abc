"""Groups → roles (CONSOLE_ROLE_MAPPING, CONSOLE_ROLE_DEFAULT), what Test sign-in explains, the
configuration's check of the mapping, and break-glass without any provider."""
from __future__ import annotations

import pytest

from console.auth.roles import decide, parse_mapping
from console.config import ConfigError, coerce
from tests.conftest import add_user, make_app

MAPPING = "admin=ops, platform;viewer=dev"


def test_admin_wins_over_viewer_and_names_must_match_exactly() -> None:
    assert parse_mapping(MAPPING) == {"admin": ["ops", "platform"], "viewer": ["dev"]}
    assert decide(["dev", "platform"], {"ROLE_MAPPING": MAPPING}).role == "admin"
    assert decide(["dev"], {"ROLE_MAPPING": MAPPING}).role == "viewer"
    wrong_case = decide(["OPS"], {"ROLE_MAPPING": MAPPING})
    assert wrong_case.role is None
    assert any("differ in upper and lower case" in line for line in wrong_case.explanation)
    assert decide([], {"ROLE_MAPPING": MAPPING, "ROLE_DEFAULT": "viewer"}).role == "viewer"
    assert decide(["other"], {"ROLE_MAPPING": None}).role is None
    assert decide(["dev"], {"ROLE_MAPPING": MAPPING}).wanted == ["ops", "platform", "dev"]


@pytest.mark.parametrize("bad", ["admins=ops", "admin", "admin=;viewer=x", "viewer=a=b"])
def test_a_mapping_that_does_not_parse_stops_start_up_naming_the_variable(bad: str) -> None:
    with pytest.raises(ConfigError, match="CONSOLE_ROLE_MAPPING"):
        coerce("ROLE_MAPPING", bad)
    with pytest.raises(ConfigError, match="CONSOLE_ROLE_DEFAULT"):
        coerce("ROLE_DEFAULT", "admin")


def test_local_login_off_leaves_only_the_break_glass_user(tmp_path) -> None:
    app = make_app(tmp_path / "i", LOCAL_LOGIN=False, BREAK_GLASS_USER="rescue")
    add_user(app, "rescue", "admin", "rescue-password-1")
    add_user(app, "someone", "admin", "someone-password-1")
    client = app.test_client()
    assert client.post("/login", data={"username": "someone", "password": "someone-password-1"}
                       ).status_code == 401
    assert "turned off" in client.get("/login").get_data(as_text=True)
    assert client.post("/login", data={"username": "rescue", "password": "rescue-password-1"}
                       ).status_code == 302
