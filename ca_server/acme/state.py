"""ACME's objects as typed state (RFC 8555 7.1): accounts, orders, authorizations and challenges as
frozen dataclasses read from the store, and every change of status through `move`, which checks the
transition against the one table below (RFC 8555 7.1.6's state diagrams) and writes only if the
object is still in the status it was read in (another worker may have moved it meanwhile)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass
from typing import TypeVar

from ..clock import from_text
from ..store import CaStore

# kind -> status -> the statuses it may move to (RFC 8555 7.1.6; "expired" for authorizations
# past their expiry, "ready" back from "processing" when a finalize fails and may be retried).
TRANSITIONS: dict[str, dict[str, frozenset[str]]] = {
    "order": {"pending": frozenset({"ready", "invalid"}),
              "ready": frozenset({"processing", "invalid"}),
              "processing": frozenset({"valid", "ready", "invalid"}),
              "valid": frozenset(), "invalid": frozenset()},
    "authz": {"pending": frozenset({"valid", "invalid", "deactivated", "expired"}),
              "valid": frozenset({"deactivated", "expired"}),
              "invalid": frozenset(), "deactivated": frozenset(), "expired": frozenset()},
    "challenge": {"pending": frozenset({"processing", "invalid"}),
                  "processing": frozenset({"valid", "invalid"}),
                  "valid": frozenset(), "invalid": frozenset()},
}


class TransitionError(RuntimeError):
    """A move the table does not allow: a bug in the caller, never the client's doing."""


@dataclass(frozen=True)
class Identifier:
    type: str  # "dns" | "ip"
    value: str

    @classmethod
    def from_json(cls, data: dict) -> Identifier:
        return cls(data["type"], data["value"])

    def to_json(self) -> dict:
        return {"type": self.type, "value": self.value}

    @property
    def san(self) -> str:
        return ("IP:" if self.type == "ip" else "DNS:") + self.value


@dataclass(frozen=True)
class Account:
    """An ACME account (RFC 8555 7.1.2): its key (JWK and RFC 7638 thumbprint) and contacts.
    Accounts change by the store's guarded updates (only while valid), not through the table."""
    id: str
    thumbprint: str
    jwk: str
    status: str  # "valid" | "deactivated" | "revoked"
    contacts: tuple[str, ...]
    eab_name: str | None
    created_at: str
    client: str | None = None

    @classmethod
    def from_row(cls, row: dict) -> Account:
        return cls(id=row["id"], thumbprint=row["thumbprint"], jwk=row["jwk"], status=row["status"],
                   contacts=tuple(row["contacts"]), eab_name=row["eab_name"], created_at=row["created_at"],
                   client=row.get("client"))

    @property
    def actor(self) -> str:
        """How the audit log names this account."""
        return f"acme:{self.id}"

    @property
    def mail_to(self) -> tuple[str, ...]:
        """The addresses of its mailto: contacts."""
        return tuple(c.removeprefix("mailto:") for c in self.contacts)


def account(store: CaStore, account_id: str) -> Account | None:
    row = store.acme_account(account_id)
    return Account.from_row(row) if row is not None else None


def account_by_thumbprint(store: CaStore, thumbprint: str) -> Account | None:
    row = store.acme_account_by_thumbprint(thumbprint)
    return Account.from_row(row) if row is not None else None


def all_accounts(store: CaStore) -> list[tuple[Account, list[Order]]]:
    """Every account, oldest first, with its orders (newest first): what the admin page and the
    CLI list."""
    return [(acct, [from_row(row) for row in store.acme_orders_of(acct.id)])  # type: ignore[misc]
            for acct in map(Account.from_row, store.list_acme_accounts())]


@dataclass(frozen=True)
class _Object:
    id: str
    account_id: str
    status: str
    expires_at: dt.datetime | None

    kind = ""

    def expired(self, now: dt.datetime) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@dataclass(frozen=True)
