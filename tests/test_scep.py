"""SCEP (RFC 8894) through the app: what a device or a scanner sees for each operation and each
broken message; one-time challenges in the store on both backends. The real clients (micromdm's
scepclient, strongSwan's pki) over `serve` are in test_scep_clients.py."""

from __future__ import annotations

import base64
import datetime as dt
import random

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import NameOID

from ca_server.scep import enroll
from ca_server.store import CertificateFilter

from .server import run_cli


@pytest.fixture
def scep(make_app):
    return make_app(scep={"enabled": True}).test_client()


def test_scep_is_off_until_the_config_turns_it_on(app):
    response = app.test_client().get("/scep?operation=GetCACaps")
    assert response.status_code == 404 and "[scep] enabled = true" in response.get_data(as_text=True)


def test_getcacaps_announces_what_clients_look_for(scep):
    caps = scep.get("/scep?operation=GetCACaps").get_data(as_text=True).split()
    assert {"AES", "DES3", "POSTPKIOperation", "Renewal", "SHA-256", "SHA-384", "SCEPStandard"} <= set(caps)


def test_getcacert_gives_an_rsa_ra_issued_by_the_intermediate_then_the_chain(scep, svc):
    response = scep.get("/scep?operation=GetCACert")
    assert response.headers["Content-Type"] == "application/x-x509-ca-ra-cert"  # compared whole by scepclient
    certs = pkcs7.load_der_pkcs7_certificates(response.get_data())
    (ra,) = [c for c in certs if c not in (svc.authority.intermediate, svc.authority.root)]
    assert isinstance(ra.public_key(), rsa.RSAPublicKey)
    ra.verify_directly_issued_by(svc.authority.intermediate)
    assert svc.store.get_certificate(format(ra.serial_number, "x")) is not None  # stored like any certificate
    again = pkcs7.load_der_pkcs7_certificates(scep.get("/scep?operation=GetCACert").get_data())
    assert set(again) == set(certs)  # made once, then read


def _signed_data_without_scep_attributes() -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return (pkcs7.PKCS7SignatureBuilder().set_data(b"not a pkcsPKIEnvelope").add_signer(cert, key, hashes.SHA256())
            .sign(Encoding.DER, []))


def test_broken_messages_get_a_400_in_words_never_a_500(scep):
    signed = _signed_data_without_scep_attributes()
    response = scep.post("/scep?operation=PKIOperation", data=signed,
                         headers={"Content-Type": "application/x-pki-message"})
    assert response.status_code == 400 and "SCEP attribute" in response.get_data(as_text=True)
    rng = random.Random(26)
    for i in range(80):
        body = bytearray(signed[: rng.randrange(1, len(signed))] if i % 2 else signed)
        if i % 2 == 0:
            for _ in range(3):
                body[rng.randrange(len(body))] ^= 1 << rng.randrange(8)
        if i % 4 == 0:  # the same by GET, as Cisco IOS sends it
            response = scep.get("/scep?operation=PKIOperation&message="
                                + base64.urlsafe_b64encode(bytes(body)).decode())
        else:
            response = scep.post("/scep?operation=PKIOperation", data=bytes(body))
        assert response.status_code == 400, (i, response.status_code, response.get_data(as_text=True))
        assert response.headers["Content-Type"].startswith("text/plain")
    assert scep.get("/scep?operation=Nonsense").status_code == 400
    assert scep.get("/scep?operation=PKIOperation").status_code == 400


def test_a_one_time_challenge_is_good_once_for_its_endpoint_and_until_it_expires(svc):
    now = dt.datetime.now(dt.UTC)
    secret = enroll.create_challenge(svc.store, now, hours=1, domains=("phones.example.test",))
    digest = enroll.challenge_digest(secret)
    assert svc.store.use_scep_challenge(digest, "other", now, used_by="t0") is None
    used = svc.store.use_scep_challenge(digest, "default", now, used_by="t1")
    assert used is not None and used["domains"] == ("phones.example.test",) and used["used_by"] == "t1"
    assert svc.store.use_scep_challenge(digest, "default", now, used_by="t2") is None
    late = enroll.create_challenge(svc.store, now, hours=1)
    assert svc.store.use_scep_challenge(enroll.challenge_digest(late), "default",
                                        now + dt.timedelta(hours=2), used_by="t3") is None
    rows = svc.store.scep_challenges()
    assert len(rows) == 2 and all(secret not in str(row) and late not in str(row) for row in rows)


