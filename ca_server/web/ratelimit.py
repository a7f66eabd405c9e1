"""Rate limits (the `limits` library, in memory per worker process): failed sign-ins per client
address, submissions per requester. Used directly rather than through Flask-Limiter, whose
per-request bookkeeping cost more than a certificate signature."""

from __future__ import annotations

import threading
import time

from flask import Flask, current_app
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import SlidingWindowCounterRateLimiter

from ..errors import CAError


class RateLimitedError(CAError):
    code = "rate_limited"

    def __init__(self, what: str, retry_after: int) -> None:
        super().__init__(f"Too many {what}; wait {retry_after} seconds and try again.")
        self.retry_after = retry_after


SWEEP_SECONDS = 60.0


class SweepingMemoryStorage(MemoryStorage):
    """limits' memory storage, sweeping expired counters once a minute instead of 10 ms after the
    last sweep. The library starts a new timer thread for each sweep, so under steady traffic it
    started ~100 threads a second per worker: paced at 1,000 hits/s, 89-115 us of CPU per hit
    against 70-77 us with this sweep (34-41 us for the pacing loop alone; 7.8 us per hit back to
    back). Counters also expire when read (get()); the sweep only frees the memory of keys nobody
    asks about again, which a minute's delay does not change. The hook is the library's private
    method: if a release renames it, this falls back to the library's own timing."""

    def _MemoryStorage__schedule_expiry(self) -> None:  # MemoryStorage.__schedule_expiry, name-mangled
        if not self.timer.is_alive():
            self.timer = threading.Timer(SWEEP_SECONDS, self._MemoryStorage__expire_events)
            self.timer.daemon = True  # a waiting sweep must not hold up a worker's exit
            self.timer.start()


class StoreCounters(SweepingMemoryStorage):
    """The counters in the store (nodes sharing a PostgreSQL database count together); limits'
    memory storage computes the sliding window over these counters as over its own."""

    def __init__(self, store) -> None:
        super().__init__()
        self.store = store

    def incr(self, key: str, expiry: float, amount: int = 1) -> int:
        now = time.time()
        return self.store.counter_add(key, amount, now + expiry, now)

    def decr(self, key: str, amount: int = 1) -> int:
        return self.store.counter_add(key, -amount, 0, time.time())

    def get(self, key: str) -> int:
        return self.store.counter_get(key, time.time())[0]

    def get_expiry(self, key: str) -> float:
        return self.store.counter_get(key, time.time())[1]

    def clear(self, key: str) -> None:
        self.store.counter_clear(key)

    def _get_sliding_window_info(self, previous_key: str, current_key: str, expiry: int,
                                 now: float) -> tuple[int, float, int, float]:
        # MemoryStorage's computation with both counts read in one query (one round trip per
        # check instead of two). The weighting is the sliding window counter's own definition.
        counts = self.store.counters_get([previous_key, current_key], now)
        previous_count, current_count = counts.get(previous_key, 0), counts.get(current_key, 0)
        previous_ttl = 0.0 if previous_count == 0 else (1 - (((now - expiry) / expiry) % 1)) * expiry
        current_ttl = (1 - ((now / expiry) % 1)) * expiry + expiry
        return previous_count, previous_ttl, current_count, current_ttl


class RateLimits:
    def __init__(self, store=None) -> None:
        # Two counters per key (this window, the last): O(1) per request whatever the limit, where a
        # moving window keeps (and shifts) one timestamp per request in the window. In memory per
        # worker with SQLite; in the store when nodes share PostgreSQL.
        storage = StoreCounters(store) if store is not None and store.kind == "postgresql" else SweepingMemoryStorage()
        self._limiter = SlidingWindowCounterRateLimiter(storage)
        self._parsed: dict[str, object] = {}

    def _item(self, text: str):
        item = self._parsed.get(text)
        if item is None:
            item = self._parsed[text] = parse(text)
        return item

    def check(self, text: str, *key: str, what: str) -> None:
        """Raise RateLimitedError when the limit is reached (without counting this one)."""
        item = self._item(text)
        if not self._limiter.test(item, *key):
            self._refuse(item, key, what)

    def hit(self, text: str, *key: str, what: str) -> None:
        """Count one; raise RateLimitedError when that goes over the limit."""
        item = self._item(text)
        if not self._limiter.hit(item, *key):
            self._refuse(item, key, what)

    def submission(self, limit: str, requester_key: str) -> None:
        """Count one certificate submission by this requester ([server] submission_rate_limit)."""
        self.hit(limit, "submit", requester_key, what="submissions")

    def _refuse(self, item, key, what: str) -> None:
        reset = self._limiter.get_window_stats(item, *key).reset_time
        raise RateLimitedError(what, max(1, int(reset - time.time()) + 1))


def init_rate_limits(app: Flask) -> None:
    app.extensions["ca_server_limits"] = RateLimits(app.extensions["ca_server"].store)


def limits() -> RateLimits:
    return current_app.extensions["ca_server_limits"]
