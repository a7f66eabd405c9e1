"""What an issued certificate is (CONTRACT.md): checked with cryptography, the openssl CLI,
pkilint and a real TLS handshake."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.name import _ASN1Type
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from ca_server import issuance
from ca_server.clock import utcnow
from ca_server.errors import PolicyViolationError
from ca_server.store import CertificateFilter

from .checks import assert_openssl_verifies, assert_pkilint_clean, tls_handshake
from .factories import cached_key, make_csr, pem


def issue(svc, csr, **kw):
    request = issuance.IssueRequest(csr=pem(csr), **kw)
    return issuance.issue(svc.config, svc.store, svc.authority, request, utcnow())


def write_leaf(tmp_path, record, name="leaf.pem"):
    path = tmp_path / name
    path.write_text(record.pem)
    return path


def test_certificate_fields_follow_the_contract(svc):
    csr = make_csr(["cucm1.example.test", "cucm-pub.example.test"], ips=["10.0.0.1"])
    record = issue(svc, csr, profile="server", validity_days=90)
    cert = x509.load_der_x509_certificate(record.der)

    assert cert.version == x509.Version.v3
    assert 0 < cert.serial_number < 2**159 and cert.serial_number.bit_length() >= 64
    assert record.serial == format(cert.serial_number, "x") and len(record.serial) == 40
    assert cert.subject == csr.subject
    assert cert.issuer == svc.authority.intermediate.subject
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 90

    ext = cert.extensions
    bc = ext.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca is False
    ku = ext.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.digital_signature and not ku.value.key_encipherment
    assert list(ext.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = ext.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["cucm1.example.test", "cucm-pub.example.test"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.1")]
    ski = ext.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert ski == x509.SubjectKeyIdentifier.from_public_key(csr.public_key())
    aki = ext.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    int_ski = svc.authority.intermediate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == int_ski.digest

    base = svc.config.server.base_url
    cdp = ext.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name[0].value == f"{base}/crl/intermediate.crl"
    aia = {d.access_method: d.access_location.value for d in ext.get_extension_for_class(
        x509.AuthorityInformationAccess).value}
    assert aia[AuthorityInformationAccessOID.OCSP] == f"{base}/ocsp"
    assert aia[AuthorityInformationAccessOID.CA_ISSUERS] == f"{base}/ca/intermediate.der"
    cert.verify_directly_issued_by(svc.authority.intermediate)


@pytest.mark.parametrize(
    "profile, ekus",
    [
        ("server", [ExtendedKeyUsageOID.SERVER_AUTH]),
        ("client", [ExtendedKeyUsageOID.CLIENT_AUTH]),
        ("server+client", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
    ],
)
def test_profiles_set_the_extended_key_usage(svc, profile, ekus):
    record = issue(svc, make_csr(["p.example.test"]), profile=profile)
    cert = x509.load_der_x509_certificate(record.der)
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == ekus
    assert record.profile == profile


def test_cn_is_added_to_the_sans_when_missing(svc):
    csr = make_csr([], cn="only-cn.example.test")
    record = issue(svc, csr)
    assert record.sans == ("DNS:only-cn.example.test",)
    ip_record = issue(svc, make_csr([], cn="192.0.2.7"))
    assert ip_record.sans == ("IP:192.0.2.7",)


def test_rsa_leaf_key_usage_allows_key_encipherment(svc):
    record = issue(svc, make_csr(["rsa.example.test"], key=cached_key("rsa-2048")))
    ku = x509.load_der_x509_certificate(record.der).extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and ku.key_encipherment
    assert record.key_label == "RSA 2048"


def test_empty_subject_makes_the_san_critical(svc):
    record = issue(svc, make_csr(["nosubject.example.test"], cn=None))
    cert = x509.load_der_x509_certificate(record.der)
    assert len(cert.subject) == 0
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).critical


def test_requested_ca_flag_and_key_usage_in_the_csr_are_ignored(svc):
    key = cached_key("ec-p256", 5)
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(make_csr(["evil.example.test"]).subject)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("evil.example.test")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    record = issue(svc, csr)
    cert = x509.load_der_x509_certificate(record.der)
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False


def test_certificate_never_outlives_the_intermediate(svc, make_app):
    app = make_app(policy={"max_validity_days": 36500, "default_validity_days": 90})
    svc2 = app.extensions["ca_server"]
    record = issue(svc2, make_csr(["long.example.test"]), validity_days=36000)
    assert record.not_after == svc2.authority.intermediate.not_valid_after_utc
    assert any("issuing CA" in n for n in record.extra["notes"])


def test_issued_certificate_verifies_with_openssl(svc, instance, tmp_path):
    record = issue(svc, make_csr(["cucm1.example.test", "cucm-pub.example.test"]))
    leaf = write_leaf(tmp_path, record)
    assert_openssl_verifies(leaf, instance / "ca" / "root.pem", instance / "ca" / "intermediate.pem")
    # And against the served chain file, as the issue's acceptance check does.
    chain = tmp_path / "chain.pem"
    chain.write_text(svc.authority.chain_pem)
    assert_openssl_verifies(leaf, chain)
    # Purpose checks: a server certificate is fit for sslserver, not for sslclient.
    assert_openssl_verifies(leaf, instance / "ca" / "root.pem", instance / "ca" / "intermediate.pem",
                            "-purpose", "sslserver")


@pytest.mark.parametrize("key_kind", ["ec-p256", "ec-p384", "rsa-2048", "rsa-3072", "ed25519"])
@pytest.mark.parametrize("profile", ["server", "client", "server+client"])
def test_pkilint_finds_nothing_in_issued_certificates(svc, tmp_path, key_kind, profile):
    record = issue(svc, make_csr(["lint.example.test"], ips=["192.0.2.1"], key=cached_key(key_kind)),
                   profile=profile)
    assert_pkilint_clean(write_leaf(tmp_path, record))


def test_a_csr_asking_for_must_staple_gets_it_and_openssl_and_pkilint_read_it(svc, tmp_path):
    """certbot and lego --must-staple put RFC 7633's TLS Feature (status_request) in the CSR; the
    certificate carries it, with a note on what the server must then do (before, it was dropped
    without a word, and the client believed it had a Must-Staple certificate)."""
    from .checks import run_openssl

    key = cached_key("ec-p256", 7)
    asked = (x509.CertificateSigningRequestBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "staple.example.test")]))
             .add_extension(x509.TLSFeature([x509.TLSFeatureType.status_request]), critical=False)
             .sign(key, hashes.SHA256()))
    record = issue(svc, asked)
    cert = x509.load_der_x509_certificate(record.der)
    feature = cert.extensions.get_extension_for_class(x509.TLSFeature)
    assert list(feature.value) == [x509.TLSFeatureType.status_request] and not feature.critical
    leaf = write_leaf(tmp_path, record)
    text = run_openssl("x509", "-in", str(leaf), "-noout", "-text").stdout.decode()
    assert "TLS Feature:" in text and "status_request" in text
    assert_pkilint_clean(leaf)
    assert any("OCSP Must-Staple" in note and "ssl_stapling on" in note for note in record.extra["notes"])
    plain = x509.load_der_x509_certificate(issue(svc, make_csr(["plain.example.test"], key=key)).der)
    with pytest.raises(x509.ExtensionNotFound):
        plain.extensions.get_extension_for_class(x509.TLSFeature)


def _csr_with_subject(attributes, name="subject.example.test"):
    """A CSR whose subject is exactly `attributes` (oid, value, ASN.1 string type or None), as
    devices and older tools write them, bypassing cryptography's own checks."""
    subject = x509.Name([x509.NameAttribute(oid, value, _type=kind or x509.name._NAMEOID_DEFAULT_TYPE.get(
        oid, _ASN1Type.UTF8String), _validate=False) for oid, value, kind in attributes])
    return (x509.CertificateSigningRequestBuilder().subject_name(subject)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(cached_key("ec-p256", 6), hashes.SHA256()))


