"""Small helpers every blueprint uses."""

from __future__ import annotations

import datetime as dt

from flask import current_app, g, request

from ..services import Services
from .ratelimit import limits


def services() -> Services:
    return current_app.extensions["ca_server"]


def now() -> dt.datetime:
    """The request's "now", read once per request from the services' clock."""
    if "now" not in g:
        g.now = services().clock()
    return g.now


def client_address() -> str | None:
    return request.remote_addr


def count_submission() -> None:
    """One more certificate submission by this requester; 429 past [server] submission_rate_limit."""
    requester = g.get("requester")
    key = requester.label if requester is not None else (request.remote_addr or "unknown")
    limits().hit(services().config.server.submission_rate_limit, "submit", key, what="submissions")
