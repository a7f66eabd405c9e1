"""Certificates: insert once, look up by serial, fingerprint, key or name; list and search."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
from dataclasses import dataclass

from ..clock import from_text, to_text
from ..models import CertificateRecord, names_key

_COLUMNS = (
    "rowid, serial, issued_at, not_before, not_after, subject, issuer, common_name, sans, profile, "
    "key_label, fingerprint_sha256, fingerprint_sha1, spki_sha256, der, notify, requester, "
    "revoked_at, revocation_reason"
)


# Above this many matches, a search scans newest-first instead of collecting every match:
# first SEARCH_SCAN_ROWS of the newest rows with a text match, then the search keys.
SEARCH_SET_CAP = 2000
SEARCH_SCAN_ROWS = 20_000
SEARCH_KEY_WINDOW = 4096  # search-key rows read below the newest match at first, then 4x more
SEARCH_KEY_ROWS_MAX = 200_000  # above this many matching key rows, the text scan goes on instead


class SerialTakenError(Exception):
    """The serial is already in the store (a 1-in-2^156 event; issuance retries)."""


@dataclass(frozen=True)
class CertificateFilter:
    status: str | None = None  # "valid" | "revoked" | "expired"
    expiring_within_days: int | None = None
    q: str | None = None
    requester: str | None = None  # only this requester's certificates (non-admins)


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


def _search_rows(r: CertificateRecord) -> list[tuple[str, str]]:
    return [(key, r.serial) for key in search_keys(r.sans, r.common_name)]


class _Pending:
    """One certificate waiting to be written; `lead` hands the writing over to its thread."""

    __slots__ = ("record", "audit", "done", "error", "lead")

    def __init__(self, record: CertificateRecord, audit: dict | None) -> None:
        self.record = record
        self.audit = audit
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
    def insert_certificate(self, record: CertificateRecord, audit: dict | None = None) -> None:
        """Store a new certificate and its audit row; returns once they are committed."""
        group: GroupCommit = self.per_process("_group_commit", GroupCommit)
        item = _Pending(record, audit)
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
            with self.writers_queue(), self.write() as db:
                for item in batch:
                    self._insert_one(db, item)
            return
        except sqlite3.IntegrityError as exc:
            if len(batch) > 1:
                for item in batch:
                    try:
                        with self.write() as db:
                            self._insert_one(db, item)
                    except BaseException as one:  # noqa: BLE001 - handed to the waiting thread
                        item.error = _taken(one, item.record)
                return
            batch[0].error = _taken(exc, batch[0].record)
        except BaseException as exc:  # noqa: BLE001 - every waiting thread gets the failure
            for item in batch:
                item.error = exc

    def _insert_one(self, db, item: _Pending) -> None:
        db.conn.execute(_INSERT, _row(item.record))
        db.conn.executemany(_INSERT_SEARCH, _search_rows(item.record))
        if item.audit is not None:
            self._append_audit(db, **item.audit)

    def import_certificates(self, records: list[CertificateRecord]) -> None:
        """Store many certificates in one transaction (imports, benchmark fixtures): no audit rows."""
        with self.write() as db:
            db.conn.executemany(_INSERT, [_row(r) for r in records])
            db.conn.executemany(_INSERT_SEARCH, [row for r in records for row in _search_rows(r)])

    def get_certificate(self, serial: str, *, with_renewal: bool = False) -> CertificateRecord | None:
        extra = ""
        if with_renewal:
            extra = (
                ", (SELECT n.serial FROM certificates n WHERE n.names_key = c.names_key"
                " AND n.rowid > c.rowid AND n.revoked_at IS NULL ORDER BY n.rowid DESC LIMIT 1)"
                " AS superseded_by"
            )
        rows = list(
            self.db.query(f"SELECT {_prefixed()}{extra} FROM certificates c WHERE c.serial = ?", [serial])
        )
        return row_to_record(rows[0]) if rows else None

    def key_is_compromised(self, spki_sha256: str) -> bool:
        # On every issuance: the plain connection skips sqlite-utils' per-query savepoint.
        return self.db.conn.execute(
            "SELECT 1 FROM certificates WHERE spki_sha256 = ? AND revocation_reason = 'keyCompromise' LIMIT 1",
            [spki_sha256],
        ).fetchone() is not None

    def list_certificates(
        self, flt: CertificateFilter, now: dt.datetime, *, limit: int, before_rowid: int | None = None
    ) -> tuple[list[CertificateRecord], int | None]:
        """Newest first. Returns the page and the rowid to continue before (None at the end)."""
        if flt.q:
            by_serial, by_name = self._search_matches(flt.q)
            if by_serial is not None and by_name is not None:
                rows = self._select(flt, now, limit + 1, before=before_rowid, serials=sorted(by_serial | by_name))
            else:
                rows = self._broad_search(flt, now, limit + 1, before_rowid, by_serial)
        else:
            rows = self._select(flt, now, limit + 1, before=before_rowid)
        more = len(rows) > limit
        rows = rows[:limit]
        return rows, (rows[-1].extra["rowid"] if more and rows else None)

    def _select(self, flt: CertificateFilter, now: dt.datetime, count: int, *, before: int | None = None,
                floor: int | None = None, serials: list[str] | None = None) -> list[CertificateRecord]:
        """The newest `count` certificates that pass the filter, below `before` and at or above
        `floor` (rowids); with `serials`, only those, else a search (flt.q) is a text match."""
        where, params = _where(flt, now, serials)
        if before is not None:
            where.append("c.rowid < ?")
            params.append(before)
        if floor is not None:
            where.append("c.rowid >= ?")
            params.append(floor)
        sql = f"SELECT {_prefixed()} FROM certificates c"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY c.rowid DESC LIMIT ?"
        params.append(count)
        return [row_to_record(r) for r in self.db.query(sql, params)]

    def _search_matches(self, q: str) -> tuple[set[str] | None, set[str] | None]:
        """The serials a search matches by serial prefix and by name label (index range scans),
        each None when there are more than SEARCH_SET_CAP."""
        q = q.strip().lower()
        serial_q = q.replace(":", "")
        cap = SEARCH_SET_CAP + 1
        conn = self.db.conn
        found = []
        for sql, args in (
            ("SELECT serial FROM certificates WHERE serial >= ? AND serial < ? LIMIT ?",
             (serial_q, serial_q + "\U0010ffff", cap)),
            ("SELECT DISTINCT serial FROM certificate_search WHERE key >= ? AND key < ? LIMIT ?",
             (q, q + "\U0010ffff", cap)),
        ):
            matches = {row[0] for row in conn.execute(sql, args)}
            found.append(matches if len(matches) <= SEARCH_SET_CAP else None)
        return found[0], found[1]

    def _broad_search(self, flt: CertificateFilter, now: dt.datetime, count: int, before: int | None,
                      by_serial: set[str] | None) -> list[CertificateRecord]:
        """A search with many matches. The newest SEARCH_SCAN_ROWS certificates are scanned with a
        text match ("example.test" fills a page there). Below them, name matches are read from the
        search keys newest first (key rows are stored in issue order) in growing windows: a prefix
        whose many matches are all old ("host1" in a store of host1..host1000000) costs a few
        index-only range scans instead of a scan of the whole table. Past SEARCH_KEY_ROWS_MAX
        matching key rows each window scan would cost more than the text scan, which then goes on."""
        conn = self.db.conn
        top = before
        if top is None:
            top = conn.execute("SELECT coalesce(max(rowid), 0) + 1 FROM certificates").fetchone()[0]
        floor = max(top - SEARCH_SCAN_ROWS, 1)
        rows = self._select(flt, now, count, before=top, floor=floor)
        if len(rows) >= count or floor == 1:
            return rows
        q = flt.q.strip().lower()
        keys = "key >= ? AND key < ?"
        key_args = [q, q + "\U0010ffff"]
        matching, newest = conn.execute(
            f"SELECT count(*), max(rowid) FROM (SELECT rowid FROM certificate_search WHERE {keys} LIMIT ?)",
            [*key_args, SEARCH_KEY_ROWS_MAX + 1]).fetchone()
        if by_serial is None or matching > SEARCH_KEY_ROWS_MAX:
            # Thousands of serials start with q (one or two hex digits), or a large share of the
            # store matches by name: the text scan goes on below the newest rows.
            return rows + self._select(flt, now, count - len(rows), before=floor)
        older = self._select(flt, now, count, before=floor, serials=sorted(by_serial)) if by_serial else []
        seen = {r.serial for r in rows}  # a certificate's key rows may straddle two windows
        window = SEARCH_KEY_WINDOW
        while newest is not None and newest >= 1 and len(rows) < count:
            # Index-only: every matching key row in the window (key range, then rowid); serials are
            # read for those rows only.
            low = max(newest - window + 1, 1)
            serials = {row[0] for row in conn.execute(
                f"SELECT serial FROM certificate_search WHERE {keys} AND rowid >= ? AND rowid <= ?",
                [*key_args, low, newest])} - seen
            seen |= serials
            if serials:
                rows += self._select(flt, now, count - len(rows), before=floor, serials=sorted(serials))
            newest, window = low - 1, window * 4
        rows = sorted({r.serial: r for r in rows + older}.values(), key=lambda r: -r.extra["rowid"])
        return rows[:count]

    def count_certificates(self, flt: CertificateFilter, now: dt.datetime) -> int:
        where, params = _where(flt, now)
        sql = "SELECT count(*) AS n FROM certificates c"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return next(self.db.query(sql, params))["n"]


def _taken(exc: BaseException, record: CertificateRecord) -> BaseException:
    if isinstance(exc, sqlite3.IntegrityError) and "certificates.serial" in str(exc):
        return SerialTakenError(record.serial)
    return exc


def _prefixed() -> str:
    return ", ".join("c." + c.strip() for c in _COLUMNS.split(","))


def _where(flt: CertificateFilter, now: dt.datetime, q_serials: list[str] | None = None) -> tuple[list[str], list]:
    where: list[str] = []
    params: list = []
    now_text = to_text(now)
    if flt.status == "valid":
        where.append("c.revoked_at IS NULL AND c.not_after > ?")
        params.append(now_text)
    elif flt.status == "revoked":
        where.append("c.revoked_at IS NOT NULL")
    elif flt.status == "expired":
        where.append("c.revoked_at IS NULL AND c.not_after <= ?")
        params.append(now_text)
    if flt.expiring_within_days is not None:
        where.append("c.revoked_at IS NULL AND c.not_after > ? AND c.not_after <= ?")
        params += [now_text, to_text(now + dt.timedelta(days=flt.expiring_within_days))]
    if flt.requester is not None:
        where.append("c.requester = ?")
        params.append(flt.requester)
    if flt.q:
        q = flt.q.strip().lower()
        if q_serials is not None:
            where.append("c.serial IN (SELECT value FROM json_each(?))")
            params.append(json.dumps(q_serials))
        else:
            # Many matches: a serial prefix, or a name (in the SANs JSON, "DNS:name", or the CN)
            # with a label that starts with q, as the search keys. LIKE is case-insensitive for
            # ASCII, as names are.
            pattern = q.replace("\\", "").replace("%", "").replace("_", "")
            where.append("(c.serial LIKE ? OR c.sans LIKE ? OR c.sans LIKE ? OR c.common_name LIKE ?"
                         " OR c.common_name LIKE ?)")
            params += [pattern.replace(":", "") + "%", f"%:{pattern}%", f"%.{pattern}%", f"{pattern}%", f"%.{pattern}%"]
    return where, params
