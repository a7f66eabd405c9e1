"""POST /api/v1/certificates from API clients, answered without Flask's request machinery.

Issuance is the one hot endpoint: an automation token may submit thousands of CSRs. Flask's
request context, session, hooks and response objects cost ~0.6 ms of CPU per request here, as
much as parsing, checking and signing the certificate. This WSGI layer answers the common case
(a bearer token and a JSON body of known length) itself, calling what the Flask view calls in the
same order (token, rate limit, body, submit) and answering with the same JSON, statuses and
headers. Every other request goes to Flask untouched."""

from __future__ import annotations

import io
import json
import logging

from flask import Flask, url_for

from .. import accounts, approvals
from ..errors import AuthError, CAError
from .api import certificate_created, issue_request_from_json
from .errors import api_error, error_body

log = logging.getLogger("ca_server")

PATH = "/api/v1/certificates"
INTERNAL_ERROR = "The server failed to handle this request; the error was logged for the operator."


class IssuePath:
    def __init__(self, app: Flask, security_headers: dict[str, str]) -> None:
        self.app = app
        self.flask = app.wsgi_app
        self.services = app.extensions["ca_server"]
        self.limits = app.extensions["ca_server_limits"]
        self.max_bytes = app.config["MAX_CONTENT_LENGTH"]
        self.headers = list(security_headers.items())

    def __call__(self, environ: dict, start_response):
        length = environ.get("CONTENT_LENGTH", "")
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if (environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST"
                or auth[:7].lower() != "bearer " or not length.isdigit() or int(length) > self.max_bytes
                or environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower() != "application/json"):
            return self.flask(environ, start_response)
        body = environ["wsgi.input"].read(int(length))
        if len(body) != int(length):  # the client went away mid-body: let Flask say what it says
            environ["wsgi.input"] = io.BytesIO(body)
            return self.flask(environ, start_response)
        try:
            status, payload, extra = self._issue(environ, auth[7:].strip(), body)
        except CAError as exc:
            status, payload, extra = api_error(exc)
        except Exception:
            log.exception("unexpected error on POST %s", PATH)
            status, payload, extra = 500, error_body("internal_error", INTERNAL_ERROR), {}
        data = (json.dumps(payload, separators=(",", ":"), sort_keys=self.app.json.sort_keys) + "\n").encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                   *extra.items(), *self.headers]
        start_response(f"{status} {_REASONS.get(status, 'Error')}", headers)
        return [data]

    def _issue(self, environ: dict, token: str, body: bytes) -> tuple[int, dict, dict[str, str]]:
        svc = self.services
        now = svc.clock()
        requester = accounts.token_requester(svc.store, token, now) if token else None
        if requester is None:
            raise AuthError("This API token is unknown or was revoked." if token else
                            "The Authorization header must be 'Bearer TOKEN'.")
        self.limits.hit(svc.config.server.submission_rate_limit, "submit", requester.label, what="submissions")
        try:
            decoded = json.loads(body)
        except (ValueError, RecursionError):
            decoded = None
        request = issue_request_from_json(decoded, requester, environ.get("REMOTE_ADDR"))
        record = approvals.submit(svc.config, svc.store, svc.authority, request, now)
        script = environ.get("SCRIPT_NAME", "")
        if isinstance(record, approvals.PendingRequest):
            with self.app.request_context(environ):  # rare: the external URL needs the request's host
                url = url_for("pages.request_page", request_id=record.id, _external=True)
            return 202, {**record.as_json(), "url": url}, {"Location": f"{script}/api/v1/requests/{record.id}"}
        created = certificate_created(record, now, svc.authority.intermediate_pem)
        return 201, created, {"Location": f"{script}{PATH}/{record.serial}"}


_REASONS = {201: "CREATED", 202: "ACCEPTED", 400: "BAD REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN",
            404: "NOT FOUND", 409: "CONFLICT", 413: "REQUEST ENTITY TOO LARGE", 422: "UNPROCESSABLE ENTITY",
            429: "TOO MANY REQUESTS", 500: "INTERNAL SERVER ERROR", 503: "SERVICE UNAVAILABLE"}
