"""`ca-server root ...`: the offline root's ceremony (run where the root key is) and the
server's side of it (import what the ceremony produced)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from . import offline_root
from .cli_support import cli_services as _services
from .cli_support import domain_errors
from .clock import utcnow
from .config import load_config, read_secrets
from .errors import BadRequestError
from .instance import ROOT_PASSPHRASE_ENV, RootFolder
from .revocation import CA_REASONS, parse_reason


def _root_passphrase() -> bytes:
    """CA_SERVER_ROOT_PASSPHRASE, else the CA passphrase variable ([ca] passphrase_env), else asked."""
    text = os.environ.get(ROOT_PASSPHRASE_ENV) or read_secrets(load_config(None)).key_passphrase
    if not text:
        text = click.prompt("Root key passphrase", hide_input=True)
    return text.encode()


def register_root_commands(main: click.Group) -> None:
    @main.group()
    def root() -> None:
        """The offline root: sign its CRL where its key is, import it on the server."""

    @root.command("sign-crl")
    @click.option("--root-dir", type=click.Path(file_okay=False, path_type=Path), required=True,
                  help="The root's folder (from `init --offline-root` or `root move-out`).")
    @click.option("--revoke", "revoke", multiple=True, metavar="SERIAL:REASON",
                  help="Also list this CA certificate (an intermediate), e.g. 5f3a...:keyCompromise; repeatable.")
    @click.option("--validity-hours", type=click.IntRange(1, 8760 * 5), default=None,
                  help="From now to nextUpdate (default: [revocation] root_crl_validity_hours, 8760).")
    @domain_errors
    def sign_crl(root_dir: Path, revoke: tuple[str, ...], validity_hours: int | None) -> None:
        """Sign the root's next CRL where the root key is; writes DIR/root-NUMBER.crl to import on the server.

        \b
        Example (on the offline machine, then on the server):
          ca-server root sign-crl --root-dir /media/usb/ca-root
          ca-server root import-crl /media/usb/ca-root/root-1795988027584.crl
        """
        entries = []
        for item in revoke:
            serial, _, reason = item.partition(":")
            if not serial or not all(c in "0123456789abcdefABCDEF" for c in serial):
                raise BadRequestError(f"--revoke {item!r}: write it as SERIAL:REASON with the serial in hex")
            entries.append((serial, parse_reason(reason or "unspecified", CA_REASONS)))
        hours = validity_hours or load_config(None).revocation.root_crl_validity_hours
        number, path = offline_root.sign_root_crl(RootFolder(root_dir), _root_passphrase(), hours, utcnow(),
                                                  tuple(entries))
        click.echo(f"Signed root CRL {number} (valid {hours} hours): {path}")

    @root.command("import-crl")
    @click.argument("crl_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @domain_errors
    def import_crl(crl_file: Path) -> None:
        """Serve a root CRL signed offline at /crl/root.crl (checked: the root's, current, newer).

        \b
        Example:
          ca-server root import-crl root-1795988027584.crl
        """
        svc = _services()
        crl = offline_root.import_root_crl(svc.store, svc.authority.root, crl_file.read_bytes(), utcnow())
        svc.store.append_audit(at=utcnow(), action="root_crl_import", actor="cli",
                               detail={"number": crl.number, "next_update": crl.next_update.isoformat()})
        click.echo(f"Root CRL {crl.number} imported; next update due {crl.next_update.isoformat()}.")

    @root.command("move-out")
    @click.argument("root_dir", type=click.Path(file_okay=False, path_type=Path))
    @domain_errors
    def move_out(root_dir: Path) -> None:
        """Move an existing instance's root key into DIR (then keep DIR offline); the server goes on without it.

        \b
        Example:
          ca-server root move-out /media/usb/ca-root
        """
        svc = _services()
        offline_root.move_root_out(svc.paths, RootFolder(root_dir), svc.store)
        svc.store.append_audit(at=utcnow(), action="root_key_moved_out", actor="cli", detail={"to": str(root_dir)})
        click.echo(f"The root key is now only in {root_dir} (and no longer in {svc.paths.root}). Keep that folder "
                   "offline; sign the root CRL there before it lapses (`ca-server root sign-crl`).")
