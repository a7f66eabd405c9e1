"""Reading a certificate signing request (PEM, DER, or bare base64) into what policy needs."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from dataclasses import dataclass

from asn1crypto import csr as asn1_csr
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ..errors import CSRParseError
from .keys import KeyInfo, describe_public_key, spki_sha256
from .pem import from_utf16, pem_armor

PEM_MARKER = b"-----BEGIN"
# A CSR's PEM header, and the one Windows' certreq writes.
CSR_PEM_HEADERS = (b"-----BEGIN CERTIFICATE REQUEST-----", b"-----BEGIN NEW CERTIFICATE REQUEST-----")
# What cryptography raises for a document it cannot read: ValueError for broken encodings, and
# InvalidVersion (not a ValueError) for a well-formed one with a version number it does not know.
UNREADABLE = (ValueError, x509.InvalidVersion)


@dataclass(frozen=True)
class ParsedCSR:
    csr: x509.CertificateSigningRequest
    dns_names: tuple[str, ...]
    ip_addresses: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]
    other_names: tuple[str, ...]  # SAN entries of types we do not issue ("email:a@b", "URI:...")
    common_name: str | None
    key: KeyInfo
    spki_sha256: str
    public_key: CertificatePublicKeyTypes
    subject: x509.Name  # csr.subject builds new Python objects on every access: read it once
    # A CSR whose attributes came out of DER's SET order (strongSwan's pki) is read re-encoded in
    # order; its signature is then checked over the bytes as sent: True/False. None: not re-encoded.
    signed_as_sent: bool | None = None
    der_as_sent: bytes | None = None  # the bytes as sent, when re-encoded

    @property
    def signature_ok(self) -> bool:
        return signature_is_valid(self.csr) if self.signed_as_sent is None else self.signed_as_sent

    @property
    def pem_as_sent(self) -> str:
        """PEM of the request as the requester signed it (a re-encoded one would not verify)."""
        if self.der_as_sent is None:
            return self.csr.public_bytes(Encoding.PEM).decode()
        return pem_armor(self.der_as_sent, "CERTIFICATE REQUEST")


CERTIFICATE_INSTEAD = ("This is a certificate, not a certificate request: send the CSR the device generated "
                       "(the text that starts with -----BEGIN CERTIFICATE REQUEST-----).")
KEY_INSTEAD = ("This is a private key, not a certificate request: keep it on the device, never send it anywhere; "
               "send the CSR the device generated (the text that starts with -----BEGIN CERTIFICATE REQUEST-----).")


def is_private_key_pem(text: bytes) -> bool:
    """A PEM private key (PKCS#8, RSA, EC, encrypted), pasted where a CSR or certificate belongs."""
    return text.startswith(b"-----BEGIN") and b"PRIVATE KEY-----" in text[:64]


def _something_else(data: bytes) -> str | None:
    """Words for the things people send instead of a CSR: a certificate, a private key."""
    text = data.lstrip()
    if text.startswith((b"-----BEGIN CERTIFICATE-----", b"-----BEGIN TRUSTED CERTIFICATE-----")):
        return CERTIFICATE_INSTEAD
    if is_private_key_pem(text):
        return KEY_INSTEAD
    if data[:1] == b"\x30":
        try:
            x509.load_der_x509_certificate(data)
            return CERTIFICATE_INSTEAD
        except UNREADABLE:
            return None
    return None


def decode_request_bytes(data: bytes | str) -> bytes:
    """PEM, DER or bare base64 -> DER bytes of one CSR; CSRParseError when it is none of these."""
    if isinstance(data, str):
        data = data.encode("utf-8", "replace")
    if data[:1] == b"\x30":  # an ASN.1 SEQUENCE: DER, taken byte for byte (no stripping)
        return data
    text = data.strip()
    if not text:
        raise CSRParseError("The CSR is empty: paste the text that starts with -----BEGIN CERTIFICATE REQUEST-----.")
    if PEM_MARKER in text:
        block = text[text.index(PEM_MARKER):]
        try:
            csr = x509.load_pem_x509_csr(block)
        except UNREADABLE as exc:
            if "InvalidSetOrdering" in str(exc):  # parse_csr reads it re-encoded (_reordered)
                return base64.b64decode(b"".join(block.split(b"-----")[2].split()))
            raise CSRParseError(_something_else(block) or
                "This is not a readable PEM certificate request: it must start with "
                "-----BEGIN CERTIFICATE REQUEST----- and end with -----END CERTIFICATE REQUEST-----, "
                "copied whole."
            ) from None
        return csr.public_bytes(Encoding.DER)
    try:
        return base64.b64decode(b"".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise CSRParseError(
            "This is not a certificate request: upload a PEM or DER CSR file, or paste the PEM text."
        ) from None


def parse_csr(data: bytes | str) -> ParsedCSR:
    """Parse a CSR; every way it can be unreadable becomes CSRParseError with a sentence."""
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else from_utf16(data)
    if raw[:1] != b"\x30" and (count := sum(raw.count(header) for header in CSR_PEM_HEADERS)) > 1:
        # Signing the first alone would answer a request for several certificates with one.
        raise CSRParseError(f"The text holds {count} certificate requests; submit them one at a time "
                            "(each gets its own certificate).")
    try:
        if raw[:1] != b"\x30" and raw.lstrip().startswith(PEM_MARKER):
            csr = x509.load_pem_x509_csr(raw.lstrip())  # the common case, parsed once
        else:
            csr = x509.load_der_x509_csr(decode_request_bytes(raw))
    except UNREADABLE as exc:
        csr, signed_as_sent, der_as_sent = _reordered(raw, exc)
        if csr is None:
            raise CSRParseError(_something_else(raw) or
                "This is not a readable certificate request (PKCS#10): generate a new CSR on the device "
                "and upload the file or paste its PEM text."
            ) from None
    else:
        signed_as_sent = der_as_sent = None
    try:
        subject = csr.subject
        cns = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        common_name = None
        if len(cns) > 1:
            raise CSRParseError("The CSR's subject has more than one common name (CN); give it one.")
        if cns:
            value = cns[0].value
            common_name = value if isinstance(value, str) else value.decode("utf-8", "replace")
        dns, ips, other = _requested_names(csr)
        public_key = csr.public_key()
    except CSRParseError:
        raise
    except Exception as exc:  # cryptography raises several types for malformed fields
        raise CSRParseError(f"The CSR could not be read: {_plain(exc)}. Generate a new CSR.") from None
    return ParsedCSR(
        csr=csr,
        dns_names=dns,
        ip_addresses=ips,
        other_names=other,
        common_name=common_name,
        key=describe_public_key(public_key),
        spki_sha256=spki_sha256(public_key),
        public_key=public_key,
        subject=subject,
        signed_as_sent=signed_as_sent,
        der_as_sent=der_as_sent,
    )


def _reordered(raw: bytes, exc: Exception) -> tuple[x509.CertificateSigningRequest | None, bool, bytes | None]:
    """A CSR cryptography refused only for the order of a SET (strongSwan's pki writes the
    attributes extensionRequest, challengePassword out of DER order): re-encoded in order with
    asn1crypto, whether its signature verifies over the request info as it was sent, and the DER
    as it was sent."""
    if "InvalidSetOrdering" not in str(exc):
        return None, False, None
    try:
        der = decode_request_bytes(raw)
        request = asn1_csr.CertificationRequest.load(der)
        info = request["certification_request_info"]
        as_sent = info.dump()
        reordered = asn1_csr.CertificationRequest({
            "certification_request_info": asn1_csr.CertificationRequestInfo.load(info.dump(force=True)),
            "signature_algorithm": request["signature_algorithm"], "signature": request["signature"]})
        csr = x509.load_der_x509_csr(reordered.dump())
        algorithm = request["signature_algorithm"]
        digest = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384,
                  "sha512": hashes.SHA512}[algorithm.hash_algo]()
        key = csr.public_key()
        signature = request["signature"].native
        if isinstance(key, rsa.RSAPublicKey) and algorithm.signature_algo == "rsassa_pkcs1v15":
            key.verify(signature, as_sent, padding.PKCS1v15(), digest)
        elif isinstance(key, ec.EllipticCurvePublicKey) and algorithm.signature_algo == "ecdsa":
            key.verify(signature, as_sent, ec.ECDSA(digest))
        else:
            return csr, False, der
    except InvalidSignature:
        return csr, False, der
    except (ValueError, TypeError, KeyError, CSRParseError):
        return None, False, None
    return csr, True, der


def signature_is_valid(csr: x509.CertificateSigningRequest) -> bool:
    try:
        return csr.is_signature_valid
    except Exception:  # unsupported signature algorithms are as bad as wrong signatures here
        return False


def _requested_names(csr: x509.CertificateSigningRequest) -> tuple[tuple, tuple, tuple]:
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return (), (), ()
    dns: list[str] = []
    ips: list = []
    other: list[str] = []
    for gn in san:
        kind = type(gn)  # exact types: GeneralName's isinstance goes through the ABC machinery
        if kind is x509.DNSName:
            dns.append(gn.value)
        elif kind is x509.IPAddress:
            if isinstance(gn.value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
                other.append(f"IP network:{gn.value}")
            else:
                ips.append(gn.value)
        elif kind is x509.RFC822Name:
            other.append(f"email:{gn.value}")
        elif kind is x509.UniformResourceIdentifier:
            other.append(f"URI:{gn.value}")
        else:
            other.append(type(gn).__name__)
    return tuple(dns), tuple(ips), tuple(other)


def _plain(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text[:200]

