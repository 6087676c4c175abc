"""Secret references (CONTRACT § Secret references): a secret field holds `file:/path` or `env:NAME`
instead of a value. The reference is what is stored, exported, audited and shown; the value is read
when it is used. A reference in the saved configuration remembers a keyed fingerprint of what it
resolved to when it was last noticed (`seen`), so that a changed file is a new configuration version
(console/settings/references.py polls them) — the fingerprint is an HMAC under the console's key,
never a plain digest of a password."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, TypeGuard

from .values import Invalid

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_BYTES = 1 << 20         # a secret file larger than this is not read


def is_reference(value: Any) -> bool:
    """True for text written as a reference (`file:…` or `env:…`)."""
    return isinstance(value, str) and value.strip().startswith(("file:", "env:"))


def parse_reference(raw: str) -> str:
    """`raw` as a valid reference, or Invalid saying what one looks like."""
    text = raw.strip()
    if text.startswith("file:"):
        path = text[5:]
        if not path.startswith("/") or "\x00" in path or "\n" in path:
            raise Invalid(f"'{text}' is not a file reference: write file:/absolute/path.")
        return "file:" + os.path.normpath(path)
    name = text[4:]
    if not ENV_NAME.fullmatch(name):
        raise Invalid(f"'{text}' is not an environment reference: write env:NAME "
                      "(letters, digits, '_').")
    return text


@dataclass(frozen=True)
class SecretRef:
    """A reference as the saved configuration holds it."""

    ref: str
    seen: str | None = None          # keyed fingerprint of the value when last noticed
    changed_at: str | None = None    # when that value was first noticed (ISO)

    def as_json(self) -> dict[str, Any]:
        return {"ref": self.ref, "seen": self.seen, "changed_at": self.changed_at}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SecretRef:
        return cls(str(data["ref"]), data.get("seen"), data.get("changed_at"))

    def __repr__(self) -> str:          # never more than the reference
        return f"<reference {self.ref}>"


def stored(value: Any) -> TypeGuard[Mapping[str, Any]]:
    """True when a saved secret entry is a reference (a mapping), not a ciphertext."""
    return isinstance(value, Mapping) and "ref" in value


def read(ref: str, env: Mapping[str, str]) -> tuple[bytes | None, str | None]:
    """What `ref` resolves to now, or None and why not (never the value in the reason)."""
    if ref.startswith("env:"):
        name = ref[4:]
        if name not in env:
            return None, f"{ref} does not resolve: the console's environment has no {name}"
        return env[name].encode(), None
    path = Path(ref[5:])
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            return None, f"{ref} does not resolve: larger than {MAX_BYTES} bytes"
        data = path.read_bytes()
    except IsADirectoryError:
        return None, f"{ref} does not resolve: it is a directory"
    except OSError as exc:
        return None, f"{ref} does not resolve: {exc.strerror or type(exc).__name__}"
    return data, None


def text_of(data: bytes) -> str:
    """A secret file's text as a client gets it: one trailing newline dropped (editors and
    `echo` add one; Kubernetes secret files usually have none)."""
    text = data.decode("utf-8", errors="replace")
    return text[:-1] if text.endswith("\n") else text


def fingerprint(data: bytes, key: bytes) -> str:
    """A short keyed fingerprint of a secret's bytes: equal bytes, equal fingerprint."""
    return hmac.new(key, b"secret-reference\x00" + data, hashlib.sha256).hexdigest()[:16]


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


@dataclass
class RefStatus:
    """What the page and API say of one reference now."""

    ref: str
    resolves: bool
    size: int | None = None
    fingerprint: str | None = None
    changed_at: str | None = None
    error: str | None = None
    value: str | None = None           # the plaintext, kept only for a revealed resolution

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reference": self.ref, "resolves": self.resolves}
        if self.resolves:
            out.update(size=self.size, fingerprint=self.fingerprint)
        if self.changed_at:
            out["changed_at"] = self.changed_at
        if self.error:
            out["error"] = self.error
        return out


def status(item: SecretRef, env: Mapping[str, str], key: bytes, reveal: bool) -> RefStatus:
    """Resolve `item` now (the value kept only when `reveal`)."""
    data, error = read(item.ref, env)
    if data is None:
        return RefStatus(item.ref, False, changed_at=item.changed_at, error=error)
    return RefStatus(item.ref, True, size=len(data), fingerprint=fingerprint(data, key),
                     changed_at=item.changed_at, value=text_of(data) if reveal else None)
