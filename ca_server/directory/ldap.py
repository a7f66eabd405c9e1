"""LDAP sign-in (issue 28), through ldap3: find the person with the service account (or
anonymously) under user_base with user_filter, check the password by binding as them, then read
their groups: the cn of each DN in their memberOf (Active Directory, OpenLDAP's memberof
overlay) and of the groups under group_base that list them (groupOfNames member,
groupOfUniqueNames uniqueMember, posixGroup memberUid). ldaps:// or start_tls with ca_file for
an encrypted connection. A directory that cannot be reached raises DirectoryUnavailable, so the
sign-in page says so while local (break-glass) accounts still sign in."""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import ldap3
from ldap3.core import exceptions as ldap_errors
from ldap3.utils.conv import escape_filter_chars
from ldap3.utils.dn import parse_dn

from ..config.auth import LdapConfig
from ..errors import CAError, untrusted_certificate


class DirectoryUnavailable(CAError):
    code = "directory_unavailable"


@dataclass(frozen=True)
class DirectoryPerson:
    name: str  # the user name typed (and the uid / sAMAccountName found)
    dn: str
    email: str | None
    groups: tuple[str, ...]  # the cn of every group they are in


def _server(ldap: LdapConfig) -> ldap3.Server:
    tls = None
    if ldap.url.startswith("ldaps://") or ldap.start_tls:
        tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=ldap.ca_file or None,
                        version=ssl.PROTOCOL_TLS_CLIENT)
    return ldap3.Server(ldap.url, use_ssl=ldap.url.startswith("ldaps://"), tls=tls, connect_timeout=ldap.timeout_seconds,
                        get_info=ldap3.NONE)


def _connect(ldap: LdapConfig, server: ldap3.Server, user: str | None, password: str | None) -> ldap3.Connection:
    conn = ldap3.Connection(server, user=user, password=password, receive_timeout=ldap.timeout_seconds,
                            raise_exceptions=False, auto_bind=ldap3.AUTO_BIND_NONE, read_only=True)
    conn.open()
    if ldap.start_tls and not ldap.url.startswith("ldaps://"):
        conn.start_tls()
    return conn


def authenticate(ldap: LdapConfig, bind_password: str | None, username: str, password: str) -> DirectoryPerson | None:
    """The person, when the directory knows `username` with this `password`; None otherwise."""
    if not username or not password or len(username) > 256:
        return None  # an empty password would be an anonymous bind, which "succeeds"
    server = _server(ldap)
    try:
        service = _connect(ldap, server, ldap.bind_dn or None, bind_password if ldap.bind_dn else None)
        try:
            if not service.bind():
                raise DirectoryUnavailable(f"The directory refused the service account {ldap.bind_dn or '(anonymous)'}: "
                                           "check [auth.ldap] bind_dn and its password.")
            found = service.search(ldap.user_base, ldap.user_filter.replace("{username}", escape_filter_chars(username)),
                                   attributes=["mail", "memberOf", "uid", "sAMAccountName"], size_limit=2)
            entries = list(service.entries) if found else []
            if len(entries) != 1:
                return None
            entry = entries[0]
            dn = entry.entry_dn
            person = _connect(ldap, server, dn, password)
            try:
                if not person.bind():
                    return None
            finally:
                person.unbind()
            groups = {_cn(value) for value in _values(entry, "memberOf")}
            if ldap.group_base:
                query = (f"(|(member={escape_filter_chars(dn)})(uniqueMember={escape_filter_chars(dn)})"
                         f"(memberUid={escape_filter_chars(username)}))")
                if service.search(ldap.group_base, query, attributes=["cn"]):
                    groups.update(str(group.cn) for group in service.entries if "cn" in group)
            emails = _values(entry, "mail")
            return DirectoryPerson(name=username, dn=dn, email=emails[0] if emails else None,
                                   groups=tuple(sorted(g for g in groups if g)))
        finally:
            service.unbind()
    except DirectoryUnavailable:
        raise
    except (ldap_errors.LDAPException, OSError) as exc:
        if untrusted_certificate(exc):
            raise DirectoryUnavailable(
                f"The directory at {ldap.url} presented a TLS certificate that [auth.ldap] ca_file "
                f"({ldap.ca_file or 'the system store'}) does not trust, or that is not for its host name; nobody "
                "can sign in through it until an admin fixes that. Local accounts can still sign in.") from None
        raise DirectoryUnavailable(f"The directory at {ldap.url} cannot be reached right now ({type(exc).__name__}); "
                                   "local accounts can still sign in.") from None


def _values(entry, attribute: str) -> list[str]:
    return [str(v) for v in entry[attribute].values] if attribute in entry else []


def _cn(dn: str) -> str:
    try:
        return next((value for attr, value, _ in parse_dn(dn) if attr.lower() == "cn"), "")
    except ldap_errors.LDAPException:
        return ""
