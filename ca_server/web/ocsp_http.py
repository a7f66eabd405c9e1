"""OCSP over HTTP (RFC 6960 A.1, RFC 5019): the answer for a request's bytes, with caching.

GET answers carry `Cache-Control: max-age` (`[revocation] ocsp_max_age_seconds`, never past the
response's nextUpdate), `Last-Modified` (thisUpdate), `Expires` and an `ETag`, and a conditional GET
gets 304, so nginx or a CDN in front can answer most OCSP traffic. POST answers are not cacheable
by HTTP caches (RFC 5019 5).

In each worker, the answers to recent requests are kept by their exact bytes. One is used again
while the store's revocation marker (bytes rewritten after every revocation, read through shared
memory with no system call) is the one read before it was made, and for at most an hour: a
request that repeats (every TLS client asks the same few) skips parsing, the database and signing,
and a revocation on any worker is what the very next answer says."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from email.utils import format_datetime, parsedate_to_datetime

from ..errors import StoreUnavailableError
from ..ocsp import OCSP_RESPONSE, TRY_LATER, OCSPAnswer
from ..services import Services

ENTRIES = 20_000
REUSE_FOR = dt.timedelta(hours=1)


@dataclass(frozen=True)
class _Entry:
    marker: object  # the store's revocation marker when the answer was made
    answer: OCSPAnswer
    etag: str
    reuse_until: dt.datetime
    post_headers: list[tuple[str, str]]  # the whole header list of a POST answer, made once
    last_modified: str  # its thisUpdate as GET answers carry it


class OCSPHttp:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.max_age = services.config.revocation.ocsp_max_age_seconds
        self.lock = threading.Lock()
        self.entries: OrderedDict[bytes | str, _Entry] = OrderedDict()
        from ..notify.metrics import OCSP_ANSWERS  # after server.py has set PROMETHEUS_MULTIPROC_DIR

        self.metric = OCSP_ANSWERS
        self.counters: dict[str, object] = {}  # status -> its labelled counter, looked up once

    def _count(self, status: str) -> None:
        counter = self.counters.get(status)
        if counter is None:
            counter = self.counters[status] = self.metric.labels(status)
        counter.inc()

    def answer(self, key: bytes | str, data, now: dt.datetime, *, get: bool, if_none_match: str = "",
               if_modified_since: str = "") -> tuple[str, list[tuple[str, str]], bytes]:
        """(status line, headers, body), Content-Length included and the site's own headers not
        (the caller adds them; the list is not to be changed: a POST answer's serves every request
        for it). `key` is the request as received (GET path or POST body); `data` gives the DER
        request when the answer has to be made."""
        store = self.services.store
        try:
            marker = store.revocation_marker()
        except StoreUnavailableError as exc:
            self._count(TRY_LATER.status)
            headers = [("Content-Type", OCSP_RESPONSE), ("Cache-Control", "no-store"),
                       ("Retry-After", str(exc.retry_after))]
            return "503 Service Unavailable", _with_length(headers, TRY_LATER.der), TRY_LATER.der
        entry = self.entries.get(key)
        if entry is None or entry.marker != marker or now >= entry.reuse_until:
            answer = self.services.ocsp.answer(data(), now)
            entry = _Entry(marker, answer, '"' + hashlib.sha256(answer.der).hexdigest()[:32] + '"',
                           answer.this_update + REUSE_FOR if answer.this_update else now,  # None: not kept
                           _with_length([("Content-Type", OCSP_RESPONSE), ("Cache-Control", "no-cache")], answer.der),
                           format_datetime(answer.this_update, usegmt=True) if answer.this_update else "")
            if answer.cacheable:
                with self.lock:
                    self.entries[key] = entry
                    if len(self.entries) > ENTRIES:
                        self.entries.popitem(last=False)
        answer = entry.answer
        self._count(answer.status)
        if not get or not answer.cacheable:
            return "200 OK", entry.post_headers, answer.der
        max_age = max(0, min(self.max_age, int((answer.next_update - now).total_seconds())))
        headers = [("Content-Type", OCSP_RESPONSE),
                   ("Cache-Control", f"max-age={max_age}, public, no-transform, must-revalidate"),
                   ("Last-Modified", entry.last_modified),
                   ("Expires", format_datetime(now.replace(microsecond=0) + dt.timedelta(seconds=max_age), usegmt=True)),
                   ("ETag", entry.etag)]
        if _not_modified(entry.etag, answer.this_update, if_none_match, if_modified_since):
            return "304 Not Modified", _with_length(headers[1:], b""), b""
        return "200 OK", _with_length(headers, answer.der), answer.der


def _with_length(headers: list[tuple[str, str]], body: bytes) -> list[tuple[str, str]]:
    return [*headers, ("Content-Length", str(len(body)))]


def _not_modified(etag: str, this_update: dt.datetime, if_none_match: str, if_modified_since: str) -> bool:
    if if_none_match:  # RFC 9110 13.2.2: If-None-Match wins over If-Modified-Since
        return etag in [t.strip().removeprefix("W/") for t in if_none_match.split(",")] or if_none_match.strip() == "*"
    if if_modified_since:
        try:
            since = parsedate_to_datetime(if_modified_since)
        except (TypeError, ValueError):
            return False
        # Strictly later: Last-Modified has whole seconds, and a revocation can bring a new answer
        # (the same thisUpdate second, other content) in the second the old one was made; nginx
        # revalidating its cached "good" with If-Modified-Since must not get a 304 then.
        return since.tzinfo is not None and this_update < since
    return False
