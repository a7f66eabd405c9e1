"""ACME Renewal Information (RFC 9773): certificate IDs and the suggested window; an order's
`replaces` names the certificate it renews by its ID."""

from __future__ import annotations

import datetime as dt

from cryptography import x509

from ..clock import to_text
from ..config import Config
from ..notify.renewal_window import renewal_window
from ..pki.serials import serial_hex
from ..store import CaStore
from . import state
from .jws import b64decode, b64encode
from .problems import AcmeProblem
from .state import Account, Order


def cert_id(cert: x509.Certificate) -> str:
    """RFC 9773 4.1: base64url(AKI keyIdentifier) "." base64url(serial's DER INTEGER content)."""
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value.key_identifier
    n = cert.serial_number
    raw = n.to_bytes((n.bit_length() + 8) // 8, "big")  # with a leading 0 when the top bit is set, as DER has
    return f"{b64encode(aki)}.{b64encode(raw)}"


def serial_of_cert_id(value: object) -> str | None:
    if not isinstance(value, str) or value.count(".") != 1:
        return None
    try:
        _aki, serial = (b64decode(part, "certificate id") for part in value.split("."))
    except AcmeProblem:
        return None
    return serial_hex(int.from_bytes(serial, "big")) if serial else None


def replaced_certificate(store: CaStore, account: Account, value: object) -> Order | None:
    """The order of `account` whose certificate has the RFC 9773 ID `value`, if any."""
    serial = serial_of_cert_id(value)
    order = state.order_of_certificate(store, serial) if serial else None
    return order if order is not None and order.account_id == account.id else None


def renewal_info(config: Config, store: CaStore, value: str, now: dt.datetime) -> dict:
    """RFC 9773: when to renew. The window opens when renewal_window_percent of the lifetime is
    left; a revoked certificate should be replaced now."""
    serial = serial_of_cert_id(value)
    record = store.get_certificate(serial) if serial else None
    if record is None:
        raise AcmeProblem("malformed", "No certificate of this CA has that certificate ID.", status=404)
    if record.revoked_at is not None:
        start, end = now - dt.timedelta(days=1), now
    else:
        start, end = renewal_window(record.not_before, record.not_after, config.acme.renewal_window_percent)
    return {"suggestedWindow": {"start": to_text(start.replace(microsecond=0)),
                                "end": to_text(end.replace(microsecond=0))}}
