"""The CA's intermediates, one per generation: the first (`init`) and each that a rollover added.

Generation 1 is ca/intermediate.pem with keys/intermediate.key.pem (or the token key of
`[ca] intermediate_key`); generation N > 1 is ca/intermediate-N.pem with keys/intermediate-N.key.pem
(or keys/intermediate-N.key.uri naming a token key). The newest issues; the others stay to answer
for what they issued (OCSP, their own CRL, chains) until it has expired.

Leaves carry their issuer's URLs for life, so each generation keeps its own: the first
/crl/intermediate.crl (what its leaves already name), the others /crl/intermediate-N.crl, and each
/ca/intermediate-N.der for its AIA caIssuers."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..pki.extensions import Endpoints, aki_from

_FILE = re.compile(r"^intermediate(?:-(\d+))?\.pem$")


@dataclass(frozen=True)
class Intermediate:
    number: int
    cert: x509.Certificate
    base_url: str

    @property
    def slug(self) -> str:
        """Its name in URLs and as the CRL issuer in the store."""
        return slug_for(self.number)

    @cached_property
    def pem(self) -> str:
        return self.cert.public_bytes(Encoding.PEM).decode()

    @cached_property
    def der(self) -> bytes:
        return self.cert.public_bytes(Encoding.DER)

    @cached_property
    def issuer_text(self) -> str:
        """Its subject as its leaves carry it as issuer (RFC 4514): how the store tells them apart."""
        return self.cert.subject.rfc4514_string()

    @cached_property
    def aki(self) -> x509.AuthorityKeyIdentifier:
        return aki_from(self.cert)

    @cached_property
    def endpoints(self) -> Endpoints:
        return Endpoints(self.base_url, self.slug)

    @property
    def not_after(self) -> dt.datetime:
        return self.cert.not_valid_after_utc


def slug_for(number: int) -> str:
    return "intermediate" if number == 1 else f"intermediate-{number}"


def cert_file(ca_dir: Path, number: int) -> Path:
    return ca_dir / f"{slug_for(number)}.pem"


def key_file(keys_dir: Path, number: int) -> Path:
    return keys_dir / f"{slug_for(number)}.key.pem"


def key_uri_file(keys_dir: Path, number: int) -> Path:
    """Where a later generation's key is a token's: the RFC 7512 URI, one line."""
    return keys_dir / f"{slug_for(number)}.key.uri"


def csr_file(ca_dir: Path, number: int) -> Path:
    """A rollover waiting for the offline root: the new intermediate's request."""
    return ca_dir / f"{slug_for(number)}.csr"


def scan(ca_dir: Path, base_url: str) -> tuple[Intermediate, ...]:
    """Every generation whose certificate is in `ca_dir`, oldest first."""
    found = []
    for path in ca_dir.glob("intermediate*.pem"):
        match = _FILE.match(path.name)
        if match is None or match.group(1) == "1":
            continue
        number = int(match.group(1)) if match.group(1) else 1
        found.append(Intermediate(number, x509.load_pem_x509_certificate(path.read_bytes()), base_url))
    return tuple(sorted(found, key=lambda i: i.number))


def common_name(first: str, number: int) -> str:
    """The first generation keeps the configured name; later ones add " G2", " G3", ... so
    certificates, CRLs and the store tell the issuers apart by name, as public CAs name theirs."""
    return first if number == 1 else f"{first[:60]} G{number}"
