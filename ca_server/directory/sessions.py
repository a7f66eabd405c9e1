"""Sign-in sessions held by the server (issue 28). The browser's cookie carries a random id;
the store keeps its SHA-256 with the user, when it began, when it was last used and when it ends,
so signing out ends a session for good (the old cookie, sent again, is signed out), "sign out
everywhere" or an admin ends all of a user's sessions on every node, and a session ends by
itself after [auth] session_idle_minutes unused or session_hours after sign-in."""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

from .. import accounts
from ..clock import from_text, to_text
from ..config import Config
from ..store import CaStore

TOUCH_EVERY = dt.timedelta(minutes=1)  # last use is written at most once a minute


def key_of(session_id: str) -> str:
    """What the store keeps of a session id (and what lists of sessions know it by)."""
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


def begin(config: Config, store: CaStore, user: str, now: dt.datetime, *, client: str | None,
          method: str = "password", groups: tuple[str, ...] = ()) -> str:
    """A new session for `user`; returns the id for the cookie (the store keeps only its hash)."""
    session_id = secrets.token_urlsafe(32)
    store.insert_session({
        "id_sha256": key_of(session_id), "user_name": user, "created_at": to_text(now), "last_seen_at": to_text(now),
        "expires_at": to_text(now + dt.timedelta(hours=config.auth.session_hours)), "client": client,
        "method": method,
    }, audit={"at": now, "action": "sign_in", "actor": f"user:{user}", "client": client,
              "detail": {"method": method, **({"groups": list(groups)} if groups else {})}})
    return session_id


def current_user(config: Config, store: CaStore, session_id: str | None, now: dt.datetime) -> str | None:
    """The user of an open session, or None (unknown, ended, idle too long, past its end)."""
    if not session_id or len(session_id) > 100:
        return None
    key = key_of(session_id)
    row = store.session_by_hash(key)
    if row is None or row["ended_at"]:
        return None
    if row["expires_at"] <= to_text(now):
        return None
    last = from_text(row["last_seen_at"])
    if now - last > dt.timedelta(minutes=config.auth.session_idle_minutes):
        store.end_sessions(now, "idle", id_sha256=key)
        return None
    if now - last >= TOUCH_EVERY:
        store.touch_session(key, now)
    return row["user_name"]


def end(store: CaStore, session_id: str, now: dt.datetime, *, actor: str, client: str | None) -> int:
    """This browser's session (its own sign-out)."""
    return end_one(store, key_of(session_id), now, actor=actor, client=client, action="sign_out")


def end_all(store: CaStore, user: str, now: dt.datetime, *, actor: str, client: str | None) -> int:
    """Every open session of `user` (sign out everywhere; an admin; a disabled user)."""
    return store.end_sessions(now, actor, user_name=user, audit={
        "at": now, "action": "sessions_ended", "actor": actor, "client": client, "detail": {"user": user}})


def disable_user(store: CaStore, user: str, now: dt.datetime, *, actor: str, client: str | None) -> int:
    """A leaver: no more sign-ins, and every open session ends now; how many ended."""
    accounts.disable_user(store, user, now, actor=actor)
    return end_all(store, user, now, actor=actor, client=client)


def end_one(store: CaStore, key: str, now: dt.datetime, *, actor: str, client: str | None,
            action: str = "session_ended") -> int:
    """One session, by the key lists know it by (an admin's "end this one")."""
    return store.end_sessions(now, actor, id_sha256=key, audit={
        "at": now, "action": action, "actor": actor, "client": client})


def open_sessions(store: CaStore, now: dt.datetime, user: str | None = None) -> list[dict]:
    return store.open_sessions(now, user)
