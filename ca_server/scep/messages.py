"""SCEP messages (RFC 8894 section 3): read a pkiMessage (CMS SignedData around an EnvelopedData),
check its signature, open its envelope with the RA key; build the CertRep answer. Pure CMS with
asn1crypto and cryptography: no HTTP, no store.

What real clients send decides what is accepted (../shared/DEVICE-CLIENTS.md): single DES and
3DES envelopes beside AES, SHA-1 beside SHA-2 signatures, signed attributes in any order (the
signature is checked over the bytes as sent). Each answer is enveloped with the cipher and signed
with the digest its request used, and its SignerInfo names the algorithm `rsaEncryption`, the only
one strongSwan's pki reads."""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
from dataclasses import dataclass

from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding

# RFC 8894 3.2.1: the SCEP attributes, under id-VeriSign pki attributes.
MESSAGE_TYPE, PKI_STATUS, FAIL_INFO = "2.16.840.1.113733.1.9.2", "2.16.840.1.113733.1.9.3", "2.16.840.1.113733.1.9.4"
SENDER_NONCE, RECIPIENT_NONCE = "2.16.840.1.113733.1.9.5", "2.16.840.1.113733.1.9.6"
TRANSACTION_ID = "2.16.840.1.113733.1.9.7"

CERT_REP, RENEWAL_REQ, PKCS_REQ, CERT_POLL, GET_CERT, GET_CRL = "3", "17", "19", "20", "21", "22"
MESSAGE_NAMES = {CERT_REP: "CertRep", RENEWAL_REQ: "RenewalReq", PKCS_REQ: "PKCSReq", CERT_POLL: "CertPoll",
                 GET_CERT: "GetCert", GET_CRL: "GetCRL"}
SUCCESS, FAILURE, PENDING = "0", "2", "3"
# failInfo (RFC 8894 3.2.1.4)
BAD_ALG, BAD_MESSAGE_CHECK, BAD_REQUEST, BAD_TIME, BAD_CERT_ID = "0", "1", "2", "3", "4"

DIGESTS = {"sha1": hashes.SHA1, "sha256": hashes.SHA256, "sha384": hashes.SHA384, "sha512": hashes.SHA512}
# asn1crypto's names of the content ciphers we open and answer with; "des" is single DES.
CIPHERS = {"des": 8, "tripledes_3key": 24, "aes128_cbc": 16, "aes192_cbc": 24, "aes256_cbc": 32}


class ScepError(Exception):
    """A request that cannot be answered with a CertRep at all, or one answered FAILURE with
    `fail_info`; `message` says why in words (for the log and the audit row: SCEP itself carries
    only the code)."""

    def __init__(self, fail_info: str, message: str) -> None:
        super().__init__(message)
        self.fail_info = fail_info
        self.message = message


@dataclass(frozen=True)
class PkiMessage:
    """A request as read: who signed it, what it asks, and the envelope still closed."""

    message_type: str
    transaction_id: str
    sender_nonce: bytes
    signer: x509.Certificate  # the requester's self-signed certificate, or its current one (RenewalReq)
    signer_asn1: asn1_x509.Certificate
    digest: str  # sha1 | sha256 | ...
    envelope: bytes | None  # DER of the pkcsPKIEnvelope (ContentInfo of EnvelopedData)

    @property
    def name(self) -> str:
        return MESSAGE_NAMES.get(self.message_type, f"messageType {self.message_type}")


@dataclass(frozen=True)
class Opened:
    content: bytes
    cipher: str  # des | tripledes_3key | aes128_cbc | ...


