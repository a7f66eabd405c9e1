"""Orders, authorizations and challenges (RFC 8555 7.1.3-7.1.6, 7.4-7.5), finalization through
the issuance pipeline, certificate download and revocation (7.4.2, 7.6), and renewal
information (RFC 9773).

State moves are conditional updates in the store (from the status read, to the next), so two
workers, or a validation finishing while a client polls, never move one object twice."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .. import issuance, policy, revocation
from ..ca.authority import Authority
from ..clock import from_text, to_text
from ..config import Config
from ..errors import CAError, PolicyViolationError
from ..issuance import IssueRequest, Requester
from ..notify.renewal_window import renewal_window
from ..pki.csr import parse_csr
from ..pki.names import parse_ip
from ..pki.serials import serial_hex
from ..store import Store
from .jws import b64decode, b64encode
from .problems import AcmeProblem, problem_dict
from .urls import AcmeUrls

MAX_IDENTIFIERS = 100
CHALLENGE_TYPES_DNS = ("http-01", "dns-01", "tls-alpn-01")
CHALLENGE_TYPES_IP = ("http-01", "tls-alpn-01")  # RFC 8738 7: no dns-01 for IP addresses
RFC5280_REASONS = {0: "unspecified", 1: "keyCompromise", 3: "affiliationChanged", 4: "superseded",
                   5: "cessationOfOperation", 9: "privilegeWithdrawn"}


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
    violations = policy.name_violations(dns, ips, [], config.policy)
    violations += issuance.scope_violations(requester, [f"DNS:{d}" for d in dns] + [f"IP:{ip}" for ip in ips])
    out = []
    for v in violations:
        kind = "ip" if v.subject and parse_ip(v.subject) is not None else "dns"
        out.append(problem_dict("rejectedIdentifier", v.message, {"type": kind, "value": v.subject or ""}))
    return out


def create_order(config: Config, store: Store, account: dict, requester: Requester, payload: dict, *,
                 now: dt.datetime, client: str | None) -> dict:
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
        replaced = _replaced_certificate(store, account, replaces)
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
        rows.append({"id": authz_id, "kind": "authz", "account_id": account["id"], "parent_id": order_id,
                     "status": "pending", "expires_at": expires, "created_at": now,
                     "data": {"identifier": identifier, "wildcard": wildcard, "challenges": challenge_ids,
                              "expires": to_text(expires)}})
        for challenge_id, kind in zip(challenge_ids, types, strict=True):
            rows.append({"id": challenge_id, "kind": "challenge", "account_id": account["id"], "parent_id": authz_id,
                         "status": "pending", "expires_at": expires, "created_at": now,
                         "data": {"type": kind, "token": secrets.token_urlsafe(32), "identifier": identifier,
                                  "wildcard": wildcard, "order_id": order_id}})
        authz_ids.append(authz_id)
    rows.insert(0, {"id": order_id, "kind": "order", "account_id": account["id"], "parent_id": None,
                    "status": "pending", "expires_at": expires, "created_at": now,
                    "data": {"identifiers": identifiers, "authorizations": authz_ids, "profile": profile,
                             "expires": to_text(expires), "certificate": None, "error": None,
                             "replaces": replaces}})
    store.insert_acme_objects(rows)
    return store.acme_object("order", order_id)


def owned(store: Store, kind: str, object_id: str, account: dict) -> dict:
    """An object of this account; another account's reads as absent (RFC 8555 gives no hint)."""
    found = store.acme_object(kind, object_id)
    if found is None or found["account_id"] != account["id"]:
        raise AcmeProblem("malformed", f"There is no {'authorization' if kind == 'authz' else kind} here for this "
                          "account.", status=404)
    return found


