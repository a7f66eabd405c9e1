"""ACME accounts (RFC 8555 7.3): creation with an optional External Account Binding, lookup by
key or URL, contact updates, deactivation, key rollover; and nonces (7.2): any worker or node
accepts a nonce another one made, once, and a restart forgets none."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import json
import secrets

from ..accounts import check_domains, check_name
from ..clock import to_text
from ..emails import email_problem, normalize_email
from ..errors import BadRequestError, NotFoundError
from ..issuance import Requester
from ..store import CaStore
from . import jws
from .jws import PublicJWK, SignedRequest
from .problems import AcmeProblem
from .state import Account, account_by_thumbprint
from .state import account as load_account

NONCE_LIFETIME = dt.timedelta(hours=1)
NONCE_SKEW = dt.timedelta(minutes=5)  # between the clocks of several nodes
MAX_CONTACTS = 10
_STAMP, _RANDOM, _TAG = 5, 11, 12  # bytes of a nonce: when it was made, chance, its MAC


class Nonces:
    """Replay-Nonce values (RFC 8555 6.5) that cost no write to hand out: each says when it was
    made and carries a MAC under a key derived from the instance's secret_key, which every worker
    and node shares. Using one records it in the store, where a second use, on any node, finds it;
    the record goes once the nonce is past its lifetime, when the MAC'd time refuses it anyway.
    (Before, each nonce handed out was a row written and each use two more statements: a write
    for every ACME answer, issue 29.)"""

    def __init__(self, secret: bytes | str) -> None:
        secret = secret.encode() if isinstance(secret, str) else secret
        self._key = hmac.new(secret, b"ca-server ACME nonces", hashlib.sha256).digest()

    def _tag(self, raw: bytes) -> bytes:
        return hmac.new(self._key, raw, hashlib.sha256).digest()[:_TAG]

    def new(self, now: dt.datetime) -> str:
        raw = int(now.timestamp()).to_bytes(_STAMP, "big") + secrets.token_bytes(_RANDOM)
        return jws.b64encode(raw + self._tag(raw))

    def key(self, nonce: str) -> bytes | None:
        """What the store records of a nonce this server made: when, then chance (16 bytes; keys
        sort in the order their nonces were made). None when this server did not make it."""
        try:
            data = jws.b64decode(nonce, "nonce")
        except AcmeProblem:
            return None
        key, tag = data[:_STAMP + _RANDOM], data[_STAMP + _RANDOM:]
        if len(data) != _STAMP + _RANDOM + _TAG or not hmac.compare_digest(tag, self._tag(key)):
            return None
        return key

    def use(self, store: CaStore, signed: SignedRequest, now: dt.datetime) -> str:
        """Consume the request's nonce; returns the next one for the answer's Replay-Nonce, also
        when this one was bad (the client retries with it)."""
        following = self.new(now)
        key = self.key(signed.nonce)
        fresh = key is not None and now - NONCE_LIFETIME < _made(key) <= now + NONCE_SKEW
        if not fresh or not store.use_nonce(key, self.key_bound(now - NONCE_LIFETIME - NONCE_SKEW)):
            raise AcmeProblem("badNonce", "The nonce is unknown, used already or expired; retry with the nonce in "
                              "this response's Replay-Nonce header.", headers={"Replay-Nonce": following})
        return following

    @staticmethod
    def key_bound(made: dt.datetime) -> bytes:
        """Every key below this one is of a nonce made before `made`."""
        return int(made.timestamp()).to_bytes(_STAMP, "big")


def _made(key: bytes) -> dt.datetime:
    return dt.datetime.fromtimestamp(int.from_bytes(key[:_STAMP], "big"), dt.UTC)


def account_id_from_kid(kid: str, accounts_url: str) -> str:
    prefix = accounts_url + "/"
    if not kid.startswith(prefix) or "/" in kid[len(prefix):] or not kid[len(prefix):]:
        raise AcmeProblem("accountDoesNotExist", "The kid is not an account URL of this server.")
    return kid[len(prefix):]


def account_for(store: CaStore, signed: SignedRequest, accounts_url: str) -> Account:
    """The valid account that signed this kid-request; the signature is verified here."""
    account = load_account(store, account_id_from_kid(signed.kid, accounts_url))
    if account is None:
        raise AcmeProblem("accountDoesNotExist", "There is no account at this kid; create one with newAccount.")
    signed.verify(jws.stored_jwk(account.jwk))
    if account.status != "valid":
        raise AcmeProblem("unauthorized", f"This account is {account.status}; create a new account to go on.")
    return account


def requester(store: CaStore, account: Account) -> Requester:
    """The account as the issuance pipeline sees it: bound to its EAB key's domains, if any."""
    eab = store.eab_key(name=account.eab_name) if account.eab_name else None
    if eab is not None and eab["revoked_at"]:
        raise AcmeProblem("unauthorized", f"The external account key {eab['name']!r} this account was bound with "
                          "was revoked; ask the CA's operator for a new one.")
    if eab is None or not eab["domains"]:
        return Requester(name=account.id, kind="acme", is_admin=True, allow_ip=eab["allow_ip"] if eab else True)
    return Requester(name=account.id, kind="acme", is_admin=False, domains=eab["domains"],
                     allow_ip=eab["allow_ip"])


