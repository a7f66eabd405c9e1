"""The window in which an ACME client should renew a certificate (RFC 9773, ACME Renewal
Information). Here, below both its users: the renewalInfo resource (acme/) and the reminders (an
ACME certificate past its window was not renewed), so reminders need not import acme/."""

from __future__ import annotations

import datetime as dt


def renewal_window(not_before: dt.datetime, not_after: dt.datetime, percent: int) -> tuple[dt.datetime, dt.datetime]:
    """Opens when `percent` of the lifetime is left (33: day 60 of 90), closes halfway from there
    to the end (day 75 of 90), leaving the rest for retries and for a person to step in."""
    start = not_after - (not_after - not_before) * percent / 100
    return start, start + (not_after - start) / 2
