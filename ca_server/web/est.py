"""EST (RFC 7030) under /.well-known/est/ and /.well-known/est/<label>/ (one per [est.labels.NAME],
with its own profile, domains and reminder addresses): the door devices enroll through by themselves. HTTP
only: the request becomes an IssueRequest for the one issuance path, its answer a PKCS#7.

Answers are what the clients that exist read (strongSwan's `pki --est`, curl with openssl, libest):
base64 without line breaks, a Content-Length, errors as text/plain with the reason in words."""

from __future__ import annotations

import base64
from dataclasses import replace

from asn1crypto import core
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from flask import Blueprint, Response, g, request
from werkzeug.exceptions import HTTPException

from .. import accounts, issuance
from ..config.devices import DEFAULT, DeviceEndpoint
from ..errors import AuthError, BadRequestError, CAError, CSRParseError, ForbiddenError, NotFoundError
from ..models import CertificateRecord, PendingRequest
from ..pki.csr import decode_request_bytes, parse_csr
from ..pki.names import in_domains, request_names
from ..store import CertificateFilter
from .auth import audit_failed_sign_in, check_sign_in_limit, count_failed_sign_in
from .common import client_address, count_submission, now, services
from .errors import status_for

bp = Blueprint("est", __name__, url_prefix="/.well-known/est")

PKCS7 = "application/pkcs7-mime; smime-type=certs-only"
REALM = 'Basic realm="ca-server EST", charset="UTF-8"'
# csrattrs: sign the request with SHA-256 (ECDSA or RSA, whichever the device's key is).
CSR_ATTRIBUTE_OIDS = ("1.2.840.10045.4.3.2", "1.2.840.113549.1.1.11")


class _AttrOrOID(core.Choice):  # RFC 7030 4.5.2; the attribute alternative is not used here
    _alternatives = [("oid", core.ObjectIdentifier)]


class _CsrAttrs(core.SequenceOf):
    _child_spec = _AttrOrOID


@bp.before_request
def _enabled() -> None:
    if not services().config.est.enabled:
        raise NotFoundError("EST is not enabled on this server ([est] enabled = true in config.toml).")


def _answer(body: bytes, content_type: str) -> Response:
    response = Response(base64.b64encode(body), content_type=content_type)
    response.headers["Content-Transfer-Encoding"] = "base64"
    return response


@bp.get("/cacerts")
@bp.get("/<label>/cacerts")
def cacerts(label: str | None = None) -> Response:
    """The issuing intermediate and the root, as a certs-only PKCS#7 (RFC 7030 4.1); no sign-in."""
    _label(label)
    authority = services().authority
    return _answer(pkcs7.serialize_certificates([authority.intermediate, authority.root], Encoding.DER), PKCS7)


@bp.get("/csrattrs")
@bp.get("/<label>/csrattrs")
def csrattrs(label: str | None = None) -> Response:
    _label(label)
    return _answer(_CsrAttrs([_AttrOrOID(name="oid", value=oid) for oid in CSR_ATTRIBUTE_OIDS]).dump(),
                   "application/csrattrs")


@bp.post("/simpleenroll")
@bp.post("/<label>/simpleenroll")
def simpleenroll(label: str | None = None) -> Response:
    return _enroll("simpleenroll", _label(label))


@bp.post("/simplereenroll")
@bp.post("/<label>/simplereenroll")
def simplereenroll(label: str | None = None) -> Response:
    return _enroll("simplereenroll", _label(label))


@bp.post("/serverkeygen")
@bp.post("/<label>/serverkeygen")
def serverkeygen(label: str | None = None) -> Response:
    _label(label)
    return Response("This CA does not generate keys for devices: a private key never leaves the device that "
                    "made it. Make a key and a CSR on the device and send the CSR to simpleenroll.\n",
                    status=501, content_type="text/plain; charset=utf-8")


def _label(name: str | None) -> DeviceEndpoint:
    label = services().config.est.label(name or DEFAULT) if name != DEFAULT else None
    if label is None:
        known = ", ".join(f"/.well-known/est/{e.name}/" for e in services().config.est.labels) or "none"
        raise NotFoundError(f"There is no EST label {name!r} here; the labels are: {known}.")
    return label


