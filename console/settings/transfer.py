"""Export and import of the configuration as YAML, and rollback to a stored version.

Export holds every protocol's saved values, the public TLS certificates and the priority list — never
a secret or a private key. Import validates everything first and applies all or nothing, through the
same impact check as any other change. Its one rule (MERGE_RULE): it changes what the file names and
nothing else; `replace` resets everything the file leaves out (REPLACE_RULE). A secret the file leaves
out keeps its stored value either way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import certs, lazy
from ..brokers import PROTOCOLS
from ..delivery import plans
from ..extensions import db
from ..messaging import references
from ..messaging.effective import current
from ..messaging.schema import DEFAULT_PRIORITIES, FIELDS
from ..messaging.state import State
from ..messaging.values import Invalid, parse_value
from ..models import ConfigVersion, utcnow
from . import changes as change_log
from . import service

yaml = lazy.module("yaml")    # only export and import read or write YAML

FORMAT_VERSION = 1
MERGE_RULE = ("Import changes only what the file names: a protocol, field, TLS file or priority list "
              "it leaves out keeps its saved value (a field given as null goes back to its default). "
              "Replace everything instead with --replace (API: ?replace=true).")
REPLACE_RULE = ("Import replaces everything: each protocol, field and TLS file the file leaves out goes "
                "back to its default (removed), and so does the priority order; stored secrets are "
                "kept.")


def export_document() -> dict[str, Any]:
    """The configuration as a plain structure (what the YAML holds)."""
    state = current().state
    brokers: dict[str, Any] = {}
    for protocol in PROTOCOLS:
        values = {k: (v["ref"] if references.stored(v) else v)
                  for k, v in state.values.get(protocol, {}).items()}
        for name, entry in state.secrets.get(protocol, {}).items():
            if references.stored(entry):        # a reference is exported; a value never
                values[name] = entry["ref"]
        files = state.files.get(protocol, {})
        for slot, item in files.items():
            values[slot] = {"filename": item["filename"], "pem": item["certs_pem"]}
        brokers[protocol] = values
    order, _ = service.priorities()
    return {"messaging_console": FORMAT_VERSION, "exported_at": utcnow().isoformat(timespec="seconds"),
            "priorities": state.priorities or order, "brokers": brokers}


def export_yaml() -> str:
    """The configuration as YAML, with a header saying what is left out."""
    header = ("# Messaging Console configuration export. Secrets (passwords, tokens, OAuth2 client\n"
              "# secrets) and private keys are never exported: an import keeps the stored ones.\n"
              "# A secret given as a reference (file:/path, env:NAME) is exported as the reference.\n"
              "# Values set by environment variables are not part of the saved configuration.\n")
    return header + yaml.safe_dump(export_document(), sort_keys=False, allow_unicode=True)


@dataclass
class ImportResult:
    """Outcome of an import: errors by "protocol.field" (nothing applied when any), or the outcome."""

    errors: dict[str, str] = field(default_factory=dict)
    warnings: dict[str, str] = field(default_factory=dict)
    outcome: change_log.Outcome | None = None
    rule: str = MERGE_RULE

    @property
    def ok(self) -> bool:
        return not self.errors and self.outcome is not None and self.outcome.status != "confirm"


def _candidate_from(document: Any, current: State, warnings: dict[str, str],
                    replace: bool = False) -> tuple[State, dict[str, str]]:
    errors: dict[str, str] = {}
    if not isinstance(document, dict) or "brokers" not in document:
        return current, {"file": "Not a Messaging Console export: it needs a 'brokers' section."}
    version = document.get("messaging_console", FORMAT_VERSION)
    if version != FORMAT_VERSION:
        errors["file"] = f"Export format {version} is not supported (this console reads {FORMAT_VERSION})."
    brokers = document.get("brokers") or {}
    if not isinstance(brokers, dict):
        return current, {"brokers": "Expected a mapping of protocol names."}
    candidate = current.copy()
    for protocol in brokers:
        if protocol not in PROTOCOLS:
            errors[str(protocol)] = f"Unknown protocol. Use {', '.join(PROTOCOLS)}."
    for protocol in PROTOCOLS:
        if not replace and protocol not in brokers:
            continue                        # not named: kept as saved
        section = brokers.get(protocol) or {}
        if not isinstance(section, dict):
            errors[protocol] = "Expected a mapping of field names."
            continue
        plain = {}
        for name, value in section.items():
            f = FIELDS[protocol].get(name)
            if f is None:
                errors[f"{protocol}.{name}"] = f"{protocol} has no field '{name}'."
            elif f.secret and references.is_reference(value):
                try:
                    ref = references.parse_reference(value)
                except Invalid as exc:
                    errors[f"{protocol}.{name}"] = str(exc)
                    continue
                secrets = candidate.secrets.setdefault(protocol, {})
                secrets[name] = service.stored_reference(references.SecretRef(ref), secrets.get(name))
            elif f.secret:
                errors[f"{protocol}.{name}"] = ("Secrets are not imported; set them on the page or "
                                                "API, or give a reference (file:/path, env:NAME).")
            elif not f.is_file:
                plain[name] = value
        locked = service.env_locked(protocol)
        wanted = ({n: plain.get(n) for n, f in FIELDS[protocol].items()
                   if not f.is_file and not f.secret} if replace else plain)
        prep = service.prepare_changes(
            protocol, {n: v for n, v in wanted.items() if n not in locked},
            saved=candidate.saved(protocol))
        for name, message in prep.errors.items():
            if FIELDS[protocol][name].secret:
                warnings[f"{protocol}.{name}"] = (
                    f"{message} Exports carry no secrets: set it on the page or the API.")
            else:
                errors[f"{protocol}.{name}"] = message
        if prep.saved is not None and not any(
                not FIELDS[protocol][n].secret for n in prep.errors):
            values = dict(prep.saved.values)
            for name in (n for n in locked if n in wanted):
                try:
                    value = None if wanted.get(name) is None else parse_value(
                        FIELDS[protocol][name], wanted[name])
                except Invalid as exc:
                    errors[f"{protocol}.{name}"] = str(exc)
                    continue
                values.pop(name, None)
                if value is not None and value != FIELDS[protocol][name].default:
                    values[name] = value
            candidate.values[protocol] = {
                k: (values[k].as_json() if isinstance(values[k], references.SecretRef) else values[k])
                for k in sorted(values)}
        files = candidate.files.setdefault(protocol, {})
        for slot in ("tls_ca", "tls_cert"):
            if not replace and slot not in section:
                continue                    # not named: kept as stored
            item = section.get(slot)
            if references.is_reference(item):
                try:
                    ref = references.parse_reference(str(item))
                except Invalid as exc:
                    errors[f"{protocol}.{slot}"] = str(exc)
                    continue
                kept = candidate.values.setdefault(protocol, {})
                kept[slot] = service.stored_reference(references.SecretRef(ref),
                                                      current.values.get(protocol, {}).get(slot))
                files.pop(slot, None)
                continue
            candidate.values.get(protocol, {}).pop(slot, None)    # an upload, or nothing, replaces it
            if item is None:
                files.pop(slot, None)
                continue
            pem = item.get("pem") if isinstance(item, dict) else None
            if not isinstance(pem, str):
                errors[f"{protocol}.{slot}"] = "Expected {filename, pem}."
                continue
            try:
                parsed = certs.parse_truststore(pem.encode())
            except certs.CertError as exc:
                errors[f"{protocol}.{slot}"] = str(exc)
                continue
            old = current.files.get(protocol, {}).get(slot)
            if slot == "tls_cert" and (old is None or old["certs_pem"] != parsed.certs_pem):
                errors[f"{protocol}.{slot}"] = ("A client certificate can only be imported when the "
                                                "same certificate and its key are stored: upload it "
                                                "with its key instead.")
                continue
            files[slot] = {**(old or {}), "filename": str(item.get("filename") or "import.pem")[:255],
                           "format": (old or {}).get("format", parsed.format),
                           "certs_pem": parsed.certs_pem,
                           "key_ciphertext": (old or {}).get("key_ciphertext"),
                           "uploaded_at": (old or {}).get("uploaded_at") or utcnow().isoformat(),
                           "uploaded_by": (old or {}).get("uploaded_by")}
        if not files:
            candidate.files.pop(protocol, None)
    if "priorities" in document:
        problem = service.validate_priorities(document["priorities"])
        if problem:
            errors["priorities"] = problem
        elif current.priorities or list(document["priorities"]) != list(DEFAULT_PRIORITIES):
            candidate.priorities = list(document["priorities"])
    elif replace:
        candidate.priorities = []           # the default order
    return candidate, errors


def import_yaml(text: str, *, actor: str | None, origin: str, dry_run: bool = False,
                confirm: bool = False, replace: bool = False) -> ImportResult:
    """Validate a YAML export and apply it all, or nothing: what the file names, or with `replace`
    everything (see MERGE_RULE and REPLACE_RULE, which `rule` of the result says)."""
    result = ImportResult(rule=REPLACE_RULE if replace else MERGE_RULE)
    plan: plans.Plan | None = None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        result.errors["file"] = f"Not valid YAML{where}: {getattr(exc, 'problem', exc)}."
    except RecursionError:
        result.errors["file"] = "Not a console export: the YAML is nested far too deeply."
    else:
        if not dry_run:
            change_log.lock()       # built on what is saved now, written before anyone else writes
        candidate, result.errors = _candidate_from(document, current().state.copy(), result.warnings,
                                                   replace)
        plan = _plan_of(document, result.errors)
        if not result.errors:
            for protocol in PROTOCOLS:
                settings = service.effective(protocol, saved=candidate.saved(protocol))
                for name, message in service.findings(settings)[0].items():
                    if FIELDS[protocol][name].secret:
                        result.warnings[f"{protocol}.{name}"] = (
                            f"{message} Exports carry no secrets: set it on the page or the API.")
                    else:
                        result.errors[f"{protocol}.{name}"] = message
    if result.errors:
        if not dry_run:
            change_log.record_rejection("import", actor=actor, origin=origin, protocol=None,
                                        errors=result.errors)
        return result
    plans.propose(plan)
    try:
        result.outcome = change_log.commit(candidate, actor=actor, origin=origin, action="import",
                                           dry_run=dry_run, confirm=confirm,
                                           summary="Import of a YAML configuration")
    finally:
        plans.propose(None)
    return result


def _plan_of(document: Any, errors: dict[str, str]) -> plans.Plan | None:
    """The roll-out plan of an import file's `rollout:` key (none: every service gets the change
    at once); its errors go to `errors` by `rollout.<field>`."""
    if not isinstance(document, dict) or document.get("rollout") is None:
        return None
    try:
        return plans.parse(document["rollout"])
    except plans.PlanInvalid as exc:
        errors.update(exc.errors)
        return None


def versions(limit: int = 100) -> list[ConfigVersion]:
    """Stored versions, newest first."""
    return list(db.session.execute(db.select(ConfigVersion).order_by(ConfigVersion.id.desc())
                                   .limit(limit)).scalars())


def version(version_id: int) -> ConfigVersion | None:
    return db.session.get(ConfigVersion, version_id)


def version_diff(old_id: int, new_id: int) -> list[change_log.FieldChange] | None:
    """What changed in the saved configuration from one version to another."""
    a, b = version(old_id), version(new_id)
    if a is None or b is None:
        return None
    return change_log.saved_diff(State.from_json(a.state), State.from_json(b.state))


def rollback(version_id: int, *, actor: str | None, origin: str, confirm: bool = False,
             dry_run: bool = False) -> change_log.Outcome | None:
    """Make a stored version the configuration again, through the impact check; the new version
    is labelled as a rollback to `version_id` with what the rollback itself changes (not the change
    that once made the target version)."""
    target = version(version_id)
    if target is None:
        return None
    return change_log.commit(State.from_json(target.state), actor=actor, origin=origin,
                             action="rollback", confirm=confirm, dry_run=dry_run,
                             label=f"Rollback to version {version_id}")



def rollback_message(version_id: int, outcome: change_log.Outcome) -> str:
    """What a rollback did, in the words the page and the API answer with."""
    if outcome.status == "unchanged":
        return "Nothing to roll back: the configuration already equals that version."
    what = "; ".join(c.label() for c in outcome.saved_changes)
    if outcome.status == "applied":
        return f"Rolled back to version {version_id}: {what}. This is now version {outcome.version_id}."
    return f"Rolling back to version {version_id} would change: {what}."
