"""Commands for the device doors: SCEP one-time challenge passwords."""

from __future__ import annotations

import datetime as dt
import re

import click

from ..accounts import check_domains
from ..clock import utcnow
from ..config.devices import DEFAULT
from ..display import moment_text
from ..scep import enroll
from .support import cli_services as _services
from .support import domain_errors

_UNITS = {"m": 60, "h": 3600, "d": 86400}
MAX_HOURS = 24 * 365


def _hours(text: str | None, default: int) -> float:
    if text is None:
        return default
    match = re.fullmatch(r"\s*(\d+)\s*([mhd])\s*", text)
    if not match or int(match[1]) == 0:
        raise click.BadParameter(f"{text!r}: a duration like 30m, 12h or 7d")
    hours = int(match[1]) * _UNITS[match[2]] / 3600
    if hours > MAX_HOURS:  # as [scep] challenge_hours: a one-time password is not for years
        raise click.BadParameter(f"{text!r}: at most 365d (a one-time challenge is used within days)")
    return hours


def register_device_commands(main: click.Group) -> None:
    @main.group()
    def scep() -> None:
        """SCEP: one-time challenge passwords."""

    @scep.group()
    def challenge() -> None:
        """One-time challenge passwords (as NDES's): printed once, stored hashed, consumed on use."""

    @challenge.command("create")
    @click.option("--endpoint", default=DEFAULT, show_default=True,
                  help="The SCEP endpoint it is for: default (/scep) or a [scep.endpoints.NAME] (/scep/NAME).")
    @click.option("--domain", "domains", multiple=True,
                  help="Domain the device may request names under; repeat for several. None: any name the "
                       "policy allows.")
    @click.option("--expires-in", "expires_in", default=None,
                  help="How long it stays usable, like 30m, 12h or 7d (default: [scep] challenge_hours).")
    @domain_errors
    def challenge_create(endpoint, domains, expires_in) -> None:
        """Create a one-time challenge password; it is printed alone on the last line.

        \b
        Example:
          ca-server scep challenge create --domain phones.corp.example --expires-in 2h
        """
        svc = _services()
        if svc.config.scep.endpoint(endpoint) is None:
            names = ", ".join(e.name for e in svc.config.scep.all_endpoints)
            raise click.BadParameter(f"there is no SCEP endpoint {endpoint!r}; the endpoints are {names} "
                                     "([scep.endpoints.NAME] in config.toml adds one)", param_hint="--endpoint")
        hours = _hours(expires_in, svc.config.scep.challenge_hours)
        now = utcnow()
        domains = check_domains(domains)
        secret = enroll.create_challenge(svc.store, now, hours=hours, domains=domains, endpoint=endpoint)
        path = "/scep" if endpoint == DEFAULT else f"/scep/{endpoint}"
        click.echo(f"One-time SCEP challenge for {path}, usable once until "
                   f"{moment_text(now + dt.timedelta(hours=hours))}"
                   f"{' for names under ' + ', '.join(domains) if domains else ''}; it is shown only this once:")
        click.echo(secret)

    @challenge.command("list")
    @domain_errors
    def challenge_list() -> None:
        """One-time challenges, newest first: unused, used or expired (never the passwords).

        \b
        Example:
          ca-server scep challenge list
        """
        now = utcnow()
        for row in _services().store.scep_challenges():
            state = enroll.challenge_state(row, now)
            state += {"used": f" {moment_text(row['used_at'])}", "expired": f" {moment_text(row['expires_at'])}",
                      "unused": f", until {moment_text(row['expires_at'])}"}[state]
            click.echo(f"created {moment_text(row['created_at'])}  {row['endpoint']:<12} {state:<38} "
                       f"{','.join(row['domains']) or '-'}")
