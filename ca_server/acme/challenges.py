"""ACME authorizations and challenges (RFC 8555 7.1.4, 7.5): their JSON, the client's "ready"
(pending -> processing), a validation's outcome carried up to the authorization and the order,
deactivation; and the key authorization both http-01/tls-alpn-01 and dns-01 answers derive from."""

from __future__ import annotations

import datetime as dt
import hashlib

from ..clock import from_text, to_text
from ..config import AcmeConfig, Config
from ..notify import webhooks
from ..store import CaStore
from . import state
from .jws import b64encode
from .problems import AcmeProblem, problem_dict
from .state import Authorization, Challenge, Order
from .urls import AcmeUrls


def challenge_json(challenge: Challenge, urls: AcmeUrls) -> dict:
    body = {"type": challenge.type, "url": urls.challenge(challenge.id), "status": challenge.status,
            "token": challenge.token}
    if challenge.validated:
        body["validated"] = challenge.validated
    if challenge.error:
        body["error"] = challenge.error
    return body


def challenges_of(store: CaStore, authz: Authorization) -> list[Challenge]:
    return [c for c in state.children(store, authz.id) if isinstance(c, Challenge)]


def authz_json(authz: Authorization, challenges: list[Challenge], urls: AcmeUrls) -> dict:
    if authz.status == "valid":  # RFC 8555 7.1.4: the challenge that validated it
        challenges = [c for c in challenges if c.status == "valid"] or challenges
    body = {"identifier": authz.identifier.to_json(), "status": authz.status, "expires": authz.expires,
            "challenges": [challenge_json(c, urls) for c in challenges]}
    if authz.wildcard:
        body["wildcard"] = True
    return body


def start_challenge(store: CaStore, challenge: Challenge, now: dt.datetime) -> Challenge | None:
    """The client says it is ready (RFC 8555 7.5.1): pending -> processing. The moved challenge
    when this call moved it, so the caller starts the validation (once); else None."""
    if challenge.status != "pending":
        return None
    authz = state.load(store, Authorization, challenge.authz_id)
    if authz is None or authz.status != "pending":
        return None
    return state.move(store, challenge, "processing", now, started=to_text(now))


def validation_done(store: CaStore, challenge_id: str, error: dict | None,
                    now: dt.datetime) -> tuple[str, list[str]] | None:
    """Record a validation's outcome on the challenge, its authorization and its order, in one
    transaction: a client never reads the authorization valid while its order is still pending
    (certbot finalizes as soon as its authorizations read valid, and got orderNotReady), and a
    worker that stops halfway leaves the challenge processing, to be validated again (stale()),
    not an order pending for ever behind valid authorizations. When it made the order invalid:
    (the order's id, its names as SANs), for renewal-failure notices."""
    with store.write():
        return _record_validation(store, challenge_id, error, now)


def _record_validation(store: CaStore, challenge_id: str, error: dict | None,
                       now: dt.datetime) -> tuple[str, list[str]] | None:
    challenge = state.load(store, Challenge, challenge_id)
    if challenge is None or challenge.status != "processing":
        return None
    authz = state.load(store, Authorization, challenge.authz_id)
    if error is None:
        state.move(store, challenge, "valid", now, validated=to_text(now))
        moved = state.move(store, authz, "valid", now) if authz is not None and authz.status == "pending" else None
        order = state.load(store, Order, challenge.order_id)
        if order is not None and order.status == "pending":
            authorizations = [moved if moved is not None and a == moved.id else state.load(store, Authorization, a)
                              for a in order.authorizations]
            if all(a is not None and a.status == "valid" for a in authorizations):
                state.move(store, order, "ready", now)
        return None
    state.move(store, challenge, "invalid", now, error=error)
    if authz is not None and authz.status == "pending":
        state.move(store, authz, "invalid", now)
    order = state.load(store, Order, challenge.order_id)
    if order is None or order.status not in ("pending", "ready"):
        return None
    detail = f"The authorization for {challenge.identifier.value} failed: {error['detail']}"
    if state.move(store, order, "invalid", now, error=problem_dict("unauthorized", detail)):
        return order.id, [i.san for i in order.identifiers]
    return None


def deactivate_authz(store: CaStore, authz: Authorization, now: dt.datetime) -> Authorization:
    """RFC 8555 7.5.2: the client gives up an authorization; its order can no longer be finalized."""
    if authz.status not in ("pending", "valid"):
        raise AcmeProblem("malformed", f"An authorization that is {authz.status} cannot be deactivated.")
    with store.write():  # the order is never read ready behind a deactivated authorization
        state.move(store, authz, "deactivated", now)
        order = state.load(store, Order, authz.order_id)
        if order is not None and order.status in ("pending", "ready"):
            state.move(store, order, "invalid", now,
                       error=problem_dict("unauthorized", "An authorization was deactivated."))
    return state.load(store, Authorization, authz.id)


def key_authorization(token: str, thumbprint: str) -> str:
    return f"{token}.{thumbprint}"


def dns01_value(key_auth: str) -> str:
    return b64encode(hashlib.sha256(key_auth.encode()).digest())


def record_outcome(config: Config, store: CaStore, challenge_id: str, error: dict | None, now: dt.datetime) -> None:
    """The validator's callback: the outcome on the challenge, its authorization and its order; an
    order it made invalid that renewed names still covered by a valid certificate is told to the
    webhooks (a failed automatic renewal)."""
    failed = validation_done(store, challenge_id, error, now)
    if failed is not None:
        webhooks.record_renewal_failure(config, store, failed[1], failed[0], now)


def stale(config: AcmeConfig, authz: Authorization | None, challenges: list[Challenge],
          now: dt.datetime) -> list[Challenge]:
    """The authorization's challenges (`challenges`) left `processing` by a worker that stopped (a
    restart, a crash), older than any validation could take: to validate again when the client polls."""
    if authz is None:
        return []
    longest = dt.timedelta(seconds=config.validation_attempts * (config.validation_timeout_seconds * 3
                                                                 + 2 ** config.validation_attempts) + 5)
    return [child for child in challenges if child.status == "processing" and child.started
            and from_text(child.started) + longest < now]
