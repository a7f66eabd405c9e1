"""Orders, authorizations and challenges (RFC 8555 7.1.3-7.1.6, 7.4-7.5), finalization through
the issuance pipeline, certificate download and revocation (7.4.2, 7.6), and renewal
information (RFC 9773).

State moves are conditional updates in the store (from the status read, to the next), so two
workers, or a validation finishing while a client polls, never move one object twice."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import secrets

from .. import issuance, policy
from ..ca.authority import Authority
from ..clock import from_text, to_text
from ..config import Config
from ..errors import SERVER_STATE_ERRORS, CAError, PolicyViolationError
from ..issuance import IssueRequest, Requester
from ..pki.csr import parse_csr
from ..pki.names import parse_ip
from ..store import CaStore, Settlement
from . import state
from .jws import b64decode, b64encode
from .problems import AcmeProblem, problem_dict
from .renewal_info import replaced_certificate
from .state import Account, Authorization, Order, T
from .urls import AcmeUrls

MAX_IDENTIFIERS = 100
CHALLENGE_TYPES_DNS = ("http-01", "dns-01", "tls-alpn-01")
CHALLENGE_TYPES_IP = ("http-01", "tls-alpn-01")  # RFC 8738 7: no dns-01 for IP addresses
# A finalize's claim older than this is one whose worker stopped: twice the longest the store
# waits for its write lock (store/base.py BUSY_TIMEOUT_MS), and well within certbot's 90 s of polling.
CLAIM_STALE = dt.timedelta(seconds=60)

log = logging.getLogger(__name__)


def _identifiers(payload: dict) -> list[dict]:
    value = payload.get("identifiers")
    if not isinstance(value, list) or not value:
        raise AcmeProblem("malformed", "newOrder needs a non-empty list of identifiers.")
    if len(value) > MAX_IDENTIFIERS:
        raise AcmeProblem("rejectedIdentifier", f"At most {MAX_IDENTIFIERS} identifiers fit in one order.")
    out, seen = [], set()
    for item in value:
        if not isinstance(item, dict) or not isinstance(item.get("type"), str) or not isinstance(item.get("value"), str):
            raise AcmeProblem("malformed", "Each identifier is an object with a type and a value.")
        kind, text = item["type"], item["value"].strip()
        if kind == "dns":
            text = text.lower().rstrip(".")
        elif kind == "ip":
            ip = parse_ip(text)
            if ip is None:
                raise AcmeProblem("malformed", f"{text!r} is not an IP address.")
            text = str(ip)
        else:
            raise AcmeProblem("unsupportedIdentifier", f"Identifiers of type {kind!r} are not supported; use dns or ip.")
        if (kind, text) not in seen:
            seen.add((kind, text))
            out.append({"type": kind, "value": text})
    return out


def identifier_problems(config: Config, requester: Requester, identifiers: list[dict]) -> list[dict]:
    """What the policy and the account's scope refuse, one subproblem per identifier, in the
    same words as the form and the API."""
    dns = [i["value"] for i in identifiers if i["type"] == "dns"]
    ips = [i["value"] for i in identifiers if i["type"] == "ip"]
    # An address sent as a DNS name (lego 4.9 does so): said as such, not as a DNS name with an
    # all-digit last label, and its subproblem keeps the type the client sent.
    addresses = [d for d in dns if parse_ip(d) is not None]
    out = [problem_dict("rejectedIdentifier", f'"{d}" is an IP address sent as a DNS name: order it as an '
                        'identifier of type "ip" (RFC 8738), or use a client that does.', {"type": "dns", "value": d})
           for d in addresses]
    dns = [d for d in dns if d not in addresses]
    violations = policy.name_violations(dns, ips, [], config.policy)
    violations += issuance.scope_violations(requester, [f"DNS:{d}" for d in dns] + [f"IP:{ip}" for ip in ips])
    for v in violations:
        kind = "ip" if v.subject and parse_ip(v.subject) is not None else "dns"
        out.append(problem_dict("rejectedIdentifier", v.message, {"type": kind, "value": v.subject or ""}))
    return out


def create_order(config: Config, store: CaStore, account: Account, requester: Requester, payload: dict, *,
                 now: dt.datetime, client: str | None) -> Order:
    identifiers = _identifiers(payload)
    if "notBefore" in payload or "notAfter" in payload:
        raise AcmeProblem("malformed", "notBefore and notAfter are not supported: the validity is "
                          f"{config.acme.validity_days} days from issuance.")
    profile = payload.get("profile") or config.acme.default_profile or config.policy.default_profile
    if not isinstance(profile, str) or profile not in config.profiles:
        raise AcmeProblem("invalidProfile" if isinstance(profile, str) else "malformed",
                          f"There is no profile {profile!r}; the directory's meta.profiles lists them.")
    replaces = payload.get("replaces")
    if replaces is not None:
        replaced = replaced_certificate(store, account, replaces)
        if replaced is None:
            raise AcmeProblem("malformed", "replaces names no certificate this account ordered.")
    problems = identifier_problems(config, requester, identifiers)
    if problems:
        detail = problems[0]["detail"] if len(problems) == 1 else \
            f"{len(problems)} identifiers are refused: " + " ".join(p["detail"] for p in problems)
        store.append_audit(at=now, action="refuse", actor=requester.label, client=client,
                           detail={"codes": ["acme_rejectedIdentifier"],
                                   "names": [i["value"] for i in identifiers]})
        raise AcmeProblem("rejectedIdentifier", detail, subproblems=problems)
    expires = now + dt.timedelta(hours=config.acme.order_lifetime_hours)
    order_id = secrets.token_urlsafe(12)
    rows, authz_ids = [], []
    for ident in identifiers:
        authz_id = secrets.token_urlsafe(12)
        wildcard = ident["type"] == "dns" and ident["value"].startswith("*.")
        types = ("dns-01",) if wildcard else CHALLENGE_TYPES_DNS if ident["type"] == "dns" else CHALLENGE_TYPES_IP
        challenge_ids = [secrets.token_urlsafe(12) for _ in types]
        identifier = {"type": ident["type"], "value": ident["value"][2:] if wildcard else ident["value"]}
        rows.append({"id": authz_id, "kind": "authz", "account_id": account.id, "parent_id": order_id,
                     "status": "pending", "expires_at": expires, "created_at": now,
                     "data": {"identifier": identifier, "wildcard": wildcard, "challenges": challenge_ids,
                              "expires": to_text(expires)}})
        for challenge_id, kind in zip(challenge_ids, types, strict=True):
            rows.append({"id": challenge_id, "kind": "challenge", "account_id": account.id, "parent_id": authz_id,
                         "status": "pending", "expires_at": expires, "created_at": now,
                         "data": {"type": kind, "token": secrets.token_urlsafe(32), "identifier": identifier,
                                  "wildcard": wildcard, "order_id": order_id}})
        authz_ids.append(authz_id)
    rows.insert(0, {"id": order_id, "kind": "order", "account_id": account.id, "parent_id": None,
                    "status": "pending", "expires_at": expires, "created_at": now,
                    "data": {"identifiers": identifiers, "authorizations": authz_ids, "profile": profile,
                             "expires": to_text(expires), "certificate": None, "error": None,
                             "replaces": replaces}})
    store.insert_acme_objects(rows)
    return state.load(store, Order, order_id)


def owned(store: CaStore, cls: type[T], object_id: str, account: Account) -> T:
    """An object of this account; another account's reads as absent (RFC 8555 gives no hint)."""
    found = state.load(store, cls, object_id)
    if found is None or found.account_id != account.id:
        raise AcmeProblem("malformed", f"There is no {'authorization' if cls.kind == 'authz' else cls.kind} here for "
                          "this account.", status=404)
    return found


