"""The "is this ours?" verdicts, the hostname check, CSR pre-checks and PEM/DER conversion."""

from __future__ import annotations

import base64
import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ca_server import inspection, issuance
from ca_server.clock import utcnow
from ca_server.display import fingerprint_text

from .conftest import csrf_token
from .factories import cached_key, der, make_csr, pem
from .test_policy import weak_key


def issue(svc, names=("cucm1.example.test",)):
    request = issuance.IssueRequest(csr=pem(make_csr(list(names))))
    return issuance.issue(svc.config, svc.store, svc.authority, request, utcnow())


def counterfeit_of(record, svc):
    """Same serial, subject and issuer name, different content, signed by another key."""
    original = record.certificate
    key = cached_key("ec-p256", 20)
    return (x509.CertificateBuilder().subject_name(original.subject).issuer_name(original.issuer)
            .public_key(key.public_key()).serial_number(original.serial_number)
            .not_valid_before(original.not_valid_before_utc).not_valid_after(original.not_valid_after_utc)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("cucm1.example.test")]), critical=False)
            .sign(key, hashes.SHA256()))


def unknown_to_store(svc):
    """Signed with our intermediate's key, never stored: a certificate made outside ca-server."""
    key = cached_key("ec-p256", 21)
    return (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue.example.test")]))
            .issuer_name(svc.authority.intermediate.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(utcnow() - dt.timedelta(days=1)).not_valid_after(utcnow() + dt.timedelta(days=30))
            .sign(svc.authority.intermediate_key, hashes.SHA256()))


def foreign():
    key = cached_key("ec-p256", 22)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "elsewhere.example.test")])
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(utcnow() - dt.timedelta(days=1)).not_valid_after(utcnow() + dt.timedelta(days=30))
            .sign(key, hashes.SHA256()))


def run(svc, data, **kw):
    return inspection.inspect(svc.config, svc.store, svc.authority, data, utcnow(), **kw)


def test_issued_here(svc):
    record = issue(svc)
    result = run(svc, record.pem)
    assert result["kind"] == "certificate" and result["verdict"] == "issued_here"
    assert result["status"] == "valid" and result["serial"] == record.serial
    assert result["chain"]["valid"]
    assert run(svc, record.der)["verdict"] == "issued_here"  # DER too
    assert run(svc, base64.b64encode(record.der).decode())["verdict"] == "issued_here"  # bare base64
    assert run(svc, record.pem.encode("utf-16"))["verdict"] == "issued_here"  # saved as "Unicode" on Windows


def test_counterfeit_same_serial_other_fingerprint(svc):
    record = issue(svc)
    result = run(svc, pem(counterfeit_of(record, svc)))
    assert result["verdict"] == "counterfeit"
    assert fingerprint_text(record.fingerprint_sha256) in result["reasons"][0]  # as a person compares it
    assert "NOT the certificate" in result["reasons"][0]
    assert not result["chain"]["valid"]


def test_unknown_to_store(svc):
    result = run(svc, pem(unknown_to_store(svc)))
    assert result["verdict"] == "unknown_to_store"
    assert result["chain"]["valid"]


def test_foreign(svc):
    result = run(svc, pem(foreign()))
    assert result["verdict"] == "foreign" and "not issued by this CA" in result["reasons"][0]


@pytest.mark.parametrize("role", ["root", "intermediate"])
def test_this_cas_own_certificates_are_recognised(svc, role):
    """The root and intermediate are not among the issued certificates, yet they are this CA's: they
    were reported as "foreign ... its issuer is <our root>"."""
    ca_cert = getattr(svc.authority, role)
    result = run(svc, ca_cert.public_bytes(Encoding.PEM))
    assert result["verdict"] == "issued_here" and result["ca"] == role and result["status"] == "valid"
    assert f"this CA's {role} certificate" in result["reasons"][0]
    assert result["chain"]["valid"]