def test_the_cli_prints_a_challenge_alone_on_the_last_line_and_stores_only_its_hash(instance, svc):
    made = run_cli("--instance", str(instance), "scep", "challenge", "create", "--domain", "lab.example.test",
                   "--expires-in", "2h")
    assert made.returncode == 0, made.stderr
    secret = made.stdout.strip().splitlines()[-1]
    assert len(secret) >= 20 and " " not in secret
    (row,) = svc.store.scep_challenges()
    assert row["hash"] == enroll.challenge_digest(secret) and row["domains"] == ("lab.example.test",)
    listed = run_cli("--instance", str(instance), "scep", "challenge", "list")
    assert "unused" in listed.stdout and secret not in listed.stdout
    bad = run_cli("--instance", str(instance), "scep", "challenge", "create", "--expires-in", "soon")
    assert bad.returncode != 0 and "30m, 12h or 7d" in bad.stderr
    bad = run_cli("--instance", str(instance), "scep", "challenge", "create", "--expires-in", "99999d")
    assert bad.returncode != 0 and "at most 365d" in bad.stderr  # it made one valid until 2300
    # a domain a token would refuse was stored as given, to match no name ever (found walking the CLI)
    for domain, words in (("lab example", "is not a domain"), ("*.lab.example.test", "is not a domain")):
        bad = run_cli("--instance", str(instance), "scep", "challenge", "create", "--domain", domain)
        assert bad.returncode == 1 and words in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    assert len(svc.store.scep_challenges()) == 1
    made = run_cli("--instance", str(instance), "scep", "challenge", "create", "--domain", "Phones.Example.TEST.")
    assert "for names under phones.example.test;" in made.stdout, made.stdout
    assert svc.store.scep_challenges()[0]["domains"] == ("phones.example.test",)


def test_a_held_transaction_is_found_by_endpoint_and_id_and_a_later_hold_replaces_it(svc):
    now = dt.datetime.now(dt.UTC)
    row = {"endpoint": "phones", "transaction_id": "t-1", "request_id": "r1", "signer_key": "k1",
           "created_at": now.isoformat()}
    svc.store.insert_scep_transaction(row)
    assert svc.store.scep_transaction("phones", "t-1")["request_id"] == "r1"
    svc.store.insert_scep_transaction({**row, "request_id": "r2"})  # the same key's next request, held too
    assert svc.store.scep_transaction("phones", "t-1")["request_id"] == "r2"
    assert svc.store.scep_transaction("default", "t-1") is None
    assert svc.store.scep_transaction("phones", "t-2") is None


def test_named_endpoints_and_labels_are_checked_when_the_config_is_read():
    from ca_server.config import ConfigError, config_from_dict

    config = config_from_dict({"scep": {"enabled": True, "endpoints": {"phones": {"domains": ["phones.example.test"],
                                                                                  "hold_out_of_scope": True}}},
                               "est": {"labels": {"printers": {"notify": ["ops@example.test"]}}}})
    assert config.scep.endpoint("phones").domains == ("phones.example.test",)
    assert config.scep.endpoint("default").profile == "client" and config.scep.endpoint("nope") is None
    assert config.est.label("printers").notify == ("ops@example.test",)
    for bad, words in (({"scep": {"endpoints": {"Bad Name": {}}}}, "scep.endpoints.Bad Name"),
                       ({"scep": {"endpoints": {"pkiclient.exe": {}}}}, "scep.endpoints.pkiclient.exe"),
                       ({"scep": {"endpoints": {"p": {"domains": ["*.x.test"]}}}}, "scep.endpoints.p.domains[0]"),
                       ({"scep": {"endpoints": {"p": {"colour": 1}}}}, "scep.endpoints.p.colour: unknown key"),
                       ({"est": {"labels": {"p": {"hold_out_of_scope": True}}}}, "est.labels.p"),
                       ({"est": {"labels": {"p": {"notify": ["not mail"]}}}}, "est.labels.p.notify[0]")):
        with pytest.raises(ConfigError) as refused:
            config_from_dict(bad)
        assert str(refused.value).startswith(words), str(refused.value)


