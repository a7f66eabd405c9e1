""""Is this ours?": decode any certificate or CSR and give one verdict.

Certificates: `issued_here` (serial and fingerprint match a stored certificate, or this CA's own
root or intermediate), `counterfeit` (the serial is ours but the fingerprint is not: altered,
regenerated or forged),
`unknown_to_store` (signed by our intermediate, yet not in the store), `foreign` (not from this
CA). CSRs: `acceptable` or `refused`, with the policy's reasons, before anything is submitted."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import ipaddress
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import verification

from . import issuance
from .ca.authority import Authority
from .clock import to_text
from .config import Config
from .display import fingerprint_text, moment_text
from .errors import BadRequestError, CSRParseError
from .pki.csr import CSR_PEM_HEADERS, UNREADABLE, is_private_key_pem
from .pki.extensions import EKU_NAMES
from .pki.keys import describe_public_key
from .pki.names import a_label
from .pki.pem import from_utf16
from .pki.serials import serial_colon, serial_hex  # noqa: F401  (serial_hex used by web/inspect.py)
from .pki.weak_keys import rsa_key_flaws
from .store import CaStore

MAX_DOCUMENT = 65536


def load_document(data: bytes | str) -> x509.Certificate | x509.CertificateSigningRequest:
    """A certificate or a CSR from PEM, DER or bare base64; BadRequestError when neither."""
    raw = data.encode("utf-8", "replace") if isinstance(data, str) else from_utf16(data)
    if len(raw) > MAX_DOCUMENT:
        raise BadRequestError(f"That is larger than {MAX_DOCUMENT} bytes; paste one certificate or CSR.",
                              code="document_invalid")
    text = raw.strip()
    if b"-----BEGIN" in text:
        start = text.index(b"-----BEGIN")
        block = text[start:]
        if is_private_key_pem(block):  # it said "could not be read: copy it whole"
            raise BadRequestError("This is a private key: keep it where it is and never paste it anywhere (if it "
                                  "left its device, replace it); paste the certificate or the CSR instead.",
                                  code="document_invalid")
        try:
            if block.startswith(CSR_PEM_HEADERS):
                return x509.load_pem_x509_csr(block)
            return x509.load_pem_x509_certificate(block)
        except UNREADABLE:
            raise BadRequestError("The PEM block could not be read: copy it whole, from -----BEGIN to -----END.",
                                  code="document_invalid") from None
    der = raw if raw[:1] == b"\x30" else _b64(text)
    for loader in (x509.load_der_x509_certificate, x509.load_der_x509_csr):
        try:
            return loader(der)
        except UNREADABLE:
            continue
    raise BadRequestError("This is neither a certificate nor a CSR (PEM or DER).", code="document_invalid")


def _b64(text: bytes) -> bytes:
    try:
        return base64.b64decode(b"".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        return b""


def der_of(document) -> bytes:
    return document.public_bytes(Encoding.DER)


def inspect(config: Config, store: CaStore, authority: Authority, data: bytes | str, now: dt.datetime, *,
            hostname: str | None = None, requester: issuance.Requester | None = None) -> dict:
    document = load_document(data)
    if isinstance(document, x509.Certificate):
        return _inspect_certificate(store, authority, document, now, hostname)
    return _inspect_csr(config, store, document, requester)


# What cryptography raises, lazily, for a field of a loaded certificate that does not decode (an
# altered or damaged one): the document loads, the field does not.
MALFORMED = (ValueError, TypeError, UnsupportedAlgorithm, x509.DuplicateExtension, x509.UnsupportedGeneralNameType)


def certificate_fields(cert: x509.Certificate) -> dict:
    """The fields a certificate viewer shows. One that cannot be decoded reads "(unreadable)" and
    is named in "unreadable"; the rest are still shown."""
    der = cert.public_bytes(Encoding.DER)
    unreadable: list[str] = []

    def read(name: str, getter, default):
        try:
            return getter()
        except MALFORMED:
            unreadable.append(name)
            return default

    fields = {
        "subject": read("subject", lambda: cert.subject.rfc4514_string(), "(unreadable)"),
        "issuer": read("issuer", lambda: cert.issuer.rfc4514_string(), "(unreadable)"),
        "serial": serial_hex(cert.serial_number),
        "serial_colon": serial_colon(cert.serial_number),
        "not_before": to_text(cert.not_valid_before_utc),
        "not_after": to_text(cert.not_valid_after_utc),
        "fingerprint_sha256": hashlib.sha256(der).hexdigest(),
        "fingerprint_sha1": hashlib.sha1(der).hexdigest(),
        "key": read("key", lambda: describe_public_key(cert.public_key()).label, "(unreadable)"),
        "sans": read("extensions", lambda: _sans(cert), []),
        "extended_key_usage": [],
        "is_ca": False,
    }
    if "extensions" not in unreadable:
        ekus = read("extensions", lambda: _extension(cert, x509.ExtendedKeyUsage), None) or []
        fields["extended_key_usage"] = [EKU_NAMES.get(o, o.dotted_string) for o in ekus]
        constraints = _extension(cert, x509.BasicConstraints)
        fields["is_ca"] = bool(constraints and constraints.ca)
        features = _extension(cert, x509.TLSFeature)  # RFC 7633: a server that does not staple fails
        fields["ocsp_must_staple"] = bool(features and x509.TLSFeatureType.status_request in features)
    if unreadable:
        fields["unreadable"] = unreadable
    return fields


def _extension(cert: x509.Certificate, kind):
    """The extension's value, None when absent (the extensions were read once already)."""
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _sans(document: x509.Certificate | x509.CertificateSigningRequest) -> list[str]:
    """"DNS:..." and "IP:..." names; MALFORMED when the extensions do not decode."""
    san = _extension(document, x509.SubjectAlternativeName)
    if san is None:
        return []
    return [f"DNS:{v}" for v in san.get_values_for_type(x509.DNSName)] + [
        f"IP:{v}" for v in san.get_values_for_type(x509.IPAddress)]