def test_a_certificate_claiming_the_intermediates_serial_is_counterfeit(svc):
    real = svc.authority.intermediate
    key = cached_key("ec-p256", 23)
    fake = (x509.CertificateBuilder().subject_name(real.subject).issuer_name(real.issuer)
            .public_key(key.public_key()).serial_number(real.serial_number)
            .not_valid_before(real.not_valid_before_utc).not_valid_after(real.not_valid_after_utc)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    result = run(svc, pem(fake))
    assert result["verdict"] == "counterfeit" and "NOT this CA's intermediate" in result["reasons"][0]
    assert not result["chain"]["valid"]


def test_a_revoked_intermediate_shows_as_revoked(svc):
    from ca_server import revocation

    revocation.revoke_intermediate(svc.store, svc.authority, svc.config, "keyCompromise", utcnow(), actor="t")
    result = run(svc, svc.authority.intermediate.public_bytes(Encoding.DER))
    assert result["verdict"] == "issued_here" and result["status"] == "revoked"


def test_the_inspect_page_links_a_ca_certificate_to_its_download(web, svc):
    page = web.get("/inspect").get_data(as_text=True)
    html = web.post("/inspect", data={"document": svc.authority.root_pem, "csrf_token": csrf_token(page)}
                    ).get_data(as_text=True)
    assert 'data-verdict="issued_here"' in html and 'href="/ca/root.pem"' in html


def test_a_certificate_with_a_weak_rsa_key_says_so(svc):
    """A certificate someone hands over may carry a key policy would refuse (ROCA: Infineon TPMs)."""
    key = weak_key("roca")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tpm.example.test")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(utcnow() - dt.timedelta(days=1)).not_valid_after(utcnow() + dt.timedelta(days=30))
            .sign(key, hashes.SHA256()))
    result = run(svc, pem(cert))
    assert result["verdict"] == "foreign" and len(result["key_flaws"]) == 1
    assert any("Its RSA key comes from a vulnerable Infineon chip" in r for r in result["reasons"])
    assert run(svc, issue(svc).pem)["key_flaws"] == []


def test_hostname_check(svc):
    record = issue(svc, ["cucm1.example.test", "cucm-pub.example.test"])
    ok = run(svc, record.pem, hostname="cucm-pub.example.test")["hostname"]
    assert ok["accepted"] and "would accept" in ok["message"]
    bad = run(svc, record.pem, hostname="other.example.test")["hostname"]
    assert not bad["accepted"] and "would refuse" in bad["message"] and "cucm1.example.test" in bad["message"]
    foreign_result = run(svc, pem(foreign()), hostname="elsewhere.example.test")["hostname"]
    assert not foreign_result["accepted"]


def test_the_hostname_is_taken_as_a_person_pastes_it_and_no_name_is_a_500(api, svc):
    """A wildcard, a final dot, [::1], host:port, a URL, a.b..c or a NUL as "hostname" was a 500
    (cryptography's ValueError); a URL, a port and a final dot are now taken off as a browser would."""
    record = issue(svc, ["cucm1.example.test"])
    for pasted, name, accepted in (("https://CUCM1.example.test:8443/ccmadmin", "cucm1.example.test", True),
                                   ("cucm1.example.test.", "cucm1.example.test", True),
                                   ("cucm1.example.test:443", "cucm1.example.test", True),
                                   ("[::1]", "::1", False), ("[::1]:8443", "::1", False)):
        answer = api.post("/api/v1/inspect", json={"pem": record.pem, "hostname": pasted})
        assert answer.status_code == 200, (pasted, answer.get_data(as_text=True))
        check = answer.get_json()["hostname"]
        assert check["name"] == name and check["accepted"] is accepted, (pasted, check)
    for pasted, words in (("*", "is a wildcard"), ("*.example.test", "is a wildcard"), ("a..b", "is not a host name"),
                          (".", "is not a host name"), ("a\x00b", "is not a host name")):
        answer = api.post("/api/v1/inspect", json={"pem": record.pem, "hostname": pasted})
        assert answer.status_code == 200, (pasted, answer.get_data(as_text=True))
        check = answer.get_json()["hostname"]
        assert not check["accepted"] and words in check["message"], (pasted, check)
    blank = api.post("/api/v1/inspect", json={"pem": record.pem, "hostname": "  "}).get_json()
    assert "hostname" not in blank and blank["verdict"] == "issued_here"
    bucher = api.post("/api/v1/inspect", json={"pem": record.pem, "hostname": "bücher.example.test"}).get_json()
    assert bucher["hostname"]["name"] == "xn--bcher-kva.example.test" and not bucher["hostname"]["accepted"]


def test_revoked_status_is_part_of_the_verdict(svc):
    from ca_server import revocation

    record = issue(svc)
    revocation.revoke(svc.config, svc.store, svc.authority, record.serial, "keyCompromise", utcnow(), actor="t")
    result = run(svc, record.pem)
    assert result["verdict"] == "issued_here" and result["status"] == "revoked"


@pytest.mark.parametrize("names, verdict", [(["ok.example.test"], "acceptable"), (["*.example.test"], "refused")])
def test_csr_precheck(svc, names, verdict):
    result = run(svc, pem(make_csr(names)))
    assert result["kind"] == "csr" and result["verdict"] == verdict
    if verdict == "refused":
        assert result["violations"][0]["code"] == "wildcard_not_allowed"


