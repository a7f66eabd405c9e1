"""Revocation, CRLs and OCSP: the API and CLI, then what real clients (openssl) see."""

from __future__ import annotations

import base64
import datetime as dt
from email.utils import parsedate_to_datetime
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from cryptography.x509 import ocsp

from ca_server import revocation
from ca_server.cli import main

from .checks import assert_pkilint_clean, go_build, need, openssl_s_server, run_openssl
from .conftest import PASSPHRASE, ApiClient, new_token
from .factories import cached_key, make_csr, pem
from .server import free_port, issue_verified, run_cli, running_server


def issue(api, names=("r.example.test",), key=None):
    response = api.post("/api/v1/certificates", json={"csr": pem(make_csr(list(names), key=key))})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def revoke(api, serial, reason="keyCompromise"):
    return api.post(f"/api/v1/certificates/{serial}/revoke", json={"reason": reason})


def test_revoke_via_api_then_twice_is_409(api):
    cert = issue(api)
    response = revoke(api, cert["serial"], "cessationOfOperation")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "revoked" and body["revocation_reason"] == "cessationOfOperation"
    assert body["revoked_at"].endswith("Z")
    again = revoke(api, cert["serial"].upper(), "keyCompromise")
    assert again.status_code == 409
    assert again.get_json()["error"]["code"] == "already_revoked"
    assert "already revoked" in again.get_json()["error"]["message"]
    assert api.get(f"/api/v1/certificates/{cert['serial']}").get_json()["revocation_reason"] == "cessationOfOperation"


def test_revoke_errors(api, svc, app):
    assert revoke(api, "abcdef0123").status_code == 404
    cert = issue(api)
    bad = revoke(api, cert["serial"], "because")
    assert bad.status_code == 400 and "keyCompromise" in bad.get_json()["error"]["message"]
    scoped = ApiClient(app.test_client(), new_token(svc, "scoped", admin=False, domains=["example.test"]))
    assert revoke(scoped, cert["serial"]).status_code == 403
    assert revoke(ApiClient(app.test_client(), None), cert["serial"]).status_code == 401


def test_revoke_from_the_cli(instance, api):
    cert = issue(api)
    result = CliRunner().invoke(main, ["revoke", cert["serial"], "--reason", "superseded"])
    assert result.exit_code == 0, result.output
    assert api.get(f"/api/v1/certificates/{cert['serial']}").get_json()["status"] == "revoked"
    again = CliRunner().invoke(main, ["revoke", cert["serial"], "--reason", "superseded"])
    assert again.exit_code == 1 and "already revoked" in again.output


def test_revoke_button_on_the_detail_page(web, api):
    from .conftest import csrf_token

    cert = issue(api)
    page = web.get(f"/certificates/{cert['serial']}").get_data(as_text=True)
    assert "Revoke certificate" in page
    response = web.post(f"/certificates/{cert['serial']}/revoke",
                        data={"reason": "keyCompromise", "csrf_token": csrf_token(page)})
    assert response.status_code == 303
    page = web.get(f"/certificates/{cert['serial']}").get_data(as_text=True)
    assert "Revoked on" in page and "keyCompromise" in page and "Revoke certificate" not in page


def test_key_compromise_blocks_the_same_key(api):
    key = cached_key("ec-p256", 7)
    cert = issue(api, ["k1.example.test"], key=key)
    assert revoke(api, cert["serial"], "superseded").status_code == 200
    issue(api, ["k2.example.test"], key=key)  # superseded is no reason to refuse the key
    cert3 = issue(api, ["k3.example.test"], key=key)
    assert revoke(api, cert3["serial"], "keyCompromise").status_code == 200
    refused = api.post("/api/v1/certificates", json={"csr": pem(make_csr(["k4.example.test"], key=key))})
    assert refused.status_code == 422
    assert refused.get_json()["error"]["code"] == "key_compromised"


