"""Rules that span several fields of one protocol, checked on the candidate effective settings.

A rule names every field it involves. When all of them come from the environment, the person at the
page cannot fix it there, so it is reported as a warning about the environment instead of blocking
an unrelated save. The TLS rules hold for every protocol; each protocol's own rules are in its spec
(console/brokers/<protocol>_spec.py).
"""
from __future__ import annotations

from ..brokers import SPECS
from ..brokers.kafka_spec import security as kafka_security
from ..brokers.spec import Finding
from .resolve import ProtocolSettings

__all__ = ["Finding", "check", "kafka_security"]


def _tls_common(s: ProtocolSettings) -> list[Finding]:
    out: list[Finding] = []
    cert = s.fields["tls_cert"]
    for f in (s.fields["tls_ca"], cert, s.fields["tls_key"]):
        if isinstance(f.value, dict) and f.value.get("error"):
            out.append(Finding((f.field.name,), f.field.name, f.value["error"]))
    uses_tls = SPECS[s.protocol].asks_tls(s)
    if uses_tls and not s.fields["tls_ca"].is_set:
        out.append(Finding(("tls", "tls_ca"), "tls_ca",
                           "TLS is on without a truststore: the system CA store will be used, "
                           "which only trusts public CAs.", "warning"))
    if not uses_tls and (cert.is_set or s.fields["tls_ca"].is_set):
        out.append(Finding(("tls",), "tls",
                           "TLS material is stored but TLS is off: it is not used.", "warning"))
    if uses_tls and not s.get("tls_verify_hostname"):
        out.append(Finding(("tls_verify_hostname",), "tls_verify_hostname",
                           "Host name verification is off: any certificate from the trusted CA "
                           "is accepted for any host.", "warning"))
    return out


def check(s: ProtocolSettings) -> list[Finding]:
    """Every cross-field finding of one protocol's candidate settings."""
    return _tls_common(s) + SPECS[s.protocol].rules(s)
