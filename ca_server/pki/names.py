"""Names in certificates: DNS name syntax, wildcards, domain membership, IP addresses.

DNS rules follow RFC 1035/1123 (LDH labels of 1-63 octets, at most 253 octets in all) and
RFC 5890 (internationalised labels appear as A-labels, "xn--...", which must decode).
"""

from __future__ import annotations

import ipaddress
import string

import idna
from cryptography import x509
from cryptography.x509.oid import NameOID

_LDH = frozenset(string.ascii_letters + string.digits + "-")
MAX_NAME_LENGTH = 253


def a_label(name: str) -> str | None:
    """The A-label (xn--) form of an internationalised name, as browsers look it up (IDNA 2008
    with UTS #46), or None when it has none."""
    try:
        return idna.encode(name, uts46=True).decode()
    except idna.IDNAError:
        return None


def dns_name_problem(name: str) -> str | None:
    """None when `name` is a syntactically valid DNS name (a leading "*." label is allowed here;
    whether wildcards are acceptable is policy). Otherwise the problem, as a phrase."""
    if not name:
        return "the name is empty"
    if name.endswith("."):
        return "remove the trailing dot"
    if not name.isascii():
        ascii_form = a_label(name.lstrip("*."))
        hint = (f'write it as its A-label form "{ascii_form}"' if ascii_form
                else "use the A-label (punycode, xn--) form of the name")
        return f"it contains non-ASCII characters; {hint}"
    if len(name) > MAX_NAME_LENGTH:
        return f"it is {len(name)} characters long; a DNS name has at most {MAX_NAME_LENGTH}"
    labels = name.split(".")
    if labels[0] == "*":
        labels = labels[1:]
        if len(labels) < 2:
            return "a wildcard must stand before at least two labels, like *.example.test"
    for label in labels:
        if "*" in label:
            return "a wildcard may only be the whole leftmost label, like *.example.test"
        if not label:
            return "it has an empty label (two dots in a row, or a leading dot)"
        if len(label) > 63:
            return f'the label "{label[:20]}..." is longer than 63 characters'
        if not set(label) <= _LDH:
            bad = next(c for c in label if c not in _LDH)
            return f'the label "{label}" contains "{bad}"; only letters, digits and hyphens are allowed'
        if label.startswith("-") or label.endswith("-"):
            return f'the label "{label}" starts or ends with a hyphen'
        if label[2:4] == "--" and not label.lower().startswith("xn--"):
            return f'the label "{label}" has hyphens in the third and fourth position, reserved for xn-- labels'
        if label.lower().startswith("xn--"):
            try:
                idna.decode(label.lower())
            except (idna.IDNAError, UnicodeError):
                return f'the label "{label}" is not a valid internationalised (xn--) label'
    if labels[-1].isdigit():
        return "the last label is all digits, which is not a valid top-level domain"
    top = labels[-1]
    if len(labels) > 1 and not top.lower().startswith("xn--") and not (len(top) >= 2 and top.isalpha()):
        # RFC 3696 2 and the root zone: a top-level domain is letters (or an IDN); pkilint's check
        # (the validators library) refuses any other, so a certificate naming one would not be clean.
        return f'the top-level label "{top}" must be two letters or more and letters only (or an xn-- label)'
    return None


def is_wildcard(name: str) -> bool:
    return name.startswith("*.")


def in_domains(name: str, domains: tuple[str, ...] | list[str]) -> bool:
    """Whether `name` is one of `domains` or below one of them (case-insensitive).
    A wildcard *.d.example counts as below d.example."""
    name = name.lower()
    base = name[2:] if is_wildcard(name) else name
    for domain in domains:
        domain = domain.lower()
        if base == domain or base.endswith("." + domain):
            return True
    return False


_IPV4_CHARS = frozenset("0123456789.")


def parse_ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    # An IPv4 address is digits and dots, an IPv6 one has a colon: a host name is neither, and is
    # answered without the two failed parses (and their exceptions) of ip_address().
    if ":" not in text and not _IPV4_CHARS.issuperset(text):
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def looks_like_dns_name(text: str) -> bool:
    """Whether a subject CN is meant as a host name (then it must also be a SAN, RFC 6125):
    it has a dot and no spaces. "cucm1.example.test" does; "Alice Smith" and "cucm1" do not."""
    return "." in text and " " not in text and parse_ip(text) is None


def request_names(subject: x509.Name, extensions: x509.Extensions) -> frozenset[str]:
    """The names a request or certificate is for: its subject's common name and its SANs (what a
    renewal must keep: EST simplereenroll, SCEP RenewalReq)."""
    names = {str(a.value) for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    try:
        names |= {str(n.value) for n in extensions.get_extension_for_class(x509.SubjectAlternativeName).value}
    except x509.ExtensionNotFound:
        pass
    return frozenset(names)
