"""The offline root (issue 20): the root key lives only in a folder kept off the server (a USB
stick, a vault), with its certificate and the state of its CRL. The server runs without it; what
needs the root (its CRL for the next period) is signed where the folder is, by the same CLI, and
the file it writes is imported by the server.

    DIR/root-key.pem          the root key, encrypted (PKCS#8, AES-256), 0600
    DIR/root.pem              the root certificate
    DIR/root-crl-state.json   the last CRL number, the revoked CA certificates, the intermediates signed here
    DIR/root-NUMBER.crl       each CRL signed here (DER), to import on the server

(A new intermediate's request is signed where the folder is too: rollover.py.)
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..clock import from_text, to_text
from ..config import Config, Secrets
from ..display import moment_text
from ..errors import BadRequestError, ConflictError, InstanceError
from ..notify.mail import mail_admins_once
from ..revocation import PublishedCRL, revoked_entry, sign_crl
from ..store import CaStore
from .authority import InstancePaths
from .root_folder import RootFolder


def sign_root_crl(folder: RootFolder, passphrase: bytes, validity_hours: int, now: dt.datetime,
                  revoke: tuple[tuple[str, str], ...] = ()) -> tuple[int, Path]:
    """Sign the root's next CRL where the root key is; `revoke` adds (serial hex, reason) of CA
    certificates (an intermediate) to it. Returns the CRL number and the file written."""
    key, cert, state = folder.key(passphrase), folder.cert, folder.state()
    known = {r["serial"] for r in state["revoked"]}
    for serial, reason in revoke:
        if serial.lower() not in known:
            state["revoked"].append({"serial": serial.lower(), "revoked_at": to_text(now), "reason": reason})
    this_update = now.replace(microsecond=0)
    number = max(state["last_number"] + 1, int(now.timestamp() * 1000))
    entries = [revoked_entry(int(r["serial"], 16), from_text(r["revoked_at"]), r["reason"]) for r in state["revoked"]]
    der = sign_crl(cert, key, entries, number, this_update, this_update + dt.timedelta(hours=validity_hours))
    out = folder.path / f"root-{number}.crl"
    out.write_bytes(der)
    state["last_number"] = number
    folder.save_state(state)
    return number, out


def import_root_crl(store: CaStore, root: x509.Certificate, data: bytes, now: dt.datetime) -> PublishedCRL:
    """Serve a root CRL signed offline: it must be the root's, signed by it, current, and newer
    than the one served."""
    try:
        crl = x509.load_der_x509_crl(data) if not data.lstrip().startswith(b"-----") else x509.load_pem_x509_crl(data)
    except ValueError:
        raise BadRequestError("Not a CRL (DER or PEM).") from None
    if crl.issuer != root.subject or not crl.is_signature_valid(root.public_key()):
        raise BadRequestError("This CRL was not signed by this CA's root.")
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    if crl.next_update_utc is None or crl.next_update_utc <= now:
        raise BadRequestError(f"CRL number {number} has lapsed (nextUpdate {crl.next_update_utc}); sign a new one.")
    newest = store.latest_crl_number("root")
    if number <= newest:
        raise ConflictError(f"CRL number {number} is not newer than the root CRL served (number {newest}).")
    der = crl.public_bytes(Encoding.DER)

    def stored(n: int) -> bytes:
        if n != number:
            raise ConflictError(f"Another root CRL (number {n - 1}) was imported meanwhile.")
        return der

    store.insert_next_crl("root", number, stored, crl.last_update_utc, crl.next_update_utc)
    return PublishedCRL("root", number, crl.last_update_utc, crl.next_update_utc, der)


def move_root_out(paths: InstancePaths, folder: RootFolder, store: CaStore, base_url: str | None = None) -> None:
    """An existing instance's root key into `folder` (with the root certificate and the revoked
    CA certificates for its CRL), then removed from the instance."""
    if not paths.root_key.exists():
        raise InstanceError(f"{paths.root_key} is not there: the root key is offline already.")
    revoked = [dict(r) for r in store.ca_revocations()]
    folder.create(paths.root_key.read_bytes(), paths.root_cert.read_bytes(), revoked, base_url=base_url,
                  instance_root=paths.root)
    newest = store.latest_crl_number("root")
    if newest:
        state = folder.state()
        folder.save_state({**state, "last_number": newest})
    if folder.key_file.read_bytes() != paths.root_key.read_bytes():  # pragma: no cover - a failing medium
        raise InstanceError(f"The copy in {folder.key_file} differs from the original; the instance keeps its key.")
    paths.root_key.unlink()


def root_crl_warning(store: CaStore, now: dt.datetime, warn_days: int) -> str | None:
    """A sentence for the dashboard when the served root CRL ends within `warn_days` (or has)."""
    row = store.latest_crl("root", with_der=False)
    if row is None:
        return "No root CRL has been imported: sign one where the root key is (`ca-server root sign-crl`) and import it."
    left = from_text(row["next_update"]) - now
    if left > dt.timedelta(days=warn_days):
        return None
    when = "has lapsed" if left <= dt.timedelta(0) else f"ends in {max(left.days, 0)} day(s)"
    return (f"The root CRL (number {row['number']}) {when}, at {moment_text(row['next_update'])}: sign the next one where the "
            "root key is (`ca-server root sign-crl --root-dir DIR`) and import it (`ca-server root import-crl FILE`).")


def warn_by_mail(config: Config, secrets: Secrets, store: CaStore, now: dt.datetime) -> list[str]:
    """Mail the admins (users with an address) and [reminders] default_recipients when the served
    root CRL ends within root_crl_warning_days: once per CRL number, whichever process or node
    gets there first. Returns the addresses mailed."""
    sentence = root_crl_warning(store, now, config.revocation.root_crl_warning_days)
    row = store.latest_crl("root", with_der=False)
    if sentence is None or row is None:
        return []
    return mail_admins_once(config, secrets.smtp_password, store, f"mail:root-crl:{row['number']}",
                            f"{config.ca.root_common_name}: sign the next root CRL", sentence, now)
