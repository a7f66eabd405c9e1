"""The server's access log: one line per request, made before the response goes out and written
by a thread of its own within FLUSH_SECONDS.

Granian's own access log wrote the line after handing the response over, when (most likely; not
shown by a profile) the connection's next request was already running in another thread of the
same interpreter. Against that build (6 alternating rounds, same machine): 1.50-1.72 against 1.60-1.91 ms of server CPU per issued
certificate at concurrency 1, 1.56-1.85 against 1.77-2.05 at 4; one line costs ~19 us here. Granian
also logged the decoded path, so a "%0A" in a URL started a line of the requester's choosing.
The line reads as Granian's did: address, method, path, protocol, status, milliseconds.

One os.write per request (this module's first form) released the GIL in the request's thread:
with four requests in a worker, another thread took it and the request waited to get it back.
With the revocation marker's stat and the gate's permits, such hand-offs made most of what issue
29's first round removed (OCSP at c=4: 80 -> 65 us of CPU per answer, medians of 8 rounds). The
lines now go out in batches, as nginx's `access_log ... buffer= flush=` does: every FLUSH_SECONDS,
or sooner when FLUSH_LINES wait, and when the worker exits. A worker killed outright (SIGKILL, a crash) loses at most that batch."""

from __future__ import annotations

import atexit
import collections
import os
import re
import sys
import threading
import time
from multiprocessing import util as mp_util
from urllib.parse import quote

FLUSH_SECONDS = 0.2
FLUSH_LINES = 512
# Lines held while standard output takes none (a stalled pipe or journald): past this many, new
# lines are counted, not kept, and the count is written when the output moves again. Requests
# never wait for the log, and its memory stays bounded (~100 bytes a line).
MAX_WAITING = 100_000

# What needs no quoting to stay one line (PEP 3333 paths are latin-1 text): most paths, OCSP's
# base64 included, skip quote().
_PLAIN = re.compile(r"[A-Za-z0-9/._~:@!$&'()*+,;=-]*")  # no "%": a decoded one is quoted again


class AccessLog:
    """Writes the lines with os.write to standard output, where Granian's access logger wrote (the
    message alone). Python's logging cost ~15 us a line here (a LogRecord, a Formatter, the
    handler's lock and flush): 40% of OCSP's throughput at c=4 (10-12k answers/s with it, 18-21k
    without a log). A request pays ~1 us: its line's fields go into a deque; the writer thread
    makes the lines and writes them."""

    def __init__(self, app, stream=None, flush_seconds: float = FLUSH_SECONDS) -> None:
        self.app = app
        self.fd = (stream or sys.stdout).fileno()
        self.pending: collections.deque[tuple] = collections.deque()  # append and popleft: thread-safe
        self.writing = threading.Lock()  # one writer at a time, lines in order
        self.wake = threading.Event()
        self.flush_seconds = flush_seconds
        self.closed = False
        self.dropped = 0
        threading.Thread(target=self._writer, name="access-log", daemon=True).start()
        # Granian's workers are multiprocessing children, which end with os._exit: atexit runs
        # in a plain process only, multiprocessing's finalizers in a worker.
        atexit.register(self.flush)
        mp_util.Finalize(self, self.flush, exitpriority=100)

    def flush(self) -> None:
        """Writes every waiting line now."""
        with self.writing:
            lines = []
            while self.pending:
                try:
                    lines.append(line(*self.pending.popleft()))
                except Exception:  # noqa: BLE001 - the writer must outlive any odd request
                    lines.append(b"- - (a request whose line could not be made)\n")
            dropped, self.dropped = self.dropped, 0  # an increment meanwhile may be lost: a count, not a record
            if dropped:
                lines.append(f"- - access log: {dropped} lines dropped while standard output took none\n".encode())
            data = b"".join(lines)
            while data:
                try:
                    data = data[os.write(self.fd, data):]
                except OSError:
                    return  # a closed or full standard output must not fail the server

    def close(self) -> None:
        """Writes what waits and stops the writer (before the stream it writes to is closed)."""
        self.closed = True
        self.wake.set()
        self.flush()

    def _writer(self) -> None:
        while not self.closed:
            self.wake.wait(self.flush_seconds)
            self.wake.clear()
            if not self.closed:
                self.flush()

    def __call__(self, environ: dict, start_response):
        start = time.perf_counter()
        statuses: list[str] = []

        def recording(status: str, headers, exc_info=None):
            statuses.append(status)
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, recording)
        except BaseException:
            statuses.append("500")
            raise
        finally:
            # What the line needs, as it is: the writer thread makes the line, off the request's path.
            if len(self.pending) >= MAX_WAITING:
                self.dropped += 1
            else:
                self.pending.append((environ.get("REMOTE_ADDR", "-"), environ.get("REQUEST_METHOD", "-"),
                                     environ.get("PATH_INFO", ""), environ.get("SERVER_PROTOCOL", "-"),
                                     statuses[-1] if statuses else "500", time.perf_counter() - start))
            if len(self.pending) >= FLUSH_LINES:
                self.wake.set()
        return body


def line(address: str, method: str, path: str, protocol: str, status: str, seconds: float) -> bytes:
    """One request's line, as Granian's read."""
    # PATH_INFO is the decoded path (bytes as latin-1, PEP 3333): quoted again, a "%0A" in a URL
    # cannot start a forged line. A server that decoded otherwise must not turn a good answer into
    # an error here, hence the replacement.
    if not _PLAIN.fullmatch(path):
        path = quote(path.encode("latin-1", "backslashreplace"), safe="/:@!$&'()*+,;=~")
    return (f'{address} - "{method} {path} {protocol}" {status.split(" ", 1)[0]} {seconds * 1000:.3f}ms\n'
            ).encode("latin-1", "backslashreplace")
