"""ACME revocation (RFC 8555 7.6): by the account that ordered the certificate, by an account
that holds valid authorizations for all of its names, or signed with the certificate's own key;
then the same revocation as every other door."""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from .. import revocation
from ..ca.authority import Authority
from ..config import Config
from ..pki.serials import serial_hex
from ..store import CaStore
from . import state
from .jws import b64decode
from .problems import AcmeProblem
from .state import Account

RFC5280_REASONS = {0: "unspecified", 1: "keyCompromise", 3: "affiliationChanged", 4: "superseded",
                   5: "cessationOfOperation", 9: "privilegeWithdrawn"}


def revoke(config: Config, store: CaStore, authority: Authority, payload: dict, *, account: Account | None,
           key_spki_sha256: str | None, client: str | None, now: dt.datetime) -> None:
    """RFC 8555 7.6: by the account that ordered the certificate, by an account that holds valid
    authorizations for all of its names (a subscriber who lost the account that ordered it and
    validated the names again with a new one), or signed by its own key."""
    text = payload.get("certificate")
    if not isinstance(text, str):
        raise AcmeProblem("malformed", "revokeCert needs the certificate as unpadded base64url DER.")
    try:
        cert = x509.load_der_x509_certificate(b64decode(text, "certificate"))
        serial = serial_hex(cert.serial_number)
    except ValueError:
        raise AcmeProblem("malformed", "The certificate is not DER.") from None
    record = store.get_certificate(serial)
    if record is None or record.der != cert.public_bytes(Encoding.DER):
        raise AcmeProblem("malformed", "This CA did not issue that certificate.", status=404)
    reason_code = payload.get("reason", 0)
    if isinstance(reason_code, bool) or not isinstance(reason_code, int) or reason_code not in RFC5280_REASONS:
        raise AcmeProblem("badRevocationReason", f"Reason {reason_code!r} is not accepted; use one of "
                          f"{', '.join(f'{k} ({v})' for k, v in RFC5280_REASONS.items())}.")
    if account is not None:
        order = state.order_of_certificate(store, serial)
        if order is None or order.account_id != account.id:
            missing = _names_not_authorized(store, account, record.sans, now)
            if missing:
                raise AcmeProblem("unauthorized", "This account did not order that certificate and holds no valid "
                                  f"authorization for {', '.join(missing)}: validate every name of the certificate "
                                  "in an order of this account first, or sign the request with the certificate's "
                                  "key instead.")
        actor = account.actor
    else:
        if key_spki_sha256 != record.spki_sha256:
            raise AcmeProblem("unauthorized", "The request is not signed by that certificate's key.")
        actor = f"acme-key:{record.spki_sha256[:16]}"
    if record.revoked_at is not None:
        raise AcmeProblem("alreadyRevoked", f"The certificate was revoked on {record.revoked_at:%Y-%m-%d}.")
    revocation.revoke(config, store, authority, serial, RFC5280_REASONS[reason_code], now, actor=actor, client=client)


def _names_not_authorized(store: CaStore, account: Account, sans: tuple[str, ...], now: dt.datetime) -> list[str]:
    """The certificate's names ("DNS:...", "IP:...") for which the account holds no valid, unexpired
    authorization (a wildcard name needs a wildcard authorization)."""
    if not sans:
        return ["its subject (it has no names)"]
    held = set()
    for row in store.acme_valid_authorizations(account.id, now):
        authz = state.from_row(row)
        held.add(("DNS:*." + authz.identifier.value) if authz.wildcard else authz.identifier.san)
    return [name.split(":", 1)[1] for name in sans if name not in held]
