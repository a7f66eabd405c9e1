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
from ..accounts import check_domains
from ..ca.authority import Authority, InstancePaths
from ..clock import to_text
from ..config import Config, Secrets
from ..config.devices import DEFAULT, DeviceEndpoint
from ..errors import SERVER_STATE_ERRORS, CAError, CSRParseError, PolicyViolationError, ScopeError
from ..models import CertificateRecord, PendingRequest
from ..notify.webhooks import WebhookError, json_request, post_json
from ..pki.csr import decode_request_bytes, parse_csr
from ..pki.names import request_names
from ..store import CaStore
from . import messages as m
from .ra import RA, current_ra


def challenge_digest(challenge: str) -> str:
    return hashlib.sha256(challenge.encode()).hexdigest()


def create_challenge(store: CaStore, now: dt.datetime, *, hours: float, domains: tuple[str, ...] = (),
                     endpoint: str = DEFAULT, actor: str = "cli:local") -> str:
    """A one-time challenge password, returned once; only its SHA-256 is stored. `domains` are
    checked as a token's are (a name with a space or a wildcard is refused, not stored to match nothing)."""
    domains = check_domains(domains)
    challenge = token_source.token_urlsafe(18)
    expires = now + dt.timedelta(hours=hours)
    store.insert_scep_challenge(
        {"hash": challenge_digest(challenge), "endpoint": endpoint, "domains": domains, "created_at": to_text(now),
         "expires_at": to_text(expires), "created_by": actor},
        audit={"at": now, "action": "scep_challenge_create", "actor": actor,
               "detail": {"endpoint": endpoint, "domains": list(domains), "expires_at": to_text(expires)}})
    return challenge


def challenge_state(row: dict, now: dt.datetime) -> str:
    """A one-time challenge as the admin page and `scep challenge list` show it."""
    if row["used_at"]:
        return "used"
    return "expired" if row["expires_at"] <= to_text(now) else "unused"


def pki_operation(config: Config, store: CaStore, authority: Authority, paths: InstancePaths, secrets: Secrets,
                  der: bytes, client: str | None, now: dt.datetime, endpoint: DeviceEndpoint) -> bytes:
    """The CertRep for a pkiMessage sent to `endpoint`. A message too broken to answer to its
    sender raises messages.ScepError (the web layer answers 400 with the words)."""
    ra = current_ra(config, store, authority, paths, now)
    try:
        message = m.read_message(der)
    except m.ScepError as exc:
        _audit_refusal(store, now, client, endpoint, None, exc.message)
        raise
    try:
        if message.message_type not in (m.PKCS_REQ, m.RENEWAL_REQ, m.CERT_POLL):
            raise m.ScepError(m.BAD_REQUEST, f"{message.name} is not answered here (PKCSReq, RenewalReq and CertPoll "
                              "are).")
        opened = m.open_envelope(message.envelope, ra.key)
        held = store.scep_transaction(endpoint.name, message.transaction_id)
        answer = _held_answer(store, ra, message, opened, held) if held is not None else None
        if answer is not None:
            return answer
        if message.message_type == m.CERT_POLL:
            raise m.ScepError(m.BAD_CERT_ID, f"No request with transactionID {message.transaction_id!r} waits at "
                              f"endpoint {endpoint.name!r}.")
        issued = _enroll(config, store, authority, secrets, endpoint, message, opened, client, now)
    except m.ScepError as exc:
        _audit_refusal(store, now, client, endpoint, message, exc.message)
        return m.cert_rep(message, ra.cert, ra.key, status=m.FAILURE, fail_info=exc.fail_info)
    except (PolicyViolationError, ScopeError):
        # issuance.issue audited the refusal with every reason
        return m.cert_rep(message, ra.cert, ra.key, status=m.FAILURE, fail_info=m.BAD_REQUEST)
    except SERVER_STATE_ERRORS:
        raise  # the store or the issuance log, not the request: HTTP 503, and the device asks again
    except CAError as exc:
        _audit_refusal(store, now, client, endpoint, message, exc.message)
        return m.cert_rep(message, ra.cert, ra.key, status=m.FAILURE, fail_info=m.BAD_REQUEST)
    if isinstance(issued, PendingRequest):
        store.insert_scep_transaction({"endpoint": endpoint.name, "transaction_id": message.transaction_id,
                                       "request_id": issued.id, "signer_key": _key_id(message.signer),
                                       "created_at": to_text(now)})
        return m.cert_rep(message, ra.cert, ra.key, status=m.PENDING)
    return m.cert_rep(message, ra.cert, ra.key, status=m.SUCCESS, cipher=opened.cipher, certificate=issued.certificate)


def _held_answer(store: CaStore, ra: RA, message: m.PkiMessage, opened: m.Opened, held: dict) -> bytes | None:
    """To a CertPoll, or the held request sent again (RFC 8894 3.3.3; scepclient polls so):
    PENDING while an admin has not decided, the certificate once approved, FAILURE once rejected.
    None for a new request that reuses the transactionID (clients derive it from the key, and
    certmonger renews with the same key): it is enrolled afresh."""
    if not hmac.compare_digest(held["signer_key"], _key_id(message.signer)):
        raise m.ScepError(m.BAD_MESSAGE_CHECK, "This transaction was begun with another key: poll with the key and "
                          "certificate that sent the request.")
    row = store.get_request(held["request_id"])
    pending = PendingRequest.from_row(row) if row else None
    waiting = pending is not None and pending.status == "pending"
    sent_again = pending is not None and decode_request_bytes(pending.csr_pem) == opened.content
    if message.message_type != m.CERT_POLL and not (waiting or sent_again):
        return None
    if pending is None or pending.status == "rejected":
        reason = pending.decision_reason if pending else "the request is gone"
        raise m.ScepError(m.BAD_REQUEST, f"Request {held['request_id']} was rejected: {reason}")
    record = store.get_certificate(pending.serial) if pending.serial else None
    if record is None:
        return m.cert_rep(message, ra.cert, ra.key, status=m.PENDING)
    return m.cert_rep(message, ra.cert, ra.key, status=m.SUCCESS, cipher=opened.cipher, certificate=record.certificate)