def test_garbage_is_a_400(api):
    response = api.post("/api/v1/inspect", json={"pem": "hello"})
    assert response.status_code == 400
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    pasted = api.post("/api/v1/inspect", json={"pem": key})  # it said "could not be read: copy it whole"
    assert pasted.status_code == 400 and "This is a private key" in pasted.get_json()["error"]["message"]
    assert api.post("/api/v1/inspect", json={}).status_code == 400
    assert api.post("/api/v1/inspect", json={"der_base64": "!!"}).status_code == 400


def test_api_inspect(api, svc):
    record = issue(svc)
    by_pem = api.post("/api/v1/inspect", json={"pem": record.pem, "hostname": "cucm1.example.test"}).get_json()
    assert by_pem["verdict"] == "issued_here" and by_pem["hostname"]["accepted"]
    by_der = api.post("/api/v1/inspect", json={"der_base64": base64.b64encode(record.der).decode()}).get_json()
    assert by_der["verdict"] == "issued_here"
    fake = api.post("/api/v1/inspect", json={"pem": pem(counterfeit_of(record, svc))}).get_json()
    assert fake["verdict"] == "counterfeit"
    csr = api.post("/api/v1/inspect", json={"der_base64": base64.b64encode(der(make_csr(["x.example.test"])))
                                            .decode()}).get_json()
    assert csr["kind"] == "csr" and csr["verdict"] == "acceptable"


def test_inspect_page_and_conversion(web, svc):
    record = issue(svc)
    page = web.get("/inspect").get_data(as_text=True)
    response = web.post("/inspect", data={"document": record.pem, "hostname": "cucm1.example.test",
                                          "csrf_token": csrf_token(page)})
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and 'data-verdict="issued_here"' in html and "would accept" in html
    token = csrf_token(html)
    der_b64 = base64.b64encode(record.der).decode()
    as_der = web.post("/inspect/convert", data={"der_b64": der_b64, "format": "der", "csrf_token": token})
    assert as_der.mimetype == "application/pkix-cert" and as_der.data == record.der
    as_pem = web.post("/inspect/convert", data={"der_b64": der_b64, "format": "pem", "csrf_token": token})
    assert x509.load_pem_x509_certificate(as_pem.data).public_bytes(Encoding.DER) == record.der
    bad = web.post("/inspect", data={"document": "nonsense", "csrf_token": token})
    assert bad.status_code == 400 and "neither a certificate nor a CSR" in bad.get_data(as_text=True)



def test_inspect_says_whether_a_certificate_demands_ocsp_stapling(web, api, svc):
    """RFC 7633 Must-Staple: a server that does not staple fails with such a certificate (Firefox
    refuses it), so the operator checking a device's certificate is told. A CSR asking for it is
    told what the certificate will carry."""
    key = cached_key("ec-p256", 7)
    asked = (x509.CertificateSigningRequestBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "staple.example.test")]))
             .add_extension(x509.TLSFeature([x509.TLSFeatureType.status_request]), critical=False)
             .sign(key, hashes.SHA256()))
    precheck = api.post("/api/v1/inspect", json={"pem": pem(asked)}).get_json()
    assert precheck["verdict"] == "acceptable"
    assert any("OCSP Must-Staple" in reason and "ssl_stapling on" in reason for reason in precheck["reasons"])
    stapled = issuance.issue(svc.config, svc.store, svc.authority, issuance.IssueRequest(csr=pem(asked)), utcnow())
    assert api.post("/api/v1/inspect", json={"pem": stapled.pem}).get_json()["fields"]["ocsp_must_staple"] is True
    assert api.post("/api/v1/inspect", json={"pem": issue(svc).pem}).get_json()["fields"]["ocsp_must_staple"] is False
    page = web.get("/inspect").get_data(as_text=True)
    html = web.post("/inspect", data={"document": stapled.pem, "csrf_token": csrf_token(page)}).get_data(as_text=True)
    assert "<dt>OCSP Must-Staple</dt>\n    <dd>yes</dd>" in html

def test_trust_page_is_public_and_names_the_fingerprint(app, svc):
    html = app.test_client().get("/trust").get_data(as_text=True)
    fp = svc.authority.describe()[0]["fingerprint_sha256"]
    assert ":".join(fp[i:i + 2] for i in range(0, len(fp), 2)).upper() in html
    for platform in ("Windows", "macOS", "Linux", "Firefox", "Java", "CUCM", "tomcat-trust"):
        assert platform in html
