"""What every connection of the example service shares: the settings, TLS from delivered PEM text, the
error type, and the readers of setting values and of socket / TLS errors."""
from __future__ import annotations

import os
import re
import shutil
import ssl
import tempfile
from typing import Any, Callable, Mapping


class ConnectFailed(Exception):
    """The broker could not be used with these settings; the message is the broker's reason."""


class PemFiles:
    """The PEM texts of `tls_ca`, `tls_cert` and `tls_key` as files in a private temporary directory."""

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.directory: str | None = None
        self.paths: dict[str, str] = {}
        for name in ("tls_ca", "tls_cert", "tls_key"):
            text = settings.get(name)
            if text:
                self.paths[name] = self._write(name, str(text))

    def _write(self, name: str, text: str) -> str:
        if self.directory is None:
            self.directory = tempfile.mkdtemp(prefix="console-example-tls-")
            os.chmod(self.directory, 0o700)
        path = os.path.join(self.directory, f"{name}.pem")
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w", encoding="ascii") as handle:
            handle.write(text if text.endswith("\n") else text + "\n")
        return path

    def ssl_context(self, verify_hostname: bool) -> ssl.SSLContext:
        """A client context: the delivered CA (else the system store), client certificate, verification on."""
        try:
            context = ssl.create_default_context(cafile=self.paths.get("tls_ca"))
            if "tls_cert" in self.paths:
                context.load_cert_chain(self.paths["tls_cert"], self.paths.get("tls_key"))
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConnectFailed(f"the delivered TLS material cannot be loaded: {ssl_text(exc)}") from None
        context.check_hostname = verify_hostname
        return context

    def remove(self) -> None:
        """Delete the files and their directory."""
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
            self.paths = {}


class Connection:
    """An open, proven broker connection."""

    protocol = ""
    default_port = 0

    def __init__(self, settings: Mapping[str, Any], name: str) -> None:
        self.settings = dict(settings)
        self.name = name
        self.host = str(settings.get("host") or "localhost")
        self.port = int_setting(settings.get("port"), self.default_port)
        self.timeout = float(int_setting(settings.get("connect_timeout"), 10))
        self.tls = bool_setting(settings.get("tls"), False)
        self.pem = PemFiles({})
        self.on_event: Callable[[str], None] | None = None
        self._closed = False

    @property
    def broker(self) -> str:
        """`host:port` of the broker in use."""
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        """True while the connection to the broker is up."""
        raise NotImplementedError

    def round_trip(self) -> float:
        """Publish one message on the private topic or queue and receive it; seconds taken."""
        raise NotImplementedError

    def open(self) -> None:
        """Connect and prove one round trip; ConnectFailed with the broker's reason."""
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection and remove its TLS files."""
        self.pem.remove()

    def _event(self, what: str, detail: str = "") -> None:
        """Tell `on_event` that the open connection was lost or came back (not while opening or closing)."""
        if self.on_event is not None and not self._closed:
            self.on_event(f"{what} {self.protocol} {self.broker}" + (f": {detail}" if detail else ""))

    def _ssl(self) -> ssl.SSLContext | None:
        """The TLS context from the delivered PEM text (written to private files now), or None."""
        if not self.tls:
            return None
        self.pem.remove()
        self.pem = PemFiles(self.settings)
        return self.pem.ssl_context(bool_setting(self.settings.get("tls_verify_hostname"), True))


def int_setting(value: Any, default: int) -> int:
    """An integer setting, `default` when empty or not a number."""
    try:
        return int(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def bool_setting(value: Any, default: bool) -> bool:
    """A boolean setting (true/false, 1/0, yes/no, on/off), `default` when empty."""
    if value is None or value == "":
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def optional_setting(value: Any) -> str | None:
    """A text setting, None when empty."""
    return None if value in (None, "") else str(value)


def ssl_text(exc: BaseException) -> str:
    """The reason of a TLS error without OpenSSL's source location."""
    text = getattr(exc, "verify_message", None)
    if text:
        return f"certificate verify failed: {text}"
    return re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(exc) or type(exc).__name__)


def os_text(exc: BaseException) -> str:
    """A socket or TLS error as a short reason."""
    if isinstance(exc, (ssl.SSLError, ssl.CertificateError)):
        return "TLS: " + ssl_text(exc)
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (TimeoutError, OSError)) and "timed out" in str(exc):
        return "connect timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
