"""Parse uploaded TLS truststores and keystores, and describe the certificates they hold.

Pure functions with no Flask or database dependency. Uploads are parsed once, at upload time, and
normalised to PEM: a truststore becomes a PEM bundle of certificates, a keystore becomes a PEM
chain (leaf first) plus an unencrypted PKCS#8 PEM private key. Anything that cannot be used is
rejected with a `CertError` whose message is one clear sentence for the user (never a traceback,
never a password); the caller then saves nothing.

Formats are recognised by content, never by file name (`filename` is accepted for the caller's
convenience and ignored):

* PEM: any number of CERTIFICATE blocks (also X509 CERTIFICATE, TRUSTED CERTIFICATE and PKCS7),
  with any text around them; private keys as PRIVATE KEY, RSA/EC/DSA PRIVATE KEY or ENCRYPTED
  PRIVATE KEY blocks (legacy "Proc-Type: 4,ENCRYPTED" keys too). UTF-16 text files are accepted.
* DER: one certificate, or a PKCS#7 certificate bundle (.p7b).
* PKCS#12 (.p12/.pfx), with or without a password.
* JKS and JCEKS (Java keystores), with the store password.

Decisions:

* A PEM truststore that contains a private key is rejected: a truststore holds certificates only,
  and a plaintext key there almost always means the wrong file was chosen. PKCS#12 and JKS files
  are often shared between keystore and truststore, so for those the certificates (including the
  chains of key entries) are taken and the encrypted keys are ignored, with a note.
* JKS/JCEKS files always need the store password: without it their integrity cannot be checked.
* A keystore holds exactly one private key. A JKS with several private key entries is rejected,
  naming the aliases, rather than silently picking one: the wrong client identity would only show
  up later as a puzzling handshake failure. For PKCS#12 the key OpenSSL pairs with the file's
  certificate is used.
* The leaf is the certificate whose public key matches the private key, wherever it appears in
  the file; the other certificates follow it in issuer order. Duplicate certificates are dropped.
* An encrypted PEM key, or a JKS key entry, is opened with `key_password`, falling back to the
  store `password`. A separate key file may go with a PEM or DER certificate only.
* Files larger than `MAX_FILE_BYTES` (1 MiB) are rejected before parsing.
"""
from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization

from . import lazy

# loaded when a certificate is first read: commands and requests that read none never pay for them
if TYPE_CHECKING:
    from cryptography import x509
else:
    x509 = lazy.module("cryptography.x509")
pkcs7 = lazy.module("cryptography.hazmat.primitives.serialization.pkcs7")
pkcs12 = lazy.module("cryptography.hazmat.primitives.serialization.pkcs12")

EXPIRY_WARNING_DAYS = 30
MAX_FILE_BYTES = 1024 * 1024

Status = Literal["expired", "expiring", "valid", "not_yet_valid"]
PrivateKey = Any

_JKS_MAGIC = {b"\xfe\xed\xfe\xed": "JKS", b"\xce\xce\xce\xce": "JCEKS"}
_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
_CERT_LABELS = {b"CERTIFICATE", b"X509 CERTIFICATE", b"TRUSTED CERTIFICATE"}
_KEY_LABELS = {
    b"PRIVATE KEY", b"RSA PRIVATE KEY", b"EC PRIVATE KEY", b"DSA PRIVATE KEY",
    b"ENCRYPTED PRIVATE KEY",
}
_CSR_LABELS = {b"CERTIFICATE REQUEST", b"NEW CERTIFICATE REQUEST"}
_PKCS7_OID_PREFIX = bytes.fromhex("06092a864886f70d0107")
_NOT_RECOGNISED = "This file is not a PEM, DER, PKCS#12 or JKS file."


class CertError(ValueError):
    """An upload that cannot be used; the message is one sentence meant for the user."""


