"""Error answers: JSON under /api/, a page elsewhere; never a traceback."""
from __future__ import annotations

import logging
from urllib.parse import urlsplit

from flask import Flask, current_app, flash, jsonify, make_response, render_template, request
from flask_wtf.csrf import CSRFError

from .crypto import SecretUnreadable
from .htmx import is_htmx
from .messaging.state import ChangeConflict
from .work import Busy

log = logging.getLogger(__name__)


def answer(code: int, error: str, message: str):
    """A JSON error under /api/, the error page elsewhere."""
    if request.path.startswith("/api/"):
        return jsonify(error=error, message=message), code
    return render_template("error.html", code=code, message=message), code


def too_large_message() -> str:
    """What a 413 says: how large the request was and the limit, and the variable that sets it."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    size = request.content_length
    sent = f"The request ({size / 1048576:.1f} MiB) is" if size else "The request is"
    return (f"{sent} larger than the console accepts: at most {limit / 1048576:g} MiB per request "
            "(CONSOLE_MAX_CONTENT_LENGTH). Nothing was saved.")


CSRF_EXPIRED = ("Nothing was saved: the form had expired (its CSRF token is older than "
                "CONSOLE_WTF_CSRF_TIME_LIMIT, or the console was restarted with another secret key)")


def csrf_answer():
    """A form whose CSRF token failed, where the form cannot be shown again with what was typed: to
    htmx, the page is reloaded (with a fresh token) and says why; otherwise the error page."""
    message = ("The form has expired or is not from this console (CSRF check failed). Reload "
               "the page and try again.")
    if is_htmx():
        flash(CSRF_EXPIRED + "; the page was reloaded: repeat the change.")
        response = make_response(message, 400)
        response.headers["HX-Refresh"] = "true"
        return response
    return answer(400, "csrf", message)


def same_origin() -> bool:
    """Whether the browser says this request comes from a page of this console (Origin, or Referer
    when there is no Origin). A form that failed its CSRF check is shown again with what was typed
    only then: a form posted from another site is never put in front of the operator to save."""
    source = request.headers.get("Origin") or request.headers.get("Referer") or ""
    parts = urlsplit(source)
    return bool(parts.netloc) and parts.netloc == request.host and parts.scheme == request.scheme


def init_app(app: Flask) -> None:
    """Register the error handlers."""

    @app.errorhandler(403)
    def forbidden(_error):
        if request.path.startswith("/api/"):
            return answer(403, "forbidden", "This needs the admin role.")
        return answer(403, "forbidden", "Your role (viewer) can look but not change.")

    @app.errorhandler(404)
    def not_found(_error):
        return answer(404, "not_found", "No such resource." if request.path.startswith("/api/")
                       else "No such page.")

    @app.errorhandler(413)
    def too_large(_error):
        return answer(413, "too_large", too_large_message())

    @app.errorhandler(CSRFError)
    def csrf(_error):
        return csrf_answer()

    @app.errorhandler(SecretUnreadable)
    def secret_unreadable(error):
        log.error("stored secret cannot be decrypted: %s", error)
        return answer(500, "secret_unreadable",
                       f"{error} Set CONSOLE_ENCRYPTION_KEY to the key the secrets were saved with "
                       "(a comma list may hold the old and the new key), or set the secrets again.")

    @app.errorhandler(ChangeConflict)
    def conflict(error: ChangeConflict):
        """Another save made this change invalid meanwhile: 409, nothing saved; an htmx page is
        reloaded with the reason (its form shows values that are no longer the saved ones)."""
        if request.path.startswith("/api/"):
            return jsonify(error="conflict", message=str(error), errors=error.errors), 409
        if is_htmx():
            flash(str(error))
            response = make_response(str(error), 409)
            response.headers["HX-Refresh"] = "true"
            return response
        return answer(409, "conflict", str(error))

    @app.errorhandler(Busy)
    def busy(error: Busy):
        """Every broker-work thread is taken: 429 with Retry-After, as JSON, an htmx fragment or a
        page."""
        headers = {"Retry-After": str(error.retry_after)}
        if request.path.startswith("/api/"):
            return jsonify(error="busy", message=error.message,
                           retry_after=error.retry_after), 429, headers
        template = "_busy.html" if is_htmx() else "busy.html"
        return render_template(template, busy=error), 429, headers

    @app.errorhandler(500)
    def internal(_error):
        return answer(500, "internal_error", "Something went wrong on the console's side; the "
                                              "details are in its log.")
