"""Signed ACME requests (RFC 8555 6.2-6.3): a flattened JWS whose protected header carries alg,
nonce, url and either jwk (new accounts, key-signed revocation) or kid (everything else).

josepy decodes RSA and EC keys, computes thumbprints (RFC 7638) and verifies RS256 and ES256/384
signatures; Ed25519 keys (RFC 8037, alg EdDSA) are read here with cryptography, which josepy 2
does not do."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
import re
from dataclasses import dataclass

import josepy
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from .problems import AcmeProblem

# alg -> the key it needs: RSA (>= 2048 bits), an EC curve, or Ed25519.
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
ALGORITHMS = {"RS256": "rsa", "ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1", "EdDSA": "ed25519"}
MAX_BODY = 256 * 1024


def b64decode(text: str, what: str) -> bytes:
    """base64url without padding (RFC 8555 6.1: padding is not allowed, and neither is anything
    outside the alphabet)."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text):
        raise AcmeProblem("malformed", f"The {what} is not unpadded base64url.")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise AcmeProblem("malformed", f"The {what} is not unpadded base64url.") from None


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@dataclass(frozen=True)
class PublicJWK:
    """An account key: the JSON it was sent as, its RFC 7638 thumbprint, and the key itself."""

    json: dict
    thumbprint: str
    key: object  # rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey

    def verify(self, alg: str, message: bytes, signature: bytes) -> bool:
        needed = ALGORITHMS.get(alg)
        if needed is None:
            raise AcmeProblem("badSignatureAlgorithm", f"The algorithm {alg!r} is not accepted; use one of "
                              f"{', '.join(ALGORITHMS)}.")
        if needed == "ed25519":
            if not isinstance(self.key, ed25519.Ed25519PublicKey):
                raise AcmeProblem("badSignatureAlgorithm", "EdDSA needs an Ed25519 key.")
            try:
                self.key.verify(signature, message)
                return True
            except InvalidSignature:
                return False
        if needed == "rsa" and not isinstance(self.key, rsa.RSAPublicKey):
            raise AcmeProblem("badSignatureAlgorithm", f"{alg} needs an RSA key.")
        if needed != "rsa" and not (isinstance(self.key, ec.EllipticCurvePublicKey) and self.key.curve.name == needed):
            raise AcmeProblem("badSignatureAlgorithm", f"{alg} needs an EC key on {needed}.")
        try:
            return bool(josepy.JWASignature.from_json(alg).verify(self.key, message, signature))
        except Exception:  # a signature of the wrong length or form: not a valid signature
            return False


@functools.lru_cache(maxsize=4096)
def stored_jwk(text: str) -> PublicJWK:
    """An account's key as the store keeps it (JSON text), parsed once per process."""
    return parse_jwk(json.loads(text))


def parse_jwk(value: object) -> PublicJWK:
    if not isinstance(value, dict) or not isinstance(value.get("kty"), str):
        raise AcmeProblem("malformed", "The jwk is not a JSON Web Key.")
    if any(k in value for k in ("d", "p", "q", "dp", "dq", "qi", "k")):
        raise AcmeProblem("badPublicKey", "The jwk holds private key material; send only the public key.")
    if value["kty"] == "OKP":
        if value.get("crv") != "Ed25519" or not isinstance(value.get("x"), str):
            raise AcmeProblem("badPublicKey", "Of OKP keys only Ed25519 is accepted.")
        raw = b64decode(value["x"], "jwk's x")
        try:
            key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
        except ValueError:
            raise AcmeProblem("badPublicKey", "The Ed25519 key is not 32 bytes.") from None
        members = {"crv": "Ed25519", "kty": "OKP", "x": value["x"]}
        digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode()).digest()
        return PublicJWK({**members}, b64encode(digest), key)
    if value["kty"] not in ("RSA", "EC"):
        raise AcmeProblem("badPublicKey", f"Keys of type {value['kty']!r} are not accepted; use RSA, EC or Ed25519.")
    try:
        jwk = josepy.JWK.from_json(value)
        key = jwk.key._wrapped if hasattr(jwk.key, "_wrapped") else jwk.key
        thumbprint = b64encode(jwk.thumbprint())
    except Exception:
        raise AcmeProblem("badPublicKey", "The jwk could not be read as a public key.") from None
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
        raise AcmeProblem("badPublicKey", f"An RSA account key must have 2048 bits or more, not {key.key_size}.")
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name not in ("secp256r1", "secp384r1", "secp521r1"):
        raise AcmeProblem("badPublicKey", "EC account keys must be on P-256, P-384 or P-521.")
    return PublicJWK(jwk.public_key().to_partial_json(), thumbprint, key)