@dataclass
class CertInfo:
    """What the console shows about one certificate."""

    subject: str
    issuer: str
    sans: list[str]
    not_before: dt.datetime
    not_after: dt.datetime
    serial: str
    sha256: str
    is_ca: bool
    self_signed: bool

    @classmethod
    def from_certificate(cls, cert: x509.Certificate) -> CertInfo:
        """Describe a parsed certificate."""
        fingerprint = cert.fingerprint(hashes.SHA256()).hex().upper()
        return cls(
            subject=cert.subject.rfc4514_string(),
            issuer=cert.issuer.rfc4514_string(),
            sans=_sans(cert),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
            serial=_serial_hex(cert.serial_number),
            sha256=":".join(fingerprint[i:i + 2] for i in range(0, len(fingerprint), 2)),
            is_ca=_is_ca(cert),
            self_signed=_is_self_signed(cert),
        )

    def days_left(self, now: dt.datetime | None = None) -> int:
        """Whole days until expiry, rounded down (negative once expired)."""
        return (self.not_after - _utc(now)).days

    def status(self, now: dt.datetime | None = None) -> Status:
        """'expired', 'expiring' (within EXPIRY_WARNING_DAYS), 'valid' or 'not_yet_valid'."""
        moment = _utc(now)
        if moment < self.not_before:
            return "not_yet_valid"
        if moment >= self.not_after:
            return "expired"
        if self.not_after - moment <= dt.timedelta(days=EXPIRY_WARNING_DAYS):
            return "expiring"
        return "valid"

    def as_dict(self, now: dt.datetime | None = None) -> dict[str, Any]:
        """A JSON-serialisable view with ISO 8601 dates, plus status and days left."""
        return {
            "subject": self.subject,
            "issuer": self.issuer,
            "sans": list(self.sans),
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "serial": self.serial,
            "sha256": self.sha256,
            "is_ca": self.is_ca,
            "self_signed": self.self_signed,
            "status": self.status(now),
            "days_left": self.days_left(now),
        }


@dataclass
class Truststore:
    """A parsed truststore: the trusted certificates as one normalised PEM bundle."""

    format: str
    certs_pem: str
    certificates: list[CertInfo]
    notes: list[str] = field(default_factory=list)


@dataclass
class Keystore:
    """A parsed keystore: the client certificate chain (leaf first) and its unencrypted key."""

    format: str
    certs_pem: str
    key_pem: str
    certificates: list[CertInfo]
    notes: list[str] = field(default_factory=list)


@dataclass
class _Contents:
    format: str
    certs: list[x509.Certificate] = field(default_factory=list)
    keys: list[PrivateKey] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class _PemBlock:
    label: bytes
    text: bytes


def parse_truststore(data: bytes, password: str | None = None, filename: str = "") -> Truststore:
    """Parse an uploaded truststore (PEM, DER, PKCS#7, PKCS#12, JKS or JCEKS)."""
    data = _checked_bytes(data, "Truststore file")
    kind = _detect(data)
    if kind == "PEM":
        blocks = _pem_blocks(data)
        if any(block.label in _KEY_LABELS for block in blocks):
            raise CertError(
                "This PEM file contains a private key, but a truststore holds certificates only: "
                "upload it as a client keystore, or remove the key."
            )
        contents = _Contents(kind, certs=_pem_certificates(blocks))
    elif kind == "DER":
        contents = _Contents(kind, certs=_der_certificates(data))
    elif kind == "PKCS#12":
        contents = _read_pkcs12(data, password)
    else:
        contents = _read_jks_certificates(data, password, kind)
    if contents.keys:
        contents.notes.append(
            f"The private key in this {kind} file was ignored: "
            "a truststore only needs certificates."
        )
    if not contents.certs:
        raise CertError("The file contains no certificate.")
    unique = _unique(contents.certs)
    if len(unique) < len(contents.certs):
        removed = len(contents.certs) - len(unique)
        contents.notes.append(f"{_plural(removed, 'duplicate certificate')} removed.")
    return Truststore(
        format=kind,
        certs_pem=_certs_to_pem(unique),
        certificates=[CertInfo.from_certificate(cert) for cert in unique],
        notes=contents.notes,
    )


