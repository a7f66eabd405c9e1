"""The JSON API (/api/v1). Errors are {"error": {"code", "message"}} with a fitting 4xx."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, g, jsonify, request, url_for

from .. import approvals, issuance, revocation
from ..errors import BadRequestError, CertificateNotFoundError, InvalidSerialError, NotFoundError
from ..models import CertificateRecord, PendingRequest
from ..pki.serials import parse_serial
from ..store import CertificateFilter
from .auth import admin_required, approver_required
from .common import certificate_page, client_address, count_submission, json_body, now, services

bp = Blueprint("api", __name__, url_prefix="/api/v1")

JSON_FIELDS = {"csr", "profile", "validity_days", "notify"}
RAW_CSR_TYPES = {"application/pkcs10", "application/x-pem-file", "application/octet-stream",
                 "application/x-x509-csr", "text/plain"}
# What `curl --data-binary @x.csr` (form type) or a client that names no type sends a CSR as: taken
# as the CSR, like the raw types above.
UNNAMED_TYPES = {"", "application/x-www-form-urlencoded"}
MAX_PAGE = 1000
DEFAULT_PAGE = 100
STATUSES = ("valid", "revoked", "expired")


def certificate_json(record) -> dict:
    return record.as_json(now(), services().authority.chain_for(record.issuer))


def find_certificate(serial_text: str, *, with_renewal: bool = True):
    try:
        serial = parse_serial(serial_text)
    except InvalidSerialError as exc:
        # Not a serial at all: still "no such certificate" (404), with words on how to write one.
        raise NotFoundError(exc.message) from None
    record = services().store.get_certificate(serial, with_renewal=with_renewal)
    if record is None:
        raise CertificateNotFoundError(serial, services().authority.ca_role_of(serial))
    return record


def certificate_created(record: CertificateRecord, now: dt.datetime, chain_pem: str) -> dict:
    """The body of a 201: the certificate JSON, and the notes (e.g. validity shortened) if any."""
    body = record.as_json(now, chain_pem)
    notes = record.extra.get("notes")
    if notes:
        body["notes"] = notes
    return body


def issue_request_from_json(body: object, requester: issuance.Requester, client: str | None) -> issuance.IssueRequest:
    """A JSON request body (already decoded; None when it was not JSON) as an IssueRequest."""
    if body is None:
        raise BadRequestError("The body is not valid JSON.", code="json_invalid")
    if not isinstance(body, dict):
        raise BadRequestError('The body must be a JSON object, like {"csr": "-----BEGIN ..."}.',
                              code="json_invalid")
    unknown = sorted(set(body) - JSON_FIELDS)
    if unknown:
        raise BadRequestError(
            f"Unknown field(s) {', '.join(unknown)}; the fields are {', '.join(sorted(JSON_FIELDS))}.",
            code="field_unknown",
        )
    csr = body.get("csr")
    if not isinstance(csr, str) or not csr.strip():
        raise BadRequestError('"csr" is required: the PEM text of the certificate request.', code="csr_missing")
    return issuance.IssueRequest(
        csr=csr,
        profile=_optional_str(body, "profile"),
        validity_days=_optional_int(body.get("validity_days"), "validity_days"),
        notify=_notify(body.get("notify")),
        requester=requester,
        client=client,
        door="api",
    )


def _issue_request_from_body() -> issuance.IssueRequest:
    mimetype = request.mimetype
    if mimetype == "application/json" or (not mimetype and request.data[:1] == b"{"):
        return issue_request_from_json(json_body(), g.requester, client_address())
    # What `curl --data-binary @file` sends (a form type) is taken as the file itself, whatever it
    # holds: the CSR parser then says in words what it is instead (a certificate, a key, garbage).
    if mimetype in RAW_CSR_TYPES or mimetype in UNNAMED_TYPES:
        return issuance.IssueRequest(
            csr=request.get_data(cache=False),
            profile=request.args.get("profile") or None,
            validity_days=_optional_int(request.args.get("validity_days"), "validity_days"),
            notify=tuple(a for v in request.args.getlist("notify") for a in v.split(",")),
            requester=g.requester,
            client=client_address(),
            door="api",
        )
    raise BadRequestError(
        "Send the request as JSON (Content-Type: application/json) or the CSR itself "
        "(Content-Type: application/pkcs10, PEM or DER).",
        code="unsupported_media_type",
    )


def _optional_str(body: dict, key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadRequestError(f'"{key}" must be a string.', code=f"{key}_invalid")
    return value


def _optional_int(value, key: str) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit() and len(value.strip()) < 7:
        return int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequestError(f'"{key}" must be a whole number.', code=f"{key.split('_')[0]}_invalid")
    return value


def _notify(value) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(a for a in value.split(",") if a.strip())
    if isinstance(value, list) and all(isinstance(a, str) for a in value):
        return tuple(value)
    raise BadRequestError('"notify" must be a list of e-mail addresses.', code="notify_invalid")


@bp.post("/certificates")
def create_certificate():
    count_submission()
    svc = services()
    req = _issue_request_from_body()
    record = issuance.issue(svc.config, svc.store, svc.authority, req, now())
    if isinstance(record, PendingRequest):
        body = {**record.as_json(), "url": url_for("pages.request_page", request_id=record.id, _external=True)}
        response = jsonify(body)
        response.status_code = 202
        response.headers["Location"] = url_for("api.get_request", request_id=record.id)
        return response
    response = jsonify(certificate_created(record, now(), svc.authority.chain_for(record.issuer)))
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_certificate", serial=record.serial)
    return response


@bp.get("/certificates/<serial>")
def get_certificate(serial: str):
    record = find_certificate(serial)
    body = certificate_json(record)
    positions = services().store.log_positions(record.serial)
    if positions:  # where the issuance log holds it (/log/proof/<serial> proves it)
        body["log_index"] = positions.get("issue", positions.get("import"))
        if "revoke" in positions:
            body["log_revocation_index"] = positions["revoke"]
    return jsonify(body)


@bp.get("/certificates")
def list_certificates():
    args = request.args
    # "at most 1000": a larger limit is served as 1000 (follow `next` for the rest).
    limit = min(_bounded_int(args.get("limit"), "limit", DEFAULT_PAGE, 1, None), MAX_PAGE)
    expiring = args.get("expiring_within_days")
    expiring_days = None if expiring in (None, "") else _bounded_int(expiring, "expiring_within_days", 0, 0, 36500)
    status = args.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequestError(f"status must be one of {', '.join(STATUSES)}.", code="status_invalid")
    cursor = args.get("cursor")
    before = None if cursor in (None, "") else _bounded_int(cursor, "cursor", 0, 1, 2**62)
    q = (args.get("q") or "").strip()[:200] or None
    flt = CertificateFilter(status=status, expiring_within_days=expiring_days, q=q,
                            requester=None if g.requester.is_admin else g.requester.label)
    records, next_url = certificate_page(flt, limit=limit, before=before, endpoint="api.list_certificates",
                                         external=True)
    return jsonify({"certificates": [certificate_json(r) for r in records], "next": next_url})


@bp.post("/certificates/<serial>/revoke")
@admin_required
def revoke_certificate(serial: str):
    body = json_body() if request.data else {}
    if body is None or not isinstance(body, dict):
        raise BadRequestError('Send JSON like {"reason": "keyCompromise"}.', code="json_invalid")
    unknown = sorted(set(body) - {"reason"})
    if unknown:
        raise BadRequestError(f"Unknown field(s) {', '.join(unknown)}; the only field is reason.",
                              code="field_unknown")
    reason = body.get("reason", "unspecified")
    if not isinstance(reason, str):
        raise BadRequestError('"reason" must be a string such as "keyCompromise".', code="reason_invalid")
    record = find_certificate(serial, with_renewal=False)
    svc = services()
    revoked = revocation.revoke(svc.config, svc.store, svc.authority, record.serial, reason, now(),
                                actor=g.requester.label, client=client_address())
    return jsonify(certificate_json(revoked))


@bp.get("/requests")
def list_requests():
    requester = g.requester
    status = request.args.get("status") or ("pending" if requester.approves else None)
    rows = services().store.list_requests(status=status, requester=None if requester.approves else requester.label)
    return jsonify({"requests": [PendingRequest.from_row(r).as_json() for r in rows]})


@bp.get("/requests/<request_id>")
def get_request(request_id: str):
    pending = approvals.get_request(services().store, request_id)
    if not approvals.visible_to(pending, g.requester):
        raise NotFoundError(f"There is no certificate request {request_id!r}.")
    body = pending.as_json()
    if pending.serial:
        body["certificate"] = certificate_json(find_certificate(pending.serial))
    return jsonify(body)


@bp.post("/requests/<request_id>/approve")
@approver_required
def approve_request(request_id: str):
    svc = services()
    decided = approvals.approve(svc.config, svc.secrets, svc.store, svc.authority, request_id, g.requester, now(),
                                client_address())
    return jsonify({**decided.as_json(), "certificate": certificate_json(find_certificate(decided.serial))})


@bp.post("/requests/<request_id>/reject")
@approver_required
def reject_request(request_id: str):
    body = json_body() or {}
    reason = body.get("reason") if isinstance(body, dict) else None
    if not isinstance(reason, str):
        raise BadRequestError('Send JSON like {"reason": "not our server"}.', code="reason_missing")
    svc = services()
    decided = approvals.reject(svc.config, svc.secrets, svc.store, request_id, g.requester, reason, now(),
                               client_address())
    return jsonify(decided.as_json())


@bp.get("/ca")
def ca_hierarchy():
    """{"root": ..., "intermediate": the issuing one, "intermediate-N": each earlier generation N}:
    every value one CA certificate."""
    root, current, *earlier = services().authority.describe()
    return jsonify({"root": root, "intermediate": current, **{e["file"]: e for e in earlier}})


def _bounded_int(text, key: str, default: int, low: int, high: int | None) -> int:
    if text is None or text == "":
        return default
    try:
        value = int(str(text).strip())
    except ValueError:
        raise BadRequestError(f"{key} must be a whole number.", code=f"{key}_invalid") from None
    if value < low or (high is not None and value > high):
        words = f"{low} or more" if high is None else f"between {low} and {high}"
        raise BadRequestError(f"{key} must be {words}.", code=f"{key}_invalid")
    return value