def read_message(der: bytes) -> PkiMessage:
    """Parse and check a pkiMessage: its structure, its messageDigest and its signature. What
    fails here cannot be answered with a signed FAILURE aimed at the sender, so it raises ScepError
    with badMessageCheck and the web layer answers 400 with the words."""
    try:
        info = cms.ContentInfo.load(der)
        if info["content_type"].native != "signed_data":
            raise ScepError(BAD_MESSAGE_CHECK, "The message is not a CMS SignedData (a SCEP pkiMessage).")
        signed = info["content"]
        signer_info = signed["signer_infos"][0]
        attrs = {a["type"].dotted: a["values"][0] for a in signer_info["signed_attrs"]}
        digest = signer_info["digest_algorithm"]["algorithm"].native
        signer_asn1 = _find_signer(signed, signer_info["sid"])
        inner = signed["encap_content_info"]["content"].native  # None when absent
        message_type = _text(attrs, MESSAGE_TYPE)
        transaction_id = _text(attrs, TRANSACTION_ID)
        sender_nonce = core.OctetString.load(attrs[SENDER_NONCE].dump()).native if SENDER_NONCE in attrs else b""
        message_digest = core.OctetString.load(attrs["1.2.840.113549.1.9.4"].dump()).native
        signed_bytes = b"\x31" + signer_info["signed_attrs"].dump()[1:]  # as sent, tagged as the SET it is
        signature = signer_info["signature"].native
        signer = x509.load_der_x509_certificate(signer_asn1.dump())
    except ScepError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise ScepError(BAD_MESSAGE_CHECK, f"The message is not a readable SCEP pkiMessage ({type(exc).__name__}).") \
            from None
    if digest not in DIGESTS:
        raise ScepError(BAD_ALG, f"The message is signed with {digest}; this server takes SHA-1 and SHA-2.")
    if not hmac.compare_digest(_hash(digest, inner or b""), message_digest):
        raise ScepError(BAD_MESSAGE_CHECK, "The message's content does not match its messageDigest: it was altered.")
    if not verify(signer.public_key(), signature, signed_bytes, DIGESTS[digest]()):
        raise ScepError(BAD_MESSAGE_CHECK, "The message's signature does not verify with the certificate it carries.")
    return PkiMessage(message_type, transaction_id, sender_nonce, signer, signer_asn1, digest, inner)


def open_envelope(envelope: bytes | None, ra_key: rsa.RSAPrivateKey) -> Opened:
    """The pkcsPKIEnvelope's content, decrypted with the RA key (RSA key transport)."""
    if not envelope:
        raise ScepError(BAD_REQUEST, "The message has no pkcsPKIEnvelope.")
    try:
        enveloped = cms.ContentInfo.load(envelope)
        if enveloped["content_type"].native != "enveloped_data":
            raise ScepError(BAD_MESSAGE_CHECK, "The pkcsPKIEnvelope is not a CMS EnvelopedData.")
        data = enveloped["content"]
        recipient = data["recipient_infos"][0].chosen
        wrapped = recipient["encrypted_key"].native
        encrypted = _EncryptedContentInfo.load(data["encrypted_content_info"].dump())
        algorithm = encrypted["content_encryption_algorithm"]
        cipher = algorithm["algorithm"].native
        iv = algorithm.encryption_iv
        ciphertext = _encrypted_content(encrypted["encrypted_content"])
    except ScepError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        raise ScepError(BAD_MESSAGE_CHECK, f"The pkcsPKIEnvelope is not readable ({type(exc).__name__}).") from None
    if cipher not in CIPHERS:
        raise ScepError(BAD_ALG, f"The envelope uses {cipher}; this server opens AES, 3DES and DES (CBC).")
    try:
        key = ra_key.decrypt(wrapped, PKCS1v15())
        if len(key) != CIPHERS[cipher]:
            raise ValueError("key length")
        decryptor = Cipher(_algorithm(cipher, key), modes.CBC(iv)).decryptor()
        padded = decryptor.update(ciphertext) + decryptor.finalize()
        unpadder = padding.PKCS7(len(iv) * 8).unpadder()
        content = unpadder.update(padded) + unpadder.finalize()
    except (ValueError, TypeError):
        raise ScepError(BAD_MESSAGE_CHECK, "The envelope could not be opened with the RA key: was it encrypted to "
                        "this server's RA certificate (GetCACert)?") from None
    return Opened(content, cipher)


