"""[auth]: sign-in sessions and who may get an API token from outside (issue 28): how long a
sign-in session lasts (held by the server, store/sessions.py), and [[auth.jwt_issuers]]: the CI systems (GitLab CI, GitHub Actions, any OIDC issuer with a JWKS) whose
job tokens POST /api/v1/token/exchange turns into short-lived API tokens for the mapped domains."""

from __future__ import annotations

import typing
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import ConfigError
from .tables import check_ca_file, coerce, section


@dataclass(frozen=True)
class JwtIssuer:
    issuer: str  # the `iss` claim, exactly (https://gitlab.example.test)
    jwks_url: str  # where its signing keys are (https://gitlab.example.test/oauth/discovery/keys)
    audience: str  # the `aud` the job asks for (GitLab: id_tokens: ... aud:)
    domains: tuple[str, ...]  # what the API token may request names under
    claims: tuple[tuple[str, str], ...] = ()  # claim = the value it must have (project_path = "net/routers")
    token_minutes: int = 60  # the API token's life, at most the JWT's own
    ca_file: str = ""  # the CA certificate(s) that sign jwks_url's TLS certificate ("": the system's)


@dataclass(frozen=True)
class LdapConfig:
    """[auth.ldap]: people sign in with their directory user name and password."""
    url: str  # ldaps://dc1.corp.example:636, or ldap://... (with start_tls = true to encrypt)
    user_base: str  # where people are: ou=people,dc=corp,dc=example
    bind_dn: str = ""  # the service account that searches ("" = search anonymously)
    bind_password_env: str = ""  # the environment variable with its password
    user_filter: str = "(uid={username})"  # Active Directory: (sAMAccountName={username})
    group_base: str = ""  # where groups are searched by member (groupOfNames, groupOfUniqueNames, posixGroup)
    ca_file: str = ""  # the CA certificate(s) that sign the directory's TLS certificate
    start_tls: bool = False
    timeout_seconds: int = 5


@dataclass(frozen=True)
class OidcConfig:
    """[auth.oidc]: "Sign in with <name>" on the sign-in page (Keycloak, Entra ID, Okta, GitLab...)."""
    issuer: str  # https://sso.example.test/realms/corp (its /.well-known/openid-configuration is read)
    client_id: str
    client_secret_env: str = ""  # the environment variable with the client secret ("" = a public client, PKCE)
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    groups_claim: str = "groups"  # the ID token claim with the person's groups
    username_claim: str = "preferred_username"  # the user name ca-server shows (else email, else sub)
    name: str = "single sign-on"  # shown on the button: "Sign in with <name>"
    ca_file: str = ""  # the CA certificate(s) that sign the provider's TLS certificate ("": the system's)
    timeout_seconds: int = 10  # each call to the provider: a hung one must not hold the server's threads


ROLES = ("admin", "approver", "requester")


@dataclass(frozen=True)
class GroupRole:
    """[[auth.groups]]: members of `group` (its cn, or a value of the OIDC groups claim) get `role`
    and may request names under `domains`."""
    group: str
    role: str = "requester"
    domains: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuthConfig:
    session_idle_minutes: int = 480  # a sign-in session unused this long ends
    session_hours: int = 24  # and every session ends this long after sign-in, used or not
    jwt_issuers: tuple[JwtIssuer, ...] = ()
    ldap: LdapConfig | None = None
    oidc: OidcConfig | None = None
    groups: tuple[GroupRole, ...] = ()

    def jwt_issuer(self, issuer: str) -> JwtIssuer | None:
        return next((i for i in self.jwt_issuers if i.issuer == issuer), None)


_STRINGS = ("issuer", "jwks_url", "audience")


def auth_from_dict(value: typing.Any) -> AuthConfig:
    if not isinstance(value, dict):
        raise ConfigError("auth: must be a table, like [auth]")
    unknown = set(value) - {"jwt_issuers", "session_idle_minutes", "session_hours", "ldap", "oidc", "groups"}
    if unknown:
        raise ConfigError(f"auth.{sorted(unknown)[0]}: unknown key (known: groups, jwt_issuers, ldap, oidc, "
                          "session_hours, session_idle_minutes)")
    tables = value.get("jwt_issuers", [])
    if not isinstance(tables, list):
        raise ConfigError("auth.jwt_issuers: write each issuer as an [[auth.jwt_issuers]] table")
    idle = coerce("auth.session_idle_minutes", int, value.get("session_idle_minutes", 480))
    hours = coerce("auth.session_hours", int, value.get("session_hours", 24))
    if not 1 <= idle <= 60 * 24 * 30:
        raise ConfigError(f"auth.session_idle_minutes: from 1 to 43200, not {idle}")
    if not 1 <= hours <= 24 * 90:
        raise ConfigError(f"auth.session_hours: from 1 to 2160, not {hours}")
    groups = value.get("groups", [])
    if not isinstance(groups, list):
        raise ConfigError("auth.groups: write each mapping as an [[auth.groups]] table")
    return AuthConfig(session_idle_minutes=idle, session_hours=hours,
                      jwt_issuers=tuple(_issuer(f"auth.jwt_issuers[{i}]", t) for i, t in enumerate(tables)),
                      ldap=_ldap(value["ldap"]) if "ldap" in value else None,
                      oidc=_oidc(value["oidc"]) if "oidc" in value else None,
                      groups=tuple(_group(f"auth.groups[{i}]", g) for i, g in enumerate(groups)))


