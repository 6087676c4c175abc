"""The OpenAPI 3.1 document of /api/v1, built from the settings schema so it cannot drift from it."""
from __future__ import annotations

from typing import Any

from ..brokers import PROTOCOLS
from ..inputs import MAX_INT
from ..messaging.schema import SCHEMA, Field
from .openapi_delivery import ROLLOUT_PLAN, delivery_paths

ID = {"type": "integer", "minimum": 1, "maximum": MAX_INT}
CHANGE_FLAGS = {"confirm": {"type": "boolean", "description": "apply even when adapters are "
                            "affected (otherwise 409 with the impact)"},
                "dry_run": {"type": "boolean", "description": "only preview the diff and impact"}}

KIND_TYPES: dict[str, dict[str, Any]] = {
    "bool": {"type": "boolean"},
    "host": {"type": "string", "description": "host name or IP address"},
    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
    "hostlist": {"type": ["string", "null"], "description": "comma-separated host:port list"},
    "serverlist": {"type": ["string", "null"],
                   "description": "comma-separated host:port list or nats:// / tls:// URLs"},
    "url": {"type": ["string", "null"], "description": "pulsar:// or pulsar+ssl:// URL"},
    "str": {"type": "string"},
    "secret": {"type": ["string", "null"], "writeOnly": True,
               "description": "write-only; null clears it; read back as {\"set\": bool}"},
}


def _field_schema(f: Field) -> dict[str, Any]:
    if f.kind == "int":
        out: dict[str, Any] = {"type": ["integer", "null"]}
        out.update({k: v for k, v in (("minimum", f.minimum), ("maximum", f.maximum))
                    if v is not None})
    elif f.kind == "choice":
        out = {"type": ["integer" if f.integer else "string", "null"], "enum": [*f.choices, None]}
    else:
        out = dict(KIND_TYPES[f.kind])
        kinds = out["type"] if isinstance(out["type"], list) else [out["type"]]
        out["type"] = [*dict.fromkeys([*kinds, "null"])]
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
        "minProperties": 1,
        "properties": {**{f.name: _field_schema(f) for f in SCHEMA[protocol] if not f.is_file},
                       **CHANGE_FLAGS, "rollout": ROLLOUT_PLAN},
    }


def _op(summary: str, ok: str = "OK", *, body: dict[str, Any] | None = None,
        params: list[dict[str, Any]] | None = None, errors: dict[str, str] | None = None,
        content: str = "application/json") -> dict[str, Any]:
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    op: dict[str, Any] = {"summary": summary, "responses": {"200": {"description": ok}}}
    if body is not None:
        op["requestBody"] = {"required": True, "content": {content: {"schema": body}}}
    if params:
        op["parameters"] = params
    for code, text in (errors or {}).items():
        op["responses"][code] = {"description": text, **error}
    return op


QUERY_TYPES: dict[str, dict[str, Any]] = {
    "page": {"type": "integer", "minimum": 1, "maximum": MAX_INT, "default": 1},
    "per_page": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50},
    "against": {"type": "integer", "minimum": 1, "maximum": MAX_INT},
    "timeout": {"type": "number", "minimum": 0.1, "maximum": 300},
    "dry_run": {"type": "boolean"},
    "confirm": {"type": "boolean"},
    "replace": {"type": "boolean", "description": "replace everything: what the file leaves out goes "
                "back to its default (without it, only what the file names changes)"},
    "since": {"type": "string", "description": "ISO date or time"},
    "until": {"type": "string", "description": "ISO date or time"},
}


def _query(*names: str) -> list[dict[str, Any]]:
    return [{"name": n, "in": "query", "required": False,
             "schema": QUERY_TYPES.get(n, {"type": "string"})} for n in names]


