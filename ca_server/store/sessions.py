"""Sign-in sessions held by the server (issue 28): the cookie carries a random id, the store its
SHA-256, so every node knows a session and ending it here ends it everywhere."""

from __future__ import annotations

import datetime as dt

from ..clock import to_text


class SessionQueries:
    def insert_session(self, row: dict, audit: dict | None = None) -> None:
        with self.write() as db:
            db.execute("INSERT INTO sessions (id_sha256, user_name, created_at, last_seen_at, expires_at, client, method)"
                       " VALUES (:id_sha256, :user_name, :created_at, :last_seen_at, :expires_at, :client, :method)", row)
            if audit:
                self._append_audit(db, **audit)

    def session_by_hash(self, id_sha256: str) -> dict | None:
        rows = list(self.db.query("SELECT * FROM sessions WHERE id_sha256 = ?", [id_sha256]))
        return rows[0] if rows else None

    def touch_session(self, id_sha256: str, now: dt.datetime) -> None:
        with self.one_statement() as db:
            db.execute("UPDATE sessions SET last_seen_at = ? WHERE id_sha256 = ?", [to_text(now), id_sha256])

    def end_sessions(self, now: dt.datetime, by: str, *, id_sha256: str | None = None, user_name: str | None = None,
                     audit: dict | None = None) -> int:
        """End one session (by id) or every open session of a user; how many were open."""
        where, args = ("id_sha256 = ?", [id_sha256]) if id_sha256 else ("user_name = ?", [user_name])
        with self.write() as db:
            ended = db.execute(f"UPDATE sessions SET ended_at = ?, ended_by = ? WHERE {where} AND ended_at IS NULL",
                               [to_text(now), by, *args]).rowcount
            if audit and ended:
                self._append_audit(db, **{**audit, "detail": {**audit.get("detail", {}), "sessions": ended}})
        return ended

    def open_sessions(self, now: dt.datetime, user_name: str | None = None, limit: int = 200) -> list[dict]:
        """Sessions not ended and not past their absolute end, newest first (idle ones included:
        they end when next used)."""
        extra, args = (" AND user_name = ?", [user_name]) if user_name else ("", [])
        return list(self.db.query(
            f"SELECT * FROM sessions WHERE ended_at IS NULL AND expires_at > ?{extra} ORDER BY created_at DESC LIMIT ?",
            [to_text(now), *args, limit]))
