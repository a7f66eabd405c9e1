"""The configuration: instance/config.toml read once into frozen dataclasses.

Every key has a default (the value in config.example.toml). Unknown keys, wrong types and contradictions
raise ConfigError whose message starts with the dotted key, so start-up stops loudly instead of running with
a typo'd setting. Secrets are never in the TOML: the `*_env` keys name environment variables."""

from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ..emails import email_problem
from ..errors import ConfigError
from ..pki.keys import CA_KEY_TYPES, CSR_KEY_TYPES
from ..pki.names import dns_name_problem
from .auth import AuthConfig, auth_from_dict
from .devices import EstConfig, ScepConfig, check_devices, est_from_dict, scep_from_dict
from .notify import MailConfig, NotifyConfig, check_mail, notify_from_dict
from .secrets import Secrets, read_secrets  # noqa: F401  (re-exported: config is where callers look)
from .tables import section

EXAMPLE_CONFIG = Path(__file__).resolve().parent.parent / "config.example.toml"
KNOWN_EKUS = ("serverAuth", "clientAuth")


@dataclass(frozen=True)
class ServerConfig:
    base_url: str = "http://127.0.0.1:5000"
    pki_base_url: str = ""  # "" = base_url: where CRL, OCSP and CA-certificate URLs in certificates point
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 2
    threads: int = 4
    body_threads: int = 32
    max_connections: int = 4096
    backlog: int = 4096
    header_timeout_seconds: int = 5
    body_timeout_seconds: int = 20
    max_request_bytes: int = 1_048_576
    sign_in_rate_limit: str = "10 per minute"
    submission_rate_limit: str = "1200 per minute"
    access_log: bool = True

    @property
    def pki_url(self) -> str:
        """The URL written into certificates (CRL distribution points, OCSP, caIssuers)."""
        return self.pki_base_url or self.base_url


@dataclass(frozen=True)
class CAConfig:
    organization: str = "Example Org"
    root_common_name: str = "Example Org Root CA"
    intermediate_common_name: str = "Example Org Issuing CA"
    root_key_type: str = "ec-p384"
    intermediate_key_type: str = "ec-p256"
    root_validity_days: int = 3650
    intermediate_validity_days: int = 1825
    intermediate_warning_days: int = 365  # the dashboard and the admins' mail say to roll over this long before the end
    permitted_domains: tuple[str, ...] = ()
    passphrase_env: str = "CA_SERVER_KEY_PASSPHRASE"
    intermediate_key: str = ""  # "" = instance/keys (encrypted file); "pkcs11:token=...;object=..." = in a token
    pkcs11_module: str = ""  # the token's PKCS#11 library, when the URI has no module-path
    pkcs11_pin_env: str = "CA_SERVER_PKCS11_PIN"


@dataclass(frozen=True)
class PolicyConfig:
    allow_wildcards: bool = False
    allowed_domains: tuple[str, ...] = ()
    allow_ip_sans: bool = True
    max_validity_days: int = 397
    default_validity_days: int = 90
    over_max_validity: str = "refuse"
    key_types: tuple[str, ...] = ("rsa", "ec-p256", "ec-p384", "ed25519")
    min_rsa_bits: int = 2048
    max_rsa_bits: int = 8192
    max_csr_bytes: int = 65536
    approval_for_other_names: bool = False
    default_profile: str = "server"


@dataclass(frozen=True)
class ProfileConfig:
    extended_key_usage: tuple[str, ...] = ("serverAuth",)
    description: str = ""


@dataclass(frozen=True)
class RemindersConfig:
    days_before: tuple[int, ...] = (30, 14, 7, 1)
    interval_minutes: int = 60
    default_recipients: tuple[str, ...] = ()
    retry_minutes: int = 10


@dataclass(frozen=True)
class RevocationConfig:
    crl_validity_hours: int = 168
    root_crl_validity_hours: int = 8760
    crl_refresh_hours: int = 48
    ocsp_validity_hours: int = 24
    ocsp_responder_validity_days: int = 90
    ocsp_max_age_seconds: int = 300
    root_crl_warning_days: int = 30


