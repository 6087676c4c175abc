"""LDAP sign-in with ldap3 (imported on first use): find the user with the search account (or
anonymously), bind as the user with the password typed, find the user's groups by search. Everything
typed is escaped before it goes into a filter (LDAP injection); every connection has a connect and a
receive timeout (CONSOLE_LDAP_TIMEOUT), so a directory that does not answer never holds a worker."""
from __future__ import annotations

import math
import ssl
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from ..lazy import load, module

ldap3 = module("ldap3")


class DirectoryUnavailable(Exception):
    """The directory did not answer, refused TLS, or refused the search account."""


@dataclass
class DirectoryUser:
    """Who the directory signed in: their entry's DN, attributes and the names of their groups."""

    username: str
    dn: str
    attributes: dict[str, Any] = field(default_factory=dict)
    groups: list[str] = field(default_factory=list)


def configured(config: Mapping[str, Any]) -> bool:
    return bool(config.get("LDAP_URL"))


def escape(value: str) -> str:
    """`value` escaped for an LDAP filter (RFC 4515: * ( ) \\ NUL)."""
    return str(load("ldap3.utils.conv:escape_filter_chars")(value))


def _server(config: Mapping[str, Any]) -> Any:
    url = urlsplit(config["LDAP_URL"])
    secure = url.scheme == "ldaps"
    tls = None
    if secure or config.get("LDAP_START_TLS"):
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=config.get("LDAP_CA_FILE") or None)
    port = url.port or (636 if secure else 389)
    return ldap3.Server(url.hostname or "localhost", port=port, use_ssl=secure, tls=tls,
                        get_info=ldap3.NONE, connect_timeout=float(config["LDAP_TIMEOUT"]))


def _connect(config: Mapping[str, Any], server: Any, user: str | None, password: str | None) -> Any:
    """An open connection (StartTLS done when configured), not yet bound."""
    conn = ldap3.Connection(server, user=user or None, password=password or None,
                            # whole seconds: ldap3 packs it into SO_RCVTIMEO as an integer
                            receive_timeout=max(1, math.ceil(config["LDAP_TIMEOUT"])),
                            auto_bind=ldap3.AUTO_BIND_NONE,
                            raise_exceptions=False)
    conn.open()
    if config.get("LDAP_START_TLS") and not server.ssl:
        if not conn.start_tls():
            raise DirectoryUnavailable(f"StartTLS with the directory failed: {conn.result}")
    return conn


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [_text(v) for v in value]
    return value


def authenticate(config: Mapping[str, Any], username: str, password: str) -> DirectoryUser | None:
    """The directory's user for this name and password; None for an unknown name or a wrong
    password; DirectoryUnavailable when the directory does not answer or refuses the search account."""
    name = username.strip()
    if not name or not password:        # an empty password would be an anonymous bind, which succeeds
        return None
    try:
        server = _server(config)
        searcher = _connect(config, server, config.get("LDAP_BIND_DN"), config.get("LDAP_BIND_PASSWORD"))
        try:
            if not searcher.bind():
                raise DirectoryUnavailable(
                    f"The directory refused the search account ({searcher.result.get('description')}).")
            user_filter = config["LDAP_USER_FILTER"].replace("{username}", escape(name))
            searcher.search(config.get("LDAP_USER_BASE") or "", user_filter, ldap3.SUBTREE,
                            attributes=[ldap3.ALL_ATTRIBUTES], size_limit=2)
            entries = [e for e in searcher.response or [] if e.get("type") == "searchResEntry"]
            if len(entries) != 1:
                return None
            dn = entries[0]["dn"]
            attributes = {k: _text(v) for k, v in dict(entries[0].get("attributes") or {}).items()
                          if k.lower() != "userpassword"}
            conn = _connect(config, server, dn, password)
            try:
                if not conn.bind():
                    if conn.result.get("description") == "invalidCredentials":
                        return None
                    raise DirectoryUnavailable(
                        f"The directory refused the bind ({conn.result.get('description')}).")
            finally:
                conn.unbind()
            group_filter = (config["LDAP_GROUP_FILTER"].replace("{dn}", escape(dn))
                            .replace("{username}", escape(name)))
            searcher.search(config.get("LDAP_GROUP_BASE") or "", group_filter, ldap3.SUBTREE,
                            attributes=["cn"])
            groups: list[str] = []
            for entry in searcher.response or []:
                if entry.get("type") != "searchResEntry":
                    continue
                cn = entry.get("attributes", {}).get("cn")
                groups += [str(c) for c in (cn if isinstance(cn, list) else [cn]) if c]
        finally:
            searcher.unbind()
    except DirectoryUnavailable:
        raise
    except ldap3.core.exceptions.LDAPException as exc:
        raise DirectoryUnavailable(f"The directory at {config['LDAP_URL']} does not answer "
                                   f"({type(exc).__name__}: {exc}).") from None
    uid = attributes.get("uid")
    found = (uid[0] if isinstance(uid, list) and uid else uid) or name
    return DirectoryUser(str(found), dn, attributes, sorted(set(groups)))
