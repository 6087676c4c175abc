"""clients/python/console_client.py: signatures, the callback receiver over real HTTP, ETag/304, error
mapping, registration, acknowledgements and watch(), against the real console serving on real HTTP with
its delivery worker (tests/clients/live_console.py); only answers the console never gives (a proxy's 5xx,
a redirect, a foreign document) are canned in front of it."""
from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import console_client as cc
import pytest

from tests.clients.conftest import ROOT
from tests.clients.live_console import LiveConsole

SECRET = "5f2b8c0d1e9a4b7c"
TOKEN = "a-token-for-calls-that-never-reach-a-console"
BODY = b'{"service": "edge", "version": 12, "etag": "abc123"}'
MQTT = {"enabled": True, "host": "127.0.0.1", "port": 11883, "client_id": "edge"}


def _eventually(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """POST with http.client so that any header set (or none) can be sent."""
    parsed = re.match(r"http://([^:/]+):(\d+)(/.*)", url)
    assert parsed
    connection = http.client.HTTPConnection(parsed.group(1), int(parsed.group(2)), timeout=5)
    try:
        connection.request("POST", parsed.group(3), body=body, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def test_the_client_needs_nothing_but_the_standard_library() -> None:
    """Imported by an interpreter with no site-packages at all (-S -I)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import console_client; "
            "print(all(not m.__file__ or 'site-packages' not in m.__file__ for m in list(sys.modules.values()) "
            "if getattr(m, '__file__', None)))")
    result = subprocess.run([sys.executable, "-I", "-S", "-c", code, str(ROOT / "clients" / "python")],
                            capture_output=True, text=True, timeout=30)
    assert (result.returncode, result.stdout.strip()) == (0, "True"), result.stderr


# -- signatures ---------------------------------------------------------------------------------------
def test_signature_of_the_exact_body_verifies() -> None:
    header = cc.sign(SECRET, BODY)
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", header)
    assert cc.verify_signature(SECRET, BODY, header)
    assert cc.verify_signature(SECRET, BODY, header.upper().replace("SHA256=", "sha256="))


@pytest.mark.parametrize("body", [
    BODY.replace(b"12", b"13"),
    BODY + b" ",
    BODY.replace(b'"abc123"', b'"abc124"'),
    b"",
])
def test_a_tampered_body_is_rejected(body: bytes) -> None:
    assert not cc.verify_signature(SECRET, body, cc.sign(SECRET, BODY))


def test_wrong_secret_missing_or_malformed_header_are_rejected() -> None:
    good = cc.sign(SECRET, BODY)
    assert not cc.verify_signature("another-secret", BODY, good)
    assert not cc.verify_signature(SECRET, BODY, None)
    assert not cc.verify_signature(SECRET, BODY, "")
    assert not cc.verify_signature(None, BODY, good)
    assert not cc.verify_signature("", BODY, good)
    assert not cc.verify_signature(SECRET, BODY, good.removeprefix("sha256="))
    assert not cc.verify_signature(SECRET, BODY, "sha1=" + good.removeprefix("sha256="))
    assert not cc.verify_signature(SECRET, BODY, "sha256=" + "z" * 64)
    assert not cc.verify_signature(SECRET, BODY, good[:-2])


def test_the_client_verifies_with_its_current_secret() -> None:
    client = cc.ConsoleClient("http://127.0.0.1:1", TOKEN, "edge")
    assert not client.verify_signature(BODY, cc.sign(SECRET, BODY))
    client.signing_secret = SECRET
    assert client.verify_signature(BODY, cc.sign(SECRET, BODY))


def test_the_openssl_recipe_of_the_docs_computes_the_same_signature(tmp_path: Path) -> None:
    """docs/connecting-a-service.md's openssl check, run as written, agrees with the client."""
    doc = (ROOT / "docs" / "connecting-a-service.md").read_text()
    block = re.search(r"```bash\n(# verify-signature\n.*?)```", doc, re.S)
    assert block, "the verify-signature block is missing from the docs"
    (tmp_path / "body.json").write_bytes(BODY)
    for header, expected in ((cc.sign(SECRET, BODY), "signature ok"),
                             (cc.sign("wrong", BODY), "signature BAD")):
        result = subprocess.run(["bash", "-c", block.group(1)], cwd=tmp_path, capture_output=True, text=True,
                                env={"PATH": "/usr/bin:/bin", "SECRET": SECRET, "SIGNATURE": header},
                                timeout=10)
        assert result.stdout.strip().splitlines()[-1] == expected, result.stdout + result.stderr


# -- callback receiver --------------------------------------------------------------------------------
@pytest.fixture
def received() -> list[cc.Notification]:
    return []


@pytest.fixture
def server(received: list[cc.Notification]):
    box = {"secret": SECRET}
    srv = cc.CallbackServer("127.0.0.1", 0, lambda: box["secret"], received.append, expected_service="edge",
                            get_routes={"/status": lambda: {"ok": True}, "/boom": lambda: 1 / 0})
    srv.box = box  # type: ignore[attr-defined]
    srv.start()
    yield srv
    srv.stop()


def test_a_signed_callback_is_answered_204_and_handed_over_once(server, received) -> None:
    status, body = _post(server.url, BODY, {cc.SIGNATURE_HEADER: cc.sign(SECRET, BODY),
                                            "Content-Type": "application/json"})
    assert (status, body) == (204, b"")
    server.stop()
    assert received == [cc.Notification("edge", 12, "abc123")]
    assert (server.received, server.rejected) == (1, 0)


TAMPERED = BODY.replace(b"12", b"99")


@pytest.mark.parametrize("headers", [
    {cc.SIGNATURE_HEADER: cc.sign(SECRET, BODY)},
    {cc.SIGNATURE_HEADER: cc.sign("wrong-secret", TAMPERED)},
    {cc.SIGNATURE_HEADER: "sha256="},
    {cc.SIGNATURE_HEADER: cc.sign(SECRET, TAMPERED).removeprefix("sha256=")},
    {},
], ids=["tampered", "wrong-secret", "empty", "no-prefix", "missing"])
def test_a_bad_or_missing_signature_is_401_and_nothing_is_called(server, received, headers) -> None:
    status, answer = _post(server.url, TAMPERED, headers)
    assert status == 401
    assert json.loads(answer) == {"error": "bad or missing signature"}
    server.stop()
    assert received == [] and server.rejected == 1


def test_a_body_changed_after_signing_is_401(server, received) -> None:
    header = cc.sign(SECRET, BODY)
    status, _ = _post(server.url, BODY.replace(b"12", b"13"), {cc.SIGNATURE_HEADER: header})
    assert status == 401
    server.stop()
    assert received == []


def test_before_registration_no_signature_is_accepted(server, received) -> None:
    server.box["secret"] = None
    status, _ = _post(server.url, BODY, {cc.SIGNATURE_HEADER: cc.sign(SECRET, BODY)})
    assert status == 401
    server.stop()
    assert received == []


@pytest.mark.parametrize("body, reason", [
    (b"not json", "the body is not JSON"),
    (b"[1, 2]", "the body is not a JSON object"),
    (b'{"service": "edge", "version": "12", "etag": "x"}', "'version' must be a non-negative integer"),
    (b'{"service": "edge", "version": 12}', "'etag' must be a string"),
    (b'{"version": 12, "etag": "x"}', "'service' must be a non-empty string"),
    (b'{"service": "billing", "version": 12, "etag": "x"}', "the callback is for service 'billing', this is 'edge'"),
])
def test_a_signed_body_that_is_not_the_expected_json_is_400(server, received, body, reason) -> None:
    status, answer = _post(server.url, body, {cc.SIGNATURE_HEADER: cc.sign(SECRET, body)})
    assert status == 400
    assert json.loads(answer) == {"error": reason}
    server.stop()
    assert received == []


def test_other_paths_length_and_size_limits(server, received) -> None:
    assert _post(server.url.replace("/console-callback", "/other"), BODY,
                 {cc.SIGNATURE_HEADER: cc.sign(SECRET, BODY)})[0] == 404
    big = b"{" + b" " * (cc.MAX_CALLBACK_BYTES + 1) + b"}"
    assert _post(server.url, big, {cc.SIGNATURE_HEADER: cc.sign(SECRET, big)})[0] == 413
    with socket.create_connection((server.host, server.port), timeout=5) as raw:
        raw.sendall(b"POST /console-callback HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert raw.recv(100).startswith(b"HTTP/1.1 411")
    server.stop()
    assert received == []


def test_get_routes_answer_json(server) -> None:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=5)
    connection.request("GET", "/status")
    answer = connection.getresponse()
    assert (answer.status, json.loads(answer.read())) == (200, {"ok": True})
    connection.request("GET", "/boom")
    answer = connection.getresponse()
    assert (answer.status, json.loads(answer.read())) == (500, {"error": "internal_error"})
    connection.request("GET", "/nothing")
    assert connection.getresponse().status == 404
    connection.close()


def test_the_receiver_listens_on_ipv6_loopback(received) -> None:
    try:
        srv = cc.CallbackServer("::1", 0, lambda: SECRET, received.append)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    with srv:
        assert srv.url == f"http://[::1]:{srv.port}/console-callback"
        connection = http.client.HTTPConnection("::1", srv.port, timeout=5)
        connection.request("POST", "/console-callback", body=BODY,
                           headers={cc.SIGNATURE_HEADER: cc.sign(SECRET, BODY)})
        assert connection.getresponse().status == 204
        connection.close()
    assert received == [cc.Notification("edge", 12, "abc123")]


def test_a_server_that_never_started_stops_at_once() -> None:
    srv = cc.CallbackServer("127.0.0.1", 0, lambda: SECRET, lambda _n: None)
    stopping = threading.Thread(target=srv.stop, daemon=True)
    stopping.start()
    stopping.join(5)
    assert not stopping.is_alive()


def test_the_console_is_answered_while_the_work_still_runs() -> None:
    """on_change blocks until the test has the 204: a receiver working inside the request would time out."""
    release, started, done = threading.Event(), threading.Event(), []

    def slow(notification: cc.Notification) -> None:
        started.set()
        assert release.wait(10)
        done.append(notification.version)

    with cc.CallbackServer("127.0.0.1", 0, lambda: SECRET, slow) as srv:
        for version in (1, 2):
            body = json.dumps({"service": "edge", "version": version, "etag": f"e{version}"}).encode()
            assert _post(srv.url, body, {cc.SIGNATURE_HEADER: cc.sign(SECRET, body)})[0] == 204
        assert started.wait(5) and done == []
        release.set()
        assert _eventually(lambda: done == [1, 2])


def test_an_exception_in_on_change_does_not_stop_the_receiver() -> None:
    calls: list[int] = []

    def flaky(notification: cc.Notification) -> None:
        calls.append(notification.version)
        if notification.version == 1:
            raise RuntimeError("boom")

    with cc.CallbackServer("127.0.0.1", 0, lambda: SECRET, flaky) as srv:
        for version in (1, 2):
            body = json.dumps({"service": "edge", "version": version, "etag": "e"}).encode()
            assert _post(srv.url, body, {cc.SIGNATURE_HEADER: cc.sign(SECRET, body)})[0] == 204
        assert _eventually(lambda: calls == [1, 2])


# -- fetch, ETag, errors ------------------------------------------------------------------------------
def _client(console: LiveConsole, token: str, protocols=("mqtt", "rabbitmq"), **kwargs) -> cc.ConsoleClient:
    """A client of `edge`, registered without a callback."""
    client = cc.ConsoleClient(console.url, token, "edge", **kwargs)
    client.register(list(protocols))
    return client


def test_fetch_sends_the_token_and_the_last_etag_and_304_gives_none(console: LiveConsole, token: str) -> None:
    version = console.change("mqtt", **MQTT)
    client = _client(console, token)
    config = client.fetch()
    assert config is not None
    assert (config.service, config.version, config.protocol) == ("edge", version, "mqtt")
    assert {k: config.settings[k] for k in MQTT} == MQTT and config.settings["nodes"] == ["127.0.0.1:11883"]
    assert config.priorities == ["kafka", "mqtt", "nats", "pulsar", "rabbitmq"]
    assert config.etag == console.service("edge")["rollout"]["target"]["etag"] == client.etag
    assert client.fetch() is None
    assert client.fetch() is None
    first, second, third = console.config_reads("edge")
    assert first.headers["authorization"] == f"Bearer {token}" and "if-none-match" not in first.headers
    assert second.headers["if-none-match"] == f'"{config.etag}"' and (second.status, third.status) == (304, 304)
    assert client.config is config
    assert console.service("edge")["rollout"]["fetched"]["version"] == version

    newer_version = console.change("mqtt", port=11884)
    newer = client.fetch()
    assert newer is not None and newer.version == newer_version > version and newer.settings["port"] == 11884
    assert newer.etag != config.etag and client.etag == newer.etag
    assert client.fetch(force=True) == newer
    assert "if-none-match" not in console.config_reads("edge")[-1].headers


def test_secrets_reach_the_service_token_only(console: LiveConsole, token: str) -> None:
    console.change("mqtt", **MQTT, username="edge-user", password="edge-pass-1")
    own = _client(console, token).fetch()
    assert (own.settings["username"], own.settings["password"]) == ("edge-user", "edge-pass-1")
    masked = cc.ConsoleClient(console.url, console.admin_token, "edge").fetch()
    assert masked.settings["password"] == {"set": True} and masked.etag != own.etag


def test_the_etag_is_sent_back_as_the_console_wrote_it(console: LiveConsole, token: str) -> None:
    """A weak ETag, or none in the header (as a rewriting proxy may leave it): canned in front."""
    document = json.dumps({"service": "edge", "version": 5, "etag": "body-tag", "priorities": [], "protocol": None,
                           "brokers": {}}).encode()
    client = _client(console, token)
    console.fail_next.append((200, document, {"ETag": 'W/"weak-tag"'}))
    assert client.fetch().etag == "weak-tag"
    client.fetch()
    assert console.config_reads("edge")[-1].headers["if-none-match"] == 'W/"weak-tag"'
    console.fail_next.append((200, document, {}))
    assert client.fetch(force=True).etag == "body-tag"
    client.fetch()
    assert console.config_reads("edge")[-1].headers["if-none-match"] == '"body-tag"'


def test_a_token_of_another_service_is_403_with_the_console_message(console: LiveConsole, token: str,
                                                                     other_token: str) -> None:
    _client(console, token)
    client = cc.ConsoleClient(console.url, other_token, "edge")
    with pytest.raises(cc.ConsoleError) as caught:
        client.fetch()
    assert caught.value.status == 403 and caught.value.error == "forbidden"
    assert caught.value.message == "This token is for service billing."
    assert str(caught.value) == "HTTP 403: This token is for service billing. (forbidden)"
    with pytest.raises(cc.ConsoleError, match="HTTP 403: This token is for service billing"):
        client.register(["mqtt"])
    with pytest.raises(cc.ConsoleError, match="HTTP 403: This token is for service billing"):
        client.ack(1, "applied")


def test_error_mapping_of_the_console_answers(console: LiveConsole, token: str) -> None:
    client = cc.ConsoleClient(console.url, "not-a-token", "edge")
    with pytest.raises(cc.ConsoleError) as caught:
        client.fetch()
    assert (caught.value.status, caught.value.error) == (401, "unauthorized")
    assert caught.value.message == "The bearer token is not valid."

    client = cc.ConsoleClient(console.url, token, "edge")
    with pytest.raises(cc.ConsoleError) as caught:            # not registered yet
        client.fetch()
    assert (caught.value.status, caught.value.error) == (404, "not_found")
    assert caught.value.message == "No registered service named 'edge'. Register it first: POST /api/v1/services."
    with pytest.raises(cc.ConsoleError) as caught:
        client.register(["smtp"])
    assert (caught.value.status, caught.value.error) == (422, "invalid")
    assert caught.value.message.startswith("The service was not registered. protocols: ")
    assert "protocols" in caught.value.body["errors"]

    client.register(["mqtt"])
    with pytest.raises(cc.ConsoleError) as caught:
        client.request("POST", "/api/v1/services/edge/ack", {"version": 1, "status": "maybe"})
    assert (caught.value.status, caught.value.error) == (422, "invalid")
    assert caught.value.message == "The acknowledgement was not recorded. status: Say applied or failed."
    with pytest.raises(cc.ConsoleError) as caught:
        client.request("POST", "/api/v1/services/edge/ack", [1])
    assert (caught.value.status, caught.value.error) == (400, "bad_request")


def test_error_mapping_of_answers_from_in_front_of_the_console(console: LiveConsole, token: str) -> None:
    """What a proxy or a wrong URL answers (the console never does): canned in front of it."""
    client = _client(console, token)
    console.fail_next.append((500, b"<html><body>Internal Server Error</body></html>",
                              {"Content-Type": "text/html"}))
    with pytest.raises(cc.ConsoleError) as caught:
        client.fetch()
    assert (caught.value.status, caught.value.message) == (500, "Internal Server Error")

    console.fail_next.append((503, b"upstream down\n", {}))
    with pytest.raises(cc.ConsoleError, match="HTTP 503: Service Unavailable: upstream down"):
        client.fetch()

    console.fail_next.append((302, b"", {"Location": "http://127.0.0.2:9/login"}))
    with pytest.raises(cc.ConsoleError) as caught:
        client.fetch()
    assert caught.value.status == 302 and "redirects are not followed" in caught.value.message
    assert console.requests[-1].path == "/api/v1/services/edge/config"

    console.fail_next.append((200, b"not json", {}))
    with pytest.raises(cc.ConsoleError, match="not a JSON object"):
        client.fetch()
    console.fail_next.append((200, b'{"service": "edge", "version": "7"}', {}))
    with pytest.raises(cc.ConsoleError, match="cannot read: version is not an integer"):
        client.fetch()
    assert client.fetch() is not None                  # the console itself answers again


def test_a_console_that_cannot_be_reached_is_console_unavailable() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    client = cc.ConsoleClient(f"http://127.0.0.1:{port}", TOKEN, "edge", timeout=2)
    with pytest.raises(cc.ConsoleUnavailable) as caught:
        client.fetch()
    assert caught.value.status is None and "Connection refused" in caught.value.message


def test_bad_arguments_are_refused_early() -> None:
    with pytest.raises(ValueError, match="http"):
        cc.ConsoleClient("ftp://console", TOKEN, "edge")
    with pytest.raises(ValueError, match="token"):
        cc.ConsoleClient("http://console", "", "edge")
    with pytest.raises(ValueError, match="status"):
        cc.ConsoleClient("http://console", TOKEN, "edge").ack(1, "done")


# -- register, ack ------------------------------------------------------------------------------------
def test_register_keeps_the_secret_and_each_registration_rotates_it(console: LiveConsole, token: str) -> None:
    client = cc.ConsoleClient(console.url, token, "edge")
    answer = client.register(["mqtt", "rabbitmq"], callback_url="http://127.0.0.1:9/console-callback")
    assert answer["service"]["protocols"] == ["mqtt", "rabbitmq"]
    assert answer["service"]["callback_url"] == "http://127.0.0.1:9/console-callback"
    first = client.signing_secret
    assert first == console.signing_secret("edge") == answer["signing_secret"]
    assert console.requests[-1].status == 201
    client.register(["mqtt"], callback_url="http://127.0.0.1:9/console-callback")
    assert console.requests[-1].status == 200
    assert client.signing_secret not in (None, first) and client.signing_secret == console.signing_secret("edge")
    old_signature = cc.sign(first, BODY)
    assert not client.verify_signature(BODY, old_signature)
    assert client.verify_signature(BODY, cc.sign(console.signing_secret("edge"), BODY))
    assert console.service("edge")["protocols"] == ["mqtt"]

    client.register(["mqtt"])                 # no callback URL: the console's callbacks are turned off
    assert client.signing_secret is None and console.signing_secret("edge") is None
    assert console.service("edge")["callback_url"] is None


def test_a_registration_with_a_callback_but_no_secret_is_an_error(console: LiveConsole, token: str) -> None:
    """A 201 without the secret (the console always sends it): canned in front of the console."""
    console.fail_next.append((201, b'{"service": {"name": "edge"}}', {}))
    with pytest.raises(cc.ConsoleError, match="no signing secret"):
        cc.ConsoleClient(console.url, token, "edge").register(["mqtt"], "http://127.0.0.1:9/cb")


def test_ack_posts_version_status_and_message(console: LiveConsole, token: str) -> None:
    version = console.change("mqtt", **MQTT)
    client = _client(console, token)
    assert client.fetch().version == version
    answer = client.ack(version, "failed", "Not authorized")
    assert answer["state"] == "failed" and answer["acknowledged"]["current"] is True
    assert {k: answer["acknowledged"][k] for k in ("version", "status", "message")} == {
        "version": version, "status": "failed", "message": "Not authorized"}
    assert console.requests[-1].path == "/api/v1/services/edge/ack"
    assert client.ack(version, "applied")["state"] == "applied"
    assert console.api("GET", f"/api/v1/rollout?version={version}")[1]["counts"]["applied"] == 1


# -- watch --------------------------------------------------------------------------------------------
class Watcher:
    """watch() in a thread, collecting the configurations it hands over."""

    def __init__(self, client: cc.ConsoleClient, **kwargs) -> None:
        self.client, self.configs, self.stop = client, [], threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, kwargs=kwargs, daemon=True)

    def _run(self, **kwargs) -> None:
        try:
            self.client.watch(self.configs.append, stop=self.stop, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - the test looks at it
            self.error = exc

    def versions(self) -> list[int]:
        return [c.version for c in self.configs]

    def __enter__(self) -> Watcher:
        self.thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.stop.set()
        self.client.wake()
        self.thread.join(5)
        assert not self.thread.is_alive(), "watch() did not stop"


def test_watch_follows_the_console_callbacks_without_polling(console: LiveConsole, token: str) -> None:
    first = console.change("mqtt", **MQTT)
    client = cc.ConsoleClient(console.url, token, "edge")
    with cc.CallbackServer("127.0.0.1", 0, client.signing_secret_getter, client.notify,
                           expected_service="edge") as srv:
        client.register(["mqtt"], callback_url=srv.url)
        with Watcher(client, poll_interval=600) as watcher:
            assert _eventually(lambda: watcher.versions() == [first])
            second = console.change("mqtt", port=11884)          # the console's worker calls back
            assert _eventually(lambda: watcher.versions() == [first, second], timeout=15)
            assert watcher.configs[-1].settings["port"] == 11884
            assert _eventually(lambda: console.service("edge")["rollout"]["delivery"]["state"] == "delivered")
            assert srv.received == 1 and srv.rejected == 0
            reads = len(console.config_reads("edge"))
            assert console.callback("edge") == 204          # same etag again: nothing to fetch
            assert console.callback("edge", signature="sha256=" + "0" * 64) == 401
            time.sleep(0.3)
            assert len(console.config_reads("edge")) == reads and watcher.versions() == [first, second]


def test_watch_polls_with_the_etag_when_no_callback_comes(console: LiveConsole, token: str) -> None:
    first = console.change("rabbitmq", enabled=True, host="127.0.0.1", port=17672)
    client = _client(console, token)
    with Watcher(client, poll_interval=0.1) as watcher:
        assert _eventually(lambda: watcher.versions() == [first])
        assert _eventually(lambda: len(console.config_reads("edge")) >= 4)
        assert {r.status for r in console.config_reads("edge")[1:]} == {304}
        second = console.change("rabbitmq", port=17671, tls=True)
        assert _eventually(lambda: watcher.versions() == [first, second])


def test_watch_retries_an_unavailable_console_and_stops_on_a_refused_token(console: LiveConsole,
                                                                            token: str) -> None:
    """A proxy in front answering 503 and 502 (canned), then the console itself."""
    client = _client(console, token)
    console.fail_next.extend([(503, b"", {}), (502, b"", {})])
    with Watcher(client, poll_interval=600, retry_max=0.1) as watcher:
        assert _eventually(lambda: watcher.versions() == [0])
    assert [r.status for r in console.config_reads("edge")] == [503, 502, 200]

    console.api("DELETE", "/api/v1/tokens/edge-token")
    refused = cc.ConsoleClient(console.url, token, "edge")
    with Watcher(refused, poll_interval=600) as watcher:
        assert _eventually(lambda: not watcher.thread.is_alive())
    assert isinstance(watcher.error, cc.ConsoleError) and watcher.error.status == 401


def test_watch_goes_on_after_on_config_raises(console: LiveConsole, token: str) -> None:
    client = _client(console, token)
    seen: list[int] = []
    stop = threading.Event()

    def on_config(config: cc.Config) -> None:
        seen.append(config.version)
        if len(seen) == 1:
            raise RuntimeError("apply failed")
        stop.set()

    thread = threading.Thread(target=client.watch, args=(on_config,), kwargs={"poll_interval": 0.05, "stop": stop})
    thread.start()
    assert _eventually(lambda: seen == [0])
    version = console.change("mqtt", **MQTT)
    thread.join(5)
    assert seen == [0, version] and not thread.is_alive()
