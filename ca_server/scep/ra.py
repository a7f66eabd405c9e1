"""The SCEP RA: an RSA key and certificate of its own, issued by the intermediate through the one
issuance path (stored, audited, revocable like any certificate), so an EC CA serves SCEP too: SCEP
clients encrypt to an RSA recipient. Its key is encrypted with the instance's passphrase in
instance/scep/ra-key.pem (mode 0600); it is made on first use and again when a third of its life is
left or the issuing intermediate changed (rollover). A file lock keeps the workers to one RA."""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from .. import issuance
from ..ca.authority import Authority, InstancePaths
from ..ca.private_files import write_private_file
from ..config import Config
from ..pki.keys import decrypt_private_key, encrypt_private_key
from ..store import CaStore

RA_REQUESTER = issuance.Requester(name="scep-ra", kind="cli")
VALIDITY_DAYS = 365
RENEW_WHEN_LEFT = 1 / 3


@dataclass(frozen=True)
class RA:
    cert: x509.Certificate
    key: rsa.RSAPrivateKey


_cache: dict[Path, tuple[int, RA]] = {}
_lock = threading.Lock()


def ra_folder(paths: InstancePaths) -> Path:
    return paths.root / "scep"


def current_ra(config: Config, store: CaStore, authority: Authority, paths: InstancePaths, now: dt.datetime) -> RA:
    """The RA to answer with, made or renewed when needed; read from disk once per change."""
    folder = ra_folder(paths)
    cert_file = folder / "ra.pem"
    with _lock:
        cached = _cache.get(folder)
        stamp = _stamp(cert_file)
        if cached and cached[0] == stamp and not _due(cached[1].cert, authority, now):
            return cached[1]
        folder.mkdir(mode=0o700, exist_ok=True)
        with open(folder / "ra.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one worker makes it; the others then read it
            ra = _read(cert_file, folder / "ra-key.pem", authority)
            if ra is None or _due(ra.cert, authority, now):
                ra = _make(config, store, authority, folder, now)
        _cache[folder] = (_stamp(cert_file), ra)
        return ra


def _stamp(path: Path) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except FileNotFoundError:
        return 0


def _due(cert: x509.Certificate, authority: Authority, now: dt.datetime) -> bool:
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.issuer != authority.intermediate.subject or cert.not_valid_after_utc - now < life * RENEW_WHEN_LEFT


def _read(cert_file: Path, key_file: Path, authority: Authority) -> RA | None:
    if not cert_file.exists() or not key_file.exists():
        return None
    key = decrypt_private_key(key_file.read_bytes(), authority.passphrase())
    if not isinstance(key, rsa.RSAPrivateKey):
        return None
    return RA(x509.load_pem_x509_certificate(cert_file.read_bytes()), key)


def _make(config: Config, store: CaStore, authority: Authority, folder: Path, now: dt.datetime) -> RA:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = authority.intermediate.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    org = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, str(name[0].value))] if name else []
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([*org, x509.NameAttribute(NameOID.COMMON_NAME, "SCEP RA")]))
           .sign(key, hashes.SHA256()))
    request = issuance.IssueRequest(csr=csr.public_bytes(Encoding.DER), profile="client",
                                    validity_days=min(VALIDITY_DAYS, config.policy.max_validity_days),
                                    requester=RA_REQUESTER, own_certificate=True, own_ekus=("clientAuth",), door="ca")
    record = issuance.issue(config, store, authority, request, now, out_of_scope=issuance.REFUSE,
                            audit_extra={"purpose": "SCEP RA"})
    for name_ in ("ra-key.pem.new", "ra.pem.new"):
        (folder / name_).unlink(missing_ok=True)
    write_private_file(folder / "ra-key.pem.new", encrypt_private_key(key, authority.passphrase()))
    write_private_file(folder / "ra.pem.new", record.pem.encode())
    os.replace(folder / "ra-key.pem.new", folder / "ra-key.pem")
    os.replace(folder / "ra.pem.new", folder / "ra.pem")
    return RA(record.certificate, key)