def _enroll(config: Config, store: CaStore, authority: Authority, secrets: Secrets, endpoint: DeviceEndpoint,
            message: m.PkiMessage, opened: m.Opened, client: str | None,
            now: dt.datetime) -> CertificateRecord | PendingRequest:
    try:
        csr = parse_csr(opened.content).csr  # leniently: strongSwan's attributes come out of SET order
    except CSRParseError:
        raise m.ScepError(m.BAD_REQUEST, "The envelope does not hold a readable certificate request (PKCS#10).") \
            from None
    extra = {"operation": message.name, "cipher": opened.cipher,
             "digest": message.digest, "transaction": message.transaction_id}
    out_of_scope = issuance.HOLD if endpoint.hold_out_of_scope else issuance.REFUSE
    if message.message_type == m.RENEWAL_REQ:
        renewed = _renewed_certificate(store, authority, message.signer, csr, now)
        requester = issuance.Requester(name=endpoint.name, kind="scep", is_admin=True)
        extra["renews"] = renewed
    else:
        if _spki(message.signer.public_key()) != _spki(csr.public_key()):
            raise m.ScepError(m.BAD_MESSAGE_CHECK, "The request is signed with another key than the one it asks a "
                              "certificate for.")
        requester = _challenge_requester(store, secrets, endpoint, csr, message, now)
        if requester.domains != endpoint.domains:  # a one-time challenge's own domains: the admin said which
            out_of_scope = issuance.REFUSE
    request = issuance.IssueRequest(csr=opened.content, profile=endpoint.profile or None, notify=endpoint.notify,
                                    requester=requester, client=client, door="scep", endpoint=endpoint.name)
    return issuance.issue(config, store, authority, request, now, out_of_scope=out_of_scope, audit_extra=extra)


def _challenge_requester(store: CaStore, secrets: Secrets, endpoint: DeviceEndpoint,
                         csr: x509.CertificateSigningRequest, message: m.PkiMessage,
                         now: dt.datetime) -> issuance.Requester:
    try:
        value = csr.attributes.get_attribute_for_oid(AttributeOID.CHALLENGE_PASSWORD).value
        challenge = value.decode() if isinstance(value, bytes) else str(value)
    except (x509.AttributeNotFound, UnicodeDecodeError):
        raise m.ScepError(m.BAD_REQUEST, "The request carries no challenge password (a PKCSReq needs one).") from None
    static = secrets.scep_challenge(endpoint.name)
    if static and hmac.compare_digest(challenge.encode(), static.encode()):
        return _scoped(endpoint.name, endpoint.domains)
    row = store.use_scep_challenge(challenge_digest(challenge), endpoint.name, now, used_by=message.transaction_id)
    if row is None and endpoint.challenge_webhook:
        _ask_webhook(endpoint, secrets, challenge, csr, message)
        return _scoped(f"{endpoint.name} (webhook)", endpoint.domains)
    if row is None:
        raise m.ScepError(m.BAD_REQUEST, "The challenge password is wrong, was used already or has expired.")
    return _scoped(f"{endpoint.name} (one-time challenge)", tuple(row["domains"]) or endpoint.domains)


def _scoped(name: str, domains: tuple[str, ...]) -> issuance.Requester:
    """A device let in by a challenge: names under `domains`, or any the policy allows when none."""
    return issuance.Requester(name=name, kind="scep", is_admin=not domains, domains=domains, allow_ip=not domains)


def _ask_webhook(endpoint: DeviceEndpoint, secrets: Secrets, challenge: str, csr: x509.CertificateSigningRequest,
                 message: m.PkiMessage) -> None:
    """The endpoint's challenge webhook decides (step-ca's SCEPCHALLENGE): a 2xx allows the
    request; anything else, or no answer within 5 s, refuses it with what happened."""
    body, headers = json_request(
        {"endpoint": endpoint.name, "challenge": challenge, "transaction_id": message.transaction_id,
         "subject": csr.subject.rfc4514_string(), "names": sorted(request_names(csr.subject, csr.extensions))},
        "scep-challenge", dict(secrets.scep_webhook_secrets).get(endpoint.name))
    try:
        post_json(endpoint.challenge_webhook, body, headers, timeout=5, ca_file=endpoint.challenge_webhook_ca_file,
                  ca_key="challenge_webhook_ca_file")
    except WebhookError as exc:
        raise m.ScepError(m.BAD_REQUEST, f"The challenge password is not a static or one-time one, and the challenge "
                          f"webhook did not allow it: {exc}.") from None


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


def _key_id(cert: x509.Certificate) -> str:
    return hashlib.sha256(_spki(cert.public_key())).hexdigest()


def _audit_refusal(store: CaStore, now: dt.datetime, client: str | None, endpoint: DeviceEndpoint,
                   message: m.PkiMessage | None, reason: str) -> None:
    detail = {"door": "scep", "endpoint": endpoint.name, "reason": reason}
    if message is not None:
        detail.update(operation=message.name, transaction=message.transaction_id, digest=message.digest)
    store.append_audit(at=now, action="refuse", actor=f"scep:{endpoint.name}", client=client, detail=detail)
