"""One-time SCEP challenge passwords (NDES's one-time passwords): stored by their SHA-256 only,
consumed once, by the first request that shows one, on every node."""

from __future__ import annotations

import datetime as dt
import json

from ..clock import to_text


class DeviceQueries:
    def insert_scep_challenge(self, row: dict, audit: dict | None = None) -> None:
        with self.write() as db:
            db.execute("INSERT INTO scep_challenges (hash, endpoint, domains, created_at, expires_at, created_by)"
                       " VALUES (:hash, :endpoint, :domains, :created_at, :expires_at, :created_by)",
                       {**row, "domains": json.dumps(list(row["domains"]))})
            if audit:
                self._append_audit(db, **audit)

    def use_scep_challenge(self, digest: str, endpoint: str, now: dt.datetime, used_by: str) -> dict | None:
        """The challenge with this SHA-256 for `endpoint`, marked used, when it was unused and
        unexpired; None otherwise (a second use included, whichever node sees it)."""
        with self.write() as db:
            taken = db.execute("UPDATE scep_challenges SET used_at = ?, used_by = ? WHERE hash = ? AND endpoint = ?"
                               " AND used_at IS NULL AND expires_at > ?",
                               [to_text(now), used_by, digest, endpoint, to_text(now)]).rowcount == 1
        if not taken:
            return None
        return _challenge(next(iter(self.db.query("SELECT * FROM scep_challenges WHERE hash = ?", [digest]))))

    def scep_challenges(self, limit: int = 200) -> list[dict]:
        """Newest first: unused, used and expired alike (the admin page says which)."""
        return [_challenge(row) for row in self.db.query(
            "SELECT * FROM scep_challenges ORDER BY created_at DESC LIMIT ?", [limit])]

    def insert_scep_transaction(self, row: dict) -> None:
        """A request held for approval under its endpoint and transactionID; a later request held
        under the same transactionID (clients derive it from the key) takes its place."""
        with self.write() as db:
            db.execute("INSERT INTO scep_transactions (endpoint, transaction_id, request_id, signer_key, created_at)"
                       " VALUES (:endpoint, :transaction_id, :request_id, :signer_key, :created_at)"
                       " ON CONFLICT (endpoint, transaction_id) DO UPDATE SET request_id = excluded.request_id,"
                       " signer_key = excluded.signer_key, created_at = excluded.created_at", row)

    def scep_transaction(self, endpoint: str, transaction_id: str) -> dict | None:
        return next(iter(self.db.query("SELECT * FROM scep_transactions WHERE endpoint = ? AND transaction_id = ?",
                                       [endpoint, transaction_id])), None)


def _challenge(row: dict) -> dict:
    return {**row, "domains": tuple(json.loads(row["domains"]))}
