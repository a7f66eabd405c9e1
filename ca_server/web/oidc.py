"""OIDC sign-in for the web UI (issue 28): "Sign in with <name>" on the sign-in page, when
[auth.oidc] is set. Authlib does the protocol: discovery from the issuer's
/.well-known/openid-configuration, the Authorization Code flow with PKCE (S256), state and nonce
kept in the session for the round trip, and the ID token checked (signature from the provider's
JWKS, issuer, audience, expiry, nonce). The person's groups (the groups_claim) map to a role and
domains through [[auth.groups]] (directory/signin.py); the session is the server's own
(directory/sessions.py)."""

from __future__ import annotations

from authlib.common.errors import AuthlibBaseError
from authlib.integrations.flask_client import OAuth
from flask import Blueprint, Flask, current_app, redirect, render_template, request, session, url_for
from joserfc.errors import JoseError

from ..directory import sessions, signin
from ..errors import untrusted_certificate
from .auth import LoginForm, audit_failed_sign_in, count_failed_sign_in, safe_next
from .common import now, own_base_url, services

bp = Blueprint("oidc", __name__)
CLIENT = "directory"


def init_oidc(app: Flask) -> None:
    svc = app.extensions["ca_server"]
    oidc = svc.config.auth.oidc
    if oidc is None:
        return
    oauth = OAuth(app)
    client_kwargs = {"scope": " ".join(oidc.scopes), "code_challenge_method": "S256",
                     "default_timeout": oidc.timeout_seconds}  # requests waits forever without one
    if oidc.ca_file:
        client_kwargs["verify"] = oidc.ca_file  # requests' verify: the provider's CA, for every call to it
    oauth.register(CLIENT, client_id=oidc.client_id, client_secret=svc.secrets.oidc_client_secret,
                   server_metadata_url=oidc.issuer.rstrip("/") + "/.well-known/openid-configuration",
                   client_kwargs=client_kwargs)
    app.extensions["ca_server_oidc"] = oauth


def _token_words(exc: JoseError) -> str:
    said = f"{exc.error} {exc.description or ''}"
    for marker, words in (("signature", "its signature does not verify with the provider's keys"),
                          ("expired", "it has expired (check the clocks)"),
                          ("'iss'", "it is from another issuer than [auth.oidc] issuer"),
                          ("'aud'", "it was issued to another application (audience)"),
                          ("'azp'", "it was issued to another application (audience)"),
                          ("'nonce'", "it belongs to another sign-in (nonce)")):
        if marker in said:
            return words
    return f"{exc.error}: {exc.description or 'invalid'}"


def _refused(message: str, status: int = 401):
    audit_failed_sign_in("oidc")
    count_failed_sign_in()
    form = LoginForm()
    return render_template("login.html", form=form, oidc_error=message), status


@bp.get("/login/oidc")
def start():
    oauth = current_app.extensions.get("ca_server_oidc")
    if oauth is None:
        return redirect(url_for("auth.login"))
    session["oidc_next"] = safe_next(request.args.get("next"))
    try:
        return getattr(oauth, CLIENT).authorize_redirect(own_base_url() + url_for("oidc.callback"))
    except (AuthlibBaseError, OSError, ValueError) as exc:
        if untrusted_certificate(exc):
            return _refused("The sign-in provider's TLS certificate is not trusted here: an admin sets [auth.oidc] "
                            "ca_file to the CA certificate that signs it. Local accounts can still sign in.", 503)
        return _refused(f"The sign-in provider cannot be reached right now ({type(exc).__name__}); local accounts "
                        "can still sign in.", 503)


@bp.get("/login/oidc/callback")
def callback():
    oauth = current_app.extensions.get("ca_server_oidc")
    if oauth is None:
        return redirect(url_for("auth.login"))
    svc = services()
    oidc = svc.config.auth.oidc
    if request.args.get("error"):
        return _refused(f"The sign-in provider said no: {request.args.get('error_description') or request.args['error']}.")
    try:
        token = getattr(oauth, CLIENT).authorize_access_token()
    except AuthlibBaseError as exc:
        words = {"mismatching_state": "This sign-in link was used already or is not from this browser; start again."}
        return _refused(words.get(getattr(exc, "error", ""), f"The sign-in was refused: {exc.description or exc}."))
    except JoseError as exc:  # the ID token: signature, issuer, audience, expiry, nonce (joserfc checks them)
        return _refused(f"The provider's ID token was refused: {_token_words(exc)}. Start the sign-in again; if "
                        "it happens again, tell an admin.")
    except (OSError, ValueError) as exc:
        return _refused(f"The sign-in provider cannot be reached right now ({type(exc).__name__}).", 503)
    claims = token.get("userinfo") or {}
    username = str(claims.get(oidc.username_claim) or claims.get("email") or claims.get("sub") or "")[:64]
    groups = claims.get(oidc.groups_claim) or []
    groups = tuple(sorted({str(g) for g in ([groups] if isinstance(groups, str) else groups)}))
    if not username:
        return _refused("The provider's ID token names nobody (no user name, e-mail or subject).")
    outcome = signin.admit(svc.config, svc.store, username, claims.get("email"), groups, "oidc", now())
    if outcome.requester is None:
        return _refused(outcome.refusal or "Signing in was refused.")
    target = session.pop("oidc_next", None)
    session.clear()
    session["sid"] = sessions.begin(svc.config, svc.store, username, now(), client=request.remote_addr,
                                    method="oidc", groups=groups)
    return redirect(target or safe_next(None), code=303)  # made safe when the sign-in began
