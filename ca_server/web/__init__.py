"""The web layer: blueprints, templates, security headers. Domain errors are translated in
errors.py; nothing below web/ imports Flask."""

from __future__ import annotations

from flask import Flask, g, has_request_context, request
from flask.sessions import SecureCookieSessionInterface
from markupsafe import Markup

from ..clock import to_text
from ..display import algorithm_text, fingerprint_text, moment_text, requester_text
from ..pki.serials import serial_colon
from . import admin, api, auth, directory, est, expiry, inspect, oidc, pages, public, scep, transparency
from .common import now
from .errors import register_error_handlers
from .hot_paths import HotPaths
from .ocsp_http import OCSPHttp
from .ratelimit import init_rate_limits

HSTS = "max-age=31536000"  # a year; no includeSubDomains: other hosts of the domain may serve http
# CSP without inline scripts or styles; no third-party origins (the pages load nothing remote).
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


class _SessionOverTLS(SecureCookieSessionInterface):
    """The session cookie is `Secure` when the request came over https (`serve --tls`), not only
    when base_url says https: a cookie set over TLS must never travel over plain HTTP."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or (has_request_context() and request.is_secure)

    def open_session(self, app: Flask, request):
        """No cookie session for the doors that sign every request themselves (EST, SCEP; ACME
        does not reach Flask at all, hot_paths.py): Flask's null session reads as empty."""
        if request.path.startswith(SESSIONLESS):
            return None  # Flask then makes its null session
        return super().open_session(app, request)


SESSIONLESS = ("/scep", "/.well-known/est/")
SECURITY_ITEMS = tuple((name.lower(), name, value) for name, value in SECURITY_HEADERS.items())
HSTS_ITEM = (("strict-transport-security", "Strict-Transport-Security", HSTS),)
NO_STORE_ITEM = (("cache-control", "Cache-Control", "no-store"),)


def _moment_html(moment) -> Markup:
    """A moment as pages show it, kept on one line; the exact RFC 3339 value in the element."""
    text = moment_text(moment)
    if not text:
        return Markup("")
    iso = moment if isinstance(moment, str) else to_text(moment)
    return Markup('<time datetime="{}">{}</time>').format(iso, text)


def register(app: Flask) -> None:
    init_rate_limits(app)
    register_error_handlers(app)
    auth.register_auth(app)
    app.register_blueprint(public.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(inspect.bp)
    app.register_blueprint(est.bp)
    app.register_blueprint(scep.bp)
    app.register_blueprint(expiry.bp)
    app.register_blueprint(transparency.bp)
    app.register_blueprint(directory.bp)
    app.register_blueprint(oidc.bp)
    oidc.init_oidc(app)

    app.jinja_env.globals.update(
        days_left_words=pages.days_left_words,
        serial_colon=lambda s: serial_colon(int(s, 16)),
        to_text=to_text,
        now=now,
    )
    app.jinja_env.filters["utc"] = _moment_html
    app.jinja_env.filters["colon_hex"] = fingerprint_text
    app.jinja_env.filters["who"] = requester_text
    app.jinja_env.filters["algorithm"] = algorithm_text

    @app.context_processor
    def inject_requester():
        return {"requester": g.get("requester"), "config": app.extensions["ca_server"].config}

    app.session_interface = _SessionOverTLS()

    @app.after_request
    def security_headers(response):
        # Those the view did not set, added at once: setdefault scanned the header list once per
        # name (~16 us an answer against ~4, issue 29).
        headers = response.headers
        present = {name.lower() for name in headers.keys()}
        wanted = [*SECURITY_ITEMS, *(HSTS_ITEM if request.is_secure else ()),  # over https: never back to http (RFC 6797)
                  *(NO_STORE_ITEM if response.mimetype == "text/html" else ())]
        headers.extend([(name, value) for low, name, value in wanted if low not in present])
        return response

    # Token submissions of certificates and OCSP skip Flask's request machinery (see hot_paths.py).
    app.extensions["ca_server_ocsp_http"] = OCSPHttp(app.extensions["ca_server"])
    app.wsgi_app = HotPaths(app, SECURITY_HEADERS, HSTS)