def current(store: Store, obj: dict, now: dt.datetime) -> dict:
    """The object with its expiry applied: a pending or ready order (or authorization) past its
    expiry is invalid (RFC 8555 7.1.6)."""
    if obj["status"] in ("pending", "ready", "processing") and obj["expires_at"] and from_text(obj["expires_at"]) <= now:
        data = {**obj["data"], "error": problem_dict("malformed", "It expired before it was completed.")}
        new = "expired" if obj["kind"] == "authz" else "invalid"
        store.move_acme_object(obj["id"], (obj["status"],), new, data, now)
        return store.acme_object(obj["kind"], obj["id"])
    return obj


def order_json(order: dict, urls: AcmeUrls) -> dict:
    data = order["data"]
    body = {"status": order["status"], "expires": data["expires"], "identifiers": data["identifiers"],
            "authorizations": [urls.authz(a) for a in data["authorizations"]], "finalize": urls.finalize(order["id"]),
            "profile": data["profile"]}
    if data.get("certificate"):
        body["certificate"] = urls.certificate(data["certificate"])
    if data.get("error"):
        body["error"] = data["error"]
    if data.get("replaces"):
        body["replaces"] = data["replaces"]
    return body


def challenge_json(challenge: dict, urls: AcmeUrls) -> dict:
    data = challenge["data"]
    body = {"type": data["type"], "url": urls.challenge(challenge["id"]), "status": challenge["status"],
            "token": data["token"]}
    if data.get("validated"):
        body["validated"] = data["validated"]
    if data.get("error"):
        body["error"] = data["error"]
    return body


def authz_json(store: Store, authz: dict, urls: AcmeUrls) -> dict:
    data = authz["data"]
    challenges = [c for c in store.acme_children(authz["id"]) if c["kind"] == "challenge"]
    if authz["status"] == "valid":  # RFC 8555 7.1.4: the challenge that validated it
        challenges = [c for c in challenges if c["status"] == "valid"] or challenges
    body = {"identifier": data["identifier"], "status": authz["status"], "expires": data["expires"],
            "challenges": [challenge_json(c, urls) for c in challenges]}
    if data.get("wildcard"):
        body["wildcard"] = True
    return body


def start_challenge(store: Store, challenge: dict, now: dt.datetime) -> bool:
    """The client says it is ready (RFC 8555 7.5.1): pending -> processing. True when this call
    moved it, so the caller starts the validation (once)."""
    authz = store.acme_object("authz", challenge["parent_id"])
    if authz is None or authz["status"] != "pending" or challenge["status"] != "pending":
        return False
    data = {**challenge["data"], "started": to_text(now)}
    return store.move_acme_object(challenge["id"], ("pending",), "processing", data, now)


def validation_done(store: Store, challenge_id: str, error: dict | None,
                    now: dt.datetime) -> tuple[str, list[str]] | None:
    """Record a validation's outcome on the challenge, its authorization and its order. When it
    made the order invalid: (the order's id, its names as SANs), for renewal-failure notices."""
    challenge = store.acme_object("challenge", challenge_id)
    if challenge is None or challenge["status"] != "processing":
        return None
    authz = store.acme_object("authz", challenge["parent_id"])
    order_id = challenge["data"]["order_id"]
    if error is None:
        store.move_acme_object(challenge_id, ("processing",), "valid",
                               {**challenge["data"], "validated": to_text(now)}, now)
        if authz is not None:
            store.move_acme_object(authz["id"], ("pending",), "valid", authz["data"], now)
        order = store.acme_object("order", order_id)
        if order is not None and order["status"] == "pending":
            statuses = [store.acme_object("authz", a)["status"] for a in order["data"]["authorizations"]]
            if all(s == "valid" for s in statuses):
                store.move_acme_object(order_id, ("pending",), "ready", order["data"], now)
        return None
    store.move_acme_object(challenge_id, ("processing",), "invalid", {**challenge["data"], "error": error}, now)
    if authz is not None:
        store.move_acme_object(authz["id"], ("pending",), "invalid", authz["data"], now)
    order = store.acme_object("order", order_id)
    if order is None:
        return None
    detail = f"The authorization for {challenge['data']['identifier']['value']} failed: {error['detail']}"
    if store.move_acme_object(order_id, ("pending", "ready"), "invalid",
                              {**order["data"], "error": problem_dict("unauthorized", detail)}, now):
        return order_id, [("IP:" if i["type"] == "ip" else "DNS:") + i["value"] for i in order["data"]["identifiers"]]
    return None


