"""SCEP enrollment (RFC 8894): a PKIOperation in, a CertRep out. A PKCSReq is allowed by its
challenge password (the static one from [scep] challenge_env, or a one-time one from `ca-server scep
challenge create`, consumed on use); a RenewalReq by being signed with a valid certificate this CA
issued, for the same names. Both go through the one issuance path; every refusal is audited with
the reason in words, because the device only ever sees a failInfo code."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets as token_source

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import AttributeOID

from .. import issuance
from ..ca.authority import Authority, InstancePaths
from ..clock import to_text
from ..config import Config, Secrets
from ..errors import CAError, CSRParseError, PolicyViolationError, ScopeError
from ..pki.csr import parse_csr
from ..pki.names import request_names
from ..store import CaStore
from . import messages as m
from .ra import current_ra

ENDPOINT = "default"


def challenge_digest(challenge: str) -> str:
    return hashlib.sha256(challenge.encode()).hexdigest()


def create_challenge(store: CaStore, now: dt.datetime, *, hours: float, domains: tuple[str, ...] = (),
                     endpoint: str = ENDPOINT, actor: str = "cli:local") -> str:
    """A one-time challenge password, returned once; only its SHA-256 is stored."""
    challenge = token_source.token_urlsafe(18)
    expires = now + dt.timedelta(hours=hours)
    store.insert_scep_challenge(
        {"hash": challenge_digest(challenge), "endpoint": endpoint, "domains": domains, "created_at": to_text(now),
         "expires_at": to_text(expires), "created_by": actor},
        audit={"at": now, "action": "scep_challenge_create", "actor": actor,
               "detail": {"endpoint": endpoint, "domains": list(domains), "expires_at": to_text(expires)}})
    return challenge


def pki_operation(config: Config, store: CaStore, authority: Authority, paths: InstancePaths, secrets: Secrets,
                  der: bytes, client: str | None, now: dt.datetime) -> bytes:
    """The CertRep for a pkiMessage. A message too broken to answer to its sender raises
    messages.ScepError (the web layer answers 400 with the words)."""
    ra = current_ra(config, store, authority, paths, now)
    try:
        message = m.read_message(der)
    except m.ScepError as exc:
        _audit_refusal(store, now, client, None, exc.message)
        raise
    try:
        if message.message_type not in (m.PKCS_REQ, m.RENEWAL_REQ):
            raise m.ScepError(m.BAD_REQUEST if message.message_type != m.CERT_POLL else m.BAD_CERT_ID,
                              f"{message.name} is not answered here: no request waits for approval (requests "
                              "outside the policy are refused, not held).")
        opened = m.open_envelope(message.envelope, ra.key)
        certificate = _enroll(config, store, authority, secrets, message, opened, client, now)
    except m.ScepError as exc:
        _audit_refusal(store, now, client, message, exc.message)
        return m.cert_rep(message, ra.cert, ra.key, status=m.FAILURE, fail_info=exc.fail_info)
    except (PolicyViolationError, ScopeError):
        # issuance.issue audited the refusal with every reason
        return m.cert_rep(message, ra.cert, ra.key, status=m.FAILURE, fail_info=m.BAD_REQUEST)
    except CAError as exc:
        _audit_refusal(store, now, client, message, exc.message)
        return m.cert_rep(message, ra.cert, ra.key, status=m.FAILURE, fail_info=m.BAD_REQUEST)
    return m.cert_rep(message, ra.cert, ra.key, status=m.SUCCESS, cipher=opened.cipher, certificate=certificate)


def _enroll(config: Config, store: CaStore, authority: Authority, secrets: Secrets, message: m.PkiMessage,
            opened: m.Opened, client: str | None, now: dt.datetime) -> x509.Certificate:
    try:
        csr = parse_csr(opened.content).csr  # leniently: strongSwan's attributes come out of SET order
    except CSRParseError:
        raise m.ScepError(m.BAD_REQUEST, "The envelope does not hold a readable certificate request (PKCS#10).") \
            from None
    extra = {"door": "scep", "endpoint": ENDPOINT, "operation": message.name, "cipher": opened.cipher,
             "digest": message.digest, "transaction": message.transaction_id}
    if message.message_type == m.RENEWAL_REQ:
        renewed = _renewed_certificate(store, authority, message.signer, csr, now)
        requester = issuance.Requester(name=ENDPOINT, kind="scep", is_admin=True)
        extra["renews"] = renewed
    else:
        if _spki(message.signer.public_key()) != _spki(csr.public_key()):
            raise m.ScepError(m.BAD_MESSAGE_CHECK, "The request is signed with another key than the one it asks a "
                              "certificate for.")
        requester = _challenge_requester(store, secrets, csr, message, now)
    request = issuance.IssueRequest(csr=opened.content, profile=config.scep.profile or None, requester=requester,
                                    client=client)
    record = issuance.issue(config, store, authority, request, now, out_of_scope=issuance.REFUSE,
                            audit_extra=extra)
    return record.certificate


def _challenge_requester(store: CaStore, secrets: Secrets, csr: x509.CertificateSigningRequest,
                         message: m.PkiMessage, now: dt.datetime) -> issuance.Requester:
    try:
        value = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
        challenge = value.decode() if isinstance(value, bytes) else str(value)
    except (x509.AttributeNotFound, UnicodeDecodeError):
        raise m.ScepError(m.BAD_REQUEST, "The request carries no challenge password (a PKCSReq needs one).") from None
    if secrets.scep_challenge and hmac.compare_digest(challenge.encode(), secrets.scep_challenge.encode()):
        return issuance.Requester(name=ENDPOINT, kind="scep", is_admin=True)
    row = store.use_scep_challenge(challenge_digest(challenge), ENDPOINT, now, used_by=message.transaction_id)
    if row is None:
        raise m.ScepError(m.BAD_REQUEST, "The challenge password is wrong, was used already or has expired.")
    domains = tuple(row["domains"])
    return issuance.Requester(name=f"{ENDPOINT} (one-time challenge)", kind="scep", is_admin=not domains,
                              domains=domains, allow_ip=not domains)


def _renewed_certificate(store: CaStore, authority: Authority, signer: x509.Certificate,
                         csr: x509.CertificateSigningRequest, now: dt.datetime) -> str:
    """The serial of the certificate a RenewalReq renews: it signed the request, this CA issued
    it, it is stored, unrevoked and unexpired, and it has the names the request asks for."""
    serial = format(signer.serial_number, "x")
    record = store.get_certificate(serial)
    if record is None or record.certificate != signer or not any(
            gen.cert.subject == signer.issuer for gen in authority.intermediates):
        raise m.ScepError(m.BAD_CERT_ID, "A RenewalReq must be signed with a certificate this CA issued.")
    if record.revoked_at is not None or signer.not_valid_after_utc <= now:
        raise m.ScepError(m.BAD_CERT_ID, "The certificate that signed this RenewalReq is revoked or expired: "
                          "enroll again with a challenge password.")
    if request_names(csr.subject, csr.extensions) != request_names(signer.subject, signer.extensions):
        raise m.ScepError(m.BAD_REQUEST, "A RenewalReq keeps the names of the certificate it renews; send a "
                          "PKCSReq with a challenge password for other names.")
    return serial


def _spki(key) -> bytes:
    return key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)


def _audit_refusal(store: CaStore, now: dt.datetime, client: str | None, message: m.PkiMessage | None,
                   reason: str) -> None:
    detail = {"door": "scep", "endpoint": ENDPOINT, "reason": reason}
    if message is not None:
        detail.update(operation=message.name, transaction=message.transaction_id, digest=message.digest)
    store.append_audit(at=now, action="refuse", actor=f"scep:{ENDPOINT}", client=client, detail=detail)
