"""Admin pages: the approval queue, tokens, users, ACME accounts and EAB keys, the audit log."""

from __future__ import annotations

import dataclasses

from flask import Blueprint, flash, g, redirect, render_template, request, url_for

from .. import accounts, approvals
from ..acme import state as acme_state
from ..directory import sessions
from ..errors import ForbiddenError
from ..models import PendingRequest
from ..scep import enroll
from .common import client_address, now, own_base_url, services

bp = Blueprint("admin", __name__, url_prefix="/admin")
AUDIT_PAGE = 100


APPROVER_PAGES = {"admin.queue", "admin.approve", "admin.reject"}


@bp.before_request
def admins_only():
    """Admin pages are for admins; the approval queue for approvers too."""
    requester = g.get("requester")
    if requester is not None and (requester.is_admin or (requester.approves and request.endpoint in APPROVER_PAGES)):
        return
    raise ForbiddenError("Only an admin may open the admin pages.")


@bp.get("/requests")
def queue():
    rows = services().store.list_requests(status=request.args.get("status", "pending") or None)
    return render_template("admin_requests.html", requests=[PendingRequest.from_row(r) for r in rows],
                           status=request.args.get("status", "pending"))


@bp.post("/requests/<request_id>/approve")
def approve(request_id: str):
    svc = services()
    decided = approvals.approve(svc.config, svc.secrets, svc.store, svc.authority, request_id, g.requester, now(),
                                client_address())
    flash(f"Request {request_id} approved; certificate {decided.serial} issued.")
    return redirect(url_for("pages.certificate", serial=decided.serial), code=303)


@bp.post("/requests/<request_id>/reject")
def reject(request_id: str):
    svc = services()
    approvals.reject(svc.config, svc.secrets, svc.store, request_id, g.requester, request.form.get("reason", ""),
                     now(), client_address())
    flash(f"Request {request_id} rejected.")
    return redirect(url_for("admin.queue"), code=303)


@bp.get("/tokens")
def tokens():
    store = services().store
    open_count: dict[str, int] = {}
    for row in sessions.open_sessions(store, now()):
        open_count[row["user_name"]] = open_count.get(row["user_name"], 0) + 1
    return render_template("admin_tokens.html", tokens=store.list_tokens(), users=store.list_users(),
                           open_sessions=open_count)


@bp.post("/users/<name>/sessions/end")
def end_user_sessions(name: str):
    ended = sessions.end_all(services().store, name, now(), actor=g.requester.label, client=client_address())
    flash(f"{ended} session{'s' if ended != 1 else ''} of {name} ended: signed out everywhere.")
    return redirect(url_for("admin.tokens"), code=303)


@bp.get("/sessions")
def open_sessions():
    """Every open sign-in session (or one user's: ?user=NAME), each with its own end button."""
    user = request.args.get("user") or None
    return render_template("admin_sessions.html", user=user,
                           sessions=sessions.open_sessions(services().store, now(), user))


@bp.post("/sessions/<key>/end")
def end_session(key: str):
    ended = sessions.end_one(services().store, key, now(), actor=g.requester.label, client=client_address())
    flash("Session ended: that browser is signed out." if ended else "That session had already ended.")
    return redirect(url_for("admin.open_sessions", user=request.form.get("user") or None), code=303)


@bp.post("/users/<name>/disable")
def disable_user(name: str):
    if name == g.requester.name and g.requester.kind == "user":
        raise ForbiddenError("You cannot disable your own account: ask another admin (or use ca-server user disable).")
    ended = sessions.disable_user(services().store, name, now(), actor=g.requester.label, client=client_address())
    flash(f"{name} disabled: no more sign-ins; {ended} session{'s' if ended != 1 else ''} ended.")
    return redirect(url_for("admin.tokens"), code=303)


@bp.post("/users/<name>/enable")
def enable_user(name: str):
    accounts.enable_user(services().store, name, now(), actor=g.requester.label)
    flash(f"{name} enabled: they can sign in again.")
    return redirect(url_for("admin.tokens"), code=303)


@bp.post("/tokens/<name>/revoke")
def revoke_token(name: str):
    accounts.revoke_token(services().store, name, now(), actor=g.requester.label)
    flash(f"Token {name} revoked.")
    return redirect(url_for("admin.tokens"), code=303)


@bp.post("/users/<name>/email")
def set_user_email(name: str):
    accounts.set_user_email(services().store, name, request.form.get("email", ""), now(), actor=g.requester.label)
    flash(f"E-mail of {name} saved: the form's reminders default to it.")
    return redirect(url_for("admin.tokens"), code=303)


@bp.get("/acme")
def acme_accounts():
    store = services().store
    rows = [{**dataclasses.asdict(account), "orders": len(orders),
             "certificates": [o.certificate for o in orders if o.certificate]}
            for account, orders in acme_state.all_accounts(store)]
    directory = own_base_url() + "/acme/directory"
    return render_template("admin_acme.html", accounts=rows, eab_keys=store.list_eab_keys(), directory=directory)


@bp.post("/acme/<account_id>/deactivate")
def deactivate_acme_account(account_id: str):
    store = services().store
    if store.update_acme_account(account_id, status="deactivated", audit={
            "at": now(), "action": "acme_account_deactivate", "actor": g.requester.label, "client": client_address(),
            "detail": {"account": account_id}}):
        flash(f"ACME account {account_id} deactivated: it can no longer order or revoke.")
    else:
        flash(f"ACME account {account_id} was not active.")
    return redirect(url_for("admin.acme_accounts"), code=303)


@bp.get("/devices")
def devices():
    """The device doors: endpoints and labels, one-time challenges, recent enrollments and refusals
    with the reason, DES and SHA-1 clients flagged so they can be upgraded."""
    svc = services()
    current = now()
    challenges = [{**row, "state": enroll.challenge_state(row, current)} for row in svc.store.scep_challenges(limit=100)]
    events = svc.store.device_audit()
    weak = sorted({(e["client"] or "?", _weak(e["detail"])) for e in events if _weak(e["detail"])})
    return render_template("admin_devices.html", scep=svc.config.scep, est=svc.config.est,
                           static=dict(svc.secrets.scep_challenges), challenges=challenges, events=events, weak=weak,
                           base=own_base_url())


def _weak(detail: dict) -> str:
    """"DES", "SHA-1" or both: what a device should be upgraded from ("" when neither)."""
    return ", ".join(word for word, used in (("DES", detail.get("cipher") == "des"),
                                             ("SHA-1", detail.get("digest") == "sha1")) if used)


@bp.get("/audit")
def audit():
    args = request.args
    before = args.get("before", "")
    entries = services().store.audit_entries(
        action=args.get("action") or None, actor=args.get("actor") or None, serial=args.get("serial") or None,
        limit=AUDIT_PAGE, before_id=int(before) if before.isdigit() and len(before) < 19 else None)
    next_url = None
    if len(entries) == AUDIT_PAGE:
        params = {k: v for k, v in args.items() if k != "before"}
        next_url = url_for("admin.audit", before=entries[-1]["id"], **params)
    return render_template("admin_audit.html", entries=entries, args=args, next_url=next_url)