def current(store: CaStore, obj: T, now: dt.datetime) -> T:
    """The object with its expiry applied: a pending or ready order (or authorization) past its
    expiry is invalid (RFC 8555 7.1.6); an authorization, expired."""
    if obj.status in ("pending", "ready", "processing") and obj.expired(now):
        to = "expired" if isinstance(obj, Authorization) else "invalid"
        state.move(store, obj, to, now, error=problem_dict("malformed", "It expired before it was completed."))
        return state.load(store, type(obj), obj.id)
    return obj


def order_json(order: Order, urls: AcmeUrls) -> dict:
    body = {"status": order.status, "expires": order.expires, "identifiers": [i.to_json() for i in order.identifiers],
            "authorizations": [urls.authz(a) for a in order.authorizations], "finalize": urls.finalize(order.id),
            "profile": order.profile}
    if order.certificate:
        body["certificate"] = urls.certificate(order.certificate)
    if order.error:
        body["error"] = order.error
    if order.replaces:
        body["replaces"] = order.replaces
    return body


def finalize(config: Config, store: CaStore, authority: Authority, order: Order, account: Account, requester: Requester,
             payload: dict, *, client: str | None, now: dt.datetime) -> Order:
    if order.status != "ready":
        raise AcmeProblem("orderNotReady", f"The order is {order.status}, not ready: "
                          + ("complete its authorizations first." if order.status == "pending" else
                             "it cannot be finalized now."))
    csr_text = payload.get("csr")
    if not isinstance(csr_text, str):
        raise AcmeProblem("malformed", "finalize needs the CSR as unpadded base64url DER in \"csr\".")
    return _sign(config, store, authority, order, account, requester, b64decode(csr_text, "CSR"),
                 client=client, now=now)


