"""The OpenAPI paths of configuration delivery: service documents, acknowledgements, roll-out,
adapters' configuration and API tokens."""
from __future__ import annotations

from typing import Any

from ..brokers import PROTOCOLS

PROTOCOL_NAMES = list(PROTOCOLS)



_STEPS = {"type": "array", "maxItems": 3, "items": {
    "type": "object", "required": ["name", "status"],
    "properties": {"name": {"enum": ["dns", "tcp", "tls"]}, "status": {"enum": ["ok", "failed", "skipped"]},
                   "ms": {"type": "number"}, "detail": {"type": "string"}}}}
AGENT_DIAGNOSIS = {
    "type": "object", "required": ["protocol", "ok", "cause"],
    "description": "With a failed acknowledgement (console-agent sends it): the network steps DNS → TCP → "
                   "TLS the agent ran from the service's own host against every node it was given, with "
                   "the cause codes of a diagnosis. Kept with the acknowledgement beside the console's "
                   "own check of the protocol at that moment (acknowledged.diagnosis = {agent, console, "
                   "summary} in the service's roll-out state). At most 16,000 bytes.",
    "properties": {"protocol": {"enum": PROTOCOL_NAMES},
                   "ok": {"type": "boolean", "description": "one node answered every step"},
                   "cause": {"type": "string", "description": "a cause code (CONTRACT.md, Diagnosis)"},
                   "from": {"type": "string", "description": "the service's host name"},
                   "at": {"type": "string"}, "steps": _STEPS,
                   "nodes": {"type": "array", "maxItems": 32, "items": {
                       "type": "object", "required": ["node", "cause", "steps"],
                       "properties": {"node": {"type": "string"}, "ok": {"type": "boolean"},
                                      "cause": {"type": "string"}, "steps": _STEPS}}},
                   "warnings": {"type": "array"}}}

def _error(text: str) -> dict[str, Any]:
    return {"description": text, "content": {"application/json": {
        "schema": {"$ref": "#/components/schemas/Error"}}}}


def _name(what: str) -> dict[str, Any]:
    return {"name": "name", "in": "path", "required": True, "schema": {"type": "string"},
            "description": what}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


ROLLOUT_PLAN: dict[str, Any] = {
    "type": "object", "additionalProperties": False, "description": (
        "Roll the change out in waves: the first wave (the named services, plus a share of all "
        "services, first by name) gets it first; the others keep being served the version they run "
        "until every service of the wave acknowledged applied within the deadline. A failed "
        "acknowledgement or a missed deadline halts the roll-out."),
    "properties": {
        "wave": {"type": "array", "items": {"type": "string"},
                 "description": "registered services of the first wave"},
        "share": {"type": ["integer", "null"], "minimum": 1, "maximum": 100,
                  "description": "per cent of all services in the first wave"},
        "deadline": {"type": "integer", "minimum": 1, "maximum": 604800, "default": 300,
                     "description": "seconds the wave has to acknowledge applied"},
        "auto_rollback": {"type": "boolean", "default": False,
                          "description": "roll back by itself when the roll-out halts"}}}

ROLLOUT: dict[str, Any] = {"type": "object", "properties": {
    "rollout": {"type": ["object", "null"], "properties": {
        "id": {"type": "integer"}, "version": {"type": "integer"},
        "from_version": {"type": "integer", "description": "what the held services are served"},
        "state": {"enum": ["wave", "halted", "released", "rolled_back", "superseded"]},
        "halted": {"type": "boolean"}, "reason": {"type": ["string", "null"]},
        "wave": {"type": "array", "items": {"type": "string"}},
        "held": {"type": "array", "items": {"type": "string"}},
        "deadline": {"type": "integer"}, "deadline_at": {"type": "string"},
        "auto_rollback": {"type": "boolean"}, "text": {"type": "string"},
        "services": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "wave": {"enum": [1, 2]},
            "state": {"enum": ["applied", "failed", "held", "pending"]},
            "serving_version": {"type": ["integer", "null"]}}}}}}}}