def _inspect_certificate(store: CaStore, authority: Authority, cert: x509.Certificate, now: dt.datetime,
                         hostname: str | None) -> dict:
    fields = certificate_fields(cert)
    role = _own_ca_role(cert, authority)
    if role is not None:
        verdict, status, reasons = _ca_verdict(store, authority, cert, fields, role, now)
        chain_ok, chain_message = _ca_chain_check(cert, authority, role, verdict)
    else:
        verdict, status, reasons = _leaf_verdict(store, authority, cert, fields, now)
        chain_ok, chain_message = _chain_check(cert, authority, now)
    key_flaws = _key_flaws(cert)
    reasons += [f"Its RSA key {flaw}." for flaw in key_flaws]
    result = {"kind": "certificate", "verdict": verdict, "reasons": reasons, "status": status,
              "serial": fields["serial"], "fingerprint_sha256": fields["fingerprint_sha256"], "fields": fields,
              "chain": {"valid": chain_ok, "message": chain_message}, "key_flaws": list(key_flaws)}
    if role is not None:
        result["ca"] = role
    if hostname and hostname.strip():
        result["hostname"] = hostname_check(cert, authority, now, hostname.strip())
    return result


def _key_flaws(cert: x509.Certificate) -> tuple[str, ...]:
    """What policy's key_weak check says of the certificate's RSA key (nothing for other keys)."""
    try:
        key = cert.public_key()
    except MALFORMED:
        return ()
    if not isinstance(key, rsa.RSAPublicKey):
        return ()
    numbers = key.public_numbers()
    return rsa_key_flaws(numbers.n, numbers.e)


