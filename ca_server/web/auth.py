"""Who is asking: API tokens (Authorization: Bearer) and signed-in users (session cookie).

Public, no sign-in: CA certificates, CRLs, OCSP, /healthz and the sign-in page itself.
Cookie-authenticated POSTs must carry the CSRF token; token-authenticated ones need none
(a browser never attaches a bearer token on its own)."""

from __future__ import annotations

import datetime as dt
from functools import wraps
from urllib.parse import urlsplit

from flask import Blueprint, Flask, flash, g, redirect, render_template, request, session, url_for
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFProtect
from wtforms import PasswordField, StringField, SubmitField
from wtforms.validators import DataRequired, Length

from .. import accounts
from ..directory import sessions, signin
from ..directory.ldap import DirectoryUnavailable
from ..errors import AuthError, ForbiddenError
from ..issuance import Requester
from .common import now, services
from .ratelimit import limits

bp = Blueprint("auth", __name__)
csrf = CSRFProtect()

PUBLIC_ENDPOINTS = {
    "public.healthz",
    "public.ca_file",
    "public.crl",
    "public.ocsp_post",
    "public.ocsp_get",
    "auth.login",
    "oidc.start",
    "oidc.callback",
    "directory.token_exchange",  # the JWT in the body is the credential
    "inspect.trust",
    "static",
}


class LoginForm(FlaskForm):
    username = StringField("Username", validators=[DataRequired(), Length(max=64)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])
    submit = SubmitField("Sign in")


def bearer_requester(store, header: str, now: dt.datetime) -> Requester:
    """The token an 'Authorization: Bearer TOKEN' header carries, as a requester; AuthError when
    the header is malformed or the token unknown or revoked. (Also used by hot_paths.py.)"""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("The Authorization header must be 'Bearer TOKEN'.")
    requester = accounts.token_requester(store, token.strip(), now)
    if requester is None:
        raise AuthError("This API token is unknown or was revoked.")
    return requester


def load_requester() -> None:
    g.requester = None
    header = request.headers.get("Authorization", "")
    if header:
        g.requester = bearer_requester(services().store, header, now())
        g.via_token = True
        return
    g.via_token = False
    session_id = session.get("sid")
    if session_id:
        svc = services()
        name = sessions.current_user(svc.config, svc.store, session_id, now())
        row = svc.store.get_user(name) if name else None
        if row is None:  # ended, idle, past its end, or the user is gone: signed out
            session.clear()
        else:
            g.requester = accounts.user_requester(row)


def enforce_access() -> object | None:
    """before_request: identify the requester, require one outside the public endpoints,
    and check CSRF on cookie-authenticated writes (and on the sign-in form itself)."""
    if request.endpoint in ("static", "public.healthz") or request.blueprint in ("est", "scep", "transparency"):
        return None  # EST requests carry their Basic, SCEP its CMS (ACME never reaches Flask: hot_paths.py)
    if request.endpoint in ("expiry.prometheus_metrics", "expiry.calendar_feed"):
        return None  # public, or checked in the view ([metrics] public; the calendar URL's secret)
    writes = request.method in ("POST", "PUT", "PATCH", "DELETE")
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
        try:
            load_requester()  # only for the page header; a stale token must not close a public page
        except AuthError:
            g.requester = None
        if writes and request.endpoint == "auth.login":
            csrf.protect()
        return None
    load_requester()
    if g.requester is None:
        if request.path.startswith("/api/"):
            raise AuthError("Sign in, or send an API token as 'Authorization: Bearer TOKEN'.")
        return redirect(url_for("auth.login", next=request.full_path if request.query_string else request.path))
    if writes and not g.via_token:
        csrf.protect()
    return None


# Only failed sign-ins count, per client address, wherever a password is tried (the sign-in form,
# EST's HTTP Basic): guessing is slowed, people are not.
def check_sign_in_limit() -> None:
    limits().check(services().config.server.sign_in_rate_limit, "sign-in", request.remote_addr or "unknown",
                   what="failed sign-ins")


