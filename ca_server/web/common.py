"""Small helpers every blueprint uses."""

from __future__ import annotations

import datetime as dt

from flask import current_app, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from ..services import Services


def _app_scoped(key: str) -> str:
    # One Limiter serves every app in the process (tests build many); counters stay per app.
    return f"{id(current_app._get_current_object())}:{key}"


def client_key() -> str:
    return _app_scoped(get_remote_address() or "unknown")


# Per-process memory storage: limits are per worker, which is enough against guessing and floods.
limiter = Limiter(key_func=client_key, storage_uri="memory://", default_limits=[], headers_enabled=True)


def services() -> Services:
    return current_app.extensions["ca_server"]


def now() -> dt.datetime:
    """The request's "now", read once per request from the services' clock."""
    if "now" not in g:
        g.now = services().clock()
    return g.now


def client_address() -> str | None:
    return request.remote_addr


def requester_key() -> str:
    requester = g.get("requester")
    return _app_scoped(requester.label if requester is not None else (request.remote_addr or "unknown"))


def submission_limit() -> str:
    return services().config.server.submission_rate_limit
