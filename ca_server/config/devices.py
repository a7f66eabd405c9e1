"""The doors devices enroll through by themselves: `[scep]` (RFC 8894) and `[est]` (RFC 7030).

    [scep]
    enabled = false     # SCEP at /scep: GetCACaps, GetCACert, PKIOperation (GET and POST)
    challenge_env = "CA_SERVER_SCEP_CHALLENGE"   # the static challenge password's variable
    profile = "client"  # the profile SCEP certificates get; "" = [policy] default_profile
    domains = []        # names its devices may ask for; [] = any name the policy allows
    notify = []         # who is reminded before its certificates expire
    hold_out_of_scope = false  # outside `domains`: PENDING until an admin approves (else refused)

    [scep.endpoints.phones]    # one more endpoint, at /scep/phones, with the keys above
    challenge_env = "CA_SERVER_SCEP_PHONES_CHALLENGE"   # "" = one-time challenges only

    [est]
    enabled = false     # EST under /.well-known/est/: cacerts, simpleenroll, simplereenroll, csrattrs
    profile = ""        # the certificate profile EST enrollments get; "" = [policy] default_profile
    domains = []
    notify = []

    [est.labels.printers]      # /.well-known/est/printers/, with profile, domains and notify
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import ConfigError
from .tables import check_ca_file, section

DEFAULT = "default"  # the endpoint at /scep and /.well-known/est/
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
_RESERVED = {DEFAULT, "pkiclient.exe", "cacerts", "simpleenroll", "simplereenroll", "csrattrs", "serverkeygen"}


@dataclass(frozen=True)
class DeviceEndpoint:
    """One SCEP endpoint or EST label: what it issues, to which names, who is reminded."""

    name: str = DEFAULT
    profile: str = ""
    domains: tuple[str, ...] = ()
    notify: tuple[str, ...] = ()
    hold_out_of_scope: bool = False  # SCEP: PENDING (CertPoll picks it up) instead of a refusal
    challenge_env: str = ""  # SCEP: the static challenge password's variable; "" = one-time ones only
    # SCEP: a challenge neither static nor one-time is POSTed here with the request's names; 200 allows
    # (step-ca's SCEPCHALLENGE webhook). Signed with the secret in challenge_webhook_secret_env.
    challenge_webhook: str = ""
    challenge_webhook_secret_env: str = ""
    challenge_webhook_ca_file: str = ""  # https: the CA(s) trusted for its certificate, besides the system's


@dataclass(frozen=True)
class ScepConfig:
    enabled: bool = False
    challenge_env: str = "CA_SERVER_SCEP_CHALLENGE"
    profile: str = "client"
    challenge_hours: int = 24  # how long a one-time challenge lasts unless --expires-in says
    domains: tuple[str, ...] = ()
    notify: tuple[str, ...] = ()
    hold_out_of_scope: bool = False
    challenge_webhook: str = ""
    challenge_webhook_secret_env: str = ""
    challenge_webhook_ca_file: str = ""
    endpoints: tuple[DeviceEndpoint, ...] = ()  # the named ones, [scep.endpoints.NAME]

    def endpoint(self, name: str) -> DeviceEndpoint | None:
        return next((e for e in self.all_endpoints if e.name == name), None)

    @property
    def all_endpoints(self) -> tuple[DeviceEndpoint, ...]:
        return (_default_endpoint(self), *self.endpoints)


@dataclass(frozen=True)
class EstConfig:
    enabled: bool = False
    profile: str = ""
    domains: tuple[str, ...] = ()
    notify: tuple[str, ...] = ()
    labels: tuple[DeviceEndpoint, ...] = ()  # [est.labels.NAME]

    def label(self, name: str) -> DeviceEndpoint | None:
        return next((e for e in self.all_labels if e.name == name), None)

    @property
    def all_labels(self) -> tuple[DeviceEndpoint, ...]:
        return (_default_endpoint(self), *self.labels)


def _default_endpoint(section_config: ScepConfig | EstConfig) -> DeviceEndpoint:
    """The endpoint at /scep or /.well-known/est/: the section's own keys of an endpoint."""
    return DeviceEndpoint(**{f.name: getattr(section_config, f.name) for f in dataclasses.fields(DeviceEndpoint)
                             if hasattr(section_config, f.name)})


