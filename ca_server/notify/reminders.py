"""Expiry reminders: which are due (pure functions of time) and sending each exactly once.

Thresholds are `[reminders] days_before` plus 0, the notice on the day a certificate expires.
A certificate that crossed several thresholds since the last pass gets only the most urgent.
Every reminder is claimed in the store (unique per certificate and threshold) before it is sent
and marked sent after, so concurrent passes, in threads or processes, send one mail. A failed
send is retried on later passes with doubling waits; nothing is dropped silently."""

from __future__ import annotations

import datetime as dt
import json
import logging
import math
from dataclasses import dataclass

from ..clock import from_text
from ..config import Config, Secrets
from ..display import moment_text
from ..errors import MailError
from ..models import CertificateRecord
from ..store import CaStore
from .mail import Mailer, certificate_name, expiry_phrase, reminder_message
from .renewal_window import renewal_window

log = logging.getLogger("ca_server")

EXPIRY_DAY = 0
# A claim older than this whose mail was never marked sent belongs to a pass that died
# mid-send; it is retried (at-least-once for crashes, exactly-once otherwise).
STALE_CLAIM = dt.timedelta(minutes=15)
MAX_BACKOFF = dt.timedelta(hours=24)


def day_start(moment: dt.datetime) -> dt.datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def due_threshold(not_after: dt.datetime, now: dt.datetime, days_before: tuple[int, ...]) -> int | None:
    """The most urgent threshold crossed at `now`, or None. 0 means "the day it expires": from
    the start of that UTC day until one day after expiry (the final notice)."""
    if now >= not_after + dt.timedelta(days=1):
        return None
    if now >= day_start(not_after):
        return EXPIRY_DAY
    left = not_after - now
    crossed = [t for t in days_before if left <= dt.timedelta(days=t)]
    return min(crossed) if crossed else None


def days_left(not_after: dt.datetime, now: dt.datetime) -> int:
    """Whole days left, rounded up (29.96 days -> 30: "expires in 30 days" at the 30-day mark);
    -1 once expired."""
    seconds = (not_after - now).total_seconds()
    if seconds <= 0:
        return -1
    if now >= day_start(not_after):
        return 0
    return math.ceil(seconds / 86400)


@dataclass(frozen=True)
class Outcome:
    serial: str
    name: str
    threshold: int
    recipients: tuple[str, ...]
    status: str  # "sent" | "failed" | "would send" | "no recipients"
    days_left: int
    error: str | None = None

    def line(self) -> str:
        to = ", ".join(self.recipients) or "-"
        label = "expiry-day notice" if self.threshold == EXPIRY_DAY else f"{self.threshold}-day reminder"
        text = f"{self.status}: {label} for {self.name} (serial {self.serial}, {expiry_phrase(self.days_left)}) to {to}"
        return text + (f": {self.error}" if self.error else "")


def due_reminders(config: Config, store: CaStore, now: dt.datetime) -> list[tuple[CertificateRecord, int]]:
    """(certificate, threshold) for every reminder due now and not yet claimed."""
    return [(record, threshold) for record, threshold, claimed in _crossed(config, store, now)
            if claimed is None or claimed > threshold]


def due_thresholds(config: Config, store: CaStore, now: dt.datetime) -> list[tuple[CertificateRecord, int]]:
    """(certificate, the most urgent threshold crossed now), claimed for mail or not (webhooks
    keep their own ledger)."""
    return [(record, threshold) for record, threshold, _claimed in _crossed(config, store, now)]


def _crossed(config: Config, store: CaStore, now: dt.datetime):
    days_before = config.reminders.days_before
    horizon = now + dt.timedelta(days=max(days_before), seconds=1)  # the end is exclusive
    for record, claimed in store.reminder_candidates(now - dt.timedelta(days=1), horizon):
        threshold = due_threshold(record.not_after, now, days_before)
        if threshold is None:
            continue
        if record.requester.startswith("acme:") and now < renewal_window(
                record.not_before, record.not_after, config.acme.renewal_window_percent)[1]:
            continue  # its ACME client renews it in the window; a person hears only if it did not
        yield record, threshold, claimed


def recipients_for(config: Config, store: CaStore, record: CertificateRecord) -> tuple[str, ...]:
    """Who hears of this certificate's expiry: its reminder addresses, or the defaults. An ACME
    certificate's are its account's mailto: contacts as they are now, as Let's Encrypt's expiry
    mail did: `certbot update_account -m new@...` moves the reminders of the certificates already
    issued too (they went to the address the account had at issuance, maybe a person who left)."""
    if (record.requester or "").startswith("acme:"):
        account = store.acme_account(record.requester.removeprefix("acme:"))
        contacts = tuple(c.removeprefix("mailto:") for c in account["contacts"]) if account else ()
        if contacts:
            return contacts
    return record.notify or config.reminders.default_recipients