def _enroll(operation: str, label: DeviceEndpoint) -> Response:
    svc = services()
    g.requester = _within(_basic_requester(), label)
    count_submission()
    der = _csr_der(request.get_data(cache=False))
    renewed = _current_certificate(der) if operation == "simplereenroll" else None
    req = issuance.IssueRequest(csr=der, profile=label.profile or None, notify=label.notify, requester=g.requester,
                                client=client_address(), door="est", endpoint=label.name)
    extra = {"operation": operation,
             **({"renews": renewed.serial} if renewed else {})}
    record = issuance.issue(svc.config, svc.store, svc.authority, req, now(), out_of_scope=issuance.REFUSE,
                            audit_extra=extra)
    assert not isinstance(record, PendingRequest)  # REFUSE never holds
    return _answer(pkcs7.serialize_certificates([record.certificate], Encoding.DER), PKCS7)


def _within(requester: issuance.Requester, label: DeviceEndpoint) -> issuance.Requester:
    """The requester's scope narrowed to the label's domains: names under both."""
    if not label.domains:
        return requester
    if requester.is_admin and not requester.domains:
        return replace(requester, domains=label.domains, allow_ip=False)
    both = tuple(dict.fromkeys([d for d in requester.domains if in_domains(d, label.domains)]
                               + [d for d in label.domains if in_domains(d, requester.domains)]))
    if not both:
        raise ForbiddenError(f"EST label {label.name!r} issues names under {', '.join(label.domains)}; "
                             f"{requester.label} may request none of them.")
    return replace(requester, domains=both, allow_ip=False)


def _basic_requester() -> issuance.Requester:
    """HTTP Basic: an API token as the password (any user name), else a user's name and password.
    Failed attempts count and are audited as the sign-in form's are."""
    auth = request.authorization
    if auth is None or auth.type != "basic":
        raise AuthError("EST needs HTTP Basic authentication: any user name with an API token as the "
                        "password, or a user's name and password.")
    store = services().store
    check_sign_in_limit()
    password = auth.password or ""
    requester = accounts.token_requester(store, password, now()) if password else None
    if requester is None and auth.username:
        requester = accounts.authenticate_user(store, auth.username, password)
    if requester is None:
        audit_failed_sign_in(f"est:{(auth.username or '')[:64]}")
        count_failed_sign_in()
        raise AuthError("The user name and password (or API token) were not accepted.")
    return requester


def _csr_der(body: bytes) -> bytes:
    """The request: base64 of a DER PKCS#10 (RFC 7030 4.2.1), line breaks allowed; PEM is taken too."""
    try:
        return decode_request_bytes(body)
    except CSRParseError:
        raise BadRequestError("The body must be a certificate request (PKCS#10, DER) in base64, as RFC 7030 "
                              "4.2.1 asks, with Content-Type: application/pkcs10.", code="csr_invalid") from None


def _current_certificate(der: bytes) -> CertificateRecord | None:
    """simplereenroll (RFC 7030 4.2.2): the request's names (common name and SANs) must be those
    of a certificate this CA issued that is still valid; that certificate, else a refusal. Read
    with the issuance path's own parser, so a request it takes is never let through unchecked."""
    try:
        csr = parse_csr(der).csr
    except CSRParseError:
        return None  # the issuance path refuses it in words
    wanted = request_names(csr.subject, csr.extensions)
    if wanted:
        records, _ = services().store.list_certificates(CertificateFilter(status="valid", q=min(wanted)), now(),
                                                        limit=100)
        for record in records:
            if request_names(record.certificate.subject, record.certificate.extensions) == wanted:
                return record
    raise ForbiddenError("simplereenroll renews a certificate this CA issued and that is still valid: no such "
                         "certificate has this request's subject and names. Use simpleenroll for a new one.")


@bp.errorhandler(CAError)
def _error(exc: CAError) -> Response:
    """EST errors are text/plain with the reason in words (RFC 7030 4.2.3)."""
    words = exc.message
    for violation in getattr(exc, "violations", None) or ():
        words += f"\n- {violation.message}"
    response = Response(words + "\n", status=status_for(exc), content_type="text/plain; charset=utf-8")
    if isinstance(exc, AuthError):
        response.headers["WWW-Authenticate"] = REALM
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    return Response(f"{exc.name}: {exc.description}\n", status=exc.code or 500,
                    content_type="text/plain; charset=utf-8")
