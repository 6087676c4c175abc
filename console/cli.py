"""Flask CLI: users, API tokens and brokers (`flask --app app …`)."""
from __future__ import annotations

import json
import secrets
import sqlite3
import sys
from pathlib import Path

import click
from flask import Flask
from flask.cli import AppGroup, with_appcontext
from sqlalchemy.exc import OperationalError, ProgrammingError

from . import background, database
from .auth import tokens as api_tokens
from .auth import users as accounts
from .brokers import PROTOCOLS
from .crypto import SecretUnreadable
from .extensions import db
from .messaging.schema import PROTOCOL_LABELS
from .models import ROLES, TOKEN_ROLES, User
from .settings import service
from .settings.environment import settings_warnings


class DatabaseGroup(AppGroup):
    """A command group whose commands read the database: a database without the console's tables, or
    one that does not answer, ends the command with one line saying what to do, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (OperationalError, ProgrammingError) as exc:
            db.session.rollback()
            raise click.ClickException(database.problem_line(exc)) from None


users = DatabaseGroup("users", help="Console users.")
tokens = DatabaseGroup("tokens", help="API tokens.")
brokers = DatabaseGroup("brokers", help="Messaging brokers.")
config = DatabaseGroup("config", help="Export and import the configuration (YAML).")


def _read_password(stdin: bool) -> str:
    if stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if problem := accounts.password_problem(password):
        raise click.UsageError(problem)
    return password


@users.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def users_create(name: str, role: str, password_stdin: bool) -> None:
    """Create a console user."""
    if problem := accounts.name_problem(name.strip()):
        raise click.UsageError(problem)
    try:
        user, _ = accounts.create(name, role, _read_password(password_stdin), actor="cli",
                                  origin="cli")
    except accounts.UserError as exc:
        raise click.UsageError(" ".join(exc.errors.values())) from None
    click.echo(f"Created {role} {user.username}.")


@users.command("list")
def users_list() -> None:
    """List console users."""
    for user in db.session.execute(db.select(User).order_by(User.username)).scalars():
        click.echo(f"{user.username}\t{user.role}")


@users.command("ensure-admin")
@click.option("--name", default="admin", show_default=True)
def users_ensure_admin(name: str) -> None:
    """Create a first admin when there is no user (password: CONSOLE_ADMIN_PASSWORD, else
    generated and printed once)."""
    import os

    if db.session.execute(db.select(User).limit(1)).scalar_one_or_none() is not None:
        click.echo("Users exist; no admin created.")
        return
    password = os.environ.get("CONSOLE_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
    user = User(username=name, role="admin")
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    if os.environ.get("CONSOLE_ADMIN_PASSWORD"):
        click.echo(f"Created admin '{name}' with the password from CONSOLE_ADMIN_PASSWORD.")
    else:
        click.echo(f"Created admin '{name}' with password: {password}")
        click.echo("This password is shown once. Change it with: flask --app app users "
                   "set-password admin")


@users.command("set-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True)
def users_set_password(name: str, password_stdin: bool) -> None:
    """Set a user's password."""
    user = accounts.find(name)
    if user is None:
        raise click.UsageError(f"No user named {name}.")
    try:
        accounts.set_password(user, _read_password(password_stdin), actor="cli", origin="cli")
    except accounts.UserError as exc:
        raise click.UsageError(" ".join(exc.errors.values())) from None
    click.echo(f"Password of {name} changed.")


@tokens.command("create")
@click.argument("name")
@click.option("--role", type=click.Choice(TOKEN_ROLES), required=True)
@click.option("--service", "service_name", default=None,
              help="For --role service: the service whose configuration the token reads.")
def tokens_create(name: str, role: str, service_name: str | None) -> None:
    """Create an API token and print it (shown once)."""
    try:
        _, token = api_tokens.create(name, role, service_name, actor="cli", origin="cli",
                                     provider="cli")
    except api_tokens.TokenError as exc:
        raise click.UsageError(" ".join(exc.errors.values())) from None
    click.echo(token)


