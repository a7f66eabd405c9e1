"""EST (RFC 7030) through the app: what a device sees for each operation and each mistake. The real
clients (curl with openssl, strongSwan's pki) over `serve --tls` are in test_est_clients.py."""

from __future__ import annotations

import base64
import datetime as dt
import json
import random

import pytest
from asn1crypto import core
from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7

from ca_server import accounts
from ca_server.store import CertificateFilter

from .conftest import new_token
from .factories import der, make_csr, pem

ENROLL = "/.well-known/est/simpleenroll"
REENROLL = "/.well-known/est/simplereenroll"


class CsrAttrOids(core.SequenceOf):
    _child_spec = core.ObjectIdentifier


@pytest.fixture
def est_app(make_app):
    return make_app(est={"enabled": True})


@pytest.fixture
def est(est_app):
    return est_app.test_client()


def basic(user: str, password: str) -> dict:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode(),
            "Content-Type": "application/pkcs10"}


def b64_csr(csr) -> bytes:
    return base64.b64encode(der(csr))


def certs_of(response) -> list[x509.Certificate]:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("application/pkcs7-mime")
    body = response.get_data()
    assert b"\n" not in body.strip(), "base64 without line breaks (strongSwan's pki reads no others)"
    return pkcs7.load_der_pkcs7_certificates(base64.b64decode(body))


def test_est_is_off_until_the_config_turns_it_on(app):
    response = app.test_client().get("/.well-known/est/cacerts")
    assert response.status_code == 404
    assert "[est] enabled = true" in response.get_data(as_text=True)


def test_cacerts_gives_the_intermediate_and_the_root_without_sign_in(est, est_app):
    authority = est_app.extensions["ca_server"].authority
    # a SET in the PKCS#7, so in DER order, not ours
    assert set(certs_of(est.get("/.well-known/est/cacerts"))) == {authority.intermediate, authority.root}


def test_simpleenroll_with_a_token_issues_stores_and_audits(est, est_app):
    svc = est_app.extensions["ca_server"]
    token = new_token(svc, "router-token")
    response = est.post(ENROLL, data=b64_csr(make_csr(["router1.example.test"])), headers=basic("router1", token))
    (cert,) = certs_of(response)
    cert.verify_directly_issued_by(svc.authority.intermediate)
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["router1.example.test"]
    serial = format(cert.serial_number, "x")
    stored = svc.store.get_certificate(serial)
    assert stored is not None and stored.certificate == cert
    (row,) = svc.store.audit_entries(action="issue", serial=serial)
    detail = row["detail"] if isinstance(row["detail"], dict) else json.loads(row["detail"])
    assert (row["actor"], detail["door"], detail["operation"]) == ("token:router-token", "est", "simpleenroll")


def test_simpleenroll_with_a_users_name_and_password(est, est_app):
    svc = est_app.extensions["ca_server"]
    accounts.add_user(svc.store, "bob", "bob-password", is_admin=False, domains=("example.test",), allow_ip=False,
                      email=None, now=dt.datetime.now(dt.UTC))
    (cert,) = certs_of(est.post(ENROLL, data=b64_csr(make_csr(["phone.example.test"])),
                                headers=basic("bob", "bob-password")))
    assert svc.store.get_certificate(format(cert.serial_number, "x")).requester == "user:bob"


def test_a_request_in_pem_or_with_line_breaks_is_taken_too(est, est_app):
    token = new_token(est_app.extensions["ca_server"])
    flat = b64_csr(make_csr(["wrapped.example.test"]))
    wrapped = b"\r\n".join(flat[i:i + 64] for i in range(0, len(flat), 64))
    assert len(certs_of(est.post(ENROLL, data=wrapped, headers=basic("x", token)))) == 1
    assert len(certs_of(est.post(ENROLL, data=pem(make_csr(["pem.example.test"])), headers=basic("x", token)))) == 1