CN = (NameOID.COMMON_NAME, "subject.example.test", None)


@pytest.mark.parametrize("attributes, expect", [
    ([(NameOID.COUNTRY_NAME, "DE", None), (NameOID.STATE_OR_PROVINCE_NAME, "Bayern", None),
      (NameOID.LOCALITY_NAME, "München", None), (NameOID.ORGANIZATION_NAME, "Example GmbH", None),
      (NameOID.ORGANIZATIONAL_UNIT_NAME, "IT", None), CN], "C=DE"),
    # an IA5String organisation and a UTF8String country: allowed in no certificate, re-encoded
    ([(NameOID.ORGANIZATION_NAME, "IA5 Org", _ASN1Type.IA5String), (NameOID.COUNTRY_NAME, "US", _ASN1Type.UTF8String),
      CN], "O=IA5 Org"),
    # emailAddress in the subject (pkilint: subject_email_address_not_in_san): left out
    ([CN, (NameOID.EMAIL_ADDRESS, "admin@example.test", None)], "CN=subject.example.test"),
])
def test_pkilint_finds_nothing_in_certificates_from_subjects_devices_write(svc, tmp_path, attributes, expect):
    """Found by linting certificates from CSRs with uncommon subjects: an emailAddress (pkilint
    ERROR), an IA5String O or a UTF8String C (FATAL invalid_asn1_syntax) went into the certificate
    as the CSR had them."""
    record = issue(svc, _csr_with_subject(attributes))
    assert_pkilint_clean(write_leaf(tmp_path, record))
    cert = x509.load_der_x509_certificate(record.der)
    assert expect in cert.subject.rfc4514_string()
    assert not cert.subject.get_attributes_for_oid(NameOID.EMAIL_ADDRESS)
    for attribute in cert.subject:
        assert attribute._type in ({_ASN1Type.PrintableString} if attribute.oid == NameOID.COUNTRY_NAME
                                   else {_ASN1Type.UTF8String, _ASN1Type.PrintableString})
    if any(oid == NameOID.EMAIL_ADDRESS for oid, _, _ in attributes):
        assert "Left out of the certificate's subject: emailAddress (admin@example.test)" in record.extra["notes"][0]


