"""SCEP (RFC 8894) at /scep and /scep/<name> (one per [scep.endpoints.NAME]): GetCACaps, GetCACert,
PKIOperation by GET (Cisco IOS) and POST. HTTP only; the protocol is in ca_server/scep/."""

from __future__ import annotations

import base64
import binascii
import logging
from urllib.parse import unquote

from flask import Blueprint, Response, request

from ..config.devices import DEFAULT, DeviceEndpoint
from ..errors import NotFoundError
from ..scep import enroll
from ..scep import messages as m
from ..scep.ra import current_ra
from .common import client_address, now, services

bp = Blueprint("scep", __name__, url_prefix="/scep")
log = logging.getLogger("ca_server")

# SHA-384 too: strongSwan's pki takes AES only when it is listed (DEVICE-CLIENTS.md).
CAPS = "AES\nDES3\nPOSTPKIOperation\nRenewal\nSHA-1\nSHA-256\nSHA-384\nSHA-512\nSCEPStandard\n"


@bp.before_request
def _enabled() -> None:
    if not services().config.scep.enabled:
        raise NotFoundError("SCEP is not enabled on this server ([scep] enabled = true in config.toml).")


@bp.route("", methods=["GET", "POST"], strict_slashes=False)
@bp.route("/pkiclient.exe", methods=["GET", "POST"])
@bp.route("/<name>", methods=["GET", "POST"], strict_slashes=False)
@bp.route("/<name>/pkiclient.exe", methods=["GET", "POST"])
def scep(name: str | None = None) -> Response:
    endpoint = services().config.scep.endpoint(name or DEFAULT) if name != DEFAULT else None
    if endpoint is None:
        known = ", ".join(f"/scep/{e.name}" for e in services().config.scep.endpoints) or "none"
        return _text(404, f"There is no SCEP endpoint {name!r} here; the default one is /scep, the named ones: {known}.")
    operation = request.args.get("operation", "")
    if operation == "GetCACaps":
        return Response(CAPS, content_type="text/plain")
    if operation == "GetCACert":
        svc = services()
        ra = current_ra(svc.config, svc.store, svc.authority, svc.paths, now())
        chain = [ra.cert, svc.authority.intermediate, svc.authority.root]
        return Response(m.degenerate_pkcs7(chain), content_type="application/x-x509-ca-ra-cert")
    if operation == "PKIOperation":
        return _pki_operation(endpoint)
    return _text(400, f"Unknown SCEP operation {operation!r}: use GetCACaps, GetCACert or PKIOperation.")


def _pki_operation(endpoint: DeviceEndpoint) -> Response:
    if request.method == "POST":
        der = request.get_data(cache=False)
        if der[:1] != b"\x30":
            der = _base64(der)
    else:
        der = _base64(unquote(request.args.get("message", "")).encode())
    if not der:
        return _text(400, "PKIOperation needs a message: the pkiMessage (base64 in ?message= for GET, DER as the "
                          "POST body).")
    svc = services()
    try:
        answer = enroll.pki_operation(svc.config, svc.store, svc.authority, svc.paths, svc.secrets, der,
                                      client_address(), now(), endpoint)
    except m.ScepError as exc:
        log.warning("SCEP request from %s refused: %s", client_address(), exc.message)
        return _text(400, exc.message)
    return Response(answer, content_type="application/x-pki-message")


def _base64(text: bytes) -> bytes:
    compact = b"".join(text.split()).replace(b"-", b"+").replace(b"_", b"/")  # URL-safe base64 too
    try:
        return base64.b64decode(compact + b"=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        return b""


def _text(status: int, words: str) -> Response:
    return Response(words + "\n", status=status, content_type="text/plain; charset=utf-8")
