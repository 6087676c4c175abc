"""Example extension service: takes its broker settings from the Messaging Console and follows every change.

    python examples/extension_service/service.py --console http://127.0.0.1:8000 --token TOKEN \\
        --service edge --listen 127.0.0.1:8090 [--protocols mqtt,rabbitmq] [--poll-interval 30]

At start it serves its callback and `GET /status` on --listen, registers with the console (protocols and
callback URL; the answer's signing secret stays in memory), fetches its configuration, connects to the
broker of the protocol the console chose for it with the delivered settings, proves the connection with a
real publish and receive on a private topic or queue, and acknowledges `applied` (or `failed` with the
broker's reason). On a signed callback, or a poll that finds a new ETag, it fetches again, connects with
the new settings, proves them and switches over without a restart; when the new settings fail it keeps
running on the previous connection and says so. One line per event goes to stdout. SIGTERM or SIGINT
stops it cleanly (exit 0). Every option also reads an environment variable (shown in --help).
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Sequence

HERE = Path(__file__).resolve().parent
CLIENT_DIR = HERE.parent.parent / "clients" / "python"
for _path in (HERE, CLIENT_DIR):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from connectors import PROTOCOLS, ConnectFailed, Connection, open_connection  # noqa: E402
from console_client import CallbackServer, Config, ConsoleClient, ConsoleError  # noqa: E402

log = logging.getLogger("extension_service")


class ExampleService:
    """Keeps one broker connection that matches the configuration the console delivers."""

    def __init__(self, client: ConsoleClient, protocols: Sequence[str], heartbeat: float = 0,
                 out: Callable[[str], None] | None = None) -> None:
        self.client = client
        self.protocols = list(protocols)
        self.heartbeat = heartbeat
        self.out = out or (lambda line: print(line, flush=True))
        self.connection: Connection | None = None
        self.running_version: int | None = None
        self._switch = threading.Lock()
        self._retiring: list[threading.Thread] = []
        self._state_lock = threading.Lock()
        self._state: dict[str, Any] = {"service": client.service, "version": None, "status": "starting",
                                       "message": "", "protocol": None, "broker": None, "round_trips": 0,
                                       "connected": False, "running_version": None, "fetched_version": None,
                                       "acked_version": None}

    def status(self) -> dict[str, Any]:
        """The `/status` document: the version last handled and how, the broker in use, round trips."""
        with self._state_lock:
            state = dict(self._state)
        connection = self.connection
        state["connected"] = bool(connection is not None and connection.connected)
        return state

    def _update(self, **values: Any) -> None:
        with self._state_lock:
            self._state.update(values)

    def apply(self, config: Config) -> None:
        """Connect with `config`'s settings, prove them, switch over, acknowledge (watch's on_config)."""
        with self._switch:
            self._update(fetched_version=config.version)
            status, message = self._apply(config)
            self._update(version=config.version, status=status, message=message)
            self._ack(config.version, status, message)

    def _apply(self, config: Config) -> tuple[str, str]:
        protocol, settings = config.protocol, config.settings
        if protocol is None:       # the console says why (its `reason`), e.g. none of ours is enabled
            reason = config.raw.get("reason") or f"none of {', '.join(self.protocols)} is enabled"
            return self._failed(config, None, None, f"the console chose no protocol for this service: {reason}")
        if protocol not in PROTOCOLS:
            return self._failed(config, protocol, None, f"the console chose {protocol}, which this service "
                                                        f"does not speak")
        if settings is None:
            return self._failed(config, protocol, None, f"the console chose {protocol} but sent no settings")
        current = self.connection
        if current is not None and current.protocol == protocol and current.settings == settings \
                and current.connected:
            self.running_version = config.version
            self._update(running_version=config.version)
            self.out(f"applied v{config.version} {protocol} {current.broker} (settings unchanged)")
            return "applied", f"{protocol} settings unchanged; connection to {current.broker} kept"
        if current is not None:
            current.on_event = None     # a session the new one takes over is not news
        try:
            connection = open_connection(protocol, settings, self.client.service)
        except ConnectFailed as exc:
            if current is not None:
                current.on_event = self.out
            return self._failed(config, protocol, _where(settings), str(exc))
        connection.on_event = self.out
        self.connection = connection
        if current is not None:
            self._retire(current)
        self.running_version = config.version
        with self._state_lock:
            self._state.update(protocol=protocol, broker=connection.broker, running_version=config.version,
                               round_trips=self._state["round_trips"] + 1)
        self.out(f"applied v{config.version} {protocol} {connection.broker}")
        return "applied", f"connected to {protocol} {connection.broker}; a message went there and back"

    def _retire(self, connection: Connection) -> None:
        """Close the replaced connection in the background (an MQTT session the new one took over may
        sit in paho's reconnect wait for up to a second)."""
        closing = threading.Thread(target=connection.close, name="retire", daemon=True)
        with self._state_lock:
            self._retiring = [t for t in self._retiring if t.is_alive()] + [closing]
        closing.start()

    def _failed(self, config: Config, protocol: str | None, broker: str | None, reason: str) -> tuple[str, str]:
        current = self.connection
        message = reason
        if current is not None:
            message += f"; still running v{self.running_version} on {current.protocol} {current.broker}"
        where = "" if broker is None or message.startswith(f"{broker}: ") else f"{broker}: "
        self.out(f"failed v{config.version} {protocol or '-'} {where}{message}")
        return "failed", message

    def _ack(self, version: int, status: str, message: str) -> None:
        for attempt in range(3):
            try:
                self.client.ack(version, status, message)
                self._update(acked_version=version)
                return
            except ConsoleError as exc:
                log.warning("acknowledging v%s failed (%s)", version, exc)
                if (exc.status is not None and exc.status < 500) or attempt == 2:
                    self.out(f"ack-failed v{version}: {exc}")
                    return
                time.sleep(1 + attempt)

    def beat(self, stop: threading.Event) -> None:
        """Every `heartbeat` seconds, one more round trip on the connection in use."""
        while not stop.wait(self.heartbeat):
            if not self._switch.acquire(blocking=False):
                continue
            try:
                connection = self.connection
                if connection is None:
                    continue
                try:
                    connection.round_trip()
                except ConnectFailed as exc:
                    self.out(f"round-trip-failed {connection.protocol} {exc}")
                    continue
                with self._state_lock:
                    self._state["round_trips"] += 1
            finally:
                self._switch.release()

    def close(self) -> None:
        """Close the broker connection and wait for replaced ones to finish closing."""
        with self._switch:
            if self.connection is not None:
                self.connection.close()
                self.connection = None
            for thread in self._retiring:
                thread.join(timeout=5)


def _where(settings: dict[str, Any]) -> str:
    return f"{settings.get('host') or 'localhost'}:{settings.get('port') or '-'}"


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, not {value!r}")
    return host.strip("[]"), int(port)


def _protocols(value: str) -> list[str]:
    names = [name.strip().lower() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in PROTOCOLS]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"protocols must be a comma list of {', '.join(PROTOCOLS)}")
    return names


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options, each with an environment variable as its default."""
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])   # no defaults shown: the token
    parser.add_argument("--console", default=env("CONSOLE_URL"), help="console base URL (CONSOLE_URL)")
    parser.add_argument("--token", default=env("CONSOLE_TOKEN"), help="service token (CONSOLE_TOKEN)")
    parser.add_argument("--service", default=env("CONSOLE_SERVICE"), help="service name (CONSOLE_SERVICE)")
    parser.add_argument("--listen", type=_listen, default=env("SERVICE_LISTEN", "127.0.0.1:8090"),
                        help="HOST:PORT for the callback and /status; port 0 picks one (SERVICE_LISTEN; "
                             "127.0.0.1:8090)")
    parser.add_argument("--callback-url", default=env("SERVICE_CALLBACK_URL"),
                        help="callback URL the console can reach (SERVICE_CALLBACK_URL); default: "
                             "http://<listen>/console-callback")
    parser.add_argument("--no-callback", action="store_true", default=env("SERVICE_NO_CALLBACK") == "1",
                        help="register without a callback URL and only poll (SERVICE_NO_CALLBACK=1)")
    parser.add_argument("--protocols", type=_protocols, default=env("SERVICE_PROTOCOLS", "mqtt,rabbitmq"),
                        help="protocols this service supports (SERVICE_PROTOCOLS; mqtt,rabbitmq)")
    parser.add_argument("--poll-interval", type=float, default=env("SERVICE_POLL_INTERVAL", "30"),
                        help="seconds between polls when no callback comes (SERVICE_POLL_INTERVAL; 30)")
    parser.add_argument("--heartbeat", type=float, default=env("SERVICE_HEARTBEAT", "0"),
                        help="seconds between round trips on the live connection, 0 = off (SERVICE_HEARTBEAT; 0)")
    parser.add_argument("--timeout", type=float, default=env("SERVICE_CONSOLE_TIMEOUT", "5"),
                        help="seconds per console request (SERVICE_CONSOLE_TIMEOUT; 5)")
    args = parser.parse_args(argv)
    for name in ("console", "token", "service"):
        if not getattr(args, name):
            parser.error(f"--{name} (or its environment variable) is required")
    if args.listen[0] in ("0.0.0.0", "::", "") and not (args.callback_url or args.no_callback):
        parser.error("listening on every address: give --callback-url with an address the console can reach")
    if args.poll_interval <= 0 or args.timeout <= 0 or args.heartbeat < 0:
        parser.error("--poll-interval and --timeout must be positive, --heartbeat 0 or more")
    return args


def register(client: ConsoleClient, protocols: list[str], callback_url: str | None, stop: threading.Event,
             out: Callable[[str], None]) -> bool:
    """Register until the console answers (retrying while it is unreachable); False when refused or stopped."""
    delay = 1.0
    while not stop.is_set():
        try:
            client.register(protocols, callback_url=callback_url)
            out(f"registered {client.service} {','.join(protocols)} callback={callback_url or '-'}")
            return True
        except ConsoleError as exc:
            if exc.status is not None and exc.status < 500:
                out(f"register-refused {client.service}: {exc}")
                return False
            out(f"console-unavailable: {exc}; retrying in {delay:.0f} s")
            stop.wait(delay)
            delay = min(delay * 2, 30)
    return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run the service until SIGTERM / SIGINT; the exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, signals)   # every thread inherits the mask; main waits below
    out = _printer()
    client = ConsoleClient(args.console, args.token, args.service, timeout=args.timeout)
    service = ExampleService(client, args.protocols, heartbeat=args.heartbeat, out=out)
    stop = threading.Event()
    host, port = args.listen
    try:
        server = CallbackServer(host, port, client.signing_secret_getter, client.notify,
                                expected_service=args.service, get_routes={"/status": service.status})
    except OSError as exc:
        out(f"cannot listen on {host}:{port}: {exc.strerror or exc}")
        return 2
    server.start()
    out(f"listening {server.host}:{server.port}")
    callback_url = None if args.no_callback else (args.callback_url or server.url)
    outcome: dict[str, int] = {}

    def run() -> None:
        if not register(client, args.protocols, callback_url, stop, out):
            outcome["code"] = 0 if stop.is_set() else 1
            return
        if args.heartbeat > 0:
            threading.Thread(target=service.beat, args=(stop,), name="heartbeat", daemon=True).start()
        try:
            client.watch(service.apply, poll_interval=args.poll_interval, stop=stop)
        except ConsoleError as exc:
            out(f"token-refused {client.service}: {exc}")
            outcome["code"] = 1
            return
        outcome["code"] = 0

    worker = threading.Thread(target=run, name="watch", daemon=True)
    worker.start()
    while worker.is_alive():
        received = signal.sigtimedwait(signals, 0.2)
        if received is not None:
            out(f"stopping on {signal.Signals(received.si_signo).name}")
            break
    stop.set()
    client.wake()
    worker.join(timeout=30)
    server.stop()
    service.close()
    out("stopped")
    return outcome.get("code", 1)


def _printer() -> Callable[[str], None]:
    lock = threading.Lock()

    def out(line: str) -> None:
        with lock:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    return out


if __name__ == "__main__":
    sys.exit(main())