@pytest.mark.parametrize("attributes, expect, left_out", [
    # Cisco IOS puts the host name in unstructuredName (PKCS #9): kept
    ([CN, (x509.ObjectIdentifier("1.2.840.113549.1.9.2"), "router1.example.test", _ASN1Type.IA5String)],
     "1.2.840.113549.1.9.2=router1.example.test,CN=subject.example.test", None),
    # Active Directory style domain components
    ([(NameOID.DOMAIN_COMPONENT, "test", None), (NameOID.DOMAIN_COMPONENT, "example", None), CN],
     "CN=subject.example.test,DC=example,DC=test", None),
    # attributes outside the standard ones (an EV jurisdiction, a private OID): left out, with a note
    ([CN, (NameOID.JURISDICTION_COUNTRY_NAME, "Example", _ASN1Type.IA5String),
      (x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), "x", _ASN1Type.VisibleString)],
     "CN=subject.example.test", "1.3.6.1.4.1.311.60.2.1.3 (Example), 1.3.6.1.4.1.99999.1 (x)"),
])
@pytest.mark.filterwarnings("ignore:Attribute's length must be")  # cryptography's, on the 7-letter jurisdiction
def test_subject_attributes_beyond_the_usual_ones(svc, tmp_path, attributes, expect, left_out):
    """Found by a seeded sweep of random subjects through pkilint: a jurisdictionCountryName in
    IA5String and private OIDs in VisibleString made pkilint itself fail on the certificate."""
    record = issue(svc, _csr_with_subject(attributes))
    assert_pkilint_clean(write_leaf(tmp_path, record))
    assert x509.load_der_x509_certificate(record.der).subject.rfc4514_string() == expect
    notes = record.extra["notes"]
    assert (left_out in notes[0]) if left_out else not notes


@pytest.mark.filterwarnings("ignore:Attribute's length must be")  # cryptography's, building the 70-character CN
def test_a_long_cn_in_an_unusual_string_type_is_refused_not_a_500(svc):
    """A 70-character IA5String CN: re-encoding it for the certificate raised cryptography's
    length check (a 500) before the CN-length refusal could be given."""
    with pytest.raises(PolicyViolationError) as refused:
        issue(svc, _csr_with_subject([(NameOID.COMMON_NAME, "a" * 70, _ASN1Type.IA5String)], name="x.example.test"))
    assert [v.code for v in refused.value.violations] == ["common_name_too_long"]


