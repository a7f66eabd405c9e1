"""The store: the only code that talks to the database. Two backends share every query module:
SQLite through sqlite-utils (StoreBase, the default) and PostgreSQL through psycopg 3
(PostgresBase). `StoreBackend` is what the query modules need from either; `CaStore`
(interfaces.py) is what the rest of the code may ask of the store."""

from __future__ import annotations

from pathlib import Path

from .access import AccessQueries, NameTakenError, RequestQueries
from .acme import AcmeQueries
from .audit import AuditQueries
from .backend import StoreBackend
from .base import StoreBase
from .certificates import CertificateQueries, SerialTakenError, Settlement
from .counters import CounterQueries
from .devices import DeviceQueries
from .identity import IdentityQueries
from .interfaces import CaStore
from .issuance_log import IssuanceLogQueries
from .leases import LeaseQueries
from .listing import CertificateFilter, CertificateListing
from .postgres import PostgresBase
from .reminders import ReminderQueries
from .revocation import RevocationQueries
from .sessions import SessionQueries
from .webhooks import WebhookQueries

_QUERIES = (WebhookQueries, AcmeQueries, CertificateQueries, CertificateListing, ReminderQueries, RevocationQueries,
            AccessQueries, RequestQueries, AuditQueries, LeaseQueries, CounterQueries, IdentityQueries,
            DeviceQueries, IssuanceLogQueries, SessionQueries)


class Store(*_QUERIES, StoreBase):
    """SQLite: instance/ca.sqlite3."""


class PostgresStore(*_QUERIES, PostgresBase):
    """PostgreSQL: one database shared by every node."""


def open_store(database: Path, url: str = "", password: str | None = None) -> CaStore:
    """The store the config names: `url` (PostgreSQL) or else the SQLite file `database`."""
    return PostgresStore(url, password) if url else Store(database)


__all__ = ["CaStore", "CertificateFilter", "NameTakenError", "PostgresStore", "SerialTakenError", "Settlement", "Store",
           "StoreBackend", "open_store"]