def _diagnose_op(protocol: dict[str, Any]) -> dict[str, Any]:
    """POST /brokers/{protocol}/diagnose: its timeout bounded by CONSOLE_DIAGNOSE_MAX_TIMEOUT, run on
    the bounded broker-work pool (429 with Retry-After when every thread is taken)."""
    timeout = {"name": "timeout", "in": "query", "required": False, "schema": {
        "type": "number", "minimum": 0.1, "maximum": 300,
        "description": "seconds for the whole diagnosis; above CONSOLE_DIAGNOSE_MAX_TIMEOUT "
                       "(default 30) the answer is 400 naming the field"}}
    wait = {"name": "wait", "in": "query", "required": False, "schema": {
        "type": "boolean", "default": True, "description": "false: queue it and answer 202 with "
        "its id at once; poll GET /diagnoses/{run_id} until status is done"}}
    op = _op("Step-wise diagnosis (dns, tcp, tls, handshake, auth, operation) with cause and fix",
             params=[protocol, timeout, wait],
             errors={"429": "Every broker-work thread is taken (or the queue is full): try again "
                            "after Retry-After seconds"})
    op["responses"]["202"] = {"description": "Queued (wait=false): poll /diagnoses/{run_id}"}
    return op


def _staging_paths(protocol: dict[str, Any]) -> dict[str, Any]:
    """A client certificate staged next to the current one: stage, look, try, promote, discard."""
    base = "/brokers/{protocol}/staged-certificate"
    none = {"404": "No client certificate is staged for this protocol"}
    staged = {"type": "object", "properties": {
        "filename": {"type": "string"}, "format": {"type": "string"},
        "certificates": {"type": "array", "items": {"type": "object"}},
        "staged_at": {"type": "string"}, "staged_by": {"type": ["string", "null"]}}}
    diagnose = _diagnose_op(protocol)
    diagnose["summary"] = ("Step-wise diagnosis with the staged client certificate (stored, "
                           "labelled staged_certificate)")
    diagnose["parameters"] = [p for p in diagnose["parameters"] if p["name"] != "wait"]
    diagnose["responses"].pop("202")
    diagnose["responses"].update({k: {"description": v} for k, v in none.items()})
    stage = _op("Stage a client certificate and key next to the current one (which stays in use "
                "until promotion); replaces one staged before", "Staged", params=[protocol],
                body={"type": "object", "required": ["pem"], "properties": {
                    "pem": {"type": "string", "description": "certificate (chain), PEM"},
                    "key_pem": {"type": "string", "description": "its key, PEM, if not in pem"}}},
                errors={"422": "Not a certificate with its key, or the client certificate is set "
                               "by the environment"})
    stage["responses"]["201"] = stage["responses"].pop("200")
    stage["requestBody"]["content"]["multipart/form-data"] = {"schema": {
        "type": "object", "required": ["file"], "properties": {
            "file": {"type": "string", "format": "binary"},
            "key_file": {"type": "string", "format": "binary"},
            "password": {"type": "string", "description": "PKCS#12/JKS"},
            "key_password": {"type": "string"}}}}
    look = _op("The staged client certificate (never its key); viewers may look",
               params=[protocol], errors=none)
    look["responses"]["200"]["content"] = {"application/json": {"schema": {
        "type": "object", "properties": {"protocol": {"type": "string"}, "staged": staged}}}}
    promote = _op(
        "Promote the staged client certificate: one ordinary change (impact, version, audit, "
        "delivery); a certificate or key given as a reference gives way to it", "Promoted",
        params=[protocol, *_query("dry_run", "confirm")],
        body={"type": "object", "properties": dict(CHANGE_FLAGS)},
        errors={**none, "409": "Adapters affected: confirm",
                "422": "The client certificate is set by the environment"})
    promote["requestBody"]["required"] = False
    return {
        base: {
            "get": look,
            "post": stage,
            "delete": _op("Discard the staged client certificate (audited)", "Discarded",
                          params=[protocol], errors=none),
        },
        f"{base}/check": {"post": _op(
            "Test connection with the staged client certificate: one real check, not recorded, "
            "labelled staged_certificate", params=[protocol],
            errors={**none, "429": "Every broker-work thread is taken: try again after "
                                   "Retry-After seconds"})},
        f"{base}/diagnose": {"post": diagnose},
        f"{base}/promote": {"post": promote},
    }


