"""The store: the only code that talks to SQLite (through sqlite-utils)."""

from __future__ import annotations

from .access import AccessQueries, NameTakenError, RequestQueries
from .acme import AcmeQueries
from .audit import AuditQueries
from .base import StoreBase
from .certificates import CertificateQueries, SerialTakenError
from .listing import CertificateFilter, CertificateListing
from .reminders import ReminderQueries
from .revocation import CRLNumberTakenError, RevocationQueries
from .webhooks import WebhookQueries


class Store(WebhookQueries, AcmeQueries, CertificateQueries, CertificateListing, ReminderQueries, RevocationQueries, AccessQueries,
            RequestQueries, AuditQueries, StoreBase):
    pass


__all__ = ["CRLNumberTakenError", "CertificateFilter", "NameTakenError", "SerialTakenError", "Store"]
