"""WAL checkpoints in the background, so that no request waits for one.

SQLite copies the write-ahead log into the database file (a checkpoint, with an fsync) inside the
COMMIT that makes the log cross `wal_autocheckpoint` pages. With ~17 pages written per certificate
that was one issuance in ~600 waiting 25-45 ms. Each server worker runs this thread instead and
keeps the automatic checkpoint only as a backstop (BACKSTOP_PAGES, should the threads ever
stall). Two workers' checkpoints do not collide: while one runs, the other's returns at once."""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger("ca_server")

CHECKPOINT_SECONDS = 0.5
BACKSTOP_PAGES = 50_000  # ~200 MB of WAL; the server writes at most ~20,000 pages per second here


class Checkpointer:
    """A daemon thread with its own connection that runs a PASSIVE checkpoint every `interval`
    seconds: it copies what it can without blocking readers or writers."""

    def __init__(self, path: Path, interval: float = CHECKPOINT_SECONDS) -> None:
        self.path = Path(path)
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)

    def start(self) -> Checkpointer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            while not self._stop.wait(self.interval):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:  # e.g. the disk is full: say so, try again
                    log.warning("WAL checkpoint failed: %s", exc)
        finally:
            conn.close()
