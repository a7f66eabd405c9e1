"""The `ca-server` command line: thin click commands over the same domain functions the web
app calls. Domain errors become one-line messages and a non-zero exit status.

The same commands are available as `flask --app ca_server COMMAND`."""

from __future__ import annotations

import json
import os
import secrets
import sys
from pathlib import Path

import click

from .. import accounts, issuance, revocation
from ..ca import offline_root as offline_root_ops
from ..ca.authority import INSTANCE_ENV, InstancePaths, init_instance, write_private_file
from ..ca.root_folder import ROOT_PASSPHRASE_ENV, RootFolder
from ..clock import utcnow
from ..config import load_config, read_secrets
from ..display import fingerprint_text, moment_text
from ..errors import BadRequestError, CertificateNotFoundError
from ..models import CertificateRecord
from ..notify import reminders
from ..pki.serials import parse_serial, serial_colon, serial_hex
from ..services import open_services
from ..store import CertificateFilter
from .support import cli_services, domain_errors, instance_path, operator

INITIAL_ADMIN = "ca-admin"


class _WholeHelpGroup(click.Group):
    """Lists each command with its whole first sentence, wrapped, where click cuts it at the
    terminal's width with "..."; its subgroups are of the same kind."""

    group_class = type

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, cmd.get_short_help_str(limit=1000)) for name in self.list_commands(ctx)
                if (cmd := self.get_command(ctx, name)) is not None and not cmd.hidden]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=_WholeHelpGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--instance", type=click.Path(file_okay=False), envvar=INSTANCE_ENV, default=None,
              help="Instance folder (default: $CA_SERVER_INSTANCE or ./instance).")
@click.version_option(package_name="ca-server")
def main(instance: str | None) -> None:
    """ca-server: a private certificate authority.

    \b
    Example:
      ca-server init && ca-server serve
    """


@main.command()
@click.option("--if-absent", is_flag=True, help="Do nothing (exit 0) when a CA already exists.")
@click.option("--no-admin", is_flag=True, help=f"Do not create the initial '{INITIAL_ADMIN}' user.")
@click.option("--offline-root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Write the root key only to this folder (a USB stick, a vault), never into the instance; "
                   "encrypted with CA_SERVER_ROOT_PASSPHRASE, else the CA passphrase.")
@click.option("--base-url", default=None, metavar="URL",
              help="The server's public URL, written into every certificate (CRL, OCSP and CA-certificate "
                   "URLs) and e-mail links; sets [server] base_url (default: the config's, http://127.0.0.1:5000).")