@tokens.command("list")
def tokens_list() -> None:
    """List API tokens (names and roles, never the tokens)."""
    for row in api_tokens.all_tokens():
        role = f"{row.role}:{row.service}" if row.service else row.role
        click.echo(f"{row.name}\t{role}\t{row.prefix}…\tlast used {row.last_used_at or 'never'}")


@tokens.command("revoke")
@click.argument("name")
def tokens_revoke(name: str) -> None:
    """Delete an API token."""
    if not api_tokens.revoke(name, actor="cli", origin="cli"):
        raise click.UsageError(f"No token named {name}.")
    click.echo(f"Revoked {name}.")


def _describe(value: dict) -> str:
    inner = value["value"]
    if isinstance(inner, dict):
        if "reference" in inner:
            return inner["reference"] + (" (resolves)" if inner["resolves"] else " (does not resolve)")
        if not inner.get("set"):
            return "(not set)"
        if "certificates" in inner or "filename" in inner or "path" in inner:
            return f"{inner.get('filename') or inner.get('path')} ({len(inner.get('certificates', []))} cert)"
        return "(set)"
    if isinstance(inner, bool):
        return "on" if inner else "off"          # a switch, as the pages word it (not True/False)
    return "" if inner is None else str(inner)


@brokers.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def brokers_list(as_json: bool) -> None:
    """Effective settings per protocol, secrets masked, each value with its source."""
    order, info = service.priorities()
    data = {p: service.effective(p) for p in PROTOCOLS}
    if as_json:
        click.echo(json.dumps({
            "priorities": order,
            "priority_source": info["source"],
            "warnings": [w.as_dict() for w in settings_warnings()],
            "brokers": {p: {"enabled": s.enabled, "settings": s.public(),
                            "warnings": [m for _, m in service.findings(s)[1]]}
                        for p, s in data.items()},
        }, indent=2, default=str))
        return
    click.echo("Priority: " + " > ".join(order) + f"  [{info['source']}]")
    if info.get("env_error"):
        click.echo(f"  ! {info['env_error']}")
    for protocol, settings in data.items():
        click.echo("")
        click.echo(f"{PROTOCOL_LABELS[protocol]} ({'enabled' if settings.enabled else 'disabled'})")
        for name, resolved in settings.fields.items():
            public = resolved.public()
            source = public["source"] + (f" {public['env']}" if public.get("env") else "")
            click.echo(f"  {name:<22} {_describe(public):<40} [{source}]")
        for _, message in service.findings(settings)[1]:
            click.echo(f"  ! {message}")


@brokers.command("check")
@click.argument("protocols", nargs=-1, type=click.Choice(PROTOCOLS))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--timeout", type=click.FloatRange(0.1, 300), default=None,
              help="Seconds per check (default CONSOLE_CHECK_TIMEOUT).")
def brokers_check(protocols: tuple[str, ...], as_json: bool, timeout: float | None) -> None:
    """Real connection checks, concurrently; exit 0 when every checked protocol is up."""
    from flask import current_app

    from . import checks

    chosen = list(protocols) or [p for p in PROTOCOLS if service.effective(p).enabled]
    timeout = timeout or current_app.config["CHECK_TIMEOUT"]
    try:
        results = checks.run_checks(chosen, timeout) if chosen else {}
    except SecretUnreadable as exc:
        raise click.ClickException(str(exc)) from None
    for result in results.values():
        checks.record(result, "cli")
    ok = all(r.up for r in results.values())
    if as_json:
        click.echo(json.dumps({"ok": ok, "timeout": timeout,
                               "brokers": {p: r.as_dict() for p, r in results.items()}}, indent=2))
    elif not chosen:
        click.echo("No protocol is enabled: nothing to check (enable one, or name it).")
    else:
        for protocol, r in results.items():
            latency = f"{r.latency_ms:.1f} ms" if r.latency_ms is not None else "-"
            line = f"{PROTOCOL_LABELS[protocol]:<9} {r.status.upper():<5} {latency:>10}"
            if r.up:
                ident = ", ".join(checks.describe_identity(r.identity))    # as the page words it
                click.echo(f"{line}  {r.identity.get('target', '')}  {ident}")
            else:
                click.echo(f"{line}  {r.cause}: {r.message}")
            if len(r.nodes) > 1:
                up = [n for n in r.nodes if n["status"] == "up"]
                dead = ", ".join(f"{n['node']} ({n['cause']})" for n in r.nodes if n["status"] != "up")
                click.echo(f"{'':<9} {len(up)} of {len(r.nodes)} nodes up" + (f"; down: {dead}" if dead else ""))
    sys.exit(0 if ok else 1)


