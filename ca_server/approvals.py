"""Requests that wait for an admin: names outside the requester's domains, when
`[policy] approval_for_other_names = true` (issuance.issue holds them). Approving issues the
certificate through the same path (the policy checked again, a refusal audited); rejecting records
the reason. The requester learns the outcome on the request's page and by e-mail when an address
is known."""

from __future__ import annotations

import datetime as dt
import html
import logging

from . import issuance
from .ca.authority import Authority
from .clock import to_text
from .config import Config, Secrets
from .errors import BadRequestError, ConflictError, ForbiddenError, MailError, NotFoundError
from .models import PendingRequest
from .notify.mail import Mailer, new_message
from .store import CaStore, Settlement

log = logging.getLogger("ca_server.approvals")


def get_request(store: CaStore, request_id: str) -> PendingRequest:
    row = store.get_request(request_id) if request_id and len(request_id) <= 64 else None
    if row is None:
        raise NotFoundError(f"There is no certificate request {request_id!r}.")
    return PendingRequest.from_row(row)


def visible_to(pending: PendingRequest, requester: issuance.Requester) -> bool:
    return requester.approves or pending.requester == requester.label


def approve(config: Config, secret: Secrets, store: CaStore, authority: Authority, request_id: str,
            admin: issuance.Requester, now: dt.datetime, client: str | None = None) -> PendingRequest:
    pending = _pending(store, request_id, admin)
    issue_request = issuance.IssueRequest(csr=pending.csr_pem, profile=pending.profile,
                                          validity_days=pending.validity_days, notify=pending.notify,
                                          requester=_original_requester(pending), client=client,
                                          **_door(pending))

    def decide() -> None:  # after the policy passed again (it may have changed while the request waited)
        if not store.decide_request(request_id, "approved", to_text(now), admin.label, None):
            raise ConflictError(f"Request {request_id} was decided by someone else meanwhile.")

    # The serial goes into the request in the certificate's own transaction.
    record = issuance.issue(config, store, authority, issue_request, now, approved_by=admin, before_signing=decide,
                            settles=Settlement("request", request_id), audit_extra={"request": request_id})
    decided = get_request(store, request_id)
    _tell_requester(config, secret, decided, f"approved: certificate {record.serial} is ready")
    return decided


def reject(config: Config, secret: Secrets, store: CaStore, request_id: str, admin: issuance.Requester, reason: str,
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


def _pending(store: CaStore, request_id: str, admin: issuance.Requester) -> PendingRequest:
    if not admin.approves:
        raise ForbiddenError("Only an admin or an approver may approve or reject requests.")
    pending = get_request(store, request_id)
    if pending.status != "pending":
        raise ConflictError(f"Request {request_id} was already {pending.status}.")
    return pending


def _door(pending: PendingRequest) -> dict:
    """Held requests come from the web form, the API or a SCEP endpoint; the requester says which
    kind (a user may have used the form or the API: "web" stands for both)."""
    kind, _, name = pending.requester.partition(":")
    if kind == "scep":  # "phones" or "phones (one-time challenge)"
        return {"door": "scep", "endpoint": name.split(" (")[0]}
    return {"door": "api" if kind == "token" else "web"}


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

