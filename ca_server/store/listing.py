"""Lists and searches of certificates: newest first, one page at a time, fast at a million rows.

A page is the newest certificates below a cursor (a rowid) that pass the filter. They are found in
one of three ways, whichever reads the fewest rows:
- the newest rows in rowid order, each tested: a filter most certificates pass ("valid", one
  domain) fills the page within a few hundred rows;
- the rowids an index gives for the filter (revoked, expired, expiring within N days, one
  requester's) when the newest SCAN_ROWS rows did not fill the page: only those rows are read. A
  filter that matches nothing in a million rows ("revoked" in a store that never revoked) costs a
  few index entries instead of a scan of the table;
- for a search, the serials its name or serial prefix matches (the search keys, in issue order).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from ..clock import to_text
from ..models import CertificateRecord
from .certificates import _prefixed, row_to_record
from .dialect import Dialect

# Above this many matches, a search stops collecting every match and reads newest first.
SEARCH_SET_CAP = 2000
SCAN_ROWS = 20_000  # newest rows read in rowid order before an index is asked
SEARCH_KEY_WINDOW = 4096  # search-key rows read below the newest match at first, then 4x more
SEARCH_KEY_ROWS_MAX = 200_000  # above this many matching key rows, the text scan goes on instead
CANDIDATES_MAX = 200_000  # above this many rowids from a filter's index, the scan goes on instead
PROBE_ROWS = 64  # candidate rows read at first, then 4x more each time
# Valid certificates whose reminders reach no one: no address of their own and, for an ACME
# certificate, no mailto: contact on its account as it is now (notify/reminders.recipients_for).
_UNHEARD = ("c.notify = '[]' AND c.revoked_at IS NULL AND c.not_after > ? AND NOT (c.requester LIKE 'acme:%'"
            " AND EXISTS (SELECT 1 FROM acme_accounts a WHERE a.id = substr(c.requester, 6) AND a.contacts <> '[]'))")


@dataclass(frozen=True)
class CertificateFilter:
    status: str | None = None  # "valid" | "revoked" | "expired"
    expiring_within_days: int | None = None
    q: str | None = None
    requester: str | None = None  # only this requester's certificates (non-admins)


class CertificateListing:
    def list_certificates(
        self, flt: CertificateFilter, now: dt.datetime, *, limit: int, before_rowid: int | None = None
    ) -> tuple[list[CertificateRecord], int | None]:
        """Newest first. Returns the page and the rowid to continue before (None at the end)."""
        by_serial: set[str] | None = None
        if flt.q:
            by_serial, by_name = self._search_matches(flt.q)
            if by_serial is not None and by_name is not None:
                rows = self._select(flt, now, limit + 1, before=before_rowid, serials=sorted(by_serial | by_name))
                return _page(rows, limit)
        return _page(self._newest(flt, now, limit + 1, before_rowid, by_serial), limit)

    def soonest_expiring(self, now: dt.datetime, within_days: int, *, requester: str | None,
                         limit: int, not_renewed: bool = False) -> list[CertificateRecord]:
        """Valid certificates that expire within `within_days`, the soonest first (the dashboard):
        read in not_after order from its index, so the first `limit` are the right ones however
        many are due; a requester who owns at most SCAN_ROWS certificates has them read and sorted."""
        index = "certificates_not_after"
        if requester is not None and self.count_at_most(
                f"SELECT 1 FROM certificates{self.dialect.index('certificates_requester')} WHERE requester = ?",
                [requester], SCAN_ROWS) <= SCAN_ROWS:
            index = "certificates_requester"
        sql = (f"SELECT {_prefixed()} FROM certificates c{self.dialect.index(index)}"
               " WHERE c.not_after > ? AND c.not_after <= ? AND c.revoked_at IS NULL")
        params: list = [to_text(now), to_text(now + dt.timedelta(days=within_days))]
        if requester is not None:
            sql += " AND c.requester = ?"
            params.append(requester)
        if not_renewed:  # the rule the reminders use: a newer unrevoked certificate for the same names
            sql += (" AND NOT EXISTS (SELECT 1 FROM certificates n WHERE n.names_key = c.names_key"
                    " AND n.rowid > c.rowid AND n.revoked_at IS NULL)")
        params.append(limit)
        return [row_to_record(r) for r in self.db.query(sql + " ORDER BY c.not_after, c.rowid LIMIT ?", params)]

    def count_without_recipients(self, now: dt.datetime) -> int:
        """Valid certificates that name no reminder address (the dashboard's warning)."""
        return self.db.conn.execute(
            f"SELECT count(*) FROM certificates c WHERE {_UNHEARD}", [to_text(now)]).fetchone()[0]

    def without_recipients(self, now: dt.datetime, limit: int) -> list[CertificateRecord]:
        """The valid certificates that name no reminder address, soonest to expire first."""
        rows = self.db.query(f"SELECT {_prefixed()} FROM certificates c WHERE {_UNHEARD} ORDER BY c.not_after LIMIT ?",
                             [to_text(now), limit])
        return [row_to_record(row) for row in rows]

    def count_certificates(self, flt: CertificateFilter, now: dt.datetime) -> int:
        where, params = _where(self.dialect, flt, now)
        sql = "SELECT count(*) AS n FROM certificates c"
        if where:
            sql += " WHERE " + " AND ".join(where)
        return next(self.db.query(sql, params))["n"]

    def _newest(self, flt: CertificateFilter, now: dt.datetime, count: int, before: int | None,
                by_serial: set[str] | None) -> list[CertificateRecord]:
        """If an index narrows the filter to at most SCAN_ROWS rows, only those are read. Otherwise
        the newest SCAN_ROWS rows (of the requester's, with a requester) are tested in rowid order,
        and if the page is not full, the rows below come from the narrowest source."""
        top = before
        if top is None:
            top = self.db.conn.execute("SELECT coalesce(max(rowid), 0) + 1 FROM certificates").fetchone()[0]
        few = self._candidates(flt, now, top, SCAN_ROWS)
        if few is not None:
            return self._probe(flt, now, count, few)
        floor = self._scan_floor(flt, top)
        # A requester's rows are read through their index, unless they are at least half of the
        # rows: then reading the table in order is cheaper than a lookup per row.
        table = flt.requester is None or top - floor <= 2 * SCAN_ROWS
        rows = self._select(flt, now, count, before=top, floor=floor, table=table)
        if len(rows) >= count or floor <= 1:
            return rows
        most, by_keys = CANDIDATES_MAX, False
        if flt.q and by_serial is not None:
            matching, newest = self._key_rows(flt.q)
            # The search keys read about `matching` rows; the filter's index is used if it has fewer.
            by_keys = matching <= SEARCH_KEY_ROWS_MAX
            most = min(most, matching - 1) if by_keys else most
        candidates = self._candidates(flt, now, floor, most) if most >= 0 else None
        if candidates is not None:
            return rows + self._probe(flt, now, count - len(rows), candidates)
        if by_keys:
            return self._by_search_keys(flt, now, count, rows, floor, by_serial, newest)
        # No index narrows the filter (or a large share of the store passes it): read on.
        return rows + self._select(flt, now, count - len(rows), before=floor, table=table)

    def _scan_floor(self, flt: CertificateFilter, top: int) -> int:
        """The lowest rowid of the newest SCAN_ROWS rows below `top` (of the requester's)."""
        if flt.requester is None:
            return max(top - SCAN_ROWS, 1)
        row = self.db.conn.execute(
            f"SELECT rowid FROM certificates{self.dialect.index('certificates_requester')} WHERE requester = ? AND rowid < ?"
            " ORDER BY rowid DESC LIMIT 1 OFFSET ?", [flt.requester, top, SCAN_ROWS - 1]).fetchone()
        return row[0] if row else 1

    def _candidates(self, flt: CertificateFilter, now: dt.datetime, below: int, most: int) -> list[int] | None:
        """Newest first, the rowids below `below` that the narrowest index allows for the filter
        (a superset: each row is still tested in full); None when no index has at most `most`."""
        now_text = to_text(now)
        sources: list[tuple[str, str, list]] = []
        if flt.status == "revoked":
            sources.append(("certificates_revoked", "revoked_at IS NOT NULL", []))
        if flt.expiring_within_days is not None:
            horizon = to_text(now + dt.timedelta(days=flt.expiring_within_days))
            sources.append(("certificates_not_after", "not_after > ? AND not_after <= ?", [now_text, horizon]))
        elif flt.status == "expired":
            sources.append(("certificates_not_after", "not_after <= ?", [now_text]))
        if flt.requester is not None:
            sources.append(("certificates_requester", "requester = ?", [flt.requester]))
        best: tuple[int, str, list] | None = None
        for index, condition, args in sources:
            query = f"SELECT rowid FROM certificates{self.dialect.index(index)} WHERE {condition} AND rowid < ?"
            n = self.count_at_most(query, [*args, below], most)  # before any rowid becomes a Python object
            if n <= most and (best is None or n < best[0]):
                best = (n, query, [*args, below])
        if best is None:
            return None
        return [row[0] for row in self.db.conn.execute(best[1] + " ORDER BY rowid DESC", best[2])]

    def _probe(self, flt: CertificateFilter, now: dt.datetime, count: int, rowids: list[int]) -> list[CertificateRecord]:
        """The newest `count` of these rows (newest first) that pass the filter."""
        rows: list[CertificateRecord] = []
        start, size = 0, max(PROBE_ROWS, count)
        while start < len(rowids) and len(rows) < count:
            rows += self._select(flt, now, count - len(rows), rowids=rowids[start:start + size])
            start, size = start + size, size * 4
        return rows

    def _select(self, flt: CertificateFilter, now: dt.datetime, count: int, *, before: int | None = None,
                floor: int | None = None, serials: list[str] | None = None, rowids: list[int] | None = None,
                table: bool = False) -> list[CertificateRecord]:
        """The newest `count` certificates that pass the filter, below `before` and at or above
        `floor` (rowids); with `serials` or `rowids`, only those, else a search (flt.q) is a text
        match. Rows are read in rowid order from the table (`table`) or the requester's index."""
        dialect = self.dialect
        where, params = _where(dialect, flt, now, serials)
        source = "certificates c"
        if rowids is not None:
            source += dialect.no_index  # rowid lookups only
            where.append(f"c.rowid IN (SELECT CAST(value AS BIGINT) FROM {dialect.values()})")
            params.append(json.dumps(rowids))
        elif serials is None:
            # In rowid order: the requester's index holds their rows in that order, as does the
            # table (SQLite might otherwise read an index on not_after whole and sort it).
            source += dialect.index("certificates_requester") if flt.requester is not None and not table \
                else dialect.no_index
        if before is not None:
            where.append("c.rowid < ?")
            params.append(before)
        if floor is not None:
            where.append("c.rowid >= ?")
            params.append(floor)
        sql = f"SELECT {_prefixed()} FROM {source}"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY c.rowid DESC LIMIT ?"
        params.append(count)
        return [row_to_record(r) for r in self.db.query(sql, params)]

    def _search_matches(self, q: str) -> tuple[set[str] | None, set[str] | None]:
        """The serials a search matches by serial prefix and by name label (index range scans),
        each None when there are more than SEARCH_SET_CAP."""
        cap = SEARCH_SET_CAP + 1
        conn = self.db.conn
        found = []
        for sql, args in (
            ("SELECT serial FROM certificates WHERE serial >= ? AND serial < ? LIMIT ?",
             [*_prefix_range(_normal(q).replace(":", "")), cap]),
            ("SELECT DISTINCT serial FROM certificate_search WHERE key >= ? AND key < ? LIMIT ?",
             [*_prefix_range(_normal(q)), cap]),
        ):
            matches = {row[0] for row in conn.execute(sql, args)}
            found.append(matches if len(matches) <= SEARCH_SET_CAP else None)
        return found[0], found[1]

    def _key_rows(self, q: str) -> tuple[int, int | None]:
        """How many search-key rows a name prefix matches (counted up to SEARCH_KEY_ROWS_MAX + 1),
        and the newest of them (index-only)."""
        return self.db.conn.execute(
            "SELECT count(*), max(rowid) FROM (SELECT rowid FROM certificate_search WHERE key >= ? AND key < ?"
            " LIMIT ?) AS matching", [*_prefix_range(_normal(q)), SEARCH_KEY_ROWS_MAX + 1]).fetchone()

    def _by_search_keys(self, flt: CertificateFilter, now: dt.datetime, count: int, rows: list[CertificateRecord],
                        floor: int, by_serial: set[str], newest: int | None) -> list[CertificateRecord]:
        """Below the newest rows, name matches are read from the search keys newest first (key rows
        are stored in issue order) in growing windows: a prefix whose many matches are all old
        ("host1" in a store of host1..host1000000) costs a few index-only range scans instead of
        a scan of the whole table."""
        keys = "key >= ? AND key < ?"
        key_args = _prefix_range(_normal(flt.q))
        conn = self.db.conn
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


def _normal(q: str) -> str:
    """A search as the search keys are stored: trimmed, lowercase."""
    return q.strip().lower()


def _prefix_range(prefix: str) -> list[str]:
    """Bounds of `x >= low AND x < high`: every text that starts with `prefix` (an index range scan)."""
    return [prefix, prefix + "\U0010ffff"]


def _page(rows: list[CertificateRecord], limit: int) -> tuple[list[CertificateRecord], int | None]:
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].extra["rowid"] if more and rows else None)


def _where(dialect: Dialect, flt: CertificateFilter, now: dt.datetime,
           q_serials: list[str] | None = None) -> tuple[list[str], list]:
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
        q = _normal(flt.q)
        if q_serials is not None:
            where.append(f"c.serial IN (SELECT value FROM {dialect.values()})")
            params.append(json.dumps(q_serials))
        else:
            # Many matches: a serial prefix, or a name (in the SANs JSON, "DNS:name", or the CN)
            # with a label that starts with q, as the search keys, ignoring ASCII case as names do.
            pattern = q.replace("\\", "").replace("%", "").replace("_", "")
            like = dialect.like
            where.append(f"(c.serial {like} ? OR c.sans {like} ? OR c.sans {like} ? OR c.common_name {like} ?"
                         f" OR c.common_name {like} ?)")
            params += [pattern.replace(":", "") + "%", f"%:{pattern}%", f"%.{pattern}%", f"{pattern}%", f"%.{pattern}%"]
    return where, params
