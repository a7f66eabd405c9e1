"""ACME resources (RFC 8555 7) under /acme/: each view checks the signed request, calls one
function of ca_server.acme, and answers JSON with a fresh Replay-Nonce and the index link. Every
error is application/problem+json with an ACME error type."""

from __future__ import annotations

import json

from flask import Blueprint, Response, current_app, g, request

from ..acme import accounts, challenges, jws, orders, state
from ..acme import renewal_info as ari
from ..acme import revocation as acme_revocation
from ..acme.problems import AcmeProblem
from ..acme.state import Authorization, Challenge, Order
from ..acme.urls import AcmeUrls
from ..acme.validation import Validator
from ..errors import CAError
from ..pki.keys import spki_sha256
from .common import client_address, now, own_base_url, services

bp = Blueprint("acme", __name__, url_prefix="/acme")

JOSE = "application/jose+json"
POLL_SECONDS = "1"


def urls() -> AcmeUrls:
    return AcmeUrls(own_base_url())


def validator() -> Validator:
    return current_app.extensions["ca_server_acme_validator"]


def init_acme(app) -> None:
    """The app's validation pool: threads start on the first validation, in the process that
    serves (a forked worker builds its own app)."""
    svc = app.extensions["ca_server"]

    def done(challenge_id: str, error: dict | None) -> None:
        challenges.record_outcome(svc.config, svc.store, challenge_id, error, svc.clock())

    app.extensions["ca_server_acme_validator"] = Validator(svc.config.acme, done)


def respond(body: dict | str | None, status: int = 200, headers: dict | None = None,
            mimetype: str = "application/json") -> Response:
    # Compact JSON: with `indent`, json.dumps leaves its C encoder for the Python one (~0.1 ms
    # an answer, issue 29); clients parse it either way.
    text = "" if body is None else body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
    headers = dict(headers or {})
    nonce = headers.pop("Replay-Nonce", None) or g.get("acme_next_nonce")
    listed = [("Replay-Nonce", nonce or accounts.new_nonce(services().store, now())), ("Cache-Control", "no-store"),
              ("Link", f'<{urls().directory}>;rel="index"'), *headers.items()]
    return Response(text, status=status, headers=listed, mimetype=mimetype)


def problem_response(exc: AcmeProblem) -> Response:
    return respond(exc.as_json(), exc.status, exc.headers, mimetype="application/problem+json")


@bp.errorhandler(CAError)
def _ca_error(exc: CAError):
    if isinstance(exc, AcmeProblem):
        return problem_response(exc)
    return problem_response(AcmeProblem("malformed", exc.message))


@bp.before_request
def _enabled():
    if not services().config.acme.enabled:
        raise AcmeProblem("malformed", "ACME is turned off on this server ([acme] enabled = false).", status=404)
    return None


def signed_request(*, by_key: bool = False) -> jws.SignedRequest:
    """The request's JWS with its form, url and nonce checked (not yet its signature)."""
    if request.mimetype != JOSE:
        raise AcmeProblem("malformed", f"ACME requests are {JOSE}, not {request.mimetype or 'untyped'}.", status=415)
    signed = jws.parse(request.get_data())
    expected = urls().base_url + request.path
    if signed.url != expected:
        raise AcmeProblem("unauthorized", f"The JWS url {signed.url!r} is not this request's URL ({expected}).")
    g.acme_next_nonce = accounts.use_nonce(services().store, signed, now())
    if by_key and signed.jwk is None:
        raise AcmeProblem("malformed", "This request must be signed with a jwk, not a kid.")
    if not by_key and signed.kid is None:
        raise AcmeProblem("malformed", "This request must name its account with kid (the account URL).")
    return signed


def signed_by_account() -> tuple[jws.SignedRequest, state.Account]:
    signed = signed_request()
    return signed, accounts.account_for(services().store, signed, urls().accounts)


# -- directory, nonces ---------------------------------------------------------------------------
@bp.get("/directory")
def directory():
    cfg, u = services().config, urls()
    body = {"newNonce": u.new_nonce, "newAccount": u.new_account, "newOrder": u.new_order,
            "revokeCert": u.revoke_cert, "keyChange": u.key_change, "renewalInfo": u.renewal_info,
            "meta": {"externalAccountRequired": cfg.acme.require_eab, "website": own_base_url(),
                     "profiles": {name: p.description or name for name, p in cfg.profiles.items()}}}
    return respond(body)  # with a nonce, like every ACME answer, so not cacheable


@bp.route("/new-nonce", methods=["HEAD", "GET"])
def new_nonce():
    return respond(None, 200 if request.method == "HEAD" else 204)


# -- accounts ------------------------------------------------------------------------------------
@bp.post("/new-account")
def new_account():
    svc, u = services(), urls()
    signed = signed_request(by_key=True)
    account, created = accounts.create_account(svc.store, signed, urls=u, require_eab=svc.config.acme.require_eab,
                                               client=client_address(), now=now())
    return respond(account_json(account), 201 if created else 200, {"Location": u.account(account.id)})


def account_json(account: state.Account) -> dict:
    body = {"status": account.status, "contact": list(account.contacts), "orders": urls().orders(account.id),
            "createdAt": account.created_at}
    if account.eab_name:
        body["externalAccountBinding"] = {"name": account.eab_name}
    return body