def _more_paths() -> dict[str, Any]:
    """Registry, audit, history, export/import and diagnostics."""
    version = {"name": "version_id", "in": "path", "required": True, "schema": ID}
    run = {"name": "run_id", "in": "path", "required": True, "schema": ID}
    protocol = {"name": "protocol", "in": "path", "required": True,
                "schema": {"type": "string", "enum": list(PROTOCOLS)}}
    names = {"type": "array", "items": {"type": "string"}}
    return {
        "/services": {
            "get": _op("Registered services with the protocol new adapters would get"),
            "post": _op("Register a service (re-registering updates it); with a callback_url the "
                        "answer carries a new signing_secret, once", "Updated",
                        body={"type": "object", "required": ["name", "protocols"], "properties": {
                            "name": {"type": "string"}, "protocols": names,
                            "callback_url": {"type": ["string", "null"], "format": "uri"}}},
                        errors={"422": "Invalid name, protocols or callback URL",
                                "403": "A service token registering another service"}),
        },
        "/adapters": {
            "get": _op("Adapters, paginated, each with whether its snapshot still matches",
                       params=[*_query("page"), {**_query("per_page")[0], "schema": {
                           **QUERY_TYPES["per_page"], "maximum": 500}}]),
            "post": _op("Create an adapter on a service (protocol by the priority rule)", "Created",
                        body={"type": "object", "required": ["name", "service"], "properties": {
                            "name": {"type": "string"}, "service": {"type": "string"}}},
                        errors={"422": "Unknown service, no enabled common protocol, or name taken"}),
        },
        "/connections/check": {"post": _op(
            "The protocol connecting these services would use", body={
                "type": "object", "required": ["services"], "properties": {"services": names}},
            errors={"409": "No common protocol (with what each supports)",
                    "422": "A service is not registered"})},
        "/audit": {"get": _op("Audit entries, newest first", params=_query(
            "actor", "origin", "action", "outcome", "protocol", "q", "since", "until", "page",
            "per_page"), errors={"400": "Bad filter"})},
        "/versions": {"get": _op("Configuration versions, newest first")},
        "/versions/{version_id}/diff": {"get": _op(
            "Saved-configuration diff from ?against= to this version",
            params=[version, {**_query("against")[0], "required": True}],
            errors={"404": "No such version"})},
        "/versions/{version_id}/rollback": {"post": _op(
            "Roll back to this version through the impact check",
            params=[version], body={"type": "object", "properties": CHANGE_FLAGS},
            errors={"404": "No such version", "409": "Adapters affected: confirm"})},
        "/config/export": {"get": {"summary": "All settings and priorities as YAML (no secrets)",
                                   "responses": {"200": {"description": "YAML",
                                                         "content": {"application/yaml": {}}}}}},
        "/config/import": {"post": _op(
            "Import a YAML export: validated first, applied all or nothing; it changes only what "
            "the file names unless replace=true (the answer's `rule` says which). A top-level "
            "`rollout:` mapping (wave, share, deadline, auto_rollback, as in PATCH) rolls the "
            "import out in waves",
            params=_query("dry_run", "confirm", "replace"), body={"type": "string"},
            content="application/yaml",
            errors={"422": "Invalid file (errors by protocol.field, or rollout.<field> for the "
                           "roll-out plan): nothing imported", "409": "Adapters affected"})},
        "/brokers/{protocol}/diagnose": {"post": _diagnose_op(protocol)},
        "/diagnoses/{run_id}": {"get": _op("A stored diagnosis", params=[run])},
        "/diagnoses/{run_id}/trust": {"post": _op(
            "Trust a CA of the chain a tls_untrusted diagnosis met (added to the truststore as an "
            "ordinary change); without confirm: 409 with the certificate and an openssl line",
            params=[run], body={"type": "object", "required": ["sha256"], "properties": {
                "sha256": {"type": "string"}, "confirm": {"type": "boolean"},
                "leaf": {"type": "boolean", "description": "trust a self-signed leaf"}}},
            errors={"404": "No such diagnosis", "409": "Confirm after comparing the fingerprint",
                    "422": "Not a certificate that can be trusted"})},
        "/brokers/{protocol}/truststore": {"post": _op(
            "Add CA certificate(s) to the truststore, keeping the ones it holds", "Added",
            params=[protocol], body={"type": "object", "required": ["pem"], "properties": {
                "pem": {"type": "string"}, **CHANGE_FLAGS}},
            errors={"422": "Not a certificate, or the truststore is locked or a file reference",
                    "409": "Adapters affected: confirm"})},
        "/brokers/{protocol}/truststore/{sha256}": {"delete": _op(
            "Remove one CA (by SHA-256 fingerprint) from the truststore", "Removed",
            params=[protocol, {"name": "sha256", "in": "path", "required": True,
                               "schema": {"type": "string"}}],
            errors={"422": "No such certificate in the truststore",
                    "409": "Adapters affected: confirm"})},
        **_staging_paths(protocol),
        "/diagnoses/{run_id}/report": {"get": _op(
            "Diagnosis report: diagnosis, settings (secrets masked) and pitfalls", params=[run])},
        "/certificates": {"get": _op("Certificate inventory: uploaded, environment files and "
                                     "presented by brokers, soonest expiry first")},
        "/lint": {"get": _op("Pitfalls found in the effective settings")},
    }


