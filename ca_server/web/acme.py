"""ACME resources (RFC 8555 7) under /acme/: each resource checks the signed request, calls one
function of ca_server.acme, and answers JSON with a fresh Replay-Nonce and the index link. Every
error is application/problem+json with an ACME error type.

Answered without Flask (issue 29): an order is a dozen requests, each signed, none with a cookie,
a form or a template, and Flask's request context, hooks and response objects were a quarter of
the Python an ACME request ran. The resources read what they need of the WSGI environ (`Call`)
and return an `Answer`; `AcmeDoor` routes, turns errors into problems and adds the headers every
answer of this server carries."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import re
from collections.abc import Callable
from functools import cached_property
from http import HTTPStatus
from typing import NamedTuple

from werkzeug.sansio.utils import get_host

from ..acme import accounts, challenges, jws, orders, state
from ..acme import renewal_info as ari
from ..acme import revocation as acme_revocation
from ..acme.problems import AcmeProblem
from ..acme.state import Authorization, Challenge, Order
from ..acme.urls import AcmeUrls
from ..acme.validation import Validator
from ..errors import SERVER_STATE_ERRORS, CAError
from ..pki.keys import spki_sha256
from ..server.stalled_connections import WAITING
from ..services import Services
from .common import base_url_for
from .errors import INTERNAL_ERROR

log = logging.getLogger("ca_server")

PREFIX = "/acme/"
JOSE = "application/jose+json"
JSON = "application/json"
PROBLEM = "application/problem+json"
POLL_SECONDS = "1"


class Answer(NamedTuple):
    status: int
    body: dict | str | None
    headers: dict[str, str] = {}
    mimetype: str = JSON


class Call:
    """One ACME request, as the resources read it."""

    def __init__(self, environ: dict, services: Services, validator: Validator, nonces: accounts.Nonces,
                 max_bytes: int) -> None:
        self.environ, self.services, self.validator, self.max_bytes = environ, services, validator, max_bytes
        self.nonces = nonces
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        self.path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")
        self.next_nonce: str | None = None
        self.store = services.store
        self.config = services.config

    @cached_property
    def now(self) -> dt.datetime:
        """The request's "now", read once from the services' clock."""
        return self.services.clock()

    @property
    def client(self) -> str | None:
        return self.environ.get("REMOTE_ADDR")

    @cached_property
    def urls(self) -> AcmeUrls:
        """Where this server is, by the rule every page follows (common.base_url_for)."""
        environ = self.environ
        scheme = environ.get("wsgi.url_scheme", "http")
        server = (environ["SERVER_NAME"], int(environ["SERVER_PORT"])) if environ.get("SERVER_NAME") else None
        return AcmeUrls(base_url_for(self.config.server.base_url, scheme,
                                     lambda: get_host(scheme, environ.get("HTTP_HOST"), server)))

    @property
    def mimetype(self) -> str:
        return self.environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()

    @cached_property
    def body(self) -> bytes:
        length = self.environ.get("CONTENT_LENGTH") or "0"
        if not length.isdigit():
            raise AcmeProblem("malformed", "The Content-Length header is not a number.")
        if int(length) > self.max_bytes:
            raise AcmeProblem("malformed", f"The request is larger than the {self.max_bytes} bytes this server "
                              "accepts.", status=413)
        return self.environ["wsgi.input"].read(int(length)) if int(length) else b""

    @cached_property
    def sent(self) -> jws.SignedRequest:
        """The request's JWS as sent (nothing checked yet but its form)."""
        if self.mimetype != JOSE:
            raise AcmeProblem("malformed", f"ACME requests are {JOSE}, not {self.mimetype or 'untyped'}.", status=415)
        return jws.parse(self.body)

    def signed(self, *, by_key: bool = False) -> jws.SignedRequest:
        """The request's JWS with its form, url and nonce checked (not yet its signature)."""
        signed = self.sent
        expected = self.urls.base_url + self.path
        if signed.url != expected:
            raise AcmeProblem("unauthorized", f"The JWS url {signed.url!r} is not this request's URL ({expected}).")
        self.next_nonce = self.nonces.use(self.store, signed, self.now)
        if by_key and signed.jwk is None:
            raise AcmeProblem("malformed", "This request must be signed with a jwk, not a kid.")
        if not by_key and signed.kid is None:
            raise AcmeProblem("malformed", "This request must name its account with kid (the account URL).")
        return signed

    def signed_by_account(self) -> tuple[jws.SignedRequest, state.Account]:
        signed = self.signed()
        return signed, accounts.account_for(self.store, signed, self.urls.accounts)


