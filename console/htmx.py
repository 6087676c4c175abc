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
