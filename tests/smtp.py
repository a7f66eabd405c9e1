"""A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives, and a way to point an
instance's config at it."""

from __future__ import annotations

import email
import json
import threading
import tomllib
from email.message import EmailMessage
from email.policy import default
from pathlib import Path

from aiosmtpd.controller import Controller

from .server import free_port


class Inbox:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self._lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd handler hook
        message = email.message_from_bytes(envelope.content, policy=default)
        with self._lock:
            self.messages.append(message)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
        return "250 OK"

    def clear(self) -> None:
        with self._lock:
            self.messages.clear()
            self.envelopes.clear()


class SMTPServer:
    """`tls`: an ssl.SSLContext for STARTTLS (`implicit`: TLS from the first byte, port 465 style);
    `users`: name -> password for AUTH (then required, and only over TLS, as relays do)."""

    def __init__(self, *, tls=None, implicit: bool = False, users: dict[str, str] | None = None) -> None:
        self.inbox = Inbox()
        self.port = free_port()  # aiosmtpd cannot bind port 0, so pick a free one first
        self.controller: Controller | None = None
        self.tls, self.implicit, self.users = tls, implicit, users
        self.logins: list[str] = []

    def _authenticate(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult, LoginPassword

        ok = (isinstance(auth_data, LoginPassword) and self.users is not None
              and self.users.get(auth_data.login.decode()) == auth_data.password.decode())
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd answers 535 itself

    def start(self) -> SMTPServer:
        kwargs: dict = {}
        if self.tls is not None:
            kwargs = {"ssl_context": self.tls} if self.implicit else {"tls_context": self.tls,
                                                                      "require_starttls": True}
        if self.users is not None:
            # aiosmtpd 1.4 counts only STARTTLS as TLS for AUTH; an implicit-TLS connection is TLS too.
            kwargs |= {"authenticator": self._authenticate, "auth_required": True,
                       "auth_require_tls": not self.implicit}
        self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, **kwargs)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(value)


def write_config(instance: Path, **sections: dict) -> None:
    """Update instance/config.toml: the given keys replace what is there."""
    path = instance / "config.toml"
    data = tomllib.loads(path.read_text()) if path.exists() else {}
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    lines = []
    for name, values in data.items():
        if name == "profiles":
            for pname, pvalues in values.items():
                lines.append(f"[profiles.{json.dumps(pname)}]")
                lines += [f"{k} = {_toml_value(v)}" for k, v in pvalues.items()]
            continue
        lines.append(f"[{name}]")
        lines += [f"{json.dumps(k) if k == 'from' else k} = {_toml_value(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