View = Callable[..., Answer]
ROUTES: list[tuple[re.Pattern[str], dict[str, View]]] = []


def resource(pattern: str, *methods: str) -> Callable[[View], View]:
    """A resource at /acme/`pattern` (its groups are the view's arguments); GET answers HEAD too."""
    def register(view: View) -> View:
        allowed = {m: view for m in methods}
        if "GET" in allowed:
            allowed.setdefault("HEAD", view)
        ROUTES.append((re.compile(PREFIX + pattern), allowed))
        return view
    return register


class AcmeDoor:
    """The WSGI application for every path under /acme/."""

    def __init__(self, services: Services, *, secret: bytes, max_bytes: int,
                 site_headers: Callable[[dict], list[tuple[str, str]]]) -> None:
        self.services, self.max_bytes, self.site_headers = services, max_bytes, site_headers
        self.nonces = accounts.Nonces(secret)

        def done(challenge_id: str, error: dict | None) -> None:
            challenges.record_outcome(services.config, services.store, challenge_id, error, services.clock())

        # Threads start on the first validation, in the process that serves (a forked worker
        # builds its own app, hence its own door).
        self.validator = Validator(services.config.acme, done)

    def __call__(self, environ: dict, start_response):
        call = Call(environ, self.services, self.validator, self.nonces, self.max_bytes)
        try:
            answer = self._dispatch(call)
        except AcmeProblem as exc:
            answer = problem(exc)
        except SERVER_STATE_ERRORS as exc:  # the store or the issuance log, not the request: try again
            answer = problem(AcmeProblem("serverInternal", exc.message, status=503,
                                         headers={"Retry-After": str(getattr(exc, "retry_after", 5))}))
        except CAError as exc:
            answer = problem(AcmeProblem("malformed", exc.message))
        except Exception:
            log.exception("unexpected error on %s %s", call.method, call.path)
            answer = problem(AcmeProblem("serverInternal", INTERNAL_ERROR))
        return self._send(call, answer, start_response)

    def _dispatch(self, call: Call) -> Answer:
        if not call.config.acme.enabled:
            raise AcmeProblem("malformed", "ACME is turned off on this server ([acme] enabled = false).", status=404)
        for pattern, allowed in ROUTES:
            found = pattern.fullmatch(call.path)
            if found is None:
                continue
            if call.method == "OPTIONS":
                return Answer(200, None, {"Allow": ", ".join(sorted({*allowed, "OPTIONS"}))})
            view = allowed.get(call.method)
            if view is None:
                raise AcmeProblem("malformed", "This ACME resource does not accept that method (ACME uses POST, "
                                  "and GET for the directory and nonces).", status=405,
                                  headers={"Allow": ", ".join(sorted(allowed))})
            return view(call, *found.groups())
        raise AcmeProblem("malformed", "There is no ACME resource at this URL.", status=404)

    def _send(self, call: Call, answer: Answer, start_response):
        status, body, extra, mimetype = answer
        # Compact JSON: with `indent`, json.dumps leaves its C encoder for the Python one.
        text = "" if body is None else body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
        data = text.encode()
        extra = dict(extra)
        nonce = extra.pop("Replay-Nonce", None) or call.next_nonce or call.nonces.new(call.now)  # on every answer
        headers = [("Content-Type", mimetype), ("Content-Length", str(len(data))),
                   ("Replay-Nonce", nonce), ("Cache-Control", "no-store"),
                   ("Link", f'<{call.urls.directory}>;rel="index"'), *extra.items(),
                   *self.site_headers(call.environ)]
        start_response(f"{status} {HTTPStatus(status).phrase}", headers)
        return [] if call.method == "HEAD" else [data]


