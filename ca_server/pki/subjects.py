"""Subject names as RFC 5280 writes them: attribute bounds and string types, and the subject a
certificate carries for a CSR's subject."""

from __future__ import annotations

import re

from cryptography import x509
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import NameOID

# RFC 5280 Appendix A upper bounds, in characters, of subject attributes CSRs carry (the CN has
# its own check above); pkilint rejects a value outside them as invalid ASN.1.
SUBJECT_BOUNDS = {
    NameOID.ORGANIZATION_NAME: ("O", 64),
    NameOID.ORGANIZATIONAL_UNIT_NAME: ("OU", 64),
    NameOID.LOCALITY_NAME: ("L", 128),
    NameOID.STATE_OR_PROVINCE_NAME: ("ST", 128),
    NameOID.SERIAL_NUMBER: ("serialNumber", 64),
    NameOID.TITLE: ("title", 64),
    NameOID.PSEUDONYM: ("pseudonym", 128),
    NameOID.EMAIL_ADDRESS: ("emailAddress", 255),
}
COUNTRY = re.compile(r"[A-Za-z]{2}")
# The string types RFC 5280 allows per attribute. CSRs from some tools carry others (a UTF8String
# country, an IA5String organization); the certificate then gets the attribute re-encoded.
DIRECTORY_STRING = {_ASN1Type.T61String, _ASN1Type.PrintableString, _ASN1Type.UniversalString,
                    _ASN1Type.UTF8String, _ASN1Type.BMPString}
DIRECTORY_STRING_OIDS = {NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME,
                         NameOID.LOCALITY_NAME, NameOID.STATE_OR_PROVINCE_NAME, NameOID.TITLE, NameOID.PSEUDONYM,
                         NameOID.GIVEN_NAME, NameOID.SURNAME, NameOID.INITIALS, NameOID.GENERATION_QUALIFIER,
                         NameOID.STREET_ADDRESS, NameOID.BUSINESS_CATEGORY, NameOID.POSTAL_CODE}
FIXED_TYPE = {NameOID.COUNTRY_NAME: _ASN1Type.PrintableString, NameOID.SERIAL_NUMBER: _ASN1Type.PrintableString,
              NameOID.DN_QUALIFIER: _ASN1Type.PrintableString, NameOID.DOMAIN_COMPONENT: _ASN1Type.IA5String}
LABELS = {NameOID.COMMON_NAME: "CN", NameOID.COUNTRY_NAME: "C", NameOID.SERIAL_NUMBER: "serialNumber",
          NameOID.DN_QUALIFIER: "dnQualifier", NameOID.DOMAIN_COMPONENT: "DC",
          **{oid: label for oid, (label, _) in SUBJECT_BOUNDS.items()}}
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # a CR/LF in a CN would break every mail header
PRINTABLE = re.compile(r"[A-Za-z0-9 '()+,\-./:=?]*")


def certificate_subject(subject: x509.Name) -> tuple[x509.Name, list[str]]:
    """The subject the certificate carries, and the e-mail addresses left out of it: the CSR's,
    without emailAddress (RFC 5280 4.1.2.6 deprecates it; pkilint wants it in the SANs, where this
    CA issues no e-mail names), each attribute in a string type the standard allows for it.
    Call after policy's subject_violations found nothing."""
    emails: list[str] = []
    changed = False
    rdns = []
    for rdn in subject.rdns:
        kept = []
        for attribute in rdn:
            if attribute.oid == NameOID.EMAIL_ADDRESS:
                emails.append(attribute_text(attribute.value))
                changed = True
                continue
            wanted = _wanted_type(attribute)
            if wanted is not None:
                attribute = x509.NameAttribute(attribute.oid, attribute_text(attribute.value), _type=wanted)
                changed = True
            kept.append(attribute)
        if kept:
            rdns.append(x509.RelativeDistinguishedName(kept))
    return (x509.Name(rdns) if changed else subject), emails


def _wanted_type(attribute: x509.NameAttribute) -> _ASN1Type | None:
    """The string type to re-encode the attribute in, None when its own is allowed."""
    current = attribute._type  # cryptography keeps the CSR's encoding here (no public accessor)
    fixed = FIXED_TYPE.get(attribute.oid)
    if fixed is not None:
        return None if current == fixed else fixed
    if attribute.oid in DIRECTORY_STRING_OIDS and current not in DIRECTORY_STRING:
        return _ASN1Type.UTF8String
    return None


def attribute_label(attribute: x509.NameAttribute) -> str:
    return LABELS.get(attribute.oid, attribute.oid.dotted_string)


def fits_type(value: str, kind: _ASN1Type) -> bool:
    return PRINTABLE.fullmatch(value) is not None if kind == _ASN1Type.PrintableString else value.isascii()


def attribute_text(value: str | bytes) -> str:
    return value if isinstance(value, str) else value.decode("latin-1")
