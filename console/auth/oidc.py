"""OpenID Connect sign-in with Authlib (imported on first use): discovery from the issuer, the
authorization code flow with PKCE (S256), `state` and `nonce`; the ID token verified by Authlib against
the provider's JWKS (fetched again when a token names a key it does not know: key rotation) with `iss`,
`aud`, `exp` and `nonce`; userinfo when the groups are not in the ID token. The provider's answers have
a timeout (CONSOLE_OIDC_TIMEOUT); failures are told apart into the exceptions below."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Mapping

from flask import Flask

from ..lazy import module

flask_client = module("authlib.integrations.flask_client")
authlib_errors = module("authlib.common.errors")
jose_errors = module("joserfc.errors")
requests = module("requests")

LEEWAY = 60          # seconds of clock difference allowed for `exp`, `iat`
_LOCK = threading.Lock()
EXTENSION = "console-oidc"


class ProviderUnavailable(Exception):
    """The provider did not answer (discovery, token, JWKS or userinfo)."""


class SignInInvalid(Exception):
    """A callback that is refused: a wrong state, a used code, a token that does not verify."""


@dataclass
class ProviderUser:
    """Who the provider signed in: name, groups and every claim received."""

    username: str
    groups: list[str]
    claims: dict[str, Any] = field(default_factory=dict)
    id_token: str = ""
    notes: list[str] = field(default_factory=list)


def configured(config: Mapping[str, Any]) -> bool:
    return bool(config.get("OIDC_ISSUER"))


def client(app: Flask) -> Any:
    """The app's Authlib client for the provider, registered on first use."""
    with _LOCK:
        registered = app.extensions.get(EXTENSION)
        if registered is None:
            config = app.config
            oauth = flask_client.OAuth()
            oauth.init_app(app)
            kwargs: dict[str, Any] = {"scope": config["OIDC_SCOPES"], "code_challenge_method": "S256",
                                      "token_endpoint_auth_method": "client_secret_basic",
                                      "default_timeout": float(config["OIDC_TIMEOUT"])}
            if config.get("OIDC_CA_FILE"):
                kwargs["verify"] = config["OIDC_CA_FILE"]
            issuer = str(config["OIDC_ISSUER"]).rstrip("/")
            registered = oauth.register(
                "oidc", client_id=config.get("OIDC_CLIENT_ID"), client_secret=config.get("OIDC_CLIENT_SECRET"),
                server_metadata_url=f"{issuer}/.well-known/openid-configuration", client_kwargs=kwargs)
            app.extensions[EXTENSION] = registered
        return registered


def _unavailable(app: Flask, exc: Exception) -> ProviderUnavailable:
    return ProviderUnavailable(f"The sign-in provider at {app.config['OIDC_ISSUER']} does not answer "
                               f"({type(exc).__name__}).")


def authorize_redirect(app: Flask, redirect_uri: str, state: str) -> Any:
    """The redirect to the provider's authorization endpoint (state, nonce and the PKCE verifier are
    kept in the session by Authlib)."""
    try:
        return client(app).authorize_redirect(redirect_uri, state=state)
    except requests.RequestException as exc:
        raise _unavailable(app, exc) from None
    except authlib_errors.AuthlibBaseError as exc:
        raise ProviderUnavailable(f"The sign-in provider's discovery failed: {exc}") from None


def _groups(value: Any) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [str(value)]


def claims_options(app: Flask) -> dict[str, Any]:
    """What the ID token must say: issued by the provider (its discovery's `issuer`) for this client."""
    issuer = client(app).load_server_metadata().get("issuer") or app.config["OIDC_ISSUER"]
    return {"iss": {"essential": True, "values": [issuer]},
            "aud": {"essential": True, "values": [app.config.get("OIDC_CLIENT_ID")]}}


def verify(app: Flask, token: dict[str, Any], nonce: str) -> dict[str, Any]:
    """The claims of `token`'s ID token, verified as the callback verifies them (signature against the
    JWKS, `iss`, `aud`, `exp`, `nonce`); joserfc's errors when it does not verify."""
    return dict(client(app).parse_id_token(token, nonce=nonce, claims_options=claims_options(app),
                                           leeway=LEEWAY))


def finish(app: Flask) -> ProviderUser:
    """The user of this callback request: the code exchanged (with the PKCE verifier), the ID token
    verified, the name and groups taken from the configured claims."""
    config = app.config
    oauth = client(app)
    try:
        token = oauth.authorize_access_token(claims_options=claims_options(app), leeway=LEEWAY)
    except requests.RequestException as exc:
        raise _unavailable(app, exc) from None
    except authlib_errors.AuthlibBaseError as exc:
        name = getattr(exc, "error", None) or type(exc).__name__
        if name == "mismatching_state":
            raise SignInInvalid("The sign-in's state does not match this browser's: an old, reused or "
                                "forged link. Start the sign-in again.") from None
        raise SignInInvalid(f"The provider refused the sign-in ({name}: "
                            f"{getattr(exc, 'description', '') or exc}).") from None
    except jose_errors.JoseError as exc:
        raise SignInInvalid(f"The ID token does not verify ({type(exc).__name__}: {exc}).") from None
    claims = dict(token.get("userinfo") or {})
    if not claims:
        raise SignInInvalid("The provider sent no ID token.")
    notes: list[str] = []
    groups_claim = config["OIDC_GROUPS_CLAIM"]
    if groups_claim not in claims:
        try:
            extra = dict(oauth.userinfo(token=token))
        except requests.RequestException as exc:
            raise _unavailable(app, exc) from None
        except authlib_errors.AuthlibBaseError:
            extra = {}
        for key, value in extra.items():
            claims.setdefault(key, value)
        notes.append(f"The ID token has no “{groups_claim}” claim; userinfo was asked"
                     + ("" if groups_claim in extra else " and has none either") + ".")
    groups = _groups(claims.get(groups_claim))
    if groups is None:
        notes.append(f"No groups: the claim “{groups_claim}” (CONSOLE_OIDC_GROUPS_CLAIM) is not among "
                     f"the claims received ({', '.join(sorted(claims))}).")
    username = claims.get(config["OIDC_USERNAME_CLAIM"]) or claims.get("sub")
    if not username:
        raise SignInInvalid("The ID token names no user (no sub).")
    return ProviderUser(str(username)[:80], sorted(set(groups or [])), claims,
                        str(token.get("id_token") or ""), notes)


def logout_url(app: Flask, id_token: str, post_logout_redirect_uri: str) -> str | None:
    """The provider's end-session URL for this ID token, when the provider offers one (else None)."""
    try:
        oauth = client(app)
        if not oauth.load_server_metadata().get("end_session_endpoint"):
            return None
        result = oauth.create_logout_url(post_logout_redirect_uri=post_logout_redirect_uri,
                                         id_token_hint=id_token)
    except (requests.RequestException, authlib_errors.AuthlibBaseError, RuntimeError):
        return None
    return str(result["url"])
