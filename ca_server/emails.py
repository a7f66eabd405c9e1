"""E-mail address validation (email-validator, syntax only: internal networks' mail domains
are often not resolvable from the CA host)."""

from __future__ import annotations

import functools

from email_validator import EmailNotValidError, validate_email


@functools.lru_cache(maxsize=4096)
def _checked(address: str) -> tuple[str | None, str]:
    """(the reason it is not usable or None, its stored form). Kept per address: an ACME account's
    or an API client's reminder address comes with every order (40 us a check, twice a
    certificate before; issue 29). A pure function of the text, so the cache cannot go stale."""
    try:
        valid = validate_email(
            address,
            check_deliverability=False,
            globally_deliverable=False,
            test_environment=True,  # admits the RFC 2606 .test domain used by examples and tests
            allow_display_name=False,
        )
    except EmailNotValidError as exc:
        return str(exc), ""
    return None, valid.ascii_email or valid.normalized


def email_problem(address: str) -> str | None:
    """None when `address` is a usable e-mail address, else the reason in words."""
    return _checked(address)[0]


def normalize_email(address: str) -> str:
    """The address as stored and mailed to: an internationalised domain in its ASCII (xn--) form,
    which every SMTP server takes; only a non-ASCII local part needs the server's SMTPUTF8.
    Raises ValueError for an address email_problem refuses."""
    problem, normalized = _checked(address.strip())
    if problem:
        raise ValueError(problem)
    return normalized
