"""Requests that wait for an admin: names outside the requester's domains, when
`[policy] approval_for_other_names = true`. Approving issues the certificate (after checking the
policy again); rejecting records the reason. The requester learns the outcome on the request's
page and by e-mail when an address is known."""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.serialization import Encoding

from . import issuance
from .clock import from_text, to_text
from .config import Config, Secrets
from .errors import BadRequestError, ConflictError, ForbiddenError, MailError, NotFoundError, PolicyViolationError
from .instance import Authority
from .mail import Mailer, new_message
from .models import CertificateRecord
from .store import Store

log = logging.getLogger("ca_server.approvals")


@dataclass(frozen=True)
class PendingRequest:
    id: str
    created_at: dt.datetime
    requester: str
    requester_email: str | None
    csr_pem: str
    profile: str
    validity_days: int
    notify: tuple[str, ...]
    names: tuple[str, ...]
    reasons: tuple[dict, ...]
    status: str  # pending | approved | rejected
    decided_at: dt.datetime | None = None
    decided_by: str | None = None
    decision_reason: str | None = None
    serial: str | None = None

    def as_json(self) -> dict:
        return {
            "request_id": self.id,
            "status": self.status,
            "created_at": to_text(self.created_at),
            "requester": self.requester,
            "names": list(self.names),
            "profile": self.profile,
            "validity_days": self.validity_days,
            "reasons": list(self.reasons),
            "decided_at": to_text(self.decided_at) if self.decided_at else None,
            "decided_by": self.decided_by,
            "decision_reason": self.decision_reason,
            "serial": self.serial,
        }


def from_row(row: dict) -> PendingRequest:
    return PendingRequest(
        id=row["id"], created_at=from_text(row["created_at"]), requester=row["requester"],
        requester_email=row["requester_email"], csr_pem=row["csr_pem"], profile=row["profile"],
        validity_days=row["validity_days"], notify=tuple(json.loads(row["notify"])),
        names=tuple(json.loads(row["names"])), reasons=tuple(json.loads(row["reasons"])), status=row["status"],
        decided_at=from_text(row["decided_at"]) if row["decided_at"] else None, decided_by=row["decided_by"],
        decision_reason=row["decision_reason"], serial=row["serial"],
    )


def submit(config: Config, store: Store, authority: Authority, request: issuance.IssueRequest,
           now: dt.datetime) -> CertificateRecord | PendingRequest:
    """Issue like issuance.issue, except that names outside the requester's scope wait for an
    admin instead of being refused (when the config says so)."""
    if not config.policy.approval_for_other_names:
        return issuance.issue(config, store, authority, request, now)
    prepared, violations = issuance.check_request(config, store, request)
    if violations:
        issuance.audit_refusal(store, request, prepared, violations, now)
        raise PolicyViolationError(violations)
    out_of_scope = issuance.scope_violations(request.requester, prepared.decision.sans)
    if not out_of_scope:
        return issuance.sign_and_store(config, store, authority, prepared, request.requester, request.client, now)
    row = {
        "id": secrets.token_hex(8),
        "created_at": to_text(now),
        "requester": request.requester.label,
        "requester_email": request.requester.email,
        "csr_pem": prepared.csr.csr.public_bytes(Encoding.PEM).decode(),
        "profile": prepared.profile,
        "validity_days": prepared.decision.validity_days,
        "notify": json.dumps(list(prepared.notify)),
        "names": json.dumps(prepared.decision.sans),
        "reasons": json.dumps([v.as_dict() for v in out_of_scope]),
        "status": "pending",
    }
    store.insert_request(row, audit={"at": now, "action": "request_pending", "actor": request.requester.label,
                                     "client": request.client,
                                     "detail": {"request": row["id"], "names": prepared.decision.sans}})
    return get_request(store, row["id"])


