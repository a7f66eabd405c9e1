"""Migrations from m023 on, registered after schema.py's (which reached the module size limit):
the same rules, append new functions and never edit applied ones."""

from __future__ import annotations

import base64
import binascii

from sqlite_utils import Database

from .schema import migrations

__all__ = ["migrations"]


@migrations()
def m023_acme_order_certificate(db: Database) -> None:
    """An order found by its certificate (an ACME download, revocation, renewal info) through an
    index, not a scan of every ACME object: at 1,000 orders (5,000 objects) 2 us a look-up against
    the scan's 758 (issue 29)."""
    db.execute("CREATE INDEX acme_objects_certificate ON acme_objects(json_extract(data, '$.certificate'))"
               " WHERE kind = 'order'")


@migrations()
def m024_acme_nonce_keys(db: Database) -> None:
    """A used nonce is kept as its first 16 bytes (when it was made, then chance: its MAC adds
    nothing to look up) in a table that is its own key, in the order nonces are made: a use writes
    one B-tree page, the rightmost, where the text key, its index and the expiry index wrote
    three (15 KB of WAL per use against 4.7 KB, 26 us of CPU against 12); records past their
    lifetime go by a range of that key (issue 29). The nonces used already come along."""
    used = [row[0] for row in db.execute("SELECT nonce FROM acme_nonces").fetchall()]
    db.execute("DROP TABLE acme_nonces")
    db.execute("CREATE TABLE acme_nonces (nonce BLOB PRIMARY KEY) WITHOUT ROWID")
    for text in used:
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            continue
        if len(text) == 38 and len(raw) == 28:  # else not a nonce this server made: none could use it again
            db.execute("INSERT INTO acme_nonces (nonce) VALUES (?) ON CONFLICT (nonce) DO NOTHING", [raw[:16]])
