"""Chat and webhook notifications (`[[notify.webhooks]]`): the reminder thresholds and every
revocation, to Slack, Teams or any JSON receiver, exactly once per (receiver, certificate, event).

Like the e-mails, each event is recorded in the store before it is sent (the INSERT that wins is
the claim), a delivery is claimed before each attempt, a failure waits `[notify] retry_minutes`,
doubled after each one (at most a day), and a claim whose sender died is retried after a while.
JSON bodies are signed: `X-CA-Server-Signature: sha256=HEX`, HMAC-SHA256 of the body with the
secret from `secret_env`."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from ..clock import to_text
from ..config import Config, Secrets
from ..config.notify import WebhookConfig
from ..models import CertificateRecord, names_key
from ..store import CaStore
from . import reminders
from .mail import certificate_name, expiry_phrase, not_trusted, tls_context

log = logging.getLogger("ca_server")

STALE_CLAIM = dt.timedelta(minutes=5)
MAX_BACKOFF = dt.timedelta(hours=24)
REVOKED = "revoked"
RENEWAL_FAILED = "renewal-failed"


class WebhookError(Exception):
    pass


class ReceiverUnreachable(WebhookError):
    """No answer at all (refused, timed out, TLS): the receiver's next delivery would fare the same."""


@dataclass(frozen=True)
class Delivery:
    webhook: str
    serial: str
    event: str
    status: str  # "sent" | "failed"
    error: str | None = None

    def line(self) -> str:
        return f"{self.status}: webhook {self.webhook} {self.event} for {self.serial}" + (
            f": {self.error}" if self.error else "")


def post_json(url: str, body: bytes, headers: dict[str, str], timeout: float, ca_file: str = "",
              ca_key: str = "the webhook's ca_file") -> None:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    context = tls_context(ca_file) if ca_file else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            response.read(65536)
    except urllib.error.HTTPError as exc:
        raise WebhookError(f"the receiver answered {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, ssl.SSLCertVerificationError):
            raise ReceiverUnreachable(f"the receiver's {not_trusted(reason, ca_key, ca_file)}") from None
        raise ReceiverUnreachable(f"could not reach the receiver: {reason}") from None


def record_revocation(config: Config, store: CaStore, serial: str, now: dt.datetime) -> None:
    if config.notify.webhooks:
        store.record_deliveries([(h.name, serial, REVOKED) for h in config.notify.webhooks], now)


def record_renewal_failure(config: Config, store: CaStore, names: list[str], attempt: str, now: dt.datetime) -> None:
    """An automatic renewal (an ACME order for the names of a certificate still valid) failed:
    the receivers hear it at once, tied to the certificate that will now expire unrenewed."""
    if not config.notify.webhooks:
        return
    serial = store.current_certificate_for_names(names_key(names), now)
    if serial is not None:
        store.record_deliveries([(h.name, serial, f"{RENEWAL_FAILED}-{attempt}") for h in config.notify.webhooks], now)


def record_due(config: Config, store: CaStore, now: dt.datetime) -> int:
    """Record the threshold events due now (the most urgent one per certificate, as mail does)."""
    hooks = config.notify.webhooks
    if not hooks:
        return 0
    rows = [(h.name, record.serial, f"expiry-{threshold}")
            for record, threshold in reminders.due_thresholds(config, store, now) for h in hooks]
    return store.record_deliveries(rows, now) if rows else 0


def run_pass(config: Config, secrets: Secrets, store: CaStore, now: dt.datetime,
             post: Callable[[str, bytes, dict[str, str], float, str], None] = post_json) -> list[Delivery]:
    """One pass: record what is due, then send every delivery whose time has come."""
    if not config.notify.webhooks:
        return []
    record_due(config, store, now)
    hooks = {h.name: h for h in config.notify.webhooks}
    keys = dict(secrets.webhook_secrets)
    out = []
    unreachable: dict[str, str] = {}  # receivers that did not answer in this pass: not tried again in it
    for row in store.due_deliveries(now, now - STALE_CLAIM):
        hook, record = hooks.get(row["webhook"]), store.get_certificate(row["serial"])
        if hook is None or record is None or not store.claim_delivery(row["id"], now, now - STALE_CLAIM):
            continue  # a receiver taken out of the config, or another sender was first
        try:
            if hook.name in unreachable:
                raise WebhookError(f"not tried, the receiver failed just before: {unreachable[hook.name]}")
            body, headers = render(hook, record, row["event"], config, now, keys.get(hook.name))
            post(hook.url, body, headers, hook.timeout_seconds, hook.ca_file)
        except Exception as exc:  # noqa: BLE001 - one receiver's failure must not stop the others
            error = str(exc) if isinstance(exc, WebhookError) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, ReceiverUnreachable):
                unreachable[hook.name] = error
            wait = min(dt.timedelta(minutes=config.notify.retry_minutes) * 2 ** row["attempts"], MAX_BACKOFF)
            store.delivery_failed(row["id"], error, now + wait)
            out.append(Delivery(hook.name, record.serial, row["event"], "failed", error))
            continue
        store.delivery_sent(row["id"], now)
        out.append(Delivery(hook.name, record.serial, row["event"], "sent"))
    return out


