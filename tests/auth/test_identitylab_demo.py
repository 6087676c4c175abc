"""The README's way to try sign-in by hand: `scripts/identitylab.py demo DIR` starts the directory and the
provider on loopback and prints the CONSOLE_* lines; a console configured with exactly those lines signs
alice in as an admin through LDAP and through OpenID Connect (as `make run` on 127.0.0.1:8000 would),
and Ctrl-C stops both."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from console.config import coerce
from tests.auth.conftest import provider_login
from tests.conftest import ROOT, make_app

CONSOLE = "http://127.0.0.1:8000"    # the demo registers make run's address; never dialled here


def test_the_demo_prints_a_configuration_that_works(tmp_path: Path) -> None:
    demo = subprocess.Popen([sys.executable, str(ROOT / "scripts" / "identitylab.py"), "demo", str(tmp_path)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert demo.stdout is not None
        lines = []
        for line in demo.stdout:
            lines.append(line.strip())
            if line.startswith("# people"):
                break
        config = {}
        for line in lines:
            if line.startswith("export CONSOLE_"):
                name, _, value = line[len("export "):].partition("=")
                config[name[len("CONSOLE_"):]] = coerce(name[len("CONSOLE_"):], value.strip("'"))
        assert {"LDAP_URL", "OIDC_ISSUER", "ROLE_MAPPING"} <= set(config)
        slapd_pid = int((tmp_path / "ldap" / "slapd.pid").read_text().split()[0])
        app = make_app(tmp_path / "instance", PUBLIC_URL=CONSOLE, **config)
        ldap = app.test_client()
        assert ldap.post("/login", data={"username": "alice", "password": "alice-password"}).status_code == 302
        assert ldap.get("/users").status_code == 200
        oidc = app.test_client()
        start = oidc.get("/login/oidc").headers["Location"]
        callback = provider_login(start, "victor", "victor-password", console=CONSOLE)
        assert isinstance(callback, str) and callback.startswith(CONSOLE + "/login/oidc/callback")
        path = callback[len(CONSOLE):]
        assert oidc.get(path).status_code == 302
        assert oidc.get("/users").status_code == 403          # victor is a viewer
    finally:
        os.kill(demo.pid, signal.SIGINT)
        assert demo.wait(timeout=30) == 0
    try:
        os.kill(slapd_pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive, "the demo's slapd outlived Ctrl-C"
