"""Settings → Messaging: the page, its per-protocol fragments, uploads and the priority list."""
from __future__ import annotations

import base64
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user, login_required
from flask_wtf.csrf import CSRFError

from .. import checks, work
from ..auth import actor, admin_required
from ..brokers import PROTOCOLS
from ..delivery import plans
from ..delivery import status as rollout_status
from ..errors import CSRF_EXPIRED, csrf_answer, same_origin
from ..extensions import login_manager
from ..htmx import is_htmx
from ..messaging.identity import address_label, node_list_field, uses_tls
from ..messaging.schema import FIELDS, GROUP_LABELS, PRIORITY_ENV, PRIORITY_REASON, PROTOCOL_LABELS, SCHEMA
from ..messaging.values import Invalid, parse_value
from . import changes as change_log
from . import pending, rollout_pages, service, staging

bp = Blueprint("settings", __name__, url_prefix="/settings")


@bp.record_once
def _labels(state) -> None:
    state.app.jinja_env.globals.update(tab_states=tab_states,
                                       PROTOCOL_LABELS=PROTOCOL_LABELS, GROUP_LABELS=GROUP_LABELS, FIELDS=FIELDS,
                                       describe_identity=checks.describe_identity,
                                       wave_services=wave_services,
                                       DEFAULT_DEADLINE=plans.DEFAULT_DEADLINE)


def wave_services() -> list[str]:
    """The registered services a roll-out plan can name, by name."""
    return plans.service_names()


def section_context(protocol: str, *, errors: dict[str, str] | None = None,
                    submitted: dict[str, Any] | None = None, message: str | None = None,
                    settings: service.ProtocolSettings | None = None,
                    version: int | None = None) -> dict[str, Any]:
    """Everything the protocol section template needs; `version` is the configuration version
    its form was opened at (the current one unless given)."""
    current = settings or service.effective(protocol)
    _, warnings = service.findings(current)
    by_field: dict[str, list[str]] = {}
    general: list[str] = []
    for name, text in warnings:
        (by_field.setdefault(name, []) if name else general).append(text)
    return {
        "protocol": protocol,
        "overridden": overridden_fields(current),
        "unsaved": unsaved_fields(protocol, current, submitted or {}),
        "address": address_label(current),
        "tls": uses_tls(current),
        "status": status_context(protocol),
        "fields": SCHEMA[protocol],
        "settings": current,
        "errors": errors or {},
        "warnings": by_field,
        "general_warnings": general,
        "submitted": submitted or {},
        "message": message,
        "version": service.current_version() if version is None else version,
        "staged": staging.describe(protocol),
    }


def tab_states(sections: dict[str, Any] | None = None) -> list[tuple[str, bool]]:
    """Each protocol's tab and whether it is enabled (from the page's sections, or as saved)."""
    if sections is not None:
        return [(p, bool(s["settings"].enabled)) for p, s in sections.items()]
    return [(p, bool(service.effective(p).enabled)) for p in PROTOCOLS]


def overridden_fields(current: service.ProtocolSettings) -> dict[str, str]:
    """Fields another value makes unused, with the note shown beside them: host and port when a
    node list (or Pulsar's URL) is set."""
    name = node_list_field(current)
    if name is None:
        return {}
    label = current.fields[name].field.label
    note = f"Not used while {label} is set: it lists the nodes and wins over host and port."
    return {"host": note, "port": note}


def unsaved_fields(protocol: str, current: service.ProtocolSettings,
                   submitted: dict[str, Any]) -> set[str]:
    """Fields whose value shown back in the form differs from the one in effect (typed, not saved)."""
    out = set()
    for name, raw in submitted.items():
        try:
            value = parse_value(FIELDS[protocol][name], raw)
        except Invalid:
            out.add(name)
            continue
        if value != current.fields[name].value and not (value in ("", None)
                                                        and current.fields[name].value in ("", None)):
            out.add(name)
    return out