def bench_client(make_app, monkeypatch, challenge: str):
    """A SCEP-enabled app's test client with `challenge` as its one challenge, the RA certificate
    it answers GetCACert with, and a new RSA device key."""
    monkeypatch.setenv("CA_SERVER_SCEP_CHALLENGE", challenge)
    client = make_app(scep={"enabled": True}).test_client()
    (ra,) = [c for c in pkcs7.load_der_pkcs7_certificates(client.get("/scep?operation=GetCACert").get_data())
             if isinstance(c.public_key(), rsa.RSAPublicKey)
             and not c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca]
    return client, ra, rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_the_benchmarks_scep_client_gets_success_and_a_refusal_is_seen_as_one(make_app, monkeypatch):
    """`make bench` drives both SCEP servers with benchmarks/scep.py's messages and counts a phase
    only when sample answers say SUCCESS: the messages must be ones a server takes, and a FAILURE
    (still HTTP 200) must not pass for a success."""
    from urllib.parse import quote

    from benchmarks import scep as bench

    client, ra, key = bench_client(make_app, monkeypatch, bench.CHALLENGE)

    def enroll_once(cn: str) -> bytes:
        message = base64.b64encode(bench.pkcs_req(ra, key, cn)).decode()
        answer = client.get(f"/scep?operation=PKIOperation&message={quote(message)}")
        assert answer.status_code == 200
        return answer.get_data()

    assert bench.succeeded(enroll_once("bench1.example.test"))
    monkeypatch.setattr(bench, "CHALLENGE", "not the challenge")
    assert not bench.succeeded(enroll_once("bench2.example.test"))


def test_an_enrollment_the_issuance_log_cannot_record_is_a_503_the_device_retries(make_app, monkeypatch, instance):
    """With the issuance log unwritable nothing is issued (issue 27). SCEP answered a signed
    FAILURE (badRequest), which a device takes as final; it is HTTP 503 now, and the same request
    enrolls once the log can be written."""
    from urllib.parse import quote

    from benchmarks import scep as bench

    from .checks import log_folder_unwritable

    client, ra, key = bench_client(make_app, monkeypatch, bench.CHALLENGE)
    url = "/scep?operation=PKIOperation&message=" + quote(base64.b64encode(bench.pkcs_req(ra, key, "nolog-scep")).decode())
    with log_folder_unwritable(instance):
        down = client.get(url)
        assert down.status_code == 503, down.get_data()[:300]
        assert "issuance log" in down.get_data(as_text=True)
    again = client.get(url)
    assert again.status_code == 200 and bench.succeeded(again.get_data())


def test_the_admin_page_shows_endpoints_challenges_enrollments_refusals_and_weak_clients(make_app, monkeypatch):
    from urllib.parse import quote

    from benchmarks import scep as bench
    from ca_server import accounts

    from .conftest import sign_in

    monkeypatch.setenv("CA_SERVER_SCEP_CHALLENGE", bench.CHALLENGE)
    app = make_app(scep={"enabled": True, "endpoints": {"phones": {"domains": ["phones.example.test"],
                                                                   "hold_out_of_scope": True}}})
    svc, client = app.extensions["ca_server"], app.test_client()
    (ra,) = [c for c in pkcs7.load_der_pkcs7_certificates(client.get("/scep?operation=GetCACert").get_data())
             if isinstance(c.public_key(), rsa.RSAPublicKey)
             and not c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca]
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for cn in ("good.example.test",):
        message = quote(base64.b64encode(bench.pkcs_req(ra, key, cn)).decode())
        assert bench.succeeded(client.get(f"/scep?operation=PKIOperation&message={message}").get_data())
    monkeypatch.setattr(bench, "CHALLENGE", "wrong")
    message = quote(base64.b64encode(bench.pkcs_req(ra, key, "bad.example.test")).decode())
    assert not bench.succeeded(client.get(f"/scep?operation=PKIOperation&message={message}").get_data())
    now = dt.datetime.now(dt.UTC)
    enroll.create_challenge(svc.store, now, hours=1, domains=("lab.example.test",), endpoint="phones")
    svc.store.append_audit(at=now, action="issue", actor="scep:default", client="10.9.8.7", detail={
        "door": "scep", "endpoint": "default", "operation": "PKCSReq", "cipher": "des", "digest": "sha1",
        "names": ["DNS:old-phone.example.test"]})
    accounts.add_user(svc.store, "alice", "alice-password", is_admin=True, domains=(), allow_ip=True, email=None,
                      now=now)
    assert sign_in(client, "alice", "alice-password").status_code == 303
    page = client.get("/admin/devices")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "/scep/phones" in text and "held for approval" in text and "phones.example.test" in text
    assert "lab.example.test" in text and "unused" in text
    assert "DNS:good.example.test" in text and "issued" in text
    assert "The challenge password is wrong" in text  # the refusal's reason in words
    assert "10.9.8.7" in text and "DES, SHA-1" in text  # the weak client, flagged


