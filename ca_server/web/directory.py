"""Identities from outside (issue 28): POST /api/v1/token/exchange turns a CI job's OIDC token
into a short-lived API token (directory/ci_tokens.py). The JWT is the credential: no sign-in,
no cookie, so no CSRF; failed exchanges count against the sign-in rate limit."""

from __future__ import annotations

from flask import Blueprint, jsonify, request

from ..clock import to_text
from ..directory import ci_tokens
from ..errors import BadRequestError
from .auth import check_sign_in_limit, count_failed_sign_in
from .common import json_body, now, services

bp = Blueprint("directory", __name__, url_prefix="/api/v1")


@bp.post("/token/exchange")
def token_exchange():
    """{"token": JWT} -> 200 {"token": API_TOKEN, "expires_at": RFC 3339}; 401 with the reason."""
    check_sign_in_limit()
    body = json_body()
    if not isinstance(body, dict) or not isinstance(body.get("token"), str):
        raise BadRequestError('Send JSON {"token": "<the CI job\'s ID token>"}.', code="json_invalid")
    svc = services()
    try:
        token, expires = ci_tokens.exchange(svc.config, svc.store, body["token"].strip(), now(), request.remote_addr)
    except ci_tokens.ExchangeRefused:
        count_failed_sign_in()
        raise
    return jsonify({"token": token, "expires_at": to_text(expires), "token_type": "Bearer"})
