"""OCSP responder (RFC 6960) for certificates the intermediates issued.

Responses are signed by a delegated responder certificate (issued by the certificate's
intermediate, with
id-kp-OCSPSigning and id-pkix-ocsp-nocheck) that is renewed when a third of its life remains.
Responses without a nonce are cached per serial until the certificate's state changes.

A serial of this issuer that was never issued gets `unauthorized` (RFC 6960 2.3: the responder
cannot answer authoritatively for it), as Let's Encrypt's responder does: a constant, unsigned
answer, so a flood of random serials costs no signature and evicts nothing from the cache."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from . import once
from .ca.authority import BACKDATE, Authority
from .ca.intermediates import Intermediate
from .clock import from_text
from .config import Config
from .errors import InstanceError
from .pki.extensions import build_ocsp_responder
from .pki.keys import decrypt_private_key, encrypt_private_key, generate_private_key, signature_hash
from .pki.serials import new_serial, serial_hex
from .revocation import REASON_FLAGS
from .store import CaStore

OCSP_REQUEST = "application/ocsp-request"
OCSP_RESPONSE = "application/ocsp-response"
MAX_REQUEST_BYTES = 10_000
CACHE_SIZE = 20_000
# A cached response is re-signed after this long, well before its nextUpdate.
CACHE_REFRESH = dt.timedelta(hours=1)
# Hash algorithms a request may identify the issuer with (RFC 6960 4.1.1 CertID).
_HASHES = ("sha1", "sha256", "sha384", "sha512")


@dataclass(frozen=True)
class OCSPAnswer:
    der: bytes
    this_update: dt.datetime | None = None  # None for an unsuccessful answer
    next_update: dt.datetime | None = None
    cacheable: bool = False  # successful and without a nonce: the same request gets the same answer
    status: str = "malformed"  # good | revoked | unauthorized | malformed (for /metrics)


@dataclass(frozen=True)
class Responder:
    serial: str
    cert: x509.Certificate
    key: object
    not_before: dt.datetime
    not_after: dt.datetime

    def fresh(self, now: dt.datetime) -> bool:
        """More than a third of its life left; otherwise a new responder is issued."""
        return self.not_after - now > (self.not_after - self.not_before) / 3


RESPONDER_LEASE_SECONDS = 30


def ensure_responder(config: Config, store: CaStore, authority: Authority, now: dt.datetime,
                     gen: Intermediate | None = None) -> Responder:
    """The current responder certificate of `gen` (default: the issuing intermediate); a new one
    is issued when none is fresh, by one process of all (a lease): the others wait for it (a
    holder that died is replaced when the lease ends)."""
    gen = gen or authority.current

    def stored() -> Responder | None:
        row = store.latest_ocsp_responder(gen.slug)
        if row is not None:
            found = Responder(row["serial"], x509.load_der_x509_certificate(row["der"]), None,
                              from_text(row["not_before"]), from_text(row["not_after"]))
            if found.fresh(now):
                return dataclasses.replace(found, key=decrypt_private_key(row["key_pem"], authority.passphrase()))
        return None

    current = stored()
    if current is not None:
        return current
    lease = "ocsp-responder" if gen.number == 1 else f"ocsp-responder:{gen.slug}"
    if not store.take_lease(lease, once.holder(), now, RESPONDER_LEASE_SECONDS):
        current = once.wait_for(stored, RESPONDER_LEASE_SECONDS)
        if current is not None:
            return current
    current = stored()  # issued by another process between the first look and the lease
    return current if current is not None else _issue_responder(config, store, authority, now, gen)


def _issue_responder(config: Config, store: CaStore, authority: Authority, now: dt.datetime,
                     gen: Intermediate) -> Responder:
    key = generate_private_key("ec-p256")
    start = now.replace(microsecond=0) - BACKDATE
    not_after = min(start + dt.timedelta(days=config.revocation.ocsp_responder_validity_days), gen.not_after)
    serial = new_serial()
    name = gen.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    issuer_cn = str(name[0].value) if name else config.ca.intermediate_common_name
    cert = build_ocsp_responder(
        subject=x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, config.ca.organization),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{issuer_cn[:48]} OCSP Responder"),
        ]),
        public_key=key.public_key(),
        serial=serial,
        not_before=start,
        not_after=not_after,
        issuer_cert=gen.cert,
        issuer_key=authority.key_for(gen),
    )
    store.insert_ocsp_responder(serial_hex(serial), start, not_after, cert.public_bytes(Encoding.DER),
                                encrypt_private_key(key, authority.passphrase()), gen.slug)
    return Responder(serial_hex(serial), cert, key, start, not_after)


class OCSPResponder:
    """Answers OCSP requests for every intermediate (the request's CertID names which: RFC 6960
    4.1.1), each through its own responder certificate. One per process; thread-safe."""

    def __init__(self, config: Config, store: CaStore, authority: Authority) -> None:
        self.config = config
        self.store = store
        self.authority = authority
        self._lock = threading.Lock()
        self._responders: dict[int, Responder] = {}
        self._cache: OrderedDict[tuple, OCSPAnswer] = OrderedDict()
        self._known: tuple[Intermediate, ...] = ()
        self._issuer_hashes: dict[tuple[str, bytes, bytes], Intermediate] = {}

    def _issuer(self, algorithm: str, name_hash: bytes, key_hash: bytes) -> Intermediate | None:
        gens = self.authority.intermediates
        if gens is not self._known:  # a rollover added one
            hashes = {}
            for gen in gens:
                subject_der = gen.cert.subject.public_bytes()
                spk_bits = _subject_public_key_bits(gen.der)
                for name in _HASHES:
                    hashes[(name, hashlib.new(name, subject_der).digest(), hashlib.new(name, spk_bits).digest())] = gen
            self._issuer_hashes, self._known = hashes, gens
        return self._issuer_hashes.get((algorithm, name_hash, key_hash))

    def responder(self, now: dt.datetime, gen: Intermediate | None = None) -> Responder:
        gen = gen or self.authority.current
        with self._lock:
            current = self._responders.get(gen.number)
            if current is None or not current.fresh(now):
                current = self._responders[gen.number] = ensure_responder(
                    self.config, self.store, self.authority, now, gen)
            return current

    def respond(self, data: bytes, now: dt.datetime) -> bytes:
        """DER OCSPResponse for a DER OCSPRequest; malformed input gets malformedRequest."""
        return self.answer(data, now).der

    def answer(self, data: bytes, now: dt.datetime) -> OCSPAnswer:
        """The response with what HTTP caching needs (RFC 5019 6.2)."""
        if not data or len(data) > MAX_REQUEST_BYTES:
            return MALFORMED
        try:
            request = ocsp.load_der_ocsp_request(data)
            algorithm = request.hash_algorithm
            name_hash, key_hash, serial = request.issuer_name_hash, request.issuer_key_hash, request.serial_number
            nonce = _nonce(request)
        except Exception:  # cryptography raises ValueError, NotImplementedError (several requests), ...
            return MALFORMED
        gen = self._issuer(algorithm.name, name_hash, key_hash)
        if gen is None or serial <= 0:
            # RFC 6960 2.3: not a certificate this responder can answer for.
            return UNAUTHORIZED
        state = self.store.certificate_status(serial_hex(serial))
        if state is None or not self.authority.issued(gen, state[2]):
            return UNAUTHORIZED  # never issued here, or by another of our intermediates (see the module's docstring)
        key = (serial, algorithm.name, gen.number, state)
        if nonce is None:
            with self._lock:
                hit = self._cache.get(key)
            if hit is not None and now - hit.this_update < CACHE_REFRESH:
                return hit
        answer = self._sign(gen, algorithm, name_hash, key_hash, serial, state, nonce, now)
        if nonce is None:
            with self._lock:
                self._cache[key] = answer
                self._cache.move_to_end(key)
                while len(self._cache) > CACHE_SIZE:
                    self._cache.popitem(last=False)
        return answer

    def _sign(self, gen, algorithm, name_hash, key_hash, serial, state, nonce, now) -> OCSPAnswer:
        try:
            responder = self.responder(now, gen)
        except InstanceError:  # a retired intermediate's responder ended and its key is gone
            return UNAUTHORIZED
        this_update = now.replace(microsecond=0)
        next_update = this_update + dt.timedelta(hours=self.config.revocation.ocsp_validity_hours)
        revocation_time = revocation_reason = None
        if state[0] is None:
            status = ocsp.OCSPCertStatus.GOOD
        else:
            status = ocsp.OCSPCertStatus.REVOKED
            revocation_time = from_text(state[0])
            revocation_reason = REASON_FLAGS.get(state[1] or "")
        builder = (
            ocsp.OCSPResponseBuilder()
            .add_response_by_hash(
                issuer_name_hash=name_hash, issuer_key_hash=key_hash, serial_number=serial, algorithm=algorithm,
                cert_status=status, this_update=this_update, next_update=next_update,
                revocation_time=revocation_time, revocation_reason=revocation_reason,
            )
            .responder_id(ocsp.OCSPResponderEncoding.HASH, responder.cert)
            .certificates([responder.cert])
        )
        if nonce is not None:
            builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
        der = builder.sign(responder.key, signature_hash(responder.key)).public_bytes(Encoding.DER)
        return OCSPAnswer(der, this_update, next_update, cacheable=nonce is None,
                          status="good" if state[0] is None else "revoked")


def _nonce(request: ocsp.OCSPRequest) -> bytes | None:
    try:
        return request.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
    except x509.ExtensionNotFound:
        return None


def _unsuccessful(status: ocsp.OCSPResponseStatus) -> OCSPAnswer:
    names = {ocsp.OCSPResponseStatus.UNAUTHORIZED: "unauthorized", ocsp.OCSPResponseStatus.TRY_LATER: "try_later"}
    return OCSPAnswer(ocsp.OCSPResponseBuilder.build_unsuccessful(status).public_bytes(Encoding.DER),
                      status=names.get(status, "malformed"))


MALFORMED = _unsuccessful(ocsp.OCSPResponseStatus.MALFORMED_REQUEST)
UNAUTHORIZED = _unsuccessful(ocsp.OCSPResponseStatus.UNAUTHORIZED)
# RFC 6960 4.2.1: the responder cannot answer now (its database is unreachable). A cached answer
# is not given instead: a revocation may have been committed just before the database went away.
TRY_LATER = _unsuccessful(ocsp.OCSPResponseStatus.TRY_LATER)


def _subject_public_key_bits(cert_der: bytes) -> bytes:
    """The subjectPublicKey BIT STRING contents (without the unused-bits octet), which RFC 6960
    4.1.1 hashes into issuerKeyHash. Read from the certificate's DER with a minimal TLV walk:
    Certificate -> tbsCertificate -> (skip version?, serial, sigalg, issuer, validity, subject) -> SPKI."""

    def tlv(buf: bytes, pos: int) -> tuple[int, int, int]:
        tag = buf[pos]
        length = buf[pos + 1]
        start = pos + 2
        if length & 0x80:
            n = length & 0x7F
            length = int.from_bytes(buf[start:start + n], "big")
            start += n
        return tag, start, start + length

    _, cert_start, _ = tlv(cert_der, 0)
    _, tbs_start, _ = tlv(cert_der, cert_start)
    pos = tbs_start
    tag, _, end = tlv(cert_der, pos)
    if tag == 0xA0:  # [0] version
        pos = end
    for _ in range(5):  # serial, signature, issuer, validity, subject
        _, _, pos = tlv(cert_der, pos)
    _, spki_start, _ = tlv(cert_der, pos)
    _, _, algid_end = tlv(cert_der, spki_start)
    _, bits_start, bits_end = tlv(cert_der, algid_end)
    return cert_der[bits_start + 1:bits_end]
