"""PEM armour (RFC 7468): base64 of the DER in lines of 64 between BEGIN and END lines."""

from __future__ import annotations

import base64


def pem_armor(der: bytes, label: str) -> str:
    """What cryptography's public_bytes(Encoding.PEM) writes, without parsing the DER first."""
    b64 = base64.b64encode(der).decode("ascii")
    lines = "\n".join(b64[i:i + 64] for i in range(0, len(b64), 64))
    return f"-----BEGIN {label}-----\n{lines}\n-----END {label}-----\n"


UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


def from_utf16(data: bytes) -> bytes:
    """PEM text saved as UTF-16 (Windows Notepad's "Unicode", PowerShell 5's `>`), as the ASCII it
    holds; other input unchanged. (A DER document never starts with a UTF-16 byte-order mark.)"""
    if data[:2] in UTF16_BOMS:
        return data.decode("utf-16", "replace").encode("ascii", "replace")
    return data