@dataclass(frozen=True)
class SignedRequest:
    """A JWS whose form is checked; its signature is checked by `verify` once the key is known."""

    protected: dict
    payload: bytes
    signing_input: bytes
    signature: bytes

    @property
    def alg(self) -> str:
        return self.protected["alg"]

    @property
    def nonce(self) -> str:
        return self.protected["nonce"]

    @property
    def url(self) -> str:
        return self.protected["url"]

    @property
    def kid(self) -> str | None:
        return self.protected.get("kid")

    @property
    def jwk(self) -> dict | None:
        return self.protected.get("jwk")

    @property
    def post_as_get(self) -> bool:
        return self.payload == b""

    def json_payload(self) -> dict:
        """The payload as a JSON object (RFC 8555 7: every ACME payload is one)."""
        try:
            value = json.loads(self.payload)
        except (ValueError, RecursionError):
            raise AcmeProblem("malformed", "The payload is not valid JSON.") from None
        if not isinstance(value, dict):
            raise AcmeProblem("malformed", "The payload must be a JSON object.")
        return value

    def verify(self, key: PublicJWK) -> None:
        if not key.verify(self.alg, self.signing_input, self.signature):
            raise AcmeProblem("unauthorized", "The JWS signature does not verify with the account's key.")


def parse(body: bytes) -> SignedRequest:
    """Check the form of a flattened JWS (RFC 8555 6.2); never trust it before `verify`."""
    if len(body) > MAX_BODY:
        raise AcmeProblem("malformed", f"The request is larger than {MAX_BODY} bytes.")
    try:
        outer = json.loads(body)
    except (ValueError, RecursionError):
        raise AcmeProblem("malformed", "The body is not a JSON Web Signature (flattened JSON serialization).") from None
    if not isinstance(outer, dict) or set(outer) - {"protected", "payload", "signature"} or not {
            "protected", "payload", "signature"} <= set(outer):
        raise AcmeProblem("malformed", "A request must be a flattened JWS with exactly protected, payload and "
                          "signature (no unprotected header, no multiple signatures).")
    if not all(isinstance(outer[k], str) for k in ("protected", "payload", "signature")):
        raise AcmeProblem("malformed", "protected, payload and signature must be strings.")
    try:
        protected = json.loads(b64decode(outer["protected"], "protected header"))
    except (ValueError, RecursionError):
        raise AcmeProblem("malformed", "The protected header is not JSON.") from None
    if not isinstance(protected, dict):
        raise AcmeProblem("malformed", "The protected header must be a JSON object.")
    for field in ("alg", "nonce", "url"):
        if not isinstance(protected.get(field), str) or not protected[field]:
            kind = "badNonce" if field == "nonce" else "malformed"
            raise AcmeProblem(kind, f"The protected header has no {field}.")
    if protected["alg"] not in ALGORITHMS:
        raise AcmeProblem("badSignatureAlgorithm", f"The algorithm {protected['alg']!r} is not accepted; use one "
                          f"of {', '.join(ALGORITHMS)}.")
    if ("jwk" in protected) == ("kid" in protected):
        raise AcmeProblem("malformed", "The protected header must have exactly one of jwk and kid.")
    if "kid" in protected and not isinstance(protected["kid"], str):
        raise AcmeProblem("malformed", "kid must be the account URL.")
    payload = b64decode(outer["payload"], "payload") if outer["payload"] else b""
    signature = b64decode(outer["signature"], "signature")
    return SignedRequest(protected, payload, f"{outer['protected']}.{outer['payload']}".encode(), signature)


def parse_eab(binding: dict) -> SignedRequest:
    """The External Account Binding JWS (RFC 8555 7.3.4): HS256/384/512, kid, url, no nonce."""
    signed = _parse_object(binding, "external account binding")
    protected = signed.protected
    if protected.get("alg") not in ("HS256", "HS384", "HS512"):
        raise AcmeProblem("badSignatureAlgorithm", "The external account binding must be MACed with HS256.")
    if not isinstance(protected.get("kid"), str) or "nonce" in protected or "jwk" in protected:
        raise AcmeProblem("malformed", "The external account binding needs a kid, and no nonce or jwk.")
    return signed


def parse_inner(value: dict) -> SignedRequest:
    """The inner JWS of a key change (RFC 8555 7.3.5): signed by the new key (jwk), no nonce."""
    signed = _parse_object(value, "inner JWS")
    protected = signed.protected
    if protected.get("alg") not in ALGORITHMS:
        raise AcmeProblem("badSignatureAlgorithm", f"The inner JWS's algorithm must be one of {', '.join(ALGORITHMS)}.")
    if "jwk" not in protected or "kid" in protected or "nonce" in protected or not isinstance(protected.get("url"), str):
        raise AcmeProblem("malformed", "The inner JWS needs jwk and url, and no kid or nonce.")
    return signed


def _parse_object(value: object, what: str) -> SignedRequest:
    if not isinstance(value, dict) or set(value) != {"protected", "payload", "signature"} or not all(
            isinstance(value[k], str) for k in value):
        raise AcmeProblem("malformed", f"The {what} must be a flattened JWS (protected, payload, signature).")
    try:
        protected = json.loads(b64decode(value["protected"], f"{what}'s header"))
    except (ValueError, RecursionError):
        raise AcmeProblem("malformed", f"The {what}'s header is not JSON.") from None
    if not isinstance(protected, dict):
        raise AcmeProblem("malformed", f"The {what}'s header must be a JSON object.")
    payload = b64decode(value["payload"], f"{what}'s payload") if value["payload"] else b""
    return SignedRequest(protected, payload, f"{value['protected']}.{value['payload']}".encode(),
                         b64decode(value["signature"], f"{what}'s signature"))
