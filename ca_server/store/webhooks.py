"""The webhook ledger: deliveries recorded before they are sent, claimed by one sender at a time."""

from __future__ import annotations

import datetime as dt

from ..clock import to_text


class WebhookQueries:
    def record_deliveries(self, rows: list[tuple[str, str, str]], now: dt.datetime) -> int:
        """(webhook, serial, event) rows; those recorded before are left as they are. How many are new."""
        with self.write() as db:
            cursor = db.conn.executemany(
                "INSERT INTO webhook_deliveries (webhook, serial, event, status, next_attempt_at) VALUES (?, ?, ?,"
                " 'pending', ?) ON CONFLICT (webhook, serial, event) DO NOTHING",
                [(*row, to_text(now)) for row in rows])
            return cursor.rowcount

    def due_deliveries(self, now: dt.datetime, stale_before: dt.datetime, limit: int = 500) -> list[dict]:
        return list(self.db.query(
            "SELECT * FROM webhook_deliveries WHERE (status IN ('pending', 'failed') AND next_attempt_at <= ?)"
            " OR (status = 'sending' AND claimed_at < ?) ORDER BY id LIMIT ?",
            [to_text(now), to_text(stale_before), limit]))

    def claim_delivery(self, delivery_id: int, now: dt.datetime, stale_before: dt.datetime) -> bool:
        with self.write() as db:
            return db.execute(
                "UPDATE webhook_deliveries SET status = 'sending', claimed_at = ? WHERE id = ? AND"
                " ((status IN ('pending', 'failed') AND next_attempt_at <= ?) OR (status = 'sending' AND claimed_at < ?))",
                [to_text(now), delivery_id, to_text(now), to_text(stale_before)]).rowcount == 1

    def delivery_sent(self, delivery_id: int, now: dt.datetime) -> None:
        with self.write() as db:
            db.execute("UPDATE webhook_deliveries SET status = 'sent', sent_at = ?, attempts = attempts + 1,"
                       " last_error = NULL WHERE id = ?", [to_text(now), delivery_id])

    def delivery_failed(self, delivery_id: int, error: str, next_attempt: dt.datetime) -> None:
        with self.write() as db:
            db.execute("UPDATE webhook_deliveries SET status = 'failed', attempts = attempts + 1, last_error = ?,"
                       " next_attempt_at = ? WHERE id = ?", [error[:500], to_text(next_attempt), delivery_id])

    def waiting_deliveries(self, now: dt.datetime, limit: int = 1000) -> list[dict]:
        """Failed deliveries whose next try is after `now` (`remind` lists them)."""
        return list(self.db.query(
            "SELECT * FROM webhook_deliveries WHERE status = 'failed' AND next_attempt_at > ? ORDER BY id LIMIT ?",
            [to_text(now), limit]))

    def webhook_failures(self) -> int:
        return self.db.conn.execute("SELECT count(*) FROM webhook_deliveries WHERE status = 'failed'").fetchone()[0]

    def deliveries_of(self, serial: str) -> list[dict]:
        return list(self.db.query("SELECT * FROM webhook_deliveries WHERE serial = ? ORDER BY id", [serial]))

    def current_certificate_for_names(self, key: str, now: dt.datetime) -> str | None:
        """The newest valid certificate with exactly these names (models.names_key): what a
        failed renewal of them leaves in place."""
        row = self.db.conn.execute(
            "SELECT serial FROM certificates WHERE names_key = ? AND revoked_at IS NULL AND not_after > ?"
            " ORDER BY rowid DESC LIMIT 1", [key, to_text(now)]).fetchone()
        return row[0] if row else None
