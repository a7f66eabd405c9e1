"""Connections that hold the server without saying anything: what Granian (hyper) does not close
by itself, and bodies that stall.

Granian closes a connection whose request head is not complete `header_read_timeout` after its
first byte, and an idle keep-alive connection after the same time. Two kinds it keeps for ever
(seen here with Granian 2.8; granian issues 508 and 728, "wontfix"):
- a connection that was opened and never sent a byte (a port scanner, a load balancer's
  pre-opened pool): it holds one of the worker's connection slots;
- a request whose body stalls (a `Content-Length` larger than what comes): it held one of the
  worker's four Python threads in `wsgi.input.read`, and a dozen such requests to an endpoint that
  reads a body (OCSP and the sign-in form are public) stopped every thread.

`RequestGate` reads each body before the request may run, in threads that do nothing else, and
lets `threads` requests run at once. `ConnectionReaper`, a thread in each worker, looks at the
worker's own accepted sockets once a second (Linux: the descriptors in /proc/self/fd, the
kernel's TCP_INFO of each) and shuts down:
- a socket that has received no byte `header_timeout` seconds after it opened;
- a socket from the address of a request whose body has been reading for longer than
  `body_timeout`, if it has been sent nothing since that body began: it cannot be a connection
  whose request was answered meanwhile. WSGI does not give the client's port, so the address and
  that silence are what tie a body to its socket; another connection from the same address whose
  request has run for `body_timeout` without an answer would be closed too, and none of ours runs
  that long.
Shutting a socket down (not closing the descriptor, which stays Granian's) makes Granian's read
return: the slot and the thread are freed, and the request, with its short body, gets a 400 that
no one reads.

Over TLS (`serve --tls`) a connection has always received bytes, the handshake's, so "no byte"
never holds; and hyper's header timer starts only at a request's first byte. A client that
completed the handshake and then said nothing, or spoke HTTP/2 (which has no header timer at all)
and went quiet, even mid-HEADERS, was kept for ever (seen with Granian 2.8: 40 s and counting,
header timeout 5 s). So over TLS the reaper also shuts down a socket on which nothing has moved
either way for `header_timeout`, seen so at two passes in a row, while no request from its
address is running (`TrackedGate`, the gate of `serve --tls`, records them: a slow answer, an
OIDC provider's round trip, sends nothing for a while too, and WSGI gives no port to tell which
connection is its own).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

# struct tcp_info (linux/tcp.h): the fields read here and their byte offsets.
_TCP_INFO_SIZE = 136
_LAST_DATA_SENT, _LAST_DATA_RECV = 44, 52  # __u32 milliseconds since the last data sent / received
_BYTES_RECEIVED = 128  # __u64, Linux 4.1 and later
_TCP_ESTABLISHED, _TCP_CLOSE_WAIT = 1, 8
SCAN_INTERVAL = 1.0


# OCSP answers skip the work permits (their bodies are still read first): nearly all come from the
# responder's cache in microseconds, one that does not costs a lookup and a signature, and handing
# permits from thread to thread cost more CPU than the answers themselves (issue 29, 16 clients on
# one worker: 65-66 us of CPU per answer through the gate, 35-59 with no gate at all, 3 rounds).
# Granian's threads bound them all the same.
UNGATED = "/ocsp"
WAITING = "ca_server.waiting"  # the environ key of RequestGate._waiting


def whole(answer) -> list[bytes]:
    """The answer as a list, closed. Granian sends a list in one call; anything else it iterates
    from Rust, taking the GIL for each piece, and closes afterwards (where Flask ends its request
    context). Every answer of this app is whole in memory already (none streams), so joining
    costs one copy. Its gain was not measured apart (issue 29): Granian's own sending stayed
    ~12% of an ACME order's GIL-held samples either way."""
    if isinstance(answer, list):
        return answer
    try:
        return [b"".join(answer)]
    finally:
        close = getattr(answer, "close", None)
        if close is not None:
            close()


