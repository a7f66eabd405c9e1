"""The instance folder: where the config, the store and the CA's keys and certificates live,
how `ca-server init` creates them, and how a running server loads them."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import secrets
import shutil
import threading
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ..clock import to_text
from ..config import EXAMPLE_CONFIG, Config, Secrets, check_base_url, load_config
from ..errors import InstanceError
from ..pki.extensions import Endpoints, LeafTemplate, build_intermediate, build_root
from ..pki.keys import decrypt_private_key, encrypt_private_key, generate_private_key
from ..pki.pkcs11_key import Pkcs11Uri, TokenECKey
from ..pki.serials import new_serial, serial_hex
from . import intermediates
from .intermediates import Intermediate
from .private_files import write_private_file
from .root_folder import RootFolder

INSTANCE_ENV = "CA_SERVER_INSTANCE"
# Backdating not_before absorbs clock skew between this host and clients.
BACKDATE = dt.timedelta(minutes=1)


@dataclass(frozen=True)
class InstancePaths:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def database(self) -> Path:
        return self.root / "ca.sqlite3"

    @property
    def root_cert(self) -> Path:
        return self.root / "ca" / "root.pem"

    @property
    def intermediate_cert(self) -> Path:
        return self.root / "ca" / "intermediate.pem"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def root_key(self) -> Path:
        return self.keys / "root.key.pem"

    @property
    def intermediate_key(self) -> Path:
        return self.keys / "intermediate.key.pem"

    @property
    def passphrase_file(self) -> Path:
        return self.keys / "passphrase"

    @property
    def secret_key(self) -> Path:
        return self.root / "secret_key"

    @property
    def scheduler_lock(self) -> Path:
        return self.root / "scheduler.lock"

    def has_ca(self) -> bool:
        return any(p.exists() for p in (self.root_cert, self.root_key, self.intermediate_key))


def default_instance_path(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    return Path(env.get(INSTANCE_ENV) or "instance").resolve()


def ensure_config_file(paths: InstancePaths) -> None:
    if not paths.config.exists():
        paths.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copyfile(EXAMPLE_CONFIG, paths.config)
        os.chmod(paths.config, 0o600)


def set_base_url(config_file: Path, base_url: str) -> None:
    """Write [server] base_url into config.toml, keeping every other line and comment."""
    set_config_value(config_file, "server", "base_url", base_url)


def set_config_value(config_file: Path, table: str, key: str, value: str) -> None:
    """Write `key = "value"` into [table] of config.toml, keeping every other line and comment."""
    lines = config_file.read_text().splitlines(keepends=True)
    header, section, table_at = f"[{table}]", "", None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
            if section == header:
                table_at = i
        elif section == header and re.match(rf"{re.escape(key)}\s*=", stripped):
            lines[i] = f'{key} = "{value}"\n'
            break
    else:
        if table_at is None:
            lines[0:0] = [f"{header}\n", f'{key} = "{value}"\n', "\n"]
        else:
            lines.insert(table_at + 1, f'{key} = "{value}"\n')
    config_file.write_text("".join(lines))


def ensure_secret_key(paths: InstancePaths) -> bytes:
    """The key that signs session cookies; generated once, mode 0600."""
    try:
        return paths.secret_key.read_bytes()
    except FileNotFoundError:
        try:
            write_private_file(paths.secret_key, secrets.token_hex(32).encode())
        except FileExistsError:
            pass  # another process made it first
        return paths.secret_key.read_bytes()


def key_passphrase(paths: InstancePaths, secret: Secrets, config: Config) -> bytes:
    if secret.key_passphrase:
        return secret.key_passphrase.encode()
    try:
        return paths.passphrase_file.read_bytes().strip()
    except FileNotFoundError:
        raise InstanceError(
            f"The CA keys are encrypted and no passphrase is available: set the environment variable "
            f"{config.ca.passphrase_env}, or restore {paths.passphrase_file}."
        ) from None


def init_instance(paths: InstancePaths, secret: Secrets, now: dt.datetime, *, offline_root: Path | None = None,
                  root_passphrase: str | None = None, base_url: str | None = None) -> Config:
    """Create config (if absent), the root and intermediate CA, and the store. Refuses to touch
    an existing CA: its keys are what every client trusts. With `offline_root`, the root key is
    written only to that folder (encrypted with `root_passphrase`, else the CA passphrase). With
    `base_url`, config.toml's [server] base_url is set to it first."""
    if paths.has_ca():
        raise InstanceError(
            f"A CA already exists in {paths.root}; refusing to overwrite it. To start over, move "
            "that folder away (its keys are what your clients trust)."
        )
    if base_url is not None:
        check_base_url("--base-url", base_url)
    if offline_root is not None:
        RootFolder(offline_root).check_new(paths.root)
    ensure_config_file(paths)
    if base_url is not None:
        set_base_url(paths.config, base_url)
    config = load_config(paths.config)
    passphrase = secret.key_passphrase
    if offline_root is not None and not (root_passphrase or passphrase):
        raise InstanceError(f"An offline root needs a passphrase you keep: set {config.ca.passphrase_env} (or "
                            "CA_SERVER_ROOT_PASSPHRASE for the root alone); a generated one would be left on the server.")
    if not passphrase:
        passphrase = secrets.token_urlsafe(32)
        write_private_file(paths.passphrase_file, passphrase.encode() + b"\n")
    start = now.replace(microsecond=0) - BACKDATE
    ca = config.ca
    root_key = generate_private_key(ca.root_key_type)
    root_cert = build_root(
        subject=_ca_name(ca.organization, ca.root_common_name),
        key=root_key,
        serial=new_serial(),
        not_before=start,
        not_after=start + dt.timedelta(days=ca.root_validity_days),
    )
    token_key = _token_key(config, secret)
    int_key = token_key or generate_private_key(ca.intermediate_key_type)
    int_cert = build_intermediate(
        subject=_ca_name(ca.organization, ca.intermediate_common_name),
        public_key=int_key.public_key(),
        serial=new_serial(),
        not_before=start,
        not_after=start + dt.timedelta(days=ca.intermediate_validity_days),
        root_cert=root_cert,
        root_key=root_key,
        permitted_domains=ca.permitted_domains,
        endpoints=Endpoints(config.server.pki_url),
    )
    if offline_root is None:
        write_private_file(paths.root_key, encrypt_private_key(root_key, passphrase.encode()))
    else:  # never written into the instance
        RootFolder(offline_root).create(encrypt_private_key(root_key, (root_passphrase or passphrase).encode()),
                                        root_cert.public_bytes(Encoding.PEM), base_url=config.server.pki_url,
                                        instance_root=paths.root)
    if token_key is None:  # a token's key stays in the token
        write_private_file(paths.intermediate_key, encrypt_private_key(int_key, passphrase.encode()))
    paths.root_cert.parent.mkdir(parents=True, exist_ok=True)
    paths.root_cert.write_bytes(root_cert.public_bytes(Encoding.PEM))
    paths.intermediate_cert.write_bytes(int_cert.public_bytes(Encoding.PEM))
    ensure_secret_key(paths)
    return config


