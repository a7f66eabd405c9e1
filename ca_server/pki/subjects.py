"""Subject names as RFC 5280 (Appendix A), X.520 and PKCS #9 write them: which attributes a
certificate may carry, in which string types and lengths, and the subject a certificate gets for
a CSR's subject. pkilint decodes a subject by these same definitions; a value outside them makes
the certificate "invalid ASN.1" there, and some make pkilint itself fail."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

DIRECTORY = "DirectoryString"  # TeletexString, PrintableString, UniversalString, UTF8String, BMPString
PRINTABLE = "PrintableString"
IA5 = "IA5String"
PKCS9 = "PKCS9String"  # IA5String or DirectoryString (RFC 2985)

DIRECTORY_TYPES = {_ASN1Type.T61String, _ASN1Type.PrintableString, _ASN1Type.UniversalString,
                   _ASN1Type.UTF8String, _ASN1Type.BMPString}
TYPES = {DIRECTORY: DIRECTORY_TYPES, PRINTABLE: {_ASN1Type.PrintableString}, IA5: {_ASN1Type.IA5String},
         PKCS9: DIRECTORY_TYPES | {_ASN1Type.IA5String}}


@dataclass(frozen=True)
class Spec:
    label: str
    syntax: str
    most: int | None  # characters (RFC 5280 ub-*); None: unbounded
    least: int = 1


UNSTRUCTURED_NAME = x509.ObjectIdentifier("1.2.840.113549.1.9.2")
UNSTRUCTURED_ADDRESS = x509.ObjectIdentifier("1.2.840.113549.1.9.8")
NAME = x509.ObjectIdentifier("2.5.4.41")
UB_NAME = 32768

# The attributes a certificate of this CA carries from a CSR's subject; any other is left out.
ATTRIBUTES = {
    NameOID.COMMON_NAME: Spec("CN", DIRECTORY, 64),
    NameOID.COUNTRY_NAME: Spec("C", PRINTABLE, 2, least=2),
    NameOID.STATE_OR_PROVINCE_NAME: Spec("ST", DIRECTORY, 128),
    NameOID.LOCALITY_NAME: Spec("L", DIRECTORY, 128),
    NameOID.STREET_ADDRESS: Spec("street", DIRECTORY, 128),
    NameOID.POSTAL_CODE: Spec("postalCode", DIRECTORY, 40),
    NameOID.ORGANIZATION_NAME: Spec("O", DIRECTORY, 64),
    NameOID.ORGANIZATIONAL_UNIT_NAME: Spec("OU", DIRECTORY, 64),
    NameOID.ORGANIZATION_IDENTIFIER: Spec("organizationIdentifier", DIRECTORY, None),
    NameOID.BUSINESS_CATEGORY: Spec("businessCategory", DIRECTORY, 128),
    NameOID.TITLE: Spec("title", DIRECTORY, 64),
    NAME: Spec("name", DIRECTORY, UB_NAME),
    NameOID.GIVEN_NAME: Spec("givenName", DIRECTORY, UB_NAME),
    NameOID.SURNAME: Spec("surname", DIRECTORY, UB_NAME),
    NameOID.INITIALS: Spec("initials", DIRECTORY, UB_NAME),
    NameOID.GENERATION_QUALIFIER: Spec("generationQualifier", DIRECTORY, UB_NAME),
    NameOID.PSEUDONYM: Spec("pseudonym", DIRECTORY, 128),
    NameOID.SERIAL_NUMBER: Spec("serialNumber", PRINTABLE, 64),
    NameOID.DN_QUALIFIER: Spec("dnQualifier", PRINTABLE, None),
    NameOID.USER_ID: Spec("UID", DIRECTORY, 256),
    NameOID.DOMAIN_COMPONENT: Spec("DC", IA5, 63),
    NameOID.EMAIL_ADDRESS: Spec("emailAddress", IA5, 255),
    UNSTRUCTURED_NAME: Spec("unstructuredName", PKCS9, 255),  # Cisco IOS puts the host name here
    UNSTRUCTURED_ADDRESS: Spec("unstructuredAddress", DIRECTORY, 255),
}
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # a CR/LF in a CN would break every mail header
PRINTABLE_CHARACTERS = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]*")
COUNTRY = re.compile(r"[A-Za-z]{2}")


def label(attribute: x509.NameAttribute) -> str:
    spec = ATTRIBUTES.get(attribute.oid)
    return spec.label if spec else attribute.oid.dotted_string


def text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("latin-1")


def value_problem(attribute: x509.NameAttribute) -> str | None:
    """Why a known attribute's value cannot go into a certificate (the rest of "The subject's
    LABEL ..."), None when it can (after re-encoding, see certificate_subject)."""
    spec = ATTRIBUTES.get(attribute.oid)
    if spec is None:
        return None
    value = text(attribute.value)
    if CONTROL_CHARACTER.search(value):
        return f"{value[:40]!r} holds a control character (a line break, a tab, ...)"
    if attribute.oid == NameOID.COUNTRY_NAME:
        return None if COUNTRY.fullmatch(value) else (
            f'is "{value[:20]}"; it must be a two-letter ISO 3166 code such as US or DE')
    if not spec.least <= len(value) <= (spec.most or len(value)):
        return f"is {len(value)} characters long; RFC 5280 allows {spec.least} to {spec.most}"
    if spec.syntax == PRINTABLE and not PRINTABLE_CHARACTERS.fullmatch(value):
        return f"\"{value[:40]}\" may hold only letters, digits, spaces and ' ( ) + , - . / : = ?"
    if spec.syntax == IA5 and not value.isascii():
        return f'"{value[:40]}" may hold only ASCII characters'
    return None


def certificate_subject(subject: x509.Name) -> tuple[x509.Name, list[str]]:
    """The subject the certificate carries, and what was left out of the CSR's (as sentences):
    an emailAddress (RFC 5280 4.1.2.6 deprecates it; pkilint wants it in the SANs, where this CA
    issues no e-mail names) and attributes outside ATTRIBUTES. Each attribute kept is in a string
    type its syntax allows. Call after every value_problem() was None."""
    left_out: list[str] = []
    changed = False
    rdns = []
    for rdn in subject.rdns:
        kept = []
        for attribute in rdn:
            spec = ATTRIBUTES.get(attribute.oid)
            if spec is None or attribute.oid == NameOID.EMAIL_ADDRESS:
                left_out.append(f"{label(attribute)} ({text(attribute.value)[:60]})")
                changed = True
                continue
            wanted = _wanted_type(attribute, spec)
            if wanted is not None:
                attribute = x509.NameAttribute(attribute.oid, text(attribute.value), _type=wanted, _validate=False)
                changed = True
            kept.append(attribute)
        if kept:
            rdns.append(x509.RelativeDistinguishedName(kept))
    return (x509.Name(rdns) if changed else subject), left_out


def _wanted_type(attribute: x509.NameAttribute, spec: Spec) -> _ASN1Type | None:
    """The string type to re-encode the attribute in, None when its own is allowed."""
    current = attribute._type  # cryptography keeps the CSR's encoding here (no public accessor)
    if current in TYPES[spec.syntax]:
        return None
    if spec.syntax == PRINTABLE:
        return _ASN1Type.PrintableString
    if spec.syntax == IA5 or (spec.syntax == PKCS9 and text(attribute.value).isascii()):
        return _ASN1Type.IA5String
    return _ASN1Type.UTF8String
