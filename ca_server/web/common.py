"""Small helpers every blueprint uses."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from flask import current_app, g, request, url_for

from ..services import Services
from .ratelimit import limits


def services() -> Services:
    return current_app.extensions["ca_server"]


def own_base_url() -> str:
    """Where this server is, for the URLs it hands out for itself (feed links, the sign-in
    callback, the ACME directory on the admin page)."""
    return base_url_for(services().config.server.base_url, request.scheme, lambda: request.host)


def base_url_for(configured: str, scheme: str, host: Callable[[], str]) -> str:
    """[server] base_url, except when a client reached this server over https and base_url is
    http (`serve --tls` on an instance made for http): then the https address the client used
    (`host`), so that a client that chose TLS is never sent to plain HTTP. URLs in certificates
    are another matter: [server] pki_base_url, http by default."""
    if scheme == "https" and not configured.startswith("https://"):
        return f"https://{host()}"
    return configured


def now() -> dt.datetime:
    """The request's "now", read once per request from the services' clock."""
    if "now" not in g:
        g.now = services().clock()
    return g.now


def json_body() -> object | None:
    """The request body as JSON, or None when it is not JSON (nor JSON nested deeper than the
    decoder's recursion limit, which is a RecursionError rather than a ValueError)."""
    try:
        return request.get_json(silent=True)
    except RecursionError:
        return None


def client_address() -> str | None:
    return request.remote_addr


def count_submission() -> None:
    """One more certificate submission by this requester; 429 past [server] submission_rate_limit."""
    requester = g.get("requester")
    key = requester.label if requester is not None else (request.remote_addr or "unknown")
    limits().submission(services().config.server.submission_rate_limit, key)


def certificate_page(flt, *, limit: int, before: int | None, endpoint: str, external: bool = False):
    """One page of a certificate list, newest first, and the URL of the next page (or None)."""
    records, next_rowid = services().store.list_certificates(flt, now(), limit=limit, before_rowid=before)
    next_url = None
    if next_rowid is not None:
        params = {k: v for k, v in request.args.items() if k != "cursor"}
        next_url = url_for(endpoint, _external=external, cursor=next_rowid, **params)
    return records, next_url
