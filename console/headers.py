"""Security headers on every response: a Content-Security-Policy that allows only the console's own
static files, no framing, no MIME sniffing, a same-origin Referrer-Policy, and `Cache-Control:
no-store` on everything but the static files (pages, fragments, API answers, exports and reports
all carry settings)."""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import Flask, Response, current_app, request

CONTENT_SECURITY_POLICY = "; ".join((
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    "connect-src 'self'",
    "font-src 'self'",
    "form-action 'self'",
    "frame-ancestors 'none'",
    "base-uri 'none'",
))
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def content_security_policy(app: Flask) -> str:
    """The policy of `app`'s pages: with OpenID Connect on, forms may also lead to the provider's
    origin (logging out posts to the console, which sends the browser on to the provider's
    end-session endpoint, and form-action covers such redirects)."""
    issuer = app.config.get("OIDC_ISSUER")
    if not issuer:
        return CONTENT_SECURITY_POLICY
    parts = urlsplit(str(issuer))
    return CONTENT_SECURITY_POLICY.replace("form-action 'self'",
                                           f"form-action 'self' {parts.scheme}://{parts.netloc}")


def secure_headers(response: Response) -> Response:
    """Add the security headers (and no-store outside /static/) to `response`."""
    for name, value in HEADERS.items():
        if name == "Content-Security-Policy":
            value = content_security_policy(current_app)
        response.headers.setdefault(name, value)
    if request.endpoint != "static":
        response.headers["Cache-Control"] = "no-store"
        response.headers.pop("Expires", None)
    return response


def init_app(app: Flask) -> None:
    """Register the header hook."""
    app.after_request(secure_headers)
