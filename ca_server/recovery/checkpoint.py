"""Signed checkpoints of the issuance log, in the formats Go's sumdb, Sunlight and the C2SP
transparency logs use, so that any of their verifiers reads ours:

- the checkpoint (C2SP tlog-checkpoint): "<origin>\\n<tree size>\\n<base64 root hash>\\n";
- signed as a note (C2SP signed-note): the text, a blank line, then
  "\\u2014 <key name> <base64(4-byte key ID || Ed25519 signature)>\\n", where the key ID is the
  first 4 bytes of SHA-256(name || "\\n" || 0x01 || public key);
- the verifier key that a client pins: "<name>+<key ID as 8 hex digits>+<base64(0x01 || public key)>".

The log key is an Ed25519 key of its own (not a CA key), in instance/keys/log-key.pem, encrypted
with the CA passphrase like the CA keys."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..errors import CAError

ALG_ED25519 = b"\x01"
DASH = "\u2014"


class CheckpointError(CAError):
    code = "checkpoint_invalid"


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(self.root).decode()}\n"


def _key_id(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + ALG_ED25519 + public).digest()[:4]


def _raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def verifier_key(name: str, public: Ed25519PublicKey) -> str:
    raw = _raw(public)
    return f"{name}+{_key_id(name, raw).hex()}+{base64.b64encode(ALG_ED25519 + raw).decode()}"


def sign(checkpoint: Checkpoint, key: Ed25519PrivateKey) -> str:
    """The checkpoint as a signed note, signed by the key named after the log's origin."""
    body = checkpoint.body()
    raw = _raw(key.public_key())
    signature = _key_id(checkpoint.origin, raw) + key.sign(body.encode())
    return f"{body}\n{DASH} {checkpoint.origin} {base64.b64encode(signature).decode()}\n"


def parse_verifier_key(text: str) -> tuple[str, Ed25519PublicKey]:
    try:
        name, key_id, encoded = text.strip().split("+", 2)  # base64 has "+" too
        raw = base64.b64decode(encoded, validate=True)
        if raw[:1] != ALG_ED25519 or len(raw) != 33 or _key_id(name, raw[1:]).hex() != key_id:
            raise ValueError
        return name, Ed25519PublicKey.from_public_bytes(raw[1:])
    except ValueError:
        raise CheckpointError("The log's verifier key is not a valid Ed25519 note key (name+id+key).") from None


def open_note(note: str, verifier: str) -> Checkpoint:
    """The checkpoint a signed note carries, once its signature by `verifier` checks out."""
    name, public = parse_verifier_key(verifier)
    body, sep, signatures = note.partition("\n\n")
    if not sep:
        raise CheckpointError("The checkpoint has no signature block (no blank line after the text).")
    body += "\n"
    key_id = _key_id(name, _raw(public))
    signed = False
    for line in signatures.splitlines():
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != DASH or parts[1] != name:
            continue
        try:
            blob = base64.b64decode(parts[2], validate=True)
        except ValueError:
            continue
        if blob[:4] != key_id:
            continue
        try:
            public.verify(blob[4:], body.encode())
        except InvalidSignature:
            raise CheckpointError(f"The checkpoint's signature by {name} does not verify: the text was changed "
                                  "or it was signed by another key.") from None
        signed = True
    if not signed:
        raise CheckpointError(f"The checkpoint carries no signature by the log key {name}.")
    return parse_body(body)


def parse_body(body: str) -> Checkpoint:
    lines = body.split("\n")
    try:
        origin, size, root = lines[0], int(lines[1]), base64.b64decode(lines[2], validate=True)
    except (IndexError, ValueError):
        raise CheckpointError("The checkpoint is not '<origin>, <size>, <root hash>' on three lines.") from None
    if not origin or size < 0 or len(root) != 32:
        raise CheckpointError("The checkpoint is not '<origin>, <size>, <root hash>' on three lines.")
    return Checkpoint(origin, size, root)
