"""ACME's rows: nonces, accounts, EAB keys, and orders / authorizations / challenges as JSON
documents with their status in a column, so a change of state is a conditional UPDATE (only from
the status it was read in) and two workers never both move one object."""

from __future__ import annotations

import datetime as dt
import json
import random

from ..clock import to_text
from .errors import INTEGRITY_ERRORS

NONCE_SWEEP_EVERY = 64


class AcmeQueries:
    # -- nonces ----------------------------------------------------------------------------------
    def use_nonce(self, key: bytes, forget_below: bytes) -> bool:
        """True the first time the nonce of `key` is used, on any node. Keys sort in the order
        their nonces were made, and those below `forget_below` are past their lifetime: every
        64th use also forgets up to 500 of them. One statement each."""
        with self.one_statement() as db:
            used = db.execute("INSERT INTO acme_nonces (nonce) VALUES (?) ON CONFLICT (nonce) DO NOTHING",
                              [key]).rowcount == 1
        if random.randrange(NONCE_SWEEP_EVERY) == 0:  # noqa: S311 - pacing, not security
            with self.one_statement() as db:
                db.execute("DELETE FROM acme_nonces WHERE nonce IN (SELECT nonce FROM acme_nonces WHERE nonce < ?"
                           " ORDER BY nonce LIMIT 500)", [forget_below])
        return used

    # -- accounts --------------------------------------------------------------------------------
    def insert_acme_account(self, row: dict, audit: dict | None = None) -> bool:
        """False when an account with this key exists already."""
        try:
            with self.write() as db:
                db.execute("INSERT INTO acme_accounts (id, thumbprint, jwk, status, contacts, eab_name, created_at,"
                           " client) VALUES (:id, :thumbprint, :jwk, :status, :contacts, :eab_name, :created_at,"
                           " :client)", {**row, "contacts": json.dumps(row["contacts"])})
                if audit:
                    self._append_audit(db, **audit)
        except INTEGRITY_ERRORS:
            return False
        return True

    def acme_account(self, account_id: str) -> dict | None:
        rows = list(self.db.query("SELECT * FROM acme_accounts WHERE id = ?", [account_id]))
        return _account(rows[0]) if rows else None

    def acme_account_by_thumbprint(self, thumbprint: str) -> dict | None:
        rows = list(self.db.query("SELECT * FROM acme_accounts WHERE thumbprint = ?", [thumbprint]))
        return _account(rows[0]) if rows else None

    def list_acme_accounts(self) -> list[dict]:
        return [_account(r) for r in self.db.query("SELECT * FROM acme_accounts ORDER BY created_at")]

    def update_acme_account(self, account_id: str, *, contacts: list[str] | None = None, status: str | None = None,
                            jwk: str | None = None, thumbprint: str | None = None,
                            audit: dict | None = None) -> bool:
        """Change an account that is still valid; False when it is not (or the new key is taken)."""
        sets, args = [], []
        for column, value in (("contacts", None if contacts is None else json.dumps(contacts)),
                              ("status", status), ("jwk", jwk), ("thumbprint", thumbprint)):
            if value is not None:
                sets.append(f"{column} = ?")
                args.append(value)
        try:
            with self.write() as db:
                changed = db.execute(f"UPDATE acme_accounts SET {', '.join(sets)} WHERE id = ? AND status = 'valid'",
                                     [*args, account_id]).rowcount == 1
                if changed and audit:
                    self._append_audit(db, **audit)
        except INTEGRITY_ERRORS:
            return False
        return changed

    # -- EAB keys --------------------------------------------------------------------------------
    def insert_eab_key(self, row: dict, audit: dict | None = None) -> bool:
        try:
            with self.write() as db:
                db.execute("INSERT INTO acme_eab_keys (name, kid, hmac_key, domains, allow_ip, created_at) VALUES"
                           " (:name, :kid, :hmac_key, :domains, :allow_ip, :created_at)",
                           {**row, "domains": json.dumps(list(row["domains"]))})
                if audit:
                    self._append_audit(db, **audit)
        except INTEGRITY_ERRORS:
            return False
        return True

    def eab_key(self, *, kid: str | None = None, name: str | None = None) -> dict | None:
        column, value = ("kid", kid) if kid is not None else ("name", name)
        rows = list(self.db.query(f"SELECT * FROM acme_eab_keys WHERE {column} = ?", [value]))
        return _eab(rows[0]) if rows else None

    def list_eab_keys(self) -> list[dict]:
        return [_eab(r) for r in self.db.query("SELECT * FROM acme_eab_keys ORDER BY name")]

    def revoke_eab_key(self, name: str, now: dt.datetime, audit: dict | None = None) -> bool:
        with self.write() as db:
            done = db.execute("UPDATE acme_eab_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                              [to_text(now), name]).rowcount == 1
            if done and audit:
                self._append_audit(db, **audit)
        return done

    # -- orders, authorizations, challenges ---------------------------------------------------------
    def insert_acme_objects(self, rows: list[dict]) -> None:
        """Several objects in one transaction (an order with its authorizations and challenges)."""
        with self.write() as db:
            db.conn.executemany(
                "INSERT INTO acme_objects (id, kind, account_id, parent_id, status, data, expires_at, created_at,"
                " updated_at) VALUES (:id, :kind, :account_id, :parent_id, :status, :data, :expires_at,"
                " :created_at, :created_at)",
                [{**r, "data": json.dumps(r["data"]),
                  "expires_at": to_text(r["expires_at"]) if r.get("expires_at") else None,
                  "created_at": to_text(r["created_at"])} for r in rows])

    def acme_object(self, kind: str, object_id: str) -> dict | None:
        rows = list(self.db.query("SELECT * FROM acme_objects WHERE id = ? AND kind = ?", [object_id, kind]))
        return _object(rows[0]) if rows else None

    def acme_children(self, parent_id: str) -> list[dict]:
        return [_object(r) for r in self.db.query(
            "SELECT * FROM acme_objects WHERE parent_id = ? ORDER BY rowid", [parent_id])]

    def acme_orders_of(self, account_id: str, limit: int = 1000) -> list[dict]:
        return [_object(r) for r in self.db.query(
            "SELECT * FROM acme_objects WHERE account_id = ? AND kind = 'order' ORDER BY created_at DESC LIMIT ?",
            [account_id, limit])]

    def acme_valid_authorizations(self, account_id: str, now: dt.datetime) -> list[dict]:
        """The account's authorizations that are valid and not expired: all of them (no more than
        its orders of the last order_lifetime_hours made; a cut-off would refuse a revocation)."""
        return [_object(r) for r in self.db.query(
            "SELECT * FROM acme_objects WHERE account_id = ? AND kind = 'authz' AND status = 'valid'"
            " AND expires_at > ?", [account_id, to_text(now)])]

    def acme_order_of_certificate(self, serial: str) -> dict | None:
        rows = list(self.db.query("SELECT * FROM acme_objects WHERE kind = 'order' AND"
                                  f" {self.dialect.field('data', 'certificate')} = ?", [serial]))
        return _object(rows[0]) if rows else None

    def move_acme_object(self, object_id: str, from_status: tuple[str, ...], to_status: str, data: dict,
                         now: dt.datetime, audit: dict | None = None) -> bool:
        """Set status and data only if the object is still in one of `from_status`. One statement
        (its own transaction, or part of the caller's) unless an audit row goes with it."""
        marks = ", ".join("?" for _ in from_status)
        with self.write() if audit else self.one_statement() as db:
            moved = db.execute(
                f"UPDATE acme_objects SET status = ?, data = ?, updated_at = ? WHERE id = ? AND status IN ({marks})",
                [to_status, json.dumps(data), to_text(now), object_id, *from_status]).rowcount == 1
            if moved and audit:
                self._append_audit(db, **audit)
        return moved


def _account(row: dict) -> dict:
    return {**row, "contacts": json.loads(row["contacts"])}


def _eab(row: dict) -> dict:
    return {**row, "domains": tuple(json.loads(row["domains"])), "allow_ip": bool(row["allow_ip"])}


def _object(row: dict) -> dict:
    return {**row, "data": json.loads(row["data"])}
