"""Key generation, description, and encryption at rest."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)

# Key types a CA may have (Ed25519 CAs are left out: many TLS clients cannot verify them).
CA_KEY_TYPES = ("ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "rsa-4096")
# Key types a CSR may carry; RSA sizes are bounded by policy.min_rsa_bits / max_rsa_bits.
CSR_KEY_TYPES = ("rsa", "ec-p256", "ec-p384", "ed25519")

_CURVES = {"ec-p256": ec.SECP256R1, "ec-p384": ec.SECP384R1}
_CURVE_NAMES = {"secp256r1": "ec-p256", "secp384r1": "ec-p384"}


@dataclass(frozen=True)
class KeyInfo:
    """What a public key is, in the words policy and pages use."""

    kind: str  # "rsa", "ec-p256", "ec-p384", "ed25519", or something refused ("ec-secp521r1", "dsa")
    bits: int
    label: str  # "EC P-256", "RSA 2048", "Ed25519"


def generate_private_key(kind: str) -> CertificateIssuerPrivateKeyTypes:
    if kind in _CURVES:
        return ec.generate_private_key(_CURVES[kind]())
    if kind.startswith("rsa-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[4:]))
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(f"unknown key type {kind!r}")


def describe_public_key(key: CertificatePublicKeyTypes) -> KeyInfo:
    if isinstance(key, rsa.RSAPublicKey):
        return KeyInfo("rsa", key.key_size, f"RSA {key.key_size}")
    if isinstance(key, ec.EllipticCurvePublicKey):
        kind = _CURVE_NAMES.get(key.curve.name, f"ec-{key.curve.name}")
        label = {"ec-p256": "EC P-256", "ec-p384": "EC P-384"}.get(kind, f"EC {key.curve.name}")
        return KeyInfo(kind, key.curve.key_size, label)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return KeyInfo("ed25519", 256, "Ed25519")
    if isinstance(key, ed448.Ed448PublicKey):
        return KeyInfo("ed448", 456, "Ed448")
    return KeyInfo(type(key).__name__.lower(), 0, type(key).__name__)


def signature_hash(key: CertificateIssuerPrivateKeyTypes) -> hashes.HashAlgorithm:
    """The hash a CA key signs with: SHA-384 for P-384 (matching strength), SHA-256 otherwise."""
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size >= 384:
        return hashes.SHA384()
    return hashes.SHA256()


def spki_der(key: CertificatePublicKeyTypes) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def spki_sha256(key: CertificatePublicKeyTypes) -> str:
    """Hex SHA-256 of the SubjectPublicKeyInfo: the same key in two CSRs gives the same value."""
    return hashlib.sha256(spki_der(key)).hexdigest()


def encrypt_private_key(key: CertificateIssuerPrivateKeyTypes, passphrase: bytes) -> bytes:
    """PKCS#8 PEM encrypted with the best algorithm cryptography offers (AES-256, PBKDF2)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(passphrase),
    )


def decrypt_private_key(pem: bytes, passphrase: bytes) -> CertificateIssuerPrivateKeyTypes:
    key = serialization.load_pem_private_key(pem, password=passphrase)
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey, ed25519.Ed25519PrivateKey)):
        raise ValueError("unsupported CA key type")
    return key
