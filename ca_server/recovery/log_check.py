"""`ca-server log verify` and `restore --replay-log` (issue 27).

verify reads the log file once: every entry's index and `prev` link, every certificate against
its fingerprint, the Merkle root at every checkpoint's size against the checkpoint's signed root
(so each checkpoint extends the one before), and, with the store at hand, that the store and the
log hold the same certificates and revocations. Problems are said with the entry and line where
they are; up to MAX_PROBLEMS are listed.

replay appends to a restored store the entries after its own log's end: the certificates issued
and the revocations made after the backup, and the entries themselves, so the store's log and
the file agree again."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..ca.authority import InstancePaths
from ..clock import from_text
from ..config import Config
from ..display import count_text
from ..errors import CAError
from ..store import CaStore
from .checkpoint import CheckpointError, open_note
from .issuance_log import (
    LogFile,
    checkpoints_path,
    entry_lines,
    log_path,
    payload_record,
    public_key_path,
    stored_form,
)
from .merkle import RunningRoot, completed, leaf_hash, range_hash

MAX_PROBLEMS = 20


class LogCheckError(CAError):
    code = "log_invalid"


@dataclass
class Report:
    entries: int = 0
    checkpoints: int = 0
    problems: list[str] = field(default_factory=list)
    roots: dict[int, bytes] = field(default_factory=dict)
    issued: dict[str, tuple[int, str]] = field(default_factory=dict)  # serial -> (index, SHA-256 of the DER)
    revoked: dict[str, int] = field(default_factory=dict)  # serial -> index
    from_store: int = 0  # newest entries read from the store (other nodes appended them since)
    last_index: int = -1  # the index the last entry says it has

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        elif len(self.problems) == MAX_PROBLEMS:
            self.problems.append("... and more; fix these first.")


def file_checkpoints(entries: Path) -> list[str]:
    path = checkpoints_path(entries)
    if not path.exists():
        return []
    notes = []
    for line in path.read_text().splitlines():
        try:
            notes.append(json.loads(line)["note"])
        except (ValueError, KeyError, TypeError):
            continue
    return notes


def read_log(path: Path, sizes: set[int] = frozenset(),
             more: Callable[[int], Iterator[bytes]] | None = None) -> Report:
    """The chain of the file at `path`, then of `more(lines read)` (the newest entries, from the
    store, that other nodes appended): indexes, links, fingerprints, and the roots at `sizes`."""
    report, running, prev = Report(), RunningRoot(), b""

    def lines() -> Iterator[bytes]:
        if path.exists():
            yield from LogFile(path).lines()
        if more is not None:
            count = running.size
            for line in more(count):
                report.from_store += 1
                yield line

    for number, line in enumerate(lines(), 1):
        try:
            entry = json.loads(line)
            index, kind, serial = entry["index"], entry["kind"], entry["serial"]
        except (ValueError, KeyError, TypeError):
            report.problem(f"Line {number} is not a log entry (not JSON with index, kind and serial): the file was "
                           "damaged there.")
            break
        expected = running.size
        report.last_index = index if isinstance(index, int) else report.last_index
        if index != expected:
            report.problem(f"Line {number} holds entry {index} where entry {expected} belongs: entries were removed, "
                           "added or reordered there.")
        elif entry.get("prev") != prev.hex():
            report.problem(f"Entry {index} (line {number}) does not link to entry {index - 1}: entry {index - 1} was "
                           "changed, or entries around it were removed or reordered.")
        prev = leaf_hash(line)
        running.append(prev)
        if running.size in sizes:
            report.roots[running.size] = running.root()
        if kind in ("issue", "import"):
            try:
                digest = hashlib.sha256(base64.b64decode(entry["der"], validate=True)).hexdigest()
            except (KeyError, ValueError):
                digest = ""
            if digest != entry.get("fingerprint_sha256"):
                report.problem(f"Entry {index} (line {number}): the certificate {serial} does not match its "
                               "SHA-256 fingerprint: the entry was changed.")
            report.issued[serial] = (index, digest)
            if entry.get("revoked_at"):
                report.revoked[serial] = index
        elif kind == "revoke":
            report.revoked[serial] = index
    report.entries = running.size
    return report


def verify(path: Path, verifier: str, notes: list[str], store: CaStore | None = None) -> Report:
    """Everything `ca-server log verify` checks; the report's problems are empty when all is well."""
    store_size = store.log_size() if store is not None else 0
    # A CA that has issued nothing yet has no log file: an empty log (its checkpoints are checked).
    if not path.exists() and (store is None or store_size):
        raise LogCheckError(f"There is no issuance log at {path}"
                            + (f", but the store's log holds {count_text(store_size, 'entry', 'entries')}."
                               if store_size else "."))
    checkpoints = []
    for note in notes:
        try:
            checkpoints.append(open_note(note, verifier))
        except CheckpointError as exc:
            checkpoints.append(exc)
    sizes = {c.size for c in checkpoints if not isinstance(c, Exception)}
    # On PostgreSQL other nodes append too: what they added since this node last wrote is read
    # from the store. On one node (SQLite) the file must hold all (_compare_with_store says so).
    more = (lambda count: entry_lines(store, count)) if store is not None and store.kind == "postgresql" else None
    report = read_log(path, sizes | ({store_size} if store_size else set()), more)
    for checkpoint in checkpoints:
        if isinstance(checkpoint, Exception):
            report.problem(f"A checkpoint does not verify: {checkpoint.message}")
        elif checkpoint.size > report.entries:
            report.problem(f"The checkpoint of {checkpoint.size} entries is signed, but the file holds only "
                           f"{report.entries}: entries were cut from its end.")
        elif checkpoint.size and report.roots.get(checkpoint.size) != checkpoint.root:
            report.problem(f"The checkpoint of {checkpoint.size} entries signed another root than the file's first "
                           f"{checkpoint.size} entries give: an entry among them was changed.")
    report.checkpoints = len(checkpoints)
    if store is not None:
        _compare_with_store(report, store, store_size)
    return report


