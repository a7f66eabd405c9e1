"""What the query modules need from a backend: written down, and checked for both backends by
tests/test_store_backends.py."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from typing import Any, Protocol, runtime_checkable

from .dialect import Dialect

_making = threading.RLock()  # one per-process object made at a time (reentrant: a make() may ask for another)


def _new_making_lock() -> None:
    """A forked child starts with a lock no thread holds (the parent's may have been held)."""
    global _making  # noqa: PLW0603
    _making = threading.RLock()


os.register_at_fork(after_in_child=_new_making_lock)


class SharedBackend:
    """What both backends do the same way."""

    def per_process(self, name: str, make: Any) -> Any:
        """An object of this process, made on first use: a forked worker must not use its
        parent's file descriptors, locks, queues or connections."""
        held = self.__dict__.get(name)
        if held is None or held[0] != os.getpid():
            with _making:  # the first requests of a worker arrive together: one makes it, the others use it
                held = self.__dict__.get(name)
                if held is None or held[0] != os.getpid():
                    held = self.__dict__[name] = (os.getpid(), make())
        return held[1]

    def count_at_most(self, query: str, args: list, most: int) -> int:
        """How many rows `query` gives, counted up to most + 1: on an index alone, it reads at most
        that many entries however many rows match (how lists and the audit page choose an index)."""
        return self.db.conn.execute(f"SELECT count(*) FROM ({query} LIMIT ?) AS limited", [*args, most + 1]).fetchone()[0]


@runtime_checkable
class StoreBackend(Protocol):
    kind: str  # "sqlite" | "postgresql"
    dialect: Dialect  # the spellings that differ (dialect.py)

    @property
    def db(self) -> Any:
        """This thread's connection: query(sql, params) -> dict rows, execute(sql, params) ->
        cursor (rowcount, fetchone, iteration), conn.execute / conn.executemany. SQL is written
        with ? (or :name) placeholders in the dialect both engines share."""

    def write(self) -> contextlib.AbstractContextManager[Any]:
        """A write transaction: committed on exit, rolled back on an exception."""

    def write_many(self) -> contextlib.AbstractContextManager[Any]:
        """write() for inserts that read nothing back (may be sent without waiting)."""

    def one_statement(self) -> contextlib.AbstractContextManager[Any]:
        """For a write that is a single statement (committed on exit either way)."""

    def serialize(self, db: Any, name: str) -> None:
        """Inside write(): wait for other writers serialized on `name` (an advisory lock)."""

    def writers_queue(self) -> contextlib.AbstractContextManager[None]: ...

    def per_process(self, name: str, make: Any) -> Any: ...

    def migrate(self) -> None: ...

    def checkpoint_in_background(self) -> None: ...

    def count_at_most(self, query: str, args: list, most: int) -> int: ...

    def ping(self) -> bool: ...

    def revocation_marker(self) -> Any:
        """A value that changes after every revocation (any process, any node)."""

    def take_lease(self, name: str, holder: str, now: dt.datetime, seconds: float) -> bool: ...

    def close(self) -> None: ...
