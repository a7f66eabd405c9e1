"""A certificate's expiry as an iCalendar event (RFC 5545), with alarms at the reminder
thresholds: what the CUCM primer's "put a reminder in your calendar" asks a person to type.

The event is all day on the expiry date (DTSTART as a DATE, how Outlook and Google show a
deadline), its UID is the serial at the CA's host (the same event, updated, however often it is
downloaded), and SEQUENCE grows when the certificate's state changes (revoked, renewed) so
calendar apps replace the copy they have. The icalendar library writes it (escaping, folding)."""

from __future__ import annotations

import datetime as dt
from urllib.parse import urlsplit

from icalendar import Alarm, Calendar, Event

from ..models import CertificateRecord

PRODID = "-//ca-server//certificate expiry//EN"


def certificate_calendar(record: CertificateRecord, *, base_url: str, days_before: tuple[int, ...],
                         now: dt.datetime) -> bytes:
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "PUBLISH")
    calendar.add_component(certificate_event(record, base_url=base_url, days_before=days_before, now=now))
    return calendar.to_ical()


def certificate_event(record: CertificateRecord, *, base_url: str, days_before: tuple[int, ...],
                      now: dt.datetime) -> Event:
    name = record.common_name or (record.sans[0].split(":", 1)[1] if record.sans else record.serial)
    link = f"{base_url}/certificates/{record.serial}"
    renewed = record.superseded_by
    event = Event()
    event.add("uid", f"{record.serial}@{urlsplit(base_url).hostname or 'ca-server'}")
    event.add("dtstamp", now.astimezone(dt.UTC).replace(microsecond=0))
    day = record.not_after.astimezone(dt.UTC).date()
    event.add("dtstart", day)
    event.add("dtend", day + dt.timedelta(days=1))
    state = "revoked" if record.revoked_at else "renewed" if renewed else None
    event.add("summary", f"Certificate {name} expires" + (f" ({state})" if state else ""))
    names = ", ".join(s.split(":", 1)[1] for s in record.sans) or "-"
    event.add("description", (
        f"The certificate for {name} expires on {record.not_after:%Y-%m-%d %H:%M} UTC.\n"
        f"Names: {names}\nSerial: {record.serial}\n"
        + (f"It was renewed by {renewed}.\n" if renewed else "")
        + (f"It was revoked on {record.revoked_at:%Y-%m-%d}.\n" if record.revoked_at else "")
        + f"Details and downloads: {link}"))
    event.add("url", link)
    event.add("sequence", (1 if renewed else 0) + (2 if record.revoked_at else 0))
    event.add("status", "CANCELLED" if record.revoked_at else "CONFIRMED")
    event.add("transp", "TRANSPARENT")
    if not record.revoked_at and not renewed:
        for days in sorted(set(days_before), reverse=True):
            alarm = Alarm()
            alarm.add("action", "DISPLAY")
            alarm.add("description", f"Certificate {name} expires in {days} day{'s' if days != 1 else ''}")
            alarm.add("trigger", dt.timedelta(days=-days))
            event.add_component(alarm)
    return event


FEED_LIMIT = 2000


def feed_owner_scope(store, owner: str) -> tuple[bool, str | None]:
    """(the feed may be served, the requester label its certificates are limited to, or None for
    all). An admin's feed has every certificate; a disabled user's or a revoked token's none."""
    kind, _, name = owner.partition(":")
    row = store.get_user(name) if kind == "user" else store.get_token(name) if kind == "token" else None
    if row is None or row.get("revoked_at"):
        return False, None
    return True, (None if row["is_admin"] else owner)


def feed_calendar(store, owner: str, *, base_url: str, days_before: tuple[int, ...], now: dt.datetime) -> bytes | None:
    """The subscribable calendar of `owner`: one event per valid certificate (revoked, renewed and
    expired ones leave it), the soonest FEED_LIMIT. None when the owner may no longer have one."""
    allowed, requester = feed_owner_scope(store, owner)
    if not allowed:
        return None
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("calscale", "GREGORIAN")
    calendar.add("method", "PUBLISH")
    calendar.add("x-wr-calname", "Certificate expiry")
    calendar.add("refresh-interval", dt.timedelta(hours=12), parameters={"VALUE": "DURATION"})  # RFC 7986
    calendar.add("x-published-ttl", "PT12H")  # the same for Outlook
    for record in store.soonest_expiring(now, 36500, requester=requester, limit=FEED_LIMIT, not_renewed=True):
        calendar.add_component(certificate_event(record, base_url=base_url, days_before=days_before, now=now))
    return calendar.to_ical()