def scep_from_dict(value: typing.Any) -> ScepConfig:
    top, named = _split("scep", "endpoints", value)
    return dataclasses.replace(section("scep", ScepConfig, top), endpoints=_named("scep.endpoints", named))


def est_from_dict(value: typing.Any) -> EstConfig:
    top, named = _split("est", "labels", value)
    labels = _named("est.labels", named)
    for label in labels:
        if label.hold_out_of_scope or label.challenge_env or label.challenge_webhook or \
                label.challenge_webhook_secret_env or label.challenge_webhook_ca_file:
            raise ConfigError(f"est.labels.{label.name}: takes profile, domains and notify only")
    return dataclasses.replace(section("est", EstConfig, top), labels=labels)


def _split(name: str, inner: str, value: typing.Any) -> tuple[dict, dict]:
    if not isinstance(value, dict):
        raise ConfigError(f"{name}: must be a table, like [{name}]")
    top = dict(value)
    named = top.pop(inner, {})
    if not isinstance(named, dict):
        raise ConfigError(f"{name}.{inner}: write each one as a [{name}.{inner}.NAME] table")
    return top, named


def _named(key: str, tables: dict) -> tuple[DeviceEndpoint, ...]:
    out = []
    for name, body in tables.items():
        if not _NAME.fullmatch(name) or name in _RESERVED:
            raise ConfigError(f"{key}.{name}: a name of lower-case letters, digits, - and _ (up to 32), other than "
                              f"{', '.join(sorted(_RESERVED))}, is needed in the URL")
        if isinstance(body, dict) and "name" in body:
            raise ConfigError(f"{key}.{name}.name: unknown key (the table's name is the endpoint's)")
        out.append(dataclasses.replace(section(f"{key}.{name}", DeviceEndpoint, body), name=name))
    return tuple(out)


def check_devices(scep: ScepConfig, est: EstConfig, profiles: dict) -> None:
    from . import _domains, _email, _env_name

    doors = [(f"scep{'.endpoints.' + e.name if e.name != DEFAULT else ''}", e, scep.enabled)
             for e in scep.all_endpoints]
    doors += [(f"est{'.labels.' + e.name if e.name != DEFAULT else ''}", e, est.enabled) for e in est.all_labels]
    for key, door, on in doors:
        if on and door.profile and door.profile not in profiles:
            raise ConfigError(f"{key}.profile: no profile named {door.profile!r}; the profiles are "
                              f"{', '.join(profiles)}")
        _domains(f"{key}.domains", door.domains)
        for i, address in enumerate(door.notify):
            _email(f"{key}.notify[{i}]", address)
        if door.challenge_env:
            _env_name(f"{key}.challenge_env", door.challenge_env)
        if door.challenge_webhook_secret_env:
            _env_name(f"{key}.challenge_webhook_secret_env", door.challenge_webhook_secret_env)
        url = urlsplit(door.challenge_webhook)
        if door.challenge_webhook and (url.scheme not in ("http", "https") or not url.hostname):
            raise ConfigError(f"{key}.challenge_webhook: must be an http:// or https:// URL, not "
                              f"{door.challenge_webhook!r}")
        if door.challenge_webhook_ca_file:
            if url.scheme != "https":
                raise ConfigError(f"{key}.challenge_webhook_ca_file: for an https:// challenge_webhook only")
            check_ca_file(f"{key}.challenge_webhook_ca_file", door.challenge_webhook_ca_file)
    if not scep.challenge_env:
        raise ConfigError("scep.challenge_env: name an environment variable, like \"CA_SERVER_SCEP_CHALLENGE\"")
    if not 1 <= scep.challenge_hours <= 24 * 365:
        raise ConfigError("scep.challenge_hours: a whole number of hours from 1 to 8760")
