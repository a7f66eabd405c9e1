"""Records the domain passes around; the store reads and writes them."""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from functools import cached_property

from cryptography import x509

from .clock import from_text, to_text
from .pki.pem import pem_armor


@dataclass(frozen=True)
class CertificateRecord:
    serial: str
    issued_at: dt.datetime
    not_before: dt.datetime
    not_after: dt.datetime
    subject: str
    issuer: str
    common_name: str | None
    sans: tuple[str, ...]
    profile: str
    key_label: str
    fingerprint_sha256: str
    fingerprint_sha1: str
    spki_sha256: str
    der: bytes
    notify: tuple[str, ...] = ()
    requester: str | None = None
    revoked_at: dt.datetime | None = None
    revocation_reason: str | None = None
    superseded_by: str | None = None
    extra: dict = field(default_factory=dict, compare=False)

    def status(self, now: dt.datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if now >= self.not_after:
            return "expired"
        return "valid"

    def days_left(self, now: dt.datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400

    @cached_property
    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.der)

    @cached_property
    def pem(self) -> str:
        return pem_armor(self.der, "CERTIFICATE")

    def as_json(self, now: dt.datetime, chain_pem: str) -> dict:
        """The certificate JSON of CONTRACT.md."""
        data = {
            "serial": self.serial,
            "subject": self.subject,
            "issuer": self.issuer,
            "common_name": self.common_name,
            "sans": list(self.sans),
            "not_before": to_text(self.not_before),
            "not_after": to_text(self.not_after),
            "status": self.status(now),
            "profile": self.profile,
            "fingerprint_sha256": self.fingerprint_sha256,
            "certificate": self.pem,
            "chain": self.pem + chain_pem,
            "notify": list(self.notify),
            "key": self.key_label,
            "days_left": max(0, math.ceil(self.days_left(now))),
            "superseded_by": self.superseded_by,
            "revoked_at": to_text(self.revoked_at) if self.revoked_at else None,
            "revocation_reason": self.revocation_reason,
        }
        return data


def names_key(sans: tuple[str, ...] | list[str]) -> str:
    """The set of names a certificate is for, order- and case-insensitive: two certificates with
    the same key are renewals of one another."""
    return ",".join(sorted({s.lower() for s in sans}))


@dataclass(frozen=True)
class PendingRequest:
    """A request held for an admin's approval (names outside the requester's scope, when
    `[policy] approval_for_other_names = true`)."""

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

    @classmethod
    def from_row(cls, row: dict) -> PendingRequest:
        return cls(
            id=row["id"], created_at=from_text(row["created_at"]), requester=row["requester"],
            requester_email=row["requester_email"], csr_pem=row["csr_pem"], profile=row["profile"],
            validity_days=row["validity_days"], notify=tuple(json.loads(row["notify"])),
            names=tuple(json.loads(row["names"])), reasons=tuple(json.loads(row["reasons"])), status=row["status"],
            decided_at=from_text(row["decided_at"]) if row["decided_at"] else None, decided_by=row["decided_by"],
            decision_reason=row["decision_reason"], serial=row["serial"],
        )