@bp.post("/acct/<account_id>")
def account(account_id: str):
    signed, acct = signed_by_account()
    if acct.id != account_id:
        raise AcmeProblem("unauthorized", "An account can only read or change itself.")
    return respond(account_json(accounts.update_account(services().store, acct, signed, now())))


@bp.post("/acct/<account_id>/orders")
def account_orders(account_id: str):
    _signed, acct = signed_by_account()
    if acct.id != account_id:
        raise AcmeProblem("unauthorized", "An account can only list its own orders.")
    found = services().store.acme_orders_of(acct.id)
    return respond({"orders": [urls().order(o["id"]) for o in found]})


@bp.post("/key-change")
def key_change():
    signed, acct = signed_by_account()
    changed = accounts.change_key(services().store, acct, signed, urls().accounts, now())
    return respond(account_json(changed))


# -- orders, authorizations, challenges ----------------------------------------------------------
@bp.post("/new-order")
def new_order():
    svc = services()
    signed, acct = signed_by_account()
    order = orders.create_order(svc.config, svc.store, acct, accounts.requester(svc.store, acct),
                                signed.json_payload(), now=now(), client=client_address())
    return respond(orders.order_json(order, urls()), 201, {"Location": urls().order(order.id), **_retry_after(order)})


@bp.post("/order/<order_id>")
def order(order_id: str):
    _signed, acct = signed_by_account()
    found = orders.current(services().store, orders.owned(services().store, Order, order_id, acct), now())
    return respond(orders.order_json(found, urls()), headers=_retry_after(found))


@bp.post("/order/<order_id>/finalize")
def finalize(order_id: str):
    svc = services()
    signed, acct = signed_by_account()
    found = orders.current(svc.store, orders.owned(svc.store, Order, order_id, acct), now())
    done = orders.finalize(svc.config, svc.store, svc.authority, found, acct, accounts.requester(svc.store, acct),
                           signed.json_payload(), client=client_address(), now=now())
    return respond(orders.order_json(done, urls()), headers={"Location": urls().order(order_id)})


@bp.post("/authz/<authz_id>")
def authz(authz_id: str):
    svc = services()
    signed, acct = signed_by_account()
    found = orders.current(svc.store, orders.owned(svc.store, Authorization, authz_id, acct), now())
    if not signed.post_as_get:
        payload = signed.json_payload()
        if payload.get("status") != "deactivated":
            raise AcmeProblem("malformed", "An authorization can only be updated to status \"deactivated\".")
        found = challenges.deactivate_authz(svc.store, found, now())
    kids = challenges.challenges_of(svc.store, found)  # read once, for both
    _resume_stale(found, acct, kids)
    return respond(challenges.authz_json(found, kids, urls()), headers=_retry_after(found))


@bp.post("/chall/<challenge_id>")
def challenge(challenge_id: str):
    svc = services()
    signed, acct = signed_by_account()
    found = orders.owned(svc.store, Challenge, challenge_id, acct)
    if not signed.post_as_get:
        signed.json_payload()  # "{}" says: validate now (RFC 8555 7.5.1)
        if challenges.start_challenge(svc.store, found, now()):
            found = state.load(svc.store, Challenge, challenge_id)
            validator().submit(found, acct.thumbprint)
    else:
        _resume_stale(state.load(svc.store, Authorization, found.authz_id), acct)
    found = state.load(svc.store, Challenge, challenge_id)
    headers = {"Link": f'<{urls().authz(found.authz_id)}>;rel="up"', **_retry_after(found)}
    return respond(challenges.challenge_json(found, urls()), headers=headers)


def _retry_after(obj: Order | Authorization | Challenge) -> dict[str, str]:
    return {"Retry-After": POLL_SECONDS} if obj.status in ("pending", "processing") else {}


def _resume_stale(authz_obj: Authorization | None, acct: dict, kids: list[Challenge] | None = None) -> None:
    if authz_obj is not None and kids is None:
        kids = challenges.challenges_of(services().store, authz_obj)
    for stale in challenges.stale(services().config.acme, authz_obj, kids or [], now()):
        validator().submit(stale, acct.thumbprint)


# -- certificates --------------------------------------------------------------------------------
@bp.post("/cert/<serial>")
def certificate(serial: str):
    svc = services()
    _signed, acct = signed_by_account()
    chain = orders.certificate_chain(svc.store, svc.authority, acct, serial.lower())
    return respond(chain, mimetype="application/pem-certificate-chain")


@bp.post("/revoke-cert")
def revoke_cert():
    svc = services()
    if request.mimetype != JOSE:
        raise AcmeProblem("malformed", f"ACME requests are {JOSE}.", status=415)
    peek = jws.parse(request.get_data())
    if peek.jwk is not None:  # signed by the certificate's own key (RFC 8555 7.6)
        signed = signed_request(by_key=True)
        key = jws.parse_jwk(signed.jwk)
        signed.verify(key)
        spki = spki_sha256(key.key)
        acct = None
    else:
        signed, acct = signed_by_account()
        spki = None
    acme_revocation.revoke(svc.config, svc.store, svc.authority, signed.json_payload(), account=acct, key_spki_sha256=spki,
                  client=client_address(), now=now())
    return respond(None, 200)


@bp.get("/renewal-info/<path:cert_id>")
def renewal_info(cert_id: str):
    body = ari.renewal_info(services().config, services().store, cert_id, now())
    return respond(body, headers={"Retry-After": "21600"})  # RFC 9773 4.3: poll again in six hours
