"""Revocation state: revoked certificates, CRLs, OCSP responder certificates."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from ..clock import to_text
from .errors import INTEGRITY_ERRORS


class RevocationQueries:
    def revoke_certificate(self, serial: str, at: dt.datetime, reason: str, audit: dict | None = None) -> bool:
        """Mark revoked once; False when it was already revoked (or does not exist)."""
        with self.write() as db:
            changed = db.execute(
                "UPDATE certificates SET revoked_at = ?, revocation_reason = ? WHERE serial = ? AND revoked_at IS NULL",
                [to_text(at), reason, serial],
            ).rowcount
            if changed and audit:
                self._append_audit(db, **audit)
            through = self._log_events(db, [("revoke", serial, at, reason)]) if changed else None
        self._log_sync(through)
        if changed:
            self._mark_revocation()
        return changed == 1

    def revoked_unexpired(self, now: dt.datetime, issued_by: IssuerFilter = None):
        """(serial, revoked_at, reason) of revoked certificates that have not expired yet: an
        expired certificate is invalid anyway, so RFC 5280 3.3 lets CRLs drop it. `issued_by`:
        only those of one intermediate (see IssuerFilter)."""
        where, args = _issuer_clause(issued_by)
        return self.db.conn.execute(
            "SELECT serial, revoked_at, revocation_reason FROM certificates"
            " WHERE revoked_at IS NOT NULL AND not_after > ?" + where,
            [to_text(now), *args],
        )

    def certificate_status(self, serial: str) -> tuple[str | None, str | None, str] | None:
        """(revoked_at, reason, issuer) for a known serial (both None when not revoked), None if unknown."""
        row = self.db.conn.execute(
            "SELECT revoked_at, revocation_reason, issuer FROM certificates WHERE serial = ?", [serial]
        ).fetchone()
        return None if row is None else (row[0], row[1], row[2])

    def issuer_summary(self, issued_by: IssuerFilter, now: dt.datetime) -> tuple[int, str | None]:
        """(how many unexpired certificates one intermediate issued, the last not_after among them)."""
        where, args = _issuer_clause(issued_by)
        row = self.db.conn.execute(
            "SELECT count(*), max(not_after) FROM certificates WHERE not_after > ?" + where, [to_text(now), *args]
        ).fetchone()
        return row[0], row[1]

    # -- CA revocations (listed on the root's CRL) --------------------------------------------------
    def revoke_ca(self, serial: str, at: dt.datetime, reason: str, audit: dict | None = None) -> bool:
        try:
            with self.write() as db:
                db.execute("INSERT INTO ca_revocations (serial, revoked_at, reason) VALUES (?, ?, ?)",
                           [serial, to_text(at), reason])
                if audit:
                    self._append_audit(db, **audit)
        except INTEGRITY_ERRORS:
            return False
        return True

    def ca_revocations(self) -> list[dict]:
        return list(self.db.query("SELECT serial, revoked_at, reason FROM ca_revocations"))

    # -- CRLs -------------------------------------------------------------------------------------
    def latest_crl_number(self, issuer: str) -> int:
        row = self.db.conn.execute("SELECT max(number) FROM crls WHERE issuer = ?", [issuer]).fetchone()
        return row[0] or 0

    def insert_next_crl(self, issuer: str, floor: int, sign: Callable[[int], bytes], this_update: dt.datetime,
                        next_update: dt.datetime, keep: int = 3) -> int:
        """Store the next CRL of `issuer`: its number is above the newest stored (and at least
        `floor`), and `sign(number)` makes its DER while every other writer of this issuer's CRLs
        waits, so numbers grow in commit order too, on any number of nodes (RFC 5280 5.2.3)."""
        with self.write() as db:
            self.serialize(db, f"crl:{issuer}")
            newest = db.execute("SELECT max(number) FROM crls WHERE issuer = ?", [issuer]).fetchone()[0]
            number = max((newest or 0) + 1, floor)
            db.execute(
                "INSERT INTO crls (issuer, number, this_update, next_update, der) VALUES (?, ?, ?, ?, ?)",
                [issuer, number, to_text(this_update), to_text(next_update), sign(number)],
            )
            # Old CRLs are superseded; keep a few for looking back, not thousands of copies.
            db.execute(
                "DELETE FROM crls WHERE issuer = ? AND number NOT IN"
                " (SELECT number FROM crls WHERE issuer = ? ORDER BY number DESC LIMIT ?)",
                [issuer, issuer, keep],
            )
        return number

    def latest_crl(self, issuer: str, *, with_der: bool = True) -> dict | None:
        """The newest CRL of `issuer`; without its DER (megabytes with many revocations) when
        only its number and dates are needed."""
        columns = "issuer, number, this_update, next_update" + (", der" if with_der else "")
        rows = list(self.db.query(
            f"SELECT {columns} FROM crls WHERE issuer = ? ORDER BY number DESC LIMIT 1", [issuer]))
        return rows[0] if rows else None

    # -- OCSP responder certificates ----------------------------------------------------------------
    def insert_ocsp_responder(self, serial: str, not_before: dt.datetime, not_after: dt.datetime, der: bytes,
                              key_pem: bytes, issuer: str = "intermediate") -> None:
        """`issuer`: the slug of the intermediate that issued the responder certificate."""
        with self.write() as db:
            db.execute(
                "INSERT INTO ocsp_responders (serial, not_before, not_after, der, key_pem, issuer)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                [serial, to_text(not_before), to_text(not_after), der, key_pem, issuer],
            )

    def latest_ocsp_responder(self, issuer: str = "intermediate") -> dict | None:
        rows = list(self.db.query("SELECT * FROM ocsp_responders WHERE issuer = ? ORDER BY not_after DESC LIMIT 1",
                                  [issuer]))
        return rows[0] if rows else None


# Which intermediate's certificates: ("=", subject) for one, ("not in", [subjects]) for the first
# generation (everything no later one issued, whatever text older versions stored), None for all.
IssuerFilter = tuple[str, object] | None


def _issuer_clause(issued_by: IssuerFilter) -> tuple[str, list]:
    if issued_by is None:
        return "", []
    op, value = issued_by
    if op == "=":
        return " AND issuer = ?", [value]
    if not value:
        return "", []
    return f" AND issuer NOT IN ({', '.join('?' for _ in value)})", list(value)
