"""The audit log: append-only rows (triggers refuse UPDATE and DELETE)."""

from __future__ import annotations

import datetime as dt
import json

from sqlite_utils import Database

from ..clock import from_text, to_text

AUDIT_COUNT_MAX = 20_000  # index entries counted per filter value when choosing one


class AuditQueries:
    def append_audit(self, **entry) -> None:
        with self.write() as db:
            self._append_audit(db, **entry)

    @staticmethod
    def _append_audit(
        db: Database,
        *,
        at: dt.datetime,
        action: str,
        actor: str | None = None,
        serial: str | None = None,
        client: str | None = None,
        detail: dict | None = None,
    ) -> None:
        db.conn.execute(
            "INSERT INTO audit_log (at, actor, action, serial, client, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (to_text(at), actor, action, serial, client, json.dumps(detail or {}, sort_keys=True)),
        )

    def audit_entries(
        self,
        *,
        action: str | None = None,
        actor: str | None = None,
        serial: str | None = None,
        limit: int = 200,
        before_id: int | None = None,
    ) -> list[dict]:
        where, params = [], []
        for column, value in (("action", action), ("actor", actor), ("serial", serial)):
            if value:
                where.append(f"{column} = ?")
                params.append(value)
        if before_id is not None:
            where.append("id < ?")
            params.append(before_id)
        source = "audit_log"
        if action and actor and not serial:
            source += self.dialect.index(self._rarer_audit_index(action, actor, before_id))
        sql = f"SELECT id, at, actor, action, serial, client, detail FROM {source}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(limit)
        rows = list(self.db.query(sql, params))
        for row in rows:
            row["detail"] = json.loads(row["detail"])
        return rows

    def _rarer_audit_index(self, action: str, actor: str, before_id: int | None) -> str:
        """With both filters, SQLite cannot tell which value is rare and may read a busy actor's
        million rows for an action it never took: count each (index-only, up to
        AUDIT_COUNT_MAX) and read through the smaller."""
        below, below_args = (" AND id < ?", [before_id]) if before_id is not None else ("", [])
        counts = {index: self.count_at_most(f"SELECT 1 FROM audit_log{self.dialect.index(index)} WHERE {column} = ?{below}",
                                            [value, *below_args], AUDIT_COUNT_MAX)
                  for index, column, value in (("audit_log_action", "action", action),
                                               ("audit_log_actor", "actor", actor))}
        return min(counts, key=counts.get)

    def last_action_at(self, action: str) -> dt.datetime | None:
        """When `action` was last audited (the newest backup, for /metrics and the dashboard)."""
        rows = self.audit_entries(action=action, limit=1)
        return from_text(rows[0]["at"]) if rows else None

    def device_audit(self, limit: int = 100, window: int = 20_000) -> list[dict]:
        """The newest enrollments and refusals at the device doors (SCEP, EST), newest first, from
        the last `window` audit rows (a bounded read however long the log is; the admin page)."""
        door = self.dialect.field("detail", "door")
        rows = list(self.db.query(
            "SELECT id, at, actor, action, serial, client, detail FROM audit_log WHERE id > (SELECT"
            f" COALESCE(max(id), 0) FROM audit_log) - ? AND action IN ('issue', 'approve', 'refuse')"
            f" AND {door} IN ('scep', 'est') ORDER BY id DESC LIMIT ?", [window, limit]))
        for row in rows:
            row["detail"] = json.loads(row["detail"])
        return rows

    def all_audit_entries(self, after_id: int = 0):
        """Oldest first, streamed (for export); only those after `after_id` (a SIEM's last one)."""
        for row in self.db.query("SELECT id, at, actor, action, serial, client, detail FROM audit_log WHERE id > ?"
                                 " ORDER BY id", [after_id]):
            row["detail"] = json.loads(row["detail"])
            yield row

    def audit_action_counts(self, actions: tuple[str, ...]) -> dict[str, int]:
        """How many audit rows each action has (index-only counts; for /metrics)."""
        return {action: self.db.conn.execute("SELECT count(*) FROM audit_log WHERE action = ?",
                                             [action]).fetchone()[0] for action in actions}

    def issuance_door_counts(self) -> dict[str, int]:
        """Certificates issued (approved ones included) by the door they came through (for
        /metrics); rows from before doors were recorded count as "unknown"."""
        door = self.dialect.field("detail", "door")
        rows = self.db.conn.execute(
            f"SELECT COALESCE({door}, 'unknown'), count(*) FROM audit_log{self.dialect.index('audit_log_action')}"
            " WHERE action IN ('issue', 'approve') GROUP BY 1")
        return {name: n for name, n in rows}

    def refusal_code_counts(self) -> dict[str, int]:
        """Refusals by policy code, from the refusal rows' detail (for /metrics)."""
        rows = self.db.conn.execute(
            f"SELECT j.value, count(*) FROM audit_log a{self.dialect.index('audit_log_action')},"
            f" {self.dialect.array_at('a.detail', 'codes', 'j')} WHERE a.action = 'refuse' GROUP BY j.value")
        return {code: n for code, n in rows}
