"""Identity lab: real identity providers on 127.0.0.1 for the console's sign-in tests.

    python scripts/identitylab.py install      # Debian slapd + ldap-utils, npm oidc-provider (idempotent)
    python scripts/identitylab.py demo DIR     # start both, print the console's CONSOLE_* lines; Ctrl-C stops

- LDAP: Debian's `slapd` (OpenLDAP), an own instance in DIR (never the machine's service), seeded
  offline with `slapadd`: suffix dc=example,dc=test, people under ou=people (alice: admin group
  "console-admins", victor: viewer group "console-viewers", nora: no group),
  groups (groupOfNames) under ou=groups, a search account cn=reader, the root DN
  cn=admin. A plain listener and an LDAPS listener (certificate from scripts/pki.py, CA in DIR/certs).
- OpenID Connect: npm's `oidc-provider` (panva, a certified OpenID provider library), run by `node` with
  scripts/oidc-provider.mjs: clients, accounts (with passwords and groups) and the signing key come from
  a JSON file the harness writes; a real login form checks the password.

Every port is chosen free at start; every process is stopped by its own PID. Importable API (pytest):
`install()`, `start_ldap(dir) -> Ldap`, `start_oidc(dir, redirect_uris, ...) -> Oidc`, `stop(pid)`.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUFFIX = "dc=example,dc=test"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "directory-admin-secret"
READER_DN = f"cn=reader,{SUFFIX}"
READER_PASSWORD = "reader-secret"
OIDC_PROVIDER_VERSION = "9.13.3"
NPM_DIR = Path(tempfile.gettempdir()) / "messaging-console-identity-npm"
# name → (password, groups): the people of the directory and of the OpenID provider
PEOPLE: dict[str, tuple[str, tuple[str, ...]]] = {
    "alice": ("alice-password", ("console-admins", "console-viewers")),
    "victor": ("victor-password", ("console-viewers",)),
    "nora": ("nora-password", ()),
}
GROUPS = ("console-admins", "console-viewers", "unrelated")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, deadline: float = 15.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {deadline} s")


def install() -> None:
    """slapd, ldap-utils (Debian) and oidc-provider (npm), each only when missing."""
    need = [pkg for binary, pkg in (("/usr/sbin/slapd", "slapd"), ("/usr/bin/ldapmodify", "ldap-utils"),
                                    ("/usr/bin/node", "nodejs"), ("/usr/bin/npm", "npm"))
            if not os.path.exists(binary)]
    if need:
        sudo = [] if os.geteuid() == 0 else ["sudo"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", *need], check=True, env=env,
                       stdout=subprocess.DEVNULL)
    marker = NPM_DIR / "node_modules" / "oidc-provider" / "package.json"
    if not marker.exists() or json.loads(marker.read_text())["version"] != OIDC_PROVIDER_VERSION:
        NPM_DIR.mkdir(parents=True, exist_ok=True)
        (NPM_DIR / "package.json").write_text(json.dumps(
            {"name": "console-identity-lab", "private": True, "type": "module",
             "dependencies": {"oidc-provider": OIDC_PROVIDER_VERSION}}))
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error"],
                       cwd=NPM_DIR, check=True, stdout=subprocess.DEVNULL)


def stop(pid: int | None) -> None:
    """Stop one process of the lab by its PID (and wait for it)."""
    if not pid:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


# ---------------------------------------------------------------- LDAP

@dataclass
class Ldap:
    """A running slapd: ports, the CA of its certificate, its PID."""

    dir: Path
    port: int
    tls_port: int
    ca_file: Path
    pid: int = 0
    conf: Path = field(default_factory=Path)

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    def env(self) -> dict[str, str]:
        """The console's CONSOLE_LDAP_* variables for this directory."""
        return {"CONSOLE_LDAP_URL": self.url, "CONSOLE_LDAP_BIND_DN": READER_DN,
                "CONSOLE_LDAP_BIND_PASSWORD": READER_PASSWORD,
                "CONSOLE_LDAP_USER_BASE": f"ou=people,{SUFFIX}",
                "CONSOLE_LDAP_GROUP_BASE": f"ou=groups,{SUFFIX}"}

    def modify(self, ldif: str) -> None:
        """Apply an LDIF change as the root DN (ldapmodify), e.g. to take someone out of a group."""
        subprocess.run(["ldapmodify", "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD],
                       input=ldif, text=True, check=True, capture_output=True)

    def remove_member(self, group: str, name: str) -> None:
        self.modify(f"dn: cn={group},ou=groups,{SUFFIX}\nchangetype: modify\ndelete: member\n"
                    f"member: {person_dn(name)}\n")

    def add_member(self, group: str, name: str) -> None:
        self.modify(f"dn: cn={group},ou=groups,{SUFFIX}\nchangetype: modify\nadd: member\n"
                    f"member: {person_dn(name)}\n")

    def stop(self) -> None:
        stop(self.pid)
        self.pid = 0

    def start(self) -> None:
        """Start (again) on the same ports and data."""
        subprocess.run(["/usr/sbin/slapd", "-f", str(self.conf), "-h",
                        f"ldap://127.0.0.1:{self.port}/ ldaps://127.0.0.1:{self.tls_port}/"],
                       check=True, capture_output=True)
        _wait_port(self.port)
        _wait_port(self.tls_port)
        self.pid = int((self.dir / "slapd.pid").read_text().split()[0])


def person_dn(name: str) -> str:
    escaped = name.replace("\\", "\\5c").replace("*", "\\2a").replace("(", "\\28").replace(")", "\\29")
    return f"uid={escaped},ou=people,{SUFFIX}"


def _ssha(password: str) -> str:
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _seed() -> str:
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example",
        f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people",
        f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups",
        f"dn: {READER_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n"
        f"cn: reader\nuserPassword: {_ssha(READER_PASSWORD)}",
    ]
    for name, (password, _groups) in PEOPLE.items():
        entries.append(f"dn: {person_dn(name)}\nobjectClass: inetOrgPerson\nuid: {name}\ncn: {name}\n"
                       f"sn: {name}\nmail: {name.strip('*')}@example.test\n"
                       f"userPassword: {_ssha(password)}")
    for group in GROUPS:
        members = [person_dn(n) for n, (_p, groups) in PEOPLE.items() if group in groups]
        # groupOfNames needs a member: the search account is in every group (it is no person)
        lines = "".join(f"\nmember: {m}" for m in [READER_DN, *members])
        entries.append(f"dn: cn={group},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {group}"
                       + lines)
    return "\n\n".join(entries) + "\n"