def resume_stale(config: Config, store: CaStore, authority: Authority, order: Order, account: Account,
                 requester: Requester, *, client: str | None, now: dt.datetime) -> Order:
    """An order left processing by a finalize whose worker stopped between its claim and the
    certificate's commit (a crash, a kill: the certificate and the order's "valid" are one
    transaction, so nothing was stored), signed now from the CSR the claim kept, when the client
    polls. Only past CLAIM_STALE: no finalize that is still running takes that long. A CSR the
    policy refuses by now makes the order invalid, with the reason."""
    if (order.status != "processing" or order.certificate or not order.claimed or not order.csr
            or from_text(order.claimed) + CLAIM_STALE > now):
        return order
    ready = state.move(store, order, "ready", now, claimed=None, csr=None)
    if ready is None:  # another request took it over first
        return state.load(store, Order, order.id)  # type: ignore[return-value]
    log.warning("ACME order %s: the finalize claimed at %s never finished (its worker stopped); "
                "signing it again from its CSR", order.id, order.claimed)
    try:
        return _sign(config, store, authority, ready, account, requester, b64decode(order.csr, "CSR"),
                     client=client, now=now, resumed=True)
    except AcmeProblem as exc:
        current_order = state.load(store, Order, order.id)
        if exc.kind == "orderNotReady" or current_order is None or current_order.status != "ready":
            return current_order  # type: ignore[return-value]  # a finalize of the client's came first
        return state.move(store, current_order, "invalid", now, error=problem_dict(exc.kind, exc.detail)) or state.load(
            store, Order, order.id)  # type: ignore[return-value]
    except SERVER_STATE_ERRORS:  # the store or the log failed (a 503): the stale claim again, for the next poll
        current_order = state.load(store, Order, order.id)
        if current_order is not None and current_order.status == "ready":
            state.move(store, current_order, "processing", now, claimed=order.claimed, csr=order.csr)
        raise


def _sign(config: Config, store: CaStore, authority: Authority, order: Order, account: Account, requester: Requester,
          der: bytes, *, client: str | None, now: dt.datetime, resumed: bool = False) -> Order:
    try:
        parsed = parse_csr(der)
    except CAError as exc:
        raise AcmeProblem("badCSR", exc.message) from None
    dns, ips, other = policy.requested_names(parsed)
    asked = {("dns", d) for d in dns} | {("ip", i) for i in ips}
    ordered = {(i.type, i.value) for i in order.identifiers}
    if asked != ordered or other:
        missing = sorted(v for _, v in ordered - asked)
        extra = sorted(v for _, v in asked - ordered) + list(other)
        words = []
        if missing:
            words.append(f"missing {', '.join(missing)}")
        if extra:
            words.append(f"not in the order: {', '.join(extra)}")
        raise AcmeProblem("badCSR", "The CSR's names must be exactly the order's identifiers (" + "; ".join(words)
                          + ").")
    request = IssueRequest(csr=der, profile=order.profile, validity_days=config.acme.validity_days,
                           notify=account.mail_to, requester=requester, client=client, door="acme")
    processing: Order | None = None

    def claim_order() -> None:  # the order is the signer's alone from here (RFC 8555 7.1.6: processing)
        nonlocal processing
        processing = state.move(store, order, "processing", now, claimed=to_text(now), csr=b64encode(der))
        if processing is None:
            raise AcmeProblem("orderNotReady", "The order is being finalized already.")

    # The order becomes valid in the certificate's own transaction: no stop between the two
    # leaves a stored certificate behind an order in processing.
    settles = Settlement("acme_order", order.id, order.data())
    audit = {"acme_account": account.id, "eab": account.eab_name, "acme_order": order.id, "replaces": order.replaces}
    if resumed:
        audit["resumed_finalize"] = True
    try:
        # Its names were checked against the account's scope when the order was made: refused, never held.
        record = issuance.issue(config, store, authority, request, now, out_of_scope=issuance.REFUSE,
                                before_signing=claim_order, settles=settles, audit_extra=audit)
    except BaseException as exc:
        if processing is not None:  # back to ready: the client may finalize again with a better CSR
            state.move(store, processing, "ready", now, claimed=None, csr=None)
        if isinstance(exc, PolicyViolationError):
            raise AcmeProblem("badCSR", " ".join(v.message for v in exc.violations)) from None
        if isinstance(exc, CAError) and not isinstance(exc, (AcmeProblem, *SERVER_STATE_ERRORS)):
            raise AcmeProblem("badCSR", exc.message) from None
        raise  # the store's or the log's failure is the server's, not the CSR's (a 503)
    if settles.applied:
        return dataclasses.replace(processing, status="valid", certificate=record.serial, claimed=None, csr=None)
    return state.load(store, Order, order.id)  # type: ignore[return-value]  # it expired meanwhile


def certificate_chain(store: CaStore, authority: Authority, account: Account, serial: str) -> str:
    order = state.order_of_certificate(store, serial)
    record = store.get_certificate(serial)
    if order is None or record is None or order.account_id != account.id:
        raise AcmeProblem("malformed", "There is no certificate here for this account.", status=404)
    return record.pem + authority.chain_for(record.issuer)


