"""`ca-server log verify` and `log checkpoint`: the append-only issuance log (issue 27)."""

from __future__ import annotations

import time
from pathlib import Path

import click

from ..clock import utcnow
from ..display import count_text
from ..errors import CAError
from ..recovery import log_check
from ..recovery.issuance_log import log_path, public_key_path
from .support import cli_services as _services
from .support import domain_errors, instance_path


def register_log_commands(main: click.Group) -> None:
    @main.group("log")
    def log_group() -> None:
        """The append-only issuance log: every certificate and revocation, hash-linked, with signed
        checkpoints (GET /log/checkpoint)."""

    @log_group.command("verify")
    @click.argument("path", required=False, type=click.Path(dir_okay=False, path_type=Path))
    @click.option("--key", "verifier", help="The log's verifier key (name+id+key, GET /log/key); default: the "
                  "instance's keys/log-key.pub.")
    @click.option("--no-store", is_flag=True, help="Check the file alone, without comparing it with the store.")
    @domain_errors
    def verify(path: Path | None, verifier: str | None, no_store: bool) -> None:
        """Check the log at PATH (default: [log] path): every entry's link to the one before, every
        checkpoint's signature and root, and that the store and the log hold the same certificates
        and revocations. Exit 0 when all agree; otherwise each problem, with its entry and line.

        \b
        Example:
          ca-server log verify /mnt/log-disk/ca/entries.jsonl
        """
        if path is not None and (not path.name or path.is_dir()):  # "" reads as "."
            raise click.BadParameter(f"{str(path)!r} is not the log file: give its path (entries.jsonl), or none "
                                     "for this instance's", param_hint="PATH")
        started = time.monotonic()
        svc = None
        if not no_store and (instance_path() / "config.toml").exists():
            svc = _services()
        if path is None:
            if svc is None:
                raise click.UsageError("Name the log file: there is no instance here to read [log] path from.")
            path = log_path(svc.config, svc.paths)
        if verifier is None:
            pub = public_key_path(svc.paths) if svc is not None else None
            if pub is None or not pub.exists():
                raise click.UsageError("Pass --key (GET /log/key of the CA): no instance key is at hand.")
            verifier = pub.read_text().strip()
        notes = log_check.file_checkpoints(path)
        if svc is not None:
            notes += [row["note"] for row in svc.store.log_checkpoints()]
        report = log_check.verify(path, verifier, list(dict.fromkeys(notes)), svc.store if svc else None)
        seconds = time.monotonic() - started
        if report.problems:
            for problem in report.problems:
                click.echo(f"PROBLEM: {problem}", err=True)
            raise click.ClickException(f"The log at {path} does not verify ({count_text(len(report.problems), 'problem')} "
                                       "above).")
        against = "and agrees with the store" if svc is not None else "(not compared with a store)"
        if report.from_store:
            against += (f"; the newest {report.from_store} came from the store (other nodes appended them; this "
                        "node's file gets them on its next append)")
        click.echo(f"ok: {count_text(report.entries, 'entry', 'entries')}, {count_text(report.checkpoints, 'checkpoint')} "
                   f"verified {against} in {seconds:.1f} s")

    @log_group.command("checkpoint")
    @domain_errors
    def checkpoint() -> None:
        """Sign a checkpoint of the log now (the server makes them on request and every minute)
        and print it.

        \b
        Example:
          ca-server log checkpoint
        """
        svc = _services()
        if svc.log is None:
            raise CAError("This instance keeps no issuance log ([log] enabled = false).")
        click.echo(svc.log.checkpoint(svc.store, utcnow()), nl=False)
