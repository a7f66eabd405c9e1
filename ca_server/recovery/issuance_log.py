"""The append-only issuance log (issue 27): every issued (or imported) certificate and every
revocation becomes one entry, a line of canonical JSON, before the certificate is returned or
the revocation acknowledged.

- Entries are hash-linked (`prev`: the previous entry's leaf hash) and are the leaves of an RFC
  9162 Merkle tree (merkle.py); checkpoints of it are signed with a log key of its own
  (checkpoint.py) and served at /log/checkpoint.
- The store orders the entries (inside the transaction that stores the certificate, under a lock
  every node takes) and keeps them with the tree's hashes; each node also appends them, fsynced,
  to `[log] path` (meant for another disk than the store) before the transaction commits. A node
  first writes the entries other nodes appended since its last write, so every file is a
  complete prefix of the log.
- A file with entries the store lacks (the store came back from a backup without --replay-log)
  stops issuance with words, instead of forking the log."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    PrivateFormat,
    load_pem_private_key,
)

from ..ca.authority import InstancePaths
from ..ca.private_files import write_private_file
from ..clock import from_text, to_text
from ..config import Config
from ..errors import LogWriteError
from ..models import CertificateRecord
from ..store import CaStore
from .checkpoint import Checkpoint, sign, verifier_key
from .merkle import completed, leaf_hash, range_hash

EMPTY_ROOT = bytes.fromhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")  # SHA-256("")


_INDEX = re.compile(rb'"index":(\d+)')


def canonical(entry: dict) -> bytes:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


# The certificate row an issue (or import) entry carries, field by field: enough for a replay to
# rebuild the row as it was. Times as RFC 3339 text, tuples as lists, the DER as base64.
_RECORD_FIELDS = ("serial", "issued_at", "not_before", "not_after", "subject", "issuer", "common_name", "sans",
                  "profile", "key_label", "fingerprint_sha256", "fingerprint_sha1", "spki_sha256", "notify",
                  "requester", "revoked_at", "revocation_reason")
_TIMES = {"issued_at", "not_before", "not_after", "revoked_at"}
_TUPLES = {"sans", "notify"}


def record_payload(kind: str, record: CertificateRecord) -> dict:
    """What an issue (or import) entry holds: the certificate and every column of its row."""
    payload: dict = {"kind": kind, "der": base64.b64encode(record.der).decode()}
    for name in _RECORD_FIELDS:
        value = getattr(record, name)
        payload[name] = (to_text(value) if value else None) if name in _TIMES else \
            list(value) if name in _TUPLES else value
    return payload


def payload_record(entry: dict) -> CertificateRecord:
    """The certificate row an issue entry carries (for a replay)."""
    values = {name: entry.get(name) for name in _RECORD_FIELDS}
    for name in _TIMES:
        values[name] = from_text(values[name]) if values[name] else None
    for name in _TUPLES:
        values[name] = tuple(values[name])
    return CertificateRecord(der=base64.b64decode(entry["der"]), **values)


def stored_form(entry: dict) -> str:
    """What the store keeps of an entry: the entry without the certificate's DER (its row has
    it), so the log does not double the store."""
    return canonical({k: v for k, v in entry.items() if k != "der"}).decode()


def entry_lines(store: CaStore, start: int, stop: int | None = None) -> Iterator[bytes]:
    """The entries as the file holds them, rebuilt from the store (the DER put back; canonical
    JSON gives the same bytes, and the leaf hashes check that it did)."""
    for _, text, der in store.log_entries(start, stop):
        if der is None:
            yield text.encode()
        else:
            entry = json.loads(text)
            entry["der"] = base64.b64encode(der).decode()
            yield canonical(entry)


def event_payload(event: tuple) -> dict:
    kind = event[0]
    if kind == "revoke":
        _, serial, at, reason = event
        return {"kind": "revoke", "serial": serial, "revoked_at": to_text(at), "reason": reason}
    return record_payload(kind, event[1])


class LogFile:
    """The log's lines on disk: appended with O_APPEND and fsynced; a last line cut short by a
    crash (its transaction never committed) is dropped before the next append."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._known: tuple[int, int, int] | None = None  # (inode, bytes, next index) last seen
        self._lock_fd: tuple[int, int] | None = None  # (pid, fd) of the lock file
        self._threads = threading.Lock()

    def next_index(self) -> int:
        """The index after the file's last entry (under `locked`: a last line cut short by a
        crash, whose transaction never committed, is dropped first)."""
        return self._next_index(repair=True) if self.path.exists() else 0

    def _next_index(self, *, repair: bool) -> int:
        st = os.stat(self.path)
        if self._known and self._known[:2] == (st.st_ino, st.st_size):
            return self._known[2]
        with open(self.path, "rb+" if repair else "rb") as fh:
            tail, pos = b"", st.st_size
            while pos > 0 and tail.count(b"\n") < 2:
                step = min(8192, pos)
                pos -= step
                fh.seek(pos)
                tail = fh.read(step) + tail
            cut = tail.rfind(b"\n") + 1  # where the last complete line ends, in `tail`
            if repair and cut < len(tail):
                fh.truncate(pos + cut)
                os.fsync(fh.fileno())
                return self._next_index(repair=True)
        # "index" as a key: inside a JSON string a quote is escaped, so this finds only the key.
        found = _INDEX.search(tail[:cut].rstrip(b"\n").rsplit(b"\n", 1)[-1])
        following = int(found.group(1)) + 1 if found else 0
        if cut == len(tail):  # a whole file: what the next look may reuse
            self._known = (st.st_ino, st.st_size, following)
        return following

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """One writer at a time among this machine's processes (a lock file beside the log) and
        among this process's threads: flock on the process's one descriptor does not exclude its
        own threads, and two of them (a revocation beside an issuance) appended the same entries."""
        with self._threads:
            if self._lock_fd is None or self._lock_fd[0] != os.getpid():  # a forked worker opens its own
                self.make_folder()
                self._lock_fd = (os.getpid(), os.open(self.path.with_name(self.path.name + ".lock"),
                                                      os.O_RDWR | os.O_CREAT, 0o600))
            fd = self._lock_fd[1]
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)

    def make_folder(self) -> None:
        """The log's folder (mode 0700), if it is not there yet."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    def peek_next_index(self) -> int:
        """next_index without the lock: never changes the file (a line being written is skipped).
        Creates the file when it is missing, so an unusable path (a folder that cannot be made, a
        read-only disk) raises OSError here, before anything is committed."""
        if not self.path.exists():
            self.make_folder()
            os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))
            _sync_folder(self.path.parent)  # the new name itself must survive a power loss
        return self._next_index(repair=False)

    def append(self, lines: list[bytes], following: int | None) -> None:
        """Append `lines` (under `locked`), after which the file holds entries up to `following`
        (excluded; None: read from the last line)."""
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            data = b"".join(line + b"\n" for line in lines)
            written = 0
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fdatasync(fd)  # the data and the size that reads it back
            st = os.fstat(fd)
            if following is None and lines:
                found = _INDEX.search(lines[-1])
                following = int(found.group(1)) + 1 if found else None
            self._known = (st.st_ino, st.st_size, following) if following is not None else None
        finally:
            os.close(fd)
        if created:
            _sync_folder(self.path.parent)

    def lines(self) -> Iterator[bytes]:
        with open(self.path, "rb") as fh:
            for line in fh:
                yield line.rstrip(b"\n")


def _sync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def log_path(config: Config, paths: InstancePaths) -> Path:
    return Path(config.log.path).expanduser() if config.log.path else paths.root / "issuance-log" / "entries.jsonl"


def checkpoints_path(entries: Path) -> Path:
    return entries.with_name(entries.stem + ".checkpoints.jsonl")


def key_path(paths: InstancePaths) -> Path:
    return paths.keys / "log-key.pem"


def public_key_path(paths: InstancePaths) -> Path:
    """The verifier key (name+id+key): public, what `log verify` and clients check checkpoints with."""
    return paths.keys / "log-key.pub"


def origin_for(config: Config, paths: InstancePaths) -> str:
    """The log's name in its checkpoints: fixed by the key once made (keys/log-key.pub), else
    the server's host and "/issuance-log", as C2SP origins are written."""
    pub = public_key_path(paths)
    if pub.exists():
        return pub.read_text().strip().split("+", 1)[0]
    return f"{urlsplit(config.server.base_url).netloc or 'ca-server'}/issuance-log"