def _leaf_verdict(store: CaStore, authority: Authority, cert: x509.Certificate, fields: dict,
                  now: dt.datetime) -> tuple[str, str | None, list[str]]:
    record = store.get_certificate(fields["serial"], with_renewal=True)
    signed_by_us = _signing_intermediate(cert, authority) is not None
    reasons: list[str] = []
    status = None
    if record is not None and record.fingerprint_sha256 == fields["fingerprint_sha256"]:
        verdict = "issued_here"
        status = record.status(now)
        reasons.append(f"This is certificate {record.serial} issued here on {moment_text(record.issued_at)}; its "
                       f"serial and SHA-256 fingerprint match the stored one. Status: {status}.")
        if record.superseded_by:
            reasons.append(f"It was renewed by {record.superseded_by}.")
    elif record is not None:
        verdict = "counterfeit"
        reasons.append(f"NOT the certificate issued under serial {record.serial}: that one has fingerprint "
                       f"{fingerprint_text(record.fingerprint_sha256)}, this one {fingerprint_text(fields['fingerprint_sha256'])}. It was altered, "
                       "regenerated elsewhere, or forged.")
        reasons.append("Its signature does not come from this CA's intermediate." if not signed_by_us else
                       "Yet its signature is this CA's intermediate's: it was made with the CA key outside "
                       "ca-server, or the issued certificate was re-encoded.")
    elif signed_by_us:
        verdict = "unknown_to_store"
        reasons.append("It is signed by this CA's intermediate, but no certificate with this serial is in the "
                       "store: it was issued outside ca-server (check who else holds the CA key).")
    elif any(fields["issuer"] == gen.issuer_text for gen in authority.intermediates):
        verdict = "foreign"
        reasons.append("It names this CA's intermediate as its issuer, but the intermediate did not sign it: "
                       "it was forged, or altered after signing.")
    else:
        verdict = "foreign"
        reasons.append(f"It was not issued by this CA: its issuer is {fields['issuer'] or '(empty)'}.")
    if fields.get("unreadable"):
        reasons.append(f"Parts of it cannot be read ({', '.join(fields['unreadable'])}): it is damaged or was "
                       "altered.")
    return verdict, status, reasons


def _own_ca_role(cert: x509.Certificate, authority: Authority) -> str | None:
    """"root" or "intermediate" when the certificate carries the serial of one of this CA's own
    certificates (kept in the instance folder, not among the issued ones)."""
    if cert.serial_number == authority.root.serial_number:
        return "root"
    if any(cert.serial_number == gen.cert.serial_number for gen in authority.intermediates):
        return "intermediate"
    return None


def _ca_verdict(store: CaStore, authority: Authority, cert: x509.Certificate, fields: dict, role: str,
                now: dt.datetime) -> tuple[str, str | None, list[str]]:
    genuine = authority.root.public_bytes(Encoding.DER) if role == "root" else next(
        gen.der for gen in authority.intermediates if gen.cert.serial_number == cert.serial_number)
    if cert.public_bytes(Encoding.DER) != genuine:
        return "counterfeit", None, [
            f"NOT this CA's {role} certificate, whose serial it carries: that one has fingerprint "
            f"{fingerprint_text(hashlib.sha256(genuine).hexdigest())}, this one "
            f"{fingerprint_text(fields['fingerprint_sha256'])}. It was altered, "
            "regenerated elsewhere, or forged."]
    revoked = any(r["serial"] == fields["serial"] for r in store.ca_revocations())
    status = "revoked" if revoked else "expired" if now >= cert.not_valid_after_utc else "valid"
    what = ("the one clients trust" if role == "root"
            else "signed by the root; it signs the certificates issued here")
    return "issued_here", status, [
        f"This is this CA's {role} certificate ({what}); its serial and SHA-256 fingerprint match. "
        f"Status: {status}."]


def _ca_chain_check(cert: x509.Certificate, authority: Authority, role: str, verdict: str) -> tuple[bool, str]:
    if role == "root":
        if verdict == "issued_here":
            return True, "It is this CA's root: clients trust it directly."
        return False, "It is not this CA's root."
    if _issued_by(cert, authority.root):
        return True, "It is signed by this CA's root."
    return False, "It is not signed by this CA's root."


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
        return True
    except (InvalidSignature, *MALFORMED):  # other issuer name, key type or signature, or damaged
        return False


def _signing_intermediate(cert: x509.Certificate, authority: Authority) -> x509.Certificate | None:
    """Which of this CA's intermediates (the issuing one or an earlier one) signed it, if any."""
    return next((gen.cert for gen in reversed(authority.intermediates) if _issued_by(cert, gen.cert)), None)


def _chain_check(cert: x509.Certificate, authority: Authority, now: dt.datetime) -> tuple[bool, str]:
    if _signing_intermediate(cert, authority) is None:
        return False, "It does not chain to this CA's root: it is not signed by the intermediate."
    if now < cert.not_valid_before_utc:
        return False, f"It chains to this CA's root, but is not valid before {moment_text(cert.not_valid_before_utc)}."
    if now >= cert.not_valid_after_utc:
        return False, f"It chains to this CA's root, but expired on {moment_text(cert.not_valid_after_utc)}."
    return True, "It chains to this CA's root through the intermediate, and is within its validity period."