def problem(exc: AcmeProblem) -> Answer:
    return Answer(exc.status, exc.as_json(), exc.headers, PROBLEM)


# -- directory, nonces ---------------------------------------------------------------------------
@resource("directory", "GET")
def directory(call: Call) -> Answer:
    cfg, u = call.config, call.urls
    body = {"newNonce": u.new_nonce, "newAccount": u.new_account, "newOrder": u.new_order,
            "revokeCert": u.revoke_cert, "keyChange": u.key_change, "renewalInfo": u.renewal_info,
            "meta": {"externalAccountRequired": cfg.acme.require_eab, "website": u.base_url,
                     "profiles": {name: p.description or name for name, p in cfg.profiles.items()}}}
    return Answer(200, body)  # with a nonce, like every ACME answer, so not cacheable


@resource("new-nonce", "HEAD", "GET")
def new_nonce(call: Call) -> Answer:
    return Answer(200 if call.method == "HEAD" else 204, None)


# -- accounts ------------------------------------------------------------------------------------
@resource("new-account", "POST")
def new_account(call: Call) -> Answer:
    signed = call.signed(by_key=True)
    account, created = accounts.create_account(call.store, signed, urls=call.urls, require_eab=call.config.acme.require_eab,
                                               client=call.client, now=call.now)
    return Answer(201 if created else 200, account_json(call, account), {"Location": call.urls.account(account.id)})


def account_json(call: Call, account: state.Account) -> dict:
    body = {"status": account.status, "contact": list(account.contacts), "orders": call.urls.orders(account.id),
            "createdAt": account.created_at}
    if account.eab_name:
        body["externalAccountBinding"] = {"name": account.eab_name}
    return body


@resource("acct/([^/]+)", "POST")
def account(call: Call, account_id: str) -> Answer:
    signed, acct = call.signed_by_account()
    if acct.id != account_id:
        raise AcmeProblem("unauthorized", "An account can only read or change itself.")
    return Answer(200, account_json(call, accounts.update_account(call.store, acct, signed, call.now)))


@resource("acct/([^/]+)/orders", "POST")
def account_orders(call: Call, account_id: str) -> Answer:
    _signed, acct = call.signed_by_account()
    if acct.id != account_id:
        raise AcmeProblem("unauthorized", "An account can only list its own orders.")
    return Answer(200, {"orders": [call.urls.order(o["id"]) for o in call.store.acme_orders_of(acct.id)]})


@resource("key-change", "POST")
def key_change(call: Call) -> Answer:
    signed, acct = call.signed_by_account()
    return Answer(200, account_json(call, accounts.change_key(call.store, acct, signed, call.urls.accounts, call.now)))


# -- orders, authorizations, challenges ----------------------------------------------------------
@resource("new-order", "POST")
def new_order(call: Call) -> Answer:
    signed, acct = call.signed_by_account()
    order = orders.create_order(call.config, call.store, acct, accounts.requester(call.store, acct),
                                signed.json_payload(), now=call.now, client=call.client)
    return Answer(201, orders.order_json(order, call.urls), {"Location": call.urls.order(order.id), **_retry_after(order)})


@resource("order/([^/]+)", "POST")
def order(call: Call, order_id: str) -> Answer:
    _signed, acct = call.signed_by_account()
    found = orders.current(call.store, orders.owned(call.store, Order, order_id, acct), call.now)
    if found.status == "processing":  # a finalize whose worker stopped is taken over
        svc = call.services
        found = orders.resume_stale(svc.config, svc.store, svc.authority, found, acct,
                                    accounts.requester(svc.store, acct), client=call.client, now=call.now)
    return Answer(200, orders.order_json(found, call.urls), _retry_after(found))


@resource("order/([^/]+)/finalize", "POST")
def finalize(call: Call, order_id: str) -> Answer:
    svc = call.services
    signed, acct = call.signed_by_account()
    found = orders.current(svc.store, orders.owned(svc.store, Order, order_id, acct), call.now)
    done = orders.finalize(svc.config, svc.store, svc.authority, found, acct, accounts.requester(svc.store, acct),
                           signed.json_payload(), client=call.client, now=call.now)
    return Answer(200, orders.order_json(done, call.urls), {"Location": call.urls.order(order_id)})


