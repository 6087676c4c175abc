"""Input at the boundary, checked once for every route: bounded integers in URLs and query strings,
and no NUL byte, invalid UTF-8 or lone surrogate in any path, query parameter, form field, upload
file name, JSON value or text body. What does not pass is a 400 with a clear message, never a 500."""
from __future__ import annotations

import json
import re
from io import BytesIO
from typing import Any, Callable, Mapping
from urllib.parse import parse_qsl

from flask import Flask, Request, request
from werkzeug.datastructures import ImmutableMultiDict
from werkzeug.http import parse_options_header
from werkzeug.routing import IntegerConverter, ValidationError

from .errors import answer

MAX_INT = 2**31 - 1          # the largest id or count any column of the console holds
_INT = re.compile(r"[+-]?\d{1,10}")
_SURROGATE = re.compile("[\ud800-\udfff]")


class BadInput(ValueError):
    """Input refused at the boundary; the message tells the caller what to send."""


class BoundedIntConverter(IntegerConverter):
    """`<int:…>` in routes: 0 … MAX_INT; anything longer or larger is a 404 like any unknown id."""

    def __init__(self, map: Any, fixed_digits: int = 0, min: int | None = None,  # noqa: A002
                 max: int | None = None, signed: bool = False) -> None:  # noqa: A002
        high = MAX_INT if max is None or max > MAX_INT else max
        super().__init__(map, fixed_digits, min, high, signed)

    def to_python(self, value: str) -> Any:
        if len(value) > 11:
            raise ValidationError()
        return super().to_python(value)


def bounded_int(text: Any, low: int = -MAX_INT - 1, high: int = MAX_INT) -> int:
    """`text` as a whole number within low…high; ValueError otherwise (also for 20-digit input)."""
    raw = str(text).strip()
    if not _INT.fullmatch(raw):
        raise ValueError(f"{_show(raw)} is not a whole number")
    value = int(raw)
    if not low <= value <= high:
        raise ValueError(f"{value} is outside {low}–{high}")
    return value


def query_int(args: Mapping[str, Any], name: str, default: int, low: int = 1,
              high: int = MAX_INT) -> int:
    """The whole-number query parameter `name` within low…high (default when absent or empty);
    BadInput naming the parameter otherwise."""
    raw = args.get(name)
    if raw is None or str(raw).strip() == "":
        return default
    try:
        return bounded_int(raw, low, high)
    except ValueError:
        raise BadInput(f"{name} must be a whole number from {low} to {high}.") from None


class BoundedArgs(ImmutableMultiDict):
    """Query and form values whose `.get(name, type=int)` only yields ints a column can hold."""

    # one signature instead of the base class's overloads: mypy cannot match them, callers can
    def get(self, key: Any, default: Any = None, type: Callable[[Any], Any] | None = None) -> Any:  # type: ignore[override]  # noqa: A002,E501
        if type is int:
            type = bounded_int
        if type is None:
            return super().get(key, default)
        return super().get(key, default=default, type=type)


class ConsoleRequest(Request):
    """The console's request class: bounded `type=int` look-ups."""

    parameter_storage_class = BoundedArgs


def _show(text: str) -> str:
    return repr(text if len(text) <= 24 else text[:21] + "...")


def text_problem(value: str) -> str | None:
    """Why `value` cannot be stored as text, or None."""
    if "\x00" in value:
        return "contains a NUL byte"
    if _SURROGATE.search(value):
        return "contains an invalid character (a lone UTF-16 surrogate)"
    return None


def _strict(data: bytes, what: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"The {what} is not valid UTF-8.") from None
    if "\x00" in text:
        raise BadInput(f"The {what} contains a NUL byte.")
    return text


