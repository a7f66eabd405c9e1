"""Secrets: read from the environment once, at start-up, never from the TOML."""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass

if typing.TYPE_CHECKING:
    from . import Config


@dataclass(frozen=True)
class Secrets:
    """Values read from the environment at start-up, never from the TOML."""

    key_passphrase: str | None = None
    smtp_password: str | None = None
    db_password: str | None = None
    pkcs11_pin: str | None = None
    webhook_secrets: tuple[tuple[str, str], ...] = ()  # (webhook name, secret)
    scep_challenges: tuple[tuple[str, str], ...] = ()  # (SCEP endpoint, its static challenge password)
    scep_webhook_secrets: tuple[tuple[str, str], ...] = ()  # (SCEP endpoint, its challenge webhook's secret)
    ldap_bind_password: str | None = None  # [auth.ldap] bind_password_env
    oidc_client_secret: str | None = None  # [auth.oidc] client_secret_env

    def scep_challenge(self, endpoint: str) -> str | None:
        return dict(self.scep_challenges).get(endpoint)

    def __repr__(self) -> str:  # never print a secret by accident
        return "Secrets(<hidden>)"


def read_secrets(config: Config, environ: typing.Mapping[str, str] | None = None) -> Secrets:
    """The one place that reads secrets from the environment."""
    env = os.environ if environ is None else environ
    return Secrets(
        key_passphrase=env.get(config.ca.passphrase_env) or None,
        smtp_password=env.get(config.mail.password_env) or None,
        db_password=env.get(config.database.password_env) or None,
        pkcs11_pin=env.get(config.ca.pkcs11_pin_env) or None,
        webhook_secrets=tuple((h.name, env[h.secret_env]) for h in config.notify.webhooks
                              if h.secret_env and env.get(h.secret_env)),
        scep_challenges=tuple((e.name, env[e.challenge_env]) for e in config.scep.all_endpoints
                              if e.challenge_env and env.get(e.challenge_env)),
        scep_webhook_secrets=tuple((e.name, env[e.challenge_webhook_secret_env]) for e in config.scep.all_endpoints
                                   if e.challenge_webhook_secret_env and env.get(e.challenge_webhook_secret_env)),
        ldap_bind_password=(env.get(config.auth.ldap.bind_password_env) or None) if config.auth.ldap else None,
        oidc_client_secret=(env.get(config.auth.oidc.client_secret_env) or None)
        if config.auth.oidc and config.auth.oidc.client_secret_env else None,
    )