@dataclass(frozen=True)
class AcmeConfig:
    enabled: bool = True
    require_eab: bool = False
    http01_port: int = 80
    tls_alpn01_port: int = 443
    dns_resolvers: tuple[str, ...] = ()
    validity_days: int = 90
    default_profile: str = ""
    order_lifetime_hours: int = 24
    validation_timeout_seconds: int = 10
    validation_attempts: int = 3
    validation_threads: int = 4
    validation_wait_ms: int = 200
    renewal_window_percent: int = 33


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = ""  # "" = instance/ca.sqlite3; postgresql://USER@HOST:PORT/DB = shared by every node
    password_env: str = "CA_SERVER_DB_PASSWORD"


@dataclass(frozen=True)
class BackupConfig:
    dir: str = ""  # "" = instance/backups; best another disk or host
    interval_hours: int = 0  # 0 = no scheduled backups (`ca-server backup` still works)
    keep: int = 7
    recipient: str = ""  # an age public key (age1...): backups are encrypted to it; "" = not encrypted


@dataclass(frozen=True)
class LogConfig:
    enabled: bool = True  # the append-only issuance log (recovery/issuance_log.py)
    path: str = ""  # "" = instance/issuance-log/entries.jsonl; best another disk than the store's


@dataclass(frozen=True)
class MetricsConfig:
    public: bool = True


