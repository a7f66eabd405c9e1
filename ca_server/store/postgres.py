"""The PostgreSQL backend (psycopg 3): the store's queries, written once in the SQL both engines
speak (the few spellings that differ through `dialect`), reach PostgreSQL through `PgDatabase`,
which changes only the placeholder style. What
differs in behaviour (locks, the revocation marker, migrations) is in `PostgresBase`.

One connection per thread and process, in autocommit mode: `write()` opens the transaction, as
the SQLite backend does. A connection that fails (the server restarted, a failover) is dropped
and the caller gets `StoreUnavailableError` (503 + Retry-After); the next call connects again."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import threading
from collections.abc import Iterator

import psycopg
from psycopg import postgres
from psycopg.adapt import Dumper
from psycopg.rows import dict_row

from ..errors import BadRequestError, StoreUnavailableError
from .backend import SharedBackend
from .dialect import POSTGRESQL
from .schema_pg import apply_migrations

CONNECT_TIMEOUT_SECONDS = 5


class _BoolAsInteger(Dumper):
    oid = postgres.types["int8"].oid

    def dump(self, obj: bool) -> bytes:
        return b"1" if obj else b"0"


class PgCursor:
    """The part of a DB-API cursor the queries use, over a psycopg cursor."""

    def __init__(self, cursor: psycopg.Cursor) -> None:
        self._cursor = cursor

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def description(self):
        return self._cursor.description

    def fetchone(self):
        return self._cursor.fetchone() if self._cursor.description else None

    def fetchall(self) -> list:
        return self._cursor.fetchall() if self._cursor.description else []

    def __iter__(self):
        return iter(self.fetchall())


class PgDatabase:
    """What the queries call on sqlite-utils' Database (`query`, `execute`, `conn.execute`,
    `conn.executemany`), on one psycopg connection, made when first needed and again after one
    failed. A read or a BEGIN outside a transaction that fails on a connection the server has
    dropped (a restart, a failover) is tried once more on a new one: it changed nothing."""

    def __init__(self, connect) -> None:
        self._connect = connect
        self._conn: psycopg.Connection | None = None
        self._in_transaction = False

    @property
    def conn(self) -> PgDatabase:
        return self

    def execute(self, sql: str, params=()) -> PgCursor:
        statement = translate(sql, isinstance(params, dict))
        cursor = self._run(lambda conn: conn.execute(statement, params or None), _retry_safe(sql))
        if statement in ("BEGIN", "COMMIT", "ROLLBACK"):
            self._in_transaction = statement == "BEGIN"
        return PgCursor(cursor)

    def executemany(self, sql: str, rows) -> PgCursor:
        rows = list(rows)

        def run(conn):
            cursor = conn.cursor()
            if rows:
                cursor.executemany(translate(sql, isinstance(rows[0], dict)), rows)
            return cursor
        return PgCursor(self._run(run, False))

    def query(self, sql: str, params=()) -> Iterator[dict]:
        statement = translate(sql, isinstance(params, dict))

        def run(conn):
            with conn.cursor(row_factory=dict_row) as cursor:
                cursor.execute(statement, params or None)
                return cursor.fetchall() if cursor.description else []
        return iter(self._run(run, _retry_safe(sql)))

    @contextlib.contextmanager
    def pipelined(self) -> Iterator[None]:
        """Statements sent without waiting for each answer (psycopg's pipeline mode); their
        errors are raised when the block ends. One round trip for a whole write transaction."""
        if self._conn is None:
            self._conn = self._connect()
        try:
            with self._conn.pipeline():
                yield
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
            self.close()
            raise StoreUnavailableError() from exc
        except BaseException:
            # A failed statement left the transaction open and aborted (its COMMIT never ran);
            # a connection lost meanwhile was closed already (StoreUnavailableError).
            self._in_transaction = False
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.execute("ROLLBACK")
            raise

    def close(self) -> None:
        conn, self._conn, self._in_transaction = self._conn, None, False
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _run(self, work, retry_safe: bool):
        for attempt in (1, 2):
            fresh = self._conn is None
            if fresh:
                self._conn = self._connect()
            try:
                return work(self._conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                if isinstance(exc, psycopg.errors.QueryCanceled):
                    raise
                safe = retry_safe and not self._in_transaction and not fresh and attempt == 1
                self.close()
                if not safe:
                    raise StoreUnavailableError() from exc
            except psycopg.DataError as exc:
                if "NUL" not in str(exc):
                    raise
                # SQLite stores and compares such text; PostgreSQL refuses it before the query runs.
                raise BadRequestError("Text with a NUL character (\\0) cannot be used here.") from None
        raise AssertionError("unreachable")  # pragma: no cover


def _retry_safe(sql: str) -> bool:
    head = sql.lstrip()[:6].upper()
    return head in ("SELECT", "BEGIN")


_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=1024)
def translate(sql: str, named: bool = False) -> str:
    """The placeholders of the shared queries (`?`, or `:name` with a dict of parameters) in
    psycopg's style; where the engines' SQL differs, the queries spell it through the dialect."""
    sql = sql.replace("%", "%%").replace("?", "%s")
    if named:
        sql = _NAMED.sub(r"%(\1)s", sql)
    return sql


class PostgresBase(SharedBackend):
    kind = "postgresql"
    dialect = POSTGRESQL
    path = None  # no database file; nothing to checkpoint

    def __init__(self, url: str, password: str | None = None) -> None:
        self.url = url
        self._password = password
        self._local = threading.local()

    def __repr__(self) -> str:  # the password never appears
        return f"PostgresStore({redact(self.url)})"

    @property
    def db(self) -> PgDatabase:
        local = self._local
        if getattr(local, "pid", None) != os.getpid():  # a forked worker makes its own connections
            local.db = PgDatabase(self._connect)
            local.pid = os.getpid()
        return local.db

    def _connect(self) -> psycopg.Connection:
        try:
            conn = psycopg.connect(self.url, password=self._password, autocommit=True,
                                   connect_timeout=CONNECT_TIMEOUT_SECONDS)
        except psycopg.OperationalError as exc:
            raise StoreUnavailableError() from exc
        conn.adapters.register_dumper(bool, _BoolAsInteger)  # flags are 0/1 integers, as in SQLite
        return conn

    @contextlib.contextmanager
    def write(self) -> Iterator[PgDatabase]:
        db = self.db
        db.execute("BEGIN")
        try:
            yield db
        except BaseException:
            with contextlib.suppress(StoreUnavailableError):
                if db._in_transaction:
                    db.execute("ROLLBACK")
            raise
        else:
            db.execute("COMMIT")

    @contextlib.contextmanager
    def write_many(self) -> Iterator[PgDatabase]:
        """write(), pipelined: for transactions of inserts that read nothing back."""
        db = self.db
        with db.pipelined(), self.write() as db:
            yield db

    @contextlib.contextmanager
    def one_statement(self) -> Iterator[PgDatabase]:
        yield self.db  # autocommit: the statement is its own transaction (no BEGIN/COMMIT round trips)

    def serialize(self, db: PgDatabase, name: str) -> None:
        """Inside a write transaction: wait for any other transaction serialized on `name`
        (a transaction-scoped advisory lock; SQLite's writer lock does this for its backend)."""
        db.execute("SELECT pg_advisory_xact_lock(hashtext(?))", [name])

    @contextlib.contextmanager
    def writers_queue(self) -> Iterator[None]:
        yield  # PostgreSQL's writers do not queue on one lock

    def migrate(self) -> None:
        with self.write() as db:
            apply_migrations(db, self.serialize)

    def checkpoint_in_background(self) -> None:
        pass

    def ping(self) -> bool:
        try:
            return self.db.execute("SELECT 1").fetchone()[0] == 1
        except StoreUnavailableError:
            return False

    def integrity_check(self) -> str:
        return "ok" if self.ping() else "unreachable"

    # A sequence advanced after every revocation: cached OCSP answers on every node compare it.
    def revocation_marker(self):
        return self.db.execute("SELECT last_value, is_called FROM revocation_events").fetchone()

    def _mark_revocation(self) -> None:
        self.db.execute("SELECT nextval('revocation_events')")

    def close(self) -> None:
        if getattr(self._local, "pid", None) == os.getpid():
            self._local.db.close()
        self._local = threading.local()


def redact(url: str) -> str:
    """The URL without a password, for messages and logs."""
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", url)
