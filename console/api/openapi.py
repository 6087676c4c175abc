"""The OpenAPI 3.1 document of /api/v1, built from the settings schema so it cannot drift from it."""
from __future__ import annotations

from typing import Any

from ..brokers import PROTOCOLS
from ..settings.schema import SCHEMA, Field

KIND_TYPES: dict[str, dict[str, Any]] = {
    "bool": {"type": "boolean"},
    "host": {"type": "string", "description": "host name or IP address"},
    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
    "hostlist": {"type": ["string", "null"], "description": "comma-separated host:port list"},
    "url": {"type": ["string", "null"], "description": "pulsar:// or pulsar+ssl:// URL"},
    "str": {"type": "string"},
    "secret": {"type": ["string", "null"], "writeOnly": True,
               "description": "write-only; null clears it; read back as {\"set\": bool}"},
}


def _field_schema(f: Field) -> dict[str, Any]:
    if f.kind == "int":
        out: dict[str, Any] = {"type": "integer", "minimum": f.minimum, "maximum": f.maximum}
    elif f.kind == "choice":
        out = {"type": "string", "enum": list(f.choices)}
    else:
        out = dict(KIND_TYPES[f.kind])
    out["description"] = " ".join(x for x in (
        f.label + ".", f.help, f"{f.change_kind}: {f.reason}", "null resets it to the default.")
        if x)
    if f.default is not None and not f.secret:
        out["default"] = f.default
    return out


def _patch_schema(protocol: str) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {f.name: _field_schema(f) for f in SCHEMA[protocol] if not f.is_file},
    }


def openapi_document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    error = {"$ref": "#/components/schemas/Error"}
    json_error = {"content": {"application/json": {"schema": error}}}
    broker_ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Broker"}}}}
    protocol_param = {"name": "protocol", "in": "path", "required": True,
                      "schema": {"type": "string", "enum": list(PROTOCOLS)}}
    slot_param = {"name": "slot", "in": "path", "required": True,
                  "schema": {"type": "string", "enum": ["tls_ca", "tls_cert"]}}
    patch_bodies = {"oneOf": [{"$ref": f"#/components/schemas/{p.capitalize()}Patch"}
                              for p in PROTOCOLS]}
    return {
        "openapi": "3.1.0",
        "info": {"title": "Messaging Console API", "version": "1",
                 "description": "Messaging settings, priorities and TLS material. Secrets are "
                                "write-only. Send `Authorization: Bearer <token>` (from `flask "
                                "tokens create`) or use a session with the X-CSRFToken header."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": {
            "/brokers": {"get": {"summary": "Effective settings of every protocol",
                                 "responses": {"200": {"description": "OK"}, "401": json_error}}},
            "/brokers/{protocol}": {
                "parameters": [protocol_param],
                "get": {"summary": "One protocol's effective settings, each with its source",
                        "responses": {"200": broker_ref | {"description": "OK"},
                                      "404": json_error | {"description": "No such protocol"}}},
                "patch": {"summary": "Change some fields; nothing is saved when any is invalid",
                          "requestBody": {"required": True, "content": {
                              "application/json": {"schema": patch_bodies}}},
                          "responses": {"200": broker_ref | {"description": "Saved"},
                                        "400": json_error | {"description": "Not a JSON object"},
                                        "403": json_error | {"description": "Viewer role"},
                                        "422": json_error | {"description": "Per-field errors"}}},
            },
            "/brokers/{protocol}/files/{slot}": {
                "parameters": [protocol_param, slot_param],
                "post": {"summary": "Upload a truststore (tls_ca) or client certificate (tls_cert)",
                         "requestBody": {"required": True, "content": {"multipart/form-data": {
                             "schema": {"type": "object", "required": ["file"], "properties": {
                                 "file": {"type": "string", "format": "binary"},
                                 "password": {"type": "string", "description": "PKCS#12/JKS"},
                                 "key_file": {"type": "string", "format": "binary"},
                                 "key_password": {"type": "string"}}}}}},
                         "responses": {"201": broker_ref | {"description": "Stored"},
                                       "422": json_error | {"description": "Not stored"}}},
                "delete": {"summary": "Remove the stored file",
                           "responses": {"200": broker_ref | {"description": "Removed"}}},
            },
            "/priorities": {
                "get": {"summary": "Effective protocol priority order",
                        "responses": {"200": {"description": "OK", "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/Priorities"}}}}}},
                "put": {"summary": "Save the priority order (every protocol once)",
                        "requestBody": {"required": True, "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/Priorities"}}}},
                        "responses": {"200": {"description": "Saved"},
                                      "422": json_error | {"description": "Invalid order"}}},
            },
        },
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "session"},
            },
            "schemas": {
                "Error": {"type": "object", "required": ["error", "message"], "properties": {
                    "error": {"type": "string"}, "message": {"type": "string"},
                    "errors": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "Value": {"type": "object", "required": ["value", "source"], "properties": {
                    "value": {}, "source": {"enum": ["default", "saved", "env"]},
                    "env": {"type": "string"}, "shadowed": {"type": "boolean"},
                    "conflict": {"type": "string"}, "env_error": {"type": "string"}}},
                "Broker": {"type": "object", "properties": {
                    "protocol": {"enum": list(PROTOCOLS)}, "enabled": {"type": "boolean"},
                    "settings": {"type": "object",
                                 "additionalProperties": {"$ref": "#/components/schemas/Value"}},
                    "warnings": {"type": "array"}}},
                "Priorities": {"type": "object", "required": ["priorities"], "properties": {
                    "priorities": {"type": "array", "items": {"enum": list(PROTOCOLS)}}}},
                **{f"{p.capitalize()}Patch": _patch_schema(p) for p in PROTOCOLS},
            },
        },
    }