def _token_key(config: Config, secret: Secrets) -> TokenECKey | None:
    """The intermediate key in a PKCS#11 token ([ca] intermediate_key), logged in; None for a file."""
    if not config.ca.intermediate_key:
        return None
    return TokenECKey(Pkcs11Uri.parse(config.ca.intermediate_key, config.ca.pkcs11_module), secret.pkcs11_pin)


def _ca_name(organization: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def require_ca(paths: InstancePaths) -> None:
    """A folder `init` made a CA in, or InstanceError saying to run it (a command run in the wrong
    folder must not open, and so create, a store there)."""
    if not paths.root_cert.exists() or not paths.intermediate_cert.exists():
        raise InstanceError(f"No CA in {paths.root}: run `ca-server init` first (or set {INSTANCE_ENV}).")


class Authority:
    """The loaded CA: certificates at once, private keys decrypted on first use. The intermediates
    are read again when a rollover changes ca/ (one stat per look), so a running server issues from
    a new one at once."""

    def __init__(self, paths: InstancePaths, config: Config, secret: Secrets) -> None:
        require_ca(paths)
        self.paths = paths
        self.config = config
        self._secret = secret
        self._passphrase: bytes | None = None
        self.root = x509.load_pem_x509_certificate(paths.root_cert.read_bytes())
        self._stamp: int | None = None
        self._ca_dir = str(paths.root_cert.parent)  # stat'ed on every look at the generations: built once
        self._intermediates: tuple[Intermediate, ...] = ()
        self._keys: dict[int, CertificateIssuerPrivateKeyTypes] = {}
        self._templates: dict[int, LeafTemplate] = {}
        self._lock = threading.Lock()

    @property
    def intermediates(self) -> tuple[Intermediate, ...]:
        """Every generation, oldest first; the last one issues."""
        stamp = os.stat(self._ca_dir).st_mtime_ns
        if stamp != self._stamp:
            with self._lock:
                if stamp != self._stamp:
                    self._intermediates = intermediates.scan(Path(self._ca_dir), self.config.server.pki_url)
                    self._stamp = stamp
        return self._intermediates

    @property
    def current(self) -> Intermediate:
        return self.intermediates[-1]

    @property
    def intermediate(self) -> x509.Certificate:
        """The issuing intermediate's certificate."""
        return self.current.cert

    def by_issuer(self, issuer_text: str) -> Intermediate:
        """The generation that issued a stored certificate with this issuer: the later ones by
        their subject, the first for anything else (the same rule as issued_by)."""
        gens = self.intermediates
        return next((i for i in gens[1:] if i.issuer_text == issuer_text), gens[0])

    def ca_role_of(self, serial: str) -> str | None:
        """Words for this CA's own certificate with `serial` (looked up as if it were a leaf: it
        is served at /ca/, and revoked with revoke-intermediate), else None."""
        value = int(serial, 16)
        if self.root.serial_number == value:
            return "this CA's root certificate (GET /ca/root.pem)"
        gen = next((g for g in self.intermediates if g.cert.serial_number == value), None)
        return (f"this CA's intermediate certificate, generation {gen.number} (GET /ca/{gen.slug}.pem; "
                "`ca-server revoke-intermediate` revokes it)") if gen else None

    def by_slug(self, slug: str) -> Intermediate | None:
        return next((i for i in self.intermediates if i.slug == slug), None)

    def by_number(self, number: int) -> Intermediate | None:
        return next((i for i in self.intermediates if i.number == number), None)

    def issued_by(self, gen: Intermediate) -> tuple[str, object]:
        """The store's filter for `gen`'s certificates (store.revocation.IssuerFilter): the first
        generation's are all those no later one issued."""
        if gen.number == 1:
            return ("not in", [i.issuer_text for i in self.intermediates if i.number > 1])
        return ("=", gen.issuer_text)

    def issued(self, gen: Intermediate, issuer_text: str) -> bool:
        """Whether a stored certificate with this issuer is `gen`'s (the same rule as issued_by)."""
        if gen.number > 1:
            return issuer_text == gen.issuer_text
        return all(issuer_text != i.issuer_text for i in self.intermediates if i.number > 1)

    def chain_for(self, issuer_text: str) -> str:
        """The intermediate that issued a certificate with this issuer (PEM)."""
        return self.by_issuer(issuer_text).pem

    def can_sign(self, gen: Intermediate) -> bool:
        """False for an earlier intermediate whose key the operator has destroyed (retired)."""
        return self.has_key(gen.number)

    # -- where generation N's key is: a token (its URI) or an encrypted file --------------------------
    def key_uri(self, number: int) -> str:
        """The token URI of generation `number`'s key ([ca] intermediate_key for the first,
        keys/intermediate-N.key.uri for later ones); "" when the key is an encrypted file."""
        if number == 1:
            return self.config.ca.intermediate_key
        uri_file = intermediates.key_uri_file(self.paths.keys, number)
        return uri_file.read_text().strip() if uri_file.exists() else ""

    def key_label(self, number: int) -> str:
        """Where the key is, for the audit log and the operator."""
        return self.key_uri(number) or str(intermediates.key_file(self.paths.keys, number).relative_to(self.paths.root))

    def has_key(self, number: int) -> bool:
        return bool(self.key_uri(number)) or intermediates.key_file(self.paths.keys, number).exists()

    def signer(self, number: int) -> CertificateIssuerPrivateKeyTypes:
        """Generation `number`'s key, from its token (logged in) or its file (decrypted)."""
        uri = self.key_uri(number)
        return self.token_key(uri) if uri else self.load_key(intermediates.key_file(self.paths.keys, number))

    def key_for(self, gen: Intermediate) -> CertificateIssuerPrivateKeyTypes:
        key = self._keys.get(gen.number)
        if key is None:
            key = self._keys[gen.number] = self._load_intermediate_key(gen)
        return key

    def _load_intermediate_key(self, gen: Intermediate) -> CertificateIssuerPrivateKeyTypes:
        key = self.signer(gen.number)
        uri = self.key_uri(gen.number)
        if uri and key.public_key() != gen.cert.public_key():
            raise InstanceError(f"The key {uri} is not the intermediate's "
                                f"(its public key differs from ca/{gen.slug}.pem).")
        return key

    def token_key(self, uri: str) -> TokenECKey:
        """A key in a PKCS#11 token (RFC 7512 URI; module and PIN as [ca] configures them), logged in."""
        return TokenECKey(Pkcs11Uri.parse(uri, self.config.ca.pkcs11_module), self._secret.pkcs11_pin)

    @property
    def intermediate_key(self) -> CertificateIssuerPrivateKeyTypes:
        return self.key_for(self.current)

    def leaf_template_for(self, gen: Intermediate) -> LeafTemplate:
        template = self._templates.get(gen.number)
        if template is None:
            template = self._templates[gen.number] = LeafTemplate(
                issuer_cert=gen.cert, issuer_key=self.key_for(gen), aki=gen.aki, endpoints=gen.endpoints)
        return template

    @property
    def leaf_template(self) -> LeafTemplate:
        return self.leaf_template_for(self.current)

    @cached_property
    def root_key(self) -> CertificateIssuerPrivateKeyTypes:
        if self.root_offline:
            raise InstanceError("The root key is offline (not in this instance): sign what needs it where it is, "
                                "with `ca-server root sign-crl --root-dir DIR`, and import the file here.")
        return self.load_key(self.paths.root_key)

    @property
    def root_offline(self) -> bool:
        return not self.paths.root_key.exists()

    def passphrase(self) -> bytes:
        """Read once (environment or passphrase file); every key of this instance uses it."""
        if self._passphrase is None:
            self._passphrase = key_passphrase(self.paths, self._secret, self.config)
        return self._passphrase

    def load_key(self, path: Path) -> CertificateIssuerPrivateKeyTypes:
        try:
            pem = path.read_bytes()
        except FileNotFoundError:
            raise InstanceError(f"The CA key file {path} is missing.") from None
        try:
            return decrypt_private_key(pem, self.passphrase())
        except (ValueError, TypeError):
            raise InstanceError(
                f"The CA key {path.name} could not be decrypted: the passphrase "
                f"({self.config.ca.passphrase_env} or {self.paths.passphrase_file.name}) is wrong."
            ) from None

    @cached_property
    def root_pem(self) -> str:
        return self.root.public_bytes(Encoding.PEM).decode()

    @property
    def intermediate_pem(self) -> str:
        return self.current.pem

    @property
    def chain_pem(self) -> str:
        """The issuing intermediate then the root (CONTRACT /ca/chain.pem)."""
        return self.current.pem + self.root_pem

    def der(self, which: str) -> bytes:
        return self.root.public_bytes(Encoding.DER) if which == "root" else self.current.der

    def describe(self) -> list[dict]:
        """The root, then each intermediate, the issuing one first."""
        current = self.current
        entries = [{**_describe(self.root, "root", self.root_pem), "file": "root"}]
        for gen in reversed(self.intermediates):
            entry = _describe(gen.cert, "intermediate" if gen is current else "previous intermediate", gen.pem)
            entries.append({**entry, "file": f"intermediate-{gen.number}", "generation": gen.number,
                            "issuing": gen is current,
                            "urls": {"certificate": f"{self.config.server.pki_url}/ca/intermediate-{gen.number}.pem",
                                     "crl": gen.endpoints.intermediate_crl}})
        return entries


def _describe(cert: x509.Certificate, role: str, pem: str) -> dict:
    return {
        "role": role,
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": serial_hex(cert.serial_number),
        "not_before": to_text(cert.not_valid_before_utc),
        "not_after": to_text(cert.not_valid_after_utc),
        "fingerprint_sha256": hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(),
        "pem": pem,
    }
