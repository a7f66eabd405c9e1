"""How a person reads a value, the same on every page and in every command's output: fingerprints
as uppercase octets with colons (as browsers and `openssl x509 -fingerprint` show them), moments
as "2027-03-06 04:02:34 UTC". JSON and machine output keep their own forms (hex, RFC 3339)."""

from __future__ import annotations

import datetime as dt


def count_text(n: int, one: str, many: str | None = None) -> str:
    """"1 entry", "3 entries": a count with its noun."""
    return f"{n} {one if n == 1 else many or one + 's'}"


def fingerprint_text(hex_digest: str) -> str:
    """"5228b7b0..." -> "52:28:B7:B0:..."."""
    clean = hex_digest.replace(":", "").upper()
    return ":".join(clean[i:i + 2] for i in range(0, len(clean), 2))


def moment_text(moment: dt.datetime | str | None) -> str:
    """One human form for a moment: "2027-03-06 04:02:34 UTC" (a datetime, or the RFC 3339 / ISO
    text the store keeps); "" for none."""
    if moment is None or moment == "":
        return ""
    if isinstance(moment, str):
        try:
            moment = dt.datetime.fromisoformat(moment.replace("Z", "+00:00"))
        except ValueError:
            return moment
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def requester_text(label: str | None) -> str:
    """Who asked, in words: "user:alice" -> "alice", "token:deploy" -> "API token deploy",
    "cli:root" -> "the command line (root)", "acme:3f2a" -> "ACME account 3f2a"."""
    if not label:
        return "unknown"
    kind, _, name = label.partition(":")
    if not name:
        return label
    return {"user": name, "token": f"API token {name}", "cli": f"the command line ({name})",
            "acme": f"ACME account {name}", "scep": f"SCEP endpoint {name}"}.get(kind, label)


# The names SCEP clients' algorithms are recorded under (asn1crypto's), as people write them.
ALGORITHMS = {"des": "DES", "tripledes_3key": "3DES", "aes128_cbc": "AES-128", "aes192_cbc": "AES-192",
              "aes256_cbc": "AES-256", "sha1": "SHA-1", "sha256": "SHA-256", "sha384": "SHA-384", "sha512": "SHA-512"}


def algorithm_text(name: str | None) -> str:
    return ALGORITHMS.get(name or "", name or "")
