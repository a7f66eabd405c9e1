"""The `[mail]` section (the SMTP server reminders go through), and the `[notify]` section: chat
and webhook receivers of expiry and revocation events.

    [[notify.webhooks]]
    name = "ops-chat"
    url = "https://hooks.slack.com/services/..."
    format = "slack"          # "json" | "slack" | "teams"
    secret_env = ""            # json only: HMAC-SHA256 key from this environment variable
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import ConfigError
from .tables import check_ca_file

WEBHOOK_FORMATS = ("json", "slack", "teams")
MAIL_SECURITY = ("none", "starttls", "tls")


@dataclass(frozen=True)
class MailConfig:
    host: str = "localhost"
    port: int = 25
    security: str = "none"
    username: str = ""
    password_env: str = "CA_SERVER_SMTP_PASSWORD"
    from_address: str = "ca@example.test"
    timeout_seconds: int = 20
    # CA certificates (PEM) trusted for the SMTP server's certificate, besides the system's: a
    # relay whose certificate this CA issued needs its root.pem here.
    ca_file: str = ""


def check_mail(m: MailConfig) -> None:
    if not m.host:
        raise ConfigError("mail.host: must not be empty")
    if not 1 <= m.port <= 65535:
        raise ConfigError(f"mail.port: must be at least 1 and at most 65535, not {m.port}")
    if m.security not in MAIL_SECURITY:
        raise ConfigError(f"mail.security: must be one of {', '.join(MAIL_SECURITY)}")
    if not 1 <= m.timeout_seconds <= 600:
        raise ConfigError(f"mail.timeout_seconds: must be at least 1 and at most 600, not {m.timeout_seconds}")
    if m.ca_file:
        if m.security == "none":
            raise ConfigError('mail.ca_file: is for TLS; set mail.security to "starttls" or "tls" too')
        check_ca_file("mail.ca_file", m.ca_file)


@dataclass(frozen=True)
class WebhookConfig:
    name: str
    url: str
    format: str = "json"
    secret_env: str = ""
    timeout_seconds: int = 10
    ca_file: str = ""  # https: CA certificates (PEM) trusted for the receiver's certificate, besides the system's


@dataclass(frozen=True)
class NotifyConfig:
    webhooks: tuple[WebhookConfig, ...] = ()
    retry_minutes: int = 5


def notify_from_dict(value: typing.Any) -> NotifyConfig:
    if not isinstance(value, dict):
        raise ConfigError("notify: must be a table, like [notify] or [[notify.webhooks]]")
    unknown = set(value) - {"webhooks", "retry_minutes"}
    if unknown:
        raise ConfigError(f"notify.{sorted(unknown)[0]}: unknown key (known keys: retry_minutes, webhooks)")
    retry = value.get("retry_minutes", 5)
    if isinstance(retry, bool) or not isinstance(retry, int) or not 1 <= retry <= 1440:
        raise ConfigError(f"notify.retry_minutes: must be a whole number from 1 to 1440, not {retry!r}")
    hooks = value.get("webhooks", [])
    if not isinstance(hooks, list):
        raise ConfigError("notify.webhooks: write each receiver as a [[notify.webhooks]] table")
    out, names = [], set()
    for i, hook in enumerate(hooks):
        key = f"notify.webhooks[{i}]"
        if not isinstance(hook, dict):
            raise ConfigError(f"{key}: must be a table with name, url and format")
        known = {f for f in WebhookConfig.__dataclass_fields__}
        extra = set(hook) - known
        if extra:
            raise ConfigError(f"{key}.{sorted(extra)[0]}: unknown key (known keys: {', '.join(sorted(known))})")
        name, url = hook.get("name"), hook.get("url")
        if not isinstance(name, str) or not name or not all(c.isalnum() or c in "-_." for c in name) or name in names:
            raise ConfigError(f"{key}.name: a unique name of letters, digits, - _ . is needed, not {name!r}")
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{key}.url: must be an http:// or https:// URL, not {url!r}")
        fmt = hook.get("format", "json")
        if fmt not in WEBHOOK_FORMATS:
            raise ConfigError(f"{key}.format: must be one of {', '.join(WEBHOOK_FORMATS)}, not {fmt!r}")
        secret_env = hook.get("secret_env", "")
        if not isinstance(secret_env, str) or (secret_env and not all(c.isalnum() or c == "_" for c in secret_env)):
            raise ConfigError(f"{key}.secret_env: must be an environment variable name, like CA_SERVER_HOOK_SECRET")
        timeout = hook.get("timeout_seconds", 10)
        if isinstance(timeout, bool) or not isinstance(timeout, int) or not 1 <= timeout <= 120:
            raise ConfigError(f"{key}.timeout_seconds: must be a whole number from 1 to 120, not {timeout!r}")
        ca_file = hook.get("ca_file", "")
        if not isinstance(ca_file, str) or (ca_file and parts.scheme != "https"):
            raise ConfigError(f"{key}.ca_file: a path, for an https:// url only")
        if ca_file:
            check_ca_file(f"{key}.ca_file", ca_file)
        names.add(name)
        out.append(WebhookConfig(name, url, fmt, secret_env, timeout, ca_file))
    return NotifyConfig(tuple(out), retry)
