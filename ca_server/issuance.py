"""The issuance path: parse, check the policy, check the scope (refuse or hold), sign, store and
audit, return. Every door calls `issue`; a test checks that nothing else signs or stores a
certificate. A certificate leaves this module only after it is in the store."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import ipaddress
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from . import policy
from .ca.authority import BACKDATE, Authority
from .clock import to_text
from .config import Config
from .emails import email_problem, normalize_email
from .errors import BadRequestError, PolicyViolationError, ScopeError, TooLargeError, Violation
from .models import CertificateRecord, PendingRequest
from .pki.csr import ParsedCSR, parse_csr
from .pki.names import in_domains
from .pki.serials import new_serial, serial_hex
from .store import CaStore, SerialTakenError, Settlement

MAX_NOTIFY = 20


@dataclass(frozen=True)
class Requester:
    """Who asks: a signed-in user or an API token (issue 5 adds scopes), or the local CLI."""

    name: str
    kind: str = "cli"  # "user" | "token" | "cli"
    is_admin: bool = True
    domains: tuple[str, ...] = ()
    allow_ip: bool = True
    email: str | None = None
    can_approve: bool = False  # an approver ([[auth.groups]] role = "approver"): decides held requests

    @property
    def approves(self) -> bool:
        return self.is_admin or self.can_approve

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.name}"


CLI_REQUESTER = Requester(name="local", kind="cli")


@dataclass(frozen=True)
class IssueRequest:
    csr: bytes | str
    profile: str | None = None
    validity_days: int | None = None
    notify: tuple[str, ...] = ()
    requester: Requester = CLI_REQUESTER
    client: str | None = None
    # The CA's own certificate (`serve --tls`): any name the syntax allows, IPs too, whatever
    # [policy] says of requesters' names, with serverAuth; key rules and the validity cap still apply.
    own_certificate: bool = False
    own_ekus: tuple[str, ...] = ("serverAuth",)  # an own certificate's EKUs (the SCEP RA's: clientAuth)
    # The door it came through (web, api, acme, scep, est, cli, ca: the CA's own) and, for the device
    # doors, the endpoint or label: in the audit row, /metrics and the certificate's page.
    door: str = "cli"
    endpoint: str | None = None


# What becomes of names outside the requester's scope.
REFUSE, HOLD = "refuse", "hold"


@dataclass(frozen=True)
class Prepared:
    """A request that passed every check, ready to sign."""

    csr: ParsedCSR
    profile: str
    ekus: tuple[str, ...]
    decision: policy.Decision
    notify: tuple[str, ...]
    notes: list[str] = field(default_factory=list)


def check_request(config: Config, store: CaStore, request: IssueRequest) -> tuple[Prepared, list[Violation]]:
    """Everything short of signing. Raises for unreadable input (400/413); returns the policy
    violations (422) so callers can audit them, or report them without issuing (/inspect)."""
    pol = config.policy
    if request.own_certificate:
        pol = dataclasses.replace(pol, allowed_domains=(), allow_ip_sans=True, allow_wildcards=False)
    raw = request.csr.encode() if isinstance(request.csr, str) else request.csr
    if len(raw) > pol.max_csr_bytes:
        raise TooLargeError(
            f"The CSR is {len(raw)} bytes; at most {pol.max_csr_bytes} are accepted. A CSR is "
            "normally 1-2 KB: check that you uploaded the request, not an archive or a bundle."
        )
    profile = request.profile or pol.default_profile
    if profile not in config.profiles and not request.own_certificate:
        raise BadRequestError(
            f"There is no profile named {profile!r}; choose one of {', '.join(config.profiles)}.",
            code="profile_unknown",
        )
    validity = pol.default_validity_days if request.validity_days is None else request.validity_days
    if isinstance(validity, bool) or not isinstance(validity, int) or validity < 1:
        raise BadRequestError(
            f"The validity must be a whole number of days from 1 to {pol.max_validity_days}.",
            code="validity_invalid",
        )
    notify = normalize_notify(request.notify)
    csr = parse_csr(raw)
    ekus = request.own_ekus if request.own_certificate else config.profiles[profile].extended_key_usage
    decision = policy.evaluate(
        csr,
        policy=pol,
        ekus=ekus,
        validity_days=validity,
        signature_ok=csr.signature_ok,
        key_compromised=store.key_is_compromised(csr.spki_sha256),
    )
    prepared = Prepared(csr, profile, ekus, decision, notify, list(decision.notes))
    return prepared, decision.violations


def normalize_notify(addresses: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    cleaned = [a.strip() for a in addresses if a and a.strip()]
    if len(cleaned) > MAX_NOTIFY:
        raise BadRequestError(f"At most {MAX_NOTIFY} reminder addresses per certificate.", code="notify_invalid")
    for address in cleaned:
        problem = email_problem(address)
        if problem:
            raise BadRequestError(
                f"{address!r} is not an e-mail address for reminders: {problem}", code="notify_invalid"
            )
    return tuple(dict.fromkeys(normalize_email(a) for a in cleaned))


def issue(config: Config, store: CaStore, authority: Authority, request: IssueRequest, now: dt.datetime, *,
          out_of_scope: str | None = None, approved_by: Requester | None = None,
          before_signing: Callable[[], None] | None = None, settles: Settlement | None = None,
          audit_extra: dict | None = None) -> CertificateRecord | PendingRequest:
    """THE issuance path: every door (form, API, ACME, approvals, CLI, the server's own TLS
    certificate) calls this, and nothing else signs or stores a certificate.

    Checks the request against the policy (a refusal is audited, then raised as
    PolicyViolationError with every reason), then the requester's scope: names outside it are
    refused (ScopeError, audited) or, with `out_of_scope=HOLD` (default: what
    `[policy] approval_for_other_names` says), held for an admin and returned as a PendingRequest.
    `approved_by`: an admin approved the request, so the scope is not asked again (the policy is).
    `before_signing` runs once every check passed (a door's claim on its own state: an order
    moved to processing, a request marked approved); what it raises stops the issuance.
    `settles`: what the certificate completes (that order made valid, that request given its
    serial), committed in the certificate's own transaction.
    A certificate is returned only after it is stored, with its audit row."""
    prepared, violations = check_request(config, store, request)
    if violations:
        audit_refusal(store, request, prepared, violations, now)
        raise PolicyViolationError(violations)
    if approved_by is None:
        outside = scope_violations(request.requester, prepared.decision.sans)
        if outside:
            hold = config.policy.approval_for_other_names if out_of_scope is None else out_of_scope == HOLD
            if hold:
                return _hold(store, request, prepared, outside, now)
            audit_refusal(store, request, prepared, outside, now)
            raise ScopeError(outside)
    if before_signing is not None:
        before_signing()
    action, extra = "issue", {**_origin(request), **(audit_extra or {})}
    if approved_by is not None:
        action, extra["approved_by"] = "approve", approved_by.label
    return _sign_and_store(config, store, authority, prepared, request.requester, request.client, now,
                           audit_action=action, audit_extra=extra, settles=settles)


def _hold(store: CaStore, request: IssueRequest, prepared: Prepared, outside: list[Violation],
          now: dt.datetime) -> PendingRequest:
    row = {
        "id": secrets.token_hex(8),
        "created_at": to_text(now),
        "requester": request.requester.label,
        "requester_email": request.requester.email,
        "csr_pem": prepared.csr.pem_as_sent,
        "profile": prepared.profile,
        "validity_days": prepared.decision.validity_days,
        "notify": json.dumps(list(prepared.notify)),
        "names": json.dumps(prepared.decision.sans),
        "reasons": json.dumps([v.as_dict() for v in outside]),
        "status": "pending",
    }
    store.insert_request(row, audit={"at": now, "action": "request_pending", "actor": request.requester.label,
                                     "client": request.client,
                                     "detail": {"request": row["id"], "names": prepared.decision.sans}})
    return PendingRequest.from_row(store.get_request(row["id"]))


def audit_refusal(store: CaStore, request: IssueRequest, prepared: Prepared, violations: list[Violation],
                   now: dt.datetime) -> None:
    store.append_audit(
        at=now,
        action="refuse",
        actor=request.requester.label,
        client=request.client,
        detail={"codes": [v.code for v in violations], "names": prepared.decision.sans, **_origin(request)},
    )


def _origin(request: IssueRequest) -> dict:
    """The door (and endpoint) a request came through, for its audit rows."""
    return {"door": request.door, **({"endpoint": request.endpoint} if request.endpoint else {})}


def scope_violations(requester: Requester, sans: list[str]) -> list[Violation]:
    """Names the requester may not ask for: outside its domains, or IP addresses without
    allow_ip. Admins without domains may ask for anything the policy allows."""
    if requester.is_admin and not requester.domains:
        return []
    who = f"{ {'token': 'token', 'acme': 'ACME account'}.get(requester.kind, 'user')} {requester.name!r}"
    scope = ", ".join(requester.domains) if requester.domains else "no domains"
    if not sans:
        return [Violation("name_out_of_scope", (
            f"A certificate without DNS names or IP addresses can only be requested by an admin; {who} "
            f"may request names under {scope}."))]
    out = []
    for entry in sans:
        kind, value = entry.split(":", 1)
        if kind == "IP":
            if not requester.allow_ip:
                out.append(Violation("name_out_of_scope", (
                    f"{who} may not request IP addresses ({value}); ask an admin to allow IP SANs, or use a "
                    "DNS name."), value))
        elif not in_domains(value, requester.domains):
            out.append(Violation("name_out_of_scope", (
                f'"{value}" is outside the domains {who} may request ({scope}); ask an admin to add the domain '
                "or to issue it."), value))
    return out


def _sign_and_store(
    config: Config,
    store: CaStore,
    authority: Authority,
    prepared: Prepared,
    requester: Requester,
    client: str | None,
    now: dt.datetime,
    audit_action: str = "issue",
    audit_extra: dict | None = None,
    settles: Settlement | None = None,
) -> CertificateRecord:
    decision = prepared.decision
    start = now.replace(microsecond=0)
    not_before = start - BACKDATE
    not_after = start + dt.timedelta(days=decision.validity_days)
    notes = list(prepared.notes)
    issuer = authority.current  # one generation for everything below, whatever a rollover does meanwhile
    ca_end = issuer.not_after
    if not_after > ca_end:
        # A certificate cannot outlive its issuer (clients would reject the chain after that).
        not_after = ca_end
        notes.append(f"Validity shortened to end with the issuing CA on {ca_end:%Y-%m-%d}.")
    sans = [_general_name(s) for s in decision.sans]
    csr = prepared.csr
    public_key = csr.public_key
    subject = decision.subject
    template = authority.leaf_template_for(issuer)
    for _attempt in range(3):
        serial = new_serial()
        cert = template.sign(subject=subject, public_key=public_key, sans=sans, ekus=prepared.ekus, serial=serial,
                             not_before=not_before, not_after=not_after, must_staple=decision.must_staple)
        der = cert.public_bytes(Encoding.DER)
        record = CertificateRecord(
            serial=serial_hex(serial),
            issued_at=now,
            not_before=not_before,
            not_after=not_after,
            subject=subject.rfc4514_string(),  # the certificate's: the CSR's, as pki/subjects.py keeps it
            issuer=issuer.issuer_text,
            common_name=csr.common_name,
            sans=tuple(decision.sans),
            profile=prepared.profile,
            key_label=csr.key.label,
            fingerprint_sha256=hashlib.sha256(der).hexdigest(),
            fingerprint_sha1=hashlib.sha1(der).hexdigest(),
            spki_sha256=csr.spki_sha256,
            der=der,
            notify=prepared.notify,
            requester=requester.label,
            extra={"notes": notes},
        )
        try:
            store.insert_certificate(record, audit=issuance_audit(record, client, audit_action, audit_extra),
                                     settles=settles)
        except SerialTakenError:
            continue
        return record
    raise RuntimeError("three random serials in a row were taken")  # pragma: no cover


def issuance_audit(record: CertificateRecord, client: str | None, action: str = "issue",
                   extra: dict | None = None) -> dict:
    """The audit row stored with a new certificate."""
    return {"at": record.issued_at, "action": action, "actor": record.requester, "serial": record.serial,
            "client": client, "detail": {"profile": record.profile, "names": list(record.sans), **(extra or {})}}


def _general_name(text: str) -> x509.GeneralName:
    kind, value = text.split(":", 1)
    if kind == "IP":
        return x509.IPAddress(ipaddress.ip_address(value))
    return x509.DNSName(value)