def priority_context(errors: dict[str, str] | None = None, message: str | None = None) -> dict[str, Any]:
    """Everything the priority list template needs."""
    order, info = service.priorities()
    return {"order": order, "info": info, "priority_errors": errors or {},
            "priority_message": message, "PRIORITY_REASON": PRIORITY_REASON,
            "PRIORITY_ENV": PRIORITY_ENV}


def page_context(active: str | None = None, **overrides: Any) -> dict[str, Any]:
    """The page: the overview of every protocol, the priority list, and one protocol's section
    (`active`; the first in priority order when none is asked for)."""
    version = service.current_version()
    sections = {p: section_context(p, version=version) for p in PROTOCOLS}
    sections.update(overrides.pop("sections", {}))
    count = service.adapter_count()
    priorities = priority_context()
    if active not in PROTOCOLS:   # the first enabled protocol in priority order, else the first
        enabled = [p for p in priorities["order"] if sections[p]["settings"].enabled]
        active = (enabled or priorities["order"])[0]
    return {"sections": sections, **priorities, "adapter_count": count, "active": active,
            "waves_banner": rollout_pages.banner(), **overrides}


def _rollout_arg() -> dict[str, Any] | None:
    version = request.args.get("rollout", type=int)
    return rollout_status.rollout(version) if version else None


def _moved_arg() -> tuple[str, str] | None:
    """The priority move a page without htmx was redirected after (its focus stays on the item)."""
    protocol, _, direction = request.args.get("moved", "").partition(":")
    return (protocol, direction) if protocol in PROTOCOLS and direction in ("up", "down") else None


@bp.get("/messaging")
@login_required
def messaging():
    return render_template("settings/messaging.html", **page_context(), rollout=_rollout_arg(),
                           moved=_moved_arg())


@bp.get("/messaging/overview")
@login_required
def overview():
    """The overview table alone (it polls itself and refreshes after every save)."""
    if not is_htmx():
        return redirect(url_for("settings.messaging"))
    active = request.args.get("active")
    return render_template("settings/_overview.html", active=active if active in PROTOCOLS else None,
                           sections={p: section_context(p) for p in PROTOCOLS})


@bp.get("/messaging/<protocol:protocol>")
@login_required
def section(protocol: str):
    """One protocol's own page (deep link), or its section alone for htmx."""
    if not is_htmx():
        return render_template("settings/messaging.html", **page_context(protocol),
                               rollout=_rollout_arg())
    return render_template("settings/_protocol.html", section=section_context(protocol))


