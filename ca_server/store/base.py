"""Connections and transactions. One sqlite3 connection per thread (and per process: a forked
server worker opens its own), WAL so readers never wait for the writer."""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from sqlite_utils import Database
from sqlite_utils.db import dedupe_keys

from .backend import SharedBackend
from .checkpoints import BACKSTOP_PAGES
from .dialect import SQLITE
from .schema_more import migrations  # schema.py's, and the later ones

MARKER_BYTES = 8

BUSY_TIMEOUT_MS = 30_000


class _Database(Database):
    def query(self, sql: str, params=None) -> Iterator[dict]:
        """Rows as dicts, as sqlite-utils gives them, without the SAVEPOINT and RELEASE it runs
        around every statement (to roll back one that turns out to return no rows): the store
        queries only with SELECTs, and the two extra statements were two more GIL releases per
        read, six of the fourteen statements of an ACME poll (issue 29)."""
        cursor = self.conn.execute(sql, params or ())
        if cursor.description is None:
            raise ValueError(f"query() is for statements that return rows: {sql[:60]}")
        keys = dedupe_keys(d[0] for d in cursor.description)
        return (dict(zip(keys, row, strict=True)) for row in cursor)


class StoreBase(SharedBackend):
    kind = "sqlite"
    dialect = SQLITE
    # Checkpoint (and fsync) every ~40 MB of WAL rather than every 4 MB: a third less time per
    # insert. Server workers leave checkpoints to a background thread (checkpoints.py).
    wal_autocheckpoint = 10_000

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._local = threading.local()

    @property
    def db(self) -> Database:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000)
            conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            # NORMAL is durable against a process crash (SIGKILL) in WAL mode; only a power
            # loss can drop the last transactions.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA cache_size=-32768")  # 32 MiB: index pages of a large store stay in memory
            conn.execute(f"PRAGMA wal_autocheckpoint={int(self.wal_autocheckpoint)}")
            local.db = _Database(conn, execute_plugins=False)
            local.pid = os.getpid()
        return local.db

    @contextlib.contextmanager
    def write(self) -> Iterator[Database]:
        """A write transaction that takes the write lock at its start (BEGIN IMMEDIATE): a
        transaction that reads before it writes could otherwise fail with SQLITE_BUSY when
        another process committed in between, instead of waiting its turn."""
        db = self.db
        conn = db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            conn.rollback()
            raise
        else:
            conn.execute("COMMIT")

    def write_many(self) -> contextlib.AbstractContextManager[Database]:
        """A write transaction of inserts that read nothing back (PostgreSQL pipelines it)."""
        return self.write()

    @contextlib.contextmanager
    def one_statement(self) -> Iterator[Database]:
        """For a write that is one statement: run in autocommit, its own transaction, as
        PostgreSQL runs it (BEGIN IMMEDIATE ... COMMIT around it were two more statements, each a
        GIL release: every ACME request uses a nonce this way, issue 29). Inside a caller's
        transaction it is part of that one."""
        db = self.db
        conn = db.conn
        if conn.in_transaction:
            yield db
            return
        conn.isolation_level = None  # the sqlite3 module would otherwise leave its implicit one open
        try:
            yield db
        finally:
            conn.isolation_level = ""

    def serialize(self, db: Database, name: str) -> None:
        """Inside a write transaction: wait for other transactions serialized on `name`. SQLite
        has one writer at a time already (BEGIN IMMEDIATE); PostgreSQL takes an advisory lock."""

    @contextlib.contextmanager
    def writers_queue(self) -> Iterator[None]:
        """Writers of all processes take turns on a file lock before SQLite's: a blocked flock
        wakes as soon as it is free, where SQLite's busy handler sleeps 1, 2, 5 ... 100 ms between
        tries (the long tail of issuance latency). Held around certificate writes."""
        path = self.path.with_name(self.path.name + ".write-queue")
        fd = self.per_process("_queue_fd", lambda: os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def migrate(self) -> None:
        """Create or upgrade the schema. A file lock keeps two processes starting at once from
        applying the same migration twice."""
        new = not self.path.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".migrate-lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if new:
                # Create the file 0600 before SQLite does: the -wal and -shm files inherit it.
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
            self.db.execute("PRAGMA journal_mode=WAL")
            migrations.apply(self.db)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def checkpoint_in_background(self) -> None:
        """This process's connections leave checkpoints to a Checkpointer thread and keep only
        the backstop."""
        self.wal_autocheckpoint = BACKSTOP_PAGES
        if getattr(self._local, "pid", None) == os.getpid():  # this thread's connection is open already
            self.db.conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")

    def ping(self) -> bool:
        try:
            return next(self.db.query("SELECT count(*) AS n FROM sqlite_master"))["n"] > 0
        except sqlite3.Error:
            return False

    def integrity_check(self) -> str:
        return next(self.db.query("PRAGMA integrity_check"))["integrity_check"]

    # Eight bytes in a file beside the database, rewritten in place with random bytes after every
    # revocation: OCSP answers cached in any worker compare them to the bytes read when the answer
    # was made. The workers read them through a shared memory map, with no system call: a stat
    # (the marker's inode, as it was) released the GIL on every OCSP request, and with four
    # requests in a worker each release let another thread in (issue 29).
    def revocation_marker(self) -> bytes:
        view = self.__dict__.get("_marker_view")
        if view is None:
            view = self.__dict__["_marker_view"] = self._map_marker()
        return view[:MARKER_BYTES]

    def _mark_revocation(self) -> None:
        fd = os.open(self._marker_path(), os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.pwrite(fd, os.urandom(MARKER_BYTES), 0)  # another value every time; readers see it at once
        finally:
            os.close(fd)

    def _map_marker(self) -> mmap.mmap:
        fd = os.open(self._marker_path(), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < MARKER_BYTES:  # new, or the earlier marker (any size): widen it
                os.pwrite(fd, os.urandom(MARKER_BYTES), 0)
            return mmap.mmap(fd, MARKER_BYTES, mmap.MAP_SHARED, mmap.PROT_READ)
        finally:
            os.close(fd)

    def _marker_path(self) -> str:
        return str(self.path.with_name(self.path.name + ".revoked-marker"))

    def close(self) -> None:
        held = self.__dict__.pop("_queue_fd", None)
        if held is not None and held[0] == os.getpid():
            os.close(held[1])
        db = getattr(self._local, "db", None)
        if db is not None and getattr(self._local, "pid", None) == os.getpid():
            db.close()
        self._local = threading.local()