@brokers.command("diagnose")
@click.argument("protocol", type=click.Choice(PROTOCOLS))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the format of docs/interface.md).")
@click.option("--timeout", type=click.FloatRange(0.1, 300), default=None,
              help="Seconds for the whole diagnosis (default CONSOLE_CHECK_TIMEOUT).")
def brokers_diagnose(protocol: str, as_json: bool, timeout: float | None) -> None:
    """Step-wise diagnosis with the cause and the fix; exit 0 when healthy."""
    from flask import current_app

    from . import diagnostics

    try:
        row = diagnostics.run_and_store(protocol, timeout or current_app.config["CHECK_TIMEOUT"],
                                        actor="cli", origin="cli")
    except SecretUnreadable as exc:
        raise click.ClickException(str(exc)) from None
    d = row.result
    if as_json:
        click.echo(json.dumps({k: v for k, v in d.items()}, indent=2))
    else:
        click.echo(f"{PROTOCOL_LABELS[protocol]} at {d.get('target')}")
        for step in d["steps"]:
            ms = f"{step['ms']:>8.1f} ms" if step.get("ms") is not None else " " * 11
            click.echo(f"  {step['name']:<10} {step['status']:<15}{ms}  {step.get('detail', '')}")
        for warning in d.get("warnings") or ():
            click.echo(f"  warning  {warning['code']} {warning['node']}: {warning['detail']}")
        if d["ok"]:
            click.echo(f"Healthy. {d['summary']}")
        else:
            click.echo(f"Cause: {d['cause']} — {d['summary']}")
            click.echo(f"Fix:   {d['fix']}")
    sys.exit(0 if d["ok"] else 1)


@brokers.command("use-lab")
def brokers_use_lab() -> None:
    """Save the running broker lab's plain listeners as the settings (local demo; `make brokers`)."""
    from .lab import LabUnavailable, lab_settings

    try:
        changes = lab_settings()
    except LabUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    failed = False
    for protocol in PROTOCOLS:
        result = service.apply_changes(protocol, changes.get(protocol, {}), "make brokers",
                                       origin="cli")
        if result.ok:
            click.echo(f"{PROTOCOL_LABELS[protocol]:<9} {', '.join(result.changed) or 'unchanged'}")
        else:
            failed = True
            why = result.errors or "affects adapters; confirm the change on the page or the API"
            click.echo(f"{PROTOCOL_LABELS[protocol]:<9} not saved: {why}", err=True)
    if failed:
        sys.exit(1)


@config.command("export")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True),
              help="Write to FILE instead of standard output.")
def config_export(output: str | None) -> None:
    """Export settings and priorities as YAML (never secrets)."""
    from .settings import transfer

    text = transfer.export_yaml()
    if output:
        with open(output, "w", encoding="utf-8") as handle:
            handle.write(text)
        click.echo(f"Exported to {output}.", err=True)
    else:
        click.echo(text, nl=False)


