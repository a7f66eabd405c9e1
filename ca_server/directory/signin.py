"""Directory users on the sign-in form (issue 28): a name that is not a local account is tried
against [auth.ldap]; the groups the directory lists are mapped by [[auth.groups]] to a role and
the domains the person may request, at every sign-in (a removed membership counts at the next
one). The user record is created at the first sign-in, linked to the directory (no local
password), and refreshed at each. Local accounts stay: the break-glass admin signs in whatever the
directory does."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .. import accounts
from ..clock import to_text
from ..config import Config, Secrets
from ..issuance import Requester
from ..store import CaStore
from . import ldap


@dataclass(frozen=True)
class Outcome:
    requester: Requester | None
    refusal: str | None = None  # words for the sign-in page when the password was right but no group maps
    groups: tuple[str, ...] = ()


def sign_in(config: Config, secrets: Secrets, store: CaStore, username: str, password: str,
            now: dt.datetime) -> Outcome:
    """Raises ldap.DirectoryUnavailable when the directory cannot be asked."""
    if config.auth.ldap is None:
        return Outcome(None)
    existing = store.get_user(username)
    if existing is not None and not existing["password_hash"].startswith("!"):
        return Outcome(None)  # a local account: its own password only
    person = ldap.authenticate(config.auth.ldap, secrets.ldap_bind_password, username, password)
    if person is None:
        return Outcome(None)
    return admit(config, store, username, person.email, person.groups, "ldap", now)


def admit(config: Config, store: CaStore, username: str, email: str | None, groups: tuple[str, ...], method: str,
          now: dt.datetime) -> Outcome:
    """A person the directory vouched for (LDAP bind, OIDC ID token): their role and domains from
    [[auth.groups]], their user record made or refreshed; refused when no group maps or a local
    account has the name."""
    mapped = [m for m in config.auth.groups if m.group in groups]
    if not mapped:
        seen = ", ".join(groups) or "no groups"
        return Outcome(None, f"You are in {seen}; none of them gives access to this CA. Ask an admin to map your "
                             "group in [[auth.groups]].", groups)
    is_admin = any(m.role == "admin" for m in mapped)
    approver = any(m.role == "approver" for m in mapped)
    domains = tuple(sorted({d for m in mapped for d in m.domains}))
    kept = store.upsert_directory_user({
        "name": username, "password_hash": f"!{method}", "is_admin": int(is_admin), "domains": domains,
        "allow_ip": int(is_admin), "email": email, "created_at": to_text(now), "can_approve": int(approver)})
    if not kept:
        return Outcome(None, f"{username} is a local account here, or was disabled by an admin; a directory sign-in "
                             "cannot use it.")
    return Outcome(accounts.user_requester(store.get_user(username)), groups=groups)