def _compare_with_store(report: Report, store: CaStore, store_size: int) -> None:
    if report.last_index + 1 < store_size:  # one node (SQLite): its file holds every committed entry
        report.problem(f"The file ends at entry {report.last_index} but the store's log holds {store_size} entries: "
                       f"entries {report.last_index + 1} and on were removed from the file's end (or are being "
                       "written right now: run again).")
    elif report.entries > store_size:
        report.problem(f"The file holds {report.entries} entries and the store's log {store_size}: the store was "
                       "restored without replaying the log (ca-server restore --replay-log).")
    elif store_size and range_hash(0, store_size, store.log_hash) != report.roots.get(store_size):
        report.problem(f"The store's log and the file differ within their first {store_size} entries.")
    seen = set()
    for serial, fingerprint, revoked_at in store.certificate_states():
        seen.add(serial)
        logged = report.issued.get(serial)
        if logged is None:
            report.problem(f"Certificate {serial} is in the store but not in the log.")
        elif logged[1] != fingerprint:
            report.problem(f"Certificate {serial} in the store differs from the one entry {logged[0]} holds.")
        if revoked_at and serial not in report.revoked:
            report.problem(f"Certificate {serial} is revoked in the store but the log has no revocation for it.")
        elif not revoked_at and serial in report.revoked:
            report.problem(f"Certificate {serial} is revoked in the log (entry {report.revoked[serial]}) but not in "
                           "the store: replay the log (ca-server restore --replay-log).")
    for serial, (index, _) in report.issued.items():
        if serial not in seen:
            report.problem(f"Certificate {serial} is in the log (entry {index}) but not in the store: replay the log "
                           "(ca-server restore --replay-log).")


# -- replay ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Replayed:
    entries: int
    issued: int
    revoked: int


def replay(store: CaStore, path: Path, now: dt.datetime) -> Replayed:
    """Append the file's entries after the store's log end to the store (certificates,
    revocations, the entries and their hashes). Refuses a file that does not continue the store's
    log, or whose chain is broken."""
    report = read_log(path)
    if report.problems:
        raise LogCheckError(f"The log at {path} is damaged, so it is not replayed: {report.problems[0]}")
    have = store.log_size()
    if report.entries < have:
        raise LogCheckError(f"The log at {path} holds {report.entries} entries, fewer than the {have} the backup's "
                            "store holds: it is not the log of this CA, or an older copy of it.")
    lines = LogFile(path).lines()
    if have:
        for _ in range(have - 1):
            next(lines)
        if leaf_hash(next(lines)) != store.log_hash(0, have - 1):
            raise LogCheckError(f"Entry {have - 1} of the log at {path} differs from the backup's: it is not the log "
                                "of this CA, or it was changed.")
    made: dict[tuple[int, int], bytes] = {}
    rows, records, revocations = [], [], []
    for index, line in enumerate(lines, have):
        entry = json.loads(line)
        made.update(((lv, ix), h) for lv, ix, h in completed(
            index, leaf_hash(line), lambda lv, ix: made.get((lv, ix)) or store.log_hash(lv, ix)))
        rows.append((index, entry["kind"], entry["serial"], stored_form(entry) if "der" in entry else line.decode()))
        if entry["kind"] in ("issue", "import"):
            records.append(payload_record(entry))
        elif entry["kind"] == "revoke":
            revocations.append(entry)
    known = {r.serial for r in records if store.get_certificate(r.serial) is not None}
    fresh = [r for r in records if r.serial not in known]
    audit = [{"at": now, "action": "replay", "actor": "cli:restore", "serial": r.serial, "client": None,
              "detail": {"from": str(path)}} for r in fresh]
    store.import_certificates(fresh, audits=audit, logged=True)
    revoked = 0
    for entry in revocations:
        revoked += store.revoke_certificate(entry["serial"], from_text(entry["revoked_at"]), entry["reason"], audit={
            "at": now, "action": "replay_revoke", "actor": "cli:restore", "serial": entry["serial"], "client": None,
            "detail": {"reason": entry["reason"], "from": str(path)}})
    with store.write() as db:
        store.log_insert(db, rows, [(lv, ix, h) for (lv, ix), h in made.items()])
    return Replayed(len(rows), len(fresh), revoked)


def replay_into(paths: InstancePaths, config: Config, store: CaStore, path: Path, now: dt.datetime) -> Replayed:
    """`restore --replay-log`: replay into the restored store, then give the restored instance
    the log (a copy of the file at its default place; an explicit [log] path is left as it is)
    and the checkpoints signed after the backup."""
    done = replay(store, path, now)
    target = log_path(config, paths)
    if not config.log.path and target.resolve() != path.resolve():
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        shutil.copyfile(path, target)
        os.chmod(target, 0o600)
        if checkpoints_path(path).exists():
            shutil.copyfile(checkpoints_path(path), checkpoints_path(target))
    verifier = public_key_path(paths).read_text().strip() if public_key_path(paths).exists() else ""
    size = store.log_size()
    for note in file_checkpoints(path) if verifier else []:
        try:
            checkpoint = open_note(note, verifier)
        except CheckpointError:
            continue
        if checkpoint.size <= size and range_hash(0, checkpoint.size, store.log_hash) == checkpoint.root:
            store.insert_log_checkpoint(checkpoint.size, note, now)
    return done
