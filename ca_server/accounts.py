"""Users (password sign-in) and API tokens, each with the domains it may request names under.

Passwords are hashed with Argon2id (argon2-cffi). Tokens are 256-bit random values, so a
SHA-256 lookup is safe and costs microseconds; a slow KDF there would cap API throughput."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .clock import to_text
from .emails import email_problem, normalize_email
from .errors import BadRequestError, ConflictError, NotFoundError
from .issuance import Requester
from .pki.names import dns_name_problem
from .store import CaStore, NameTakenError

TOKEN_PREFIX = "cas_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_hasher = PasswordHasher()
# Verified against when the user does not exist, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("not a password of anyone")
TOKEN_TOUCH_INTERVAL = dt.timedelta(minutes=1)
MIN_PASSWORD = 8


def check_name(name: str, what: str) -> str:
    if not _NAME.match(name or ""):
        raise BadRequestError(
            f"{what} name {name!r} is not usable: use 1-64 letters, digits, dots, hyphens, underscores or @."
        )
    return name


def check_domains(domains: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    out = []
    for d in domains:
        d = d.strip().lower().rstrip(".")
        problem = dns_name_problem(d)
        if problem or d.startswith("*."):
            raise BadRequestError(f"{d!r} is not a domain: {problem or 'give the domain without *.'}")
        out.append(d)
    return tuple(dict.fromkeys(out))


def add_user(
    store: CaStore,
    name: str,
    password: str,
    *,
    is_admin: bool,
    domains: tuple[str, ...],
    allow_ip: bool | None,
    email: str | None,
    now: dt.datetime,
    actor: str = "cli:local",
) -> None:
    check_name(name, "User")
    if len(password) < MIN_PASSWORD:
        raise BadRequestError(f"The password must be at least {MIN_PASSWORD} characters.")
    row = {
        "name": name,
        "password_hash": _hasher.hash(password),
        "is_admin": int(is_admin),
        "domains": check_domains(domains),
        "allow_ip": int(is_admin if allow_ip is None else allow_ip),
        "email": check_email(email),
        "created_at": to_text(now),
    }
    audit = {"at": now, "action": "user_add", "actor": actor, "detail": {"user": name, "admin": is_admin}}
    try:
        store.insert_user(row, audit=audit)
    except NameTakenError:
        raise ConflictError(f"A user named {name!r} already exists.") from None


def check_email(email: str | None) -> str | None:
    """A user's address (where the form's reminders go by default), or None when empty."""
    if email is None or not email.strip():
        return None
    problem = email_problem(email.strip())
    if problem:
        raise BadRequestError(f"{email.strip()!r} is not an e-mail address: {problem}", code="email_invalid")
    return normalize_email(email.strip())


def set_user_email(store: CaStore, name: str, email: str | None, now: dt.datetime, actor: str = "cli:local") -> None:
    address = check_email(email)
    if not store.set_user_email(name, address, audit={"at": now, "action": "user_email", "actor": actor,
                                                      "detail": {"user": name, "email": address}}):
        raise NotFoundError(f"There is no user named {name!r}.")


def disable_user(store: CaStore, name: str, now: dt.datetime, actor: str = "cli:local") -> None:
    """The user can sign in no more, by password or through the directory (end their sessions too:
    directory/sessions.py end_all)."""
    if not store.set_user_disabled(name, now, audit={"at": now, "action": "user_disable", "actor": actor,
                                                     "detail": {"user": name}}):
        raise NotFoundError(f"There is no active user named {name!r}.")


def enable_user(store: CaStore, name: str, now: dt.datetime, actor: str = "cli:local") -> None:
    """A disabled user may sign in again (with the password or directory membership they have)."""
    if not store.set_user_disabled(name, None, audit={"at": now, "action": "user_enable", "actor": actor,
                                                      "detail": {"user": name}}):
        raise NotFoundError(f"There is no disabled user named {name!r}.")


def set_password(store: CaStore, name: str, password: str, now: dt.datetime, actor: str = "cli:local") -> None:
    """A new password for a local account (a forgotten one, a leaked one): the caller ends its
    sessions. A directory user's password is the directory's."""
    row = store.get_user(name)
    if row is None:
        raise NotFoundError(f"There is no active user named {name!r}.")
    if row["password_hash"].startswith("!"):
        raise BadRequestError(f"{name!r} signs in through the directory ({row['password_hash'][1:]}); their "
                              "password is set there.")
    if len(password) < MIN_PASSWORD:
        raise BadRequestError(f"The password must be at least {MIN_PASSWORD} characters.")
    store.set_user_password(name, _hasher.hash(password), audit={
        "at": now, "action": "user_password_set", "actor": actor, "detail": {"user": name}})


def authenticate_user(store: CaStore, name: str, password: str) -> Requester | None:
    row = store.get_user(name) if name else None
    try:
        _hasher.verify(row["password_hash"] if row else _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return None
    if row is None:
        return None
    if _hasher.check_needs_rehash(row["password_hash"]):
        store.set_user_password(name, _hasher.hash(password))
    return user_requester(row)


def user_requester(row: dict) -> Requester:
    return Requester(
        name=row["name"],
        kind="user",
        is_admin=row["is_admin"],
        domains=row["domains"],
        allow_ip=row["allow_ip"],
        email=row.get("email"),
        can_approve=bool(row.get("can_approve")),
    )


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def create_token(
    store: CaStore,
    name: str,
    *,
    is_admin: bool,
    domains: tuple[str, ...],
    allow_ip: bool | None,
    now: dt.datetime,
    actor: str = "cli:local",
    expires_at: dt.datetime | None = None,
    audit_detail: dict | None = None,
) -> str:
    """A new token, returned once; only its SHA-256 is stored. With `expires_at` it stops working
    then by itself."""
    check_name(name, "Token")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = {
        "name": name,
        "token_sha256": token_hash(token),
        "is_admin": int(is_admin),
        "domains": check_domains(domains),
        "allow_ip": int(is_admin if allow_ip is None else allow_ip),
        "created_at": to_text(now),
        "created_by": actor,
        "expires_at": to_text(expires_at) if expires_at else None,
    }
    audit = {"at": now, "action": "token_create", "actor": actor,
             "detail": {"token": name, "admin": is_admin, "domains": list(row["domains"]), **(audit_detail or {})}}
    try:
        store.insert_token(row, audit=audit)
    except NameTakenError:
        raise ConflictError(f"A token named {name!r} already exists; revoke it or pick another name.") from None
    return token


def revoke_token(store: CaStore, name: str, now: dt.datetime, actor: str = "cli:local") -> None:
    if store.get_token(name) is None:
        raise NotFoundError(f"There is no token named {name!r}.")
    audit = {"at": now, "action": "token_revoke", "actor": actor, "detail": {"token": name}}
    if not store.revoke_token(name, now, audit=audit):
        raise ConflictError(f"The token {name!r} is already revoked.")


def token_requester(store: CaStore, token: str, now: dt.datetime) -> Requester | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    row = store.token_by_hash(token_hash(token))
    if row is None or row["revoked_at"] or (row.get("expires_at") and row["expires_at"] <= to_text(now)):
        return None
    last = row["last_used_at"]
    # Recording every use would make every API call a write; once a minute tells the same story.
    if last is None or last <= to_text(now - TOKEN_TOUCH_INTERVAL):  # the text form sorts as time
        store.touch_token(row["name"], now)
    return Requester(
        name=row["name"], kind="token", is_admin=row["is_admin"], domains=row["domains"], allow_ip=row["allow_ip"]
    )


def new_calendar_feed(store: CaStore, owner: str, now: dt.datetime) -> str:
    """A new secret token for `owner`'s calendar URL; the one before stops working."""
    token = secrets.token_urlsafe(24)
    store.set_calendar_feed(owner, token, now, audit={"at": now, "action": "calendar_feed_new", "actor": owner})
    return token


def turn_off_calendar_feed(store: CaStore, owner: str, now: dt.datetime) -> None:
    store.set_calendar_feed(owner, None, now, audit={"at": now, "action": "calendar_feed_off", "actor": owner})