def _crl(client, name, **params):
    response = client.get(f"/crl/{name}", query_string=params)
    assert response.status_code == 200
    return response


def test_crls_list_revoked_certificates_with_growing_numbers(api, app, svc):
    client = app.test_client()
    first = x509.load_der_x509_crl(_crl(client, "intermediate.crl").data)
    assert first.is_signature_valid(svc.authority.intermediate.public_key())
    n1 = first.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    cert = issue(api)
    assert revoke(api, cert["serial"], "keyCompromise").status_code == 200
    response = _crl(client, "intermediate.crl")
    assert response.mimetype == "application/pkix-crl"
    crl = x509.load_der_x509_crl(response.data)
    n2 = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert n2 > n1
    entry = crl.get_revoked_certificate_by_serial_number(int(cert["serial"], 16))
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    aki = crl.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    assert aki.key_identifier == svc.authority.intermediate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier).value.digest
    delta = crl.next_update_utc - crl.last_update_utc
    assert delta == dt.timedelta(hours=svc.config.revocation.crl_validity_hours)
    # Serving does not rebuild: same bytes, and a conditional GET is a 304.
    again = _crl(client, "intermediate.crl")
    assert again.data == response.data
    assert client.get("/crl/intermediate.crl", headers={"If-None-Match": again.headers["ETag"]}).status_code == 304
    assert b"BEGIN X509 CRL" in _crl(client, "intermediate.crl", format="pem").data
    root_crl = x509.load_der_x509_crl(_crl(client, "root.crl").data)
    assert root_crl.is_signature_valid(svc.authority.root.public_key()) and len(root_crl) == 0
    assert client.get("/crl/other.crl").status_code == 404


def test_crls_parse_and_verify_with_openssl_and_pkilint(api, app, instance, tmp_path):
    client = app.test_client()
    cert = issue(api)
    revoke(api, cert["serial"], "unspecified")
    for name, issuer, kind in (("intermediate.crl", "intermediate.pem", "CRL"), ("root.crl", "root.pem", "ARL")):
        path = tmp_path / name
        path.write_bytes(_crl(client, name).data)
        result = run_openssl("crl", "-inform", "DER", "-in", str(path), "-CAfile", str(instance / "ca" / issuer),
                             "-noout", "-text")
        assert result.returncode == 0 and b"verify OK" in result.stderr + result.stdout, result.stderr
        assert_pkilint_clean(path, "lint_crl", "-t", kind, "-p", "PKIX")


def test_openssl_verify_crl_check(api, app, instance, tmp_path):
    client = app.test_client()
    good = issue(api, ["good.example.test"])
    bad = issue(api, ["bad.example.test"])
    revoke(api, bad["serial"], "keyCompromise")
    crls = tmp_path / "crls.pem"
    crls.write_bytes(_crl(client, "intermediate.crl", format="pem").data + _crl(client, "root.crl", format="pem").data)
    for cert, expected in ((good, True), (bad, False)):
        leaf = tmp_path / f"{cert['serial']}.pem"
        leaf.write_text(cert["certificate"])
        result = run_openssl("verify", "-crl_check_all", "-CRLfile", str(crls), "-CAfile",
                             str(instance / "ca" / "root.pem"), "-untrusted", str(instance / "ca" / "intermediate.pem"),
                             str(leaf))
        assert (result.returncode == 0) == expected, (result.stdout + result.stderr).decode()
        if not expected:
            assert b"certificate revoked" in result.stdout + result.stderr


def _ocsp_request(cert_pem: str, issuer: x509.Certificate, algorithm=None, nonce: bytes | None = None):
    algorithm = algorithm or hashes.SHA1()
    builder = ocsp.OCSPRequestBuilder().add_certificate(x509.load_pem_x509_certificate(cert_pem.encode()), issuer,
                                                        algorithm)
    if nonce:
        builder = builder.add_extension(x509.OCSPNonce(nonce), critical=False)
    return builder.build().public_bytes(Encoding.DER)