def _with_required(key: str, cls: type, table: typing.Any, required: tuple[str, ...]) -> typing.Any:
    """section() of a table whose `required` keys have no default (named in the error if missing)."""
    for name in required:
        if isinstance(table, dict) and name not in table:
            raise ConfigError(f"{key}.{name}: required")
    return section(key, cls, table)


def _url(key: str, value: str, schemes: tuple[str, ...], shown: str) -> None:
    if urlsplit(value).scheme not in schemes or not urlsplit(value).netloc:
        raise ConfigError(f"{key}: {shown}, not {value!r}")


def _ldap(table: typing.Any) -> LdapConfig:
    ldap = _with_required("auth.ldap", LdapConfig, table, ("url", "user_base"))
    _url("auth.ldap.url", ldap.url, ("ldap", "ldaps"), "ldaps://host[:port] or ldap://host[:port]")
    if "{username}" not in ldap.user_filter or not ldap.user_filter.startswith("("):
        raise ConfigError("auth.ldap.user_filter: an LDAP filter with {username}, like (uid={username})")
    if ldap.bind_dn and not ldap.bind_password_env:
        raise ConfigError("auth.ldap.bind_password_env: required with bind_dn (the variable with its password)")
    if not 1 <= ldap.timeout_seconds <= 60:
        raise ConfigError(f"auth.ldap.timeout_seconds: from 1 to 60, not {ldap.timeout_seconds}")
    return ldap


def _oidc(table: typing.Any) -> OidcConfig:
    oidc = _with_required("auth.oidc", OidcConfig, table, ("issuer", "client_id"))
    _url("auth.oidc.issuer", oidc.issuer, ("https", "http"), "the provider's https:// URL")
    if "openid" not in oidc.scopes:
        raise ConfigError('auth.oidc.scopes: must include "openid"')
    if oidc.ca_file:
        check_ca_file("auth.oidc.ca_file", oidc.ca_file)
    if not 1 <= oidc.timeout_seconds <= 120:
        raise ConfigError(f"auth.oidc.timeout_seconds: from 1 to 120, not {oidc.timeout_seconds}")
    return oidc


def _group(key: str, table: typing.Any) -> GroupRole:
    mapping = _with_required(key, GroupRole, table, ("group",))
    if not mapping.group:
        raise ConfigError(f"{key}.group: the group's name as the directory shows it (LDAP: its cn)")
    if mapping.role not in ROLES:
        raise ConfigError(f"{key}.role: one of {', '.join(ROLES)}, not {mapping.role!r}")
    return mapping


def _issuer(key: str, table: typing.Any) -> JwtIssuer:
    if not isinstance(table, dict):
        raise ConfigError(f"{key}: must be a table")
    known = {"issuer", "jwks_url", "audience", "domains", "claims", "token_minutes", "ca_file"}
    for name in table:
        if name not in known:
            raise ConfigError(f"{key}.{name}: unknown key (known keys: {', '.join(sorted(known))})")
    for name in (*_STRINGS, "domains"):
        if name not in table:
            raise ConfigError(f"{key}.{name}: required")
    values = {name: coerce(f"{key}.{name}", str, table[name]) for name in _STRINGS}
    for name in ("issuer", "jwks_url"):
        _url(f"{key}.{name}", values[name], ("https", "http"), "an https:// URL")
    domains = coerce(f"{key}.domains", tuple[str, ...], table["domains"])
    if not domains:
        raise ConfigError(f"{key}.domains: at least one domain the exchanged tokens may request names under")
    claims = table.get("claims", {})
    if not isinstance(claims, dict) or not all(isinstance(v, str) for v in claims.values()):
        raise ConfigError(f'{key}.claims: a table of claim = "required value", like {{ project_path = "net/routers" }}')
    minutes = coerce(f"{key}.token_minutes", int, table.get("token_minutes", 60))
    if not 1 <= minutes <= 24 * 60:
        raise ConfigError(f"{key}.token_minutes: from 1 to 1440, not {minutes}")
    ca_file = coerce(f"{key}.ca_file", str, table.get("ca_file", ""))
    if ca_file:
        check_ca_file(f"{key}.ca_file", ca_file)
    return JwtIssuer(**values, domains=domains, claims=tuple(sorted(claims.items())), token_minutes=minutes,
                     ca_file=ca_file)