SWEEP_OIDS = [NameOID.COMMON_NAME, NameOID.COUNTRY_NAME, NameOID.STATE_OR_PROVINCE_NAME, NameOID.LOCALITY_NAME,
              NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.SERIAL_NUMBER,
              NameOID.EMAIL_ADDRESS, NameOID.DOMAIN_COMPONENT, NameOID.USER_ID, NameOID.TITLE, NameOID.SURNAME,
              NameOID.POSTAL_CODE, NameOID.JURISDICTION_COUNTRY_NAME, NameOID.DN_QUALIFIER,
              x509.ObjectIdentifier("1.3.6.1.4.1.99999.1")]
SWEEP_TYPES = [None, _ASN1Type.UTF8String, _ASN1Type.PrintableString, _ASN1Type.IA5String, _ASN1Type.BMPString,
               _ASN1Type.T61String, _ASN1Type.VisibleString]
SWEEP_VALUES = ["DE", "us", "Example", "a" * 70, "Ümlaut", "服务器", "12345", "with space", "a@b.test", "", "-", "."]


@pytest.mark.filterwarnings("ignore:Attribute's length must be")
def test_random_subjects_give_a_clean_certificate_or_a_refusal(svc, tmp_path):
    """24 seeded random subjects (attribute, string type, value) as devices might write them: each
    is refused with a 4xx-class reason, or gives a certificate pkilint finds nothing in."""
    import random

    rng = random.Random(20261127)
    issued = refused = 0
    for i in range(24):
        attributes = [(rng.choice(SWEEP_OIDS), rng.choice(SWEEP_VALUES), rng.choice(SWEEP_TYPES))
                      for _ in range(rng.randint(1, 4))]
        try:
            csr = _csr_with_subject(attributes, name=f"sweep{i}.example.test")
        except ValueError:  # a value its string type cannot hold: no CSR can carry it
            continue
        try:
            record = issue(svc, csr)
        except PolicyViolationError as exc:
            assert all(v.message for v in exc.violations)
            refused += 1
            continue
        assert_pkilint_clean(write_leaf(tmp_path, record, f"sweep{i}.pem"))
        issued += 1
    assert issued >= 5 and refused >= 5, (issued, refused)


@pytest.mark.filterwarnings("ignore:Attribute's length must be")  # cryptography's, reading C=USA
@pytest.mark.parametrize("attribute, words", [
    ((NameOID.COUNTRY_NAME, "USA", None), 'C is "USA"; it must be a two-letter ISO 3166 code'),
    ((NameOID.COUNTRY_NAME, "D1", None), "two-letter"),
    ((NameOID.ORGANIZATIONAL_UNIT_NAME, "u" * 65, None), "OU is 65 characters long"),
    ((NameOID.ORGANIZATION_NAME, "", None), "O is 0 characters long"),
    ((NameOID.LOCALITY_NAME, "l" * 129, None), "allows 1 to 128"),
    ((NameOID.SERIAL_NUMBER, "no_underscores", _ASN1Type.UTF8String), "may hold only letters"),
    ((NameOID.ORGANIZATION_NAME, "Evil\r\nBcc: x@evil.test", None), "control character"),
    ((NameOID.DOMAIN_COMPONENT, "us", None), 'DC fields spell "us", not a domain of two labels'),
])
def test_a_subject_outside_rfc_5280_is_refused_with_what_to_fix(svc, attribute, words):
    with pytest.raises(PolicyViolationError) as refused:
        issue(svc, _csr_with_subject([attribute, CN]))
    assert [v.code for v in refused.value.violations] == ["subject_invalid"]
    assert words in refused.value.violations[0].message
    assert svc.store.count_certificates(CertificateFilter(), utcnow()) == 0


def test_pkilint_finds_nothing_in_the_ca_certificates(instance):
    assert_pkilint_clean(instance / "ca" / "root.pem")
    assert_pkilint_clean(instance / "ca" / "intermediate.pem")


def _handshake_files(tmp_path, svc, record, key):
    chain = tmp_path / "server-chain.pem"
    chain.write_text(record.pem + svc.authority.intermediate_pem)
    key_path = tmp_path / "server.key"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return chain, key_path


