"""The offline root's folder (issue 20): the root key, its certificate and the state of its CRL,
kept off the server (a USB stick, a vault); offline_root.py says what is done with it.

    DIR/root-key.pem          the root key, encrypted (PKCS#8, AES-256), 0600
    DIR/root.pem              the root certificate
    DIR/root-crl-state.json   the last CRL number, the revoked CA certificates, the intermediates signed here
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from ..errors import InstanceError
from ..pki.keys import decrypt_private_key
from .private_files import write_private_file

ROOT_PASSPHRASE_ENV = "CA_SERVER_ROOT_PASSPHRASE"  # the offline root's own passphrase, if it has one
ROOT_KEY = "root-key.pem"
ROOT_CERT = "root.pem"
STATE = "root-crl-state.json"


@dataclass(frozen=True)
class RootFolder:
    path: Path

    @property
    def key_file(self) -> Path:
        return self.path / ROOT_KEY

    @property
    def cert(self) -> x509.Certificate:
        try:
            return x509.load_pem_x509_certificate((self.path / ROOT_CERT).read_bytes())
        except FileNotFoundError:
            raise InstanceError(f"{self.path} holds no root certificate ({ROOT_CERT}): is it the root's folder?") from None

    def key(self, passphrase: bytes):
        try:
            pem = self.key_file.read_bytes()
        except FileNotFoundError:
            raise InstanceError(f"{self.path} holds no root key ({ROOT_KEY}): is it the root's folder?") from None
        try:
            return decrypt_private_key(pem, passphrase)
        except (ValueError, TypeError):
            raise InstanceError(f"The root key in {self.path} could not be decrypted: the root passphrase is wrong.") from None

    def state(self) -> dict:
        path = self.path / STATE
        return json.loads(path.read_text()) if path.exists() else {"last_number": 0, "revoked": []}

    def save_state(self, state: dict) -> None:
        temp = self.path / (STATE + ".new")
        temp.write_text(json.dumps(state, indent=2) + "\n")
        os.replace(temp, self.path / STATE)

    def log_signed(self, entry: dict) -> None:
        """Note an intermediate certificate signed here in the state file (the ceremony's log)."""
        state = self.state()
        self.save_state({**state, "signed_intermediates": [*state.get("signed_intermediates", []), entry]})

    def check_new(self, instance_root: Path) -> None:
        """A folder the root can be written to: not the instance's (nor in it: backups and anyone
        with the server's disk would hold the root key) and holding no root already (an instance's
        ca/ folder had its root.pem replaced, breaking its chain)."""
        here, instance = self.path.resolve(), instance_root.resolve()
        if here == instance or instance in here.parents:
            raise InstanceError(f"{self.path} is in the instance folder {instance_root}: the offline root's folder "
                                "must be elsewhere (a USB stick, a vault), or backups would carry the root key.")
        held = [name for name in (ROOT_KEY, ROOT_CERT, STATE) if (self.path / name).exists()]
        if held:
            raise InstanceError(f"{self.path} holds a root already ({', '.join(held)}); refusing to overwrite it: "
                                "choose a new folder.")

    def create(self, encrypted_key_pem: bytes, cert_pem: bytes, revoked: list[dict] = (), *,
               base_url: str | None = None, instance_root: Path) -> None:
        """`base_url`: the server's, for the links in what is signed here (root CRL, root certificate)."""
        self.check_new(instance_root)
        self.path.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path, 0o700)
        write_private_file(self.key_file, encrypted_key_pem)
        (self.path / ROOT_CERT).write_bytes(cert_pem)
        self.save_state({"last_number": 0, "revoked": list(revoked), "base_url": base_url})