ETAG_HEADER = {"ETag": {"description": "Digest of the protocol's saved settings: send it back in "
                                       "If-Match to change them only as read",
                        "schema": {"type": "string"}}}
IF_MATCH = {"name": "If-Match", "in": "header", "required": False,
            "description": "The ETag of a GET (or `*`): the change is refused with 412 when the "
                           "protocol was changed by someone else since",
            "schema": {"type": "string"}}


def _broker_path(protocol: str, broker_ref: dict[str, Any], json_error: dict[str, Any]) -> dict[str, Any]:
    """GET and PATCH of one protocol, its PATCH body that protocol's fields only."""
    label = protocol.capitalize()
    # one route serves every protocol's path (/brokers/<protocol>): a name that is none is a 404
    unknown = json_error | {"description": "No such protocol: the path names one of "
                                           f"{', '.join(PROTOCOLS)}"}
    return {
        "get": {"summary": f"{label}: effective settings, each with its source",
                "responses": {"200": broker_ref | {"description": "OK", "headers": ETAG_HEADER},
                              "404": unknown}},
        "patch": {"summary": f"{label}: change some fields; nothing is saved when any is invalid",
                  "parameters": [IF_MATCH],
                  "requestBody": {"required": True, "content": {"application/json": {
                      "schema": {"$ref": f"#/components/schemas/{label}Patch"}}}},
                  "responses": {"200": broker_ref | {"description": "Saved (or the dry-run preview)",
                                                     "headers": ETAG_HEADER},
                                "404": unknown,
                                "409": json_error | {"description": "Adapters affected: confirm"},
                                "412": json_error | {"description": "If-Match is not the current "
                                                     "ETag: changed by someone else since it was "
                                                     "read (what changed in `changed`, who in "
                                                     "`by`); nothing saved"},
                                "422": json_error | {"description": "Per-field errors, nothing saved"}}},
    }


# Answers every operation can give, documented on each (see _complete)
STANDARD = {
    "400": "Bad input: a NUL byte or invalid UTF-8, a number out of range, JSON of the wrong shape",
    "401": "No valid bearer token or session",
    "403": "This needs the admin role",
    "404": "No such resource",
    "409": "The change affects existing adapters: repeat with confirm",
    "413": "The request body is larger than CONSOLE_MAX_CONTENT_LENGTH",
    "422": "Invalid values, nothing saved",
    "503": "The console's database is unreachable (error database_unavailable, with the reason); "
           "it recovers by itself: retry after Retry-After",
}
READ_ONLY_POSTS = {("/connections/check", "post")}
CHANGES = {"patch", "put", "delete"}


