"""The inspect page and API: decode a certificate or CSR, give a verdict, convert PEM <-> DER."""

from __future__ import annotations

import base64
import binascii

from flask import Blueprint, Response, g, jsonify, render_template, request

from .. import inspection
from ..errors import BadRequestError, CAError
from .common import json_body, now, services
from .errors import status_for

bp = Blueprint("inspect", __name__)


def _run(data: bytes | str, hostname: str | None) -> dict:
    svc = services()
    return inspection.inspect(svc.config, svc.store, svc.authority, data, now(), hostname=hostname or None,
                              requester=g.requester)


@bp.post("/api/v1/inspect")
def api_inspect():
    body = json_body()
    if not isinstance(body, dict):
        raise BadRequestError('Send JSON like {"pem": "-----BEGIN CERTIFICATE-----..."} or {"der_base64": "..."}.',
                              code="json_invalid")
    hostname = body.get("hostname")
    if hostname is not None and (not isinstance(hostname, str) or len(hostname) > 253):
        raise BadRequestError('"hostname" must be a host name or IP address.', code="hostname_invalid")
    if isinstance(body.get("pem"), str):
        data: bytes | str = body["pem"]
    elif isinstance(body.get("der_base64"), str):
        try:
            data = base64.b64decode(body["der_base64"], validate=True)
        except (binascii.Error, ValueError):
            raise BadRequestError('"der_base64" is not valid base64.', code="document_invalid") from None
    else:
        raise BadRequestError('Give "pem" (text) or "der_base64".', code="document_missing")
    return jsonify(_run(data, hostname))


def _submitted() -> bytes | str:
    upload = request.files.get("document_file")
    if upload is not None and upload.filename:
        return upload.read(inspection.MAX_DOCUMENT + 1)
    text = (request.form.get("document") or "").strip()
    if not text:
        raise BadRequestError("Paste a certificate or CSR, or choose a file.", code="document_missing")
    return text


@bp.route("/inspect", methods=["GET", "POST"])
def inspect_page():
    if request.method == "GET":
        return render_template("inspect.html", result=None, error=None, document="", hostname="")
    hostname = (request.form.get("hostname") or "").strip()[:253]
    document = request.form.get("document") or ""
    try:
        data = _submitted()
        result = _run(data, hostname)
        der_b64 = base64.b64encode(inspection.der_of(inspection.load_document(data))).decode()
    except CAError as exc:
        return render_template("inspect.html", result=None, error=exc.message, document=document,
                               hostname=hostname), status_for(exc)
    return render_template("inspect.html", result=result, error=None, document=document, hostname=hostname,
                           der_b64=der_b64)


@bp.post("/inspect/convert")
def convert():
    """Download the inspected document in the other format (or the one asked for)."""
    try:
        der = base64.b64decode(request.form.get("der_b64", ""), validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError("Nothing to convert: inspect a certificate first.", code="document_invalid") from None
    document = inspection.load_document(der)
    kind = "csr" if not hasattr(document, "serial_number") else "certificate"
    base = "request" if kind == "csr" else inspection.serial_hex(document.serial_number)
    if request.form.get("format") == "pem":
        body: bytes = document.public_bytes(inspection.Encoding.PEM)
        response = Response(body, mimetype="application/x-pem-file")
        filename = f"{base}.pem"
    else:
        response = Response(inspection.der_of(document),
                            mimetype="application/pkcs10" if kind == "csr" else "application/pkix-cert")
        filename = f"{base}.{'der' if kind == 'certificate' else 'csr'}"
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


@bp.get("/trust")
def trust():
    return render_template("trust.html", authorities=services().authority.describe())
