"""Users, API tokens and pending requests."""

from __future__ import annotations

import datetime as dt
import json

from ..clock import to_text
from .errors import INTEGRITY_ERRORS


class NameTakenError(Exception):
    pass


class AccessQueries:
    # -- users ---------------------------------------------------------------------------------
    def insert_user(self, row: dict, audit: dict | None = None) -> None:
        try:
            with self.write() as db:
                db.execute(
                    "INSERT INTO users (name, password_hash, is_admin, domains, allow_ip, email, created_at)"
                    " VALUES (:name, :password_hash, :is_admin, :domains, :allow_ip, :email, :created_at)",
                    {**row, "domains": json.dumps(list(row["domains"]))},
                )
                if audit:
                    self._append_audit(db, **audit)
        except INTEGRITY_ERRORS:
            raise NameTakenError(row["name"]) from None

    def get_user(self, name: str) -> dict | None:
        rows = list(self.db.query("SELECT * FROM users WHERE name = ? AND disabled_at IS NULL", [name]))
        return _decode(rows[0]) if rows else None

    def set_user_password(self, name: str, password_hash: str, audit: dict | None = None) -> bool:
        with self.write() as db:
            changed = db.execute("UPDATE users SET password_hash = ? WHERE name = ?", [password_hash, name]).rowcount == 1
            if changed and audit:
                self._append_audit(db, **audit)
        return changed

    def set_user_email(self, name: str, email: str | None, audit: dict | None = None) -> bool:
        with self.write() as db:
            changed = db.execute("UPDATE users SET email = ? WHERE name = ? AND disabled_at IS NULL",
                                 [email, name]).rowcount == 1
            if changed and audit:
                self._append_audit(db, **audit)
        return changed

    # -- calendar feeds --------------------------------------------------------------------------
    def set_calendar_feed(self, owner: str, token: str | None, now: dt.datetime, audit: dict | None = None) -> None:
        """A new secret URL token for `owner` (None: the feed is turned off)."""
        with self.write() as db:
            db.execute("INSERT INTO calendar_feeds (owner, token, created_at, revoked_at) VALUES (?, ?, ?, ?)"
                       " ON CONFLICT (owner) DO UPDATE SET token = excluded.token, created_at = excluded.created_at,"
                       " revoked_at = excluded.revoked_at",
                       [owner, token, to_text(now), None if token else to_text(now)])
            if audit:
                self._append_audit(db, **audit)

    def calendar_feed_of(self, owner: str) -> str | None:
        row = self.db.conn.execute("SELECT token FROM calendar_feeds WHERE owner = ?", [owner]).fetchone()
        return row[0] if row else None

    def calendar_feed_owner(self, token: str) -> str | None:
        row = self.db.conn.execute("SELECT owner FROM calendar_feeds WHERE token = ?", [token]).fetchone()
        return row[0] if row else None

    def upsert_directory_user(self, row: dict) -> bool:
        """Create or refresh a user who signs in through the directory (password_hash "!ldap" or
        "!oidc": no local password); a local account of the same name is left alone (False)."""
        with self.write() as db:
            db.execute(
                "INSERT INTO users (name, password_hash, is_admin, domains, allow_ip, email, created_at, can_approve)"
                " VALUES (:name, :password_hash, :is_admin, :domains, :allow_ip, :email, :created_at, :can_approve)"
                " ON CONFLICT (name) DO UPDATE SET is_admin = excluded.is_admin, domains = excluded.domains,"
                " can_approve = excluded.can_approve,"
                " allow_ip = excluded.allow_ip, email = COALESCE(excluded.email, users.email),"
                " password_hash = excluded.password_hash WHERE users.password_hash LIKE '!%'",
                {"can_approve": 0, **row, "domains": json.dumps(list(row["domains"]))})
            current = db.execute("SELECT password_hash, disabled_at FROM users WHERE name = ?", [row["name"]]).fetchone()
        return current is not None and current[0] == row["password_hash"] and current[1] is None

    def set_user_disabled(self, name: str, at: dt.datetime | None, audit: dict | None = None) -> bool:
        """Disable the user from `at` (no sign-in, local or directory), or with None enable them
        again; False when there is no user of that name in the other state."""
        state = "disabled_at IS NULL" if at else "disabled_at IS NOT NULL"
        with self.write() as db:
            changed = db.execute(f"UPDATE users SET disabled_at = ? WHERE name = ? AND {state}",
                                 [to_text(at) if at else None, name]).rowcount == 1
            if changed and audit:
                self._append_audit(db, **audit)
        return changed

    def list_users(self) -> list[dict]:
        return [_decode(r) for r in self.db.query("SELECT * FROM users ORDER BY name")]

    # -- tokens --------------------------------------------------------------------------------
    def insert_token(self, row: dict, audit: dict | None = None) -> None:
        try:
            with self.write() as db:
                db.execute(
                    "INSERT INTO tokens (name, token_sha256, is_admin, domains, allow_ip, created_at, created_by,"
                    " expires_at) VALUES (:name, :token_sha256, :is_admin, :domains, :allow_ip, :created_at,"
                    " :created_by, :expires_at)",
                    {"expires_at": None, **row, "domains": json.dumps(list(row["domains"]))},
                )
                if audit:
                    self._append_audit(db, **audit)
        except INTEGRITY_ERRORS:
            raise NameTakenError(row["name"]) from None

    def token_by_hash(self, token_sha256: str) -> dict | None:
        # On every API call: the plain connection skips sqlite-utils' per-query savepoint.
        cursor = self.db.conn.execute("SELECT * FROM tokens WHERE token_sha256 = ?", [token_sha256])
        row = cursor.fetchone()
        return _decode(dict(zip([c[0] for c in cursor.description], row, strict=True))) if row else None

    def touch_token(self, name: str, now: dt.datetime) -> None:
        self.db.execute("UPDATE tokens SET last_used_at = ? WHERE name = ?", [to_text(now), name])

    def revoke_token(self, name: str, now: dt.datetime, audit: dict | None = None) -> bool:
        with self.write() as db:
            changed = db.execute(
                "UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", [to_text(now), name]
            ).rowcount
            if changed and audit:
                self._append_audit(db, **audit)
        return changed == 1

    def list_tokens(self) -> list[dict]:
        return [_decode(r) for r in self.db.query("SELECT * FROM tokens ORDER BY created_at DESC, name")]

    def get_token(self, name: str) -> dict | None:
        rows = list(self.db.query("SELECT * FROM tokens WHERE name = ?", [name]))
        return _decode(rows[0]) if rows else None