def parse_keystore(
    data: bytes,
    password: str | None = None,
    key_data: bytes | None = None,
    key_password: str | None = None,
    filename: str = "",
) -> Keystore:
    """Parse an uploaded client keystore: PEM or DER (key inside or separate), PKCS#12 or JKS."""
    data = _checked_bytes(data, "Keystore file")
    kind = _detect(data)
    secret = key_password if key_password else password
    if key_data is not None and kind not in ("PEM", "DER"):
        raise CertError(
            f"A separate key file goes with a PEM or DER certificate only, not with {kind}."
        )
    if kind == "PEM":
        blocks = _pem_blocks(data)
        contents = _Contents(kind, certs=_pem_certificates(blocks), keys=_pem_keys(blocks, secret))
    elif kind == "DER":
        contents = _Contents(kind, certs=_der_certificates(data))
    elif kind == "PKCS#12":
        contents = _read_pkcs12(data, password)
    else:
        contents = _read_jks_key_entry(data, password, key_password, kind)
    if key_data is not None:
        _add_key_file(contents, _checked_bytes(key_data, "Key file"), secret)
    if not contents.certs:
        raise CertError("The file contains no certificate.")
    if not contents.keys:
        raise CertError(
            "The file contains no private key: a client keystore needs the certificate and its key "
            "(in the same PEM file or as a separate key file)."
        )
    if len(contents.keys) > 1:
        raise CertError("The files contain more than one private key: upload exactly one.")
    key = contents.keys[0]
    chain = _chain_for_key(_unique(contents.certs), key)
    if not _allows_client_auth(chain[0]):
        contents.notes.append(
            "The certificate is not meant for client authentication (extended key usage): "
            "brokers may refuse it."
        )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")
    return Keystore(
        format=kind,
        certs_pem=_certs_to_pem(chain),
        key_pem=key_pem,
        certificates=[CertInfo.from_certificate(cert) for cert in chain],
        notes=contents.notes,
    )


def describe_pem(certs_pem: str) -> list[CertInfo]:
    """Describe every certificate of a stored PEM bundle, in order."""
    data = certs_pem.encode("utf-8") if isinstance(certs_pem, str) else bytes(certs_pem)
    return [CertInfo.from_certificate(cert) for cert in _pem_certificates(_pem_blocks(data))]


def load_pem_file(path: str | PathLike[str], label: str = "Certificate file") -> Truststore:
    """Read and check a PEM certificate bundle on disk (a file named by an environment variable)."""
    where = f"{label} {path}"
    file = Path(path)
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise CertError(f"{where} does not exist.") from None
    except IsADirectoryError:
        raise CertError(f"{where} is a directory, not a file.") from None
    except PermissionError:
        raise CertError(f"{where} cannot be read (permission denied).") from None
    except OSError as exc:
        raise CertError(f"{where} cannot be read ({exc.strerror or 'I/O error'}).") from None
    try:
        store = parse_truststore(data, filename=file.name)
    except CertError as exc:
        raise CertError(f"{where}: {exc}") from None
    if store.format != "PEM":
        raise CertError(f"{where} is a {store.format} file, not PEM: convert it to PEM.")
    return store


def _checked_bytes(data: bytes, what: str) -> bytes:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what} must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > MAX_FILE_BYTES:
        raise CertError(f"{what} is too large ({len(data) // 1024} KiB): the limit is 1 MiB.")
    if not data.strip():
        raise CertError(f"{what} is empty.")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError:
            return data
        if "-----BEGIN " in text:
            return text.encode("ascii", "ignore")
    return data


def _detect(data: bytes) -> str:
    if data[:4] in _JKS_MAGIC:
        return _JKS_MAGIC[data[:4]]
    if b"-----BEGIN " in data:
        return "PEM"
    if data[:1] == b"\x30":
        header = _der_header(data)
        if header is None:
            if _is_text(data):
                raise CertError(_NOT_RECOGNISED)
            raise CertError("The file looks like DER or PKCS#12 but is damaged or incomplete.")
        start, _ = header
        return "PKCS#12" if data[start:start + 3] == b"\x02\x01\x03" else "DER"
    raise CertError(_NOT_RECOGNISED)


def _der_header(data: bytes) -> tuple[int, int] | None:
    if len(data) < 2:
        return None
    first = data[1]
    if first < 0x80:
        start, length = 2, first
    else:
        count = first & 0x7F
        if count == 0 or count > 4 or len(data) < 2 + count:
            return None
        start, length = 2 + count, int.from_bytes(data[2:2 + count], "big")
    if len(data) < start + length:
        return None
    return start, length