def rollout_paths() -> dict[str, Any]:
    """Paths of roll-outs in waves."""
    rid = {"name": "rollout_id", "in": "path", "required": True, "schema": {"type": "integer"}}
    ok = {"description": "OK", "content": {"application/json": {"schema": ROLLOUT}}}
    return {
        "/rollouts/current": {"get": {"summary": "The roll-out in waves in progress (else the newest)",
                                      "responses": {"200": ok}}},
        "/rollouts/{rollout_id}": {"parameters": [rid], "get": {
            "summary": "One roll-out in waves", "responses": {"200": ok,
                                                             "404": _error("No such roll-out")}}},
        "/rollouts/{rollout_id}/resume": {"parameters": [rid], "post": {
            "summary": "Resume a halted roll-out: the first wave gets its deadline again",
            "responses": {"200": ok, "404": _error("No such roll-out"),
                          "409": _error("Not halted")}}},
        "/rollouts/{rollout_id}/rollback": {"parameters": [rid], "post": {
            "summary": "Roll back, in one action, to the last version every service applied",
            "responses": {"200": ok, "404": _error("No such roll-out"),
                          "409": _error("Not in progress")}}},
    }


def delivery_paths() -> dict[str, Any]:
    """Paths of configuration delivery and tokens."""
    service, adapter = _name("service name"), _name("adapter name")
    config = {"type": "object", "required": ["service", "version", "etag", "priorities",
                                             "protocol", "brokers"], "properties": {
        "service": {"type": "string"}, "version": {"type": ["integer", "null"]},
        "etag": {"type": "string"}, "priorities": {"type": "array", "items": {"enum": PROTOCOL_NAMES}},
        "protocol": {"enum": [*PROTOCOL_NAMES, None]}, "reason": {"type": "string"},
        "brokers": {"type": "object", "additionalProperties": {
            "type": "object", "description": "every field's effective value; secrets and TLS "
                                             "material (PEM) only for the service's own token"}}}}
    return {
        **rollout_paths(),
        "/services/{name}": {
            "parameters": [service],
            "get": {"summary": "A service, the protocol it gets, and its roll-out state",
                    "responses": {"200": {"description": "OK"}, "404": _error("Not registered")}},
            "delete": {"summary": "Delete a service without adapters",
                       "responses": {"200": {"description": "Deleted"},
                                     "404": _error("Not registered"),
                                     "409": _error("It still has adapters")}},
        },
        "/services/{name}/config": {
            "parameters": [service, {"name": "If-None-Match", "in": "header", "required": False,
                                     "schema": {"type": "string"}},
                           {"name": "wait", "in": "query", "required": False,
                            "description": "A watch: with a current If-None-Match, held until the "
                                           "document changes (200) or this many seconds pass (304); "
                                           "1 to CONSOLE_WATCH_MAX_WAIT (default 300)",
                            "schema": {"type": "integer", "minimum": 1}}],
            "get": {"summary": "The service's effective configuration (secrets only for its own "
                               "service token; audited — once per version through watches)",
                    "responses": {"200": {"description": "OK", "headers": {"ETag": {
                        "schema": {"type": "string"}}},
                        "content": {"application/json": {"schema": config}}},
                        "304": {"description": "Not modified (If-None-Match matched; a watch's "
                                                "wait ended)"},
                        "400": _error("wait outside 1 to CONSOLE_WATCH_MAX_WAIT (errors.wait)"),
                        "403": _error("A service token of another service"),
                        "404": _error("Not registered"),
                        "429": _error("This process holds as many watches as CONSOLE_WATCH_HELD "
                                      "allows (Retry-After)")}},
        },
        "/services/{name}/ack": {
            "parameters": [service],
            "post": {"summary": "What the service runs now (from its own service token)",
                     "requestBody": _json({"type": "object", "required": ["version", "status"],
                                           "properties": {
                                               "version": {"type": "integer", "minimum": 0},
                                               "status": {"enum": ["applied", "failed"]},
                                               "message": {"type": "string", "maxLength": 2000},
                                               "diagnosis": AGENT_DIAGNOSIS}}),
                     "responses": {"200": {"description": "Recorded"},
                                   "400": _error("Not a JSON object"),
                                   "403": _error("Not this service's token"),
                                   "404": _error("Not registered"),
                                   "422": _error("Invalid fields (errors.diagnosis: steps that are "
                                                 "not DNS/TCP/TLS, an unknown cause code, too "
                                                 "large)")}},
        },
        "/services/{name}/diagnose": {
            "parameters": [service],
            "post": {"summary": "Ask the service's agent to run the network steps (DNS → TCP → TLS) "
                                "from its own host; its configuration answers carry "
                                "Console-Diagnose: <request> until it sends them (a held watch ends at "
                                "once with a 304)",
                     "responses": {"202": {"description": "Asked (diagnosis_request: request, "
                                                          "requested_at, requested_by, late)"},
                                   "403": _error("Not an admin"),
                                   "404": _error("Not registered")}},
        },
        "/services/{name}/diagnosis": {
            "parameters": [service],
            "post": {"summary": "The network steps the service's agent ran for a diagnosis asked of "
                                "it (from its own service token); kept beside the console's own check "
                                "(requested_diagnosis in GET /services/{name})",
                     "requestBody": _json({"type": "object", "required": ["request", "diagnosis"],
                                           "properties": {
                                               "request": {"type": "string", "maxLength": 32,
                                                           "description": "the Console-Diagnose header"},
                                               "diagnosis": AGENT_DIAGNOSIS}}),
                     "responses": {"200": {"description": "Kept ({agent, console, summary, request, "
                                                          "requested_by, requested_at, received_at})"},
                                   "400": _error("Not a JSON object"),
                                   "403": _error("Not this service's token"),
                                   "404": _error("Not registered"),
                                   "409": _error("Not the pending request (errors.request)"),
                                   "422": _error("Invalid fields (errors.request, errors.diagnosis)")}},
        },
        "/rollout": {"get": {"summary": "Roll-out of a version over all services",
                             "parameters": [{"name": "version", "in": "query", "required": False,
                                             "schema": {"type": "integer"}}],
                             "responses": {"200": {"description": "OK"}}}},
        "/adapters/{name}": {
            "parameters": [adapter],
            "delete": {"summary": "Delete an adapter", "responses": {
                "200": {"description": "Deleted"}, "404": _error("No such adapter")}},
        },
        "/adapters/{name}/config": {
            "parameters": [adapter],
            "get": {"summary": "The settings the adapter must use now, and whether they diverge "
                               "from its snapshot",
                    "responses": {"200": {"description": "OK"}, "403": _error("Another service"),
                                  "404": _error("No such adapter")}},
        },
        "/adapters/{name}/migrate": {
            "parameters": [adapter],
            "post": {"summary": "Move the adapter onto the current settings (protocol by priority, "
                                "new snapshot)",
                     "responses": {"200": {"description": "Migrated"},
                                   "404": _error("No such adapter"),
                                   "422": _error("No enabled protocol for its service")}},
        },
        "/tokens": {
            "get": {"summary": "API tokens (never the tokens themselves)",
                    "responses": {"200": {"description": "OK"}}},
            "post": {"summary": "Create a token (answered once)",
                     "requestBody": _json({"type": "object", "required": ["name", "role"],
                                           "properties": {
                                               "name": {"type": "string"},
                                               "role": {"enum": ["admin", "viewer", "service"]},
                                               "service": {"type": "string"}}}),
                     "responses": {"201": {"description": "Created"},
                                   "400": _error("Not a JSON object"),
                                   "422": _error("Invalid fields")}},
        },
        "/tokens/{name}": {
            "parameters": [_name("token name")],
            "delete": {"summary": "Revoke a token", "responses": {
                "200": {"description": "Revoked"}, "404": _error("No such token")}},
        },
    }