@pytest.mark.parametrize("key_kind", ["ec-p256", "rsa-2048"])
def test_tls_handshake_succeeds_for_every_san_and_fails_for_other_names(svc, instance, tmp_path, key_kind):
    key = cached_key(key_kind, 1)
    names = ["cucm1.example.test", "cucm-pub.example.test"]
    record = issue(svc, make_csr(names, ips=["127.0.0.1"], key=key))
    chain, key_path = _handshake_files(tmp_path, svc, record, key)
    root = instance / "ca" / "root.pem"
    for name in [*names, "127.0.0.1"]:
        ok, error = tls_handshake(chain_pem=chain, key_pem=key_path, root_pem=root, server_hostname=name)
        assert ok, f"{name}: {error}"
    ok, error = tls_handshake(chain_pem=chain, key_pem=key_path, root_pem=root, server_hostname="other.example.test")
    assert not ok
    assert "hostname mismatch" in error.lower(), error


def test_refused_request_stores_nothing(svc):
    before = svc.store.count_certificates(CertificateFilter(), utcnow())
    with pytest.raises(PolicyViolationError):
        issue(svc, make_csr(["*.example.test"]))
    assert svc.store.count_certificates(CertificateFilter(), utcnow()) == before
    refusals = svc.store.audit_entries(action="refuse")
    assert refusals and refusals[0]["detail"]["codes"] == ["wildcard_not_allowed"]


def test_certificate_is_in_the_store_when_returned(svc):
    record = issue(svc, make_csr(["stored.example.test"]), notify=("ops@example.test",))
    stored = svc.store.get_certificate(record.serial)
    assert stored is not None and stored.der == record.der
    assert stored.notify == ("ops@example.test",)
    assert svc.store.audit_entries(action="issue")[0]["serial"] == record.serial


def test_serials_are_unique_across_many_issuances(svc):
    key = cached_key("ec-p256", 2)
    serials = {issue(svc, make_csr([f"h{i}.example.test"], key=key)).serial for i in range(50)}
    assert len(serials) == 50


def test_now_is_a_parameter(svc):
    moment = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    request = issuance.IssueRequest(csr=pem(make_csr(["future.example.test"])), validity_days=10)
    record = issuance.issue(svc.config, svc.store, svc.authority, request, moment)
    assert record.not_after == moment + dt.timedelta(days=10)


@pytest.mark.parametrize("key_type", ["ec-p256", "rsa-4096"])
def test_the_pem_form_is_what_openssl_and_cryptography_write(svc, key_type, tmp_path):
    """The PEM served for a certificate is made from its DER without parsing it; it must be
    byte for byte what cryptography writes, and what openssl reads back to the same DER."""
    import subprocess

    record = issue(svc, make_csr(["pem.example.test"], key=cached_key(key_type, 3)))
    cert = x509.load_der_x509_certificate(record.der)
    assert record.pem == cert.public_bytes(serialization.Encoding.PEM).decode()
    path = write_leaf(tmp_path, record)
    der = subprocess.run(["openssl", "x509", "-in", str(path), "-outform", "DER"], capture_output=True, check=True)
    assert der.stdout == record.der


@pytest.mark.parametrize("key_kind", ["ec-p256", "rsa-2048"])
@pytest.mark.parametrize("profile", ["server", "server+client"])
def test_the_leaf_template_writes_what_the_extension_objects_would(svc, key_kind, profile):
    """The template hands the builder its constant extensions DER-encoded once; the certificate must
    be byte for byte the one a builder given the extension objects signs (ECDSA signatures differ
    per signing, so the to-be-signed parts are compared)."""
    record = issue(svc, make_csr(["tpl.example.test"], key=cached_key(key_kind)), profile=profile)
    leaf = x509.load_der_x509_certificate(record.der)
    builder = x509.CertificateBuilder(
        issuer_name=leaf.issuer, subject_name=leaf.subject, public_key=leaf.public_key(),
        serial_number=leaf.serial_number, not_valid_before=leaf.not_valid_before_utc,
        not_valid_after=leaf.not_valid_after_utc, extensions=list(leaf.extensions))
    again = builder.sign(svc.authority.intermediate_key, hashes.SHA256())
    assert again.tbs_certificate_bytes == leaf.tbs_certificate_bytes
    kinds = [type(e.value) for e in leaf.extensions]  # read back as the real types, not raw bytes
    assert x509.UnrecognizedExtension not in kinds and x509.CRLDistributionPoints in kinds