def _print_outcome(outcome) -> None:
    for change in outcome.effective_changes:
        click.echo(f"  {change.label()}")
    if not outcome.effective_changes:
        click.echo("  (no effective value changes)")
    impact = outcome.impact
    for item in impact.services:
        click.echo(f"  new adapters of {item['service']} will use {item['to'] or 'no protocol'} "
                   f"instead of {item['from'] or 'none'}")
    for item in impact.adapters:
        click.echo(f"  adapter {item.adapter} ({item.service}, {item.protocol}): {item.kind} - "
                   f"{item.reason}")
    if outcome.rollout:
        started = outcome.rollout.get("id")
        click.echo(f"  roll-out in waves{f' {started}' if started else ''}: {outcome.rollout['text']}")


@config.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8"))
@click.option("--dry-run", is_flag=True, help="Validate and show the impact; change nothing.")
@click.option("--confirm", is_flag=True, help="Apply even when adapters are affected.")
@click.option("--replace", is_flag=True, help="Replace everything: what the file leaves out goes back "
              "to its default (without it, only what the file names changes).")
def config_import(file, dry_run: bool, confirm: bool, replace: bool) -> None:
    """Import a YAML export: validated first, applied all or nothing; it changes only what the file
    names unless --replace."""
    from .settings import transfer

    result = transfer.import_yaml(file.read(), actor="cli", origin="cli", dry_run=dry_run,
                                  confirm=confirm, replace=replace)
    if dry_run:
        click.echo(result.rule)
    if result.errors:
        click.echo("Nothing was imported:", err=True)
        for where, message in result.errors.items():
            click.echo(f"  {where}: {message}", err=True)
        sys.exit(1)
    outcome = result.outcome
    assert outcome is not None  # an import without errors has an outcome
    for where, message in result.warnings.items():
        click.echo(f"warning: {where}: {message}", err=True)
    if outcome.status == "unchanged":
        click.echo("The file matches the current configuration: nothing to do.")
        return
    title = {"preview": "Dry run — would change:", "confirm": "Not imported: this affects "
             "adapters (repeat with --confirm to apply):", "applied":
             f"Imported (version {outcome.version_id}):"}[outcome.status]
    click.echo(title)
    _print_outcome(outcome)
    if outcome.status == "confirm":
        sys.exit(1)


PG_DUMP = ('pg_dump --format=custom --file=FILE "$DATABASE_URL" (restore into an empty database '
           'with pg_restore --dbname="$DATABASE_URL" FILE)')


@click.command("backup")
@click.argument("target", type=click.Path(dir_okay=False, writable=True))
@with_appcontext
def backup(target: str) -> None:
    """A consistent copy of the console's SQLite database in TARGET, taken while the console serves
    (SQLite's online backup); for PostgreSQL it names pg_dump instead."""
    engine = db.engine
    if engine.dialect.name != "sqlite":
        raise click.ClickException(f"The console's database is {engine.dialect.name}: back it up "
                                   f"with its own tool, e.g. {PG_DUMP}.")
    source_path = engine.url.database
    if not source_path or source_path == ":memory:":
        raise click.ClickException("The console's SQLite database is in memory: nothing to back up.")
    if Path(target).exists():
        raise click.ClickException(f"{target} exists already: name a new file.")
    source = sqlite3.connect(f"file:{Path(source_path).resolve()}?mode=ro", uri=True)
    copy = sqlite3.connect(target)
    try:
        source.backup(copy)
    finally:
        copy.close()
        source.close()
    click.echo(f"Backed up {source_path} to {target}. To restore: stop the console, put {target} "
               f"in place of {source_path} (and remove any {Path(source_path).name}-wal and -shm "
               "next to it), start it again.")


def init_app(app: Flask) -> None:
    """Register the command groups; under `flask run`, start what a serving process runs beside its
    requests (console/background.py), as gunicorn.conf.py does in every worker."""
    for group in (users, tokens, brokers, config):
        app.cli.add_command(group)
    app.cli.add_command(backup)
    if background.serving_with_flask_run():
        background.start(app)
