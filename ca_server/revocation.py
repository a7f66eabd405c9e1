"""Revocation and CRLs (RFC 5280 section 5).

The intermediate's CRL lists revoked leaf certificates, the root's CRL a revoked intermediate.
A CRL is built when something is revoked and by the scheduler before its nextUpdate; serving
one only reads the newest stored copy."""

from __future__ import annotations

import datetime as dt
import typing
from dataclasses import dataclass
from functools import cached_property

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .clock import from_text
from .config import Config
from .errors import AlreadyRevokedError, BadRequestError, CertificateNotFoundError, InstanceError, NotFoundError
from .models import CertificateRecord
from .notify.webhooks import record_revocation
from .pki.extensions import aki_from
from .pki.keys import signature_hash
from .pki.pem import pem_armor
from .pki.serials import serial_hex
from .store import CaStore

if typing.TYPE_CHECKING:  # a type only: the CA package uses this module to publish CRLs
    from .ca.authority import Authority

# RFC 5280 5.3.1 reasons that make sense for a leaf certificate. certificateHold/removeFromCRL
# (temporary holds) are left out on purpose: a revocation here is final.
LEAF_REASONS = (
    "unspecified",
    "keyCompromise",
    "affiliationChanged",
    "superseded",
    "cessationOfOperation",
    "privilegeWithdrawn",
)
CA_REASONS = ("unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded",
              "cessationOfOperation")
REASON_FLAGS = {
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "cACompromise": x509.ReasonFlags.ca_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "privilegeWithdrawn": x509.ReasonFlags.privilege_withdrawn,
}
_REASON_ALIASES = {r.lower(): r for r in LEAF_REASONS + CA_REASONS}
_REASON_ALIASES.update({"key_compromise": "keyCompromise", "cessation_of_operation": "cessationOfOperation",
                        "affiliation_changed": "affiliationChanged", "privilege_withdrawn": "privilegeWithdrawn"})


def parse_reason(text: str | None, allowed: tuple[str, ...] = LEAF_REASONS) -> str:
    """An RFC 5280 reason name, forgiving case ("keycompromise"); BadRequestError otherwise."""
    reason = _REASON_ALIASES.get((text or "unspecified").strip().lower())
    if reason not in allowed:
        raise BadRequestError(
            f"{text!r} is not a revocation reason; use one of: {', '.join(allowed)}.", code="reason_invalid"
        )
    return reason


def revoke(
    config: Config,
    store: CaStore,
    authority: Authority,
    serial: str,
    reason: str,
    now: dt.datetime,
    *,
    actor: str,
    client: str | None = None,
) -> CertificateRecord:
    """Revoke one certificate and publish a new intermediate CRL before returning."""
    reason = parse_reason(reason)
    audit = {"at": now, "action": "revoke", "actor": actor, "serial": serial, "client": client,
             "detail": {"reason": reason}}
    if not store.revoke_certificate(serial, now, reason, audit=audit):
        # The update changes nothing for an unknown serial or an already revoked certificate.
        current = store.get_certificate(serial)
        if current is None:
            raise CertificateNotFoundError(serial, authority.ca_role_of(serial))
        raise AlreadyRevokedError(serial, current.revoked_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
                                  current.revocation_reason or "unspecified")
    record = store.get_certificate(serial, with_renewal=True)
    issuer = authority.by_issuer(record.issuer)
    if authority.can_sign(issuer):  # not an intermediate retired early (`intermediate retire --force`)
        publish_crl(config, store, authority, issuer.slug, now)
    record_revocation(config, store, serial, now)  # chat and webhook receivers hear it on the next pass
    return record


@dataclass(frozen=True)
class PublishedCRL:
    issuer: str
    number: int
    this_update: dt.datetime
    next_update: dt.datetime
    der: bytes

    @property
    def etag(self) -> str:
        return f"{self.issuer}-{self.number}"

    @cached_property
    def pem(self) -> bytes:
        return pem_armor(self.der, "X509 CRL").encode("ascii")


def publish_crl(config: Config, store: CaStore, authority: Authority, issuer: str, now: dt.datetime) -> PublishedCRL:
    """Build, sign and store the next CRL of `issuer`: "root", or an intermediate's slug
    ("intermediate" for the first, "intermediate-N" for a later one), listing what it issued.

    CRL numbers must only grow (5.2.3). They are the time in milliseconds, or the previous number
    plus one when that is larger; the store has the signing done while other publishers of this
    issuer (other processes, other nodes) wait, so a later commit never has a smaller number."""
    this_update = now.replace(microsecond=0)
    hours = config.revocation.crl_validity_hours if issuer != "root" else config.revocation.root_crl_validity_hours
    next_update = this_update + dt.timedelta(hours=hours)
    if issuer != "root":
        gen = authority.by_slug(issuer)
        if gen is None:
            raise NotFoundError(f"There is no intermediate {issuer!r}.")
        entries = [(int(s, 16), from_text(at), reason)
                   for s, at, reason in store.revoked_unexpired(now, authority.issued_by(gen))]
        ca_cert, key = gen.cert, authority.key_for(gen)
    else:
        entries = [(int(r["serial"], 16), from_text(r["revoked_at"]), r["reason"]) for r in store.ca_revocations()]
        ca_cert, key = authority.root, authority.root_key
    revoked = [revoked_entry(serial, at, reason) for serial, at, reason in entries]

    def sign(number: int) -> bytes:
        signed[number] = sign_crl(ca_cert, key, revoked, number, this_update, next_update)
        return signed[number]

    signed: dict[int, bytes] = {}
    number = store.insert_next_crl(issuer, int(now.timestamp() * 1000), sign, this_update, next_update)
    return PublishedCRL(issuer, number, this_update, next_update, signed[number])