def _is_text(data: bytes) -> bool:
    sample = data[:512]
    return all(byte in b"\t\r\n" or 32 <= byte < 127 for byte in sample)


def _pem_blocks(data: bytes) -> list[_PemBlock]:
    blocks: list[_PemBlock] = []
    position = 0
    while True:
        begin = _PEM_BEGIN.search(data, position)
        if begin is None:
            return blocks
        label = begin.group(1)
        end_marker = b"-----END " + label + b"-----"
        end = data.find(end_marker, begin.end())
        following = _PEM_BEGIN.search(data, begin.end())
        if end < 0 or (following is not None and following.start() < end):
            raise CertError(
                f"The PEM block '{label.decode()}' has no END line: the file looks truncated."
            )
        blocks.append(_PemBlock(label, data[begin.start():end + len(end_marker)] + b"\n"))
        position = end + len(end_marker)


def _pem_certificates(blocks: list[_PemBlock]) -> list[x509.Certificate]:
    certs: list[x509.Certificate] = []
    for block in blocks:
        if block.label in _CERT_LABELS:
            certs.append(_load_pem_certificate(block, len(certs) + 1))
        elif block.label == b"PKCS7":
            try:
                certs.extend(pkcs7.load_pem_pkcs7_certificates(block.text))
            except ValueError:
                raise CertError(
                    "The PKCS#7 block in the PEM file is damaged or holds no certificate."
                ) from None
    if not certs and any(block.label in _CSR_LABELS for block in blocks):
        raise CertError("This is a certificate signing request (CSR), not a certificate.")
    return certs


def _load_pem_certificate(block: _PemBlock, number: int) -> x509.Certificate:
    try:
        if block.label == b"CERTIFICATE":
            return x509.load_pem_x509_certificate(block.text)
        der = _pem_body(block.text)
        header = _der_header(der)
        if header is None:
            raise ValueError("truncated DER")
        return x509.load_der_x509_certificate(der[:sum(header)])
    except (ValueError, binascii.Error):
        raise CertError(
            f"Certificate #{number} in the PEM file is damaged and cannot be read."
        ) from None


def _pem_body(text: bytes) -> bytes:
    lines = text.strip().splitlines()[1:-1]
    payload = b"".join(line.strip() for line in lines if b":" not in line)
    return base64.b64decode(payload, validate=True)


