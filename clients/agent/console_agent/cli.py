"""console-agent exec | render | once | diagnose."""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from . import __version__, formats
from .api import Console, Refused, Unavailable
from .diagnose import diagnose
from .runner import Agent, Options, once, say

PROTOCOLS = ("kafka", "pulsar", "mqtt", "nats", "rabbitmq")


def _common(parser: argparse.ArgumentParser, needs_format: bool = True) -> None:
    parser.add_argument("--console", required=True, metavar="URL", help="the console's base URL")
    parser.add_argument("--token-file", required=True, metavar="F", help="file holding the service token")
    parser.add_argument("--service", required=True, metavar="NAME", help="the registered service's name")
    parser.add_argument("--protocols", required=True, metavar="P[,P…]",
                        help="the protocols the program supports: " + ", ".join(PROTOCOLS))
    parser.add_argument("--format", required=needs_format, choices=formats.FORMATS, metavar="FMT",
                        default=None if needs_format else "json",
                        help="one of " + ", ".join(formats.FORMATS))
    parser.add_argument("--template", metavar="FILE", help="with --format template: the template file")
    parser.add_argument("--state-dir", metavar="DIR",
                        help="where the last document that ran is kept (default ~/.console-agent/<service>)")
    parser.add_argument("--tls-dir", metavar="DIR", help="where TLS material is written as PEM files "
                                                         "(default <state-dir>/tls)")
    parser.add_argument("--wait", type=float, default=60, metavar="S",
                        help="how long the console may hold one watch (default 60)")
    parser.add_argument("--poll", type=float, default=2, metavar="S",
                        help="seconds between fetches when the console does not hold watches (default 2)")
    parser.add_argument("--retry-max", type=float, default=30, metavar="S",
                        help="longest backoff while the console is away (default 30)")
    parser.add_argument("--timeout", type=float, default=10, metavar="S", help="HTTP timeout (default 10)")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="console-agent", description=(
        "Runs an unmodified program on the Messaging Console's broker settings: no inbound port, "
        "acknowledgements of what really happened."))
    top.add_argument("--version", action="version", version=f"console-agent {__version__}")
    modes = top.add_subparsers(dest="mode", required=True)
    run = modes.add_parser("exec", help="run CMD with the settings in its environment")
    _common(run)
    run.add_argument("--settle", type=float, default=5, metavar="S",
                     help="seconds the program must stay up before `applied` (default 5)")
    run.add_argument("--health", metavar="CMD", help="shell command that must exit 0 after --settle")
    run.add_argument("--signal", metavar="SIG", help="send SIG (HUP, USR1, …) on a change instead of "
                                                     "restarting (with --out: the file is rewritten first)")
    run.add_argument("--grace", type=float, default=10, metavar="S",
                     help="seconds between SIGTERM and SIGKILL on a restart (default 10)")
    run.add_argument("--out", metavar="FILE", help="also write the format's file here (file formats)")
    run.add_argument("command", nargs=argparse.REMAINDER, metavar="-- CMD [ARG…]")
    render = modes.add_parser("render", help="write the settings to a file")
    _common(render)
    render.add_argument("--out", required=True, metavar="FILE")
    render.add_argument("--on-change", metavar="CMD", help="shell command run after every write; "
                                                           "its exit status is the acknowledgement")
    one = modes.add_parser("once", help="fetch once, write --out or print, exit")
    _common(one)
    one.add_argument("--out", metavar="FILE")
    check = modes.add_parser("diagnose", help="DNS → TCP → TLS against the service's nodes, from here")
    _common(check, needs_format=False)
    check.add_argument("--protocol", choices=PROTOCOLS, help="default: the one chosen for the service")
    return top


def options(args: argparse.Namespace) -> Options:
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad or not protocols:
        raise SystemExit(f"console-agent: --protocols takes {', '.join(PROTOCOLS)}; not {', '.join(bad) or '(none)'}")
    try:
        token = Path(args.token_file).read_text().strip()
    except OSError as exc:
        raise SystemExit(f"console-agent: cannot read --token-file {args.token_file}: {exc.strerror}") from None
    if not token:
        raise SystemExit(f"console-agent: --token-file {args.token_file} is empty")
    state = Path(args.state_dir).expanduser() if args.state_dir else \
        Path("~/.console-agent").expanduser() / args.service
    template = ""
    if args.format == "template":
        if not args.template:
            raise SystemExit("console-agent: --format template needs --template FILE")
        template = Path(args.template).read_text()
    sig: int | None = None
    if getattr(args, "signal", None):
        name = args.signal.upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if not hasattr(signal, name):
            raise SystemExit(f"console-agent: --signal {args.signal} is not a signal")
        sig = int(getattr(signal, name))
    command = list(getattr(args, "command", None) or [])
    if command[:1] == ["--"]:
        command = command[1:]
    return Options(console=args.console, token=token, service=args.service, protocols=protocols,
                   format=args.format, template=template, state_dir=state,
                   tls_dir=Path(args.tls_dir).expanduser() if args.tls_dir else state / "tls",
                   out=Path(args.out) if getattr(args, "out", None) else None, wait=args.wait,
                   poll=args.poll, retry_max=args.retry_max, timeout=args.timeout,
                   settle=getattr(args, "settle", 0), health=getattr(args, "health", None), signal=sig,
                   grace=getattr(args, "grace", 10), on_change=getattr(args, "on_change", None),
                   command=command)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    o = options(args)
    if args.mode == "exec":
        if not o.command:
            raise SystemExit("console-agent: exec needs the program: -- CMD [ARG…]")
        if o.signal is not None and o.format in formats.FILE_FORMATS and o.out is None:
            raise SystemExit("console-agent: --signal with a file format needs --out FILE")
        return Agent(o, "exec").run()
    if args.mode == "render":
        return Agent(o, "render").run()
    if args.mode == "diagnose":
        try:
            console = Console(o.console, o.token, o.service, o.timeout)
            console.register(o.protocols)                  # every mode registers the service first
            document = console.fetch(None)
        except (Unavailable, Refused) as exc:
            say(str(exc))
            return 1
        result = diagnose(document or {}, args.protocol)
        print(json.dumps(result, indent=2))
        return 0 if result and result["ok"] else 1
    return once(o)


if __name__ == "__main__":
    sys.exit(main())
