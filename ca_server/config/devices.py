"""The doors devices enroll through by themselves: `[est]` (RFC 7030).

    [est]
    enabled = false     # EST under /.well-known/est/: cacerts, simpleenroll, simplereenroll, csrattrs
    profile = ""        # the certificate profile EST enrollments get; "" = [policy] default_profile
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class EstConfig:
    enabled: bool = False
    profile: str = ""


def check_devices(est: EstConfig, profiles: dict) -> None:
    if est.profile and est.profile not in profiles:
        raise ConfigError(f"est.profile: no profile named {est.profile!r}; the profiles are {', '.join(profiles)}")