def count_failed_sign_in() -> None:
    limits().hit(services().config.server.sign_in_rate_limit, "sign-in", request.remote_addr or "unknown",
                 what="failed sign-ins")


def audit_failed_sign_in(actor: str) -> None:
    services().store.append_audit(at=now(), action="sign_in_failed", actor=actor, client=request.remote_addr)


def _requires(allowed, message: str):
    """A view decorator: the requester must pass `allowed`, else 403 with `message`."""
    def decorator(view):
        @wraps(view)
        def wrapper(*args, **kwargs):
            if g.requester is None or not allowed(g.requester):
                raise ForbiddenError(message)
            return view(*args, **kwargs)
        return wrapper
    return decorator


admin_required = _requires(lambda r: r.is_admin, "Only an admin may do this.")
approver_required = _requires(lambda r: r.approves, "Only an admin or an approver may do this.")


def safe_next(target: str | None) -> str:
    if not target:
        return url_for("pages.dashboard")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return url_for("pages.dashboard")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():
    """Local accounts and, with [auth.ldap], directory users, on the same form. Its fields come
    from the form's encoding only: Flask-WTF otherwise reads a JSON body as the fields, and a JSON
    list, number or non-text value raised TypeError inside WTForms (a 500)."""
    form = LoginForm(formdata=request.form) if request.method == "POST" else LoginForm()
    status = 200
    if request.method == "POST":
        check_sign_in_limit()
        message = "Wrong username or password."
        if form.validate():
            svc = services()
            name, password = form.username.data, form.password.data
            requester, method, groups = accounts.authenticate_user(svc.store, name, password), "password", ()
            if requester is None and svc.config.auth.ldap is not None:
                try:
                    outcome = signin.sign_in(svc.config, svc.secrets, svc.store, name, password, now())
                    requester, method, groups = outcome.requester, "ldap", outcome.groups
                    message = outcome.refusal or message
                except DirectoryUnavailable as exc:
                    message, status = exc.message, 503
            if requester is not None:
                session.clear()
                session["sid"] = sessions.begin(svc.config, svc.store, requester.name, now(),
                                                client=request.remote_addr, method=method, groups=groups)
                return redirect(safe_next(request.args.get("next")), code=303)
            audit_failed_sign_in(f"user:{name[:64]}")
        count_failed_sign_in()
        form.password.errors = list(form.password.errors) + [message]
        status = status if status == 503 else 401
    return render_template("login.html", form=form), status


@bp.route("/logout", methods=["GET", "POST"])
def logout():
    """POST ends this session on the server: the cookie, sent again, is signed out."""
    if request.method == "POST":
        session_id = session.get("sid")
        if session_id:
            actor = g.requester.label if g.requester is not None else "user:unknown"
            sessions.end(services().store, session_id, now(), actor=actor, client=request.remote_addr)
        session.clear()
        flash("You are signed out.")
        return redirect(url_for("auth.login"), code=303)
    mine = g.requester is not None and g.requester.kind == "user"
    return render_template("logout.html", open_sessions=sessions.open_sessions(
        services().store, now(), g.requester.name) if mine else [],
        this_session=sessions.key_of(session["sid"]) if session.get("sid") else None)


@bp.post("/logout/everywhere")
def logout_everywhere():
    """Ends every session of the signed-in user, in every browser and on every node."""
    if g.requester is None or g.requester.kind != "user":
        raise AuthError("Sign in to sign out everywhere.")
    ended = sessions.end_all(services().store, g.requester.name, now(), actor=g.requester.label,
                             client=request.remote_addr)
    session.clear()
    flash(f"You are signed out everywhere ({ended} session{'s' if ended != 1 else ''} ended).")
    return redirect(url_for("auth.login"), code=303)


def register_auth(app: Flask) -> None:
    csrf.init_app(app)
    app.before_request(enforce_access)
    app.register_blueprint(bp)