def start_ldap(directory: str | os.PathLike[str]) -> Ldap:
    """A fresh, seeded slapd in `directory` on two free ports (plain and LDAPS)."""
    sys.path.insert(0, str(HERE))
    import pki

    base = Path(directory)
    shutil.rmtree(base, ignore_errors=True)
    (base / "db").mkdir(parents=True)
    certs = base / "certs"
    certs.mkdir()
    ca = pki.make_ca("Identity Lab Test CA")
    server = pki.issue(ca, "localhost", ("localhost",), ("127.0.0.1",))
    (certs / "ca.crt").write_bytes(ca.cert_pem())
    (certs / "server.crt").write_bytes(server.cert_pem())
    (certs / "server.key").write_bytes(server.key_pem())
    root_hash = _ssha(ROOT_PASSWORD)
    conf = base / "slapd.conf"
    conf.write_text("\n".join([
        *(f"include /etc/ldap/schema/{s}.schema" for s in ("core", "cosine", "inetorgperson", "nis")),
        f"pidfile {base / 'slapd.pid'}", "modulepath /usr/lib/ldap", "moduleload back_mdb",
        f"TLSCACertificateFile {certs / 'ca.crt'}", f"TLSCertificateFile {certs / 'server.crt'}",
        f"TLSCertificateKeyFile {certs / 'server.key'}",
        "database mdb", f'suffix "{SUFFIX}"', f'rootdn "{ROOT_DN}"', f"rootpw {root_hash}",
        f"directory {base / 'db'}", "maxsize 10485760",
        "access to attrs=userPassword by self write by anonymous auth by * none",
        "access to * by * read", ""]))
    seed = base / "seed.ldif"
    seed.write_text(_seed())
    subprocess.run(["/usr/sbin/slapadd", "-f", str(conf), "-l", str(seed)], check=True,
                   capture_output=True)
    lab = Ldap(base, free_port(), free_port(), certs / "ca.crt", conf=conf)
    lab.start()
    return lab


# ---------------------------------------------------------------- OpenID Connect