DEFAULT_PROFILES: dict[str, ProfileConfig] = {
    "server": ProfileConfig(("serverAuth",), "TLS server (web servers, CUCM tomcat)"),
    "client": ProfileConfig(("clientAuth",), "TLS client"),
    "server+client": ProfileConfig(
        ("serverAuth", "clientAuth"), "TLS server and client (CUCM callmanager, mutual TLS)"
    ),
}


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    ca: CAConfig = field(default_factory=CAConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    profiles: dict[str, ProfileConfig] = field(default_factory=lambda: dict(DEFAULT_PROFILES))
    mail: MailConfig = field(default_factory=MailConfig)
    reminders: RemindersConfig = field(default_factory=RemindersConfig)
    revocation: RevocationConfig = field(default_factory=RevocationConfig)
    acme: AcmeConfig = field(default_factory=AcmeConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    notify: NotifyConfig = field(default_factory=NotifyConfig)
    scep: ScepConfig = field(default_factory=ScepConfig)  # the device doors: config/devices.py
    est: EstConfig = field(default_factory=EstConfig)
    backup: BackupConfig = field(default_factory=BackupConfig)
    log: LogConfig = field(default_factory=LogConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)  # directory sign-in, CI tokens: config/auth.py


_SECTIONS = {
    "server": ServerConfig,
    "ca": CAConfig,
    "policy": PolicyConfig,
    "mail": MailConfig,
    "reminders": RemindersConfig,
    "revocation": RevocationConfig,
    "acme": AcmeConfig,
    "metrics": MetricsConfig,
    "database": DatabaseConfig,
    "backup": BackupConfig,
    "log": LogConfig,
}
# Sections with tables inside, read by their own functions.
_PARSED = {"notify": notify_from_dict, "scep": scep_from_dict, "est": est_from_dict, "auth": auth_from_dict}


def load_config(path: Path | None) -> Config:
    """Read and validate a config file; None (or a missing file) gives the defaults."""
    if path is None or not path.exists():
        return validate(Config())
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return config_from_dict(data)


def config_from_dict(data: dict[str, typing.Any]) -> Config:
    sections: dict[str, typing.Any] = {}
    for name, value in data.items():
        if name == "profiles":
            sections["profiles"] = _profiles(value)
        elif name in _PARSED:
            sections[name] = _PARSED[name](value)
        elif name in _SECTIONS:
            sections[name] = section(name, _SECTIONS[name], value)
        else:
            raise ConfigError(f"{name}: unknown section (known: {', '.join([*_SECTIONS, 'profiles', *_PARSED])})")
    return validate(Config(**sections))


def with_overrides(config: Config, **sections: dict[str, typing.Any]) -> Config:
    """A copy of `config` with some keys replaced, validated like a file: used by tests and tools."""
    replaced = {}
    for name, values in sections.items():
        if name in _PARSED:  # replaced whole, from its defaults
            replaced[name] = _PARSED[name](values)
            continue
        current = getattr(config, name)
        fields = {f.name: getattr(current, f.name) for f in dataclasses.fields(current)}
        fields.update(section(name, type(current), values, python_names=True))
        replaced[name] = type(current)(**fields)
    return validate(dataclasses.replace(config, **replaced))


def _profiles(value: typing.Any) -> dict[str, ProfileConfig]:
    if not isinstance(value, dict) or not value:
        raise ConfigError("profiles: must be a table of profiles, like [profiles.server]")
    return {name: section(f"profiles.{name}", ProfileConfig, body) for name, body in value.items()}


def check_base_url(key: str, value: str) -> None:
    url = urlsplit(value)
    if url.scheme not in ("http", "https") or not url.hostname or url.query or url.fragment:
        raise ConfigError(f"{key}: must be an http:// or https:// URL, like http://ca.example.test, not {value!r}")
    try:
        url.port  # noqa: B018  (raises on a port that is not a number or out of range)
    except ValueError:
        raise ConfigError(f"{key}: the port in {value!r} is not a port number") from None
    if value.endswith("/"):
        raise ConfigError(f"{key}: write it without a trailing slash")
    if url.username is not None or url.password is not None:  # it is written into every certificate
        raise ConfigError(f"{key}: no user name or password in it; it is written into every certificate, where "
                          "clients read it and do not sign in")


def validate(config: Config) -> Config:
    """Checks across keys and of values; every message starts with the dotted key."""
    s, ca, p, m, r, rv = (config.server, config.ca, config.policy, config.mail, config.reminders,
                          config.revocation)
    check_base_url("server.base_url", s.base_url)
    if s.pki_base_url:
        check_base_url("server.pki_base_url", s.pki_base_url)
    _positive("server.port", s.port, 65535)
    _positive("server.workers", s.workers, 64)
    _positive("server.threads", s.threads, 256)
    _positive("server.body_threads", s.body_threads, 4096)
    _positive("server.max_connections", s.max_connections, 1_000_000)
    _positive("server.backlog", s.backlog, 65535)
    _positive("server.header_timeout_seconds", s.header_timeout_seconds, 60)
    _positive("server.body_timeout_seconds", s.body_timeout_seconds, 3600)
    _positive("server.max_request_bytes", s.max_request_bytes)
    for key in ("sign_in_rate_limit", "submission_rate_limit"):
        _rate_limit(f"server.{key}", getattr(s, key))

    for key in ("root_key_type", "intermediate_key_type"):
        if getattr(ca, key) not in CA_KEY_TYPES:
            raise ConfigError(f"ca.{key}: must be one of {', '.join(CA_KEY_TYPES)}")
    for key in ("organization", "root_common_name", "intermediate_common_name"):
        if not getattr(ca, key).strip() or len(getattr(ca, key)) > 64:
            raise ConfigError(f"ca.{key}: must be 1 to 64 characters")
    _positive("ca.root_validity_days", ca.root_validity_days, 36500)
    _positive("ca.intermediate_validity_days", ca.intermediate_validity_days, 36500)
    _positive("ca.intermediate_warning_days", ca.intermediate_warning_days, 36500)
    if ca.intermediate_validity_days > ca.root_validity_days:
        raise ConfigError("ca.intermediate_validity_days: must not exceed ca.root_validity_days")
    _domains("ca.permitted_domains", ca.permitted_domains)
    _env_name("ca.passphrase_env", ca.passphrase_env)
    _env_name("ca.pkcs11_pin_env", ca.pkcs11_pin_env)
    if ca.intermediate_key:
        _pkcs11("ca.intermediate_key", ca.intermediate_key, ca.pkcs11_module)

    _domains("policy.allowed_domains", p.allowed_domains)
    _positive("policy.max_validity_days", p.max_validity_days, 36500)
    _positive("policy.default_validity_days", p.default_validity_days, 36500)
    if p.default_validity_days > p.max_validity_days:
        raise ConfigError("policy.default_validity_days: must not exceed policy.max_validity_days")
    if p.over_max_validity not in ("refuse", "cap"):
        raise ConfigError('policy.over_max_validity: must be "refuse" or "cap"')
    for i, kt in enumerate(p.key_types):
        if kt not in CSR_KEY_TYPES:
            raise ConfigError(f"policy.key_types[{i}]: {kt!r} is not one of {', '.join(CSR_KEY_TYPES)}")
    if p.min_rsa_bits < 2048:
        raise ConfigError("policy.min_rsa_bits: must be at least 2048 (smaller RSA keys are breakable)")
    if p.max_rsa_bits < p.min_rsa_bits or p.max_rsa_bits > 16384:
        raise ConfigError("policy.max_rsa_bits: must be between policy.min_rsa_bits and 16384")
    _positive("policy.max_csr_bytes", p.max_csr_bytes, 1_048_576)
    if p.default_profile not in config.profiles:
        raise ConfigError(f"policy.default_profile: no profile named {p.default_profile!r} in [profiles]")

    for name, prof in config.profiles.items():
        if not name or len(name) > 40 or not all(c.isalnum() or c in "+-_." for c in name):
            raise ConfigError(f"profiles.{name}: a profile name uses letters, digits and + - _ .")
        if not prof.extended_key_usage:
            raise ConfigError(f"profiles.{name}.extended_key_usage: must name at least one usage")
        for eku in prof.extended_key_usage:
            if eku not in KNOWN_EKUS:
                raise ConfigError(
                    f"profiles.{name}.extended_key_usage: {eku!r} is not one of {', '.join(KNOWN_EKUS)}"
                )

    check_mail(m)
    _env_name("mail.password_env", m.password_env)
    _email("mail.from", m.from_address)
    _env_name("database.password_env", config.database.password_env)
    if config.database.url and not config.database.url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("database.url: must be empty (SQLite in the instance) or a postgresql:// URL")
    if ":" in config.database.url.split("//", 1)[-1].split("@", 1)[0] and "@" in config.database.url:
        raise ConfigError(f"database.url: put the password in the environment variable {config.database.password_env}, not in the URL")

    if not r.days_before:
        raise ConfigError("reminders.days_before: must list at least one day, like [30, 14, 7, 1]")
    for i, d in enumerate(r.days_before):
        _positive(f"reminders.days_before[{i}]", d, 3650)
    if len(set(r.days_before)) != len(r.days_before):
        raise ConfigError("reminders.days_before: each day may appear once")
    _positive("reminders.interval_minutes", r.interval_minutes, 1440)
    _positive("reminders.retry_minutes", r.retry_minutes, 1440)
    for i, addr in enumerate(r.default_recipients):
        _email(f"reminders.default_recipients[{i}]", addr)

    _positive("revocation.crl_validity_hours", rv.crl_validity_hours, 8760 * 5)
    _positive("revocation.root_crl_validity_hours", rv.root_crl_validity_hours, 8760 * 5)
    _positive("revocation.crl_refresh_hours", rv.crl_refresh_hours, 8760 * 5)
    if rv.crl_refresh_hours >= rv.crl_validity_hours:
        raise ConfigError("revocation.crl_refresh_hours: must be less than revocation.crl_validity_hours")
    _positive("revocation.ocsp_validity_hours", rv.ocsp_validity_hours, 24 * 30)
    _positive("revocation.ocsp_responder_validity_days", rv.ocsp_responder_validity_days, 3650)
    _positive("revocation.ocsp_max_age_seconds", rv.ocsp_max_age_seconds, 7 * 86400)
    _positive("revocation.root_crl_warning_days", rv.root_crl_warning_days, 3650)
    _acme(config)
    check_devices(config.scep, config.est, config.profiles)
    for i, issuer in enumerate(config.auth.jwt_issuers):
        _domains(f"auth.jwt_issuers[{i}].domains", issuer.domains)
    for i, mapping in enumerate(config.auth.groups):
        _domains(f"auth.groups[{i}].domains", mapping.domains)
    b = config.backup
    if not 0 <= b.interval_hours <= 24 * 365:
        raise ConfigError(f"backup.interval_hours: 0 (no scheduled backups) up to 8760, not {b.interval_hours}")
    _positive("backup.keep", b.keep, 10_000)
    if b.recipient and not b.recipient.startswith("age1"):
        raise ConfigError(f"backup.recipient: an age public key (age1..., from age-keygen), not {b.recipient!r}")
    return config


def _acme(config: Config) -> None:
    a = config.acme
    _positive("acme.http01_port", a.http01_port, 65535)
    _positive("acme.tls_alpn01_port", a.tls_alpn01_port, 65535)
    for i, resolver in enumerate(a.dns_resolvers):
        host, _, port = resolver.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"acme.dns_resolvers[{i}]: must be \"host:port\", like \"10.0.0.53:53\", not {resolver!r}")
    _positive("acme.validity_days", a.validity_days, 36500)
    if a.validity_days > config.policy.max_validity_days:
        raise ConfigError(f"acme.validity_days: must not exceed policy.max_validity_days ({config.policy.max_validity_days})")
    if a.default_profile and a.default_profile not in config.profiles:
        raise ConfigError(f"acme.default_profile: no profile named {a.default_profile!r}")
    _positive("acme.order_lifetime_hours", a.order_lifetime_hours, 24 * 30)
    _positive("acme.validation_timeout_seconds", a.validation_timeout_seconds, 120)
    _positive("acme.validation_attempts", a.validation_attempts, 10)
    _positive("acme.validation_threads", a.validation_threads, 64)
    if not 0 <= a.validation_wait_ms <= 10_000:
        raise ConfigError(f"acme.validation_wait_ms: must be 0 to 10000, not {a.validation_wait_ms}")
    _positive("acme.renewal_window_percent", a.renewal_window_percent, 90)


def _positive(key: str, value: int, maximum: int | None = None) -> None:
    if value < 1 or (maximum is not None and value > maximum):
        limit = f" and at most {maximum}" if maximum is not None else ""
        raise ConfigError(f"{key}: must be at least 1{limit}, not {value}")


def _domains(key: str, domains: tuple[str, ...]) -> None:
    for i, d in enumerate(domains):
        problem = dns_name_problem(d)
        if problem or d.startswith("*."):
            raise ConfigError(f"{key}[{i}]: {d!r} is not a domain name: {problem or 'no wildcards here'}")


def _env_name(key: str, name: str) -> None:
    if not name or not all(c.isalnum() or c == "_" for c in name):
        raise ConfigError(f"{key}: must be an environment variable name, like CA_SERVER_SECRET")


def _email(key: str, address: str) -> None:
    problem = email_problem(address)
    if problem:
        raise ConfigError(f"{key}: {address!r} is not an e-mail address: {problem}")


def _pkcs11(key: str, uri: str, module: str) -> None:
    from ..pki.pkcs11_key import Pkcs11Uri

    try:
        Pkcs11Uri.parse(uri, module)
    except ValueError as exc:
        raise ConfigError(f"{key}: {exc}") from None


def _rate_limit(key: str, text: str) -> None:
    from limits import parse_many

    try:
        parse_many(text)
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not a rate limit, write it like \"10 per minute\"") from None
