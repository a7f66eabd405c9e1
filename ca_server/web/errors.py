"""The one place where domain errors become HTTP statuses and error bodies."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from ..errors import (
    SERVER_STATE_ERRORS,
    AuthError,
    BadRequestError,
    CAError,
    ConflictError,
    ForbiddenError,
    NotFoundError,
    PolicyViolationError,
    ScopeError,
    TooLargeError,
)
from .ratelimit import RateLimitedError

log = logging.getLogger("ca_server")

INTERNAL_ERROR = "The server failed to handle this request; the error was logged for the operator."

_STATUS: list[tuple[type[CAError] | tuple[type[CAError], ...], int]] = [
    (RateLimitedError, 429),
    (TooLargeError, 413),
    (PolicyViolationError, 422),
    (ScopeError, 403),
    (NotFoundError, 404),
    (ConflictError, 409),
    (AuthError, 401),
    (ForbiddenError, 403),
    (BadRequestError, 400),
    (SERVER_STATE_ERRORS, 503),  # the store, the log or the instance, not the request (ACME, SCEP: the same list)
]

_HTTP_WORDS = {
    400: ("bad_request", "The request could not be understood."),
    401: ("unauthorized", "Sign in, or send an API token as 'Authorization: Bearer TOKEN'."),
    403: ("forbidden", "You are signed in but not allowed to do this."),
    404: ("not_found", "There is nothing at this address."),
    405: ("method_not_allowed", "This address does not accept that method."),
    413: ("too_large", "The request is too large."),
    415: ("unsupported_media_type", "Send JSON (application/json) or a CSR (application/pkcs10)."),
    429: ("rate_limited", "Too many requests; wait a minute and try again."),
}


def status_for(exc: CAError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 400


def error_body(code: str, message: str, **extra) -> dict:
    return {"error": {"code": code, "message": message, **extra}}


def wants_json() -> bool:
    if request.path.startswith(("/api/", "/log/")) or request.path == "/metrics":
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json" and request.accept_mimetypes[best] > request.accept_mimetypes["text/html"]


def _error_headers(exc: CAError) -> dict[str, str]:
    retry_after = getattr(exc, "retry_after", None)
    return {"Retry-After": str(retry_after)} if retry_after is not None else {}


def api_error(exc: CAError) -> tuple[int, dict, dict[str, str]]:
    """A domain error as the API answers it: status, JSON body, extra headers (no Flask needed)."""
    violations = getattr(exc, "violations", None)
    extra = {"violations": [v.as_dict() for v in violations]} if violations else {}
    return status_for(exc), error_body(exc.code, exc.message, **extra), _error_headers(exc)


def ca_error_response(exc: CAError) -> tuple[Response | str, int, dict[str, str]] | Response:
    if wants_json():
        status, body, headers = api_error(exc)
        response = jsonify(body)
        response.status_code = status
        response.headers.update(headers)
        return response
    status = status_for(exc)
    violations = getattr(exc, "violations", None)
    return render_template("error.html", status=status, code=exc.code, message=exc.message,
                           violations=violations or []), status, _error_headers(exc)


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(CAError, ca_error_response)

    @app.errorhandler(CSRFError)
    def csrf_error(exc: CSRFError):
        message = ("The form was missing its security token or it expired: reload the page and "
                   "submit the form again.")
        if wants_json():
            return jsonify(error_body("csrf_failed", message)), 400
        return render_template("error.html", status=400, code="csrf_failed", message=message, violations=[]), 400

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        status = exc.code or 500
        code, words = _HTTP_WORDS.get(status, ("error", exc.description or "Error."))
        if status == 413:
            words = (f"The request is larger than the {app.config['MAX_CONTENT_LENGTH']} bytes this "
                     "server accepts; a CSR is normally 1-2 KB.")
        if wants_json():
            response = jsonify(error_body(code, words))
        else:
            response = Response(render_template("error.html", status=status, code=code, message=words,
                                                violations=[]), mimetype="text/html")
        response.status_code = status
        if status == 405 and hasattr(exc, "valid_methods") and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def unexpected(exc: Exception):
        # Logged with its traceback for the operator; the client sees no internals.
        log.exception("unexpected error on %s %s", request.method, request.path)
        if wants_json():
            return jsonify(error_body("internal_error", INTERNAL_ERROR)), 500
        return render_template("error.html", status=500, code="internal_error", message=INTERNAL_ERROR,
                               violations=[]), 500