def test_ocsp_good_revoked_unknown_with_nonce(api, app, svc):
    client = app.test_client()
    cert = issue(api)
    req = _ocsp_request(cert["certificate"], svc.authority.intermediate, nonce=b"0123456789abcdef")
    response = client.post("/ocsp", data=req, headers={"Content-Type": "application/ocsp-request"})
    assert response.status_code == 200 and response.mimetype == "application/ocsp-response"
    parsed = ocsp.load_der_ocsp_response(response.data)
    assert parsed.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL
    assert parsed.certificate_status == ocsp.OCSPCertStatus.GOOD
    assert parsed.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce == b"0123456789abcdef"
    responder = parsed.certificates[0]
    responder.verify_directly_issued_by(svc.authority.intermediate)
    assert x509.ExtendedKeyUsageOID.OCSP_SIGNING in responder.extensions.get_extension_for_class(
        x509.ExtendedKeyUsage).value
    assert responder.extensions.get_extension_for_class(x509.OCSPNoCheck)
    assert parsed.next_update_utc - parsed.this_update_utc == dt.timedelta(hours=svc.config.revocation.ocsp_validity_hours)

    revoke(api, cert["serial"], "keyCompromise")
    get = client.get("/ocsp/" + base64.b64encode(_ocsp_request(cert["certificate"], svc.authority.intermediate,
                                                                hashes.SHA256())).decode())
    revoked = ocsp.load_der_ocsp_response(get.data)
    assert revoked.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert revoked.revocation_reason == x509.ReasonFlags.key_compromise
    assert revoked.revocation_time_utc is not None

    other_key = cached_key("ec-p256", 9)
    fake = x509.CertificateBuilder().subject_name(svc.authority.intermediate.subject).issuer_name(
        svc.authority.intermediate.subject).public_key(other_key.public_key()).serial_number(12345).not_valid_before(
        dt.datetime(2026, 1, 1)).not_valid_after(dt.datetime(2027, 1, 1)).sign(other_key, hashes.SHA256())
    # A serial this CA never issued: unauthorized (RFC 6960 2.3), unsigned and the same every time.
    unknown = ocsp.load_der_ocsp_response(client.post("/ocsp", data=_ocsp_request(
        pem(fake), svc.authority.intermediate)).data)
    assert unknown.response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


@pytest.mark.parametrize("algorithm", [hashes.SHA1(), hashes.SHA256(), hashes.SHA384(), hashes.SHA512()],
                         ids=["sha1", "sha256", "sha384", "sha512"])
def test_ocsp_reads_cert_ids_hashed_with_each_sha(api, app, svc, algorithm):
    cert = issue(api)
    revoke(api, cert["serial"], "superseded")
    response = app.test_client().post("/ocsp", data=_ocsp_request(cert["certificate"], svc.authority.intermediate,
                                                                  algorithm))
    parsed = ocsp.load_der_ocsp_response(response.data)
    assert parsed.certificate_status == ocsp.OCSPCertStatus.REVOKED
    assert parsed.hash_algorithm.name == algorithm.name and parsed.serial_number == int(cert["serial"], 16)


@pytest.mark.parametrize("body", [b"", b"garbage", b"\x30\x03\x02\x01\x01", b"\x30" + b"\xff" * 20])
def test_malformed_ocsp_requests_get_malformed_request(app, body):
    response = app.test_client().post("/ocsp", data=body)
    assert response.status_code == 200
    assert ocsp.load_der_ocsp_response(response.data).response_status == ocsp.OCSPResponseStatus.MALFORMED_REQUEST


