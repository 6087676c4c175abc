"""Test PKI: a CA and the certificates the broker lab and the tests need.

Used by the broker harness (scripts/brokerlab.py) and by the test suite. Everything is generated
locally with the `cryptography` package; nothing here is used by the console at run time.

    python scripts/pki.py DIR      # writes the files listed in `write_pki`
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass
class Issued:
    """A certificate with its private key."""

    cert: x509.Certificate
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_key(kind: str = "rsa") -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """A fresh private key (RSA 2048 or EC P-256)."""
    if kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def make_ca(common_name: str = "Messaging Console Test CA", days: int = 3650) -> Issued:
    """A self-signed CA certificate."""
    key = new_key()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(cert, key)


def issue(
    ca: Issued,
    common_name: str,
    dns: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    client: bool = False,
    key_kind: str = "rsa",
) -> Issued:
    """A leaf certificate signed by `ca` (server unless `client`)."""
    key = new_key(key_kind)
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(days=1))
        .not_valid_after(not_after or now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return Issued(builder.sign(ca.key, hashes.SHA256()), key)


def write_pki(directory: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the lab's PKI to `directory` and return {name: path}.

    Files: ca, other-ca, server (localhost/127.0.0.1), wronghost (wrong.example), expired (localhost,
    expired yesterday), soon (localhost, expires in 10 days), client, and those of `write_fault_certs` —
    each as NAME.crt and NAME.key.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    now = _now()
    ca = make_ca()
    other = make_ca("Unrelated Test CA")
    local = (("localhost",), ("127.0.0.1",))
    items = {
        "ca": ca,
        "other-ca": other,
        "server": issue(ca, "localhost", *local),
        "wronghost": issue(ca, "wrong.example", ("wrong.example",)),
        "expired": issue(ca, "localhost", *local, not_before=now - dt.timedelta(days=30),
                         not_after=now - dt.timedelta(days=1)),
        "soon": issue(ca, "localhost", *local, not_after=now + dt.timedelta(days=10)),
        "client": issue(ca, "console-client", client=True),
    }
    paths = _save(out, items)
    paths.update(write_fault_certs(out))
    return paths


NOT_YET_VALID_DAYS = 30      # the "notyet" certificate's validity starts this many days after it is issued
NOT_YET_VALID_MARGIN = 2     # ... and it is issued again once its start is fewer days than this away
FAULT_CERTS = ("notyet", "other-client")


def _save(out: Path, items: dict[str, Issued]) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    for name, item in items.items():
        (out / f"{name}.crt").write_bytes(item.cert_pem())
        (out / f"{name}.key").write_bytes(item.key_pem())
        os.chmod(out / f"{name}.crt", 0o644)
        os.chmod(out / f"{name}.key", 0o644)
        paths[name] = out / f"{name}.crt"
    return paths


def _load(out: Path, name: str) -> Issued:
    cert = x509.load_pem_x509_certificate((out / f"{name}.crt").read_bytes())
    key = load_pem_private_key((out / f"{name}.key").read_bytes(), password=None)
    assert isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey))
    return Issued(cert, key)


def _fault_cert_due(out: Path, name: str) -> bool:
    try:
        cert = x509.load_pem_x509_certificate((out / f"{name}.crt").read_bytes())
    except (OSError, ValueError):
        return True
    if not (out / f"{name}.key").is_file():
        return True
    if name == "notyet":
        return cert.not_valid_before_utc < _now() + dt.timedelta(days=NOT_YET_VALID_MARGIN)
    return False


def write_fault_certs(directory: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the certificates of the lab's production faults that are missing (or, for "notyet", whose
    start comes close), signed by the existing ca and other-ca of `directory`; {name: path} written.

    Files: notyet (localhost/127.0.0.1, valid from NOT_YET_VALID_DAYS days after issue), other-client (a
    client certificate signed by other-ca, which the lab's mutual-TLS listeners refuse)."""
    out = Path(directory)
    due = [name for name in FAULT_CERTS if _fault_cert_due(out, name)]
    if not due:
        return {}
    now = _now()
    ca, other = _load(out, "ca"), _load(out, "other-ca")
    made = {
        "notyet": lambda: issue(ca, "localhost", ("localhost",), ("127.0.0.1",),
                                not_before=now + dt.timedelta(days=NOT_YET_VALID_DAYS),
                                not_after=now + dt.timedelta(days=NOT_YET_VALID_DAYS + 365)),
        "other-client": lambda: issue(other, "console-client", client=True),
    }
    return _save(out, {name: made[name]() for name in due})


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/pki.py DIR")
    for name, path in write_pki(sys.argv[1]).items():
        print(f"{name}: {path}")
