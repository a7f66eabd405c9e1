"""A consistent SQLite copy of a store (backup.py): SQLite's online backup of a running instance,
or every table of a PostgreSQL store read in one repeatable-read transaction; and the checks a
backup's copy must pass (integrity, row counts)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from .copy import TABLES, _columns


def write_snapshot(store, target: Path) -> dict:
    """Copy `store` into a new SQLite file `target`; returns {"rows": per table, "audit_position"}."""
    if store.kind == "sqlite":
        with sqlite3.connect(target) as out:
            store.db.conn.backup(out)  # consistent while the server goes on writing
    else:
        from . import Store

        copy = Store(target)
        copy.migrate()
        source = store.db
        source.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")  # one snapshot of every table
        try:
            with copy.write() as out:
                for table in TABLES:
                    columns = _columns(out.conn, table)
                    rows = source.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall()  # noqa: S608
                    out.conn.executemany(
                        f"INSERT OR REPLACE INTO {table} ({', '.join(columns)}) VALUES"  # noqa: S608
                        f" ({', '.join('?' for _ in columns)})",
                        [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row) for row in rows])
        finally:
            source.execute("COMMIT")
        copy.close()
    return snapshot_counts(target)


def snapshot_counts(path: Path) -> dict:
    with sqlite3.connect(path) as db:
        return {"rows": {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES},  # noqa: S608
                "audit_position": db.execute("SELECT COALESCE(max(id), 0) FROM audit_log").fetchone()[0]}


def snapshot_problem(path: Path, rows: dict[str, int]) -> str | None:
    """What is wrong with a snapshot file, in words, or None."""
    try:
        with sqlite3.connect(path) as db:
            if db.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                return "it fails SQLite's integrity check"
            for table, count in rows.items():
                found = db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]  # noqa: S608
                if found != count:
                    return f"it has {found} rows in {table}, its manifest says {count}"
    except sqlite3.DatabaseError as exc:
        return f"it is not a readable SQLite database ({exc})"
    return None


def upgrade(path: Path) -> None:
    """Bring a restored snapshot's schema up to this version's (an older backup)."""
    from . import Store

    store = Store(path)
    store.migrate()
    store.close()