class RequestGate:
    """The outermost WSGI layer of `serve`: a request's body is read whole before the request may
    run, and at most `threads` requests run at once. Granian's thread pool is larger
    (`threads + body_threads`): the extra threads only wait for bodies, with the GIL released, so a
    stalled body holds one of them, never one of the threads that do the work. While a body is
    being read the gate records from which address and since when (the reaper's `stalled`).
    OCSP requests (UNGATED) need no permit."""

    def __init__(self, app, *, threads: int, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.work = FifoSemaphore(threads)
        self.reading: dict[int, tuple[str, float]] = {}  # id -> (address, monotonic start of the body)

    def __call__(self, environ: dict, start_response):
        length = environ.get("CONTENT_LENGTH", "")
        if length.isdigit() and 0 < int(length) <= self.max_bytes:
            environ["wsgi.input"] = io.BytesIO(self._read(environ, int(length)))  # short if the client left
        elif not length and "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
            sized_body(environ, self._read(environ, self.max_bytes + 1))
        if environ.get("PATH_INFO", "").startswith(UNGATED):
            return whole(self.app(environ, start_response))
        self.work.acquire()
        environ[WAITING] = self._waiting
        try:
            return whole(self.app(environ, start_response))
        finally:
            self.work.release()

    def busy(self) -> set[str] | None:
        """The addresses with a request running in this worker now; None: not recorded (plain
        HTTP needs no record, TrackedGate keeps one)."""
        return None

    @contextlib.contextmanager
    def _waiting(self) -> Iterator[None]:
        """Inside a request: its permit given back while it only waits (an ACME challenge for
        its validation), taken again, in turn, before it goes on."""
        self.work.release()
        try:
            yield
        finally:
            self.work.acquire()

    def _read(self, environ: dict, limit: int) -> bytes:
        key = id(environ)
        self.reading[key] = (environ.get("REMOTE_ADDR", ""), time.monotonic())  # one dict operation: atomic
        try:
            return read_at_most(environ["wsgi.input"], limit)
        finally:
            self.reading.pop(key, None)

    def stalled(self, now: float, timeout: float) -> list[tuple[str, float]]:
        """(address, seconds since its body began) of each body read that has gone on too long."""
        reading = self.reading.copy()  # one C call under the GIL: no request changes it meanwhile
        return [(address, now - start) for address, start in reading.values() if now - start > timeout]



class TrackedGate(RequestGate):
    """The gate of `serve --tls`: it also records every running request's address, which the
    reaper's rule for connections quiet after their TLS handshake needs (a slow answer is quiet
    too). 320-350 ns a request in process (timeit), paid only where that rule applies."""

    def __init__(self, app, *, threads: int, max_bytes: int) -> None:
        super().__init__(app, threads=threads, max_bytes=max_bytes)
        self.running: dict[int, str] = {}  # id -> address of every request in this worker, body read or not

    def __call__(self, environ: dict, start_response):
        key = id(environ)
        self.running[key] = environ.get("REMOTE_ADDR", "")  # one dict operation: atomic
        try:
            return super().__call__(environ, start_response)
        finally:
            self.running.pop(key, None)

    def busy(self) -> set[str]:
        return set(self.running.copy().values())  # one C call under the GIL for the copy

def read_at_most(stream, limit: int) -> bytes:
    """A request body up to `limit` bytes; shorter when the client stopped or went away (or the
    reaper shut its socket): what comes after decides what a short body means (400, 413)."""
    try:
        first = stream.read(limit)
    except Exception:  # noqa: BLE001 - the connection ended mid-body
        return b""
    if len(first) >= limit or not first:  # nearly always: the whole body in one read
        return first
    chunks, size = [first], len(first)
    try:
        while size < limit:
            chunk = stream.read(limit - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except Exception:  # noqa: BLE001 - the connection ended mid-body
        pass
    return b"".join(chunks)


def sized_body(environ: dict, body: bytes) -> None:
    """A chunked body, read, becomes one of known length (read one byte past the limit, so Flask
    answers 413 as it does for a declared length)."""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    del environ["HTTP_TRANSFER_ENCODING"]  # Werkzeug ignores Content-Length next to chunked


class FifoSemaphore:
    """A semaphore that hands a freed permit to the request that has waited longest. With
    threading.Semaphore a thread arriving as a permit frees takes it before the sleepers it
    wakes, and under 64 clients the unlucky requests waited 6x the mean (p99 ~300 ms here)."""

    def __init__(self, permits: int) -> None:
        self._free = permits
        self._lock = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()

    def acquire(self) -> None:
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        waiter.acquire()  # released by release(), which hands this request the permit

    def release(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._free += 1


class ConnectionReaper(threading.Thread):
    def __init__(self, port: int, header_timeout: float, body_timeout: float, reads: RequestGate) -> None:
        super().__init__(name="connection-reaper", daemon=True)
        self.port, self.header_timeout, self.body_timeout, self.reads = port, header_timeout, body_timeout, reads
        self.quiet: set[tuple] = set()  # TLS: peers (address, port) found quiet at the last pass

    def run(self) -> None:
        if not Path("/proc/self/fd").is_dir() or not hasattr(socket, "TCP_INFO"):
            log.warning("connection reaper off: this system has no /proc/self/fd or TCP_INFO; silent "
                        "connections are not closed (put a reverse proxy in front)")
            return
        while True:
            time.sleep(SCAN_INTERVAL)
            try:
                self.scan(time.monotonic())
            except Exception:  # never let the reaper die; it is a safety net
                log.exception("connection reaper pass failed")

    def scan(self, now: float) -> int:
        """One pass; returns how many sockets it shut down."""
        stalled = self.reads.stalled(now, self.body_timeout)
        busy = self.reads.busy()  # None: no record (plain HTTP), no rule for quiet connections
        quiet, self.quiet = self.quiet, set()
        closed = 0
        for fd in _socket_fds():
            try:
                copy = os.dup(fd)
            except OSError:
                continue  # closed since it was listed
            try:
                sock = socket.socket(fileno=copy)  # family and type read from the descriptor
            except OSError:
                os.close(copy)
                continue
            try:
                info = self._client_info(sock)
                if info is not None and (self._should_close(sock, info, stalled)
                                         or self._quiet_twice(sock, info, busy, quiet)):
                    sock.shutdown(socket.SHUT_RDWR)
                    closed += 1
            except OSError:
                pass  # not a TCP socket of ours, or gone meanwhile
            finally:
                sock.close()  # our duplicate only
        if closed:
            log.info("closed %d connection(s) that sent nothing, fell silent over TLS or stalled mid-body", closed)
        return closed

    def _quiet_twice(self, sock: socket.socket, info: bytes, busy: set[str] | None, quiet: set[tuple]) -> bool:
        """TLS: nothing received or sent for header_timeout, no request of its address running,
        and so at the last pass too (a request that just ended has had a pass to send its answer)."""
        if busy is None:
            return False
        last_sent, last_received = struct.unpack_from("=I4xI", info, _LAST_DATA_SENT)
        peer = sock.getpeername()
        if min(last_sent, last_received) < self.header_timeout * 1000 or _address(peer[0]) in busy:
            return False
        self.quiet.add(peer)
        return peer in quiet

    def _client_info(self, sock: socket.socket) -> bytes | None:
        """TCP_INFO of a client's connection to our port; None for anything else."""
        if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
            return None
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) or sock.getsockname()[1] != self.port:
            return None  # the listening socket, or an outgoing connection (SMTP, a validation), not a client of ours
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO_SIZE)
        if len(info) < _BYTES_RECEIVED + 8 or info[0] not in (_TCP_ESTABLISHED, _TCP_CLOSE_WAIT):
            return None
        return info

    def _should_close(self, sock: socket.socket, info: bytes, stalled: list[tuple[str, float]]) -> bool:
        last_sent, last_received = struct.unpack_from("=I4xI", info, _LAST_DATA_SENT)
        (received,) = struct.unpack_from("=Q", info, _BYTES_RECEIVED)
        if received == 0:
            # The kernel starts both clocks when the connection is set up: its age, for a silent one.
            return last_received >= self.header_timeout * 1000
        address = _address(sock.getpeername()[0])
        return any(address == peer and last_sent >= seconds * 1000 for peer, seconds in stalled)


def _socket_fds() -> list[int]:
    fds = []
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                fds.append(int(name))
        except OSError:
            continue
    return fds


def _address(host: str) -> str:
    # An IPv4 client of a dual-stack socket reads as ::ffff:a.b.c.d; WSGI's REMOTE_ADDR as a.b.c.d.
    return host[7:] if host.startswith("::ffff:") else host
