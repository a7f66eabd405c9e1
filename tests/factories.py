"""Builders for test inputs: keys, CSRs, tampered files. Plain functions, real cryptography."""

from __future__ import annotations

import ipaddress
from functools import cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID


@cache
def cached_key(kind: str = "ec-p256", slot: int = 0):
    """A key per (kind, slot), generated once per test session: RSA generation is slow."""
    return new_key(kind)


def new_key(kind: str = "ec-p256"):
    if kind == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec-p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ec-p521":
        return ec.generate_private_key(ec.SECP521R1())
    if kind == "ec-k256":
        return ec.generate_private_key(ec.SECP256K1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    if kind.startswith("rsa-"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[4:]))
    raise ValueError(kind)


def make_csr(
    names: list[str] | tuple[str, ...] = ("host.example.test",),
    *,
    cn: str | None = "",
    ips: list[str] | tuple[str, ...] = (),
    emails: list[str] | tuple[str, ...] = (),
    key=None,
    key_kind: str = "ec-p256",
    subject: x509.Name | None = None,
) -> x509.CertificateSigningRequest:
    """A CSR for DNS `names` (SANs) and IP `ips`; `cn` defaults to the first name, None = no CN."""
    key = key if key is not None else new_key(key_kind)
    if cn == "":
        cn = names[0] if names else None
    if subject is None:
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    general: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    general += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    general += [x509.RFC822Name(e) for e in emails]
    if general:
        builder = builder.add_extension(x509.SubjectAlternativeName(general), critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def pem(csr_or_cert) -> str:
    return csr_or_cert.public_bytes(serialization.Encoding.PEM).decode()


def der(csr_or_cert) -> bytes:
    return csr_or_cert.public_bytes(serialization.Encoding.DER)


def key_pem(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def with_broken_signature(csr: x509.CertificateSigningRequest) -> bytes:
    """The CSR's DER with the last signature byte flipped: parses, but the signature fails."""
    data = bytearray(der(csr))
    data[-1] ^= 0x01
    return bytes(data)
