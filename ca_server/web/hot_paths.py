"""The hot endpoints, answered without Flask's request machinery: certificate submissions by
API clients (POST /api/v1/certificates with a bearer token and a JSON body), OCSP (GET
/ocsp/<base64>, POST /ocsp), and ACME (everything under /acme/, acme.py).

An automation token may submit thousands of CSRs, and every TLS client of every server asks OCSP.
Flask's request context, session, hooks and response objects cost ~0.3-0.6 ms of CPU per request
here: as much as checking and signing a certificate, and several times an OCSP answer from the
responder's cache. This WSGI layer answers those requests itself, calling what the Flask views
call in the same order and answering with the same bodies, statuses and headers (tests compare
the two). Every other request goes to Flask untouched."""

from __future__ import annotations

import io
import json
import logging
from http import HTTPStatus

from flask import Flask, url_for

from .. import issuance, ocsp
from ..errors import CAError
from ..models import PendingRequest
from ..server.stalled_connections import read_at_most, sized_body
from .acme import PREFIX as ACME_PREFIX
from .acme import AcmeDoor
from .api import certificate_created, issue_request_from_json
from .auth import bearer_requester
from .errors import INTERNAL_ERROR, api_error, error_body
from .public import ocsp_request_bytes

log = logging.getLogger("ca_server")

ISSUE_PATH = "/api/v1/certificates"
OCSP_PATH = "/ocsp"


class HotPaths:
    def __init__(self, app: Flask, security_headers: dict[str, str], hsts: str) -> None:
        self.app = app
        self.flask = app.wsgi_app
        self.services = app.extensions["ca_server"]
        self.limits = app.extensions["ca_server_limits"]
        self.max_bytes = app.config["MAX_CONTENT_LENGTH"]
        self.headers = list(security_headers.items())
        self.headers_over_tls = [*self.headers, ("Strict-Transport-Security", hsts)]
        self.ocsp = app.extensions["ca_server_ocsp_http"]
        self.acme = AcmeDoor(self.services, secret=app.secret_key, max_bytes=self.max_bytes,
                             site_headers=self.site_headers)

    def site_headers(self, environ: dict) -> list[tuple[str, str]]:
        """What every answer of the site carries, as Flask's after_request adds it (web/__init__.py):
        the security headers, and HSTS over https (RFC 6797)."""
        return self.headers_over_tls if environ.get("wsgi.url_scheme") == "https" else self.headers

    def __call__(self, environ: dict, start_response):
        if not environ.get("CONTENT_LENGTH") and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            self._buffer_chunked(environ)
        path = environ.get("PATH_INFO", "")
        if path.startswith(ACME_PREFIX):
            return self.acme(environ, start_response)
        method = environ.get("REQUEST_METHOD")
        if path == ISSUE_PATH and method == "POST":
            return self._issue(environ, start_response)
        if method == "GET" and path.startswith(OCSP_PATH + "/") and len(path) > len(OCSP_PATH) + 1:
            encoded = path[len(OCSP_PATH) + 1:]
            return self._ocsp(encoded, lambda: ocsp_request_bytes(encoded), environ, start_response, get=True)
        if method == "POST" and path == OCSP_PATH:
            body = self._body(environ)
            if body is not None:
                body = body[: ocsp.MAX_REQUEST_BYTES + 1]
                return self._ocsp(body, lambda: body, environ, start_response, get=False)
        return self.flask(environ, start_response)

    def _buffer_chunked(self, environ: dict) -> None:
        """A chunked body (no Content-Length) becomes a body of known length. Werkzeug would cut a
        chunked body at MAX_CONTENT_LENGTH without a word (a JSON body then reads as invalid JSON,
        a CSR as a shorter one); reading one byte past the limit lets Flask answer 413 as it does
        for a declared length."""
        sized_body(environ, read_at_most(environ["wsgi.input"], self.max_bytes + 1))

    def _body(self, environ: dict) -> bytes | None:
        """The body when its length is declared and within bounds, else None (Flask decides)."""
        length = environ.get("CONTENT_LENGTH", "")
        if not length.isdigit() or int(length) > self.max_bytes:
            return None
        body = environ["wsgi.input"].read(int(length))
        if len(body) != int(length):  # the client went away mid-body: let Flask say what it says
            environ["wsgi.input"] = io.BytesIO(body)
            return None
        return body

    def _ocsp(self, key, data, environ: dict, start_response, *, get: bool):
        status, headers, body = self.ocsp.answer(key, data, self.services.clock(), get=get,
                                                 if_none_match=environ.get("HTTP_IF_NONE_MATCH", ""),
                                                 if_modified_since=environ.get("HTTP_IF_MODIFIED_SINCE", ""))
        start_response(status, [*headers, *self.site_headers(environ)])  # Content-Length included
        return [body]

    def _issue(self, environ: dict, start_response):
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if (auth[:7].lower() != "bearer "
                or environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower() != "application/json"):
            return self.flask(environ, start_response)
        body = self._body(environ)
        if body is None:
            return self.flask(environ, start_response)
        try:
            status, payload, extra = self._submit(environ, auth, body)
        except CAError as exc:
            status, payload, extra = api_error(exc)
        except Exception:
            log.exception("unexpected error on POST %s", ISSUE_PATH)
            status, payload, extra = 500, error_body("internal_error", INTERNAL_ERROR), {}
        data = (json.dumps(payload, separators=(",", ":"), sort_keys=self.app.json.sort_keys) + "\n").encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                   *extra.items(), *self.site_headers(environ)]
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [data]

    def _submit(self, environ: dict, authorization: str, body: bytes) -> tuple[int, dict, dict[str, str]]:
        svc = self.services
        now = svc.clock()
        requester = bearer_requester(svc.store, authorization, now)
        self.limits.submission(svc.config.server.submission_rate_limit, requester.label)
        try:
            decoded = json.loads(body)
        except (ValueError, RecursionError):
            decoded = None
        request = issue_request_from_json(decoded, requester, environ.get("REMOTE_ADDR"))
        record = issuance.issue(svc.config, svc.store, svc.authority, request, now)
        script = environ.get("SCRIPT_NAME", "")
        if isinstance(record, PendingRequest):
            with self.app.request_context(environ):  # rare: the external URL needs the request's host
                url = url_for("pages.request_page", request_id=record.id, _external=True)
            return 202, {**record.as_json(), "url": url}, {"Location": f"{script}/api/v1/requests/{record.id}"}
        created = certificate_created(record, now, svc.authority.chain_for(record.issuer))
        return 201, created, {"Location": f"{script}{ISSUE_PATH}/{record.serial}"}