@dataclass
class Oidc:
    """A running oidc-provider: issuer, the console's client, its PID."""

    dir: Path
    port: int
    config: Path
    client_id: str = "console"
    client_secret: str = "console-client-secret"
    pid: int = 0
    log: Path = field(default_factory=Path)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {"CONSOLE_OIDC_ISSUER": self.issuer, "CONSOLE_OIDC_CLIENT_ID": self.client_id,
                "CONSOLE_OIDC_CLIENT_SECRET": self.client_secret}

    def start(self) -> None:
        node_path = str(NPM_DIR / "node_modules")
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(["node", str(HERE / "oidc-provider.mjs"), str(self.config)],
                                    stdout=log, stderr=subprocess.STDOUT, cwd=NPM_DIR,
                                    env={**os.environ, "NODE_PATH": node_path},
                                    start_new_session=True)
        self.pid = proc.pid
        _wait_port(self.port)

    def stop(self) -> None:
        stop(self.pid)
        self.pid = 0

    def rotate_key(self) -> None:
        """Restart with a new signing key (a new `kid`): tokens signed before no longer verify."""
        data = json.loads(self.config.read_text())
        data["jwks"] = {"keys": [_new_jwk()]}
        self.config.write_text(json.dumps(data))
        self.stop()
        self.start()


def _new_jwk() -> dict[str, str]:
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    numbers = key.private_numbers()

    def b64(value: int) -> str:
        raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    public = numbers.public_numbers
    return {"kty": "RSA", "kid": os.urandom(6).hex(), "alg": "RS256", "use": "sig",
            "n": b64(public.n), "e": b64(public.e), "d": b64(numbers.d), "p": b64(numbers.p),
            "q": b64(numbers.q), "dp": b64(numbers.dmp1), "dq": b64(numbers.dmq1),
            "qi": b64(numbers.iqmp)}


def start_oidc(directory: str | os.PathLike[str], redirect_uris: list[str],
               post_logout_redirect_uris: list[str] | None = None, *, clock_offset: int = 0,
               id_token_ttl: int | None = None) -> Oidc:
    """oidc-provider on a free port; clients "console" (the redirect URIs given) and "other-app"
    (another audience, same redirect URIs). `clock_offset` seconds move the provider's clock and
    `id_token_ttl` shortens its ID tokens' lives (together: tokens expired when they arrive)."""
    install()
    base = Path(directory)
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = base / "oidc.json"
    lab = Oidc(base, port, config, log=base / "oidc.log")
    clients = [{"client_id": cid, "client_secret": secret, "redirect_uris": redirect_uris,
                "post_logout_redirect_uris": post_logout_redirect_uris or [],
                "grant_types": ["authorization_code"], "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic"}
               for cid, secret in ((lab.client_id, lab.client_secret),
                                   ("other-app", "other-app-secret"))]
    accounts = {name: {"password": password, "groups": list(groups),
                       "email": f"{name.strip('*')}@example.test"}
                for name, (password, groups) in PEOPLE.items()}
    config.write_text(json.dumps({"issuer": lab.issuer, "port": port, "clients": clients,
                                  "accounts": accounts, "jwks": {"keys": [_new_jwk()]},
                                  "cookie_keys": [os.urandom(16).hex()],
                                  "clock_offset_seconds": clock_offset, "id_token_ttl": id_token_ttl}))
    lab.start()
    return lab


def main(argv: list[str]) -> int:
    if argv[:1] == ["install"]:
        install()
        print("identity lab installed: slapd, ldap-utils, node, oidc-provider " + OIDC_PROVIDER_VERSION)
        return 0
    if len(argv) == 2 and argv[0] == "demo":
        base = Path(argv[1])
        install()
        ldap = start_ldap(base / "ldap")
        oidc = start_oidc(base / "oidc", ["http://127.0.0.1:8000/login/oidc/callback"],
                          ["http://127.0.0.1:8000/login"])
        for key, value in {**ldap.env(), **oidc.env()}.items():
            print(f"export {key}={value}")
        print("export CONSOLE_ROLE_MAPPING='admin=console-admins;viewer=console-viewers'")
        print("# people: " + ", ".join(f"{n}/{p}" for n, (p, _g) in PEOPLE.items()), flush=True)
        try:
            signal.pause()
        except KeyboardInterrupt:
            pass
        finally:
            ldap.stop()
            oidc.stop()
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