def test_truncated_ocsp_requests_never_5xx(app, api, svc):
    client = app.test_client()
    req = _ocsp_request(issue(api)["certificate"], svc.authority.intermediate)
    for cut in range(0, len(req), 3):
        response = client.post("/ocsp", data=req[:cut])
        assert response.status_code == 200
        status = ocsp.load_der_ocsp_response(response.data).response_status
        assert status in (ocsp.OCSPResponseStatus.MALFORMED_REQUEST, ocsp.OCSPResponseStatus.UNAUTHORIZED)
    assert client.get("/ocsp/%%%not-base64").status_code == 200


def test_ocsp_for_another_issuer_is_unauthorized(app, svc):
    other = cached_key("ec-p256", 10)
    name = x509.Name([x509.NameAttribute(x509.oid.NameOID.COMMON_NAME, "Other CA")])
    other_ca = x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(
        other.public_key()).serial_number(5).not_valid_before(dt.datetime(2026, 1, 1)).not_valid_after(
        dt.datetime(2027, 1, 1)).sign(other, hashes.SHA256())
    leaf = x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(
        other.public_key()).serial_number(6).not_valid_before(dt.datetime(2026, 1, 1)).not_valid_after(
        dt.datetime(2027, 1, 1)).sign(other, hashes.SHA256())
    response = app.test_client().post("/ocsp", data=_ocsp_request(pem(leaf), other_ca))
    assert ocsp.load_der_ocsp_response(response.data).response_status == ocsp.OCSPResponseStatus.UNAUTHORIZED


def test_pkilint_finds_nothing_in_the_responder_and_its_responses(api, app, svc, tmp_path):
    cert = issue(api)
    data = app.test_client().post("/ocsp", data=_ocsp_request(cert["certificate"], svc.authority.intermediate)).data
    (tmp_path / "resp.der").write_bytes(data)
    responder = ocsp.load_der_ocsp_response(data).certificates[0]
    (tmp_path / "responder.pem").write_text(pem(responder))
    assert_pkilint_clean(tmp_path / "responder.pem")
    assert_pkilint_clean(tmp_path / "resp.der", "lint_ocsp_response")



def test_openssl_ocsp_against_the_real_server(instance, svc, tmp_path):
    token = new_token(svc, "ocsp-admin")
    headers = {"Authorization": f"Bearer {token}"}
    with running_server(instance) as base:
        cert, leaf, _ = issue_verified(base, token, "ocsp.example.test", instance / "ca" / "root.pem", tmp_path)

        def ask() -> str:
            result = run_openssl("ocsp", "-issuer", str(instance / "ca" / "intermediate.pem"), "-cert", str(leaf),
                                 "-url", f"{base}/ocsp", "-CAfile", str(instance / "ca" / "root.pem"))
            out = (result.stdout + result.stderr).decode()
            assert result.returncode == 0, out
            assert "Response verify OK" in out, out
            assert "WARNING" not in out, out  # e.g. no nonce echoed
            return out

        assert f"{leaf}: good" in ask()
        revoked = requests.post(f"{base}/api/v1/certificates/{cert['serial']}/revoke", headers=headers,
                                json={"reason": "keyCompromise"}, timeout=10)
        assert revoked.status_code == 200
        out = ask()
        assert f"{leaf}: revoked" in out and "Reason: keyCompromise" in out
        # And the very next CRL request lists it.
        crl = x509.load_der_x509_crl(requests.get(f"{base}/crl/intermediate.crl", timeout=10).content)
        assert crl.get_revoked_certificate_by_serial_number(int(cert["serial"], 16)) is not None



