"""What the log serves read-only (web/transparency.py): an entry, the inclusion proof of a
certificate's entry in a checkpoint's tree, the consistency proof between two tree sizes. Hashes
are base64, as in checkpoints; any RFC 9162 verifier (Go's sumdb/tlog among them) checks them."""

from __future__ import annotations

import base64
import datetime as dt

from ..errors import BadRequestError, NotFoundError
from ..store import CaStore
from .checkpoint import parse_body
from .issuance_log import IssuanceLog, entry_lines
from .merkle import consistency_proof, inclusion_proof, leaf_hash


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def entry_at(store: CaStore, index: int) -> dict:
    for line in entry_lines(store, index, index + 1):
        return {"index": index, "entry": line.decode(), "leaf_hash": _b64(leaf_hash(line))}
    raise NotFoundError(f"The log has no entry {index}; it holds {store.log_size()}.")


def _tree_size(store: CaStore, asked: int | None, checkpoint_size: int) -> int:
    if asked is None:
        return checkpoint_size
    if not 0 < asked <= store.log_size():
        raise BadRequestError(f"tree_size must be from 1 to {store.log_size()}, the entries the log holds.",
                              code="tree_size_invalid")
    return asked


def inclusion(store: CaStore, log: IssuanceLog, serial: str, now: dt.datetime, *, kind: str = "issue",
              tree_size: int | None = None) -> dict:
    """The proof that the `kind` entry ("issue", or "revoke") of `serial` is in the tree of
    `tree_size` entries (default: the newest checkpoint's, returned with it)."""
    positions = store.log_positions(serial)
    index = positions.get(kind, positions.get("import") if kind == "issue" else None)
    if index is None:
        raise NotFoundError(f"The log has no {kind} entry for serial {serial}.")
    note = log.checkpoint(store, now)
    size = _tree_size(store, tree_size, parse_body(note.partition("\n\n")[0] + "\n").size)
    if index >= size:
        raise BadRequestError(f"Entry {index} is not in a tree of {size} entries; ask for a larger tree_size.",
                              code="tree_size_invalid")
    body = {**entry_at(store, index), "serial": serial, "tree_size": size,
            "proof": [_b64(h) for h in inclusion_proof(index, size, store.log_hash)]}
    if tree_size is None:
        body["checkpoint"] = note
    return body


def consistency(store: CaStore, first: int, second: int) -> dict:
    size = store.log_size()
    if not 0 < first <= second <= size:
        raise BadRequestError(f"Ask for 0 < first <= second <= {size} (the entries the log holds).",
                              code="tree_size_invalid")
    return {"first": first, "second": second,
            "proof": [_b64(h) for h in consistency_proof(first, second, store.log_hash)]}