def issuance_detail(store: CaStore, serial: str) -> dict:
    """The detail of the certificate's issuance in the audit log (its door, endpoint, the device
    protocol's details, who approved); {} when none is found."""
    rows = [r for r in store.audit_entries(serial=serial, limit=20) if r["action"] in ("issue", "approve")]
    return (rows[-1]["detail"] or {}) if rows else {}


def door_of(store: CaStore, record: CertificateRecord) -> str:
    """How the certificate came (acme, scep, est, web, api, cli ...); "" for one issued before
    doors were recorded."""
    kind = (record.requester or "").partition(":")[0]
    if kind in ("acme", "scep"):
        return kind
    return str(issuance_detail(store, record.serial).get("door", ""))


def run_pass(config: Config, secrets: Secrets, store: CaStore, now: dt.datetime, *, dry_run: bool = False) -> list[Outcome]:
    """One reminder pass: new reminders, then retries of failed ones."""
    outcomes: list[Outcome] = []
    with Mailer(config.mail, secrets.smtp_password) as mailer:
        for record, threshold in due_reminders(config, store, now):
            recipients = recipients_for(config, store, record)
            base = dict(serial=record.serial, name=certificate_name(record), threshold=threshold, recipients=recipients,
                        days_left=days_left(record.not_after, now))
            if not recipients:
                outcomes.append(Outcome(status="no recipients", **base))
                continue
            if dry_run:
                outcomes.append(Outcome(status="would send", **base))
                continue
            reminder_id = store.claim_reminder(record.serial, threshold, recipients, now)
            if reminder_id is None:
                continue  # another pass claimed it first
            outcomes.append(_send(config, store, mailer, reminder_id, record, threshold, recipients, 0, now))
        for row in store.retry_candidates(now, now - STALE_CLAIM):
            record = store.get_certificate(row["serial"])
            recipients = tuple(json.loads(row["recipients"]))
            if dry_run:
                outcomes.append(Outcome(record.serial, certificate_name(record), row["threshold"], recipients, "would send",
                                        days_left(record.not_after, now), "retry"))
                continue
            if not store.claim_retry(row["id"], now, now - STALE_CLAIM):
                continue
            outcomes.append(_send(config, store, mailer, row["id"], record, row["threshold"], recipients,
                                  row["attempts"], now))
    return outcomes


def _send(config, store, mailer, reminder_id, record, threshold, recipients, attempts, now) -> Outcome:
    """Send one claimed reminder. A failure is recorded with its retry time and the pass goes on:
    one certificate must not stop the reminders of all the others."""
    left = days_left(record.not_after, now)
    base = dict(serial=record.serial, name=certificate_name(record), threshold=threshold, recipients=recipients, days_left=left)
    try:
        message = reminder_message(record, days_left=left, recipients=recipients, sender=config.mail.from_address,
                                   base_url=config.server.base_url, organization=config.ca.organization,
                                   door=door_of(store, record))
        mailer.send(message)
    except MailError as exc:
        error = exc.message
    except Exception as exc:  # noqa: BLE001 - whatever one record's message raises must not end the pass
        log.exception("reminder for %s could not be made", record.serial)
        error = f"the message could not be made: {exc}"
    else:
        store.reminder_sent(reminder_id, now)
        return Outcome(status="sent", **base)
    wait = min(dt.timedelta(minutes=config.reminders.retry_minutes) * 2 ** attempts, MAX_BACKOFF)
    store.reminder_failed(reminder_id, error, now + wait)
    return Outcome(status="failed", error=error, **base)


def waiting_retries(store: CaStore, now: dt.datetime) -> list[str]:
    """Failed reminders whose next attempt is later than `now`, one line each for `remind`: a pass
    that sent nothing said "0 sent, 0 failed" while a reminder waited on a mail server that is down."""
    lines = []
    for row in store.waiting_reminders(now):
        label = "expiry-day notice" if row["threshold"] == EXPIRY_DAY else f"{row['threshold']}-day reminder"
        lines.append(waiting_line(f"{label} for {row['common_name'] or row['serial']} (serial {row['serial']}) to "
                                  f"{', '.join(row['recipients'])}", row))
    return lines


def waiting_line(what: str, row: dict) -> str:
    """One line of `remind` for a failed send (a reminder's or a webhook delivery's row)."""
    return (f"waiting: {what}: next try at {moment_text(from_text(row['next_attempt_at']))}; "
            f"{row['attempts']} attempt(s) failed, the last with: {row['last_error']}")
