"""The server's access log: one line per request, written before the response goes out.

Granian's own access log wrote the line after handing the response over, when (most likely; not
shown by a profile) the connection's next request was already running in another thread of the
same interpreter. Against that build (6 alternating rounds, same machine): 1.50-1.72 against 1.60-1.91 ms of server CPU per issued
certificate at concurrency 1, 1.56-1.85 against 1.77-2.05 at 4; one line costs ~19 us here. Granian
also logged the decoded path, so a "%0A" in a URL started a line of the requester's choosing.
The line reads as Granian's did: address, method, path, protocol, status, milliseconds."""

from __future__ import annotations

import os
import re
import sys
import threading
import time
from urllib.parse import quote

# What needs no quoting to stay one line (PEP 3333 paths are latin-1 text): most paths, OCSP's
# base64 included, skip quote().
_PLAIN = re.compile(r"[A-Za-z0-9/._~:@!$&'()*+,;=-]*")  # no "%": a decoded one is quoted again


class AccessLog:
    """Writes each line with one os.write to standard output, where Granian's access logger wrote
    (the message alone). Python's logging cost ~15 us a line here (a LogRecord, a Formatter, the
    handler's lock and flush): 40% of OCSP's throughput at c=4 (10-12k answers/s with it, 18-21k
    without a log); this costs ~3 us."""

    def __init__(self, app, stream=None) -> None:
        self.app = app
        self.fd = (stream or sys.stdout).fileno()
        self.lock = threading.Lock()  # long lines (> PIPE_BUF) must not interleave

    def __call__(self, environ: dict, start_response):
        start = time.perf_counter()
        statuses: list[str] = []

        def recording(status: str, headers, exc_info=None):
            statuses.append(status)
            return start_response(status, headers, exc_info)

        try:
            body = self.app(environ, recording)
        except BaseException:
            self._line(environ, "500", start)
            raise
        self._line(environ, statuses[-1].split(" ", 1)[0] if statuses else "500", start)
        return body

    def _line(self, environ: dict, status: str, start: float) -> None:
        # PATH_INFO is the decoded path (bytes as latin-1, PEP 3333): quoted again, a "%0A" in a
        # URL cannot start a forged line. A server that decoded otherwise must not turn a good
        # answer into an error here, hence the replacement.
        path = environ.get("PATH_INFO", "")
        if not _PLAIN.fullmatch(path):
            path = quote(path.encode("latin-1", "backslashreplace"), safe="/:@!$&'()*+,;=~")
        line = (f'{environ.get("REMOTE_ADDR", "-")} - "{environ.get("REQUEST_METHOD", "-")} {path} '
                f'{environ.get("SERVER_PROTOCOL", "-")}" {status} {(time.perf_counter() - start) * 1000:.3f}ms\n')
        data = line.encode("latin-1", "backslashreplace")
        with self.lock:
            try:
                os.write(self.fd, data)
            except OSError:
                pass  # a closed or full standard output must not fail the answered request
