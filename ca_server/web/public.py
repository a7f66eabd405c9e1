"""Public endpoints, no sign-in: health, CA certificates, CRLs, OCSP."""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import unquote

from flask import Blueprint, Response, abort, current_app, jsonify, request

from .. import ocsp
from .common import now, services

bp = Blueprint("public", __name__)

PEM = "application/x-pem-file"
DER = "application/pkix-cert"


@bp.get("/healthz")
def healthz():
    svc = services()
    has_ca = svc.paths.root_cert.exists()
    store_ok = svc.store.ping()
    healthy = has_ca and store_ok
    body = {"status": "ok" if healthy else "unavailable", "ca": has_ca, "store": store_ok}
    return jsonify(body), 200 if healthy else 503


_CA_FILE = re.compile(r"^(root|chain|intermediate(?:-(\d{1,4}))?)\.(pem|der)$")


@bp.get("/ca/<name>")
def ca_file(name: str):
    """root, intermediate (the issuing one) and chain (issuing intermediate, root) as .pem or .der
    (chain: .pem only); intermediate-N for generation N (1 = the first, ...), issuing or not."""
    found = _CA_FILE.match(name)
    if found is None or name == "chain.der":
        abort(404)
    which, number, form = found.groups()
    authority = services().authority
    if which == "chain":
        body: str | bytes = authority.chain_pem
    elif which == "root":
        body = authority.root_pem if form == "pem" else authority.der("root")
    else:
        gen = authority.current if number is None else authority.by_number(int(number))
        if gen is None:
            abort(404)
        body = gen.pem if form == "pem" else gen.der
    response = Response(body, mimetype=PEM if form == "pem" else DER)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response


@bp.get("/crl/<name>")
def crl(name: str):
    """DER (RFC 5280), or PEM with ?format=pem. root.crl; intermediate.crl is the first
    intermediate's (its leaves name it), intermediate-N.crl generation N's. Cached by clients with
    ETag/Last-Modified; serving never rebuilds a CRL unless none exists or the newest has lapsed."""
    issuer = name.removesuffix(".crl")
    svc = services()
    if not name.endswith(".crl") or (issuer != "root" and svc.authority.by_slug(issuer) is None):
        abort(404)
    published = svc.crls.current(issuer, now())
    pem = request.args.get("format") == "pem"
    response = Response(published.pem if pem else published.der,
                        mimetype="application/x-pem-file" if pem else "application/pkix-crl")
    response.set_etag(published.etag + ("-pem" if pem else ""))
    response.last_modified = published.this_update
    response.headers["Cache-Control"] = "public, no-cache"
    response.headers["Content-Disposition"] = f'attachment; filename="{name}{".pem" if pem else ""}"'
    return response.make_conditional(request)


def _ocsp_response(key, data, *, get: bool) -> Response:
    """What hot_paths.py answers (it takes these requests first): the same function."""
    status, headers, body = current_app.extensions["ca_server_ocsp_http"].answer(
        key, data, now(), get=get, if_none_match=request.headers.get("If-None-Match", ""),
        if_modified_since=request.headers.get("If-Modified-Since", ""))
    return Response(body, status=int(status.split()[0]), headers=headers)


@bp.post("/ocsp")
def ocsp_post():
    body = request.get_data(cache=False)[: ocsp.MAX_REQUEST_BYTES + 1]
    return _ocsp_response(body, lambda: body, get=False)


@bp.get("/ocsp/<path:encoded>")
def ocsp_get(encoded: str):
    return _ocsp_response(encoded, lambda: ocsp_request_bytes(encoded), get=True)


def ocsp_request_bytes(encoded: str) -> bytes:
    """RFC 6960 A.1: GET {url}/{url-encoding of base-64 encoding of the DER OCSPRequest}. Garbage
    gives b"" (the responder answers malformedRequest)."""
    text = unquote(encoded).strip()
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_" if "-" in text or "_" in text else None,
                                validate=True)
    except (binascii.Error, ValueError):
        return b""