def form_changes(protocol: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Changes submitted by the section form, and the raw values to show back."""
    changes: dict[str, Any] = {}
    for f in SCHEMA[protocol]:
        if f.is_file:
            continue
        if f.secret:
            if request.form.get(f"{f.name}__clear"):
                changes[f.name] = None
            elif request.form.get(f.name):
                changes[f.name] = request.form[f.name]
            continue
        values = request.form.getlist(f.name)
        if values:
            changes[f.name] = values[-1]
    submitted = {k: v for k, v in changes.items() if not FIELDS[protocol][k].secret}
    return changes, submitted


SAVED_EVENT = {"HX-Trigger": "settings-saved"}   # the overview refreshes itself on it


def _section_response(protocol: str, context: dict[str, Any], status: int,
                      headers: dict[str, str] | None = None):
    if is_htmx():
        html = render_template("settings/_protocol.html", section=context)
        if status == 200:   # the tabs follow the enabled switch ("(off)") without a reload
            html += render_template("settings/_tabs.html", tabs=tab_states(), active=protocol, oob=True)
        return html, status, {**SAVED_EVENT, **(headers or {})}
    if status == 200:
        flash(context.get("message") or "Saved.")
        rollout = context.get("rollout")
        if rollout:
            return redirect(url_for("settings.section", protocol=protocol, rollout=rollout["version"]))
        return redirect(url_for("settings.section", protocol=protocol))
    return render_template("settings/messaging.html",
                           **page_context(protocol, sections={protocol: context})), status, headers or {}


def prepared_form(protocol: str) -> tuple[dict[str, Any], dict[str, Any], service.Prepared]:
    """The section form's changes (with the secrets held for it, where none was typed again), the
    values to show back, and their validation (secrets revealed, for a connection test)."""
    changes, submitted = form_changes(protocol)
    for name, value in pending.held(_pending_scope(protocol), request.form.get("pending", "")).items():
        if name in FIELDS[protocol] and FIELDS[protocol][name].secret and name not in changes:
            changes[name] = value
    return changes, submitted, service.prepare_changes(protocol, changes, reveal=True)


def _pending_scope(protocol: str) -> str:
    return f"settings:{protocol}"


def _not_saved(protocol: str, changes: dict[str, Any], context: dict[str, Any], status: int,
               headers: dict[str, str] | None = None):
    """A save that asked first or was refused: the secrets of `changes` are held on the server
    for the next submit of this form (never shown back), the form says which; the roll-out plan
    typed stays in the form."""
    context.setdefault("plan", form_plan()[0])
    typed = {n: v for n, v in changes.items() if FIELDS[protocol][n].secret and v is not None}
    if typed:
        context["pending"] = {
            "token": pending.hold(_pending_scope(protocol), typed, request.form.get("pending", "")),
            "labels": [FIELDS[protocol][n].label for n in typed]}
    return _section_response(protocol, context, status, headers)


def form_version() -> int | None:
    """The configuration version the form was opened at (None: a form without one)."""
    raw = request.form.get("version", "").strip()
    if not raw:
        return None
    if not raw.isdigit() or len(raw) > 10:
        abort(400)
    return int(raw)


PLAN_FIELDS = ("rollout_wave", "rollout_share", "rollout_deadline", "rollout_auto_rollback")


def form_plan() -> tuple[dict[str, Any], plans.Plan | None, dict[str, str]]:
    """The roll-out plan of a section form: the values to show back, the plan (None: every service
    gets the change at once, as without a plan) and its errors by `rollout.<field>`. A plan is asked
    for by naming a service of the first wave, a share, automatic rollback or another deadline."""
    wave = [n for n in request.form.getlist("rollout_wave") if n.strip()]
    shown: dict[str, Any] = {"wave": wave,
             "share": request.form.get("rollout_share", "").strip(),
             "deadline": request.form.get("rollout_deadline", "").strip(),
             "auto_rollback": bool(request.form.get("rollout_auto_rollback"))}
    asked = (wave or shown["share"] or shown["auto_rollback"]
             or shown["deadline"] not in ("", str(plans.DEFAULT_DEADLINE)))
    if not asked:
        return shown, None, {}
    try:
        plan = plans.parse({"wave": shown["wave"], "share": shown["share"],
                            "deadline": shown["deadline"], "auto_rollback": shown["auto_rollback"]})
    except plans.PlanInvalid as exc:
        return shown, None, exc.errors
    return shown, plan, {}


@bp.post("/messaging/<protocol:protocol>")
@admin_required
def save(protocol: str):
    changes, submitted, prep = prepared_form(protocol)
    plan_shown, plan, plan_errors = form_plan()
    opened = form_version()
    if prep.errors or plan_errors:
        errors = {**prep.errors, **plan_errors}
        change_log.record_rejection("update", actor=actor(), origin="page", protocol=protocol,
                                    errors=errors)
        context = section_context(protocol, errors=errors, submitted=submitted,
                                  version=opened)
        context["plan"] = plan_shown
        return _not_saved(protocol, changes, context, 422)
    risky = prep.install_time_changes()
    if risky and prep.settings is not None and prep.settings.enabled and not request.form.get("save_anyway"):
        try:
            result = broker_check(prep.settings)
        except work.Busy as busy:
            context = section_context(protocol, submitted=submitted, version=opened)
            context["busy"] = busy
            return _not_saved(protocol, changes, context, 429, {"Retry-After": str(busy.retry_after)})
        checks.record(result, "guard")
        if not result.up:
            context = section_context(protocol, submitted=submitted, version=opened)
            context["guard"] = {"result": result, "fields": risky}
            return _not_saved(protocol, changes, context, 409)
    plans.propose(plan)
    result = service.apply_changes(protocol, changes, actor(), origin="page",
                                   confirm=bool(request.form.get("confirm")), prepared=prep,
                                   base=service.Base(version=opened) if opened is not None else None,
                                   ask=plan is not None)
    plans.propose(None)
    if result.conflict is not None:
        # their input stays in the form, over what is saved now: saving again replaces it
        context = section_context(protocol, submitted=result.conflict.typed)
        context["conflict"] = result.conflict
        return _not_saved(protocol, changes, context, 409)
    if result.errors:
        context = section_context(protocol, errors=result.errors, submitted=submitted,
                                  version=opened)
        return _not_saved(protocol, changes, context, 422)
    if result.needs_confirmation:
        context = section_context(protocol, submitted=submitted, version=opened)
        context["confirm"] = {"outcome": result.outcome,
                              "save_anyway": bool(request.form.get("save_anyway"))}
        return _not_saved(protocol, changes, context, 409)
    text = ("Saved: " + ", ".join(result.changed) + ".") if result.changed else "No changes."
    if result.merged:
        text += (" Kept what was changed by someone else since you opened it: "
                 + "; ".join(c.label() for c in result.merged) + ".")
    pending.drop(request.form.get("pending", ""))
    context = section_context(protocol, message=text)
    context["rollout"] = rollout_after(result.outcome)
    if result.outcome is not None and result.outcome.rollout and result.outcome.status == "applied":
        context["waves"] = result.outcome.rollout      # the roll-out in waves it started
        context["rollout"] = None
    return _section_response(protocol, context, 200)


def rollout_after(outcome: Any) -> dict[str, Any] | None:
    """The roll-out to follow after an applied change that told services of a new version."""
    if outcome is None or outcome.status != "applied" or not outcome.impact.notified:
        return None
    return rollout_status.rollout(outcome.version_id)


@bp.errorhandler(CSRFError)
def expired_form(_error: CSRFError):
    """A save whose form expired (its CSRF token too old): nothing saved, the form shown again with
    what was typed (secrets excepted: they are never shown back) and a fresh token, with and without
    JavaScript. Other forms of this page, and a form posted from another site, get the usual
    answer."""
    protocol = (request.view_args or {}).get("protocol")
    if request.endpoint != "settings.save" or protocol not in PROTOCOLS or not same_origin():
        return csrf_answer()
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    if not current_user.is_admin:
        abort(403)
    changes, submitted = form_changes(protocol)
    raw = request.form.get("version", "").strip()
    opened = int(raw) if raw.isdigit() and len(raw) <= 10 else None
    context = section_context(protocol, submitted=submitted, version=opened)
    context["expired"] = {"message": CSRF_EXPIRED,
                          "secrets": [FIELDS[protocol][n].label for n in changes
                                      if FIELDS[protocol][n].secret and changes[n] is not None]}
    return _section_response(protocol, context, 400, {"Console-Swap": "form"})


@bp.post("/messaging/<protocol:protocol>/test")
@admin_required
def test_connection(protocol: str):
    """Check the form's unsaved values against the real broker."""
    work.room()
    changes, submitted, prep = prepared_form(protocol)
    result = None
    if not prep.errors:
        result = broker_check(prep.settings)
    # "(Not saved yet.)" only when the tested values differ from the saved ones
    unsaved = bool(unsaved_fields(protocol, service.effective(protocol), submitted)) or any(
        FIELDS[protocol][n].secret for n in changes)
    if not is_htmx():   # without JavaScript: the page, the typed values and the result in place
        context = section_context(protocol, submitted=submitted)
        context["test"] = {"result": result, "errors": prep.errors, "unsaved": unsaved}
        return render_template("settings/messaging.html",
                               **page_context(protocol, sections={protocol: context})), 200
    return render_template("settings/_test_result.html", protocol=protocol, result=result,
                           errors=prep.errors, unsaved=unsaved), 200


def broker_check(settings: Any) -> Any:
    """A check of `settings` on the broker-work pool, this request waiting for it (work.Busy when
    every thread is taken)."""
    timeout = current_app.config["CHECK_TIMEOUT"]
    return work.call(checks.check_settings, settings, timeout, timeout=timeout)


def status_context(protocol: str) -> dict[str, Any]:
    """The status badge and recent history of one protocol."""
    settings = service.effective(protocol)
    digest = checks.current_digest(protocol)
    rows = checks.history(protocol, 30, digest)
    state = checks.status_of(protocol, settings, rows[-1] if rows else None,
                             current_app.config["CHECK_INTERVAL"], digest)
    if (not rows and settings.enabled and digest != checks.UNREADABLE
            and checks.history(protocol, 1)):
        state = {"status": "unknown", "rechecking": True}
    return {"protocol": protocol, "state": state, "history": rows,
            "last": rows[-1] if rows else None}


@bp.get("/messaging/<protocol:protocol>/status")
@login_required
def status(protocol: str):
    return render_template("settings/_status.html", status=status_context(protocol))


@bp.post("/messaging/<protocol:protocol>/check")
@admin_required
def check_now(protocol: str):
    """Check the saved settings now and record the result."""
    try:
        work.room()
        result = broker_check(service.effective(protocol, reveal=True))
    except work.Busy as busy:
        if not is_htmx():
            raise
        # the badge stays as it is; the message goes next to the button
        return render_template("_busy.html", busy=busy), 429, {
            "Retry-After": str(busy.retry_after), "HX-Retarget": f"#{protocol}-busy",
            "HX-Reswap": "innerHTML"}
    checks.record(result, "manual")
    if not is_htmx():
        flash(f"Checked {PROTOCOL_LABELS[protocol]}: "
              + ("up." if result.up else f"down — {result.cause}: {result.message}"))
        return redirect(url_for("settings.section", protocol=protocol))
    return render_template("settings/_status.html", status=status_context(protocol),
                           focus=True), SAVED_EVENT


UPLOAD_PARTS = ("file", "key_file")
UPLOAD_WORDS = ("password", "key_password", "add")


def _upload_scope(protocol: str, slot: str) -> str:
    return f"upload:{protocol}:{slot}"


def _upload_form(protocol: str, slot: str) -> dict[str, Any]:
    """The upload of this request — files, passwords, "add" — completed by what a confirmation
    step held on the server for it (`pending`) where this request gives nothing new."""
    held = pending.held(_upload_scope(protocol, slot), request.form.get("pending", ""))
    out: dict[str, Any] = {}
    for part in UPLOAD_PARTS:
        given = request.files.get(part)
        if given is not None and given.filename:
            out[part], out[f"{part}_name"] = given.read(), given.filename
        elif held.get(part):
            out[part], out[f"{part}_name"] = base64.b64decode(held[part]), held.get(f"{part}_name", "")
    for word in UPLOAD_WORDS:
        out[word] = request.form.get(word) or held.get(word) or None
    return out


def _hold_upload(protocol: str, slot: str, upload: dict[str, Any]) -> dict[str, Any]:
    """Keep an upload that asked for confirmation on the server (encrypted, for this user) so that
    Confirm applies it without choosing the file or typing the passwords again; what the page says."""
    values = {word: upload[word] for word in UPLOAD_WORDS if upload.get(word)}
    for part in UPLOAD_PARTS:
        if upload.get(part) is not None:
            values[part] = base64.b64encode(upload[part]).decode("ascii")
            values[f"{part}_name"] = upload[f"{part}_name"]
    token = pending.hold(_upload_scope(protocol, slot), values, request.form.get("pending", ""))
    names = [upload[f"{p}_name"] for p in UPLOAD_PARTS if upload.get(p) is not None]
    typed = [label for word, label in (("password", "the keystore password"),
                                       ("key_password", "the key password")) if upload.get(word)]
    return {"token": token, "slot": slot, "files": names, "typed": typed}


REFUSED_UPLOAD = (" Nothing of a refused upload is kept: choose the file again (and type its "
                  "passwords again).")


@bp.post("/messaging/<protocol:protocol>/files/<slot>")
@admin_required
def upload(protocol: str, slot: str):
    if slot not in ("tls_ca", "tls_cert"):
        abort(404)
    confirm = bool(request.form.get("confirm"))
    sent: dict[str, Any] = {}
    message: str | None
    if request.form.get("delete"):
        result = service.delete_file(protocol, slot, actor(), origin="page", confirm=confirm)
        message = "Removed." if result.changed else "Nothing to remove."
    else:
        sent = _upload_form(protocol, slot)
        if sent.get("file") is None:
            result = service.ChangeResult(errors={slot: "Choose a file to upload."})
        elif slot == "tls_ca" and sent["add"]:
            result = service.add_ca(protocol, sent["file"], filename=sent["file_name"], actor=actor(),
                                    origin="page", confirm=confirm)
        else:
            result = service.upload_file(
                protocol, slot, sent["file"], filename=sent["file_name"],
                password=sent["password"], key_data=sent.get("key_file"),
                key_password=sent["key_password"], actor=actor(), origin="page", confirm=confirm)
        message = f"Uploaded {sent['file_name']}." if result.ok and sent.get("file") is not None else None
    if result.errors:
        errors = dict(result.errors)
        if sent.get("file") is not None:
            errors = {k: v + REFUSED_UPLOAD for k, v in errors.items()}
        pending.drop(request.form.get("pending", ""))
        return _section_response(protocol, section_context(protocol, errors=errors), 422)
    if result.needs_confirmation:
        context = section_context(protocol)
        context["confirm"] = {"outcome": result.outcome, "file_action": True}
        if sent.get("file") is not None:
            context["confirm"]["upload"] = _hold_upload(protocol, slot, sent)
        return _section_response(protocol, context, 409)
    pending.drop(request.form.get("pending", ""))
    context = section_context(protocol, message=message)
    context["rollout"] = rollout_after(result.outcome)
    return _section_response(protocol, context, 200)


@bp.post("/messaging/<protocol:protocol>/truststore/remove")
@admin_required
def remove_ca(protocol: str):
    """Remove one CA from the truststore, keeping the others."""
    result = service.remove_ca(protocol, request.form.get("sha256", ""), actor=actor(),
                               origin="page", confirm=bool(request.form.get("confirm")))
    if result.errors:
        return _section_response(protocol, section_context(
            protocol, errors={"tls_ca": next(iter(result.errors.values()))}), 422)
    if result.needs_confirmation:
        context = section_context(protocol)
        context["confirm"] = {"outcome": result.outcome, "file_action": True}
        return _section_response(protocol, context, 409)
    context = section_context(protocol, message="Removed the CA from the truststore; the others "
                                                "stay trusted.")
    context["rollout"] = rollout_after(result.outcome)
    return _section_response(protocol, context, 200)


@bp.post("/messaging/<protocol:protocol>/staged-certificate")
@admin_required
def stage_certificate(protocol: str):
    """Stage a new client certificate and key next to the current one."""
    main = request.files.get("file")
    key = request.files.get("key_file")
    if main is None or not main.filename:
        result = service.ChangeResult(errors={"tls_cert": "Choose a certificate file to stage."})
    else:
        result = staging.stage(
            protocol, main.read(), filename=main.filename,
            password=request.form.get("password") or None,
            key_data=key.read() if key is not None and key.filename else None,
            key_password=request.form.get("key_password") or None, actor=actor(), origin="page")
    if result.errors:
        errors = {k: v + (REFUSED_UPLOAD if main is not None and main.filename else "")
                  for k, v in result.errors.items()}
        return _section_response(protocol, section_context(protocol, errors=errors), 422)
    return _section_response(protocol, section_context(
        protocol, message=f"Staged {main.filename if main else ''}: the current client certificate "
                          "stays in use until you promote it."), 200)


@bp.post("/messaging/<protocol:protocol>/staged-certificate/test")
@admin_required
def test_staged_certificate(protocol: str):
    """Test connection with the staged certificate (nothing recorded, nothing changed)."""
    settings = staging.settings(protocol)
    if settings is None:
        abort(404)
    work.room()
    result = broker_check(settings)
    label = staging.label(protocol)
    if not is_htmx():
        context = section_context(protocol)
        context["staged_test"] = {"result": result, "label": label}
        return render_template("settings/messaging.html",
                               **page_context(protocol, sections={protocol: context})), 200
    return render_template("settings/_staged_result.html", result=result, label=label), 200


@bp.post("/messaging/<protocol:protocol>/staged-certificate/promote")
@admin_required
def promote_certificate(protocol: str):
    """Make the staged certificate the one in use (an ordinary change), or discard it."""
    if request.form.get("discard"):
        done = staging.discard(protocol, actor=actor(), origin="page")
        return _section_response(protocol, section_context(
            protocol, message="Discarded the staged client certificate." if done
            else "Nothing was staged."), 200)
    result = staging.promote(protocol, actor=actor(), origin="page",
                             confirm=bool(request.form.get("confirm")))
    if result.errors:
        return _section_response(protocol, section_context(protocol, errors=result.errors), 422)
    if result.needs_confirmation:
        context = section_context(protocol)
        context["confirm"] = {"outcome": result.outcome, "file_action": True, "promote": True}
        return _section_response(protocol, context, 409)
    context = section_context(protocol, message="Promoted the staged client certificate: it is "
                                                "now the one in use.")
    context["rollout"] = rollout_after(result.outcome)
    return _section_response(protocol, context, 200)


@bp.post("/messaging/priorities")
@admin_required
def priorities():
    move = request.form.get("move", "")
    if move:
        protocol, _, direction = move.partition(":")
        if protocol not in PROTOCOLS or direction not in ("up", "down"):
            result = service.ChangeResult(errors={"priorities": "Unknown move."})
        else:
            result = service.move_priority(protocol, direction, actor(), origin="page",
                                           confirm=bool(request.form.get("confirm")))
    else:
        result = service.set_priorities(request.form.getlist("order"), actor(), origin="page",
                                        confirm=bool(request.form.get("confirm")))
    status = 422 if result.errors else (409 if result.needs_confirmation else 200)
    message = "Priority saved." if result.ok and result.changed else None
    context = priority_context(result.errors, message)
    if move and result.ok:
        context["moved"] = move.partition(":")[::2]   # keyboard focus stays on the moved item
    if result.needs_confirmation:
        context["priority_confirm"] = {"outcome": result.outcome, "move": move,
                                       "order": request.form.getlist("order")}
    rollout = rollout_after(result.outcome)
    if is_htmx():
        return render_template("settings/_priorities.html", **context,
                               priority_rollout=rollout), status
    if status == 200:
        flash(message or "No changes.")
        if "moved" in context:   # no anchor: a page with a target element skips autofocus
            return redirect(url_for("settings.messaging", moved=move,
                                    rollout=rollout["version"] if rollout else None))
        return redirect(url_for("settings.messaging", _anchor="priorities",
                                rollout=rollout["version"] if rollout else None))
    return render_template("settings/messaging.html", **page_context(**context)), status