def cert_rep(request: PkiMessage, ra_cert: x509.Certificate, ra_key: rsa.RSAPrivateKey, *, status: str,
             cipher: str = "aes256_cbc", certificate: x509.Certificate | None = None,
             fail_info: str | None = None) -> bytes:
    """The CertRep (RFC 8894 3.3.2) to `request`: SUCCESS carries `certificate` in a degenerate
    PKCS#7, enveloped to the requester's certificate with `cipher`; FAILURE carries `fail_info`.
    Written as DER directly: asn1crypto re-encoding the whole structure took most of the CPU of
    an enrollment."""
    content = b""
    if status == SUCCESS and certificate is not None:
        content = _envelope(degenerate_pkcs7([certificate]), request.signer_asn1, request.signer, cipher)
    attributes = [
        _der(SEQ, _CONTENT_TYPE_ATTR, _der(SET, _OID_DATA)),
        _der(SEQ, _MESSAGE_DIGEST_ATTR, _der(SET, _der(OCTET, _hash(request.digest, content)))),
        _scep_attribute(MESSAGE_TYPE, _der(PRINTABLE, CERT_REP.encode())),
        _scep_attribute(PKI_STATUS, _der(PRINTABLE, status.encode())),
        _scep_attribute(TRANSACTION_ID, _der(PRINTABLE, request.transaction_id.encode())),
        _scep_attribute(SENDER_NONCE, _der(OCTET, os.urandom(16))),
        _scep_attribute(RECIPIENT_NONCE, _der(OCTET, request.sender_nonce)),
    ]
    if status == FAILURE:
        attributes.append(_scep_attribute(FAIL_INFO, _der(PRINTABLE, (fail_info or BAD_REQUEST).encode())))
    signed_attrs = b"".join(sorted(attributes))  # DER: a SET OF in the order of its encodings
    signature = ra_key.sign(_der(SET, signed_attrs), PKCS1v15(), DIGESTS[request.digest]())
    ra_der, ra_sid = _signer_parts(ra_cert)
    digest_algorithm = _digest_algorithm(request.digest)
    signer_info = _der(SEQ, _V1, ra_sid, digest_algorithm, _der(CTX0, signed_attrs), _RSA_ENCRYPTION,
                       _der(OCTET, signature))
    encap = _der(SEQ, _OID_DATA, _der(CTX0, _der(OCTET, content))) if content else _der(SEQ, _OID_DATA)
    signed = _der(SEQ, _V1, _der(SET, digest_algorithm), encap, _der(CTX0, ra_der), _der(SET, signer_info))
    return _der(SEQ, _OID_SIGNED_DATA, _der(CTX0, signed))


def degenerate_pkcs7(certificates: list[x509.Certificate]) -> bytes:
    """A certs-only SignedData; its certificates are a SET, so in DER order whatever the order given
    (clients find the RA certificate by its key usage, not its place)."""
    certs = b"".join(sorted(c.public_bytes(Encoding.DER) for c in certificates))
    signed = _der(SEQ, _V1, _der(SET), _der(SEQ, _OID_DATA), _der(CTX0, certs), _der(SET))
    return _der(SEQ, _OID_SIGNED_DATA, _der(CTX0, signed))


def verify(public_key, signature: bytes, data: bytes, digest: hashes.HashAlgorithm) -> bool:
    try:
        if isinstance(public_key, rsa.RSAPublicKey):
            public_key.verify(signature, data, PKCS1v15(), digest)
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(digest))
        else:
            return False
    except InvalidSignature:
        return False
    return True


def _envelope(content: bytes, recipient_asn1: asn1_x509.Certificate, recipient: x509.Certificate,
              cipher: str) -> bytes:
    public_key = recipient.public_key()
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ScepError(BAD_ALG, "The requester's certificate has no RSA key to encrypt the answer to.")
    key, iv = os.urandom(CIPHERS[cipher]), os.urandom(8 if cipher in ("des", "tripledes_3key") else 16)
    padder = padding.PKCS7(len(iv) * 8).padder()
    encryptor = Cipher(_algorithm(cipher, key), modes.CBC(iv)).encryptor()
    ciphertext = encryptor.update(padder.update(content) + padder.finalize()) + encryptor.finalize()
    recipient_info = _der(SEQ, _V0, _issuer_and_serial(recipient_asn1), _RSA_ENCRYPTION, _der(OCTET, public_key.encrypt(key, PKCS1v15())))
    algorithm = cms.EncryptionAlgorithm({"algorithm": cipher, "parameters": iv}).dump()
    encrypted = _der(SEQ, _OID_DATA, algorithm, _der(0x80, ciphertext))  # [0] IMPLICIT OCTET STRING
    enveloped = _der(SEQ, _V0, _der(SET, recipient_info), encrypted)
    return _der(SEQ, _OID_ENVELOPED_DATA, _der(CTX0, enveloped))


