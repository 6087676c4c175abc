"""Services and adapters: the registry page, protocol selection, and how far adapters have drifted
from the current settings."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import login_required

from ..auth import actor, admin_required
from ..brokers import PROTOCOLS
from ..delivery import diagnosis
from ..delivery import status as rollout_status
from ..extensions import db
from ..htmx import confirmation, confirmed, is_htmx, render_page_or_fragment
from ..messaging.identity import ADDRESS_FIELDS, identity
from ..models import Adapter, ExtensionService
from . import service as registry

bp = Blueprint("adapters", __name__)
PER_PAGE = 50


def env_drift(settings: dict[str, Any], rows: list[tuple[Adapter, str]]) -> list[dict[str, Any]]:
    """Adapters on this page whose snapshot differs from a value the environment sets now."""
    out = []
    for adapter, service_name in rows:
        s = settings[adapter.protocol]
        env_fields = {n for n, r in s.fields.items() if r.source == "env"}
        if set(ADDRESS_FIELDS) & env_fields:
            env_fields.add("address")
        current = identity(s)
        differing = [k for k in registry.snapshot_differences(adapter.snapshot, current)
                     if k in env_fields]
        if differing:
            variables = sorted({s.fields[n].env_var for n in s.fields
                                if s.fields[n].source == "env" and
                                (n in differing or (n in ADDRESS_FIELDS and "address" in differing))})
            out.append({"adapter": adapter.name, "service": service_name,
                        "protocol": adapter.protocol, "fields": differing, "variables": variables})
    return out


def page_context(page: int, errors: dict[str, str] | None = None,
                 message: str | None = None, connection: Any = None) -> dict[str, Any]:
    settings = registry.effective_all()
    current = {p: identity(s) for p, s in settings.items()}
    services = db.session.execute(db.select(ExtensionService)
                                  .order_by(ExtensionService.name)).scalars().all()
    total = db.session.execute(db.select(db.func.count(Adapter.id))).scalar_one()
    pages = max(1, -(-total // PER_PAGE))
    page = min(max(1, page), pages)
    names = {s.id: s.name for s in services}
    rows = [(a, names[a.service_id]) for a in db.session.execute(
        db.select(Adapter).order_by(Adapter.name).offset((page - 1) * PER_PAGE)
        .limit(PER_PAGE)).scalars()]
    adapters = [{"row": a, "service": name,
                 "differences": registry.snapshot_differences(a.snapshot, current[a.protocol])}
                for a, name in rows]
    deliveries = rollout_status.latest_deliveries()
    return {
        "services": [{"row": s, "selection": registry.current_selection([s], settings),
                      "state": rollout_status.service_state(s, deliveries.get(s.id))}
                     for s in services],
        "rollout": rollout_status.rollout() if services else None,
        "adapters": adapters, "total": total, "page": page, "pages": pages,
        "drift": registry.drift_summary(settings), "env_drift": env_drift(settings, rows),
        "errors": errors or {}, "message": message, "connection": connection,
        "PROTOCOLS": PROTOCOLS,
    }


@bp.get("/adapters/rollout")
@login_required
def rollout():
    """The roll-out fragment (polled by itself until every service settled)."""
    data = rollout_status.rollout(request.args.get("version", type=int))
    if is_htmx():
        return render_template("adapters/_rollout.html", rollout=data,
                               compact=bool(request.args.get("compact")))
    return render_template("adapters/rollout.html", rollout=data)


@bp.post("/adapters/<name>/migrate")
@admin_required
def migrate_adapter(name: str):
    try:
        adapter, selection = registry.migrate_adapter(name, actor(), "page")
    except registry.RegistryError as exc:
        return _respond(page_context(1, errors=exc.errors), 422)
    return _respond(page_context(1, message=f"Adapter {adapter.name} now uses {adapter.protocol} "
                                            f"at {adapter.snapshot.get('address')}."), 200)


@bp.post("/adapters/<name>/delete")
@admin_required
def delete_adapter(name: str):
    adapter = registry.find_adapter(name)
    if adapter is not None and not confirmed():
        return confirmation(f"Delete adapter {name}?",
                            f"The registry forgets adapter {name} ({adapter.protocol}) and the settings "
                            f"snapshot it was created with; the audit log keeps the deletion.",
                            f"Delete {name}", url_for("adapters.adapters_page"), "Adapters")
    try:
        registry.delete_adapter(name, actor(), "page")
    except registry.RegistryError as exc:
        return _respond(page_context(1, errors=exc.errors), 422)
    return _respond(page_context(1, message=f"Adapter {name} deleted."), 200)


@bp.get("/adapters")
@login_required
def adapters_page():
    return render_template("adapters/adapters.html",
                           **page_context(request.args.get("page", 1, type=int)))


def _respond(context: dict[str, Any], status: int):
    if is_htmx():
        return render_template("adapters/_registry.html", **context), status
    if status == 200 and context.get("message"):
        flash(context["message"])
        return redirect(url_for("adapters.adapters_page"))
    return render_template("adapters/adapters.html", **context), status


@bp.post("/adapters/services")
@admin_required
def register_service():
    try:
        done = registry.register_service(request.form.get("name"),
                                         request.form.getlist("protocols"), actor(), "page",
                                         callback_url=request.form.get("callback_url", ""))
    except registry.RegistryError as exc:
        return _respond(page_context(1, errors=exc.errors), 422)
    verb = "registered" if done.created else "updated"
    context = page_context(1, message=f"Service {done.service.name} {verb}.")
    if done.signing_secret:
        context["signing_secret"] = {"service": done.service.name, "secret": done.signing_secret}
        return render_page_or_fragment("adapters/adapters.html", "adapters/_registry.html", **context)
    return _respond(context, 200)


@bp.post("/adapters/new")
@admin_required
def create_adapter():
    try:
        row, selection = registry.create_adapter(request.form.get("name"),
                                                 request.form.get("service"), actor(), "page")
    except registry.RegistryError as exc:
        return _respond(page_context(1, errors=exc.errors), 422)
    return _respond(page_context(1, message=f"Adapter {row.name} created on {row.protocol}: "
                                            f"{selection.reason}"), 200)


@bp.post("/adapters/connect")
@login_required
def connect():
    names = request.form.getlist("services")
    rows = [r for r in (registry.find_service(n) for n in names) if r is not None]
    if len(rows) < 2:
        return _respond(page_context(1, errors={"connect": "Choose two or more services."}), 422)
    return _respond(page_context(1, connection=registry.current_selection(rows)), 200)


def _service_or_404(name: str) -> ExtensionService:
    row = db.session.execute(db.select(ExtensionService).filter_by(name=name)).scalar_one_or_none()
    if row is None:
        abort(404)
    return row


def service_context(row: ExtensionService, message: str | None = None) -> dict[str, Any]:
    """One service: what it supports and gets, where its configuration stands, and the network steps
    its agent ran from its own host (asked for, or with a failed acknowledgement) beside the console's
    newest check of that protocol."""
    requested = row.requested_diagnosis
    return {"service": row, "selection": registry.current_selection([row]),
            "state": rollout_status.service_state(row, rollout_status.latest_deliveries([row.id]).get(row.id)),
            "pending": diagnosis.pending(row), "requested": requested,
            "message": message, "PATIENCE": int(diagnosis.PATIENCE.total_seconds())}


@bp.get("/adapters/services/<name>")
@login_required
def service_page(name: str):
    row = _service_or_404(name)
    return render_page_or_fragment("adapters/service.html", "adapters/_service_diagnosis.html",
                                   **service_context(row))


@bp.post("/adapters/services/<name>/diagnose")
@admin_required
def diagnose_service(name: str):
    """Ask the service's agent to run the network steps from where it runs (answered at its watch)."""
    row = _service_or_404(name)
    diagnosis.request(row, actor(), "page")
    db.session.commit()
    message = f"Asked {row.name} to run the network steps from its own host."
    if is_htmx():
        return render_template("adapters/_service_diagnosis.html", **service_context(row, message))
    flash(message)
    return redirect(url_for("adapters.service_page", name=row.name))