def get_request(store: Store, request_id: str) -> PendingRequest:
    row = store.get_request(request_id) if request_id and len(request_id) <= 64 else None
    if row is None:
        raise NotFoundError(f"There is no certificate request {request_id!r}.")
    return from_row(row)


def visible_to(pending: PendingRequest, requester: issuance.Requester) -> bool:
    return requester.is_admin or pending.requester == requester.label


def approve(config: Config, secret: Secrets, store: Store, authority: Authority, request_id: str,
            admin: issuance.Requester, now: dt.datetime, client: str | None = None) -> PendingRequest:
    pending = _pending(store, request_id, admin)
    issue_request = issuance.IssueRequest(csr=pending.csr_pem, profile=pending.profile,
                                          validity_days=pending.validity_days, notify=pending.notify,
                                          requester=admin, client=client)
    # The policy is checked again: it may have changed while the request waited.
    prepared, violations = issuance.check_request(config, store, issue_request)
    if violations:
        raise PolicyViolationError(violations)
    if not store.decide_request(request_id, "approved", to_text(now), admin.label, None):
        raise ConflictError(f"Request {request_id} was decided by someone else meanwhile.")
    record = issuance.sign_and_store(config, store, authority, prepared, _original_requester(pending), client, now,
                                     audit_action="approve", audit_extra={"request": request_id,
                                                                          "approved_by": admin.label})
    store.set_request_serial(request_id, record.serial)
    decided = get_request(store, request_id)
    _tell_requester(config, secret, decided, f"approved: certificate {record.serial} is ready")
    return decided


def reject(config: Config, secret: Secrets, store: Store, request_id: str, admin: issuance.Requester, reason: str,
           now: dt.datetime, client: str | None = None) -> PendingRequest:
    reason = (reason or "").strip()
    if not reason:
        raise BadRequestError("Give a reason for the rejection; the requester will read it.", code="reason_missing")
    _pending(store, request_id, admin)
    if not store.decide_request(request_id, "rejected", to_text(now), admin.label, reason[:1000],
                                audit={"at": now, "action": "reject", "actor": admin.label, "client": client,
                                       "detail": {"request": request_id, "reason": reason[:1000]}}):
        raise ConflictError(f"Request {request_id} was decided by someone else meanwhile.")
    decided = get_request(store, request_id)
    _tell_requester(config, secret, decided, f"rejected: {reason}")
    return decided


def _pending(store: Store, request_id: str, admin: issuance.Requester) -> PendingRequest:
    if not admin.is_admin:
        raise ForbiddenError("Only an admin may approve or reject requests.")
    pending = get_request(store, request_id)
    if pending.status != "pending":
        raise ConflictError(f"Request {request_id} was already {pending.status}.")
    return pending


def _original_requester(pending: PendingRequest) -> issuance.Requester:
    kind, _, name = pending.requester.partition(":")
    return issuance.Requester(name=name, kind=kind, is_admin=False)


def _tell_requester(config: Config, secret: Secrets, pending: PendingRequest, outcome: str) -> None:
    recipients = tuple(filter(None, (pending.requester_email,))) or pending.notify
    if not recipients:
        return
    link = f"{config.server.base_url}/requests/{pending.id}"
    text = (f"Your certificate request for {', '.join(n.split(':', 1)[1] for n in pending.names)} was {outcome}.\n\n"
            f"Details: {link}\n")
    message = new_message(sender=config.mail.from_address, to=recipients,
                          subject=f"Certificate request {pending.status}: {pending.names[0].split(':', 1)[1]}",
                          text=text, html_body=f"<p>{html.escape(text.splitlines()[0])}</p>"
                          f"<p><a href=\"{html.escape(link)}\">Details</a></p>")
    try:
        with Mailer(config.mail, secret.smtp_password) as mailer:
            mailer.send(message)
    except MailError as exc:  # the decision stands; the page shows it either way
        log.warning("could not mail the outcome of request %s: %s", pending.id, exc.message)

