"""One view serves a full page and, to htmx, the fragment it includes."""
from __future__ import annotations

from typing import Any

from flask import render_template, request


def is_htmx() -> bool:
    """True for a request made by htmx (not a boosted navigation)."""
    return request.headers.get("HX-Request") == "true" and not request.headers.get("HX-Boosted")


def render_page_or_fragment(page: str, fragment: str, status: int = 200, **context: Any):
    """Render `fragment` to htmx and `page` (which includes the fragment) otherwise."""
    return render_template(fragment if is_htmx() else page, **context), status
