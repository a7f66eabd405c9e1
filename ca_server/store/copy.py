"""`ca-server db copy`: an instance's SQLite store into PostgreSQL, table by table in one
PostgreSQL transaction, read from one SQLite snapshot (a server may keep running; what it writes
after the snapshot is copied by running the copy again with `resume`). Every table's rows are
compared afterwards by count and by a checksum that does not depend on row order or collation."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import CAError

# In the order foreign keys need; runtime state (leases, rate counters, nonces) is not copied.
TABLES = ["certificates", "certificate_search", "audit_log", "reminders", "crls", "ocsp_responders",
          "ca_revocations", "users", "tokens", "requests", "acme_accounts", "acme_eab_keys", "acme_objects",
          "calendar_feeds", "webhook_deliveries", "ca_identity", "scep_challenges", "scep_transactions",
          "log_entries", "log_hashes", "log_checkpoints", "sessions"]
# SQLite's implicit rowid, an identity column of that name in PostgreSQL (schema_pg.py).
ROWID_TABLES = {"certificates", "certificate_search", "acme_objects"}
IDENTITY = {"certificates": "rowid", "certificate_search": "rowid", "acme_objects": "rowid", "audit_log": "id",
            "reminders": "id", "webhook_deliveries": "id"}
BATCH = 2000


class CopyError(CAError):
    code = "copy_failed"


@dataclass(frozen=True)
class TableCopy:
    table: str
    source_rows: int
    target_rows: int
    checksum: str
    matches: bool

    def line(self) -> str:
        verdict = "ok" if self.matches else "MISMATCH"
        return f"{self.table}: {self.source_rows} rows, {self.target_rows} in the target, checksum {self.checksum[:16]} {verdict}"


def copy_store(source, target, *, resume: bool = False) -> list[TableCopy]:
    """Copy `source` (a SQLite Store) into `target` (a migrated PostgresStore)."""
    if not resume:
        filled = [t for t in TABLES if target.db.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone()]
        if filled:
            raise CopyError(f"The target database already holds rows ({', '.join(filled)}). Copy into an empty "
                            "database, or pass --resume to add only the rows it lacks (a copy run again).")
    conn = source.db.conn
    conn.execute("BEGIN")  # one snapshot of every table
    try:
        with target.write() as db:
            for table in TABLES:
                columns = _columns(conn, table)
                placeholders = ", ".join("?" for _ in columns)
                insert = (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"
                          " ON CONFLICT DO NOTHING")
                for batch in _batches(conn.execute(f"SELECT {', '.join(columns)} FROM {table}")):
                    db.executemany(insert, batch)
            for table, column in IDENTITY.items():  # new rows continue after the copied ones
                db.execute(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
                           f" (SELECT coalesce(max({column}), 0) + 1 FROM {table}), false)")
            db.execute("SELECT nextval('revocation_events')")  # cached OCSP answers are asked again
        return [_compare(conn, target, table) for table in TABLES]
    finally:
        conn.execute("COMMIT")


def _columns(conn, table: str) -> list[str]:
    names = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
    return (["rowid"] if table in ROWID_TABLES else []) + names


def _batches(rows: Iterable) -> Iterable[list]:
    batch = []
    for row in rows:
        batch.append(tuple(row))
        if len(batch) >= BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def _compare(conn, target, table: str) -> TableCopy:
    columns = ", ".join(_columns(conn, table))
    source_count, source_sum = _digest(conn.execute(f"SELECT {columns} FROM {table}"))
    target_count, target_sum = _digest(target.db.execute(f"SELECT {columns} FROM {table}"))
    return TableCopy(table, source_count, target_count, source_sum, (source_count, source_sum) == (target_count, target_sum))


def _digest(rows: Iterable) -> tuple[int, str]:
    """(rows, sha256 over the sorted per-row hashes): the same rows give the same digest in any order."""
    hashes = sorted(hashlib.sha256(json.dumps([_plain(v) for v in row]).encode()).digest() for row in rows)
    return len(hashes), hashlib.sha256(b"".join(hashes)).hexdigest()


def _plain(value):
    return value.hex() if isinstance(value, (bytes, memoryview)) else value
