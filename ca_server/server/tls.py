"""`ca-server serve --tls`: the server's own certificate, issued by this CA for the host of
base_url (and the address it listens on), stored and audited like any other, and renewed when a
third of its life is left.

It is the CA's certificate, not a requester's: `[policy] allowed_domains` does not limit it
(localhost and 127.0.0.1 work), and it is not subject to a requester's scope. Its key is kept in
instance/tls/ with mode 0600 and not encrypted, as a web server's key usually is: it is not a CA
key (it signs nothing), Granian 2.8 does not read the encrypted PKCS #8 that cryptography writes
("Invalid key: ... OCTET STRING"), and a stolen one lets an attacker impersonate this server only
until it is revoked.
Workers read the files when they start, so a renewal writes new files and asks the main process
to respawn its workers (SIGHUP), one at a time."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import signal
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .. import issuance
from ..ca.authority import Authority, InstancePaths, write_private_file
from ..config import Config
from ..errors import ConfigError
from ..issuance import Requester
from ..pki.names import parse_ip
from ..store import CaStore

log = logging.getLogger(__name__)

SERVER_REQUESTER = Requester(name="serve-tls", kind="cli")
VALIDITY_DAYS = 90
RENEW_WHEN_LEFT = 1 / 3


@dataclasses.dataclass(frozen=True)
class TLSFiles:
    cert: Path
    key: Path


def tls_files(paths: InstancePaths) -> TLSFiles:
    return TLSFiles(paths.root / "tls" / "server-chain.pem", paths.root / "tls" / "server-key.pem")


def check_pair(cert: Path, key: Path) -> None:
    """`serve --tls-cert/--tls-key`: load the pair as Granian's workers will, before starting, so a
    wrong file or a key of another certificate is one line naming it, not a traceback per worker."""
    try:
        x509.load_pem_x509_certificates(cert.read_bytes())
    except ValueError:
        raise ConfigError(f"--tls-cert {cert} is not a PEM certificate (chain).") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)

    def encrypted() -> str:
        raise ConfigError(f"--tls-key {key} is encrypted and the server reads it without a passphrase: give it "
                          "unencrypted (mode 0600), as web servers keep theirs.")

    try:
        context.load_cert_chain(cert, key, password=encrypted)
    except ssl.SSLError as exc:  # PEM lib (no key in the file) or KEY_VALUES_MISMATCH
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(f"--tls-key {key} is not the key of the certificate in --tls-cert {cert}.") from None
        raise ConfigError(f"--tls-key {key} is not a PEM private key.") from None


def server_names(config: Config, listen_host: str | None) -> list[str]:
    """The base_url's host, plus the listening address when it is a specific one, plus `localhost`
    when either is a loopback address: a server on 127.0.0.1 (what `make run` makes) is reached as
    https://localhost too, by browsers, certbot and Caddy, and a certificate without the name
    failed their hostname check."""
    names = [urlsplit(config.server.base_url).hostname or "localhost"]
    if listen_host and listen_host not in ("0.0.0.0", "::", "") and listen_host not in names:
        names.append(listen_host)
    if "localhost" not in names and any((ip := parse_ip(n)) is not None and ip.is_loopback for n in names):
        names.append("localhost")
    return names


def needs_renewal(files: TLSFiles, authority: Authority, names: list[str], now: dt.datetime) -> bool:
    if not files.cert.exists() or not files.key.exists():
        return True
    try:
        cert = x509.load_pem_x509_certificates(files.cert.read_bytes())[0]
    except ValueError:
        return True
    if cert.issuer != authority.intermediate.subject:
        return True
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return True
    present = {n.lower() for n in sans.get_values_for_type(x509.DNSName)}
    present |= {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    if not {_canonical(n) for n in names} <= present:
        return True
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.not_valid_after_utc - now < life * RENEW_WHEN_LEFT


def ensure_certificate(config: Config, store: CaStore, authority: Authority, paths: InstancePaths,
                       listen_host: str | None, now: dt.datetime) -> tuple[TLSFiles, bool]:
    """(the files, whether a new certificate was issued now)."""
    files = tls_files(paths)
    names = server_names(config, listen_host)
    if not needs_renewal(files, authority, names, now):
        return files, False
    key = ec.generate_private_key(ec.SECP256R1())
    general = [x509.IPAddress(ip) if (ip := parse_ip(n)) is not None else x509.DNSName(n.lower()) for n in names]
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
           .add_extension(x509.SubjectAlternativeName(general), critical=False)
           .sign(key, hashes.SHA256()))
    # The CA's own certificate: any syntactically valid name, IPs included, whatever the policy
    # says about requesters' names; the key rules and the validity cap still apply.
    request = issuance.IssueRequest(csr=csr.public_bytes(serialization.Encoding.DER), profile="server",
                                    validity_days=min(VALIDITY_DAYS, config.policy.max_validity_days),
                                    requester=SERVER_REQUESTER, own_certificate=True, door="ca")
    record = issuance.issue(config, store, authority, request, now, out_of_scope=issuance.REFUSE,
                            audit_extra={"purpose": "serve --tls"})
    files.cert.parent.mkdir(mode=0o700, exist_ok=True)
    for leftover in (files.key.with_suffix(".new"), files.cert.with_suffix(".new")):
        leftover.unlink(missing_ok=True)  # from a renewal that stopped half-way
    write_private_file(files.key.with_suffix(".new"), key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    write_private_file(files.cert.with_suffix(".new"), (record.pem + authority.chain_for(record.issuer)).encode())
    os.replace(files.key.with_suffix(".new"), files.key)  # key first: a worker starting in between
    os.replace(files.cert.with_suffix(".new"), files.cert)  # fails to load and is respawned
    log.info("issued the server's TLS certificate %s for %s", record.serial, ", ".join(names))
    return files, True


def renew_and_reload(config: Config, store: CaStore, authority: Authority, paths: InstancePaths,
                     listen_host: str | None, now: dt.datetime) -> bool:
    """The scheduler's job: renew when due, then have Granian respawn its workers with it."""
    _files, renewed = ensure_certificate(config, store, authority, paths, listen_host, now)
    if renewed:
        os.kill(os.getppid(), signal.SIGHUP)  # the worker's parent is Granian's main process
    return renewed


def _canonical(name: str) -> str:
    ip = parse_ip(name)
    return str(ip) if ip is not None else name.lower()