def open_log(config: Config, paths: InstancePaths, passphrase) -> IssuanceLog:
    return IssuanceLog(log_path(config, paths), paths, origin_for(config, paths), passphrase)


class IssuanceLog:
    """Attached to the store by open_services; `append` runs inside the store's transaction."""

    def __init__(self, path: Path, paths: InstancePaths, origin: str, passphrase) -> None:
        self.file = LogFile(path)
        self.paths = paths
        self.origin = origin
        self._passphrase = passphrase  # () -> bytes: the CA passphrase, asked only to sign
        self._key: Ed25519PrivateKey | None = None
        # The hashes the next append needs (the right edge of the tree) as this process last left
        # them: used while the store's log still ends with the same leaf.
        self._edge: tuple[int, dict[tuple[int, int], bytes]] = (-1, {})
        # The lines of entries appended but not yet in the file, by the log size after them.
        self._written: dict[int, tuple[int, list[bytes]]] = {}
        self._lock = threading.Lock()

    def append(self, store: CaStore, db, events: list[tuple]) -> None:
        size = store.log_size(db)
        made: dict[tuple[int, int], bytes] = {}
        edge_size, edge = self._edge
        # The last leaf's hash covers every entry before it (each links to the one before), so a
        # match means the cached edge is this log's, whatever rolled back or other processes did.
        if size and edge_size == size and edge.get((0, size - 1)) == store.log_hash(0, size - 1, db):
            made.update(edge)

        def get(level: int, index: int) -> bytes:
            return made.get((level, index)) or store.log_hash(level, index, db)

        prev = get(0, size - 1) if size else b""
        first, rows, lines, fresh = size, [], [], set()
        for event in events:
            payload = event_payload(event)
            entry = {"index": size, "prev": prev.hex(), **payload}
            line = canonical(entry)
            prev = leaf_hash(line)
            for lv, ix, h in completed(size, prev, get):
                made[(lv, ix)] = h
                fresh.add((lv, ix))
            rows.append((size, payload["kind"], payload["serial"], stored_form(entry) if "der" in entry
                         else line.decode()))
            lines.append(line)
            size += 1
        store.log_insert(db, rows, [(lv, ix, made[(lv, ix)]) for lv, ix in fresh])
        self._edge = (size, {key: made[key] for key in _edge(size) if key in made})
        try:
            ahead = self.file.peek_next_index() > first
        except OSError as exc:
            raise LogWriteError(f"The issuance log {self.file.path} cannot be written ({exc.strerror}); nothing is "
                                "issued or revoked until it can be.") from None
        if ahead:
            raise LogWriteError(
                f"The issuance log {self.file.path} holds more entries than the store's ({first}): the store was "
                "restored without replaying this log. Restore again with --replay-log, or move the file aside "
                "(the store's copy of the log is then written anew); nothing is issued until then.")
        with self._lock:
            self._written[size] = (first, lines)
        return size

    def sync(self, store: CaStore, through: int) -> None:
        """After the store committed entries up to `through`: write to the file, in the store's
        order, every committed entry it lacks (other processes' and nodes' too), and fsync. A
        process that finds its entries written already (by another that synced them) is done."""
        with self._lock:
            first, lines = self._written.pop(through, (None, []))
            for stale in [k for k in self._written if k < through]:  # rolled back
                del self._written[stale]
        try:
            with self.file.locked():
                have = self.file.next_index()
                if have >= through:
                    return
                if have == first:  # the usual case: the file ends where ours begin
                    self.file.append(lines, through)
                else:
                    self.file.append(list(entry_lines(store, have)), None)
        except OSError as exc:
            raise LogWriteError(f"The issuance log {self.file.path} cannot be written ({exc.strerror}); nothing is "
                                "issued or revoked until it can be.") from None

    # -- the log key and checkpoints ----------------------------------------------------------------
    def ensure_key(self) -> None:
        """Make the log key if the instance has none yet (at init, or the first start of an
        instance older than the log), so that backups and copies of the folder carry it."""
        path = key_path(self.paths)
        if path.exists():
            return
        key = Ed25519PrivateKey.generate()
        try:
            write_private_file(path, _pem(key, self._passphrase()))
        except FileExistsError:
            return  # another process made it first
        public_key_path(self.paths).write_text(verifier_key(self.origin, key.public_key()) + "\n")

    def key(self) -> Ed25519PrivateKey:
        if self._key is None:
            self.ensure_key()
            self._key = load_pem_private_key(key_path(self.paths).read_bytes(), self._passphrase())
        return self._key

    def verifier(self) -> str:
        path = public_key_path(self.paths)
        if not path.exists():
            self.key()
        return path.read_text().strip()

    def checkpoint(self, store: CaStore, now: dt.datetime) -> str:
        """The newest signed checkpoint, made now when entries were appended since the last one."""
        size = store.log_size()
        latest = store.latest_log_checkpoint()
        if latest is not None and latest["size"] >= size:
            return latest["note"]
        root = range_hash(0, size, store.log_hash) if size else EMPTY_ROOT
        note = sign(Checkpoint(self.origin, size, root), self.key())
        store.insert_log_checkpoint(size, note, now)
        # A new instance has no log folder until its first entry: its first checkpoint (the
        # scheduler's, a minute after `make run`, or GET /log/checkpoint) makes it.
        self.file.make_folder()
        with open(checkpoints_path(self.file.path), "a") as fh:
            fh.write(json.dumps({"size": size, "at": to_text(now), "note": note}) + "\n")
        return note


def _edge(size: int) -> list[tuple[int, int]]:
    """The (level, index) of the complete subtrees along the right edge of a tree of `size`
    leaves, and its last leaf: the left siblings and `prev` of the next entries."""
    keys, lo = [(0, size - 1)], 0
    for level in range(size.bit_length() - 1, -1, -1):
        if size >> level & 1:
            keys.append((level, lo >> level))
            lo += 1 << level
    return keys


def _pem(key: Ed25519PrivateKey, passphrase: bytes) -> bytes:
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, BestAvailableEncryption(passphrase))