@resource("authz/([^/]+)", "POST")
def authz(call: Call, authz_id: str) -> Answer:
    signed, acct = call.signed_by_account()
    found = orders.current(call.store, orders.owned(call.store, Authorization, authz_id, acct), call.now)
    if not signed.post_as_get:
        payload = signed.json_payload()
        if payload.get("status") != "deactivated":
            raise AcmeProblem("malformed", "An authorization can only be updated to status \"deactivated\".")
        found = challenges.deactivate_authz(call.store, found, call.now)
    kids = challenges.challenges_of(call.store, found)  # read once, for both
    _resume_stale(call, found, acct, kids)
    return Answer(200, challenges.authz_json(found, kids, call.urls), _retry_after(found))


@resource("chall/([^/]+)", "POST")
def challenge(call: Call, challenge_id: str) -> Answer:
    signed, acct = call.signed_by_account()
    found = orders.owned(call.store, Challenge, challenge_id, acct)
    if not signed.post_as_get:
        signed.json_payload()  # "{}" says: validate now (RFC 8555 7.5.1)
        started = challenges.start_challenge(call.store, found, call.now)
        validation = call.validator.submit(started, acct.thumbprint) if started is not None else None
        if validation is not None and call.config.acme.validation_wait_ms:
            # The outcome in this answer when it comes soon (a LAN's validation takes milliseconds):
            # the client's next poll finds the authorization settled. Waiting is not work: the
            # request gives its place among `[server] threads` back meanwhile.
            call.validator.wait(validation, call.config.acme.validation_wait_ms / 1000,
                                idle=call.environ.get(WAITING, contextlib.nullcontext))
    else:
        _resume_stale(call, state.load(call.store, Authorization, found.authz_id), acct)
    found = state.load(call.store, Challenge, challenge_id)
    headers = {"Link": f'<{call.urls.authz(found.authz_id)}>;rel="up"', **_retry_after(found)}
    return Answer(200, challenges.challenge_json(found, call.urls), headers)


def _retry_after(obj: Order | Authorization | Challenge) -> dict[str, str]:
    return {"Retry-After": POLL_SECONDS} if obj.status in ("pending", "processing") else {}


def _resume_stale(call: Call, authz_obj: Authorization | None, acct: state.Account,
                  kids: list[Challenge] | None = None) -> None:
    if authz_obj is not None and kids is None:
        kids = challenges.challenges_of(call.store, authz_obj)
    for stale in challenges.stale(call.config.acme, authz_obj, kids or [], call.now):
        call.validator.submit(stale, acct.thumbprint)


# -- certificates --------------------------------------------------------------------------------
@resource("cert/([^/]+)", "POST")
def certificate(call: Call, serial: str) -> Answer:
    svc = call.services
    _signed, acct = call.signed_by_account()
    chain = orders.certificate_chain(svc.store, svc.authority, acct, serial.lower())
    return Answer(200, chain, mimetype="application/pem-certificate-chain")


@resource("revoke-cert", "POST")
def revoke_cert(call: Call) -> Answer:
    svc = call.services
    if call.sent.jwk is not None:  # signed by the certificate's own key (RFC 8555 7.6)
        signed = call.signed(by_key=True)
        key = jws.parse_jwk(signed.jwk)
        signed.verify(key)
        spki = spki_sha256(key.key)
        acct = None
    else:
        signed, acct = call.signed_by_account()
        spki = None
    acme_revocation.revoke(svc.config, svc.store, svc.authority, signed.json_payload(), account=acct,
                           key_spki_sha256=spki, client=call.client, now=call.now)
    return Answer(200, None)


@resource("renewal-info/(.+)", "GET")
def renewal_info(call: Call, cert_id: str) -> Answer:
    body = ari.renewal_info(call.config, call.store, cert_id, call.now)
    return Answer(200, body, {"Retry-After": "21600"})  # RFC 9773 4.3: poll again in six hours