def hostname_check(cert: x509.Certificate, authority: Authority, now: dt.datetime, name: str) -> dict:
    """What a browser trusting our root would say when connecting to `name` (cryptography's
    RFC 5280 / CA-B path validation with hostname matching). A URL, a port or a final dot is
    taken off as a browser would; what is still no host name is said (a wildcard, `a..b`, a
    control character: cryptography raised ValueError for them, a 500)."""
    name = _host_of(name)
    ip = None
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        pass
    if "*" in name:
        return {"name": name, "accepted": False,
                "message": f"{name!r} is a wildcard: give the one host name a browser would connect to."}
    try:
        subject = verification.IPAddress(ip) if ip is not None else verification.DNSName(name)
        verifier = (verification.PolicyBuilder().store(verification.Store([authority.root])).time(now)
                    .build_server_verifier(subject))
    except ValueError:
        return {"name": name, "accepted": False, "message": f"{name!r} is not a host name or IP address."}
    try:
        verifier.verify(cert, [gen.cert for gen in authority.intermediates])
    except verification.VerificationError as exc:
        return {"name": name, "accepted": False,
                "message": f"A browser connecting to {name} would refuse it: {_plain(str(exc), cert, name)}."}
    except MALFORMED:
        return {"name": name, "accepted": False,
                "message": f"A browser connecting to {name} would refuse it: parts of it cannot be read."}
    return {"name": name, "accepted": True,
            "message": f"A browser that trusts this CA's root and connects to {name} would accept it."}


def _host_of(text: str) -> str:
    """The host in what a person pastes: https://host:8443/path, host:443, [::1], host. -> host."""
    if "://" in text:
        text = urlsplit(text).netloc
    text = text.rsplit("@", 1)[-1]
    if text.startswith("[") and "]" in text:  # [v6] or [v6]:port
        return text[1:text.index("]")]
    host, sep, port = text.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        text = host
    text = text.rstrip(".").lower() if text not in (".", "") else text
    if not text.isascii():  # bücher.example -> xn--bcher-kva.example, as a browser looks it up
        text = a_label(text) or text
    return text


def _plain(error: str, cert: x509.Certificate, name: str) -> str:
    lowered = error.lower()
    if "no matching" in lowered or "subject" in lowered and "match" in lowered:
        try:
            names = ", ".join(s.split(":", 1)[1] for s in _sans(cert)) or "none"
        except MALFORMED:
            names = "unreadable"
        return f"the certificate is not valid for {name} (its names: {names})"
    if "issuer" in lowered or "candidates exhausted" in lowered:
        return "it does not chain to this CA's root"
    if "expired" in lowered or "validity" in lowered:
        return "it is outside its validity period"
    return error


def _inspect_csr(config: Config, store: CaStore, csr: x509.CertificateSigningRequest,
                 requester: issuance.Requester | None) -> dict:
    der = csr.public_bytes(Encoding.DER)
    request = issuance.IssueRequest(csr=der, requester=requester or issuance.CLI_REQUESTER)
    try:
        prepared, violations = issuance.check_request(config, store, request)
    except CSRParseError as exc:
        return {"kind": "csr", "verdict": "refused", "reasons": [exc.message], "violations": [], "fields": {}}
    violations = violations or issuance.scope_violations(request.requester, prepared.decision.sans)
    fields = {
        "subject": csr.subject.rfc4514_string(),
        "common_name": prepared.csr.common_name,
        "sans": prepared.decision.sans,
        "key": prepared.csr.key.label,
        "signature_valid": prepared.csr.csr.is_signature_valid,
    }
    reasons = [v.message for v in violations] or [
        f"This CSR would be signed for {', '.join(prepared.decision.sans) or 'its subject'} "
        f"({prepared.decision.validity_days} days, profile {prepared.profile}).", *prepared.notes]
    return {"kind": "csr", "verdict": "refused" if violations else "acceptable", "reasons": reasons,
            "violations": [v.as_dict() for v in violations], "fields": fields}
