"""Domain errors. They carry data and words for a person, never HTTP status codes: the web layer
maps them to statuses in one place (web/errors.py), the CLI to click exceptions."""

from __future__ import annotations

from dataclasses import dataclass


def untrusted_certificate(exc: BaseException) -> bool:
    """A TLS client error that says the peer's certificate is not trusted, as requests, ldap3 and
    PyJWT carry it (in words: they wrap ssl.SSLCertVerificationError in their own exceptions)."""
    text = str(exc)
    return "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text


class CAError(Exception):
    """Base of every error ca-server raises on purpose. `code` is stable and machine-readable."""

    code = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class AddressUnavailableError(CAError):
    """`serve` cannot listen on its host:port: held by another process (another ca-server
    instance, or anything else), a privileged port, or not an address of this machine."""

    code = "address_unavailable"

    def __init__(self, message: str, address: str) -> None:
        super().__init__(message)
        self.address = address


class ConfigError(CAError):
    """The configuration is unusable; the message starts with the dotted key."""

    code = "config_invalid"


class InstanceError(CAError):
    """The instance folder is missing, incomplete, or would be overwritten."""

    code = "instance_error"


class StoreUnavailableError(CAError):
    """The database cannot be reached (restarting, failing over): try again shortly. Nothing
    was acknowledged that is not stored."""

    code = "store_unavailable"
    retry_after = 5

    def __init__(self) -> None:
        super().__init__(f"The certificate database is unavailable right now; try again in "
                         f"{self.retry_after} seconds.")


class LogWriteError(CAError):
    """The issuance log could not be written (its disk is full or gone, or it holds entries the
    store does not): nothing is issued or revoked until it can be, so nothing escapes the log."""

    code = "log_unavailable"


# Errors of the server's state, not of the request: the same request may succeed later (HTTP 503).
SERVER_STATE_ERRORS = (InstanceError, StoreUnavailableError, LogWriteError)


class BadRequestError(CAError):
    """Input that cannot be understood (not a policy decision)."""

    code = "bad_request"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code


class CSRParseError(BadRequestError):
    code = "csr_invalid"


class TooLargeError(CAError):
    code = "too_large"


@dataclass(frozen=True)
class Violation:
    """One reason a request is refused: a stable code, a sentence saying what to change, and the
    name (SAN, key, field) it is about when there is one."""

    code: str
    message: str
    subject: str | None = None

    def as_dict(self) -> dict[str, str]:
        data = {"code": self.code, "message": self.message}
        if self.subject is not None:
            data["name"] = self.subject
        return data


class PolicyViolationError(CAError):
    """A CSR the policy refuses. All violations are reported together."""

    def __init__(self, violations: list[Violation]) -> None:
        if not violations:
            raise ValueError("PolicyViolationError needs at least one violation")
        self.violations = list(violations)
        super().__init__(" ".join(v.message for v in self.violations))
        self.code = self.violations[0].code


class ScopeError(CAError):
    """The requester may not ask for this name (its domains do not cover it)."""

    code = "name_out_of_scope"

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = list(violations)
        super().__init__(" ".join(v.message for v in self.violations))


class NotFoundError(CAError):
    code = "not_found"


class CertificateNotFoundError(NotFoundError):
    def __init__(self, serial: str, ca_role: str | None = None) -> None:
        """`ca_role`: words for the CA's own certificate with this serial (Authority.ca_role_of)."""
        super().__init__(f"Serial {serial} is {ca_role}, not a certificate it issued." if ca_role else
                         f"No certificate with serial {serial} was issued by this CA.")
        self.serial = serial


class InvalidSerialError(BadRequestError):
    code = "serial_invalid"

    def __init__(self, text: str, *, fingerprint: bool = False) -> None:
        shown = text if len(text) <= 80 else text[:77] + "..."
        super().__init__(
            f"'{shown}' is a SHA-256 fingerprint, not a serial number. {FINGERPRINT_ADVICE}" if fingerprint else
            f"'{shown}' is not a certificate serial number: write it in hex, like 5f3a09c1 or 5F:3A:09:C1."
        )


# What to do with a fingerprint where a serial is asked for (lookups, the list's search).
FINGERPRINT_ADVICE = ("Look the certificate up by its serial number, which certificate viewers show next to the "
                      "fingerprint, or paste the certificate into Inspect (/inspect), which says whether this CA "
                      "issued it.")


class ConflictError(CAError):
    code = "conflict"


class AlreadyRevokedError(ConflictError):
    code = "already_revoked"

    def __init__(self, serial: str, revoked_at: str, reason: str) -> None:
        super().__init__(
            f"Certificate {serial} was already revoked at {revoked_at} (reason: {reason}); "
            "it cannot be revoked twice."
        )
        self.serial = serial


class AuthError(CAError):
    """Missing or wrong credentials (401)."""

    code = "unauthorized"


class ForbiddenError(CAError):
    """Known requester, not allowed (403)."""

    code = "forbidden"


class MailError(CAError):
    code = "mail_failed"