def sign_crl(ca_cert: x509.Certificate, key, revoked: list[x509.RevokedCertificate], number: int,
             this_update: dt.datetime, next_update: dt.datetime) -> bytes:
    """A DER CRL. All entries at construction: add_revoked_certificate() copies the builder each
    time, which made a 100,000-entry CRL take 20 s instead of 2."""
    builder = x509.CertificateRevocationListBuilder(
        issuer_name=ca_cert.subject,
        last_update=this_update,
        next_update=next_update,
        extensions=[
            x509.Extension(x509.AuthorityKeyIdentifier.oid, False, aki_from(ca_cert)),
            x509.Extension(x509.CRLNumber.oid, False, x509.CRLNumber(number)),
        ],
        revoked_certificates=revoked,
    )
    return builder.sign(key, signature_hash(key)).public_bytes(Encoding.DER)


def revoked_entry(serial: int, at: dt.datetime, reason: str) -> x509.RevokedCertificate:
    builder = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(at)
    flag = REASON_FLAGS.get(reason)
    if flag is not None:  # 5.3.1: the reasonCode "unspecified" SHOULD be absent
        builder = builder.add_extension(x509.CRLReason(flag), critical=False)
    return builder.build()


class CRLCache:
    """The newest CRL of each issuer, kept in memory per process: serving asks the store only for
    the newest number (a few bytes) and reads the DER (megabytes with many revocations) when that
    number changed. A CRL is built here only when none exists yet or the newest has lapsed."""

    def __init__(self, config: Config, store: CaStore, authority: Authority) -> None:
        self.config, self.store, self.authority = config, store, authority
        self._held: dict[str, PublishedCRL] = {}

    def current(self, issuer: str, now: dt.datetime) -> PublishedCRL:
        held = self._held.get(issuer)
        if held is None or held.number != self.store.latest_crl_number(issuer):
            row = self.store.latest_crl(issuer)
            held = None if row is None else PublishedCRL(
                issuer, row["number"], from_text(row["this_update"]), from_text(row["next_update"]), row["der"])
        if held is None and issuer == "root" and self.authority.root_offline:
            raise NotFoundError("No root CRL has been imported yet: sign one where the root key is "
                                "(`ca-server root sign-crl`) and import it (`ca-server root import-crl FILE`).")
        if held is None or (held.next_update <= now and not (issuer == "root" and self.authority.root_offline)
                            and not (held is not None and self._retired(issuer))):
            # A lapsed root CRL of an offline root is still served: the dashboard says to sign the next;
            # so is the last CRL of an intermediate whose key was destroyed (retired).
            held = publish_crl(self.config, self.store, self.authority, issuer, now)
        self._held[issuer] = held
        return held

    def _retired(self, issuer: str) -> bool:
        gen = self.authority.by_slug(issuer) if issuer != "root" else None
        return gen is not None and not self.authority.can_sign(gen)


def refresh_crls(config: Config, store: CaStore, authority: Authority, now: dt.datetime) -> list[PublishedCRL]:
    """Scheduler job: rebuild each CRL that is missing or within crl_refresh_hours of nextUpdate
    (an intermediate's until it has expired: then every certificate it issued has too)."""
    margin = dt.timedelta(hours=config.revocation.crl_refresh_hours)
    rebuilt = []
    issuers = [gen.slug for gen in authority.intermediates
               if gen.not_after > now and authority.can_sign(gen)] + ["root"]  # not those retired
    for issuer in issuers:
        if issuer == "root" and authority.root_offline:
            continue  # signed where the root key is, and imported (offline_root.py)
        row = store.latest_crl(issuer, with_der=False)
        if issuer == "root":
            margin_for = min(margin, dt.timedelta(hours=config.revocation.root_crl_validity_hours / 2))
        else:
            margin_for = margin
        if row is None or from_text(row["next_update"]) - now <= margin_for:
            rebuilt.append(publish_crl(config, store, authority, issuer, now))
    return rebuilt


def revoke_intermediate(store: CaStore, authority: Authority, config: Config, reason: str, now: dt.datetime,
                        actor: str, generation: int | None = None) -> PublishedCRL:
    """Put an intermediate (default: the issuing one) on the root's CRL, after a compromise."""
    reason = parse_reason(reason, CA_REASONS)
    gen = authority.current if generation is None else authority.by_number(generation)
    if gen is None:
        raise NotFoundError(f"There is no intermediate {generation}: see `ca-server intermediate list`.")
    serial = serial_hex(gen.cert.serial_number)
    if authority.root_offline:
        raise InstanceError("The root key is offline: revoke the intermediate where it is, with `ca-server root "
                            f"sign-crl --root-dir DIR --revoke {serial}:{reason}`, "
                            "and import the CRL here (`ca-server root import-crl FILE`).")
    if not store.revoke_ca(serial, now, reason, audit={"at": now, "action": "revoke_ca", "actor": actor,
                                                       "serial": serial, "detail": {"reason": reason,
                                                                                    "generation": gen.number}}):
        earlier = next(r for r in store.ca_revocations() if r["serial"] == serial)
        raise AlreadyRevokedError(serial, earlier["revoked_at"], earlier["reason"])
    return publish_crl(config, store, authority, "root", now)
