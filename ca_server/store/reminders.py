"""The reminder ledger: one row per (certificate, threshold); the INSERT that wins is the claim."""

from __future__ import annotations

import datetime as dt
import json

from ..clock import to_text
from .certificates import _prefixed, row_to_record


class ReminderQueries:
    def reminder_candidates(self, start: dt.datetime, end: dt.datetime):
        """(record, most urgent threshold already claimed or None) for unrevoked, not renewed
        certificates whose not_after falls in [start, end)."""
        sql = (
            f"SELECT {_prefixed()}, (SELECT min(r.threshold) FROM reminders r WHERE r.serial = c.serial"
            " AND r.status != 'superseded') AS claimed"
            " FROM certificates c WHERE c.not_after >= ? AND c.not_after < ? AND c.revoked_at IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM certificates n WHERE n.names_key = c.names_key"
            " AND n.rowid > c.rowid AND n.revoked_at IS NULL)"
        )
        for row in self.db.query(sql, [to_text(start), to_text(end)]):
            yield row_to_record(row), row["claimed"]

    def claim_reminder(self, serial: str, threshold: int, recipients: tuple[str, ...], now: dt.datetime) -> int | None:
        """Claim (serial, threshold); the id when this caller won, None when someone else had it.
        Less urgent reminders still waiting for a retry are superseded by this one."""
        with self.write() as db:
            won = db.execute(
                "INSERT INTO reminders (serial, threshold, status, recipients, claimed_at)"
                " VALUES (?, ?, 'sending', ?, ?) ON CONFLICT (serial, threshold) DO NOTHING RETURNING id",
                [serial, threshold, json.dumps(list(recipients)), to_text(now)],
            ).fetchone()
            if won is None:
                return None
            db.execute(
                "UPDATE reminders SET status = 'superseded', next_attempt_at = NULL"
                " WHERE serial = ? AND threshold > ? AND status = 'failed'",
                [serial, threshold],
            )
            return won[0]

    def claim_retry(self, reminder_id: int, now: dt.datetime, stale_before: dt.datetime) -> bool:
        """Take a failed reminder (or one whose sender died mid-send) for another attempt."""
        with self.write() as db:
            return db.execute(
                "UPDATE reminders SET status = 'sending', claimed_at = ? WHERE id = ? AND"
                " ((status = 'failed' AND next_attempt_at <= ?) OR (status = 'sending' AND claimed_at < ?))",
                [to_text(now), reminder_id, to_text(now), to_text(stale_before)],
            ).rowcount == 1

    def retry_candidates(self, now: dt.datetime, stale_before: dt.datetime) -> list[dict]:
        return list(self.db.query(
            "SELECT r.id, r.serial, r.threshold, r.recipients, r.attempts FROM reminders r"
            " JOIN certificates c ON c.serial = r.serial WHERE c.revoked_at IS NULL AND"
            " ((r.status = 'failed' AND r.next_attempt_at <= ?) OR (r.status = 'sending' AND r.claimed_at < ?))"
            " ORDER BY r.id",
            [to_text(now), to_text(stale_before)],
        ))

    def reminder_sent(self, reminder_id: int, now: dt.datetime) -> None:
        with self.write() as db:
            db.execute(
                "UPDATE reminders SET status = 'sent', sent_at = ?, attempts = attempts + 1, last_error = NULL,"
                " next_attempt_at = NULL WHERE id = ?",
                [to_text(now), reminder_id],
            )

    def reminder_failed(self, reminder_id: int, error: str, next_attempt: dt.datetime) -> None:
        with self.write() as db:
            db.execute(
                "UPDATE reminders SET status = 'failed', attempts = attempts + 1, last_error = ?,"
                " next_attempt_at = ? WHERE id = ?",
                [error[:500], to_text(next_attempt), reminder_id],
            )

    def reminders_for(self, serial: str) -> list[dict]:
        rows = list(self.db.query("SELECT * FROM reminders WHERE serial = ? ORDER BY id", [serial]))
        for row in rows:
            row["recipients"] = json.loads(row["recipients"])
        return rows

    def waiting_reminders(self, now: dt.datetime, limit: int = 1000) -> list[dict]:
        """Failed reminders of unrevoked certificates whose next try is after `now` (`remind`
        lists them; retry_candidates takes them when their time comes)."""
        rows = list(self.db.query(
            "SELECT r.*, c.common_name FROM reminders r JOIN certificates c ON c.serial = r.serial"
            " WHERE r.status = 'failed' AND r.next_attempt_at > ? AND c.revoked_at IS NULL ORDER BY r.id LIMIT ?",
            [to_text(now), limit]))
        for row in rows:
            row["recipients"] = json.loads(row["recipients"])
        return rows

    def failed_reminders(self, limit: int = 50) -> list[dict]:
        rows = list(self.db.query(
            "SELECT r.*, c.common_name FROM reminders r JOIN certificates c ON c.serial = r.serial"
            " WHERE r.status = 'failed' ORDER BY r.id DESC LIMIT ?", [limit]))
        for row in rows:
            row["recipients"] = json.loads(row["recipients"])
        return rows