def deactivate_authz(store: Store, authz: dict, now: dt.datetime) -> dict:
    """RFC 8555 7.5.2: the client gives up an authorization; its order can no longer be finalized."""
    if authz["status"] not in ("pending", "valid"):
        raise AcmeProblem("malformed", f"An authorization that is {authz['status']} cannot be deactivated.")
    store.move_acme_object(authz["id"], (authz["status"],), "deactivated", authz["data"], now)
    order = store.acme_object("order", authz["parent_id"])
    if order is not None:
        store.move_acme_object(order["id"], ("pending", "ready"), "invalid", {
            **order["data"], "error": problem_dict("unauthorized", "An authorization was deactivated.")}, now)
    return store.acme_object("authz", authz["id"])


def finalize(config: Config, store: Store, authority: Authority, order: dict, account: dict, requester: Requester,
             payload: dict, *, client: str | None, now: dt.datetime) -> dict:
    if order["status"] != "ready":
        raise AcmeProblem("orderNotReady", f"The order is {order['status']}, not ready: "
                          + ("complete its authorizations first." if order["status"] == "pending" else
                             "it cannot be finalized now."))
    csr_text = payload.get("csr")
    if not isinstance(csr_text, str):
        raise AcmeProblem("malformed", "finalize needs the CSR as unpadded base64url DER in \"csr\".")
    der = b64decode(csr_text, "CSR")
    try:
        parsed = parse_csr(der)
    except CAError as exc:
        raise AcmeProblem("badCSR", exc.message) from None
    dns, ips, other = policy.requested_names(parsed)
    asked = {("dns", d) for d in dns} | {("ip", i) for i in ips}
    ordered = {(i["type"], i["value"]) for i in order["data"]["identifiers"]}
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
    request = IssueRequest(csr=der, profile=order["data"]["profile"], validity_days=config.acme.validity_days,
                           notify=tuple(c[7:] for c in account["contacts"]), requester=requester, client=client)
    claimed = False

    def claim_order() -> None:  # the order is the signer's alone from here (RFC 8555 7.1.6: processing)
        nonlocal claimed
        if not store.move_acme_object(order["id"], ("ready",), "processing", order["data"], now):
            raise AcmeProblem("orderNotReady", "The order is being finalized already.")
        claimed = True

    try:
        # Its names were checked against the account's scope when the order was made: refused, never held.
        record = issuance.issue(config, store, authority, request, now, out_of_scope=issuance.REFUSE,
                                before_signing=claim_order,
                                audit_extra={"acme_account": account["id"], "eab": account["eab_name"],
                                             "acme_order": order["id"], "replaces": order["data"].get("replaces")})
    except BaseException as exc:
        if claimed:  # back to ready: the client may finalize again with a better CSR
            store.move_acme_object(order["id"], ("processing",), "ready", order["data"], now)
        if isinstance(exc, PolicyViolationError):
            raise AcmeProblem("badCSR", " ".join(v.message for v in exc.violations)) from None
        if isinstance(exc, CAError) and not isinstance(exc, AcmeProblem):
            raise AcmeProblem("badCSR", exc.message) from None
        raise
    store.move_acme_object(order["id"], ("processing",), "valid", {**order["data"], "certificate": record.serial}, now)
    return store.acme_object("order", order["id"])


def certificate_chain(store: Store, authority: Authority, account: dict, serial: str) -> str:
    order = store.acme_order_of_certificate(serial)
    record = store.get_certificate(serial)
    if order is None or record is None or order["account_id"] != account["id"]:
        raise AcmeProblem("malformed", "There is no certificate here for this account.", status=404)
    return record.pem + authority.chain_for(record.issuer)


