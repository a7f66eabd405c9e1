"""Certificates: insert once (with group commit), look up by serial or key. Lists and searches:
listing.py."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterable

from ..clock import from_text, to_text
from ..models import CertificateRecord, names_key
from .errors import INTEGRITY_ERRORS, violates

_COLUMNS = (
    "rowid, serial, issued_at, not_before, not_after, subject, issuer, common_name, sans, profile, "
    "key_label, fingerprint_sha256, fingerprint_sha1, spki_sha256, der, notify, requester, "
    "revoked_at, revocation_reason"
)


class SerialTakenError(Exception):
    """The serial is already in the store (a 1-in-2^156 event; issuance retries)."""


@dataclasses.dataclass
class Settlement:
    """What a new certificate settles, written in the certificate's own transaction so that no
    stop between two commits leaves one without the other: an approved request given its serial
    (kind "request"), or an ACME order in processing made valid with it (kind "acme_order", `data`
    the order's data; its "certificate" is set to the serial). `applied`, set once the
    certificate is committed, says whether the request or order was still there to settle (an
    order that expired meanwhile is not)."""
    kind: str
    id: str
    data: dict | None = None
    applied: bool = False


def row_to_record(row: dict) -> CertificateRecord:
    return CertificateRecord(
        serial=row["serial"],
        issued_at=from_text(row["issued_at"]),
        not_before=from_text(row["not_before"]),
        not_after=from_text(row["not_after"]),
        subject=row["subject"],
        issuer=row["issuer"],
        common_name=row["common_name"],
        sans=tuple(json.loads(row["sans"])),
        profile=row["profile"],
        key_label=row["key_label"],
        fingerprint_sha256=row["fingerprint_sha256"],
        fingerprint_sha1=row["fingerprint_sha1"],
        spki_sha256=row["spki_sha256"],
        der=row["der"],
        notify=tuple(json.loads(row["notify"])),
        requester=row["requester"],
        revoked_at=from_text(row["revoked_at"]) if row["revoked_at"] else None,
        revocation_reason=row["revocation_reason"],
        superseded_by=row.get("superseded_by"),
        extra={"rowid": row["rowid"]},
    )


def search_keys(sans, common_name: str | None) -> set[str]:
    """What a search can start with: every DNS name (and the CN) lowercased, from each of its
    labels on, and IP addresses whole. "cucm1.example.test" gives "cucm1.example.test",
    "example.test" and "test", so "cucm", "example" and "example.test" all find it with one
    index range scan."""
    keys: set[str] = set()
    values = [(kind, value.lower()) for kind, value in (entry.split(":", 1) for entry in sans)]
    if common_name:
        values.append(("CN", common_name.lower()))
    for kind, value in values:
        if kind == "IP":
            keys.add(value)
        else:
            labels = value.split(".")
            keys.update(".".join(labels[i:]) for i in range(len(labels)))
    return keys


_INSERT = (
    "INSERT INTO certificates (serial, issued_at, not_before, not_after, subject, issuer, common_name, sans,"
    " names_key, profile, key_label, fingerprint_sha256, fingerprint_sha1, spki_sha256, der, notify, requester,"
    " revoked_at, revocation_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_INSERT_SEARCH = "INSERT INTO certificate_search (key, serial) VALUES (?, ?)"


def _row(r: CertificateRecord) -> tuple:
    return (r.serial, to_text(r.issued_at), to_text(r.not_before), to_text(r.not_after), r.subject, r.issuer,
            r.common_name, json.dumps(list(r.sans)), names_key(r.sans), r.profile, r.key_label,
            r.fingerprint_sha256, r.fingerprint_sha1, r.spki_sha256, r.der, json.dumps(list(r.notify)), r.requester,
            to_text(r.revoked_at) if r.revoked_at else None, r.revocation_reason)


def _committed(batch: list[_Pending], settled: list[bool]) -> None:
    """After the commit: what each certificate settled (a rolled-back transaction settled nothing)."""
    for item, done in zip(batch, settled, strict=True):
        if item.settles is not None:
            item.settles.applied = done


def _search_rows(r: CertificateRecord) -> list[tuple[str, str]]:
    return [(key, r.serial) for key in search_keys(r.sans, r.common_name)]


class _Pending:
    """One certificate waiting to be written; `lead` hands the writing over to its thread."""

    __slots__ = ("record", "audit", "settles", "done", "error", "lead")

    def __init__(self, record: CertificateRecord, audit: dict | None, settles: Settlement | None) -> None:
        self.record = record
        self.audit = audit
        self.settles = settles
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.lead = False


class GroupCommit:
    """Certificates issued at the same moment by threads of one process, written in one
    transaction (group commit). The first thread to arrive writes its row and every row that
    arrives meanwhile, then hands the writing to the first thread still waiting; the others
    wait until their row is committed. A lone caller writes at once, with no hand-off."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.queue: list[_Pending] = []
        self.writing = False


class CertificateQueries:
    def insert_certificate(self, record: CertificateRecord, audit: dict | None = None,
                           settles: Settlement | None = None) -> None:
        """Store a new certificate, its audit row and what it `settles`; returns once they are
        committed."""
        group: GroupCommit = self.per_process("_group_commit", GroupCommit)
        item = _Pending(record, audit, settles)
        with group.lock:
            group.queue.append(item)
            lead = not group.writing
            group.writing = True
        if not lead:
            item.done.wait()
        if lead or item.lead:
            with group.lock:
                batch, group.queue = group.queue, []
            try:
                self._write_certificates(batch)
            finally:
                with group.lock:
                    if group.queue:
                        group.queue[0].lead = True
                        group.queue[0].done.set()
                    else:
                        group.writing = False
                for other in batch:
                    other.done.set()
        if item.error is not None:
            raise item.error

    def _write_certificates(self, batch: list[_Pending]) -> None:
        """One transaction for the batch; on a taken serial (a 1-in-2^156 event) each again alone,
        so only the certificate whose serial is taken fails."""
        try:
            # The issuance log reads its head inside the transaction, and a settlement its row
            # count: no pipelining then.
            reads = self.issuance_log is not None or any(item.settles is not None for item in batch)
            with self.writers_queue(), (self.write() if reads else self.write_many()) as db:
                settled = [self._insert_one(db, item) for item in batch]
                through = self._log_events(db, [("issue", item.record) for item in batch])
            _committed(batch, settled)
            self._log_sync(through)
            return
        except INTEGRITY_ERRORS as exc:
            if len(batch) > 1:
                for item in batch:
                    try:
                        with self.write() as db:
                            settled = [self._insert_one(db, item)]
                            through = self._log_events(db, [("issue", item.record)])
                        _committed([item], settled)
                        self._log_sync(through)
                    except BaseException as one:  # noqa: BLE001 - handed to the waiting thread
                        item.error = _taken(one, item.record)
                return
            batch[0].error = _taken(exc, batch[0].record)
        except BaseException as exc:  # noqa: BLE001 - every waiting thread gets the failure
            for item in batch:
                item.error = exc

    def _insert_one(self, db, item: _Pending) -> bool:
        """The certificate's rows and what it settles; whether that was still there to settle."""
        record, settles = item.record, item.settles
        db.conn.execute(_INSERT, _row(record))
        db.conn.executemany(_INSERT_SEARCH, _search_rows(record))
        if item.audit is not None:
            self._append_audit(db, **item.audit)
        if settles is None:
            return True
        if settles.kind == "request":
            return self.set_request_serial(settles.id, record.serial)
        if settles.kind == "acme_order":
            return self.move_acme_object(settles.id, ("processing",), "valid",
                                         {**(settles.data or {}), "certificate": record.serial}, record.issued_at)
        raise ValueError(f"nothing settles as {settles.kind!r}")

    def import_certificates(self, records: list[CertificateRecord], audits: Iterable[dict] = (), *,
                            logged: bool = False) -> None:
        """Store many certificates in one transaction (imports, benchmark fixtures, a replayed
        log), with the audit rows given (none for an import); in the issuance log unless `logged`
        (a replay: they are in it already)."""
        with self.write() as db:
            db.conn.executemany(_INSERT, [_row(r) for r in records])
            db.conn.executemany(_INSERT_SEARCH, [row for r in records for row in _search_rows(r)])
            for audit in audits:
                self._append_audit(db, **audit)
            through = None if logged else self._log_events(db, [("import", r) for r in records])
        self._log_sync(through)

    def get_certificate(self, serial: str, *, with_renewal: bool = False) -> CertificateRecord | None:
        extra = _RENEWAL if with_renewal else ""
        rows = list(
            self.db.query(f"SELECT {_prefixed()}{extra} FROM certificates c WHERE c.serial = ?", [serial])
        )
        return row_to_record(rows[0]) if rows else None

    def with_renewals(self, records: list[CertificateRecord]) -> list[CertificateRecord]:
        """The records, each with superseded_by filled in where a newer certificate renewed it
        (what lists show as "renewed"); one query for the lot."""
        if not records:
            return records
        marks = ", ".join("?" for _ in records)
        renewed = {row["serial"]: row["superseded_by"] for row in self.db.query(
            f"SELECT c.serial AS serial{_RENEWAL} FROM certificates c WHERE c.serial IN ({marks})",
            [r.serial for r in records]) if row["superseded_by"]}
        return [dataclasses.replace(r, superseded_by=renewed[r.serial]) if r.serial in renewed else r for r in records]

    def key_is_compromised(self, spki_sha256: str) -> bool:
        # On every issuance: the plain connection skips sqlite-utils' per-query savepoint.
        return self.db.conn.execute(
            "SELECT 1 FROM certificates WHERE spki_sha256 = ? AND revocation_reason = 'keyCompromise' LIMIT 1",
            [spki_sha256],
        ).fetchone() is not None


# A certificate is renewed when a newer, unrevoked one carries the same names.
_RENEWAL = (", (SELECT n.serial FROM certificates n WHERE n.names_key = c.names_key"
            " AND n.rowid > c.rowid AND n.revoked_at IS NULL ORDER BY n.rowid DESC LIMIT 1) AS superseded_by")


def _taken(exc: BaseException, record: CertificateRecord) -> BaseException:
    if violates(exc, "certificates", "serial"):
        return SerialTakenError(record.serial)
    return exc


def _prefixed() -> str:
    return ", ".join("c." + c.strip() for c in _COLUMNS.split(","))
