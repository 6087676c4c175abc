"""Effective settings, resolved in one place: environment > saved > default, every value with its
source.

`resolve()` is pure: it takes the saved layer and the environment as arguments, so the page, the API,
the CLI, the checkers and the tests all see the same answer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping

from ..brokers import PROTOCOLS, SPECS
from .references import SecretRef, parse_reference
from .schema import ALIASES, DEFAULT_PRIORITIES, PRIORITY_ENV, SCHEMA, Field
from .values import Invalid, parse_value

Source = Literal["default", "saved", "env"]


class Masked:
    """Stands for a secret that is set but not revealed."""

    def __repr__(self) -> str:
        return "<secret>"


MASKED = Masked()


@dataclass
class StoredFile:
    """Saved TLS material of one slot, as the resolver needs it."""

    filename: str
    format: str
    certs_pem: str
    has_key: bool
    key_pem: str | None = None          # only when revealed
    uploaded_at: Any = None
    uploaded_by: str | None = None


@dataclass
class Saved:
    """The saved layer of one protocol."""

    values: dict[str, Any] = field(default_factory=dict)
    secrets: dict[str, Any] = field(default_factory=dict)      # name -> plaintext or MASKED
    files: dict[str, StoredFile] = field(default_factory=dict)  # slot -> file


@dataclass
class Resolved:
    """The effective value of one field and where it came from."""

    field: Field
    value: Any
    source: Source
    env_var: str | None = None
    shadowed: bool = False          # a saved value exists but the environment wins
    conflict: str | None = None     # an alias disagrees with the SP_ variable that won
    env_error: str | None = None    # the environment gave an unusable value (ignored)
    reference: Any = None           # references.RefStatus when the saved value is a reference

    @property
    def locked(self) -> bool:
        return self.source == "env"

    @property
    def is_set(self) -> bool:
        return self.value not in (None, "")

    def public(self) -> dict[str, Any]:
        """JSON-safe view: secrets reduced to {"set": bool}, files to their description."""
        out: dict[str, Any] = {"source": self.source}
        if self.field.is_file and self.reference is not None:
            out["value"] = {**file_public(self.value), "set": True, **self.reference.public()}
        elif self.field.secret and self.reference is not None:
            out["value"] = {"set": True, **self.reference.public()}
        elif self.field.secret:
            out["value"] = {"set": self.is_set}
        elif self.field.is_file:
            out["value"] = file_public(self.value)
        else:
            out["value"] = self.value
        if self.env_var:
            out["env"] = self.env_var
        if self.shadowed:
            out["shadowed"] = True
        if self.conflict:
            out["conflict"] = self.conflict
        if self.env_error:
            out["env_error"] = self.env_error
        return out


def file_public(value: Any) -> dict[str, Any]:
    """Public description of a file value (never the key)."""
    if not value:
        return {"set": False}
    out = {"set": True}
    for key in ("filename", "format", "path", "env", "certificates", "error"):
        if value.get(key) is not None:
            out[key] = value[key]
    return out


@dataclass
class ProtocolSettings:
    """All effective fields of one protocol."""

    protocol: str
    fields: dict[str, Resolved]
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> Any:
        return self.fields[name].value

    def get(self, name: str, default: Any = None) -> Any:
        item = self.fields.get(name)
        return default if item is None else item.value

    @property
    def enabled(self) -> bool:
        return bool(self["enabled"])

    def public(self) -> dict[str, Any]:
        return {name: r.public() for name, r in self.fields.items()}

    def values(self) -> dict[str, Any]:
        """Plain effective values (secrets as they were resolved: masked unless revealed)."""
        return {name: r.value for name, r in self.fields.items()}


def _alias_values(protocol: str, env: Mapping[str, str]) -> tuple[dict[str, tuple[Any, str]], list[str]]:
    """Values set through the alias variables of `protocol`: {field: (value, variable)}."""
    out: dict[str, tuple[Any, str]] = {}
    errors: list[str] = []
    for var, proto in ALIASES.items():
        if proto != protocol or not env.get(var, "").strip():
            continue
        raw = env[var]
        try:
            parsed, ignored = SPECS[protocol].aliases[var](raw)
            errors += ignored
        except Invalid as exc:
            errors.append(f"{var} is ignored: {exc}")
            continue
        for name, value in parsed.items():
            out[name] = (value, var)
    return out, errors


def _file_from_env(path: str, slot: str, load: Callable[[str, str], dict[str, Any]]) -> dict[str, Any]:
    try:
        return load(path, slot)
    except Exception as exc:  # the loader raises CertError with a message for the operator
        return {"path": path, "error": str(exc)}


def resolve(
    protocol: str,
    saved: Saved,
    env: Mapping[str, str],
    load_file: Callable[[str, str], dict[str, Any]] | None = None,
) -> ProtocolSettings:
    """Effective settings of `protocol` from the saved layer and the environment."""
    aliases, notes = _alias_values(protocol, env)
    fields: dict[str, Resolved] = {}
    for f in SCHEMA[protocol]:
        saved_value, has_saved = _saved_value(f, saved)
        result = Resolved(f, saved_value if has_saved else f.default,
                          "saved" if has_saved else "default")
        var = f.env_var(protocol)
        raw = env.get(var)
        if raw is not None and raw.strip() != "":
            try:
                value = _env_value(f, raw, load_file)
            except Invalid as exc:
                result.env_error = f"{var} is ignored: {exc}"
            else:
                if f.name in aliases and aliases[f.name][0] != value:
                    result.conflict = f"{aliases[f.name][1]} also sets {f.name}; {var} wins."

                result = Resolved(f, value, "env", var, shadowed=has_saved,
                                  conflict=result.conflict)
                if f.secret and isinstance(raw, str) and raw.startswith(("file:", "env:")):
                    result.value = _env_reference(raw)
        elif f.name in aliases:
            value, alias = aliases[f.name]
            if f.is_file:
                value = _env_value(f, value, load_file)
            result = Resolved(f, value, "env", alias, shadowed=has_saved)
        fields[f.name] = result
    settings = ProtocolSettings(protocol, fields, notes)
    _check_env_pairs(settings, env)
    return settings


def _saved_value(f: Field, saved: Saved) -> tuple[Any, bool]:
    if f.is_file:
        ref = (saved.secrets if f.secret else saved.values).get(f.name)
        if isinstance(ref, SecretRef):          # a file: reference wins over an uploaded file
            return ref, True
        slot = "tls_cert" if f.name == "tls_key" else f.name
        stored = saved.files.get(slot)
        if stored is None:
            return None, False
        if f.name == "tls_key":
            if not stored.has_key:
                return None, False
            return (stored.key_pem if stored.key_pem is not None else MASKED), True
        return {"filename": stored.filename, "format": stored.format,
                "certs_pem": stored.certs_pem, "uploaded_at": stored.uploaded_at}, True
    if f.secret:
        if f.name in saved.secrets:
            return saved.secrets[f.name], True
        return None, False
    if f.name in saved.values:
        return saved.values[f.name], True
    return None, False


def _env_value(f: Field, raw: str, load_file: Callable[[str, str], dict[str, Any]] | None) -> Any:
    if f.is_file:
        if load_file is None:
            return {"path": raw.strip()}
        return _file_from_env(raw.strip(), f.name, load_file)
    if f.env_upper:
        raw = raw.upper()
    return parse_value(f, raw if f.kind == "secret" else raw.strip())


def _env_reference(raw: str) -> Any:
    """An SP_ variable that holds a reference rather than the secret itself."""
    try:
        return SecretRef(parse_reference(raw))
    except Invalid:
        return raw


def _check_env_pairs(settings: ProtocolSettings, env: Mapping[str, str]) -> None:
    cert, key = settings.fields["tls_cert"], settings.fields["tls_key"]
    if cert.source == "env" and not key.is_set:
        settings.notes.append(f"{cert.env_var} is set but {key.field.env_var(settings.protocol)} "
                              "is not: the client certificate cannot be used without its key.")
    if key.source == "env" and not cert.is_set:
        settings.notes.append(f"{key.env_var} is set but {cert.field.env_var(settings.protocol)} "
                              "is not: the key cannot be used without its certificate.")


def resolve_priorities(saved: list[str], env: Mapping[str, str]) -> tuple[list[str], dict[str, Any]]:
    """Effective priority list and a description of where it came from."""
    order = [p for p in saved if p in PROTOCOLS]
    order += [p for p in DEFAULT_PRIORITIES if p not in order]
    info: dict[str, Any] = {"source": "saved" if saved else "default", "saved": order[:]}
    raw = env.get(PRIORITY_ENV, "").strip()
    if raw:
        wanted = raw.lower()
        if wanted in PROTOCOLS:
            order.remove(wanted)
            order.insert(0, wanted)
            info.update(source="env", env=PRIORITY_ENV, top=wanted)
        else:
            info["env_error"] = (f"{PRIORITY_ENV}={raw} is ignored: use one of "
                                 f"{', '.join(PROTOCOLS)}.")
    return order, info
