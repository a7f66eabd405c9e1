"""`ca-server backup`, `backup verify`, `restore`: backups that restore (issue 27)."""

from __future__ import annotations

from pathlib import Path

import click

from ..clock import utcnow
from ..display import count_text, moment_text
from ..recovery import backup as backups
from ..recovery import log_check
from ..revocation import publish_crl
from ..services import open_services
from .support import cli_services as _services
from .support import domain_errors, operator

IDENTITY = click.option("--identity", "identity", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                        help="The age identity (private key) file, for an encrypted backup.")


def register_backup_commands(main: click.Group) -> None:
    @main.group(invoke_without_command=True)
    @click.option("--to", "to_dir", type=click.Path(file_okay=False, path_type=Path),
                  help="The folder to write it to (default: [backup] dir, else instance/backups).")
    @click.pass_context
    @domain_errors
    def backup(ctx: click.Context, to_dir: Path | None) -> None:
        """Back up this instance, running or not: a consistent snapshot of the store, the CA
        certificates and encrypted keys, config.toml and a manifest, in one file (encrypted to
        [backup] recipient when set). Its path is printed on the last line.

        \b
        Example:
          ca-server backup --to /mnt/backups/ca
          ca-server backup verify /mnt/backups/ca/ca-backup-20261206T120000000Z.tar.age --identity backup.key
        """
        if ctx.invoked_subcommand is not None:
            return
        svc = _services()
        path = backups.run(svc.config, svc.paths, svc.store, utcnow(), to_dir=to_dir, actor=operator())
        if not svc.config.backup.recipient:
            click.echo("Not encrypted: [backup] recipient names no age key, so keep this file as safe as the "
                       "instance folder.", err=True)
        click.echo(path)

    @backup.command("verify")
    @click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
    @IDENTITY
    @domain_errors
    def verify(file: Path, identity: Path | None) -> None:
        """Check a backup without restoring it: it decrypts, every file matches the manifest, the
        store passes SQLite's integrity check and has the rows the manifest counts.

        \b
        Example:
          ca-server backup verify ca-backup-20261206T120000000Z.tar.age --identity backup.key
        """
        with backups.check(file, identity) as checked:
            m = checked.manifest
        click.echo(f"ok: backup of {moment_text(m['created_at'])}, {count_text(m['rows']['certificates'], 'certificate')}, "
                   f"{len(m['files'])} files, audit log up to entry {m['audit_position']}")

    @main.command("restore")
    @click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
    @click.option("--instance", "target", required=True, type=click.Path(file_okay=False, path_type=Path),
                  help="The new instance folder to make (absent or empty).")
    @IDENTITY
    @click.option("--replay-log", "replay_log", type=click.Path(exists=True, path_type=Path),
                  help="The issuance log ([log] path of the lost instance) to replay after the backup's position.")
    @domain_errors
    def restore(file: Path, target: Path, identity: Path | None, replay_log: Path | None) -> None:
        """Make a new instance folder from a backup: the same root, intermediates, keys,
        certificates, revocations and audit log. The store is SQLite; `db copy` moves it to
        PostgreSQL. CRL numbers go on above every one published before; serials are random.

        \b
        Example:
          ca-server restore ca-backup-20261206T120000000Z.tar.age --instance /srv/ca/instance --identity backup.key
        """
        with backups.check(file, identity) as checked, backups.new_instance_folder(target):
            cleared = backups.restore(checked, target)
            m = checked.manifest
            replayed = _replay(target, replay_log) if replay_log is not None else _log_from_store(target)
        if cleared:
            click.echo("[database] url cleared in the restored config.toml: the restored store is SQLite "
                       "(ca-server db copy moves it to PostgreSQL).", err=True)
        click.echo(f"Restored the backup of {moment_text(m['created_at'])} into {target}: "
                   f"{count_text(m['rows']['certificates'], 'certificate')}.")
        for line in replayed:
            click.echo(line)
        click.echo(f"Serve it with: ca-server --instance {target} serve")


def _log_from_store(target: Path) -> list[str]:
    """The issuance log's file is not in a backup (it lives on, elsewhere, for --replay-log): write
    it out from the restored store, up to the backup, so `log verify` passes on the new instance
    at once (it said "There is no issuance log ..." until the first certificate). A file already
    at an explicit [log] path is the surviving log: left for --replay-log."""
    svc = open_services(target)
    log, size = svc.log, svc.store.log_size()
    if log is None or not size or log.file.path.exists():
        return []
    log.sync(svc.store, size)
    return [f"Wrote the issuance log {log.file.path} from the restored store: "
            f"{count_text(size, 'entry', 'entries')}, up to the backup."]


def _replay(target: Path, replay_log: Path) -> list[str]:
    """Replay the lost instance's log into the restored one (and publish CRLs when it revoked);
    what was done, in lines for the operator."""
    svc = open_services(target)
    svc.store.attach_log(None)  # the replay writes the entries itself
    done = log_check.replay_into(svc.paths, svc.config, svc.store, replay_log, utcnow())
    lines = [f"Replayed {done.entries} log entries from {replay_log}: {done.issued} certificates and "
             f"{done.revoked} revocations made after the backup."]
    if done.revoked:  # the backup's CRLs predate these revocations
        now = utcnow()
        for gen in svc.authority.intermediates:
            if gen.not_after > now and svc.authority.can_sign(gen):
                crl = publish_crl(svc.config, svc.store, svc.authority, gen.slug, now)
                lines.append(f"Published CRL number {crl.number} of {gen.slug} with them.")
    return lines