class RequestQueries:
    def insert_request(self, row: dict, audit: dict | None = None) -> None:
        with self.write() as db:
            db.execute(
                "INSERT INTO requests (id, created_at, requester, requester_email, csr_pem, profile, validity_days,"
                " notify, names, reasons, status) VALUES (:id, :created_at, :requester, :requester_email, :csr_pem,"
                " :profile, :validity_days, :notify, :names, :reasons, :status)",
                row,
            )
            if audit:
                self._append_audit(db, **audit)

    def get_request(self, request_id: str) -> dict | None:
        rows = list(self.db.query("SELECT * FROM requests WHERE id = ?", [request_id]))
        return rows[0] if rows else None

    def decide_request(self, request_id: str, status: str, at: str, by: str, reason: str | None,
                       audit: dict | None = None) -> bool:
        """pending -> approved/rejected, once: False when it was no longer pending."""
        with self.write() as db:
            changed = db.execute(
                "UPDATE requests SET status = ?, decided_at = ?, decided_by = ?, decision_reason = ?"
                " WHERE id = ? AND status = 'pending'",
                [status, at, by, reason, request_id],
            ).rowcount
            if changed and audit:
                self._append_audit(db, **audit)
        return changed == 1

    def set_request_serial(self, request_id: str, serial: str) -> bool:
        """The certificate issued for an approved request (inside the certificate's transaction)."""
        return self.db.execute("UPDATE requests SET serial = ? WHERE id = ?", [serial, request_id]).rowcount == 1

    def list_requests(self, status: str | None = None, requester: str | None = None, limit: int = 200) -> list[dict]:
        where, params = [], []
        if status:
            where.append("status = ?")
            params.append(status)
        if requester:
            where.append("requester = ?")
            params.append(requester)
        sql = "SELECT * FROM requests" + (" WHERE " + " AND ".join(where) if where else "")
        return list(self.db.query(sql + " ORDER BY created_at DESC LIMIT ?", [*params, limit]))


def _decode(row: dict) -> dict:
    row = dict(row)
    if "domains" in row:
        row["domains"] = tuple(json.loads(row["domains"]))
    for key in ("is_admin", "allow_ip"):
        if key in row:
            row[key] = bool(row[key])
    return row
