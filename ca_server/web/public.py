"""Public endpoints, no sign-in: health, CA certificates, CRLs, OCSP."""

from __future__ import annotations

from flask import Blueprint, Response, abort, jsonify

from .common import services

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


_CA_FILES = {
    "root.pem": ("root", PEM),
    "root.der": ("root", DER),
    "intermediate.pem": ("intermediate", PEM),
    "intermediate.der": ("intermediate", DER),
    "chain.pem": ("chain", PEM),
}


@bp.get("/ca/<name>")
def ca_file(name: str):
    if name not in _CA_FILES:
        abort(404)
    which, mimetype = _CA_FILES[name]
    authority = services().authority
    if which == "chain":
        body: str | bytes = authority.chain_pem
    elif mimetype == PEM:
        body = authority.root_pem if which == "root" else authority.intermediate_pem
    else:
        body = authority.der(which)
    response = Response(body, mimetype=mimetype)
    response.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response
