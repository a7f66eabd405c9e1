"""What the web app, the CLI and the scheduler share: config, secrets, store and the CA,
assembled once per process from an instance folder."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .ca.authority import Authority, InstancePaths, key_passphrase
from .clock import utcnow
from .config import Config, Secrets, load_config, read_secrets
from .errors import InstanceError
from .ocsp import OCSPResponder
from .recovery.issuance_log import IssuanceLog, open_log
from .revocation import CRLCache
from .store import CaStore, open_store


@dataclass
class Services:
    paths: InstancePaths
    config: Config
    secrets: Secrets
    store: CaStore
    # The clock the web layer asks for "now"; tests replace it to step time forward.
    clock: Callable[[], dt.datetime] = field(default=utcnow)

    @cached_property
    def authority(self) -> Authority:
        return Authority(self.paths, self.config, self.secrets)

    @property
    def log(self) -> IssuanceLog | None:
        """The issuance log, when [log] enabled (attached to the store by open_services)."""
        return self.store.issuance_log

    @cached_property
    def crls(self) -> CRLCache:
        return CRLCache(self.config, self.store, self.authority)

    @cached_property
    def ocsp(self) -> OCSPResponder:
        return OCSPResponder(self.config, self.store, self.authority)


def open_services(
    instance: Path,
    config: Config | None = None,
    secrets: Secrets | None = None,
    *,
    migrate: bool = True,
) -> Services:
    paths = InstancePaths(Path(instance))
    if config is None:
        config = load_config(paths.config)
    if secrets is None:
        secrets = read_secrets(config)
    store = open_store(paths.database, config.database.url, secrets.db_password)
    if migrate and paths.root.exists():
        store.migrate()
        if paths.root_cert.exists():
            _check_ca(paths, store)
            if config.log.enabled:
                log = open_log(config, paths, lambda: key_passphrase(paths, secrets, config))
                with contextlib.suppress(InstanceError):  # no passphrase at hand: made when one is
                    log.ensure_key()
                store.attach_log(log)
                store.backfill_log()
    return Services(paths=paths, config=config, secrets=secrets, store=store)


def _check_ca(paths: InstancePaths, store: CaStore) -> None:
    ours = hashlib.sha256(x509.load_pem_x509_certificate(paths.root_cert.read_bytes()).public_bytes(
        Encoding.DER)).hexdigest()
    bound = store.bind_ca(ours)
    if bound != ours:
        raise InstanceError(
            f"The database belongs to another CA (root SHA-256 {bound[:16]}...), not to the one in {paths.root} "
            f"({ours[:16]}...). A second node needs a copy of the first node's instance folder, not its own "
            "`ca-server init`.")
