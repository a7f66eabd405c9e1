"""`ca-server root ...`: the offline root's ceremony (run where the root key is) and the
server's side of it (import what the ceremony produced)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import click
from cryptography.hazmat.primitives.serialization import Encoding

from ..ca import offline_root, rollover
from ..ca.authority import InstancePaths
from ..ca.root_folder import ROOT_PASSPHRASE_ENV, RootFolder
from ..clock import utcnow
from ..config import load_config, read_secrets
from ..display import fingerprint_text, moment_text
from ..errors import BadRequestError
from ..pki.serials import InvalidSerialError, parse_serial, serial_hex
from ..revocation import CA_REASONS, parse_reason
from .support import cli_services as _services
from .support import domain_errors, instance_path, operator

ROOT_DIR_ENV = "CA_SERVER_ROOT_DIR"


def _root_passphrase() -> bytes:
    """CA_SERVER_ROOT_PASSPHRASE, else the CA passphrase variable ([ca] passphrase_env), else asked."""
    text = os.environ.get(ROOT_PASSPHRASE_ENV) or read_secrets(load_config(None)).key_passphrase
    if not text:
        text = click.prompt("Root key passphrase", hide_input=True)
    return text.encode()


def _here() -> RootFolder | None:
    """The current directory, when it is the root's folder."""
    folder = RootFolder(Path.cwd())
    return folder if folder.key_file.exists() else None


def _took_over(authority, gen) -> None:
    previous = authority.intermediates[-2]
    click.echo(f"{gen.issuer_text} now issues (generation {gen.number}, valid to {gen.not_after:%Y-%m-%d}, "
               f"CRL {gen.endpoints.intermediate_crl}).\n{previous.issuer_text} issues no more; its certificates "
               "stay valid, revocable and answered by OCSP and its CRL until they expire.\nOther nodes: copy "
               f"{authority.paths.root_cert.parent}/ and {authority.paths.keys}/ to each (the new files).")


