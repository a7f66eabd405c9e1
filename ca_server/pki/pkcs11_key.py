"""A CA key that never leaves a PKCS#11 token (an HSM, a YubiKey, SoftHSM2): named by an RFC 7512
URI, used through python-pkcs11. `TokenECKey` is an EllipticCurvePrivateKey whose sign() asks
the token, so cryptography's certificate, CRL and OCSP builders sign with it as with a key in
memory (cryptography calls sign() on key objects it does not implement itself).

    pkcs11:token=ca;object=intermediate?module-path=/usr/lib/softhsm/libsofthsm2.so

The PIN comes from an environment variable ([ca] pkcs11_pin_env), never from the URI. A token
session belongs to one process: a forked server worker opens its own on first use."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from urllib.parse import unquote

import pkcs11
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_der_public_key
from pkcs11 import Mechanism, ObjectClass
from pkcs11.exceptions import NoSuchKey, NoSuchToken, PinIncorrect, PinLenRange, UserAlreadyLoggedIn
from pkcs11.util.ec import encode_ec_public_key

from ..errors import InstanceError

_initialized_in: dict[str, int] = {}  # library path -> the process that initialized it


@dataclass(frozen=True)
class Pkcs11Uri:
    token: str
    object: str
    module: str

    @classmethod
    def parse(cls, uri: str, default_module: str = "") -> Pkcs11Uri:
        """RFC 7512: path attributes `token` and `object` (percent-encoded), query `module-path`."""
        if not uri.startswith("pkcs11:"):
            raise ValueError(f"{uri!r} is not a pkcs11: URI (RFC 7512), like pkcs11:token=ca;object=intermediate")
        path, _, query = uri[len("pkcs11:"):].partition("?")
        attrs = dict(part.split("=", 1) for part in path.split(";") if "=" in part)
        options = dict(part.split("=", 1) for part in query.split("&") if "=" in part)
        if "pin-value" in options:
            raise ValueError("put the PIN in the environment variable [ca] pkcs11_pin_env names, not in the URI")
        token, label = unquote(attrs.get("token", "")), unquote(attrs.get("object", ""))
        if not token or not label:
            raise ValueError(f"{uri!r} must name the token and the key: pkcs11:token=NAME;object=LABEL")
        module = unquote(options.get("module-path", "")) or default_module
        if not module:
            raise ValueError("name the token's PKCS#11 library: ?module-path=... in the URI, or [ca] pkcs11_module")
        return cls(token, label, module)


class TokenECKey(ec.EllipticCurvePrivateKey):
    """An EC private key in a token. Opening it logs in (a wrong PIN or a missing key raises
    InstanceError with the reason); each signature is one C_Sign on the token."""

    def __init__(self, uri: Pkcs11Uri, pin: str | None) -> None:
        if not pin:
            raise InstanceError("The intermediate key is in a PKCS#11 token: set the PIN in the environment variable "
                                "[ca] pkcs11_pin_env names (default CA_SERVER_PKCS11_PIN).")
        self._uri, self._pin = uri, pin
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._session = self._key = None
        self._public = self._open()

    def _open(self) -> ec.EllipticCurvePublicKey:
        where = f"token {self._uri.token!r}"
        try:
            lib = pkcs11.lib(self._uri.module)
        except (RuntimeError, OSError, pkcs11.PKCS11Error) as exc:
            raise InstanceError(f"The PKCS#11 library {self._uri.module} could not be loaded: {exc}") from None
        if _initialized_in.get(self._uri.module, os.getpid()) != os.getpid():
            lib.reinitialize()  # PKCS#11 2.40 6.7.1: a forked child initializes the library again
        _initialized_in[self._uri.module] = os.getpid()
        try:
            token = lib.get_token(token_label=self._uri.token)
            try:
                session = token.open(user_pin=self._pin)
            except UserAlreadyLoggedIn:  # a login is the process's, shared by its sessions
                session = token.open()
            self._key = session.get_key(object_class=ObjectClass.PRIVATE_KEY, label=self._uri.object)
            public = session.get_key(object_class=ObjectClass.PUBLIC_KEY, label=self._uri.object)
        except NoSuchToken:
            raise InstanceError(f"No PKCS#11 {where} in {self._uri.module}.") from None
        except (PinIncorrect, PinLenRange):
            raise InstanceError(f"The PIN for PKCS#11 {where} is wrong ([ca] pkcs11_pin_env).") from None
        except NoSuchKey:
            raise InstanceError(f"PKCS#11 {where} has no key pair labelled {self._uri.object!r}.") from None
        self._session, self._pid = session, os.getpid()
        loaded = load_der_public_key(encode_ec_public_key(public))
        if not isinstance(loaded, ec.EllipticCurvePublicKey):  # pragma: no cover - the token said EC
            raise InstanceError(f"The key {self._uri.object!r} in {where} is not an EC key.")
        return loaded

    def sign(self, data: bytes, signature_algorithm: ec.EllipticCurveSignatureAlgorithm) -> bytes:
        if not isinstance(signature_algorithm, ec.ECDSA):
            raise TypeError("a token EC key signs ECDSA only")
        algorithm = signature_algorithm.algorithm
        if isinstance(algorithm, Prehashed):
            digest = data
        else:
            hasher = hashes.Hash(algorithm)
            hasher.update(data)
            digest = hasher.finalize()
        with self._lock:
            if self._pid != os.getpid():  # a forked worker: its own library state and session
                self._open()
            raw = self._key.sign(digest, mechanism=Mechanism.ECDSA)
        half = len(raw) // 2  # PKCS#11 gives r || s; X.509 wants DER (RFC 3279 2.2.3)
        return encode_dss_signature(int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big"))

    def public_key(self) -> ec.EllipticCurvePublicKey:
        return self._public

    @property
    def curve(self) -> ec.EllipticCurve:
        return self._public.curve

    @property
    def key_size(self) -> int:
        return self._public.key_size

    def exchange(self, algorithm, peer_public_key) -> bytes:
        raise TypeError("the token key is used for signatures only")

    def private_numbers(self):
        raise TypeError("the private key never leaves the token")

    def private_bytes(self, encoding, format, encryption_algorithm) -> bytes:
        raise TypeError("the private key never leaves the token")

    def __copy__(self) -> TokenECKey:
        return self

    def __deepcopy__(self, memo) -> TokenECKey:
        return self

    def __eq__(self, other: object) -> bool:
        return other is self

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return f"TokenECKey(token={self._uri.token!r}, object={self._uri.object!r})"
