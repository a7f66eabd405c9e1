"""Commands for ACME: External Account Binding keys and the accounts that used them."""

from __future__ import annotations

import json

import click

from ..acme import accounts as acme_accounts
from ..acme import state as acme_state
from ..clock import utcnow
from .support import cli_services as _services
from .support import domain_errors


def register_acme_commands(main: click.Group) -> None:
    @main.group()
    def acme() -> None:
        """ACME: External Account Binding keys and accounts."""

    @acme.group()
    def eab() -> None:
        """External Account Binding keys: what an API token is to the API, an EAB key is to ACME."""

    @eab.command("create")
    @click.argument("name")
    @click.option("--domain", "domains", multiple=True,
                  help="Domain an account bound with this key may order names under; repeat for several. "
                       "None: any name the policy allows.")
    @click.option("--allow-ip", is_flag=True, help="Accounts bound with it may order IP addresses.")
    @domain_errors
    def eab_create(name, domains, allow_ip) -> None:
        """Create an EAB key; prints {"kid": ..., "hmac_key": ...} once, as one JSON line.

        \b
        Example:
          ca-server acme eab create web-team --domain web.example.test
          certbot register --server https://ca.example.test/acme/directory --eab-kid KID --eab-hmac-key KEY
        """
        svc = _services()
        key = acme_accounts.create_eab_key(svc.store, name, domains=tuple(domains), allow_ip=allow_ip, now=utcnow())
        click.echo(json.dumps(key))

    @eab.command("revoke")
    @click.argument("name")
    @domain_errors
    def eab_revoke(name) -> None:
        """Revoke an EAB key: accounts bound with it may order no more.

        \b
        Example:
          ca-server acme eab revoke web-team
        """
        acme_accounts.revoke_eab_key(_services().store, name, utcnow())
        click.echo(f"EAB key {name} revoked; accounts bound with it can no longer order certificates.")

    @eab.command("list")
    @domain_errors
    def eab_list() -> None:
        """List EAB keys (never their HMAC keys).

        \b
        Example:
          ca-server acme eab list
        """
        for row in _services().store.list_eab_keys():
            state = "revoked" if row["revoked_at"] else "active"
            click.echo(f"{row['name']:<24} {row['kid']:<24} {state:<8} {','.join(row['domains']) or 'any name'}")

    @acme.command("accounts")
    @domain_errors
    def accounts_list() -> None:
        """List ACME accounts: id, status, contacts, EAB key, orders.

        \b
        Example:
          ca-server acme accounts
        """
        store = _services().store
        for account, orders in acme_state.all_accounts(store):
            click.echo(f"{account.id:<18} {account.status:<12} {','.join(account.contacts) or '-':<32} "
                       f"{account.eab_name or '-':<16} {len(orders)} order(s)")