def register_root_commands(main: click.Group) -> None:
    @main.group()
    def root() -> None:
        """The offline root: sign its CRL where its key is, import it on the server."""

    @root.command("sign-crl")
    @click.option("--root-dir", type=click.Path(file_okay=False, path_type=Path), default=None, envvar=ROOT_DIR_ENV,
                  help="The root's folder (from `init --offline-root` or `root move-out`); default: "
                       "$CA_SERVER_ROOT_DIR, else the current directory if it is that folder.")
    @click.option("--revoke", "revoke", multiple=True, metavar="SERIAL:REASON",
                  help="Also list this CA certificate (an intermediate), e.g. 5f3a...:keyCompromise; repeatable.")
    @click.option("--validity-hours", type=click.IntRange(1, 8760 * 5), default=None,
                  help="From now to nextUpdate (default: [revocation] root_crl_validity_hours, 8760).")
    @domain_errors
    def sign_crl(root_dir: Path | None, revoke: tuple[str, ...], validity_hours: int | None) -> None:
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
            try:  # 0, or more than 20 octets, was cryptography's ValueError
                serial = parse_serial(serial)
            except InvalidSerialError:
                raise BadRequestError(f"--revoke {item!r}: {serial} is no certificate serial number (1 to 20 "
                                      "octets, not zero)") from None
            entries.append((serial, parse_reason(reason or "unspecified", CA_REASONS)))
        hours = validity_hours or load_config(None).revocation.root_crl_validity_hours
        folder = _here() if root_dir is None else RootFolder(root_dir)
        if folder is None:
            raise click.ClickException(f"Where is the root's folder? Give it with --root-dir (or {ROOT_DIR_ENV}), "
                                       "or run this inside it.")
        number, path = offline_root.sign_root_crl(folder, _root_passphrase(), hours, utcnow(),
                                                  tuple(entries))
        click.echo(f"Signed root CRL {number} (valid {hours} hours): {path}")

    @root.command("sign-intermediate")
    @click.argument("csr_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--root-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                  envvar=ROOT_DIR_ENV, help="The root's folder; default: $CA_SERVER_ROOT_DIR, else this instance's "
                  "root key if it is online, else the current directory if it is the root's folder.")
    @click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="Where to write the certificate (PEM); default: next to CSR_FILE, ending in .crt.")
    @click.option("--days", type=click.IntRange(1, 36500), default=None,
                  help="Validity (default: [ca] intermediate_validity_days, 1825; never past the root's end).")
    @click.option("--base-url", default=None,
                  help="The server's base URL for the root CRL and root certificate links (default: from the request, "
                       "else the instance's or the one the root folder was made with).")
    @domain_errors
    def sign_intermediate(csr_file: Path, root_dir: Path | None, out: Path | None, days: int | None,
                          base_url: str | None) -> None:
        """Sign a new intermediate's request (from `intermediate rollover`) with the root key.

        \b
        Example (on the offline machine, then on the server):
          ca-server root sign-intermediate /media/usb/intermediate-2.csr --root-dir /media/usb/ca-root
          ca-server intermediate rollover --certificate /media/usb/intermediate-2.crt
        """
        now = utcnow()
        svc = None
        folder = RootFolder(root_dir) if root_dir is not None else None
        if folder is None:
            online = InstancePaths(instance_path())
            if online.root_key.exists():
                svc = _services()
            else:
                folder = _here()
                if folder is None:
                    raise click.ClickException("No root key here: give the root's folder with --root-dir (or "
                                               f"{ROOT_DIR_ENV}), or run this inside it or in an instance with its root key.")
        if svc is None:
            root_cert, root_key = folder.cert, folder.key(_root_passphrase())
            config, known_url = load_config(None), folder.state().get("base_url")
        else:
            root_cert, root_key, config = svc.authority.root, svc.authority.root_key, svc.config
            known_url = config.server.pki_url
        cert = rollover.sign_request(csr_file.read_bytes(), root_cert, root_key, now,
                                     days or config.ca.intermediate_validity_days, base_url, fallback_base_url=known_url)
        entry = {"at": now.isoformat(), "by": operator(), "serial": serial_hex(cert.serial_number),
                 "subject": cert.subject.rfc4514_string(), "not_after": cert.not_valid_after_utc.isoformat()}
        if svc is None:  # the ceremony's own log, kept with the root key
            folder.log_signed(entry)
        else:
            svc.store.append_audit(at=now, action="intermediate_signed", actor=entry["by"], serial=entry["serial"],
                                   detail={"subject": entry["subject"], "not_after": entry["not_after"]})
        # .crt: signed in place (instance/ca/intermediate-N.csr), it is not yet an intermediate of the
        # instance; `intermediate rollover --certificate` checks, installs and audits it.
        target = out or csr_file.with_suffix(".crt")
        target.write_bytes(cert.public_bytes(Encoding.PEM))
        click.echo(f"Signed {cert.subject.rfc4514_string()}\n  serial {serial_hex(cert.serial_number)}, valid "
                   f"{cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}\n"
                   f"  SHA-256 {fingerprint_text(hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest())}\n"
                   f"Wrote {target}; on the server: ca-server intermediate rollover --certificate {target.name}")

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
        svc.store.append_audit(at=utcnow(), action="root_crl_import", actor=operator(),
                               detail={"number": crl.number, "next_update": crl.next_update.isoformat()})
        click.echo(f"Root CRL {crl.number} imported; next update due {moment_text(crl.next_update)}.")

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
        offline_root.move_root_out(svc.paths, RootFolder(root_dir), svc.store, svc.config.server.pki_url)
        svc.store.append_audit(at=utcnow(), action="root_key_moved_out", actor=operator(), detail={"to": str(root_dir)})
        click.echo(f"The root key is now only in {root_dir} (and no longer in {svc.paths.root}). Keep that folder "
                   "offline; sign the root CRL there before it lapses (`ca-server root sign-crl`).")

    @main.group()
    def intermediate() -> None:
        """The intermediates: roll a new one in before the issuing one ends; list them."""

    @intermediate.command("rollover")
    @click.argument("certificate_file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--certificate", "certificate", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                  default=None, help="Install the new intermediate's certificate, signed where the root key is "
                                     "(also as CERTIFICATE_FILE).")
    @click.option("--key", "key_uri", default=None, metavar="PKCS11_URI",
                  help="Keep the new intermediate's key in a token (pkcs11:token=...;object=...), made there beforehand.")
    @domain_errors
    def intermediate_rollover(certificate_file: Path | None, certificate: Path | None, key_uri: str | None) -> None:
        """A new intermediate takes over issuance; the old one's certificates stay valid and answered.

        \b
        Example, with the root key in the instance (one step):
          ca-server intermediate rollover
        Example, with an offline root: this writes a request; sign it where the root key is, then install:
          ca-server intermediate rollover
          ca-server root sign-intermediate intermediate-2.csr --root-dir /media/usb/ca-root
          ca-server intermediate rollover --certificate intermediate-2.crt
        """
        svc = _services()
        authority, now, actor = svc.authority, utcnow(), operator()
        certificate = certificate or certificate_file
        if certificate is not None:
            gen = rollover.install(authority, svc.store, svc.config, certificate.read_bytes(), now, actor=actor)
        elif not authority.root_offline:
            gen = rollover.rollover_online(authority, svc.store, svc.config, now, actor=actor, key_uri=key_uri)
        else:
            pending = rollover.prepare(authority, svc.config, key_uri)
            svc.store.append_audit(at=now, action="intermediate_key_created", actor=actor,
                                   detail={"generation": pending.number, "key": pending.key_label})
            click.echo(f"The root key is offline. Wrote the new intermediate's request: {pending.csr_path}\n"
                       f"(its key: {pending.key_label}). Where the root key is, run:\n"
                       f"  ca-server root sign-intermediate {pending.csr_path.name} --root-dir DIR\n"
                       f"then here: ca-server intermediate rollover --certificate {pending.csr_path.stem}.crt")
            return
        _took_over(authority, gen)

    @intermediate.command("import")
    @click.argument("certificate_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @domain_errors
    def intermediate_import(certificate_file: Path) -> None:
        """Install a new intermediate signed where the root key is (= `intermediate rollover --certificate`).

        \b
        Example:
          ca-server intermediate import intermediate-2.crt
        """
        svc = _services()
        gen = rollover.install(svc.authority, svc.store, svc.config, certificate_file.read_bytes(), utcnow(),
                               actor=operator())
        _took_over(svc.authority, gen)

    @intermediate.command("list")
    @domain_errors
    def intermediate_list() -> None:
        """Every intermediate: which issues, and when the others can be retired.

        \b
        Example:
          ca-server intermediate list
        """
        svc = _services()
        now = utcnow()
        retiring = {r["generation"]: r for r in rollover.retirement(svc.authority, svc.store, now)}
        for gen in reversed(svc.authority.intermediates):
            click.echo(f"{gen.number:>3}  {gen.issuer_text}  valid to {gen.not_after:%Y-%m-%d}  "
                       f"serial {serial_hex(gen.cert.serial_number)}")
            if gen.number not in retiring:
                click.echo("     issuing")
            else:
                r = retiring[gen.number]
                click.echo("     retired (its key is destroyed)" if r["retired"] else
                           "     no longer issuing; none of its certificates is valid any more: "
                           f"`ca-server intermediate retire {gen.number}` destroys its key" if r["retirable"] else
                           f"     no longer issuing; {r['valid_certificates']} certificate(s) valid, the last until "
                           f"{moment_text(r['retire_after'])}: retire it after that")

    @intermediate.command("retire")
    @click.argument("generation", type=click.IntRange(1))
    @click.option("--force", is_flag=True, help="Even though certificates it issued are still valid (no CRL can list them any more).")
    @domain_errors
    def intermediate_retire(generation: int, force: bool) -> None:
        """Destroy an earlier intermediate's key once every certificate it issued has expired.

        Its last CRL is signed first and stays served; the audit log records it.

        \b
        Example:
          ca-server intermediate retire 1
        """
        svc = _services()
        removed = rollover.retire(svc.authority, svc.store, svc.config, generation, utcnow(), actor=operator(),
                                  force=force)
        click.echo(f"Intermediate {generation} is retired: removed {removed}. Destroy its backups too.")
