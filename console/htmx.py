"""One view serves a full page and, to htmx, the fragment it includes."""
from __future__ import annotations

from typing import Any

from flask import render_template, request


def is_htmx() -> bool:
    """True for a request made by htmx (not a boosted navigation)."""
    return request.headers.get("HX-Request") == "true" and not request.headers.get("HX-Boosted")


def render_page_or_fragment(page_template: str, fragment_template: str, status: int = 200,
                            **context: Any):
    """Render the fragment to htmx and the page (which includes the fragment) otherwise."""
    return render_template(fragment_template if is_htmx() else page_template, **context), status


def confirmed() -> bool:
    """Whether a destructive form was confirmed: by htmx's `hx-confirm` question (then the request is
    htmx's) or, in a browser without JavaScript, on the page `confirmation` answered first."""
    return request.headers.get("HX-Request") == "true" or request.form.get("confirm") == "yes"


def confirmation(question: str, detail: str, button: str, back: str, back_label: str):
    """The page that asks `question` before a destructive form without JavaScript takes effect: a form
    posting the same fields back to the same address with `confirm=yes`, or Cancel to `back`."""
    fields = [(k, v) for k, v in request.form.items(multi=True) if k not in ("csrf_token", "confirm")]
    return render_template("confirm.html", question=question, detail=detail, button=button, back=back,
                           back_label=back_label, fields=fields), 200