def test_a_challenge_webhook_allows_what_it_answers_200_to_and_is_signed(make_app, monkeypatch):
    """As step-ca's SCEPCHALLENGE webhook: a challenge neither static nor one-time is POSTed, signed,
    with the request's names; 200 allows it, anything else refuses it with the answer in words."""
    import hashlib
    import hmac
    import json
    from urllib.parse import quote

    from benchmarks import scep as bench

    from .test_webhooks import receiver

    monkeypatch.setenv("PHONES_HOOK_SECRET", "hook-secret")
    with receiver([200, 403]) as (url, got):
        app = make_app(scep={"enabled": True, "endpoints": {"phones": {
            "challenge_webhook": url + "/scep-check", "challenge_webhook_secret_env": "PHONES_HOOK_SECRET"}}})
        svc, client = app.extensions["ca_server"], app.test_client()
        (ra,) = [c for c in pkcs7.load_der_pkcs7_certificates(client.get("/scep/phones?operation=GetCACert").get_data())
                 if isinstance(c.public_key(), rsa.RSAPublicKey)
                 and not c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca]
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        monkeypatch.setattr(bench, "CHALLENGE", "from-the-mdm")
        answers = []
        for cn in ("allowed.example.test", "denied.example.test"):
            message = quote(base64.b64encode(bench.pkcs_req(ra, key, cn)).decode())
            answers.append(client.get(f"/scep/phones?operation=PKIOperation&message={message}").get_data())
        # the default endpoint has no webhook: the same challenge is simply wrong there
        message = quote(base64.b64encode(bench.pkcs_req(ra, key, "elsewhere.example.test")).decode())
        answers.append(client.get(f"/scep?operation=PKIOperation&message={message}").get_data())
    assert [bench.succeeded(a) for a in answers] == [True, False, False]
    assert len(got) == 2 and got[0]["path"] == "/scep-check"
    body = json.loads(got[0]["body"])
    assert body["challenge"] == "from-the-mdm" and body["names"] == ["allowed.example.test"]
    assert body["endpoint"] == "phones"
    expected = "sha256=" + hmac.new(b"hook-secret", got[0]["body"], hashlib.sha256).hexdigest()
    assert got[0]["headers"]["x-ca-server-signature"] == expected
    refusals = json.dumps([e["detail"] for e in svc.store.audit_entries(action="refuse")])
    assert "webhook did not allow it: the receiver answered 403" in refusals
    record = svc.store.list_certificates(CertificateFilter(q="allowed.example.test"), dt.datetime.now(dt.UTC),
                                         limit=1)[0][0]
    assert record.requester == "scep:phones (webhook)"


def test_an_https_challenge_webhook_with_a_certificate_from_this_ca_needs_its_ca_file(make_app, svc, instance,
                                                                                       tmp_path, monkeypatch):
    """An MDM on https whose certificate this CA issued: without challenge_webhook_ca_file the device
    is refused with what to set; with it the webhook's 200 allows the request."""
    import json
    from urllib.parse import quote

    from benchmarks import scep as bench

    from .checks import tls_server_context
    from .test_webhooks import receiver

    monkeypatch.setattr(bench, "CHALLENGE", "from-the-mdm")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with receiver(tls=tls_server_context(svc, tmp_path)) as (url, got):
        answers = []
        for ca_file in ("", str(instance / "ca" / "root.pem")):
            app = make_app(scep={"enabled": True, "endpoints": {"phones": {
                "challenge_webhook": url + "/scep-check", "challenge_webhook_ca_file": ca_file}}})
            client = app.test_client()
            (ra,) = [c for c in pkcs7.load_der_pkcs7_certificates(
                client.get("/scep/phones?operation=GetCACert").get_data())
                if isinstance(c.public_key(), rsa.RSAPublicKey)
                and not c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca]
            message = quote(base64.b64encode(bench.pkcs_req(ra, key, "phone.example.test")).decode())
            answers.append(client.get(f"/scep/phones?operation=PKIOperation&message={message}").get_data())
    assert [bench.succeeded(a) for a in answers] == [False, True] and len(got) == 1
    refusals = json.dumps([e["detail"] for e in svc.store.audit_entries(action="refuse")])
    assert "the receiver's TLS certificate is not trusted (unable to get local issuer certificate): set " \
           "challenge_webhook_ca_file to the CA certificate" in refusals, refusals
