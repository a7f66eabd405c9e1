"""`ca-server db ...`: the store itself (moving it to PostgreSQL)."""

from __future__ import annotations

import click

from ..errors import StoreUnavailableError
from ..store import PostgresStore
from ..store.copy import CopyError, copy_store
from ..store.postgres import redact
from .support import cli_services as _services
from .support import domain_errors, unavailable_reason


def register_db_commands(main: click.Group) -> None:
    @main.group()
    def db() -> None:
        """The certificate database."""

    @db.command("copy")
    @click.option("--to", "url", required=True, metavar="URL",
                  help="postgresql://USER@HOST:PORT/DB; the password from the variable [database] password_env names.")
    @click.option("--resume", is_flag=True,
                  help="The target has rows already (an earlier copy): add only the rows it lacks.")
    @domain_errors
    def copy(url: str, resume: bool) -> None:
        """Copy this instance's SQLite store into a PostgreSQL database, then compare every table
        (row count and checksum). Safe to run again with --resume; the SQLite file is not changed.

        \b
        Example:
          ca-server db copy --to "postgresql://ca@db.example.test:5432/ca"
          # then set [database] url in instance/config.toml and restart: the CA now uses PostgreSQL
        """
        svc = _services()
        if svc.store.kind != "sqlite":
            raise CopyError("This instance already uses PostgreSQL ([database] url); db copy reads a SQLite store.")
        if not url.startswith(("postgresql://", "postgres://")):
            raise CopyError(f"--to must be a postgresql:// URL, not {redact(url)!r}")
        target = PostgresStore(url, svc.secrets.db_password)
        try:
            target.migrate()
        except StoreUnavailableError as exc:  # name the database and why, not "try again in 5 seconds"
            raise CopyError(f"Cannot reach the PostgreSQL database {redact(url)}: {unavailable_reason(exc)}") from None
        results = copy_store(svc.store, target, resume=resume)
        for result in results:
            click.echo(result.line())
        copied = sum(r.source_rows for r in results)
        if not all(r.matches for r in results):
            raise CopyError("The copy differs from the source (MISMATCH above); do not switch to it.")
        click.echo(f"copied {copied} rows into {redact(url)}; every table matches. "
                   "Set [database] url to it and restart to use it.")