def check_contacts(value: object) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        raise AcmeProblem("malformed", "contact must be a list of URLs like \"mailto:ops@example.test\".")
    if len(value) > MAX_CONTACTS:
        raise AcmeProblem("malformed", f"At most {MAX_CONTACTS} contacts per account.")
    out = []
    for contact in value:
        scheme, _, address = contact.partition(":")
        if scheme.lower() != "mailto":
            raise AcmeProblem("unsupportedContact", f"Only mailto: contacts are supported, not {contact!r}.")
        if "?" in address or "," in address:
            raise AcmeProblem("invalidContact", f"{contact!r} must name one address, without headers.")
        problem = email_problem(address)
        if problem:
            raise AcmeProblem("invalidContact", f"{address!r} is not an e-mail address: {problem}")
        out.append("mailto:" + normalize_email(address))
    return out


def create_account(store: CaStore, signed: SignedRequest, *, urls, require_eab: bool, client: str | None,
                   now: dt.datetime) -> tuple[Account, bool]:
    """newAccount: (account, created). An existing account for this key is returned as it is."""
    key = jws.parse_jwk(signed.jwk)
    signed.verify(key)
    payload = signed.json_payload()
    existing = account_by_thumbprint(store, key.thumbprint)
    if existing is not None:
        if existing.status != "valid":
            raise AcmeProblem("unauthorized", f"The account of this key is {existing.status}.")
        return existing, False
    if payload.get("onlyReturnExisting") is True:
        raise AcmeProblem("accountDoesNotExist", "No account exists for this key.")
    contacts = check_contacts(payload.get("contact"))
    eab_name = None
    binding = payload.get("externalAccountBinding")
    if binding is not None:
        eab_name = check_binding(store, binding, key, urls.new_account)
    elif require_eab:
        raise AcmeProblem("externalAccountRequired", "This CA requires External Account Binding: ask its operator "
                          "for a key (ca-server acme eab create) and pass its kid and HMAC key to your client.")
    account = Account(id=secrets.token_urlsafe(12), thumbprint=key.thumbprint, jwk=json.dumps(key.json),
                      status="valid", contacts=tuple(contacts), eab_name=eab_name, created_at=to_text(now),
                      client=client)
    audit = {"at": now, "action": "acme_account_create", "actor": account.actor, "client": client,
             "detail": {"contacts": contacts, "eab": eab_name}}
    if not store.insert_acme_account(dataclasses.asdict(account), audit=audit):  # the same key, a moment earlier
        return account_by_thumbprint(store, key.thumbprint), False
    return load_account(store, account.id), True


def check_binding(store: CaStore, binding: object, key: PublicJWK, url: str) -> str:
    """RFC 8555 7.3.4: a JWS over the account's key, MACed with the EAB key. Its name, if good."""
    if not isinstance(binding, dict):
        raise AcmeProblem("malformed", "externalAccountBinding must be a JWS object.")
    inner = jws.parse_eab(binding)
    eab = store.eab_key(kid=inner.protected.get("kid", ""))
    if eab is None or eab["revoked_at"]:
        raise AcmeProblem("unauthorized", "The external account key is unknown or was revoked.")
    if inner.protected.get("url") != url:
        raise AcmeProblem("malformed", "The external account binding's url must be the newAccount URL.")
    mac = hmac.new(jws.b64decode(eab["hmac_key"], "HMAC key"), inner.signing_input,
                   {"HS256": "sha256", "HS384": "sha384", "HS512": "sha512"}[inner.protected["alg"]]).digest()
    if not hmac.compare_digest(mac, inner.signature):
        raise AcmeProblem("unauthorized", "The external account binding's MAC does not verify with that key.")
    try:
        bound = jws.parse_jwk(json.loads(inner.payload))
    except (ValueError, RecursionError):
        raise AcmeProblem("malformed", "The external account binding's payload is not a JWK.") from None
    if bound.thumbprint != key.thumbprint:
        raise AcmeProblem("unauthorized", "The external account binding is for another key than this account's.")
    return eab["name"]


