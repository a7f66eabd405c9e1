"""Certificate serial numbers: generation and the textual forms people use.

RFC 5280 4.1.2.2: positive, at most 20 octets; CA/B BR 7.1 asks for at least 64 bits from a
CSPRNG. We draw 159 bits and set bit 156, so every serial is exactly 40 hex digits with a
non-zero first digit: the lowercase hex of the integer, the DER octets in hex and openssl's
`-serial` output are then the same string, whichever a person copies.
"""

from __future__ import annotations

import secrets

from ..errors import InvalidSerialError

SERIAL_BITS = 159
_FLOOR_BIT = 1 << 156
_HEX = frozenset("0123456789abcdef")


def new_serial() -> int:
    return secrets.randbits(SERIAL_BITS) | _FLOOR_BIT


def serial_hex(serial: int) -> str:
    """The canonical form: lowercase hex, no separators, no leading zeros."""
    return format(serial, "x")


def serial_colon(serial: int) -> str:
    """The form certificate viewers show: uppercase octets separated by colons."""
    raw = format(serial, "X")
    if len(raw) % 2:
        raw = "0" + raw
    return ":".join(raw[i : i + 2] for i in range(0, len(raw), 2))


def _hex_digits(text: str) -> str:
    cleaned = text.strip().lower()
    if cleaned.startswith("0x"):
        cleaned = cleaned[2:]
    return cleaned.replace(":", "").replace(" ", "").replace("-", "")


def is_sha256_fingerprint(text: str) -> bool:
    """64 hex digits in any of the forms people copy (52:28:B7:..., 5228b7...): a SHA-256
    fingerprint, which no serial can be (RFC 5280: at most 20 octets, 40 digits)."""
    return _fingerprint_digits(_hex_digits(text))


def _fingerprint_digits(cleaned: str) -> bool:
    return len(cleaned) == 64 and set(cleaned) <= _HEX


def parse_serial(text: str) -> str:
    """Any form people paste (5f3a09c1, 5F:3A:09:C1, 0x5f3a, "5f 3a 09") -> the canonical form."""
    cleaned = _hex_digits(text)
    if not cleaned or len(cleaned) > 42 or not set(cleaned) <= _HEX:
        raise InvalidSerialError(text, fingerprint=_fingerprint_digits(cleaned))
    value = int(cleaned, 16)
    if value == 0:
        raise InvalidSerialError(text)
    return serial_hex(value)
