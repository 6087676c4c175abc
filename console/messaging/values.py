"""Parsing of field values from forms, JSON and environment variables, one rule per field kind.

Every parser takes the raw input and returns the typed value or raises `Invalid` with a message
written for the person who typed it. The rules live below the model (console/brokers/values.py, and a
protocol's own formats in its spec); `parse_value` picks the one a field's kind names.
"""
from __future__ import annotations

import re
from typing import Any

from ..brokers.nats_spec import nats_server_addresses, parse_nats_servers, parse_nats_url
from ..brokers.pulsar_spec import parse_pulsar_url
from ..brokers.rabbitmq_spec import parse_amqp_query, parse_amqp_url
from ..brokers.values import (
    FALSE,
    HOST_LABEL,
    MAX_SECRET,
    MAX_TEXT,
    TRUE,
    Invalid,
    format_host_port,
    parse_bool,
    parse_host,
    parse_hostlist,
    parse_int,
    parse_port,
    parse_text,
    split_host_port,
    split_url,
)
from .schema import Field

# the shared rules (console/brokers/values.py) and the protocols' own formats (their specs), under the
# names the model's callers use
__all__ = ["FALSE", "HOST_LABEL", "MAX_SECRET", "MAX_TEXT", "TRUE", "Invalid", "format_host_port",
           "nats_server_addresses", "parse_amqp_query", "parse_amqp_url", "parse_bool", "parse_host",
           "parse_hostlist", "parse_int", "parse_nats_servers", "parse_nats_url", "parse_port",
           "parse_pulsar_url", "parse_text", "parse_value", "split_host_port", "split_url"]


def parse_value(f: Field, raw: Any) -> Any:
    """Parse `raw` for field `f`; raises Invalid."""
    if f.kind == "bool":
        return parse_bool(raw)
    if f.kind == "host":
        return parse_host(raw)
    if f.kind == "port":
        return parse_port(raw)
    if f.kind == "int":
        return parse_int(raw, f.minimum, f.maximum)
    if f.kind == "choice":
        text = "" if raw is None else str(raw).strip()
        value: Any = text
        if f.integer and not isinstance(raw, bool) and re.fullmatch(r"[+-]?\d{1,6}", text):
            value = int(text)                    # an integer setting: 1 and "1" are the integer 1
        if value not in f.choices or isinstance(raw, bool) or isinstance(raw, float):
            shown = ", ".join(str(c) if c != "" else "(empty)" for c in f.choices)
            raise Invalid(f"'{text}' is not one of: {shown}.")
        return value
    if f.kind == "hostlist":
        return parse_hostlist(raw)
    if f.parse is not None:         # a protocol's own format: a service URL, a server list
        return f.parse(raw)
    if f.kind == "secret":
        if not isinstance(raw, str) or not raw:
            raise Invalid("Enter a value, or clear the field instead.")
        if len(raw) > MAX_SECRET:
            raise Invalid(f"At most {MAX_SECRET} characters.")
        return raw
    if f.kind == "str":
        return parse_text(raw)
    raise Invalid("This field cannot be set this way.")