def test_go_reads_the_ocsp_answers_and_the_crl(instance, svc, tmp_path):
    """golang.org/x/crypto/ocsp is what Caddy staples with and Go servers and clients check with; a
    Must-Staple certificate (RFC 7633) is only as good as the server's stapling. It parses the
    answers to POST and GET for the certificate (good, then revoked with its reason), and Go's
    x509 parses the CRL, checks its signature against the intermediate and finds the serial."""
    import subprocess

    binary = go_build("gorevocation", tmp_path)
    token = new_token(svc, "go-ocsp")
    headers = {"Authorization": f"Bearer {token}"}
    with running_server(instance) as base:
        cert, leaf, _ = issue_verified(base, token, "go-ocsp.example.test", instance / "ca" / "root.pem", tmp_path)
        issuer = instance / "ca" / "intermediate.pem"

        def go_says() -> list[str]:
            done = subprocess.run([str(binary), str(leaf), str(issuer), base], capture_output=True, text=True,
                                  timeout=60)
            assert done.returncode == 0, done.stdout + done.stderr
            return done.stdout.splitlines()

        serial = cert["serial"]
        said = go_says()
        assert said[:2] == [f"ocsp post: good serial {serial}", f"ocsp get: good serial {serial}"], said
        assert said[2].startswith("crl: signed by the issuer") and said[2].endswith("0 entries, leaf listed false")
        assert requests.post(f"{base}/api/v1/certificates/{serial}/revoke", headers=headers,
                             json={"reason": "keyCompromise"}, timeout=10).status_code == 200
        said = go_says()
    assert said[:2] == [f"ocsp post: revoked serial {serial} reason 1", f"ocsp get: revoked serial {serial} reason 1"]
    assert said[2].startswith("crl: signed by the issuer") and said[2].endswith("1 entries, leaf listed true"), said