# DER written by hand where it is built on every answer (cert_rep, _envelope): tags, and the
# constant encodings, made once by asn1crypto.
SEQ, SET, OCTET, PRINTABLE, CTX0 = 0x30, 0x31, 0x04, 0x13, 0xA0
_V0, _V1 = b"\x02\x01\x00", b"\x02\x01\x01"
_OID_DATA = cms.ContentType("data").dump()
_OID_SIGNED_DATA = cms.ContentType("signed_data").dump()
_OID_ENVELOPED_DATA = cms.ContentType("enveloped_data").dump()
_CONTENT_TYPE_ATTR = cms.CMSAttributeType("content_type").dump()
_MESSAGE_DIGEST_ATTR = cms.CMSAttributeType("message_digest").dump()
_RSA_ENCRYPTION = cms.SignedDigestAlgorithm({"algorithm": "rsassa_pkcs1v15"}).dump()  # what strongSwan reads


def _der(tag: int, *parts: bytes) -> bytes:
    body = b"".join(parts)
    size = len(body)
    if size < 0x80:
        return bytes((tag, size)) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + body


def _scep_attribute(oid: str, value: bytes) -> bytes:
    return _der(SEQ, core.ObjectIdentifier(oid).dump(), _der(SET, value))


@functools.lru_cache(maxsize=16)
def _digest_algorithm(digest: str) -> bytes:
    return cms.DigestAlgorithm({"algorithm": digest}).dump()


@functools.lru_cache(maxsize=4)
def _signer_parts(cert: x509.Certificate) -> tuple[bytes, bytes]:
    """The RA certificate's DER and its issuer-and-serial-number, once per RA certificate."""
    der = cert.public_bytes(Encoding.DER)
    return der, _issuer_and_serial(asn1_x509.Certificate.load(der))


def _issuer_and_serial(cert: asn1_x509.Certificate) -> bytes:
    """IssuerAndSerialNumber (RFC 5652 10.2.4): how CMS names a signer's or recipient's certificate."""
    tbs = cert["tbs_certificate"]
    return _der(SEQ, tbs["issuer"].dump(), tbs["serial_number"].dump())


class _EncryptedContentInfo(core.Sequence):
    """cms.EncryptedContentInfo, with encryptedContent taken as it comes: primitive, or constructed
    from chunks as Go's pkcs7 (hence scepclient) writes it, which asn1crypto's own spec refuses."""

    _fields = [("content_type", cms.ContentType), ("content_encryption_algorithm", cms.EncryptionAlgorithm),
               ("encrypted_content", core.Any, {"optional": True})]


def _encrypted_content(value: core.Any) -> bytes:
    if value._header[0] & 0x20:  # constructed: OCTET STRING chunks, joined by asn1crypto's BER reader
        return core.OctetString.load(b"\x24\x80" + value.contents + b"\x00\x00").native
    return value.contents


def _algorithm(cipher: str, key: bytes):
    return TripleDES(key) if cipher in ("des", "tripledes_3key") else algorithms.AES(key)


def _find_signer(signed: cms.SignedData, sid: cms.SignerIdentifier) -> asn1_x509.Certificate:
    if sid.name != "issuer_and_serial_number":
        raise ScepError(BAD_MESSAGE_CHECK, "The signer is not named by issuer and serial number.")
    wanted = sid.chosen
    for choice in signed["certificates"] or ():
        cert = choice.chosen
        if (choice.name == "certificate" and cert.serial_number == wanted["serial_number"].native
                and cert.issuer == wanted["issuer"]):
            return cert
    raise ScepError(BAD_MESSAGE_CHECK, "The message does not carry the certificate that signed it.")


def _text(attrs: dict, oid: str) -> str:
    if oid not in attrs:
        raise ScepError(BAD_MESSAGE_CHECK, "The message lacks a SCEP attribute (messageType or transactionID).")
    return str(core.PrintableString.load(attrs[oid].dump()).native)


def _hash(digest: str, data: bytes) -> bytes:
    return hashlib.new(digest, data).digest()
