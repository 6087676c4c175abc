"""The shared transport helpers: cause classification, protocol recognition, deadlines (no network but
loopback sockets of the test itself)."""
from __future__ import annotations

import socket
import ssl
import threading
import time

import pytest

from console.brokers.base import CheckFailed, Deadline, one_line
from console.brokers.net import classify, closes_at_once, identify


def verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"certificate verify failed: {message}")
    exc.verify_code, exc.verify_message = code, message
    return exc


@pytest.mark.parametrize("exc, cause", [
    (verify_error(10, "certificate has expired"), "tls_expired"),
    (verify_error(9, "certificate is not yet valid"), "tls_not_yet_valid"),
    (verify_error(64, "IP address mismatch, certificate is not valid for '127.0.0.1'."),
     "tls_hostname_mismatch"),
    (verify_error(62, "Hostname mismatch, certificate is not valid for 'a.example'."),
     "tls_hostname_mismatch"),
    (verify_error(19, "self-signed certificate in certificate chain"), "tls_untrusted"),
    (verify_error(20, "unable to get local issuer certificate"), "tls_untrusted"),
    (ConnectionRefusedError(111, "Connection refused"), "connection_refused"),
    (TimeoutError("timed out"), "connect_timeout"),
    (socket.gaierror(-2, "Name or service not known"), "dns_failure"),
])
def test_classify(exc: BaseException, cause: str) -> None:
    found = classify(exc, where="h:1")
    assert found is not None and found.cause == cause and found.message.startswith("h:1: ")


def test_classify_during_tls() -> None:
    reset = classify(ConnectionResetError(104, "Connection reset by peer"), during_tls=True)
    assert reset is not None and reset.cause == "tls_not_offered"
    assert classify(ConnectionResetError(104, "reset")) is None
    timeout = classify(TimeoutError(), during_tls=True)
    assert timeout is not None and timeout.cause == "handshake_timeout"


@pytest.mark.parametrize("data, name", [
    (b"AMQP\x00\x00\x09\x01", "AMQP"), (b'INFO {"server_id":"x"}\r\n', "NATS"),
    (b"\x15\x03\x03\x00\x02", "TLS"), (b"\x20\x02\x00\x00", "MQTT"),
    (b"HTTP/1.1 400 Bad Request", "HTTP"), (b"\x00\x00\x00\x0a", None),
])
def test_identify(data: bytes, name: str | None) -> None:
    assert identify(data) == name


def test_check_failed_validates_cause_and_keeps_one_line() -> None:
    with pytest.raises(ValueError):
        CheckFailed("no_such_cause", "x")
    assert CheckFailed("unknown", "a\nb   c").message == "a b c"
    assert len(one_line("x" * 1000)) == 300


def test_deadline_share_and_done() -> None:
    deadline = Deadline(1.0)
    part = deadline.share(0.5)
    assert part.start == deadline.start and abs(part.end - deadline.start - 0.5) < 1e-9
    assert 0.4 < part.remaining() <= 0.5 and part.remaining(0.1) == 0.1
    time.sleep(0.01)
    part.done()
    assert deadline.finished == part.finished and 10 <= deadline.latency_ms() < 100
    assert Deadline(0).expired and Deadline(0).remaining() == 0


def alert(reason: str) -> ssl.SSLError:
    exc = ssl.SSLError(1, f"[SSL: {reason}] {reason.lower()}")
    exc.reason = reason
    return exc


@pytest.mark.parametrize("reason, client_cert, cause", [
    ("TLSV13_ALERT_CERTIFICATE_REQUIRED", None, "tls_client_cert_required"),
    ("TLSV13_ALERT_CERTIFICATE_REQUIRED", False, "tls_client_cert_required"),
    ("TLSV1_ALERT_UNKNOWN_CA", None, "tls_client_cert_rejected"),
    ("TLSV1_ALERT_UNKNOWN_CA", True, "tls_client_cert_rejected"),
    ("SSLV3_ALERT_BAD_CERTIFICATE", False, "tls_client_cert_required"),   # nats-server says this to both
    ("SSLV3_ALERT_BAD_CERTIFICATE", True, "tls_client_cert_rejected"),
    ("SSLV3_ALERT_HANDSHAKE_FAILURE", False, "unknown"),                  # named by the steps, not here
])
def test_classify_client_certificate_alerts(reason: str, client_cert: bool | None, cause: str) -> None:
    found = classify(alert(reason), during_tls=True, where="h:1", client_cert=client_cert)
    assert found is not None and found.cause == cause and reason in found.message


def test_closes_at_once() -> None:
    """A port that accepts and closes at once, told from one that accepts and waits for its client and
    from one where nothing listens."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(4)
        port = listener.getsockname()[1]
        assert closes_at_once("127.0.0.1", port, 0.1) is False     # accepted by the backlog, kept open
        closer = threading.Thread(target=lambda: [listener.accept()[0].close() for _ in range(2)])
        closer.start()
        assert closes_at_once("127.0.0.1", port, 1.0) is True
        closer.join(2)
    assert closes_at_once("127.0.0.1", port, 0.1) is False         # refused is not "closed at once"
