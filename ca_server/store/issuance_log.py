"""The issuance log's rows (issue 27): its entries in the order the store gives them (on several
nodes too: an advisory lock, or SQLite's one writer), the hash of every complete subtree of its
Merkle tree (level, index), and its signed checkpoints. The format and the file on another disk
belong to recovery/issuance_log.py, which the server attaches (`attach_log`); the store calls it
inside the transaction that stores a certificate or a revocation, so both commit or neither, and
after the commit to have the file written before anything is returned."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import Any

from ..clock import to_text
from .certificates import _COLUMNS, row_to_record

LOCK = "ca_server.issuance_log"


class IssuanceLogQueries:
    def attach_log(self, writer: Any) -> None:
        """`writer.append(store, db, events)` runs inside every transaction that issues or revokes."""
        self.__dict__["_issuance_log"] = writer

    @property
    def issuance_log(self) -> Any:
        return self.__dict__.get("_issuance_log")

    def _log_events(self, db, events: list[tuple]) -> int | None:
        """Inside the transaction: the entries, in the store's order; the log's size after them."""
        writer = self.issuance_log
        if writer is None or not events:
            return None
        self.serialize(db, LOCK)
        return writer.append(self, db, events)

    def _log_sync(self, through: int | None) -> None:
        """After the commit, before anything is returned: the log file holds the entries up to
        `through`, fsynced (this process's or another's write of them)."""
        if through is not None:
            self.issuance_log.sync(self, through)

    def backfill_log(self) -> int:
        """Once, on a store that had certificates before it had a log: each becomes an "import"
        entry (revoked ones with their revocation), in the order they were stored."""
        if self.log_size() or self.db.execute("SELECT 1 FROM certificates LIMIT 1").fetchone() is None:
            return 0
        count, after, through = 0, -1, None
        with self.write() as db:
            self.serialize(db, LOCK)
            if self.log_size(db):
                return 0  # another process did it meanwhile
            while True:
                rows = list(db.query(f"SELECT {_COLUMNS} FROM certificates WHERE rowid > ? ORDER BY rowid LIMIT 5000",
                                     [after]))
                if not rows:
                    break
                through = self.issuance_log.append(self, db, [("import", row_to_record(r)) for r in rows])
                count, after = count + len(rows), rows[-1]["rowid"]
        self._log_sync(through)
        return count

    def log_size(self, db=None) -> int:
        row = (db or self.db).execute("SELECT max(idx) FROM log_entries").fetchone()
        return 0 if row[0] is None else row[0] + 1

    def log_hash(self, level: int, index: int, db=None) -> bytes:
        row = (db or self.db).execute("SELECT hash FROM log_hashes WHERE level = ? AND idx = ?",
                                      [level, index]).fetchone()
        if row is None:
            raise LookupError(f"no stored hash at level {level}, index {index}")
        return bytes(row[0])

    def log_insert(self, db, entries: list[tuple[int, str, str, str]], hashes: Iterable[tuple[int, int, bytes]]) -> None:
        """(index, kind, serial, entry text) rows and the (level, index, hash) of subtrees they complete."""
        db.conn.executemany("INSERT INTO log_entries (idx, kind, serial, entry) VALUES (?, ?, ?, ?)", entries)
        db.conn.executemany("INSERT INTO log_hashes (level, idx, hash) VALUES (?, ?, ?)", list(hashes))

    def log_entries(self, start: int, stop: int | None = None, db=None) -> Iterator[tuple[int, str, bytes | None]]:
        """(index, stored entry, the certificate's DER for an issue or import entry) from `start`
        on (to `stop`, excluded), in order, read in batches. The stored entry of a certificate
        lacks its DER, which the certificate's row holds (recovery/issuance_log.py puts it back)."""
        conn = db or self.db
        while stop is None or start < stop:
            upper = start + 5000 if stop is None else min(start + 5000, stop)
            rows = conn.execute(
                "SELECT l.idx, l.entry, c.der FROM log_entries l LEFT JOIN certificates c ON c.serial = l.serial"
                " AND l.kind IN ('issue', 'import') WHERE l.idx >= ? AND l.idx < ? ORDER BY l.idx",
                [start, upper]).fetchall()
            yield from ((r[0], r[1], bytes(r[2]) if r[2] is not None else None) for r in rows)
            if stop is None and not rows:
                return
            start = upper

    def log_positions(self, serial: str) -> dict[str, int]:
        """The indexes of a certificate's entries by kind ("issue", "revoke", "import")."""
        return {row[0]: row[1] for row in self.db.execute(
            "SELECT kind, idx FROM log_entries WHERE serial = ? ORDER BY idx", [serial]).fetchall()}

    def certificate_states(self) -> Iterator[tuple[str, str, str | None]]:
        """(serial, SHA-256 fingerprint, revoked_at) of every certificate, for comparing with the log."""
        yield from self.db.execute("SELECT serial, fingerprint_sha256, revoked_at FROM certificates").fetchall()

    def insert_log_checkpoint(self, size: int, note: str, at: dt.datetime) -> None:
        with self.write() as db:
            db.execute("INSERT INTO log_checkpoints (size, created_at, note) VALUES (?, ?, ?)"
                       " ON CONFLICT (size) DO NOTHING", [size, to_text(at), note])

    def latest_log_checkpoint(self) -> dict | None:
        rows = list(self.db.query("SELECT size, created_at, note FROM log_checkpoints ORDER BY size DESC LIMIT 1"))
        return rows[0] if rows else None

    def log_checkpoints(self) -> list[dict]:
        return list(self.db.query("SELECT size, created_at, note FROM log_checkpoints ORDER BY size"))