@domain_errors
def init(if_absent: bool, no_admin: bool, offline_root: Path | None, base_url: str | None) -> None:
    """Create the instance: config, root and intermediate CA, store, first admin user.

    Refuses to touch an existing CA. Choose --base-url now: it is written into every certificate.

    \b
    Example:
      CA_SERVER_KEY_PASSPHRASE='long secret' ca-server init --base-url http://ca.corp.example
      CA_SERVER_ROOT_PASSPHRASE='another' ca-server init --offline-root /media/usb/ca-root
    """
    paths = InstancePaths(instance_path())
    if if_absent and paths.has_ca():
        click.echo(f"CA already present in {paths.root}; nothing to do.")
        current = load_config(paths.config).server.base_url if paths.config.exists() else None
        if base_url is not None and current is not None and base_url.rstrip("/") != current.rstrip("/"):
            click.echo(f"Note: its base_url is {current}, not --base-url {base_url}, which was not taken: the URLs in "
                       "a CA's certificates are chosen at its init (README \"Choosing base_url\").", err=True)
        return
    config = load_config(paths.config) if paths.config.exists() else None
    secret = read_secrets(config or load_config(None))
    now = utcnow()
    root_passphrase = os.environ.get(ROOT_PASSPHRASE_ENV) or None
    config = init_instance(paths, secret, now, offline_root=offline_root, root_passphrase=root_passphrase,
                           base_url=base_url)
    svc = open_services(paths.root, config, secret)
    authority = svc.authority
    if offline_root is not None:  # the first root CRL, signed while the key is at hand
        number, crl_file = offline_root_ops.sign_root_crl(
            RootFolder(offline_root), (root_passphrase or secret.key_passphrase).encode(),
            config.revocation.root_crl_validity_hours, now)
        offline_root_ops.import_root_crl(svc.store, authority.root, crl_file.read_bytes(), now)
        click.echo(f"The root key is only in {offline_root}: keep that folder offline. Root CRL {number} imported; "
                   f"sign the next before {config.revocation.root_crl_validity_hours // 24} days pass.")
    revocation.refresh_crls(config, svc.store, authority, now)
    svc.store.append_audit(at=now, action="ca_created", actor=operator(),
                           serial=serial_hex(authority.current.cert.serial_number),
                           detail={"root": serial_hex(authority.root.serial_number),
                                   "root_key": str(offline_root) if offline_root else "keys/root.key.pem",
                                   "intermediate_key": config.ca.intermediate_key or "keys/intermediate.key.pem"})
    click.echo(f"Created the CA in {paths.root}")
    for entry in authority.describe():
        click.echo(f"  {entry['role']:<12} {entry['subject']}  valid to {moment_text(entry['not_after'])}")
        click.echo(f"  {'':<12} SHA-256 {fingerprint_text(entry['fingerprint_sha256'])}")
    click.echo(f"  Every certificate names {config.server.pki_url} for its CRL, OCSP and CA certificate: "
               "clients fetch them there, so serve the CA at that address (changing it later leaves the "
               "certificates already issued pointing at the old one).")
    if config.server.pki_url.startswith("https://"):
        click.echo("  Note: those URLs are https; many relying parties fetch CRLs and OCSP only over http (RFC 5280 "
                   "4.2.1.13, RFC 6960). To avoid that, move this instance away, set [server] pki_base_url to an "
                   "http:// URL in its config.toml and run init again.")
    if not secret.key_passphrase:
        click.echo(f"  CA keys are encrypted with a generated passphrase in {paths.passphrase_file} (mode 0600);"
                   f" set {config.ca.passphrase_env} instead to keep it off the disk.")
    if not no_admin:
        password = secrets.token_urlsafe(12)
        accounts.add_user(svc.store, INITIAL_ADMIN, password, is_admin=True, domains=(), allow_ip=True,
                          email=None, now=now, actor="cli:init")
        write_private_file(paths.root / "initial-admin-password", password.encode() + b"\n")
        click.echo(f"  Sign in to the web pages as '{INITIAL_ADMIN}' with the password in "
                   f"{paths.root / 'initial-admin-password'}")


@main.command()
@click.option("--host", default=None, help="Address to listen on (default: [server] host).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default: [server] port).")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="Worker processes (default: [server] workers).")
@click.option("--tls", is_flag=True, help="Serve HTTPS with a certificate this CA issues for the host of base_url "
              "(and --host; localhost too on a loopback address), renewed before it expires.")
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Serve HTTPS with this certificate chain (PEM) instead.")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), default=None,
              help="The private key (PEM) of --tls-cert.")
@domain_errors
def serve(host: str | None, port: int | None, workers: int | None, tls: bool, tls_cert: str | None,
          tls_key: str | None) -> None:
    """Serve the web pages, API and ACME with Granian (WSGI), and run the scheduler (reminders, CRLs).

    \b
    Example:
      ca-server serve --host 0.0.0.0 --port 8443 --tls
    """
    from ..server import TLSSettings, claim_address, run_server

    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together.")
    if tls and tls_cert:
        raise click.UsageError("Use --tls (a certificate from this CA) or --tls-cert/--tls-key, not both.")
    svc = cli_services()
    # The address first: when another server holds it, say so before issuing or starting anything.
    claim_address(host or svc.config.server.host, port or svc.config.server.port)  # held until the process ends
    _ = svc.authority.intermediate_key  # fail now, not on the first request, if the passphrase is wrong
    settings = None
    if tls:
        from ..server.tls import ensure_certificate

        files, _new = ensure_certificate(svc.config, svc.store, svc.authority, svc.paths, host or svc.config.server.host,
                                         utcnow())
        settings = TLSSettings(files.cert, files.key, None, self_issued=True)
    elif tls_cert:
        from ..server.tls import check_pair

        check_pair(Path(tls_cert), Path(tls_key))
        settings = TLSSettings(Path(tls_cert), Path(tls_key), None, self_issued=False)
    run_server(svc, host=host, port=port, workers=workers, tls=settings)