def update_account(store: CaStore, account: Account, signed: SignedRequest, now: dt.datetime) -> Account:
    if signed.post_as_get:
        return account
    payload = signed.json_payload()
    actor = account.actor
    if payload.get("status") == "deactivated":
        store.update_acme_account(account.id, status="deactivated",
                                  audit={"at": now, "action": "acme_account_deactivate", "actor": actor})
    elif "status" in payload and payload["status"] != "valid":
        raise AcmeProblem("malformed", "An account's status can only be set to \"deactivated\".")
    if "contact" in payload:
        store.update_acme_account(account.id, contacts=check_contacts(payload["contact"]),
                                  audit={"at": now, "action": "acme_account_update", "actor": actor})
    return load_account(store, account.id)


def change_key(store: CaStore, account: Account, outer: SignedRequest, accounts_url: str,
               now: dt.datetime) -> Account:
    """RFC 8555 7.3.5: the payload is a JWS signed by the new key over {account, oldKey}."""
    inner_body = outer.json_payload()
    inner = jws.parse_inner(inner_body)
    new_key = jws.parse_jwk(inner.jwk)
    inner.verify(new_key)
    if inner.url != outer.url:
        raise AcmeProblem("malformed", "The inner JWS's url must equal the outer one's.")
    change = inner.json_payload()
    if change.get("account") != f"{accounts_url}/{account.id}":
        raise AcmeProblem("malformed", "The key change names another account than the one that signed it.")
    try:
        old = jws.parse_jwk(change.get("oldKey"))
    except AcmeProblem:
        raise AcmeProblem("malformed", "oldKey is not the account's current key.") from None
    if old.thumbprint != account.thumbprint:
        raise AcmeProblem("malformed", "oldKey is not the account's current key.")
    other = account_by_thumbprint(store, new_key.thumbprint)
    if other is not None:
        raise AcmeProblem("malformed", "The new key belongs to another account already.", status=409,
                          headers={"Location": f"{accounts_url}/{other.id}"})
    if not store.update_acme_account(account.id, jwk=json.dumps(new_key.json), thumbprint=new_key.thumbprint,
                                     audit={"at": now, "action": "acme_key_change", "actor": account.actor,
                                            "detail": {"old": old.thumbprint, "new": new_key.thumbprint}}):
        raise AcmeProblem("malformed", "The key could not be changed (the account is no longer valid, or the "
                          "key was taken meanwhile).", status=409)
    return load_account(store, account.id)


# -- External Account Binding keys (the CLI's `acme eab create|revoke`) ------------------------------
def create_eab_key(store: CaStore, name: str, *, domains: tuple[str, ...], allow_ip: bool, now: dt.datetime,
                   actor: str = "cli:local") -> dict:
    """A new key; its HMAC key is shown once (and kept: the server needs it to check bindings)."""
    check_name(name, "EAB key")
    kid = "eab_" + secrets.token_urlsafe(12)
    hmac_key = jws.b64encode(secrets.token_bytes(32))
    row = {"name": name, "kid": kid, "hmac_key": hmac_key, "domains": check_domains(domains),
           "allow_ip": int(allow_ip), "created_at": to_text(now)}
    if not store.insert_eab_key(row, audit={"at": now, "action": "acme_eab_create", "actor": actor,
                                            "detail": {"eab": name, "domains": list(row["domains"])}}):
        raise BadRequestError(f"An EAB key named {name!r} exists already.", code="name_taken")
    return {"kid": kid, "hmac_key": hmac_key}


def revoke_eab_key(store: CaStore, name: str, now: dt.datetime, actor: str = "cli:local") -> None:
    if not store.revoke_eab_key(name, now, audit={"at": now, "action": "acme_eab_revoke", "actor": actor,
                                                  "detail": {"eab": name}}):
        raise NotFoundError(f"There is no active EAB key named {name!r}.")
