"""Pages of the diagnostics: the Diagnose button's live steps, reports, certificate inventory."""
from __future__ import annotations

import datetime as dt
import json

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import login_required

from .. import diagnostics
from ..auth import actor, admin_required
from ..htmx import is_htmx, render_page_or_fragment
from ..settings import service as settings_service
from ..settings import staging
from .lint import lint

bp = Blueprint("diagnostics", __name__)


@bp.app_template_filter("when")
def when(value: dt.datetime | str | None) -> str:
    """A moment as an operator reads it: `2026-12-01 11:12:13 UTC` (from a datetime or ISO text)."""
    if not value:
        return "—"
    if isinstance(value, str):
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            return value
        value = when
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.post("/settings/messaging/<protocol:protocol>/diagnose")
@admin_required
def diagnose(protocol: str):
    run_id = diagnostics.start(protocol, current_app.config["CHECK_TIMEOUT"], actor=actor())
    if not is_htmx():
        return redirect(url_for("diagnostics.run_fragment", run_id=run_id), 303)
    return render_template("diagnostics/_run.html", run=diagnostics.get(run_id), focus=True), 202


@bp.post("/settings/messaging/<protocol:protocol>/staged-certificate/diagnose")
@admin_required
def diagnose_staged(protocol: str):
    """Diagnose with the staged client certificate (the diagnosis is labelled with it)."""
    settings = staging.settings(protocol)
    if settings is None:
        abort(404)
    run_id = diagnostics.start(protocol, current_app.config["CHECK_TIMEOUT"], actor=actor(),
                               settings=settings, staged=staging.label(protocol))
    if not is_htmx():
        return redirect(url_for("diagnostics.run_fragment", run_id=run_id), 303)
    return render_template("diagnostics/_run.html", run=diagnostics.get(run_id), focus=True), 202


@bp.get("/settings/messaging/diagnoses/<int:run_id>")
@login_required
def run_fragment(run_id: int):
    """The diagnosis as it runs: the fragment that polls itself to htmx, else a page that reloads
    itself until the diagnosis is done (no JavaScript needed)."""
    run = diagnostics.get(run_id)
    if run is None:
        abort(404)
    return render_page_or_fragment("diagnostics/run.html", "diagnostics/_run.html", run=run,
                                   heading_level=2 if request.args.get("h") == "2" else None)


def _report_or_404(run_id: int):
    run = diagnostics.get(run_id)
    if run is None or run.status == "running":
        abort(404)
    return run, diagnostics.report(run)


@bp.get("/settings/messaging/diagnoses/<int:run_id>/report.json")
@login_required
def report_json(run_id: int):
    run, body = _report_or_404(run_id)
    name = f"diagnosis-{run.protocol}-{run.id}.json"
    return Response(json.dumps(body, indent=2), mimetype="application/json",
                    headers={"Content-Disposition": f"attachment; filename={name}"})


@bp.get("/settings/messaging/diagnoses/<int:run_id>/report")
@login_required
def report_html(run_id: int):
    run, body = _report_or_404(run_id)
    return render_template("diagnostics/report.html", run=run, report=body,
                           choices=diagnostics.trust_choices(run))


@bp.post("/settings/messaging/diagnoses/<int:run_id>/trust")
@admin_required
def trust(run_id: int):
    """"Trust this CA": only with the admin's confirmation that the fingerprint was compared."""
    run = diagnostics.get(run_id)
    if run is None:
        abort(404)
    sha256 = request.form.get("sha256", "")
    if request.form.get("confirm") != "1":
        message = "Nothing was trusted: tick that you compared the fingerprint, then confirm."
        return render_template("diagnostics/report.html", run=run, report=diagnostics.report(run),
                               choices=diagnostics.trust_choices(run), trust_error=message), 422
    try:
        result = diagnostics.trust(run, sha256, leaf=request.form.get("leaf") == "1", actor=actor(),
                                   origin="console")
    except diagnostics.TrustRefused as exc:
        return render_template("diagnostics/report.html", run=run, report=diagnostics.report(run),
                               choices=diagnostics.trust_choices(run), trust_error=str(exc)), 422
    if result.errors:
        return render_template("diagnostics/report.html", run=run, report=diagnostics.report(run),
                               choices=diagnostics.trust_choices(run),
                               trust_error="; ".join(result.errors.values())), 422
    return redirect(url_for("settings.section", protocol=run.protocol), 303)


@bp.get("/certificates")
@login_required
def certificates():
    return render_template("diagnostics/certificates.html",
                           certificates=[diagnostics.refresh_status(c) for c in diagnostics.inventory()],
                           findings=lint(settings_service.effective_all()))