@main.command()
@click.argument("csr_file", type=click.File("rb"))
@click.option("--profile", default=None, help="Profile name (default: [policy] default_profile).")
@click.option("--days", type=int, default=None, help="Validity in days (default: [policy] default_validity_days).")
@click.option("--notify", multiple=True, help="E-mail for expiry reminders; repeat for several.")
@domain_errors
def issue(csr_file, profile: str | None, days: int | None, notify: tuple[str, ...]) -> None:
    """Issue a certificate from a CSR file (PEM or DER); print it as PEM.

    \b
    Example:
      ca-server issue cucm1.csr --profile server --days 365 --notify ops@example.test > cucm1.pem
    """
    svc = cli_services()
    request = issuance.IssueRequest(csr=csr_file.read(), profile=profile, validity_days=days, notify=notify)
    record = issuance.issue(svc.config, svc.store, svc.authority, request, utcnow())
    click.echo(f"Issued serial {record.serial}, valid to {moment_text(record.not_after)}", err=True)
    for note in record.extra.get("notes", ()):
        click.echo(f"Note: {note}", err=True)
    click.echo(record.pem, nl=False)


@main.command()
@click.argument("serial")
@click.option("--json", "as_json", is_flag=True, help="Print the certificate JSON of the API.")
@click.option("--pem", "as_pem", is_flag=True, help="Print only the certificate PEM.")
@domain_errors
def show(serial: str, as_json: bool, as_pem: bool) -> None:
    """Show one certificate by its serial, in any form (5f3a09c1, 5F:3A:09:C1) or by the first
    digits of it when only one certificate starts with them.

    \b
    Example:
      ca-server show 5F:3A:09:C1
    """
    svc = cli_services()
    now = utcnow()
    record = _by_serial_or_prefix(svc, parse_serial(serial), now)
    if as_pem:
        click.echo(record.pem, nl=False)
        return
    if as_json:
        click.echo(json.dumps(record.as_json(now, svc.authority.chain_for(record.issuer)), indent=2))
        return
    rows = [
        ("Serial", record.serial),
        ("Serial (octets)", serial_colon(int(record.serial, 16))),
        ("Subject", record.subject),
        ("Issuer", record.issuer),
        ("Names", ", ".join(record.sans) or "-"),
        ("Valid from", moment_text(record.not_before)),
        ("Valid to", moment_text(record.not_after)),
        ("Status", record.status(now) + (f" ({record.revocation_reason})" if record.revoked_at else "")),
        ("Profile", record.profile),
        ("Key", record.key_label),
        ("SHA-256", fingerprint_text(record.fingerprint_sha256)),
        ("Notify", ", ".join(record.notify) or "-"),
    ]
    if record.superseded_by:
        rows.append(("Renewed by", record.superseded_by))
    for label, value in rows:
        click.echo(f"{label + ':':<17}{value}")


def _by_serial_or_prefix(svc, canonical: str, now) -> CertificateRecord:
    record = svc.store.get_certificate(canonical, with_renewal=True)
    if record is not None:
        return record
    found, _ = svc.store.list_certificates(CertificateFilter(q=canonical), now, limit=11)
    matches = [r for r in found if r.serial.startswith(canonical)]
    if len(matches) == 1:
        return svc.store.get_certificate(matches[0].serial, with_renewal=True)
    if not matches:
        raise CertificateNotFoundError(canonical, svc.authority.ca_role_of(canonical))
    listed = "\n".join(f"  {r.serial}  {r.common_name or ' '.join(r.sans)}" for r in matches[:10])
    more = " (and more)" if len(matches) > 10 else ""
    raise BadRequestError(f"{len(matches)} certificates{more} have serials that start with {canonical}; "
                          f"give more digits:\n{listed}")


@main.command(name="list")
@click.option("--expiring-within", "expiring", type=click.IntRange(0, 36500), default=None,
              help="Only unrevoked certificates expiring within DAYS.")
@click.option("--status", type=click.Choice(["valid", "revoked", "expired"]), default=None)
@click.option("--search", "q", default=None, help="Serial prefix, or start or end of a name.")
@click.option("--limit", type=click.IntRange(1, 100000), default=1000)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@domain_errors
def list_(expiring: int | None, status: str | None, q: str | None, limit: int, as_json: bool) -> None:
    """List certificates, newest first.

    \b
    Example:
      ca-server list --expiring-within 30
    """
    svc = cli_services()
    now = utcnow()
    flt = CertificateFilter(status=status, expiring_within_days=expiring, q=q)
    records, _ = svc.store.list_certificates(flt, now, limit=limit)
    for r in records:
        if as_json:
            data = r.as_json(now, "")
            data.pop("chain")
            data.pop("certificate")
            click.echo(json.dumps(data))
        else:
            click.echo(f"{r.serial}  {moment_text(r.not_after)}  {r.status(now):<8} {r.common_name or ''}  "
                       f"{' '.join(r.sans)}")
    if not as_json:
        click.echo(f"{len(records)} certificate(s)", err=True)


