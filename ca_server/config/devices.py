"""The doors devices enroll through by themselves: `[scep]` (RFC 8894) and `[est]` (RFC 7030).

    [scep]
    enabled = false     # SCEP at /scep: GetCACaps, GetCACert, PKIOperation (GET and POST)
    challenge_env = "CA_SERVER_SCEP_CHALLENGE"   # the static challenge password's variable
    profile = "client"  # the profile SCEP certificates get; "" = [policy] default_profile

    [est]
    enabled = false     # EST under /.well-known/est/: cacerts, simpleenroll, simplereenroll, csrattrs
    profile = ""        # the certificate profile EST enrollments get; "" = [policy] default_profile
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class ScepConfig:
    enabled: bool = False
    challenge_env: str = "CA_SERVER_SCEP_CHALLENGE"
    profile: str = "client"
    challenge_hours: int = 24  # how long a one-time challenge lasts unless --expires-in says


@dataclass(frozen=True)
class EstConfig:
    enabled: bool = False
    profile: str = ""


def check_devices(scep: ScepConfig, est: EstConfig, profiles: dict) -> None:
    for section, profile, on in (("scep", scep.profile, scep.enabled), ("est", est.profile, est.enabled)):
        if on and profile and profile not in profiles:
            raise ConfigError(f"{section}.profile: no profile named {profile!r}; the profiles are {', '.join(profiles)}")
    if not scep.challenge_env:
        raise ConfigError("scep.challenge_env: name an environment variable, like \"CA_SERVER_SCEP_CHALLENGE\"")
    if not 1 <= scep.challenge_hours <= 24 * 365:
        raise ConfigError("scep.challenge_hours: a whole number of hours from 1 to 8760")