def _der_certificates(data: bytes) -> list[x509.Certificate]:
    header = _der_header(data)
    start, length = header if header else (0, len(data))
    der = data[:start + length]
    if data[start:].startswith(_PKCS7_OID_PREFIX):
        try:
            return list(pkcs7.load_der_pkcs7_certificates(der))
        except ValueError:
            raise CertError("The PKCS#7 file is damaged or holds no certificate.") from None
    try:
        return [x509.load_der_x509_certificate(der)]
    except ValueError:
        pass
    try:
        serialization.load_der_private_key(der, None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CertError(_NOT_RECOGNISED) from None
    raise CertError("This file holds a private key, not a certificate.")


def _read_pkcs12(data: bytes, password: str | None) -> _Contents:
    attempts = [password.encode("utf-8"), None] if password else [None, b""]
    damaged = False
    for attempt in attempts:
        try:
            key, cert, extra = pkcs12.load_key_and_certificates(data, attempt)
        except ValueError as exc:
            damaged = damaged or "deserialize" in str(exc).lower()
            continue
        except UnsupportedAlgorithm:
            raise CertError(
                "This PKCS#12 file uses an unsupported encryption or key algorithm."
            ) from None
        certs = ([cert] if cert is not None else []) + list(extra)
        return _Contents("PKCS#12", certs=certs, keys=[key] if key is not None else [])
    if damaged:
        raise CertError("The PKCS#12 file is damaged or incomplete.")
    if not password:
        raise CertError("A password is needed to open this PKCS#12 file.")
    raise CertError("Wrong password for this PKCS#12 file.")


def _load_jks(data: bytes, password: str | None, kind: str) -> Any:
    import jks

    if not password:
        raise CertError(f"A password is needed to open this {kind} file.")
    try:
        return jks.KeyStore.loads(data, password, try_decrypt_keys=False)
    except jks.KeystoreSignatureException:
        raise CertError(f"Wrong password for this {kind} file.") from None
    except Exception:
        raise CertError(f"The {kind} file is damaged or incomplete.") from None


def _read_jks_certificates(data: bytes, password: str | None, kind: str) -> _Contents:
    import jks

    store = _load_jks(data, password, kind)
    contents = _Contents(kind)
    for entry in store.entries.values():
        if isinstance(entry, jks.PrivateKeyEntry):
            for cert_type, der in entry.cert_chain:
                contents.certs.extend(_jks_certificate(cert_type, der, entry.alias))
        elif isinstance(entry, jks.TrustedCertEntry):
            contents.certs.extend(_jks_certificate(entry.type, entry.cert, entry.alias))
    if store.private_keys:
        contents.notes.append(
            f"The private key entries in this {kind} file were ignored: "
            "a truststore only needs certificates."
        )
    return contents


def _read_jks_key_entry(
    data: bytes, password: str | None, key_password: str | None, kind: str
) -> _Contents:
    store = _load_jks(data, password, kind)
    entries = list(store.private_keys.values())
    if not entries:
        raise CertError(
            f"This {kind} file holds no private key entry: "
            "it can serve as a truststore, not as a client keystore."
        )
    if len(entries) > 1:
        aliases = ", ".join(f"'{entry.alias}'" for entry in entries)
        raise CertError(
            f"This {kind} file holds {len(entries)} private key entries ({aliases}): "
            "upload a keystore with exactly one."
        )
    entry = entries[0]
    _decrypt_jks_entry(entry, password or "", key_password)
    contents = _Contents(kind)
    for cert_type, der in entry.cert_chain:
        contents.certs.extend(_jks_certificate(cert_type, der, entry.alias))
    try:
        contents.keys.append(serialization.load_der_private_key(bytes(entry.pkey_pkcs8), None))
    except (ValueError, TypeError):
        raise CertError(f"The private key of entry '{entry.alias}' cannot be read.") from None
    except UnsupportedAlgorithm:
        raise CertError(
            f"The private key of entry '{entry.alias}' uses an unsupported algorithm."
        ) from None
    others = len(store.certs) + len(store.secret_keys)
    if others:
        ignored = _plural(others, "other entry", "other entries")
        contents.notes.append(f"{ignored} of this {kind} file ignored.")
    return contents


def _decrypt_jks_entry(entry: Any, password: str, key_password: str | None) -> None:
    import jks

    try:
        entry.decrypt(key_password or password)
    except jks.DecryptionFailureException:
        if key_password:
            raise CertError(f"Wrong password for the private key entry '{entry.alias}'.") from None
        raise CertError(
            f"The private key entry '{entry.alias}' has its own password: give the key password."
        ) from None
    except Exception:
        raise CertError(f"The private key entry '{entry.alias}' cannot be decrypted.") from None


def _jks_certificate(cert_type: str, der: bytes, alias: str) -> list[x509.Certificate]:
    if cert_type != "X.509":
        return []
    try:
        return [x509.load_der_x509_certificate(bytes(der))]
    except ValueError:
        raise CertError(
            f"The certificate of entry '{alias}' is damaged and cannot be read."
        ) from None


def _add_key_file(contents: _Contents, key_data: bytes, password: str | None) -> None:
    if b"-----BEGIN " not in key_data:
        contents.keys.append(_der_key(key_data, password))
        return
    blocks = _pem_blocks(key_data)
    keys = _pem_keys(blocks, password)
    if not keys:
        raise CertError("The key file contains no private key.")
    contents.keys.extend(keys)
    contents.certs.extend(_pem_certificates(blocks))


def _pem_keys(blocks: list[_PemBlock], password: str | None) -> list[PrivateKey]:
    keys: list[PrivateKey] = []
    for block in blocks:
        if block.label not in _KEY_LABELS:
            continue
        encrypted = (
            block.label == b"ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in block.text
        )
        if encrypted and not password:
            raise CertError("The PEM private key is encrypted: give its password.")
        secret = password.encode("utf-8") if encrypted and password else None
        try:
            keys.append(serialization.load_pem_private_key(block.text, secret))
        except (ValueError, TypeError):
            if encrypted:
                raise CertError("Wrong password for the PEM private key.") from None
            raise CertError("The PEM private key is damaged and cannot be read.") from None
        except UnsupportedAlgorithm:
            raise CertError("The PEM private key uses an unsupported algorithm.") from None
    return keys


def _der_key(data: bytes, password: str | None) -> PrivateKey:
    try:
        return serialization.load_der_private_key(data, None)
    except TypeError:
        pass
    except (ValueError, UnsupportedAlgorithm):
        raise CertError("The key file is not a PEM or DER private key.") from None
    if not password:
        raise CertError("The private key is encrypted: give its password.")
    try:
        return serialization.load_der_private_key(data, password.encode("utf-8"))
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise CertError("Wrong password for the private key.") from None


def _chain_for_key(certs: list[x509.Certificate], key: PrivateKey) -> list[x509.Certificate]:
    public = _public_bytes(key.public_key())
    leaf = next((cert for cert in certs if _public_bytes(cert.public_key()) == public), None)
    if leaf is None:
        others = " (nor any other certificate in the file)" if len(certs) > 1 else ""
        raise CertError(
            f"The private key does not match the certificate '{_name(certs[0])}'{others}."
        )
    chain = [leaf]
    remaining = [cert for cert in certs if cert is not leaf]
    while remaining and chain[-1].issuer != chain[-1].subject:
        parent = next((cert for cert in remaining if cert.subject == chain[-1].issuer), None)
        if parent is None:
            break
        chain.append(parent)
        remaining.remove(parent)
    return chain + remaining


def _public_bytes(public_key: Any) -> bytes:
    try:
        return public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return b""


def _unique(certs: list[x509.Certificate]) -> list[x509.Certificate]:
    seen: set[bytes] = set()
    result: list[x509.Certificate] = []
    for cert in certs:
        digest = cert.fingerprint(hashes.SHA256())
        if digest not in seen:
            seen.add(digest)
            result.append(cert)
    return result


def _certs_to_pem(certs: list[x509.Certificate]) -> str:
    return "".join(cert.public_bytes(serialization.Encoding.PEM).decode("ascii") for cert in certs)


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(no subject)"


def _plural(count: int, singular: str, plural: str | None = None) -> str:
    return f"{count} {singular if count == 1 else plural or singular + 's'}"


def _extension(cert: x509.Certificate, kind: type) -> Any:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except (x509.ExtensionNotFound, x509.DuplicateExtension, ValueError):
        return None


def _sans(cert: x509.Certificate) -> list[str]:
    names = _extension(cert, x509.SubjectAlternativeName)
    if names is None:
        return []
    prefixes = (
        (x509.DNSName, "DNS"), (x509.IPAddress, "IP"),
        (x509.RFC822Name, "email"), (x509.UniformResourceIdentifier, "URI"),
    )
    result: list[str] = []
    for name in names:
        for name_type, prefix in prefixes:
            if isinstance(name, name_type):
                result.append(f"{prefix}:{name.value}")
        if isinstance(name, x509.DirectoryName):
            result.append(f"DirName:{name.value.rfc4514_string()}")
    return result


def _is_ca(cert: x509.Certificate) -> bool:
    constraints = _extension(cert, x509.BasicConstraints)
    return bool(constraints is not None and constraints.ca)


def _allows_client_auth(cert: x509.Certificate) -> bool:
    usages = _extension(cert, x509.ExtendedKeyUsage)
    if usages is None:
        return True
    accepted = (x509.oid.ExtendedKeyUsageOID.CLIENT_AUTH, x509.oid.ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE)
    return any(usage in usages for usage in accepted)


def _is_self_signed(cert: x509.Certificate) -> bool:
    if cert.subject != cert.issuer:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except Exception:
        return False
    return True


def _serial_hex(serial: int) -> str:
    text = format(serial, "X")
    return text if len(text) % 2 == 0 else "0" + text


def _utc(moment: dt.datetime | None) -> dt.datetime:
    if moment is None:
        return dt.datetime.now(dt.UTC)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)