def _complete(document: dict[str, Any]) -> None:
    """Add the standard error answers each operation can give, with the Error schema."""
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for path, item in document["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            codes = ["400", "401"]
            if method != "get" and (path, method) not in READ_ONLY_POSTS:
                codes.append("403")
            if "{" in path:
                codes.append("404")
            if "requestBody" in op:
                codes.append("413")
            if method in CHANGES or path.endswith(("/rollback", "/import", "/files/{slot}")):
                codes += ["409", "422"]
            codes.append("503")
            for code in codes:
                op["responses"].setdefault(code, {"description": STANDARD[code], **error})


def openapi_document() -> dict[str, Any]:
    """The whole OpenAPI document."""
    error = {"$ref": "#/components/schemas/Error"}
    json_error = {"content": {"application/json": {"schema": error}}}
    broker_ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Broker"}}}}
    protocol_param = {"name": "protocol", "in": "path", "required": True,
                      "schema": {"type": "string", "enum": list(PROTOCOLS)}}
    slot_param = {"name": "slot", "in": "path", "required": True,
                  "schema": {"type": "string", "enum": ["tls_ca", "tls_cert"]}}
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Messaging Console API", "version": "1",
                 "description": "Messaging settings, priorities and TLS material. Secrets are "
                                "write-only. Send `Authorization: Bearer <token>` (from `flask "
                                "tokens create`) or use a session with the X-CSRFToken header."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": {
            "/brokers": {"get": {"summary": "Effective settings of every protocol",
                                 "responses": {"200": {"description": "OK"}}}},
            **{f"/brokers/{p}": _broker_path(p, broker_ref, json_error) for p in PROTOCOLS},
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
                "put": {"summary": "Save the priority order (every protocol once); with `rollout`, "
                                   "the services get it in waves",
                        "requestBody": {"required": True, "content": {"application/json": {
                            "schema": {"type": "object", "required": ["priorities"], "properties": {
                                "priorities": {"type": "array", "items": {"enum": list(PROTOCOLS)}},
                                **CHANGE_FLAGS, "rollout": ROLLOUT_PLAN}}}}},
                        "responses": {"200": {"description": "Saved (with the roll-out in waves "
                                                             "it started, if any, as `rollout`)"},
                                      "422": json_error | {"description": (
                                          "Invalid order (errors.priorities) or roll-out plan "
                                          "(errors.rollout.<field>): nothing saved")}}},
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
                    "warnings": {"type": "array"},
                    "status": {"type": "object", "description": (
                        "The last check made with the current settings, as in /readyz: status "
                        "up|down|disabled|unknown; unknown with rechecking true while changed "
                        "settings are being checked (a result made with other settings is never "
                        "shown as current)"), "properties": {
                        "status": {"enum": ["up", "down", "disabled", "unknown"]},
                        "rechecking": {"type": "boolean"}, "stale": {"type": "boolean"},
                        "latency_ms": {"type": ["number", "null"]},
                        "cause": {"type": ["string", "null"]},
                        "checked_at": {"type": ["string", "null"]},
                        "nodes": {"type": "array", "description": (
                            "Every node of the check (configured ones, then the brokers a Kafka "
                            "cluster advertises)"), "items": {"type": "object", "properties": {
                                "node": {"type": "string"}, "status": {"enum": ["up", "down"]},
                                "cause": {"type": "string"}, "advertised": {"type": "boolean"}}}},
                        "nodes_up": {"type": "integer"},
                        "warnings": {"type": "array", "description": (
                            "node_unreachable, one per failed node while the protocol is up"),
                            "items": {"type": "object", "properties": {
                                "code": {"enum": ["node_unreachable"]}, "node": {"type": "string"},
                                "cause": {"type": "string"}, "detail": {"type": "string"}}}}}}}},
                "Priorities": {"type": "object", "required": ["priorities"], "properties": {
                    "priorities": {"type": "array", "items": {"enum": list(PROTOCOLS)}}}},
                **{f"{p.capitalize()}Patch": _patch_schema(p) for p in PROTOCOLS},
            },
        },
    }
    document["paths"].update(_more_paths())
    document["paths"].update(delivery_paths())
    _complete(document)
    return document
