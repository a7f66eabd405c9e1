"""Building certificates: the extensions of each kind of certificate this CA signs.

References are to RFC 5280 unless stated otherwise.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)
from cryptography.x509.oid import ExtendedKeyUsageOID

from .keys import signature_hash

EKU_OIDS = {
    "serverAuth": ExtendedKeyUsageOID.SERVER_AUTH,
    "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH,
    "OCSPSigning": ExtendedKeyUsageOID.OCSP_SIGNING,
}
EKU_NAMES = {oid: name for name, oid in EKU_OIDS.items()}


@dataclass(frozen=True)
class Endpoints:
    """URLs written into certificates so clients can check revocation and fetch the issuer."""

    base_url: str

    @property
    def intermediate_crl(self) -> str:
        return f"{self.base_url}/crl/intermediate.crl"

    @property
    def root_crl(self) -> str:
        return f"{self.base_url}/crl/root.crl"

    @property
    def ocsp(self) -> str:
        return f"{self.base_url}/ocsp"

    @property
    def intermediate_der(self) -> str:
        return f"{self.base_url}/ca/intermediate.der"

    @property
    def root_der(self) -> str:
        return f"{self.base_url}/ca/root.der"


def leaf_key_usage(key: CertificatePublicKeyTypes) -> x509.KeyUsage:
    """4.2.1.3, fitting the key: RSA keys may also encipher TLS 1.2 key transport; EC and EdDSA
    keys only sign (keyEncipherment is meaningless for them and pkilint rejects it)."""
    rsa_key = isinstance(key, rsa.RSAPublicKey)
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=rsa_key,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def ca_key_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def aki_from(issuer: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def build_leaf(
    *,
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    sans: list[x509.GeneralName],
    ekus: tuple[str, ...],
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
    issuer_cert: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
    aki: x509.AuthorityKeyIdentifier,
    endpoints: Endpoints,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(leaf_key_usage(public_key), critical=True)
        .add_extension(x509.ExtendedKeyUsage([EKU_OIDS[e] for e in ekus]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(aki, critical=False)
        .add_extension(_crl_distribution_point(endpoints.intermediate_crl), critical=False)
        .add_extension(_aia(ocsp=endpoints.ocsp, ca_issuers=endpoints.intermediate_der), critical=False)
    )
    if sans:
        # 4.2.1.6: the SAN extension is critical when the subject is empty.
        builder = builder.add_extension(
            x509.SubjectAlternativeName(sans), critical=len(subject) == 0
        )
    return builder.sign(issuer_key, _hash_for(issuer_key))


def build_root(
    *,
    subject: x509.Name,
    key: CertificateIssuerPrivateKeyTypes,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
) -> x509.Certificate:
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(ca_key_usage(), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, _hash_for(key))
    )


def build_intermediate(
    *,
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
    root_cert: x509.Certificate,
    root_key: CertificateIssuerPrivateKeyTypes,
    permitted_domains: tuple[str, ...],
    endpoints: Endpoints,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(root_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        # pathLen 0: the intermediate signs leaves only, never another CA.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(aki_from(root_cert), critical=False)
        .add_extension(_crl_distribution_point(endpoints.root_crl), critical=False)
        .add_extension(_aia(ocsp=None, ca_issuers=endpoints.root_der), critical=False)
    )
    if permitted_domains:
        # 4.2.1.10: conforming CAs MUST mark name constraints critical. A DNS constraint
        # "example.test" permits the domain itself and every name below it.
        builder = builder.add_extension(
            x509.NameConstraints(
                permitted_subtrees=[x509.DNSName(d) for d in permitted_domains],
                excluded_subtrees=None,
            ),
            critical=True,
        )
    return builder.sign(root_key, _hash_for(root_key))


def build_ocsp_responder(
    *,
    subject: x509.Name,
    public_key: CertificatePublicKeyTypes,
    serial: int,
    not_before: dt.datetime,
    not_after: dt.datetime,
    issuer_cert: x509.Certificate,
    issuer_key: CertificateIssuerPrivateKeyTypes,
) -> x509.Certificate:
    """RFC 6960 4.2.2.2: a delegated responder carries id-kp-OCSPSigning; id-pkix-ocsp-nocheck
    (4.2.2.2.1) tells clients not to check its own revocation, so it must be short-lived."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject)
        .public_key(public_key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(leaf_key_usage(public_key), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.OCSP_SIGNING]), critical=False)
        .add_extension(x509.OCSPNoCheck(), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(aki_from(issuer_cert), critical=False)
        .sign(issuer_key, _hash_for(issuer_key))
    )


def _aia(*, ocsp: str | None, ca_issuers: str) -> x509.AuthorityInformationAccess:
    """4.2.2.1: where to ask for status (OCSP) and where the issuer's certificate is."""
    methods = []
    if ocsp:
        methods.append((x509.AuthorityInformationAccessOID.OCSP, ocsp))
    methods.append((x509.AuthorityInformationAccessOID.CA_ISSUERS, ca_issuers))
    return x509.AuthorityInformationAccess(
        [x509.AccessDescription(method, x509.UniformResourceIdentifier(url)) for method, url in methods]
    )


def _crl_distribution_point(url: str) -> x509.CRLDistributionPoints:
    return x509.CRLDistributionPoints(
        [
            x509.DistributionPoint(
                full_name=[x509.UniformResourceIdentifier(url)],
                relative_name=None,
                reasons=None,
                crl_issuer=None,
            )
        ]
    )


def _hash_for(key: CertificateIssuerPrivateKeyTypes):
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return None
    return signature_hash(key)


