"""Leases: work that one process of all (one node of all) does at a time takes a row, taken over
only where it still holds what was read, once expired (Boulder's CRL shard leases)."""

from __future__ import annotations

import datetime as dt

from ..clock import to_text


class LeaseQueries:
    def take_lease(self, name: str, holder: str, now: dt.datetime, seconds: float) -> bool:
        """True when `holder` holds `name` until now + seconds: it was free, expired, or its own."""
        with self.write() as db:
            return db.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE"
                " SET holder = excluded.holder, expires_at = excluded.expires_at"
                " WHERE leases.expires_at <= ? OR leases.holder = excluded.holder",
                [name, holder, to_text(now + dt.timedelta(seconds=seconds)), to_text(now)],
            ).rowcount == 1

    def claim_once(self, name: str, now: dt.datetime) -> bool:
        """True for the one caller, of all processes and nodes, that claims `name` first (a
        one-off duty, like a warning mail); a lease that never expires."""
        with self.write() as db:
            return db.execute("INSERT INTO leases (name, holder, expires_at) VALUES (?, 'done', '9999-12-31T00:00:00Z')"
                              " ON CONFLICT (name) DO NOTHING", [name]).rowcount == 1

    def release_lease(self, name: str, holder: str) -> None:
        with self.write() as db:
            db.execute("DELETE FROM leases WHERE name = ? AND holder = ?", [name, holder])

    def lease_holder(self, name: str, now: dt.datetime) -> str | None:
        row = self.db.execute("SELECT holder FROM leases WHERE name = ? AND expires_at > ?",
                              [name, to_text(now)]).fetchone()
        return row[0] if row else None
