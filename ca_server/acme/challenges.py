"""ACME authorizations and challenges (RFC 8555 7.1.4, 7.5): their JSON, the client's "ready"
(pending -> processing), a validation's outcome carried up to the authorization and the order,
deactivation; and the key authorization both http-01/tls-alpn-01 and dns-01 answers derive from."""

from __future__ import annotations

import datetime as dt
import hashlib

from ..clock import from_text, to_text
from ..config import AcmeConfig, Config
from ..notify import webhooks
from ..store import Store
from .jws import b64encode
from .problems import AcmeProblem, problem_dict
from .urls import AcmeUrls


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


def key_authorization(token: str, thumbprint: str) -> str:
    return f"{token}.{thumbprint}"


def dns01_value(key_auth: str) -> str:
    return b64encode(hashlib.sha256(key_auth.encode()).digest())


def record_outcome(config: Config, store: Store, challenge_id: str, error: dict | None, now: dt.datetime) -> None:
    """The validator's callback: the outcome on the challenge, its authorization and its order; an
    order it made invalid that renewed names still covered by a valid certificate is told to the
    webhooks (a failed automatic renewal)."""
    failed = validation_done(store, challenge_id, error, now)
    if failed is not None:
        webhooks.record_renewal_failure(config, store, failed[1], failed[0], now)


def stale(config: AcmeConfig, store: Store, authz: dict | None, now: dt.datetime) -> list[dict]:
    """The authorization's challenges left `processing` by a worker that stopped (a restart, a
    crash), older than any validation could take: to validate again when the client polls."""
    if authz is None:
        return []
    longest = dt.timedelta(seconds=config.validation_attempts * (config.validation_timeout_seconds * 3
                                                                 + 2 ** config.validation_attempts) + 5)
    return [child for child in store.acme_children(authz["id"])
            if child["status"] == "processing" and child["data"].get("started")
            and from_text(child["data"]["started"]) + longest < now]
