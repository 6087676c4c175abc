"""Tests for console.certs: truststore and keystore uploads, parsed from real generated files."""
from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import jks
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs7, pkcs12

from console import certs
from console.certs import (
    CertError,
    CertInfo,
    describe_pem,
    load_pem_file,
    parse_keystore,
    parse_truststore,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import pki  # noqa: E402

KEYTOOL = shutil.which("keytool")
OPENSSL = shutil.which("openssl")
needs_keytool = pytest.mark.skipif(KEYTOOL is None, reason="keytool (Java) is not installed")
SECRET = "s3cret-Pa55"
WRONG = "wrong-pass"
CA_NAME = "CN=Messaging Console Test CA"
NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def ca() -> pki.Issued:
    return pki.make_ca()


@pytest.fixture(scope="module")
def other_ca() -> pki.Issued:
    return pki.make_ca("Unrelated Test CA")


@pytest.fixture(scope="module")
def server(ca: pki.Issued) -> pki.Issued:
    return pki.issue(ca, "localhost", ("localhost", "broker.example"), ("127.0.0.1", "::1"))


@pytest.fixture(scope="module")
def client(ca: pki.Issued) -> pki.Issued:
    return pki.issue(ca, "console-client", client=True)


@pytest.fixture(scope="module")
def ec_client(ca: pki.Issued) -> pki.Issued:
    return pki.issue(ca, "console-ec-client", client=True, key_kind="ec")


def pem(*items: pki.Issued) -> bytes:
    return b"".join(item.cert_pem() for item in items)


def der(item: pki.Issued) -> bytes:
    return item.cert.public_bytes(serialization.Encoding.DER)


def encryption(password: str | None) -> serialization.KeySerializationEncryption:
    if password:
        return serialization.BestAvailableEncryption(password.encode())
    return serialization.NoEncryption()


def pkcs8_der(item: pki.Issued, password: str | None = None) -> bytes:
    return item.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, encryption(password)
    )


def pkcs8_pem(item: pki.Issued, password: str | None = None) -> bytes:
    return item.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption(password)
    )


def traditional_pem(item: pki.Issued, password: str | None = None) -> bytes:
    return item.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        encryption(password),
    )


def make_p12(leaf: pki.Issued | None, chain: list[pki.Issued], password: str | None) -> bytes:
    return pkcs12.serialize_key_and_certificates(
        b"client" if leaf else None,
        leaf.key if leaf else None,
        leaf.cert if leaf else None,
        [item.cert for item in chain] or None,
        encryption(password),
    )


def make_jks(entries: list[Any], password: str = SECRET) -> bytes:
    return jks.KeyStore.new("jks", entries).saves(password)


def trusted_entry(alias: str, item: pki.Issued) -> jks.TrustedCertEntry:
    return jks.TrustedCertEntry.new(alias, der(item))


def key_entry(alias: str, leaf: pki.Issued, chain: list[pki.Issued]) -> jks.PrivateKeyEntry:
    chain_der = [der(leaf)] + [der(item) for item in chain]
    return jks.PrivateKeyEntry.new(alias, chain_der, pkcs8_der(leaf), "pkcs8")


def rsa_raw_entry(alias: str, leaf: pki.Issued, chain: list[pki.Issued]) -> jks.PrivateKeyEntry:
    raw = leaf.key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    chain_der = [der(leaf)] + [der(item) for item in chain]
    return jks.PrivateKeyEntry.new(alias, chain_der, raw, "rsa_raw")


def same_key(key_pem: str, item: pki.Issued) -> bool:
    loaded = serialization.load_pem_private_key(key_pem.encode(), None)
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return loaded.public_key().public_bytes(*spki) == item.key.public_key().public_bytes(*spki)


def fingerprint(item: pki.Issued) -> str:
    return ":".join(f"{byte:02X}" for byte in item.cert.fingerprint(hashes.SHA256()))


def fingerprints(store: certs.Truststore | certs.Keystore) -> list[str]:
    return [info.sha256 for info in store.certificates]


