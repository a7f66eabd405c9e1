"""E-mail address validation (email-validator, syntax only: internal networks' mail domains
are often not resolvable from the CA host)."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email


def email_problem(address: str) -> str | None:
    """None when `address` is a usable e-mail address, else the reason in words."""
    try:
        validate_email(
            address,
            check_deliverability=False,
            globally_deliverable=False,
            test_environment=True,  # admits the RFC 2606 .test domain used by examples and tests
            allow_display_name=False,
        )
    except EmailNotValidError as exc:
        return str(exc)
    return None


def normalize_email(address: str) -> str:
    """The address as stored and mailed to: an internationalised domain in its ASCII (xn--) form,
    which every SMTP server takes; only a non-ASCII local part needs the server's SMTPUTF8."""
    valid = validate_email(
        address.strip(), check_deliverability=False, globally_deliverable=False, test_environment=True
    )
    return valid.ascii_email or valid.normalized
