"""The Merkle tree of the issuance log, as RFC 9162 (and RFC 6962, Go's sumdb/tlog, Sunlight)
defines it: a leaf's hash is SHA-256(0x00 || entry), a node's SHA-256(0x01 || left || right), and
a tree of n leaves splits at the largest power of two below n. Proofs are computed from the
hashes of complete, aligned subtrees (`Hashes.get(level, index)`: the subtree of 2**level leaves
starting at leaf index * 2**level), which the store keeps for every subtree as it completes, so a
proof in a log of a million entries reads about 20 of them."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

HashReader = Callable[[int, int], bytes]  # (level, index) -> the complete subtree's hash


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two below n (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def completed(index: int, leaf: bytes, get: HashReader) -> list[tuple[int, int, bytes]]:
    """The (level, index, hash) of every subtree that leaf `index` completes, the leaf first: what
    the store keeps when it appends the leaf. `get` reads the left siblings (already stored)."""
    out = [(0, index, leaf)]
    level, node = 0, leaf
    while index & 1:
        node = node_hash(get(level, index - 1), node)
        level, index = level + 1, index >> 1
        out.append((level, index, node))
    return out


def range_hash(lo: int, hi: int, get: HashReader) -> bytes:
    """The hash of the tree over leaves [lo, hi), as the RFC's recursion meets it (lo aligned)."""
    n = hi - lo
    if n & (n - 1) == 0 and lo % n == 0:
        level = n.bit_length() - 1
        return get(level, lo >> level)
    k = _split(n)
    return node_hash(range_hash(lo, lo + k, get), range_hash(lo + k, hi, get))


def inclusion_proof(index: int, size: int, get: HashReader) -> list[bytes]:
    """RFC 9162 2.1.3.1: the audit path of leaf `index` in the tree of `size` leaves."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of {size}")
    proof: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            proof.append(range_hash(lo + k, hi, get))
            hi = lo + k
        else:
            proof.append(range_hash(lo, lo + k, get))
            lo = lo + k
    return proof[::-1]


def consistency_proof(first: int, second: int, get: HashReader) -> list[bytes]:
    """RFC 9162 2.1.4.1: that the tree of `second` leaves extends the tree of `first`."""
    if not 0 < first <= second:
        raise ValueError(f"no consistency proof from {first} to {second}")
    proof: list[bytes] = []
    lo, hi, m, whole = 0, second, first, True
    while m != hi - lo:
        k = _split(hi - lo)
        if m <= k:
            proof.append(range_hash(lo + k, hi, get))
            hi = lo + k
        else:
            proof.append(range_hash(lo, lo + k, get))
            lo, m, whole = lo + k, m - k, False
    if not whole:
        proof.append(range_hash(lo, hi, get))
    return proof[::-1]


def verify_inclusion(index: int, size: int, leaf: bytes, proof: list[bytes], root: bytes) -> bool:
    """RFC 9162 2.1.3.2."""
    if not 0 <= index < size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    return sn == 0 and r == root


def verify_consistency(first: int, second: int, first_root: bytes, second_root: bytes,
                       proof: list[bytes]) -> bool:
    """RFC 9162 2.1.4.2."""
    if first == second:
        return not proof and first_root == second_root
    if not 0 < first < second or not proof:
        return False
    path = [first_root, *proof] if first & (first - 1) == 0 else list(proof)
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    return fr == first_root and sr == second_root and sn == 0


class RunningRoot:
    """The root after each appended leaf, in O(log n) memory: the complete subtrees so far, like
    the digits of a binary counter (how `log verify` reads a million entries in one pass)."""

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[bytes] = []  # hashes of complete subtrees, largest first

    def append(self, leaf: bytes) -> None:
        node, n = leaf, self.size
        while n & 1:
            node = node_hash(self._stack.pop(), node)
            n >>= 1
        self._stack.append(node)
        self.size += 1

    def root(self) -> bytes:
        if not self._stack:
            return hashlib.sha256(b"").digest()  # RFC 9162: the empty tree
        node = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            node = node_hash(left, node)
        return node