@main.command()
@click.argument("serial")
@click.option("--reason", default="unspecified", show_default=True,
              help="RFC 5280 reason: unspecified, keyCompromise, affiliationChanged, superseded, "
                   "cessationOfOperation, privilegeWithdrawn.")
@domain_errors
def revoke(serial: str, reason: str) -> None:
    """Revoke a certificate; the CRL and OCSP say so at once.

    \b
    Example:
      ca-server revoke 5f3a09c1... --reason keyCompromise
    """
    svc = cli_services()
    canonical = parse_serial(serial)
    record = revocation.revoke(svc.config, svc.store, svc.authority, canonical, reason, utcnow(),
                               actor="cli:local")
    click.echo(f"Revoked {record.serial} ({record.revocation_reason}) at {moment_text(record.revoked_at)}; "
               "a new CRL is published.")


@main.command("revoke-intermediate")
@click.option("--reason", default="keyCompromise", show_default=True,
              help="RFC 5280 reason: keyCompromise, cACompromise, affiliationChanged, superseded, "
                   "cessationOfOperation, unspecified.")
@click.option("--generation", type=click.IntRange(1), default=None,
              help="Which intermediate (`ca-server intermediate list`); default: the issuing one.")
@click.confirmation_option(prompt="Every certificate it issued stops being trusted. Revoke the intermediate?")
@domain_errors
def revoke_intermediate(reason: str, generation: int | None) -> None:
    """Put an intermediate CA on the root's CRL (after its key was compromised).

    The issuing one: then roll a new one in (`ca-server intermediate rollover`) or, if the root
    is in doubt too, move the instance away and run `ca-server init` for a new hierarchy.

    \b
    Example:
      ca-server revoke-intermediate --reason keyCompromise --yes
      ca-server revoke-intermediate --generation 1 --reason superseded --yes
    """
    svc = cli_services()
    crl = revocation.revoke_intermediate(svc.store, svc.authority, svc.config, reason, utcnow(), actor=operator(),
                                         generation=generation)
    click.echo(f"The intermediate is on the root's CRL (number {crl.number}); /crl/root.crl serves it.")


@main.command()
@click.option("--dry-run", is_flag=True, help="Show what would be sent; send and record nothing.")
@domain_errors
def remind(dry_run: bool) -> None:
    """Run one reminder pass now (e-mails, then [[notify.webhooks]], then the CA's own deadlines) and print what was sent (or would be).

    \b
    Example:
      ca-server remind --dry-run
    """
    from ..notify import webhooks
    from ..scheduler import ca_warnings

    svc = cli_services()
    now = utcnow()
    outcomes = reminders.run_pass(svc.config, svc.secrets, svc.store, now, dry_run=dry_run)
    if not dry_run:
        outcomes += webhooks.run_pass(svc.config, svc.secrets, svc.store, now)
    for outcome in outcomes:
        click.echo(outcome.line())
    warnings = ca_warnings(svc, now, dry_run=dry_run)  # the CA's own deadlines (intermediate, root CRL)
    for warning in warnings:
        click.echo(warning.line())
    waiting = reminders.waiting_retries(svc.store, now) + webhooks.waiting_retries(svc.config, svc.store, now)
    for line in waiting:
        click.echo(line)
    sent = sum(o.status == "sent" for o in outcomes)
    failed = sum(o.status == "failed" for o in outcomes) + sum(w.error is not None for w in warnings)
    summary = (f"{len(outcomes)} reminder(s) due" if dry_run else f"{sent} sent, {failed} failed")
    click.echo(summary + (f", {len(waiting)} waiting for a retry" if waiting else ""), err=True)
    if failed:
        sys.exit(1)


from .acme import register_acme_commands  # noqa: E402  (these commands need `main`)
from .admin import register_admin_commands  # noqa: E402
from .backup import register_backup_commands  # noqa: E402
from .db import register_db_commands  # noqa: E402
from .devices import register_device_commands  # noqa: E402
from .log import register_log_commands  # noqa: E402
from .root import register_root_commands  # noqa: E402

register_admin_commands(main)
register_backup_commands(main)
register_log_commands(main)
register_acme_commands(main)
register_db_commands(main)
register_device_commands(main)
register_root_commands(main)


def register_flask_commands(app) -> None:
    """`flask --app ca_server COMMAND` runs the same commands."""
    for name, command in main.commands.items():
        app.cli.add_command(command, name)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