def keytool(*args: str, cwd: Path) -> None:
    assert KEYTOOL is not None
    result = subprocess.run(
        [KEYTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def rejects(call: Callable[..., Any], *args: Any, match: str, **kwargs: Any) -> None:
    with pytest.raises(CertError, match=match) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    assert SECRET not in message and WRONG not in message


# --- truststores: PEM and DER -----------------------------------------------------------------

def test_pem_single_certificate(server: pki.Issued) -> None:
    store = parse_truststore(server.cert_pem(), filename="server.crt")
    assert store.format == "PEM"
    assert len(store.certificates) == 1
    info = store.certificates[0]
    assert info.subject == "CN=localhost"
    assert info.issuer == CA_NAME
    assert info.sha256 == fingerprint(server)
    assert store.certs_pem == server.cert_pem().decode()
    assert store.notes == []


def test_pem_chain_keeps_order_and_round_trips(server: pki.Issued, ca: pki.Issued) -> None:
    store = parse_truststore(pem(server, ca))
    assert [info.subject for info in store.certificates] == ["CN=localhost", CA_NAME]
    assert store.certs_pem.count("BEGIN CERTIFICATE") == 2
    assert [info.sha256 for info in describe_pem(store.certs_pem)] == fingerprints(store)
    assert fingerprints(store) == [fingerprint(server), fingerprint(ca)]


def test_pem_with_text_around_blocks(server: pki.Issued, ca: pki.Issued) -> None:
    data = (
        b"Bag Attributes\n    friendlyName: server\nsubject=CN = localhost\n\n"
        + server.cert_pem()
        + b"\n# the CA follows\r\n"
        + ca.cert_pem().replace(b"\n", b"\r\n")
        + b"trailing words\n"
    )
    assert fingerprints(parse_truststore(data)) == [fingerprint(server), fingerprint(ca)]


def test_pem_duplicates_removed_with_note(ca: pki.Issued) -> None:
    store = parse_truststore(pem(ca, ca))
    assert len(store.certificates) == 1
    assert store.notes == ["1 duplicate certificate removed."]


def test_pem_utf16_text_file(ca: pki.Issued) -> None:
    data = ca.cert_pem().decode().encode("utf-16")
    assert fingerprints(parse_truststore(data)) == [fingerprint(ca)]


def test_der_single_certificate(server: pki.Issued) -> None:
    store = parse_truststore(der(server), filename="server.crt")
    assert store.format == "DER"
    assert fingerprints(store) == [fingerprint(server)]
    assert store.certs_pem == server.cert_pem().decode()


def test_pkcs7_bundles_der_and_pem(server: pki.Issued, ca: pki.Issued) -> None:
    expected = {fingerprint(server), fingerprint(ca)}
    for encoding in (serialization.Encoding.DER, serialization.Encoding.PEM):
        bundle = pkcs7.serialize_certificates([server.cert, ca.cert], encoding)
        assert set(fingerprints(parse_truststore(bundle))) == expected


@pytest.mark.parametrize("data", [b"", b"   \n\r\n\t"])
def test_empty_file(data: bytes) -> None:
    rejects(parse_truststore, data, match="^Truststore file is empty.$")
    rejects(parse_keystore, data, match="^Keystore file is empty.$")


@pytest.mark.parametrize("data", [
    b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4,
    b"hello, this is not a certificate\n",
    b"0123456789 text that starts like DER",
    b"MIIBszCCAVmgAwIBAgIU" * 10,
])
def test_garbage_is_not_recognised(data: bytes) -> None:
    rejects(parse_truststore, data, match="^This file is not a PEM, DER, PKCS#12 or JKS file.$")


def test_truncated_pem_without_end_line(server: pki.Issued) -> None:
    rejects(parse_truststore, server.cert_pem()[:400], match="has no END line.*truncated")


def test_truncated_pem_body_with_end_line(ca: pki.Issued, server: pki.Issued) -> None:
    lines = server.cert_pem().splitlines(keepends=True)
    cut = b"".join(lines[:5] + lines[-1:])
    rejects(parse_truststore, ca.cert_pem() + cut, 
            match="^Certificate #2 in the PEM file is damaged")


def test_pem_block_missing_end_before_next_block(ca: pki.Issued, server: pki.Issued) -> None:
    first = server.cert_pem().replace(b"-----END CERTIFICATE-----\n", b"")
    rejects(parse_truststore, first + ca.cert_pem(), match="has no END line")


def test_truncated_der(server: pki.Issued) -> None:
    rejects(parse_truststore, der(server)[:300], match="damaged or incomplete")


def test_pem_truststore_with_private_key_rejected(server: pki.Issued) -> None:
    data = server.cert_pem() + server.key_pem()
    rejects(parse_truststore, data, match="truststore holds certificates only")


def test_key_instead_of_certificate(server: pki.Issued) -> None:
    rejects(parse_truststore, pkcs8_der(server), match="^This file holds a private key, not a")
    rejects(parse_keystore, server.key_pem(), match="^The file contains no certificate.$")


def test_certificate_signing_request_explained(server: pki.Issued) -> None:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(server.cert.subject)
        .sign(server.key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
    )
    rejects(parse_truststore, csr, match="certificate signing request")


def test_pem_without_certificates() -> None:
    data = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"
    rejects(parse_truststore, data, match="^The file contains no certificate.$")


def test_size_limit(ca: pki.Issued) -> None:
    padding = b"#" * (certs.MAX_FILE_BYTES - len(ca.cert_pem()))
    assert len(parse_truststore(padding + ca.cert_pem()).certificates) == 1
    rejects(parse_truststore, padding + b"#" + ca.cert_pem(), match="too large.*limit is 1 MiB")
    rejects(parse_keystore, b"x" * (2 * certs.MAX_FILE_BYTES), match="^Keystore file is too large")
    big_key = b"k" * (certs.MAX_FILE_BYTES + 1)
    rejects(parse_keystore, ca.cert_pem(), key_data=big_key, match="^Key file is too large")


# --- truststores: PKCS#12 and JKS -------------------------------------------------------------

def test_pkcs12_truststore_certificates_only(ca: pki.Issued, other_ca: pki.Issued) -> None:
    store = parse_truststore(make_p12(None, [ca, other_ca], SECRET), SECRET, filename="t.p12")
    assert store.format == "PKCS#12"
    assert fingerprints(store) == [fingerprint(ca), fingerprint(other_ca)]
    assert store.notes == []


def test_pkcs12_with_key_as_truststore(client: pki.Issued, ca: pki.Issued) -> None:
    store = parse_truststore(make_p12(client, [ca], SECRET), SECRET)
    assert fingerprints(store) == [fingerprint(client), fingerprint(ca)]
    assert "PRIVATE KEY" not in store.certs_pem
    assert any("private key" in note and "ignored" in note for note in store.notes)


def test_pkcs12_truststore_password_errors(ca: pki.Issued) -> None:
    data = make_p12(None, [ca], SECRET)
    rejects(parse_truststore, data, match="^A password is needed to open this PKCS#12 file.$")
    rejects(parse_truststore, data, WRONG, match="^Wrong password for this PKCS#12 file.$")


def test_jks_truststore_trusted_entries(ca: pki.Issued, other_ca: pki.Issued) -> None:
    data = make_jks([trusted_entry("ca", ca), trusted_entry("other", other_ca)])
    store = parse_truststore(data, SECRET, filename="truststore.jks")
    assert store.format == "JKS"
    assert set(fingerprints(store)) == {fingerprint(ca), fingerprint(other_ca)}
    assert store.notes == []


def test_jks_truststore_includes_key_entry_chain(
    client: pki.Issued, ca: pki.Issued, other_ca: pki.Issued
) -> None:
    data = make_jks([key_entry("client", client, [ca]), trusted_entry("other", other_ca)])
    store = parse_truststore(data, SECRET)
    assert set(fingerprints(store)) == {fingerprint(client), fingerprint(ca), fingerprint(other_ca)}
    assert any("ignored" in note for note in store.notes)


def test_jks_truststore_password_errors(ca: pki.Issued) -> None:
    data = make_jks([trusted_entry("ca", ca)])
    rejects(parse_truststore, data, match="^A password is needed to open this JKS file.$")
    rejects(parse_truststore, data, WRONG, match="^Wrong password for this JKS file.$")
    rejects(parse_truststore, data[:-30], SECRET, match="^The JKS file is damaged or incomplete.$")


# --- keystores: PEM and DER -------------------------------------------------------------------

def test_keystore_pem_cert_with_separate_key(client: pki.Issued, ca: pki.Issued) -> None:
    store = parse_keystore(pem(client, ca), key_data=client.key_pem(), filename="client.crt")
    assert store.format == "PEM"
    assert fingerprints(store) == [fingerprint(client), fingerprint(ca)]
    assert store.key_pem.startswith("-----BEGIN PRIVATE KEY-----\n")
    assert same_key(store.key_pem, client)
    assert store.notes == []


def test_keystore_combined_pem_in_any_order(client: pki.Issued, ca: pki.Issued) -> None:
    store = parse_keystore(client.key_pem() + b"\nchain:\n" + pem(ca, client))
    assert [info.subject for info in store.certificates] == ["CN=console-client", CA_NAME]
    assert describe_pem(store.certs_pem)[0].sha256 == fingerprint(client)
    assert same_key(store.key_pem, client)


def test_keystore_der_cert_with_der_key(ec_client: pki.Issued) -> None:
    store = parse_keystore(der(ec_client), key_data=pkcs8_der(ec_client))
    assert store.format == "DER"
    assert same_key(store.key_pem, ec_client)


def test_keystore_ec_key(ec_client: pki.Issued, ca: pki.Issued) -> None:
    assert same_key(parse_keystore(pem(ec_client, ca) + ec_client.key_pem()).key_pem, ec_client)


@pytest.mark.parametrize("encrypt", [pkcs8_pem, traditional_pem], ids=["pkcs8", "traditional"])
def test_encrypted_pem_key(client: pki.Issued, encrypt: Callable[..., bytes]) -> None:
    key = encrypt(client, SECRET)
    store = parse_keystore(client.cert_pem(), key_data=key, key_password=SECRET)
    assert same_key(store.key_pem, client)
    assert "ENCRYPTED" not in store.key_pem
    assert same_key(parse_keystore(client.cert_pem() + key, SECRET).key_pem, client)
    rejects(parse_keystore, client.cert_pem(), key_data=key,
            match="^The PEM private key is encrypted: give its password.$")
    rejects(parse_keystore, client.cert_pem(), key_data=key, key_password=WRONG,
            match="^Wrong password for the PEM private key.$")


def test_encrypted_der_key(client: pki.Issued) -> None:
    key = pkcs8_der(client, SECRET)
    store = parse_keystore(client.cert_pem(), key_data=key, key_password=SECRET)
    assert same_key(store.key_pem, client)
    rejects(parse_keystore, client.cert_pem(), key_data=key, match="encrypted: give its password")
    rejects(parse_keystore, client.cert_pem(), key_data=key, key_password=WRONG,
            match="^Wrong password for the private key.$")


def test_password_for_unencrypted_key_is_ignored(client: pki.Issued) -> None:
    store = parse_keystore(client.cert_pem(), key_data=client.key_pem(), key_password=SECRET)
    assert same_key(store.key_pem, client)


@pytest.mark.parametrize("kind", ["rsa", "ec"])
def test_key_not_matching_certificate(ca: pki.Issued, kind: str) -> None:
    holder = pki.issue(ca, "cert-holder", client=True, key_kind=kind)
    stranger = pki.issue(ca, "stranger", client=True, key_kind=kind)
    rejects(parse_keystore, holder.cert_pem(), key_data=stranger.key_pem(),
            match=r"^The private key does not match the certificate 'CN=cert-holder'\.$")
    rejects(parse_keystore, pem(holder, ca) + stranger.key_pem(),
            match=r"does not match the certificate 'CN=cert-holder' \(nor any other")


def test_keystore_without_key(client: pki.Issued) -> None:
    rejects(parse_keystore, client.cert_pem(), match="^The file contains no private key")


def test_keystore_with_two_keys(client: pki.Issued, ec_client: pki.Issued) -> None:
    rejects(parse_keystore, client.cert_pem() + client.key_pem(), key_data=ec_client.key_pem(),
            match="more than one private key")


def test_key_file_without_key(client: pki.Issued, ca: pki.Issued) -> None:
    rejects(parse_keystore, client.cert_pem(), key_data=ca.cert_pem(),
            match="^The key file contains no private key.$")
    rejects(parse_keystore, client.cert_pem(), key_data=b"not a key at all",
            match="^The key file is not a PEM or DER private key.$")


def test_server_certificate_as_client_gets_note(server: pki.Issued) -> None:
    store = parse_keystore(server.cert_pem() + server.key_pem())
    assert any("client authentication" in note for note in store.notes)


# --- keystores: PKCS#12 and JKS ---------------------------------------------------------------

def test_keystore_pkcs12(client: pki.Issued, ca: pki.Issued) -> None:
    store = parse_keystore(make_p12(client, [ca], SECRET), SECRET, filename="client.p12")
    assert store.format == "PKCS#12"
    assert fingerprints(store) == [fingerprint(client), fingerprint(ca)]
    assert same_key(store.key_pem, client)


def test_keystore_pkcs12_password_errors(client: pki.Issued, ca: pki.Issued) -> None:
    data = make_p12(client, [ca], SECRET)
    rejects(parse_keystore, data, WRONG, match="^Wrong password for this PKCS#12 file.$")
    rejects(parse_keystore, data, match="^A password is needed to open this PKCS#12 file.$")
    rejects(parse_keystore, data, "", match="^A password is needed")
    rejects(parse_keystore, data[: len(data) // 2], SECRET, match="damaged or incomplete")


def test_keystore_pkcs12_without_password(ec_client: pki.Issued) -> None:
    data = make_p12(ec_client, [], None)
    assert same_key(parse_keystore(data).key_pem, ec_client)
    assert same_key(parse_keystore(data, "any-password").key_pem, ec_client)


def test_keystore_pkcs12_without_key(ca: pki.Issued) -> None:
    rejects(parse_keystore, make_p12(None, [ca], SECRET), SECRET, match="contains no private key")


def test_keystore_pkcs12_rejects_separate_key_file(client: pki.Issued) -> None:
    rejects(parse_keystore, make_p12(client, [], SECRET), SECRET, key_data=client.key_pem(),
            match="separate key file goes with a PEM or DER certificate only")


@pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")
@pytest.mark.parametrize("legacy", [False, True], ids=["openssl-default", "openssl-legacy"])
def test_keystore_pkcs12_written_by_openssl(
    tmp_path: Path, client: pki.Issued, ca: pki.Issued, legacy: bool
) -> None:
    (tmp_path / "c.crt").write_bytes(client.cert_pem())
    (tmp_path / "c.key").write_bytes(client.key_pem())
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem())
    assert OPENSSL is not None
    args = [OPENSSL, "pkcs12", "-export", "-in", "c.crt", "-inkey", "c.key", "-certfile", "ca.crt",
            "-passout", f"pass:{SECRET}", "-out", "c.p12"] + (["-legacy"] if legacy else [])
    result = subprocess.run(args, cwd=tmp_path, capture_output=True, timeout=60, check=False)
    if legacy and result.returncode != 0:
        pytest.skip("this openssl cannot write legacy (RC2/3DES) PKCS#12")
    assert result.returncode == 0, result.stderr
    store = parse_keystore((tmp_path / "c.p12").read_bytes(), SECRET)
    assert fingerprints(store) == [fingerprint(client), fingerprint(ca)]
    assert same_key(store.key_pem, client)


@pytest.mark.parametrize("make_entry", [key_entry, rsa_raw_entry], ids=["pkcs8", "rsa_raw"])
def test_keystore_jks(
    client: pki.Issued, ca: pki.Issued, other_ca: pki.Issued, make_entry: Callable[..., Any]
) -> None:
    data = make_jks([make_entry("client", client, [ca]), trusted_entry("other", other_ca)])
    store = parse_keystore(data, SECRET, filename="client.jks")
    assert store.format == "JKS"
    assert fingerprints(store) == [fingerprint(client), fingerprint(ca)]
    assert same_key(store.key_pem, client)
    assert store.notes == ["1 other entry of this JKS file ignored."]


def test_keystore_jks_ec_key(ec_client: pki.Issued) -> None:
    store = parse_keystore(make_jks([key_entry("ec", ec_client, [])]), SECRET)
    assert same_key(store.key_pem, ec_client)


def test_keystore_jks_password_errors(client: pki.Issued) -> None:
    data = make_jks([key_entry("client", client, [])])
    rejects(parse_keystore, data, match="^A password is needed to open this JKS file.$")
    rejects(parse_keystore, data, WRONG, match="^Wrong password for this JKS file.$")


def test_keystore_jks_several_keys_rejected(client: pki.Issued, ec_client: pki.Issued) -> None:
    data = make_jks([key_entry("first", client, []), key_entry("second", ec_client, [])])
    rejects(parse_keystore, data, SECRET,
            match=r"holds 2 private key entries \('first', 'second'\)")


def test_keystore_jks_without_key_entry(ca: pki.Issued) -> None:
    data = make_jks([trusted_entry("ca", ca)])
    rejects(parse_keystore, data, SECRET, match="holds no private key entry")


def test_keystore_jks_key_not_matching_chain(client: pki.Issued, ec_client: pki.Issued) -> None:
    entry = jks.PrivateKeyEntry.new("mixed", [der(client)], pkcs8_der(ec_client), "pkcs8")
    rejects(parse_keystore, make_jks([entry]), SECRET,
            match="^The private key does not match the certificate 'CN=console-client'.$")


# --- files written by Java's keytool ----------------------------------------------------------

@needs_keytool
def test_pyjks_files_open_with_keytool(tmp_path: Path, client: pki.Issued, ca: pki.Issued) -> None:
    path = tmp_path / "fixture.jks"
    path.write_bytes(make_jks([key_entry("client", client, [ca]), trusted_entry("ca", ca)]))
    assert KEYTOOL is not None
    result = subprocess.run(
        [KEYTOOL, "-list", "-keystore", str(path), "-storepass", SECRET, "-storetype", "JKS"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PrivateKeyEntry" in result.stdout and "trustedCertEntry" in result.stdout


@needs_keytool
def test_java_written_stores(tmp_path: Path, client: pki.Issued, ca: pki.Issued) -> None:
    (tmp_path / "client.p12").write_bytes(make_p12(client, [ca], SECRET))
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem())
    for store_type, name in (("JKS", "client.jks"), ("JCEKS", "client.jceks")):
        keytool("-importkeystore", "-noprompt", "-srckeystore", "client.p12",
                "-srcstoretype", "PKCS12", "-srcstorepass", SECRET, "-srcalias", "client",
                "-destkeystore", name, "-deststoretype", store_type, "-deststorepass", SECRET,
                "-destkeypass", "key-only-pass", cwd=tmp_path)
    for store_type, name in (("JKS", "trust.jks"), ("PKCS12", "trust.p12")):
        keytool("-importcert", "-noprompt", "-alias", "ca", "-file", "ca.crt",
                "-keystore", name, "-storetype", store_type, "-storepass", SECRET, cwd=tmp_path)
    keytool("-genkeypair", "-alias", "javakey", "-keyalg", "EC", "-dname", "CN=java-ec-client",
            "-keystore", "java.p12", "-storetype", "PKCS12", "-storepass", SECRET,
            "-validity", "20", cwd=tmp_path)

    for kind, name in (("JKS", "client.jks"), ("JCEKS", "client.jceks")):
        data = (tmp_path / name).read_bytes()
        store = parse_keystore(data, SECRET, key_password="key-only-pass")
        assert store.format == kind
        assert fingerprints(store) == [fingerprint(client), fingerprint(ca)]
        assert same_key(store.key_pem, client)
        rejects(parse_keystore, data, SECRET, match="'client' has its own password: give the key")
        rejects(parse_keystore, data, SECRET, key_password=WRONG,
                match="^Wrong password for the private key entry 'client'.$")

    for kind, name in (("JKS", "trust.jks"), ("PKCS#12", "trust.p12")):
        trust = parse_truststore((tmp_path / name).read_bytes(), SECRET)
        assert trust.format == kind and fingerprints(trust) == [fingerprint(ca)]

    leaf = parse_keystore((tmp_path / "java.p12").read_bytes(), SECRET).certificates[0]
    assert leaf.subject == "CN=java-ec-client"
    assert leaf.self_signed and leaf.status() == "expiring"


# --- certificate details ----------------------------------------------------------------------

def test_details_sans_fingerprint_serial(server: pki.Issued, ca: pki.Issued) -> None:
    info = CertInfo.from_certificate(server.cert)
    assert info.sans == ["DNS:localhost", "DNS:broker.example", "IP:127.0.0.1", "IP:::1"]
    assert info.sha256 == fingerprint(server)
    assert len(info.sha256) == 32 * 3 - 1 and info.sha256 == info.sha256.upper()
    assert int(info.serial, 16) == server.cert.serial_number
    assert info.not_after == server.cert.not_valid_after_utc
    assert info.not_before.tzinfo is not None
    assert not info.is_ca and not info.self_signed
    root = CertInfo.from_certificate(ca.cert)
    assert root.is_ca and root.self_signed and root.sans == []


def test_self_signed_needs_a_valid_signature(ca: pki.Issued, other_ca: pki.Issued) -> None:
    forged = (
        x509.CertificateBuilder()
        .subject_name(ca.cert.subject)
        .issuer_name(ca.cert.subject)
        .public_key(ca.key.public_key())
        .serial_number(1)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .sign(other_ca.key, hashes.SHA256())
    )
    assert not CertInfo.from_certificate(forged).self_signed


@pytest.mark.parametrize("start, end, status", [
    (-30, -1, "expired"),
    (-1, 10, "expiring"),
    (-1, 29, "expiring"),
    (-1, 31, "valid"),
    (-1, 365, "valid"),
    (2, 365, "not_yet_valid"),
])
def test_status(ca: pki.Issued, start: int, end: int, status: str) -> None:
    item = pki.issue(ca, "dated", not_before=NOW + dt.timedelta(days=start),
                     not_after=NOW + dt.timedelta(days=end))
    info = parse_truststore(item.cert_pem()).certificates[0]
    assert info.status() == status
    assert info.status(NOW) == status


def test_status_and_days_left_at_a_given_moment(server: pki.Issued) -> None:
    info = CertInfo.from_certificate(server.cert)
    expiry = info.not_after
    warning = dt.timedelta(days=certs.EXPIRY_WARNING_DAYS)
    assert certs.EXPIRY_WARNING_DAYS == 30
    assert info.status(expiry + dt.timedelta(seconds=1)) == "expired"
    assert info.status(expiry - warning) == "expiring"
    assert info.status(expiry - warning - dt.timedelta(seconds=1)) == "valid"
    assert info.days_left(expiry - dt.timedelta(days=10, hours=1)) == 10
    assert info.days_left(expiry + dt.timedelta(hours=1)) == -1
    assert info.status((expiry - dt.timedelta(days=100)).replace(tzinfo=None)) == "valid"


def test_expired_and_soon_from_pki_files(tmp_path: Path) -> None:
    paths = pki.write_pki(tmp_path)
    assert load_pem_file(paths["expired"]).certificates[0].status() == "expired"
    soon = load_pem_file(paths["soon"]).certificates[0]
    assert soon.status() == "expiring" and soon.days_left() in (9, 10)
    assert load_pem_file(paths["server"]).certificates[0].status() == "valid"


def test_as_dict_is_json(server: pki.Issued) -> None:
    info = CertInfo.from_certificate(server.cert)
    data = json.loads(json.dumps(info.as_dict()))
    assert data["subject"] == "CN=localhost"
    assert data["sans"] == info.sans
    assert data["sha256"] == fingerprint(server)
    assert data["status"] == "valid" and isinstance(data["days_left"], int)
    assert dt.datetime.fromisoformat(data["not_after"]) == info.not_after


def test_describe_pem(server: pki.Issued, ca: pki.Issued) -> None:
    assert describe_pem("") == []
    described = describe_pem(pem(server, ca).decode())
    assert [info.subject for info in described] == ["CN=localhost", CA_NAME]


# --- PEM files on disk ------------------------------------------------------------------------

def test_load_pem_file(tmp_path: Path, ca: pki.Issued) -> None:
    good = tmp_path / "ca.pem"
    good.write_bytes(pem(ca))
    assert fingerprints(load_pem_file(good)) == [fingerprint(ca)]
    assert load_pem_file(str(good)).format == "PEM"
    (tmp_path / "ca.der").write_bytes(der(ca))
    (tmp_path / "junk.pem").write_bytes(b"junk")
    (tmp_path / "empty.pem").write_bytes(b"")

    rejects(load_pem_file, tmp_path / "missing.pem", match="missing.pem does not exist.$")
    rejects(load_pem_file, tmp_path, match="is a directory")
    rejects(load_pem_file, tmp_path / "ca.der", "SP_KAFKA_TLS_CA_FILE",
            match="^SP_KAFKA_TLS_CA_FILE .*ca.der is a DER file, not PEM")
    rejects(load_pem_file, tmp_path / "junk.pem", match="junk.pem: This file is not a PEM")
    rejects(load_pem_file, tmp_path / "empty.pem", match="empty.pem: Truststore file is empty.$")