class Order(_Object):
    identifiers: tuple[Identifier, ...]
    authorizations: tuple[str, ...]
    profile: str
    expires: str
    certificate: str | None = None
    error: dict | None = None
    replaces: str | None = None
    # While processing: when a finalize claimed the order, and the CSR it is signing (base64url
    # DER), so that a claim whose worker stopped can be signed by another (orders.resume_stale).
    claimed: str | None = None
    csr: str | None = None

    kind = "order"

    def data(self) -> dict:
        data = {"identifiers": [i.to_json() for i in self.identifiers], "authorizations": list(self.authorizations),
                "profile": self.profile, "expires": self.expires, "certificate": self.certificate,
                "error": self.error, "replaces": self.replaces}
        if self.claimed is not None:
            data["claimed"], data["csr"] = self.claimed, self.csr
        return data

    @classmethod
    def _from(cls, row: dict, base: dict) -> Order:
        data = row["data"]
        return cls(**base, identifiers=tuple(Identifier.from_json(i) for i in data["identifiers"]),
                   authorizations=tuple(data["authorizations"]), profile=data["profile"], expires=data["expires"],
                   certificate=data.get("certificate"), error=data.get("error"), replaces=data.get("replaces"),
                   claimed=data.get("claimed"), csr=data.get("csr"))


@dataclass(frozen=True)
class Authorization(_Object):
    order_id: str
    identifier: Identifier
    wildcard: bool
    challenges: tuple[str, ...]
    expires: str
    error: dict | None = None

    kind = "authz"

    def data(self) -> dict:
        data = {"identifier": self.identifier.to_json(), "wildcard": self.wildcard,
                "challenges": list(self.challenges), "expires": self.expires}
        if self.error is not None:
            data["error"] = self.error
        return data

    @classmethod
    def _from(cls, row: dict, base: dict) -> Authorization:
        data = row["data"]
        return cls(**base, order_id=row["parent_id"], identifier=Identifier.from_json(data["identifier"]),
                   wildcard=bool(data.get("wildcard")), challenges=tuple(data.get("challenges", ())),
                   expires=data["expires"], error=data.get("error"))


@dataclass(frozen=True)
class Challenge(_Object):
    authz_id: str
    order_id: str
    type: str  # "http-01" | "tls-alpn-01" | "dns-01"
    token: str
    identifier: Identifier
    wildcard: bool
    started: str | None = None
    validated: str | None = None
    error: dict | None = None

    kind = "challenge"

    def data(self) -> dict:
        data = {"type": self.type, "token": self.token, "identifier": self.identifier.to_json(),
                "wildcard": self.wildcard, "order_id": self.order_id}
        for key in ("started", "validated", "error"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        return data

    @classmethod
    def _from(cls, row: dict, base: dict) -> Challenge:
        data = row["data"]
        return cls(**base, authz_id=row["parent_id"], order_id=data["order_id"], type=data["type"],
                   token=data["token"], identifier=Identifier.from_json(data["identifier"]),
                   wildcard=bool(data.get("wildcard")), started=data.get("started"),
                   validated=data.get("validated"), error=data.get("error"))


CLASSES: dict[str, type[Order] | type[Authorization] | type[Challenge]] = {
    "order": Order, "authz": Authorization, "challenge": Challenge}
T = TypeVar("T", Order, Authorization, Challenge)


def from_row(row: dict) -> Order | Authorization | Challenge:
    base = {"id": row["id"], "account_id": row["account_id"], "status": row["status"],
            "expires_at": from_text(row["expires_at"]) if row.get("expires_at") else None}
    return CLASSES[row["kind"]]._from(row, base)


def load(store: CaStore, cls: type[T], object_id: str) -> T | None:
    row = store.acme_object(cls.kind, object_id)
    return from_row(row) if row is not None else None  # type: ignore[return-value]


def order_of_certificate(store: CaStore, serial: str) -> Order | None:
    row = store.acme_order_of_certificate(serial)
    return from_row(row) if row is not None else None  # type: ignore[return-value]


def children(store: CaStore, parent_id: str) -> list[Authorization | Challenge]:
    return [from_row(row) for row in store.acme_children(parent_id)]  # type: ignore[misc]


def move(store: CaStore, obj: T, to: str, now: dt.datetime, **changes) -> T | None:
    """`obj` moved to status `to` (with `changes` to its fields), if the table allows it and the
    object is still as it was read: the moved object, or None when another worker moved it first."""
    if to not in TRANSITIONS[obj.kind][obj.status]:
        raise TransitionError(f"an ACME {obj.kind} cannot go from {obj.status} to {to}")
    moved = dataclasses.replace(obj, status=to, **changes)
    return moved if store.move_acme_object(obj.id, (obj.status,), to, moved.data(), now) else None
