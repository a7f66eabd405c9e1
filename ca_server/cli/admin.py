"""Commands for administration: users, tokens, the audit log."""

from __future__ import annotations

import json
import sys

import click

from .. import accounts
from ..clock import to_text, utcnow
from ..directory import sessions
from .support import cli_services as _services
from .support import domain_errors, operator

PASSWORD_STDIN = click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")


def register_admin_commands(main: click.Group) -> None:
    @main.group()
    def user() -> None:
        """Web users (sign-in accounts)."""

    @user.command("add")
    @click.argument("name")
    @click.option("--admin", is_flag=True, help="May approve, revoke, and manage users and tokens.")
    @click.option("--domain", "domains", multiple=True,
                  help="Domain the user may request names under; repeat for several.")
    @click.option("--allow-ip/--no-allow-ip", default=None,
                  help="May request IP address SANs (default: admins yes, others no).")
    @click.option("--email", default=None, help="The user's address: the form's reminder e-mail defaults to it, "
                  "and the outcomes of the user's requests held for approval go there.")
    @PASSWORD_STDIN
    @domain_errors
    def user_add(name, admin, domains, allow_ip, email, password_stdin) -> None:
        """Add a web user.

        \b
        Example:
          echo 'correct horse battery' | ca-server user add alice --domain example.test --password-stdin
        """
        password = _password(password_stdin)
        svc = _services()
        accounts.add_user(svc.store, name, password, is_admin=admin, domains=tuple(domains),
                          allow_ip=allow_ip, email=email, now=utcnow())
        scope = ", ".join(domains) if domains else ("any name the policy allows" if admin else "no names yet")
        click.echo(f"Added {'admin' if admin else 'user'} {name} (domains: {scope})")

    @user.command("set-password")
    @click.argument("name")
    @PASSWORD_STDIN
    @domain_errors
    def user_set_password(name, password_stdin) -> None:
        """Give a local user a new password (forgotten, or leaked); their sessions end.

        \b
        Example:
          ca-server user set-password ca-admin
        """
        password = _password(password_stdin)
        svc = _services()
        now = utcnow()
        accounts.set_password(svc.store, name, password, now, actor=operator())
        ended = sessions.end_all(svc.store, name, now, actor=operator(), client=None)
        click.echo(f"{name}: new password set; {ended} session{'s' if ended != 1 else ''} ended")

    @user.command("set-email")
    @click.argument("name")
    @click.argument("address", required=False, default="")
    @domain_errors
    def user_set_email(name, address) -> None:
        """Set (or, without ADDRESS, clear) a user's e-mail: the form's reminders default to it.

        \b
        Example:
          ca-server user set-email alice alice@example.test
        """
        accounts.set_user_email(_services().store, name, address, utcnow())
        click.echo(f"{name}: e-mail {'set to ' + address if address else 'cleared'}")

    @user.command("sign-out")
    @click.argument("name")
    @domain_errors
    def user_sign_out(name) -> None:
        """End every sign-in session of a user, on every node (a lost laptop, a leaver).

        \b
        Example:
          ca-server user sign-out alice
        """
        store = _services().store
        if store.get_user(name) is None:  # a typo would otherwise read as "0 sessions ended"
            if any(row["name"] == name for row in store.list_users()):
                raise click.ClickException(f"{name} is disabled: their sessions ended when they were.")
            raise click.ClickException(f"There is no user named {name!r}.")
        ended = sessions.end_all(store, name, utcnow(), actor=operator(), client=None)
        click.echo(f"{name}: {ended} session{'s' if ended != 1 else ''} ended")

    @user.command("disable")
    @click.argument("name")
    @domain_errors
    def user_disable(name) -> None:
        """Disable a user (a leaver): no more sign-ins, by password or through the directory, and
        every session ends now.

        \b
        Example:
          ca-server user disable alice
        """
        ended = sessions.disable_user(_services().store, name, utcnow(), actor=operator(), client=None)
        click.echo(f"{name}: disabled; {ended} session{'s' if ended != 1 else ''} ended")

    @user.command("enable")
    @click.argument("name")
    @domain_errors
    def user_enable(name) -> None:
        """Let a disabled user sign in again.

        \b
        Example:
          ca-server user enable alice
        """
        accounts.enable_user(_services().store, name, utcnow(), actor=operator())
        click.echo(f"{name}: enabled; they can sign in again")

    @user.command("list")
    @domain_errors
    def user_list() -> None:
        """List users.

        \b
        Example:
          ca-server user list
        """
        for row in _services().store.list_users():
            role = "admin" if row["is_admin"] else "approver" if row.get("can_approve") else "user"
            click.echo(f"{row['name']:<24} {role:<8} {','.join(row['domains']) or '-':<32} {row.get('email') or '-'}"
                       + (f"  disabled {row['disabled_at']}" if row.get("disabled_at") else ""))

    @main.group()
    def token() -> None:
        """API tokens (Authorization: Bearer TOKEN)."""

    @token.command("create")
    @click.argument("name")
    @click.option("--admin", is_flag=True, help="The token may approve, revoke and read everything.")
    @click.option("--domain", "domains", multiple=True,
                  help="Domain the token may request names under; repeat for several.")
    @click.option("--allow-ip/--no-allow-ip", default=None,
                  help="May request IP address SANs (default: admin tokens yes, others no).")
    @domain_errors
    def token_create(name, admin, domains, allow_ip) -> None:
        """Create an API token and print it once (only its hash is stored).

        \b
        Example:
          ca-server token create cucm-deploy --domain example.test
        """
        svc = _services()
        value = accounts.create_token(svc.store, name, is_admin=admin, domains=tuple(domains),
                                      allow_ip=allow_ip, now=utcnow())
        click.echo(value)
        click.echo(f"Token {name!r} created; it is shown only this once.", err=True)

    @token.command("revoke")
    @click.argument("name")
    @domain_errors
    def token_revoke(name) -> None:
        """Disable a token.

        \b
        Example:
          ca-server token revoke cucm-deploy
        """
        accounts.revoke_token(_services().store, name, utcnow())
        click.echo(f"Token {name!r} revoked.")

    @token.command("list")
    @domain_errors
    def token_list() -> None:
        """List tokens (names, scopes, last use; never the tokens themselves).

        \b
        Example:
          ca-server token list
        """
        for row in _services().store.list_tokens():
            state = f"revoked {row['revoked_at']}" if row["revoked_at"] else "active"
            if not row["revoked_at"] and row.get("expires_at"):
                state = f"{'expired' if row['expires_at'] <= to_text(utcnow()) else 'expires'} {row['expires_at']}"
            click.echo(f"{row['name']:<24} {'admin' if row['is_admin'] else 'scoped':<6} "
                       f"{','.join(row['domains']) or '-':<30} last used {row['last_used_at'] or 'never'}  {state}")

    @main.group()
    def audit() -> None:
        """The audit log."""

    @audit.command("export")
    @click.option("--output", "-o", type=click.File("w"), default="-", help="File to write (default: stdout).")
    @click.option("--after-id", type=click.IntRange(0, 2**63 - 1), default=0,
                  help="Only entries after this id: ship the log on in steps, keeping the last id sent.")
    @domain_errors
    def audit_export(output, after_id) -> None:
        """Export the audit log as JSON lines, oldest first.

        \b
        Example:
          ca-server audit export -o audit.jsonl
          ca-server audit export --after-id "$(tail -n1 audit.jsonl | jq .id)" >> audit.jsonl
        """
        for row in _services().store.all_audit_entries(after_id):
            output.write(json.dumps(row, sort_keys=True) + "\n")


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)