def revoke(config: Config, store: Store, authority: Authority, payload: dict, *, account: dict | None,
           key_spki_sha256: str | None, client: str | None, now: dt.datetime) -> None:
    """RFC 8555 7.6: by the account that ordered the certificate, or signed by its own key."""
    text = payload.get("certificate")
    if not isinstance(text, str):
        raise AcmeProblem("malformed", "revokeCert needs the certificate as unpadded base64url DER.")
    try:
        cert = x509.load_der_x509_certificate(b64decode(text, "certificate"))
        serial = serial_hex(cert.serial_number)
    except ValueError:
        raise AcmeProblem("malformed", "The certificate is not DER.") from None
    record = store.get_certificate(serial)
    if record is None or record.der != cert.public_bytes(Encoding.DER):
        raise AcmeProblem("malformed", "This CA did not issue that certificate.", status=404)
    reason_code = payload.get("reason", 0)
    if isinstance(reason_code, bool) or not isinstance(reason_code, int) or reason_code not in RFC5280_REASONS:
        raise AcmeProblem("badRevocationReason", f"Reason {reason_code!r} is not accepted; use one of "
                          f"{', '.join(f'{k} ({v})' for k, v in RFC5280_REASONS.items())}.")
    if account is not None:
        order = store.acme_order_of_certificate(serial)
        if order is None or order["account_id"] != account["id"]:
            raise AcmeProblem("unauthorized", "This account did not order that certificate; sign the request with "
                              "the certificate's key instead.")
        actor = f"acme:{account['id']}"
    else:
        if key_spki_sha256 != record.spki_sha256:
            raise AcmeProblem("unauthorized", "The request is not signed by that certificate's key.")
        actor = f"acme-key:{record.spki_sha256[:16]}"
    if record.revoked_at is not None:
        raise AcmeProblem("alreadyRevoked", f"The certificate was revoked on {record.revoked_at:%Y-%m-%d}.")
    revocation.revoke(config, store, authority, serial, RFC5280_REASONS[reason_code], now, actor=actor, client=client)


def cert_id(cert: x509.Certificate) -> str:
    """RFC 9773 4.1: base64url(AKI keyIdentifier) "." base64url(serial's DER INTEGER content)."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    n = cert.serial_number
    raw = n.to_bytes((n.bit_length() + 8) // 8, "big")  # with a leading 0 when the top bit is set, as DER has
    return f"{b64encode(aki)}.{b64encode(raw)}"


def _serial_of_cert_id(value: object) -> str | None:
    if not isinstance(value, str) or value.count(".") != 1:
        return None
    try:
        _aki, serial = (b64decode(part, "certificate id") for part in value.split("."))
    except AcmeProblem:
        return None
    return serial_hex(int.from_bytes(serial, "big")) if serial else None


def _replaced_certificate(store: Store, account: dict, value: object):
    serial = _serial_of_cert_id(value)
    order = store.acme_order_of_certificate(serial) if serial else None
    return order if order is not None and order["account_id"] == account["id"] else None


def renewal_info(config: Config, store: Store, value: str, now: dt.datetime) -> dict:
    """RFC 9773: when to renew. The window opens when renewal_window_percent of the lifetime is
    left; a revoked certificate should be replaced now."""
    serial = _serial_of_cert_id(value)
    record = store.get_certificate(serial) if serial else None
    if record is None:
        raise AcmeProblem("malformed", "No certificate of this CA has that certificate ID.", status=404)
    if record.revoked_at is not None:
        start, end = now - dt.timedelta(days=1), now
    else:
        start, end = renewal_window(record.not_before, record.not_after, config.acme.renewal_window_percent)
    return {"suggestedWindow": {"start": to_text(start.replace(microsecond=0)),
                                "end": to_text(end.replace(microsecond=0))}}


def key_authorization(token: str, thumbprint: str) -> str:
    return f"{token}.{thumbprint}"


def dns01_value(key_auth: str) -> str:
    return b64encode(hashlib.sha256(key_auth.encode()).digest())