def test_java_trusts_the_chain_and_checks_revocation_by_ocsp_and_by_crl(tmp_path):
    """The JDK's PKIX validation, as Java applications and Tomcat-based appliances (CUCM) run it:
    root.pem imported with keytool (what /trust says for Java), a server sending leaf +
    intermediate, hostname verification, and revocation checking on: the leaf by OCSP (the AIA
    URL; Java also checks the delegated responder's certificate) or by its CRL distribution point,
    the intermediate by the root's CRL. Good, then refused once the leaf is revoked, by either way.
    The instance is made at the address it serves, so the URLs in the certificates are live."""
    import subprocess

    java, keytool = need("java"), need("keytool")
    port = free_port()
    folder = tmp_path / "ca"

    def ca_server(*args: str) -> str:
        done = run_cli("--instance", str(folder), *args, env={"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE})
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    ca_server("init", "--no-admin", "--base-url", f"http://127.0.0.1:{port}")
    key = cached_key("ec-p256", 7)
    (tmp_path / "leaf-key.pem").write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    (tmp_path / "leaf.csr").write_text(pem(make_csr(["localhost"], key=key)))
    (tmp_path / "leaf.pem").write_text(ca_server("issue", str(tmp_path / "leaf.csr")))
    serial = format(x509.load_pem_x509_certificate((tmp_path / "leaf.pem").read_bytes()).serial_number, "x")
    trust = tmp_path / "trust.p12"
    imported = subprocess.run([keytool, "-importcert", "-noprompt", "-alias", "ca-root", "-file",
                               str(folder / "ca" / "root.pem"), "-keystore", str(trust), "-storetype", "PKCS12",
                               "-storepass", "changeit"], capture_output=True, text=True, timeout=60)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    (tmp_path / "ocsp.security").write_text("ocsp.enable=true\n")

    def java_says(tls_port: int, *checks: str) -> str:
        done = subprocess.run([java, f"-Djavax.net.ssl.trustStore={trust}", "-Djavax.net.ssl.trustStorePassword=changeit",
                               "-Dcom.sun.net.ssl.checkRevocation=true", *checks,
                               str(Path(__file__).with_name("java") / "TlsClient.java"), f"https://localhost:{tls_port}/"],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode in (0, 2), done.stdout + done.stderr
        return done.stdout.strip()

    by_ocsp = ("-Dcom.sun.security.enableCRLDP=true", f"-Djava.security.properties={tmp_path / 'ocsp.security'}")
    by_crl = ("-Dcom.sun.security.enableCRLDP=true",)
    with openssl_s_server(tmp_path / "leaf.pem", folder / "ca" / "intermediate.pem", tmp_path / "leaf-key.pem") as tls, \
            running_server(folder, port=port, env={"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE}):
        assert java_says(tls, *by_ocsp) == "status 200"
        assert java_says(tls, *by_crl) == "status 200"
        ca_server("revoke", serial, "--reason", "keyCompromise")
        refused = java_says(tls, *by_ocsp)
        assert refused.startswith("refused: Certificate has been revoked, reason: KEY_COMPROMISE"), refused
        assert "authority: CN=Example Org Issuing CA OCSP Responder" in refused, refused  # the answer said so
        refused = java_says(tls, *by_crl)
        assert refused.startswith("refused: Certificate has been revoked, reason: KEY_COMPROMISE"), refused
        assert "authority: CN=Example Org Issuing CA, O=Example Org" in refused, refused  # the CRL said so
    log = (folder / "serve.log").read_text()
    assert "GET /crl/root.crl" in log and "GET /crl/intermediate.crl" in log and "GET /ocsp/" in log

def test_scheduler_job_rebuilds_crls_before_next_update(svc):
    from ca_server.clock import utcnow

    now = utcnow()
    revocation.refresh_crls(svc.config, svc.store, svc.authority, now)
    first = svc.store.latest_crl("intermediate")["number"]
    assert revocation.refresh_crls(svc.config, svc.store, svc.authority, now + dt.timedelta(hours=1)) == []
    margin = svc.config.revocation.crl_validity_hours - svc.config.revocation.crl_refresh_hours
    rebuilt = revocation.refresh_crls(svc.config, svc.store, svc.authority, now + dt.timedelta(hours=margin + 1))
    assert [c.issuer for c in rebuilt] == ["intermediate"]
    assert rebuilt[0].number > first


def test_ocsp_responder_certificate_is_renewed_before_it_expires(svc):
    from ca_server import ocsp as ocsp_module
    from ca_server.clock import utcnow

    now = utcnow()
    first = ocsp_module.ensure_responder(svc.config, svc.store, svc.authority, now)
    assert ocsp_module.ensure_responder(svc.config, svc.store, svc.authority, now + dt.timedelta(days=30)).serial == \
        first.serial
    later = now + dt.timedelta(days=svc.config.revocation.ocsp_responder_validity_days * 0.7)
    renewed = ocsp_module.ensure_responder(svc.config, svc.store, svc.authority, later)
    assert renewed.serial != first.serial and renewed.not_after > first.not_after
    renewed.cert.verify_directly_issued_by(svc.authority.intermediate)


def test_revoked_intermediate_is_listed_on_the_root_crl(instance, app, svc):
    result = CliRunner().invoke(main, ["revoke-intermediate", "--reason", "keyCompromise", "--yes"])
    assert result.exit_code == 0, result.output
    crl = x509.load_der_x509_crl(app.test_client().get("/crl/root.crl").data)
    assert crl.is_signature_valid(svc.authority.root.public_key())
    entry = crl.get_revoked_certificate_by_serial_number(svc.authority.intermediate.serial_number)
    assert entry is not None
    again = CliRunner().invoke(main, ["revoke-intermediate", "--yes"])
    assert again.exit_code == 1


def test_served_crl_follows_the_store_and_is_rebuilt_only_when_lapsed(app, svc, api):
    client = app.test_client()
    first = x509.load_der_x509_crl(_crl(client, "intermediate.crl").data)
    n1 = first.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    # A revocation by another process (here: straight through the domain function) is served next.
    cert = issue(api)
    from ca_server.clock import utcnow

    revocation.revoke(svc.config, svc.store, svc.authority, cert["serial"], "superseded", utcnow(), actor="other")
    second = x509.load_der_x509_crl(_crl(client, "intermediate.crl").data)
    assert second.get_revoked_certificate_by_serial_number(int(cert["serial"], 16)) is not None
    n2 = second.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert n2 > n1
    # Past nextUpdate (the scheduler did not run), the next request builds a fresh one.
    svc.clock = lambda: second.next_update_utc + dt.timedelta(minutes=1)
    third = x509.load_der_x509_crl(_crl(client, "intermediate.crl").data)
    assert third.last_update_utc > second.next_update_utc - dt.timedelta(seconds=1)
    assert third.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > n2


def test_ocsp_fast_path_answers_like_the_flask_views(api, app, svc):
    """OCSP is answered by web/hot_paths.py before Flask; the Flask views behind it (reached here
    directly) must give the same answer: status, headers, and a response for the same serial."""
    from werkzeug.test import Client

    flask_only = Client(app.wsgi_app.flask)
    fast = app.test_client()
    cert = issue(api)
    req = _ocsp_request(cert["certificate"], svc.authority.intermediate)
    get_url = "/ocsp/" + base64.b64encode(req).decode()
    for method, kwargs in (("post", {"data": req}), ("get", {})):
        url = "/ocsp" if method == "post" else get_url
        a = getattr(fast, method)(url, **kwargs)
        b = getattr(flask_only, method)(url, **kwargs)
        assert a.status_code == b.status_code == 200
        ignored = {"Content-Length", "Vary", "Expires"}  # Expires: now + max-age, read a moment apart
        assert {(k, v) for k, v in a.headers.items() if k not in ignored} == \
               {(k, v) for k, v in b.headers.items() if k not in ignored}
        if method == "get":  # the same to the second, but a second boundary may fall between the two
            expires = [parsedate_to_datetime(r.headers["Expires"]) for r in (a, b)]
            assert abs((expires[0] - expires[1]).total_seconds()) <= 1
        else:
            assert "Expires" not in a.headers and "Expires" not in b.headers
        pa, pb = ocsp.load_der_ocsp_response(a.data), ocsp.load_der_ocsp_response(b.data)
        assert pa.serial_number == pb.serial_number == int(cert["serial"], 16)
        assert pa.certificate_status == pb.certificate_status == ocsp.OCSPCertStatus.GOOD
    for garbage in ("/ocsp/%%%not-base64", "/ocsp/AAAA"):
        a, b = fast.get(garbage), flask_only.get(garbage)
        assert a.status_code == b.status_code == 200 and a.data == b.data


def test_over_https_the_ocsp_fast_path_carries_hsts_like_the_flask_views(api, app, svc):
    """Found in review (issue 29): the OCSP fast path added the security headers but not HSTS,
    which Flask adds to every answer over https; all the fast paths now take the site's headers
    from one list (HotPaths.site_headers)."""
    from werkzeug.test import Client

    flask_only = Client(app.wsgi_app.flask)
    fast = app.test_client()
    req = _ocsp_request(issue(api)["certificate"], svc.authority.intermediate)
    get_url = "/ocsp/" + base64.b64encode(req).decode()
    for method, url, kwargs in (("post", "/ocsp", {"data": req}), ("get", get_url, {})):
        a = getattr(fast, method)(url, base_url="https://localhost", **kwargs)
        b = getattr(flask_only, method)(url, base_url="https://localhost", **kwargs)
        assert a.status_code == b.status_code == 200
        assert a.headers["Strict-Transport-Security"] == b.headers["Strict-Transport-Security"]
        assert a.headers["X-Content-Type-Options"] == b.headers["X-Content-Type-Options"] == "nosniff"
        assert "Strict-Transport-Security" not in getattr(fast, method)(url, **kwargs).headers  # plain http


def test_crl_pem_form_is_what_cryptography_writes(app):
    client = app.test_client()
    for name in ("intermediate.crl", "root.crl"):
        der = client.get(f"/crl/{name}").data
        as_pem = client.get(f"/crl/{name}?format=pem")
        assert as_pem.status_code == 200
        assert as_pem.data == x509.load_der_x509_crl(der).public_bytes(Encoding.PEM)
