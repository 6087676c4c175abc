"""Encryption of secrets at rest (Fernet), and the console's generated key files.

The key comes from CONSOLE_ENCRYPTION_KEY (one or more comma-separated Fernet keys, or passphrases;
the first encrypts, all decrypt, so keys can be rotated), else from `instance/encryption.key`, which is
generated on first use with 0600 permissions.
"""
from __future__ import annotations

import base64
import hashlib
import os
import secrets
import time
from pathlib import Path
from typing import Callable

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from flask import current_app


class SecretUnreadable(RuntimeError):
    """A stored secret cannot be decrypted with the configured key(s)."""


def read_or_create_key_file(path: Path, make: Callable[[], str]) -> str:
    """Return the key stored at `path`, creating it atomically with mode 0600 if absent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):
            text = path.read_text().strip()
            if text:
                return text
            time.sleep(0.02)
        raise RuntimeError(f"key file {path} is empty") from None
    value = make()
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value


def _as_fernet(key: str) -> Fernet:
    try:
        return Fernet(key.encode())
    except (ValueError, TypeError):
        digest = hashlib.sha256(key.encode()).digest()
        return Fernet(base64.urlsafe_b64encode(digest))


def _fernet() -> MultiFernet:
    cached = current_app.extensions.get("console_fernet")
    if cached is not None:
        return cached
    configured = current_app.config.get("ENCRYPTION_KEY")
    if configured:
        keys = [k.strip() for k in str(configured).split(",") if k.strip()]
    else:
        path = Path(current_app.instance_path) / "encryption.key"
        keys = [read_or_create_key_file(path, lambda: Fernet.generate_key().decode())]
    multi = MultiFernet([_as_fernet(k) for k in keys])
    current_app.extensions["console_fernet"] = multi
    return multi


def encrypt(plaintext: str) -> str:
    """Encrypt a secret for storage."""
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(ciphertext: str) -> str:
    """Decrypt a stored secret."""
    try:
        return _fernet().decrypt(ciphertext.encode()).decode()
    except InvalidToken as exc:
        raise SecretUnreadable(
            "A stored secret cannot be decrypted: CONSOLE_ENCRYPTION_KEY differs from the key it "
            "was saved with."
        ) from exc


def new_token() -> str:
    """A new random API token."""
    return "mc_" + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    """The stored form of an API token."""
    return hashlib.sha256(token.encode()).hexdigest()