@pytest.mark.parametrize("headers", [
    {"Content-Type": "application/pkcs10"},
    {"Authorization": "Bearer abc", "Content-Type": "application/pkcs10"},
    basic("anyone", "not-a-token"),
    basic("", ""),
])
def test_without_good_credentials_the_answer_is_401_with_a_basic_challenge(est, headers, est_app):
    response = est.post(ENROLL, data=b64_csr(make_csr(["x.example.test"])), headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic ")
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "API token" in response.get_data(as_text=True)
    svc = est_app.extensions["ca_server"]
    assert svc.store.count_certificates(CertificateFilter(), dt.datetime.now(dt.UTC)) == 0


def test_refusals_say_why_in_words_and_store_nothing(est, est_app):
    svc = est_app.extensions["ca_server"]
    scoped = new_token(svc, "lab-token", admin=False, domains=("lab.example.test",))
    outside = est.post(ENROLL, data=b64_csr(make_csr(["www.example.test"])), headers=basic("x", scoped))
    assert outside.status_code == 403
    assert "www.example.test" in outside.get_data(as_text=True) and "lab.example.test" in outside.get_data(as_text=True)
    admin = new_token(svc)
    wildcard = est.post(ENROLL, data=b64_csr(make_csr(["*.example.test"])), headers=basic("x", admin))
    assert wildcard.status_code == 422 and "wildcard" in wildcard.get_data(as_text=True).lower()
    garbage = est.post(ENROLL, data=b"this is not base64 !!", headers=basic("x", admin))
    assert garbage.status_code == 400 and "base64" in garbage.get_data(as_text=True)
    assert [e["action"] for e in svc.store.audit_entries() if e["action"] in ("issue", "refuse")] == [
        "refuse", "refuse"]


def test_damaged_requests_get_a_4xx_never_a_500(est, est_app):
    token = new_token(est_app.extensions["ca_server"])
    good = der(make_csr(["fuzz.example.test"]))
    rng = random.Random(7)
    for i in range(60):
        body = bytearray(good[: rng.randrange(1, len(good))] if i % 2 else good)
        if i % 2 == 0:
            body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
        response = est.post(ENROLL, data=base64.b64encode(bytes(body)), headers=basic("x", token))
        assert response.status_code in (200, 400, 422), (i, response.status_code, response.get_data(as_text=True))
        if response.status_code != 200:
            assert response.headers["Content-Type"].startswith("text/plain")


def test_simplereenroll_renews_a_certificate_with_the_same_names_and_only_that(est, est_app):
    svc = est_app.extensions["ca_server"]
    token = new_token(svc)
    (first,) = certs_of(est.post(ENROLL, data=b64_csr(make_csr(["gw.example.test"])), headers=basic("gw", token)))
    (second,) = certs_of(est.post(REENROLL, data=b64_csr(make_csr(["gw.example.test"])), headers=basic("gw", token)))
    assert second.serial_number != first.serial_number and second.public_key() != first.public_key()
    (row,) = svc.store.audit_entries(action="issue", serial=format(second.serial_number, "x"))
    detail = row["detail"] if isinstance(row["detail"], dict) else json.loads(row["detail"])
    assert detail["renews"] == format(first.serial_number, "x")
    unknown = est.post(REENROLL, data=b64_csr(make_csr(["never.example.test"])), headers=basic("gw", token))
    assert unknown.status_code == 403 and "simpleenroll" in unknown.get_data(as_text=True)


def test_csrattrs_asks_for_sha256_signatures(est):
    response = est.get("/.well-known/est/csrattrs")
    assert response.status_code == 200 and response.headers["Content-Type"] == "application/csrattrs"
    oids = [item.dotted for item in CsrAttrOids.load(base64.b64decode(response.get_data()))]
    assert oids == ["1.2.840.10045.4.3.2", "1.2.840.113549.1.1.11"]  # ecdsa-with-SHA256, sha256WithRSAEncryption


def test_serverkeygen_is_refused_by_design(est, est_app):
    token = new_token(est_app.extensions["ca_server"])
    response = est.post("/.well-known/est/serverkeygen", data=b64_csr(make_csr()), headers=basic("x", token))
    assert response.status_code == 501
    assert "never leaves the device" in response.get_data(as_text=True)


def test_a_label_has_its_own_path_domains_and_reminder_addresses(make_app):
    app = make_app(est={"enabled": True, "labels": {"printers": {"domains": ["printers.example.test"],
                                                                 "notify": ["print-team@example.test"]}}})
    svc, est = app.extensions["ca_server"], app.test_client()
    admin = new_token(svc, "admin")
    (cert,) = certs_of(est.post("/.well-known/est/printers/simpleenroll",
                                data=b64_csr(make_csr(["p1.printers.example.test"])), headers=basic("x", admin)))
    record = svc.store.get_certificate(format(cert.serial_number, "x"))
    assert record.notify == ("print-team@example.test",)
    (row,) = svc.store.audit_entries(action="issue", serial=record.serial)
    detail = row["detail"] if isinstance(row["detail"], dict) else json.loads(row["detail"])
    assert (detail["door"], detail["endpoint"]) == ("est", "printers")
    # outside the label's domains: refused, even for an admin, and nothing stored
    before = svc.store.count_certificates(CertificateFilter(), dt.datetime.now(dt.UTC))
    outside = est.post("/.well-known/est/printers/simpleenroll", data=b64_csr(make_csr(["www.example.test"])),
                       headers=basic("x", admin))
    assert outside.status_code == 403 and "www.example.test" in outside.get_data(as_text=True)
    assert svc.store.count_certificates(CertificateFilter(), dt.datetime.now(dt.UTC)) == before
    # a token for other domains may request none of the label's names
    other = new_token(svc, "web", admin=False, domains=("web.example.test",))
    refused = est.post("/.well-known/est/printers/simpleenroll", data=b64_csr(make_csr(["p2.printers.example.test"])),
                       headers=basic("x", other))
    assert refused.status_code == 403 and "printers.example.test" in refused.get_data(as_text=True)
    # a token for a wider domain is narrowed to the label's
    wide = new_token(svc, "wide", admin=False, domains=("example.test",))
    assert len(certs_of(est.post("/.well-known/est/printers/simpleenroll",
                                 data=b64_csr(make_csr(["p3.printers.example.test"])), headers=basic("x", wide)))) == 1
    assert len(certs_of(est.get("/.well-known/est/printers/cacerts"))) == 2
    unknown = est.get("/.well-known/est/nowhere/cacerts")
    assert unknown.status_code == 404 and "/.well-known/est/printers/" in unknown.get_data(as_text=True)
    assert est.post(ENROLL, data=b64_csr(make_csr(["www.example.test"])), headers=basic("x", admin)).status_code == 200


def test_metrics_count_issuances_by_door_and_the_page_says_how_a_certificate_came(est, est_app):
    from prometheus_client.parser import text_string_to_metric_families

    from .conftest import sign_in

    svc = est_app.extensions["ca_server"]
    token = new_token(svc, "ops")
    (cert,) = certs_of(est.post(ENROLL, data=b64_csr(make_csr(["door.example.test"])), headers=basic("x", token)))
    made = est.post("/api/v1/certificates", json={"csr": pem(make_csr(["api.example.test"]))},
                    headers={"Authorization": f"Bearer {token}"})
    assert made.status_code == 201, made.get_data(as_text=True)
    body = est.get("/metrics").get_data(as_text=True)
    families = {f.name: f for f in text_string_to_metric_families(body)}
    doors = {s.labels["door"]: s.value for s in families["ca_server_issuances_by_door"].samples
             if s.name.endswith("_total")}
    assert doors == {"est": 1, "api": 1}
    accounts.add_user(svc.store, "alice", "alice-password", is_admin=True, domains=(), allow_ip=True, email=None,
                      now=dt.datetime.now(dt.UTC))
    assert sign_in(est, "alice", "alice-password").status_code == 303
    page = est.get(f"/certificates/{format(cert.serial_number, 'x')}").get_data(as_text=True)
    assert "Enrolled through" in page and "EST, label default, simpleenroll" in page
    page = est.get(f"/certificates/{made.get_json()['serial']}").get_data(as_text=True)
    assert "the JSON API" in page
