"""Rate-limit counters in the store, for nodes that share a database: a counter per key with an
expiry (epoch seconds), added to in one statement (an upsert that starts over once expired)."""

from __future__ import annotations

import random

SWEEP_EVERY = 1000  # about one call in this many also deletes long-expired counters


class CounterQueries:
    def counter_add(self, key: str, amount: int, expires_at: float, now: float) -> int:
        """The count after adding `amount`; an expired counter starts again from it."""
        with self.one_statement() as db:
            count = db.execute(
                "INSERT INTO rate_counters (key, count, expires_at) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET"
                " count = CASE WHEN rate_counters.expires_at <= ? THEN excluded.count"
                " ELSE rate_counters.count + excluded.count END,"
                " expires_at = CASE WHEN rate_counters.expires_at <= ? THEN excluded.expires_at"
                " ELSE rate_counters.expires_at END RETURNING count",
                [key, amount, expires_at, now, now]).fetchone()[0]
        if random.randrange(SWEEP_EVERY) == 0:  # noqa: S311 - pacing, not security
            with self.one_statement() as db:
                db.execute("DELETE FROM rate_counters WHERE expires_at < ?", [now - 3600])
        return count

    def counters_get(self, keys: list[str], now: float) -> dict[str, int]:
        """The live counts of `keys` in one query (absent: not counted yet or expired)."""
        marks = ", ".join("?" for _ in keys)
        return dict(self.db.execute(f"SELECT key, count FROM rate_counters WHERE key IN ({marks}) AND expires_at > ?",
                                    [*keys, now]).fetchall())

    def counter_get(self, key: str, now: float) -> tuple[int, float]:
        """(count, expiry) of a live counter; (0, now) when there is none."""
        row = self.db.execute("SELECT count, expires_at FROM rate_counters WHERE key = ? AND expires_at > ?",
                              [key, now]).fetchone()
        return (row[0], row[1]) if row else (0, now)

    def counter_clear(self, key: str) -> None:
        with self.write() as db:
            db.execute("DELETE FROM rate_counters WHERE key = ?", [key])