def waiting_retries(config: Config, store: CaStore, now: dt.datetime) -> list[str]:
    """Failed deliveries to receivers still configured whose next try is later than `now`, one
    line each for `remind` (as reminders.waiting_retries for mail)."""
    hooks = {h.name for h in config.notify.webhooks}
    return [reminders.waiting_line(f"webhook {row['webhook']} {row['event']} for {row['serial']}", row)
            for row in store.waiting_deliveries(now) if row["webhook"] in hooks]


def render(hook: WebhookConfig, record: CertificateRecord, event: str, config: Config, now: dt.datetime,
           secret: str | None) -> tuple[bytes, dict[str, str]]:
    link = f"{config.server.base_url}/certificates/{record.serial}"
    name = certificate_name(record)
    if event == REVOKED:
        kind, words = "certificate.revoked", (
            f"Certificate {name} was revoked ({record.revocation_reason or 'unspecified'}).")
    elif event.startswith(RENEWAL_FAILED):
        kind, words = "certificate.renewal_failed", (
            f"The automatic renewal of certificate {name} failed; it {expiry_phrase(reminders.days_left(record.not_after, now))}.")
    else:
        left = reminders.days_left(record.not_after, now)
        kind = "certificate.expired" if left < 0 else "certificate.expiring"
        words = f"Certificate {name} {expiry_phrase(left)} ({record.not_after:%Y-%m-%d %H:%M} UTC)."
    if hook.format == "slack":
        body = {"text": f"{words} <{link}|Details>"}
    elif hook.format == "teams":
        body = {"@type": "MessageCard", "@context": "https://schema.org/extensions", "summary": words,
                "title": f"{config.ca.organization} certificate authority", "text": f"{words} [Details]({link})"}
    else:
        body = {"event": kind, "serial": record.serial, "common_name": record.common_name,
                "names": [s.split(":", 1)[1] for s in record.sans], "not_after": to_text(record.not_after),
                "days_left": reminders.days_left(record.not_after, now),
                "threshold_days": int(event.split("-", 1)[1]) if event.startswith("expiry-") else None,
                "revoked_at": to_text(record.revoked_at) if record.revoked_at else None,
                "reason": record.revocation_reason, "url": link}
    return json_request(body, kind, secret if hook.format == "json" else None)


def json_request(body: dict, event: str, secret: str | None) -> tuple[bytes, dict[str, str]]:
    """The bytes and headers of a JSON POST: signed `X-CA-Server-Signature: sha256=HEX` (HMAC of the
    body) when there is a secret. Every webhook the server calls is sent so."""
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json", "User-Agent": "ca-server", "X-CA-Server-Event": event}
    if secret:
        headers["X-CA-Server-Signature"] = "sha256=" + hmac.new(secret.encode(), data, hashlib.sha256).hexdigest()
    return data, headers