def _check_pairs(raw: str, what: str) -> None:
    try:
        pairs = parse_qsl(raw, keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise BadInput(f"The {what} is not valid UTF-8.") from None
    for key, value in pairs:
        for part in (key, value):
            problem = text_problem(part)
            if problem:
                raise BadInput(f"The {what} parameter {_show(key)} {problem}.")


MAX_JSON_DEPTH = 32


def _walk_json(body: Any) -> None:
    """BadInput for a string or key that cannot be stored, or nesting deeper than MAX_JSON_DEPTH."""
    stack: list[tuple[Any, str, int]] = [(body, "body", 0)]
    while stack:
        value, where, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise BadInput(f"The JSON body is nested deeper than {MAX_JSON_DEPTH} levels.")
        if isinstance(value, str):
            problem = text_problem(value)
            if problem:
                raise BadInput(f"The JSON value at {where} {problem}.")
        elif isinstance(value, dict):
            for key, item in value.items():
                problem = text_problem(key)
                if problem:
                    raise BadInput(f"A JSON key in {where} {problem}.")
                stack.append((item, f"{where}.{key}", depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value))


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _strict_multipart(req: Request, data: bytes) -> None:
    """Parse an apparently empty multipart body again without werkzeug's silence: a part header
    that is not UTF-8 makes the whole form vanish otherwise."""
    parser = req.make_form_data_parser()
    parser.silent = False
    _, options = parse_options_header(req.headers.get("Content-Type", ""))
    try:
        parser.parse(BytesIO(data), req.mimetype, len(data), options)
    except ValueError:
        raise BadInput("The multipart body cannot be read: its part headers (field and file "
                       "names) must be valid UTF-8.") from None


def _check_form(req: Request) -> None:
    for key, value in req.form.items(multi=True):
        for part in (key or "", value or ""):
            problem = text_problem(part) or ("is not valid UTF-8" if "\ufffd" in part else None)
            if problem:
                raise BadInput(f"The form field {_show(key)} {problem}.")


def check_request(req: Request) -> None:
    """BadInput when any part of `req` cannot be taken as text (the body is read and cached)."""
    path = req.environ.get("PATH_INFO", "")
    _strict(path.encode("latin-1", "replace"), "URL path")
    _check_pairs(req.query_string.decode("latin-1"), "query")
    if req.method in ("GET", "HEAD", "OPTIONS", "DELETE") and not req.content_length:
        return
    address = req.remote_addr or ""
    problem = text_problem(address) or ("is longer than 64 characters" if len(address) > 64 else None)
    if problem:
        raise BadInput(f"The client address (X-Forwarded-For) {problem}.")
    mimetype = req.mimetype
    if "form" in req.__dict__ and mimetype != "multipart/form-data":
        _check_form(req)       # parsed before this check (its body is gone): the parsed values
        return
    if mimetype == "multipart/form-data":
        data = req.get_data(cache=True)      # kept, so that the form is parsed from it, once more if needed
        if data and not req.form and not req.files:
            _strict_multipart(req, data)
        _check_form(req)
        for key, upload in req.files.items(multi=True):
            key = key or ""
            name = upload.filename or ""
            problem = text_problem(name) or ("is not valid UTF-8" if "\ufffd" in name else None)
            if problem:
                raise BadInput(f"The file name of {_show(key)} {problem}.")
        return
    data = req.get_data(cache=True)
    if not data:
        return
    if mimetype == "application/x-www-form-urlencoded":
        _check_pairs(data.decode("latin-1"), "form")
        return
    text = _strict(data, "request body")
    if req.is_json:
        try:
            body = json.loads(text, parse_constant=_no_constant)
        except (ValueError, RecursionError):
            raise BadInput("The request body is not valid JSON (or nested too deeply, or holds "
                           "NaN, Infinity or a number of more than 4300 digits).") from None
        _walk_json(body)
        if req.path.startswith("/api/") and not isinstance(body, dict):
            raise BadInput('Send a JSON object ({"field": value, …}), not '
                           f"{type(body).__name__ if body is not None else 'null'}.")


def init_app(app: Flask) -> None:
    """Bounded `int` converter and query look-ups, and the text guard before every request.
    Call before any blueprint is registered (rules bind their converters when added)."""
    app.url_map.converters["int"] = BoundedIntConverter
    app.request_class = ConsoleRequest

    @app.before_request
    def _refuse_bad_input():
        try:
            check_request(request)
        except BadInput as exc:
            return answer(400, "bad_request", str(exc))
        return None

    @app.errorhandler(BadInput)
    def _bad_input(exc: BadInput):
        return answer(400, "bad_request", str(exc))
