"""ACME (RFC 8555) over the app: the whole flow with a scripted client, and the protocol's edge
cases, each answered with the ACME error a client expects and never a 5xx."""

from __future__ import annotations

import datetime as dt
import json
import random

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ca_server.acme import accounts as acme_accounts

from .acme_client import ScriptedAcme, b64, ec_key, http01_responder
from .checks import assert_openssl_verifies, wait_until
from .factories import make_csr, new_key
from .server import free_port

BASE = "http://127.0.0.1:5000"
PROBLEM = "application/problem+json"


@pytest.fixture
def http_port():
    return free_port()


@pytest.fixture
def acme_app(make_app, http_port):
    def factory(**acme):
        return make_app(acme={"http01_port": http_port, "validation_timeout_seconds": 2, "validation_attempts": 1,
                              **acme})
    return factory


@pytest.fixture
def client(acme_app):
    app = acme_app()
    acme = ScriptedAcme(app.test_client(), BASE)
    acme.app = app
    return acme


def problem(response, kind: str, status: int = 400) -> dict:
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.mimetype == PROBLEM
    body = response.get_json()
    assert body["type"] == f"urn:ietf:params:acme:error:{kind}", body
    assert body["detail"] and "Traceback" not in body["detail"]
    assert response.headers.get("Replay-Nonce") or response.status_code == 404
    return body


def valid_order(acme: ScriptedAcme, tokens: dict, *names: str) -> dict:
    """An order whose http-01 challenges were answered and validated: status ready."""
    return valid_order_from(acme, tokens, acme.new_order(*names))


def valid_order_from(acme: ScriptedAcme, tokens: dict, order) -> dict:
    assert order.status_code == 201, order.get_data(as_text=True)
    body = order.get_json()
    for authz_url in body["authorizations"]:
        authz = acme.post(authz_url, None).get_json()
        challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
        tokens[challenge["token"]] = acme.key_authorization(challenge["token"])
        started = acme.post(challenge["url"], {})
        assert started.status_code == 200 and started.get_json()["status"] in ("processing", "valid")
        wait_until(lambda u=authz_url: acme.post(u, None).get_json()["status"] != "pending", 10)
        assert acme.post(authz_url, None).get_json()["status"] == "valid"
    order_url = order.headers["Location"]
    ready = acme.post(order_url, None)
    assert ready.get_json()["status"] == "ready", ready.get_json()
    return {**ready.get_json(), "url": order_url}


def test_the_directory_lists_every_resource_under_base_url(client):
    directory = client.client.get("/acme/directory").get_json()
    for key in ("newNonce", "newAccount", "newOrder", "revokeCert", "keyChange", "renewalInfo"):
        assert directory[key].startswith(BASE + "/acme/"), key
    assert directory["meta"]["externalAccountRequired"] is False
    assert set(directory["meta"]["profiles"]) == {"server", "client", "server+client"}
    response = client.client.get("/acme/directory")
    assert response.headers["Replay-Nonce"] and response.headers["Cache-Control"] == "no-store"


def test_the_signed_doors_set_no_cookie_and_their_errors_stay_words(client, app):
    """ACME, EST and SCEP open no cookie session (issue 29: none of their requests uses one), and a
    wrong URL or body under them is still a 4xx in words, never a 500."""
    web = client.client
    for response in (web.get("/acme/directory"), web.head("/acme/new-nonce"),
                     web.post("/acme/new-order", data=b"not json", content_type="application/jose+json"),
                     web.get("/acme/no-such-thing"), web.post("/acme/no-such-thing", data=b"x"),
                     web.get("/scep?operation=Nonsense"), web.get("/.well-known/est/cacerts"),
                     web.post("/.well-known/est/simpleenroll", data=b"x", content_type="application/pkcs10")):
        assert response.status_code < 500, (response.request.path, response.get_data(as_text=True)[:300])
        assert "Set-Cookie" not in response.headers, response.request.path
    assert web.post("/acme/new-order", data=b"not json", content_type="application/jose+json").mimetype == PROBLEM
    signed_in = app.test_client()  # the rest of the site keeps its session
    assert "Set-Cookie" in signed_in.get("/login").headers


def test_new_nonce_head_and_get(client):
    head = client.client.head("/acme/new-nonce")
    get = client.client.get("/acme/new-nonce")
    assert head.status_code == 200 and get.status_code == 204
    for response in (head, get):
        assert response.headers["Cache-Control"] == "no-store"
        assert len(response.headers["Replay-Nonce"]) >= 16
        assert 'rel="index"' in response.headers["Link"]
    assert head.headers["Replay-Nonce"] != get.headers["Replay-Nonce"]


def test_the_whole_flow_issues_a_stored_certificate(client, http_port, svc, tmp_path, instance):
    created = client.new_account(contact=["mailto:ops@example.test"])
    assert created.status_code == 201 and created.headers["Location"].startswith(BASE + "/acme/acct/")
    assert created.get_json()["status"] == "valid"
    again = client.new_account()
    assert again.status_code == 200 and again.headers["Location"] == created.headers["Location"]

    with http01_responder(http_port) as tokens:
        order = client.new_order("127.0.0.1")
        assert order.status_code == 201 and order.headers["Retry-After"] == "1"
        challenge = client.challenge(order.get_json())
        tokens[challenge["token"]] = client.key_authorization(challenge["token"])
        answered = client.post(challenge["url"], {})
        assert answered.get_json()["status"] in ("processing", "valid")
        assert any('rel="up"' in link for link in answered.headers.getlist("Link"))
        authz_url = order.get_json()["authorizations"][0]
        wait_until(lambda: client.post(authz_url, None).get_json()["status"] == "valid", 10)
    order_url = order.headers["Location"]
    assert client.post(order_url, None).get_json()["status"] == "ready"
    key = new_key()
    finalized = client.finalize(order.get_json(), make_csr([], ips=["127.0.0.1"], key=key))
    assert finalized.status_code == 200, finalized.get_json()
    body = finalized.get_json()
    assert body["status"] == "valid"
    download = client.post(body["certificate"], None)
    assert download.mimetype == "application/pem-certificate-chain"
    chain = x509.load_pem_x509_certificates(download.data)
    assert len(chain) == 2 and chain[1] == svc.authority.intermediate
    leaf = chain[0]
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.IPAddress)[0].exploded == "127.0.0.1"
    (tmp_path / "leaf.pem").write_bytes(download.data.split(b"-----END CERTIFICATE-----")[0]
                                        + b"-----END CERTIFICATE-----\n")
    (tmp_path / "intermediate.pem").write_text(svc.authority.intermediate_pem)
    assert_openssl_verifies(tmp_path / "leaf.pem", instance / "ca" / "root.pem", tmp_path / "intermediate.pem")
    serial = format(leaf.serial_number, "x")
    record = svc.store.get_certificate(serial)
    account_id = created.headers["Location"].rsplit("/", 1)[1]
    assert record is not None and record.requester == f"acme:{account_id}"
    assert record.notify == ("ops@example.test",)
    issued = [e for e in svc.store.all_audit_entries() if e["action"] == "issue" and e["serial"] == serial]
    assert issued and issued[0]["detail"]["acme_account"] == account_id
    # The order list of the account names it; ARI gives a window inside the certificate's life.
    listed = client.post(f"{created.headers['Location']}/orders", None).get_json()
    assert listed["orders"] == [order_url]
    from ca_server.acme.renewal_info import cert_id

    window = client.client.get(f"/acme/renewal-info/{cert_id(leaf)}").get_json()["suggestedWindow"]
    start = dt.datetime.fromisoformat(window["start"].replace("Z", "+00:00"))
    assert leaf.not_valid_before_utc < start < leaf.not_valid_after_utc


def test_a_reused_nonce_is_bad_nonce_with_a_fresh_one(client):
    nonce = client.nonce()
    assert client.post("/acme/new-account", {"termsOfServiceAgreed": True}, jwk=True, nonce=nonce).status_code == 201
    again = client.post("/acme/new-account", {"termsOfServiceAgreed": True}, jwk=True, nonce=nonce)
    problem(again, "badNonce")
    assert again.headers["Replay-Nonce"] != nonce
    problem(client.post("/acme/new-account", {}, jwk=True, nonce="made-up-nonce"), "badNonce")


def test_a_nonce_from_one_worker_is_good_on_another(acme_app):
    """Two apps on one instance stand for two workers (or nodes): nonces live in the store."""
    first, second = acme_app(), acme_app()
    a = ScriptedAcme(first.test_client(), BASE)
    nonce = a.nonce()
    b = ScriptedAcme(second.test_client(), BASE, key=a.key)
    assert b.post("/acme/new-account", {"termsOfServiceAgreed": True}, jwk=True, nonce=nonce).status_code == 201


def test_nonces_made_elsewhere_too_old_or_altered_are_bad_nonces(client):
    """A nonce is good when this server made it (its MAC under the instance's key), within the
    last hour, and unused; anything else is badNonce with a fresh nonce to retry with."""
    from ca_server.acme.accounts import Nonces

    app = client.app
    store = app.extensions["ca_server"].store
    now = dt.datetime.now(dt.UTC)
    good = client.nonce()
    altered = good[:-2] + ("AA" if good[-2:] != "AA" else "BB")
    for nonce in (Nonces(app.secret_key).new(now - dt.timedelta(minutes=61)),  # too old
                  Nonces(app.secret_key).new(now + dt.timedelta(minutes=30)),  # from the future
                  Nonces(b"another instance's key").new(now), altered, "x" * 38):
        refused = client.post("/acme/new-account", {"termsOfServiceAgreed": True}, jwk=True, nonce=nonce)
        problem(refused, "badNonce")
        assert Nonces(app.secret_key).key(refused.headers["Replay-Nonce"]) is not None  # one of ours
    recorded = _nonce_rows(store)
    for _ in range(5):
        client.nonce()
    assert _nonce_rows(store) == recorded  # handing nonces out writes nothing
    assert client.post("/acme/new-account", {"termsOfServiceAgreed": True}, jwk=True, nonce=good).status_code == 201
    assert _nonce_rows(store) == recorded + 1  # using one records it, on every node


def _nonce_rows(store) -> int:
    return next(store.db.query("SELECT count(*) AS n FROM acme_nonces"))["n"]


def test_used_nonces_are_forgotten_only_once_too_old_to_use(client, monkeypatch):
    from ca_server.acme.accounts import NONCE_LIFETIME, NONCE_SKEW, Nonces
    from ca_server.store import acme as acme_queries

    store = client.app.extensions["ca_server"].store
    nonces = Nonces(client.app.secret_key)
    now = dt.datetime.now(dt.UTC)
    old = nonces.new(now - NONCE_LIFETIME - NONCE_SKEW - dt.timedelta(seconds=2))
    recent, another = nonces.new(now - NONCE_LIFETIME), nonces.new(now)
    bound = Nonces.key_bound(now - NONCE_LIFETIME - NONCE_SKEW)
    assert nonces.key(old) < bound <= nonces.key(recent) < nonces.key(another)  # keys sort by when they were made
    assert store.use_nonce(nonces.key(old), bound)
    assert store.use_nonce(nonces.key(recent), bound)
    assert not store.use_nonce(nonces.key(recent), bound)  # the second use
    monkeypatch.setattr(acme_queries, "NONCE_SWEEP_EVERY", 1)
    assert store.use_nonce(nonces.key(another), bound)
    left = {bytes(r["nonce"]) for r in store.db.query("SELECT nonce FROM acme_nonces")}
    assert nonces.key(old) not in left and {nonces.key(recent), nonces.key(another)} <= left


def test_nonces_used_before_the_upgrade_to_keys_stay_used(client, backend):
    """m024 turns each recorded nonce (text, with its MAC) into its key: a nonce used before the
    upgrade is refused after it, on both engines."""
    from ca_server.acme.accounts import NONCE_LIFETIME, NONCE_SKEW, Nonces

    store = client.app.extensions["ca_server"].store
    nonces = Nonces(client.app.secret_key)
    now = dt.datetime.now(dt.UTC)
    used, unused = nonces.new(now), nonces.new(now)
    with store.write() as db:
        db.execute("DROP TABLE acme_nonces")
        db.execute("CREATE TABLE acme_nonces (nonce TEXT PRIMARY KEY, expires_at TEXT NOT NULL)")
        for text in (used, "not-a-nonce"):
            db.execute("INSERT INTO acme_nonces (nonce, expires_at) VALUES (?, ?)", [text, "2099-01-01T00:00:00Z"])
        if backend == "sqlite":
            from ca_server.store.schema_more import m024_acme_nonce_keys

            m024_acme_nonce_keys(db)
        else:
            from ca_server.store.schema_pg import MIGRATIONS

            for statement in dict(MIGRATIONS)["m024_acme_nonce_keys"]:
                db.execute(statement)
    bound = Nonces.key_bound(now - NONCE_LIFETIME - NONCE_SKEW)
    assert [bytes(r["nonce"]) for r in store.db.query("SELECT nonce FROM acme_nonces")] == [nonces.key(used)]
    assert not store.use_nonce(nonces.key(used), bound)
    assert store.use_nonce(nonces.key(unused), bound)


def test_signature_kid_and_url_are_checked(client):
    client.new_account()
    problem(client.post("/acme/new-order", {"identifiers": [{"type": "ip", "value": "127.0.0.1"}]}, key=ec_key()),
            "unauthorized", 403)
    problem(client.post("/acme/new-order", {"identifiers": []}, kid=BASE + "/acme/acct/nobody"),
            "accountDoesNotExist")
    problem(client.post("/acme/new-order", {}, kid="https://elsewhere.example/acct/1"), "accountDoesNotExist")
    body = client.jws(BASE + "/acme/new-account", {"identifiers": []})
    problem(client.post("/acme/new-order", None, body=body), "unauthorized", 403)  # url of another resource
    raw = client.client.post("/acme/new-order", data="{}", content_type="application/json")
    problem(raw, "malformed", 415)


def test_finalize_before_ready_and_csr_names_that_differ(client, http_port):
    client.new_account()
    order = client.new_order("127.0.0.1").get_json()
    problem(client.finalize(order, make_csr([], ips=["127.0.0.1"])), "orderNotReady", 403)
    with http01_responder(http_port) as tokens:
        ready = valid_order(client, tokens, "127.0.0.1")
    wrong = client.finalize(ready, make_csr([], ips=["127.0.0.1", "127.0.0.2"]))
    assert "not in the order: 127.0.0.2" in problem(wrong, "badCSR")["detail"]
    assert client.post(ready["url"], None).get_json()["status"] == "ready"  # still finalizable
    weak = client.finalize(ready, make_csr([], ips=["127.0.0.1"], key=new_key("rsa-1024")))
    assert "bits" in problem(weak, "badCSR")["detail"]


def test_another_accounts_order_is_not_found(client, acme_app):
    client.new_account()
    order = client.new_order("127.0.0.1")
    other = ScriptedAcme(client.client, BASE)
    other.new_account()
    problem(other.post(order.headers["Location"], None), "malformed", 404)
    problem(other.post(order.get_json()["authorizations"][0], None), "malformed", 404)


def test_a_failed_http01_makes_challenge_and_order_invalid(client):
    client.new_account()
    order = client.new_order("127.0.0.1")
    challenge = client.challenge(order.get_json())
    client.post(challenge["url"], {})  # nothing listens on the http-01 port
    authz_url = order.get_json()["authorizations"][0]
    wait_until(lambda: client.post(authz_url, None).get_json()["status"] != "pending", 15)
    failed = client.post(challenge["url"], None).get_json()
    assert failed["status"] == "invalid"
    assert failed["error"]["type"] == "urn:ietf:params:acme:error:connection"
    assert "127.0.0.1" in failed["error"]["detail"]
    invalid = client.post(order.headers["Location"], None).get_json()
    assert invalid["status"] == "invalid" and invalid["error"]["type"].endswith(":unauthorized")


def test_a_wrong_key_authorization_is_incorrect_response(client, http_port):
    client.new_account()
    with http01_responder(http_port) as tokens:
        order = client.new_order("127.0.0.1")
        challenge = client.challenge(order.get_json())
        tokens[challenge["token"]] = challenge["token"] + ".not-the-thumbprint"
        client.post(challenge["url"], {})
        wait_until(lambda: client.post(challenge["url"], None).get_json()["status"] == "invalid", 15)
    assert client.post(challenge["url"], None).get_json()["error"]["type"].endswith(":incorrectResponse")


@pytest.mark.parametrize("names, policy, words", [
    (["*.example.test"], {}, "wildcards are not allowed"),
    (["host.elsewhere.test"], {"allowed_domains": ["example.test"]}, "outside the domains this CA issues for"),
    (["10.0.0.1"], {"allow_ip_sans": False}, "IP SANs are turned off"),
    (["bad_name.example.test"], {}, "is not a valid DNS name"),
], ids=["fail-wildcard", "fail-domain", "fail-ip-off", "fail-syntax"])
def test_what_the_policy_refuses_is_a_rejected_identifier(make_app, names, policy, words):
    app = make_app(policy=policy) if policy else make_app()
    acme = ScriptedAcme(app.test_client(), BASE)
    acme.new_account()
    body = problem(acme.new_order(*names), "rejectedIdentifier")
    assert words in body["detail"]
    assert body["subproblems"][0]["identifier"]["value"] == names[0]


def test_an_ip_address_sent_as_a_dns_identifier_is_named_as_such(client):
    """lego 4.9.1 (Debian's) sends `-d 127.0.0.1` as {"type": "dns"}: the answer said it was "not a
    valid DNS name: the last label is all digits", and its subproblem said type "ip", which the
    client never sent. Now both say what happened and what to do."""
    client.new_account()
    order = {"identifiers": [{"type": "dns", "value": "127.0.0.1"}, {"type": "dns", "value": "::1"},
                             {"type": "dns", "value": "ok.example.test"}]}
    body = problem(client.post("/acme/new-order", order), "rejectedIdentifier")
    assert '"127.0.0.1" is an IP address sent as a DNS name: order it as an identifier of type "ip" (RFC 8738)' \
        in body["detail"] and "all digits" not in body["detail"]
    assert [p["identifier"] for p in body["subproblems"]] == [{"type": "dns", "value": "127.0.0.1"},
                                                              {"type": "dns", "value": "::1"}]
    assert client.new_order("127.0.0.1").status_code == 201  # as type ip, as RFC 8738 says


def test_external_account_binding(acme_app, svc):
    app = acme_app(require_eab=True)
    acme = ScriptedAcme(app.test_client(), BASE)
    problem(acme.new_account(), "externalAccountRequired")
    assert app.test_client().get("/acme/directory").get_json()["meta"]["externalAccountRequired"] is True
    eab = acme_accounts.create_eab_key(svc.store, "team-a", domains=("team-a.example.test",), allow_ip=False,
                                       now=dt.datetime.now(dt.UTC))

    def binding(hmac_key: str, kid: str) -> dict:
        import hashlib
        import hmac

        protected = b64(json.dumps({"alg": "HS256", "kid": kid, "url": BASE + "/acme/new-account"}))
        payload = b64(json.dumps(acme.key.public_key().to_partial_json()))
        key = __import__("base64").urlsafe_b64decode(hmac_key + "=" * (-len(hmac_key) % 4))
        mac = hmac.new(key, f"{protected}.{payload}".encode(), hashlib.sha256).digest()
        return {"protected": protected, "payload": payload, "signature": b64(mac)}

    problem(acme.new_account(externalAccountBinding=binding(b64(b"x" * 32), eab["kid"])), "unauthorized", 403)
    bound = acme.new_account(externalAccountBinding=binding(eab["hmac_key"], eab["kid"]))
    assert bound.status_code == 201 and bound.get_json()["externalAccountBinding"] == {"name": "team-a"}
    assert acme.new_order("www.team-a.example.test").status_code == 201
    refused = problem(acme.new_order("www.team-b.example.test"), "rejectedIdentifier")
    assert "team-a.example.test" in refused["detail"]
    problem(acme.new_order("127.0.0.1"), "rejectedIdentifier")
    acme_accounts.revoke_eab_key(svc.store, "team-a", dt.datetime.now(dt.UTC))
    problem(acme.new_order("www.team-a.example.test"), "unauthorized", 403)


def test_account_update_key_change_and_deactivation(client):
    account_url = client.new_account().headers["Location"]
    updated = client.post(account_url, {"contact": ["mailto:new@example.test"]}).get_json()
    assert updated["contact"] == ["mailto:new@example.test"]
    problem(client.post(account_url, {"contact": ["tel:+1555"]}), "unsupportedContact")
    new = ec_key()
    # The inner JWS, signed by the new key, carries no nonce (RFC 8555 7.3.5).
    protected = b64(json.dumps({"alg": "ES256", "jwk": new.public_key().to_partial_json(),
                                "url": BASE + "/acme/key-change"}))
    payload = b64(json.dumps({"account": account_url, "oldKey": client.key.public_key().to_partial_json()}))
    import josepy as jose

    signature = b64(jose.ES256.sign(new.key, f"{protected}.{payload}".encode()))
    changed = client.post("/acme/key-change", {"protected": protected, "payload": payload, "signature": signature})
    assert changed.status_code == 200, changed.get_json()
    problem(client.post(account_url, None), "unauthorized", 403)  # the old key no longer works
    client.key = new
    assert client.post(account_url, None).status_code == 200
    assert client.post(account_url, {"status": "deactivated"}).get_json()["status"] == "deactivated"
    problem(client.post(account_url, None), "unauthorized", 403)


def test_an_account_that_validated_every_name_may_revoke_a_certificate_another_account_ordered(
        client, http_port, svc):
    """RFC 8555 7.6 (a MUST): an account holding authorizations for all of a certificate's names
    may revoke it: the subscriber who lost the account that ordered it registers anew, validates
    the names again, and revokes. Before, only the ordering account or the certificate's key could."""
    from cryptography.hazmat.primitives.serialization import Encoding

    client.new_account()
    with http01_responder(http_port) as tokens:
        ready = valid_order(client, tokens, "127.0.0.1")
    cert_url = client.finalize(ready, make_csr([], ips=["127.0.0.1"])).get_json()["certificate"]
    leaf = x509.load_pem_x509_certificates(client.post(cert_url, None).data)[0]
    payload = {"certificate": b64(leaf.public_bytes(Encoding.DER)), "reason": 1}

    new = ScriptedAcme(client.client, BASE)
    new.new_account()
    refused = problem(new.post("/acme/revoke-cert", payload), "unauthorized", 403)
    assert "holds no valid authorization for 127.0.0.1" in refused["detail"]
    pending = new.new_order("127.0.0.1")  # authorizations not yet valid do not count
    problem(new.post("/acme/revoke-cert", payload), "unauthorized", 403)
    with http01_responder(http_port) as tokens:
        valid_order_from(new, tokens, pending)
    done = new.post("/acme/revoke-cert", payload)
    assert done.status_code == 200, done.get_json()
    record = svc.store.get_certificate(format(leaf.serial_number, "x"))
    assert record.revoked_at is not None and record.revocation_reason == "keyCompromise"
    revoked = svc.store.audit_entries(action="revoke", serial=record.serial)
    assert [e["actor"] for e in revoked] == ["acme:" + new.kid.rsplit("/", 1)[1]]

def test_revocation_by_account_and_by_the_certificates_key(client, http_port, svc):
    client.new_account()
    key = new_key()
    with http01_responder(http_port) as tokens:
        ready = valid_order(client, tokens, "127.0.0.1")
    cert_url = client.finalize(ready, make_csr([], ips=["127.0.0.1"], key=key)).get_json()["certificate"]
    pem = client.post(cert_url, None).data
    leaf = x509.load_pem_x509_certificates(pem)[0]
    from cryptography.hazmat.primitives.serialization import Encoding

    payload = {"certificate": b64(leaf.public_bytes(Encoding.DER)), "reason": 4}
    other = ScriptedAcme(client.client, BASE)
    other.new_account()
    problem(other.post("/acme/revoke-cert", payload), "unauthorized", 403)
    problem(client.post("/acme/revoke-cert", {**payload, "reason": 7}), "badRevocationReason")
    import josepy as jose

    cert_key = jose.JWKEC(key=key)
    done = client.post("/acme/revoke-cert", payload, key=cert_key, jwk=True)
    assert done.status_code == 200, done.get_json()
    record = svc.store.get_certificate(format(leaf.serial_number, "x"))
    assert record.revoked_at is not None and record.revocation_reason == "superseded"
    problem(client.post("/acme/revoke-cert", payload), "alreadyRevoked")
    from ca_server.acme.renewal_info import cert_id

    window = client.client.get(f"/acme/renewal-info/{cert_id(leaf)}").get_json()["suggestedWindow"]
    assert dt.datetime.fromisoformat(window["end"].replace("Z", "+00:00")) <= dt.datetime.now(dt.UTC)


def test_deactivating_an_authorization_invalidates_its_order(client):
    client.new_account()
    order = client.new_order("127.0.0.1")
    authz = client.post(order.get_json()["authorizations"][0], {"status": "deactivated"}).get_json()
    assert authz["status"] == "deactivated"
    assert client.post(order.headers["Location"], None).get_json()["status"] == "invalid"


def test_unknown_resources_and_methods_are_problems(client):
    for response, status in ((client.client.get("/acme/nothing-here"), 404),
                             (client.client.get("/acme/new-account"), 405)):
        assert response.status_code == status and response.mimetype == PROBLEM
        assert response.get_json()["type"] == "urn:ietf:params:acme:error:malformed"
        assert response.headers["Replay-Nonce"]
    assert client.client.get("/acme/new-account").headers["Allow"] == "POST"


def test_every_acme_answer_carries_the_sites_headers_and_a_bug_is_a_problem_in_words(client, monkeypatch):
    """ACME is answered outside Flask (issue 29), with the same headers as every page: the
    security headers, HSTS over https, no-store, the index link; a body past the size limit is
    413 and a bug is serverInternal, logged, with no internals in the answer."""
    web = client.client
    over_https = web.get("/acme/directory", base_url="https://localhost")
    assert over_https.headers["Strict-Transport-Security"].startswith("max-age=")
    assert over_https.get_json()["newNonce"] == "https://localhost/acme/new-nonce"
    head = web.head("/acme/directory")
    assert head.status_code == 200 and head.get_data() == b"" and head.headers["Replay-Nonce"]
    too_big = web.post("/acme/new-order", data=b"x" * (client.app.config["MAX_CONTENT_LENGTH"] + 1),
                       content_type="application/jose+json")
    assert too_big.status_code == 413 and "larger than" in too_big.get_json()["detail"]
    from ca_server.acme import renewal_info

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")
    monkeypatch.setattr(renewal_info, "renewal_info", broken)
    failed = web.get("/acme/renewal-info/abc.def")
    assert failed.status_code == 500 and failed.mimetype == PROBLEM
    assert failed.get_json()["type"] == "urn:ietf:params:acme:error:serverInternal"
    assert "secret internals" not in failed.get_data(as_text=True)
    for response in (web.get("/acme/directory"), web.head("/acme/new-nonce"), too_big, failed,
                     web.get("/acme/nothing-here"), web.options("/acme/new-order")):
        assert response.status_code < 500 or response is failed
        assert response.headers["X-Content-Type-Options"] == "nosniff" and "Content-Security-Policy" in response.headers
        assert response.headers["Cache-Control"] == "no-store" and 'rel="index"' in response.headers["Link"]
        assert "Strict-Transport-Security" not in response.headers  # plain http here
        assert "Set-Cookie" not in response.headers
    assert web.options("/acme/new-order").headers["Allow"] == "OPTIONS, POST"


def same_jws(text: str, good: dict) -> bool:
    """Whether a fuzzed body still says what `good` says: each of its parts decodes to the same
    bytes (base64url's spare bits in a part's last character are ignored, as RFC 4648 3.5 allows)."""
    from ca_server.acme.jws import b64decode
    from ca_server.acme.problems import AcmeProblem

    try:
        body = json.loads(text)
        return body.keys() == good.keys() and all(b64decode(body[k], k) == b64decode(good[k], k) for k in good)
    except (ValueError, AttributeError, AcmeProblem):
        return False


def test_fuzzed_jws_bodies_never_get_a_5xx(client):
    client.new_account()
    rng = random.Random(8555)
    good = client.jws(BASE + "/acme/new-order", {"identifiers": [{"type": "dns", "value": "a.example.test"}]})
    bodies: list[bytes] = [b"", b"{}", b"[]", b"null", b"\xff\xfe", b'{"protected": 1, "payload": 2, "signature": 3}',
                           json.dumps({**good, "header": {"kid": "x"}}).encode()]
    text, wanted = json.dumps(good), len(bodies) + 150
    while len(bodies) < wanted:
        chars = list(text)
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(chars))
            chars[at] = rng.choice([c for c in '"{}[]:,=A_-.\\\x00é' if c != chars[at]])
        if not same_jws("".join(chars), good):  # a last base64 character's spare bits changed: the same JWS
            bodies.append("".join(chars).encode("utf-8", "surrogatepass"))
    for protected in ({"alg": "none"}, {"alg": "ES256", "nonce": client.nonce()},
                      {"alg": "ES256", "nonce": client.nonce(), "url": BASE + "/acme/new-order", "kid": 5},
                      {"alg": "ES256", "nonce": client.nonce(), "url": BASE + "/acme/new-order", "jwk": {"kty": "EC"}},
                      {"alg": "RS256", "nonce": client.nonce(), "url": BASE + "/acme/new-order",
                       "jwk": ec_key().public_key().to_partial_json()}):
        bodies.append(json.dumps({**good, "protected": b64(json.dumps(protected))}).encode())
    for path in ("/acme/new-order", "/acme/new-account", "/acme/revoke-cert", "/acme/key-change"):
        for body in bodies:
            response = client.client.post(path, data=body, content_type="application/jose+json")
            assert response.status_code < 500, (path, body, response.get_data(as_text=True))
            assert response.mimetype == PROBLEM, (path, body, response.status_code, response.get_data(as_text=True))


def test_an_ec_p384_and_an_rsa_account_key_work(acme_app):
    import josepy as jose
    from cryptography.hazmat.primitives.asymmetric import rsa

    app = acme_app()
    for key, alg in ((jose.JWKEC(key=ec.generate_private_key(ec.SECP384R1())), "ES384"),
                     (jose.JWKRSA(key=rsa.generate_private_key(65537, 2048)), "RS256")):
        acme = ScriptedAcme(app.test_client(), BASE, key=key)
        created = acme.post("/acme/new-account", {"termsOfServiceAgreed": True}, jwk=True, alg=alg)
        assert created.status_code == 201, created.get_json()


def test_eab_keys_from_the_command_line(instance, client):
    from click.testing import CliRunner

    from ca_server.cli import main

    runner = CliRunner()
    created = runner.invoke(main, ["acme", "eab", "create", "web-team", "--domain", "web.example.test"])
    assert created.exit_code == 0, created.output
    key = json.loads(created.output.strip().splitlines()[-1])
    assert set(key) == {"kid", "hmac_key"} and "=" not in key["hmac_key"]
    listed = runner.invoke(main, ["acme", "eab", "list"]).output
    assert "web-team" in listed and "web.example.test" in listed and key["hmac_key"] not in listed
    assert runner.invoke(main, ["acme", "eab", "create", "web-team"]).exit_code != 0  # names are unique
    assert runner.invoke(main, ["acme", "eab", "revoke", "web-team"]).exit_code == 0
    assert "revoked" in runner.invoke(main, ["acme", "eab", "list"]).output
    missing = runner.invoke(main, ["acme", "eab", "revoke", "nobody"])
    assert missing.exit_code != 0 and "no active EAB key named 'nobody'" in missing.output
    client.new_account(contact=["mailto:a@example.test"])
    assert "mailto:a@example.test" in runner.invoke(main, ["acme", "accounts"]).output


def test_admin_page_lists_accounts_and_the_certificate_page_names_the_account(client, http_port, web, svc):
    account_url = client.new_account(contact=["mailto:page@example.test"]).headers["Location"]
    account_id = account_url.rsplit("/", 1)[1]
    with http01_responder(http_port) as tokens:
        ready = valid_order(client, tokens, "127.0.0.1")
    serial = client.finalize(ready, make_csr([], ips=["127.0.0.1"])).get_json()["certificate"].rsplit("/", 1)[1]
    acme_accounts.create_eab_key(svc.store, "ops", domains=("ops.example.test",), allow_ip=False,
                                 now=dt.datetime.now(dt.UTC))
    page = web.get("/admin/acme").get_data(as_text=True)
    assert account_id in page and "mailto:page@example.test" in page and serial[:12] in page
    assert "ops.example.test" in page
    detail = web.get(f"/certificates/{serial}").get_data(as_text=True)
    assert "ACME account" in detail and account_id in detail
    from .conftest import csrf_token

    token = csrf_token(page)
    done = web.post(f"/admin/acme/{account_id}/deactivate", data={"csrf_token": token})
    assert done.status_code == 303
    problem(client.post(account_url, None), "unauthorized", 403)


def test_reminders_of_an_acme_certificate_follow_the_accounts_contacts_as_they_are_now(client, http_port, web, svc):
    """certbot update_account -m new@...: the reminder for a certificate issued before (its renewal
    did not happen) goes to the new address, as Let's Encrypt's expiry mail did; before, it went to
    the address the account had at issuance, maybe a person who left. The page says the same."""
    import dataclasses

    from ca_server.notify import reminders

    from .smtp import SMTPServer

    account_url = client.new_account(contact=["mailto:left@example.test"]).headers["Location"]
    with http01_responder(http_port) as tokens:
        ready = valid_order(client, tokens, "127.0.0.1")
    serial = client.finalize(ready, make_csr([], ips=["127.0.0.1"])).get_json()["certificate"].rsplit("/", 1)[1]
    assert client.post(account_url, {"contact": ["mailto:stays@example.test", "mailto:oncall@example.test"]}
                       ).status_code == 200
    assert "stays@example.test, oncall@example.test" in web.get(f"/certificates/{serial}").get_data(as_text=True)
    record = svc.store.get_certificate(serial)
    server = SMTPServer().start()
    try:
        config = dataclasses.replace(svc.config, mail=dataclasses.replace(svc.config.mail, host="127.0.0.1",
                                                                           port=server.port))
        sent = reminders.run_pass(config, svc.secrets, svc.store, record.not_after - dt.timedelta(days=6))
        assert [o.status for o in sent] == ["sent"], [o.line() for o in sent]
        assert len(server.inbox.messages) == 1
        assert server.inbox.messages[0]["To"] == "stays@example.test, oncall@example.test"
    finally:
        server.stop()



def test_the_dashboard_counts_an_acme_certificate_as_unheard_only_while_its_account_has_no_contact(
        client, http_port, web, svc):
    """Found in review: the dashboard's "would notify nobody" read the addresses stored at issuance,
    so a certificate whose account added a contact later was still listed, though its reminders
    reach that contact (recipients_for)."""
    account_url = client.new_account().headers["Location"]  # no contact
    with http01_responder(http_port) as tokens:
        ready = valid_order(client, tokens, "127.0.0.1")
    serial = client.finalize(ready, make_csr([], ips=["127.0.0.1"])).get_json()["certificate"].rsplit("/", 1)[1]
    dashboard = web.get("/").get_data(as_text=True)
    assert "1 valid certificate names no reminder address" in dashboard and f"/certificates/{serial}" in dashboard
    assert "certbot update_account -m ADDRESS" in dashboard
    assert client.post(account_url, {"contact": ["mailto:ops@example.test"]}).status_code == 200
    assert "Certificates that would notify nobody" not in web.get("/").get_data(as_text=True)
    assert "ops@example.test" in web.get(f"/certificates/{serial}").get_data(as_text=True)

@pytest.mark.parametrize("profile, ekus", [("server", ["serverAuth"]), ("server+client", ["serverAuth", "clientAuth"]),
                                           ("client", ["clientAuth"])])
def test_an_order_may_name_a_profile(client, http_port, profile, ekus):
    from cryptography.x509.oid import ExtendedKeyUsageOID

    client.new_account()
    with http01_responder(http_port) as tokens:
        order = client.new_order("127.0.0.1", profile=profile)
        assert order.get_json()["profile"] == profile
        ready = valid_order_from(client, tokens, order)
    cert_url = client.finalize(ready, make_csr([], ips=["127.0.0.1"])).get_json()["certificate"]
    leaf = x509.load_pem_x509_certificates(client.post(cert_url, None).data)[0]
    names = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth", ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth"}
    assert [names[o] for o in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value] == ekus
    problem(client.new_order("127.0.0.1", profile="nope"), "invalidProfile")


def test_http01_through_the_systems_resolver_and_etc_hosts(client, http_port):
    """With no dns_resolvers, names resolve as the system does (localhost from /etc/hosts)."""
    client.new_account()
    with http01_responder(http_port) as tokens:
        ready = valid_order(client, tokens, "localhost")
    assert client.finalize(ready, make_csr(["localhost"])).get_json()["status"] == "valid"


def test_an_order_created_before_a_restart_finishes_after(acme_app, http_port):
    """Accounts, orders, authorizations, challenges and nonces are in the store: a new app on the
    same instance (what a restarted worker is) picks the order up where it was."""
    before = ScriptedAcme(acme_app().test_client(), BASE)
    before.new_account()
    order = before.new_order("127.0.0.1")
    nonce = before.nonce()
    after = ScriptedAcme(acme_app().test_client(), BASE, key=before.key)
    after.kid = before.kid
    with http01_responder(http_port) as tokens:
        challenge = after.challenge(order.get_json())
        tokens[challenge["token"]] = after.key_authorization(challenge["token"])
        assert after.post(challenge["url"], {}, nonce=nonce).status_code == 200
        authz_url = order.get_json()["authorizations"][0]
        wait_until(lambda: after.post(authz_url, None).get_json()["status"] == "valid", 10)
    done = after.finalize(after.post(order.headers["Location"], None).get_json(), make_csr([], ips=["127.0.0.1"]))
    assert done.get_json()["status"] == "valid"


def finalize_in_a_worker_that_dies(client, acme_app, order: dict, csr, insert) -> None:
    """`client`'s finalize of `order`, sent by a forked worker (its own app, its own connections)
    whose store stores the certificate through `insert(real_insert, *args)`, which ends the
    process with status 17 (a kill at that point)."""
    import os
    import signal
    import time

    pid = os.fork()
    if pid == 0:
        try:
            signal.alarm(60)  # a child stuck on something the fork copied dies, and the test fails
            worker = acme_app()
            store = worker.extensions["ca_server"].store
            real_insert = store.insert_certificate
            store.insert_certificate = lambda *args, **kwargs: insert(real_insert, *args, **kwargs)
            acme = ScriptedAcme(worker.test_client(), BASE, key=client.key)
            acme.kid = client.kid
            acme.finalize(order, csr)
        finally:
            os._exit(3)  # not killed where the test meant
    deadline = time.monotonic() + 90
    while (waited := os.waitpid(pid, os.WNOHANG))[0] == 0:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            pytest.fail("the forked worker neither finished nor was killed in 90 s")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(waited[1]) == 17


def test_a_worker_killed_right_after_storing_the_certificate_leaves_the_order_valid(client, acme_app, http_port):
    """The order becomes valid in the certificate's own transaction: a worker process killed the
    moment the certificate is committed (nothing of the door runs after it) leaves the order
    valid with that certificate, never processing behind a stored certificate for ever."""
    import os

    client.new_account()
    with http01_responder(http_port) as tokens:
        order = valid_order(client, tokens, "127.0.0.1")
    csr = make_csr([], ips=["127.0.0.1"])

    def insert_then_die(real_insert, *args, **kwargs):
        real_insert(*args, **kwargs)
        os._exit(17)

    finalize_in_a_worker_that_dies(client, acme_app, order, csr, insert_then_die)
    after = client.post(order["url"], None).get_json()
    assert after["status"] == "valid", after
    chain = x509.load_pem_x509_certificates(client.post(after["certificate"], None).data)
    assert chain[0].public_key().public_numbers() == csr.public_key().public_numbers()


def test_a_finalize_whose_worker_died_before_the_commit_is_signed_when_the_client_polls(client, acme_app, http_port):
    """A worker killed after claiming the order (processing) and before the certificate's commit
    leaves the order processing with nothing stored. It stayed so until the order expired,
    and certbot polling it gave up after 90 s. The claim keeps the CSR: a poll after
    orders.CLAIM_STALE signs it, once, and the order is valid with a certificate for that key."""
    import os

    from ca_server.acme.orders import CLAIM_STALE

    client.new_account()
    with http01_responder(http_port) as tokens:
        order = valid_order(client, tokens, "127.0.0.1")
    csr = make_csr([], ips=["127.0.0.1"])
    finalize_in_a_worker_that_dies(client, acme_app, order, csr, lambda real_insert, *args, **kwargs: os._exit(17))
    svc = client.app.extensions["ca_server"]
    polled = client.post(order["url"], None).get_json()
    assert polled["status"] == "processing", polled  # a finalize that may still be running is left alone
    assert "csr" not in polled and "claimed" not in polled
    later = dt.datetime.now(dt.UTC) + CLAIM_STALE + dt.timedelta(seconds=1)
    svc.clock = lambda: later
    after = client.post(order["url"], None).get_json()
    assert after["status"] == "valid", after
    chain = x509.load_pem_x509_certificates(client.post(after["certificate"], None).data)
    assert chain[0].public_key().public_numbers() == csr.public_key().public_numbers()
    again = client.post(order["url"], None).get_json()
    assert again == after  # signed once
    order_id = order["url"].rsplit("/", 1)[1]
    issued = [e for e in svc.store.all_audit_entries()
              if e["action"] == "issue" and (e["detail"] or {}).get("acme_order") == order_id]
    assert len(issued) == 1 and issued[0]["detail"]["resumed_finalize"] is True


def test_a_finalize_the_issuance_log_cannot_record_is_the_servers_503_not_a_bad_csr(client, http_port, instance):
    """When the issuance log cannot be written, nothing is issued (issue 27); ACME called that the
    client's fault: 400 badCSR, whose words say the disk is the problem. It is serverInternal with
    503 and Retry-After now, the order ready again, and once the log can be written the same
    finalize succeeds. A stale claim resumed meanwhile stays claimed for the next poll."""
    from ca_server.acme import state
    from ca_server.acme.jws import b64encode
    from ca_server.acme.orders import CLAIM_STALE
    from ca_server.clock import to_text

    from .checks import log_folder_unwritable
    from .factories import der

    client.new_account()
    with http01_responder(http_port) as tokens:
        order = valid_order(client, tokens, "127.0.0.1")
    csr = make_csr([], ips=["127.0.0.1"])
    store = client.app.extensions["ca_server"].store
    order_id = order["url"].rsplit("/", 1)[1]
    with log_folder_unwritable(instance):
        failed = client.finalize(order, csr)
        body = problem(failed, "serverInternal", 503)
        assert "issuance log" in body["detail"] and failed.headers["Retry-After"].isdigit()
        assert client.post(order["url"], None).get_json()["status"] == "ready"
        # A claim left by a dead worker, resumed while the log is still down: claimed still, retried later.
        long_ago = dt.datetime.now(dt.UTC) - CLAIM_STALE - dt.timedelta(minutes=1)
        assert state.move(store, state.load(store, state.Order, order_id), "processing", long_ago,
                          claimed=to_text(long_ago), csr=b64encode(der(csr)))
        problem(client.post(order["url"], None), "serverInternal", 503)
        assert state.load(store, state.Order, order_id).status == "processing"
    done = client.post(order["url"], None).get_json()
    assert done["status"] == "valid", done
    chain = x509.load_pem_x509_certificates(client.post(done["certificate"], None).data)
    assert chain[0].public_key().public_numbers() == csr.public_key().public_numbers()


def test_a_stale_finalize_whose_key_was_reported_compromised_meanwhile_ends_invalid(client, http_port, svc):
    """Taking over a stale claim goes through the policy as of now: a key reported compromised
    since (revoked with keyCompromise elsewhere) makes the order invalid, with the reason."""
    from ca_server import issuance, revocation
    from ca_server.acme import state
    from ca_server.acme.jws import b64encode
    from ca_server.acme.orders import CLAIM_STALE
    from ca_server.clock import to_text

    from .factories import der, pem

    client.new_account()
    with http01_responder(http_port) as tokens:
        order = valid_order(client, tokens, "127.0.0.1")
    key = new_key()
    csr = make_csr([], ips=["127.0.0.1"], key=key)
    other = issuance.issue(svc.config, svc.store, svc.authority,
                           issuance.IssueRequest(csr=pem(make_csr(["same-key.example.test"], key=key))),
                           dt.datetime.now(dt.UTC))
    order_id = order["url"].rsplit("/", 1)[1]
    long_ago = dt.datetime.now(dt.UTC) - CLAIM_STALE - dt.timedelta(minutes=1)
    ready = state.load(svc.store, state.Order, order_id)
    # What a worker that died after its claim leaves behind.
    assert state.move(svc.store, ready, "processing", long_ago, claimed=to_text(long_ago),
                      csr=b64encode(der(csr)))
    revocation.revoke(svc.config, svc.store, svc.authority, other.serial, "keyCompromise", dt.datetime.now(dt.UTC),
                      actor="admin")
    after = client.post(order["url"], None).get_json()
    assert after["status"] == "invalid", after
    assert after["error"]["type"] == "urn:ietf:params:acme:error:badCSR"
    assert "compromised" in after["error"]["detail"].lower(), after["error"]


def test_an_order_that_expires_while_its_certificate_is_signed_answers_as_it_is(client, http_port, monkeypatch):
    """Another worker may expire the order (processing -> invalid) while the certificate is being
    signed: the certificate is stored all the same, and finalize answers with the order as the
    store has it, not a valid order the store does not hold."""
    from ca_server.acme import state

    client.new_account()
    with http01_responder(http_port) as tokens:
        order = valid_order(client, tokens, "127.0.0.1")
    store = client.app.extensions["ca_server"].store
    order_id, real_insert, stored = order["url"].rsplit("/", 1)[1], store.insert_certificate, []

    def expire_first(record, *args, **kwargs):
        processing = state.load(store, state.Order, order_id)
        assert state.move(store, processing, "invalid", dt.datetime.now(dt.UTC)) is not None
        real_insert(record, *args, **kwargs)
        stored.append(record.serial)

    monkeypatch.setattr(store, "insert_certificate", expire_first)
    answered = client.finalize(order, make_csr([], ips=["127.0.0.1"]))
    assert answered.status_code == 200 and answered.get_json()["status"] == "invalid", answered.get_json()
    assert "certificate" not in answered.get_json()
    assert store.get_certificate(stored[0]) is not None
    assert client.post(order["url"], None).get_json()["status"] == "invalid"


def test_an_ed25519_account_key_and_an_unsupported_algorithm(client):
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = ed25519.Ed25519PrivateKey.generate()
    jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))}
    protected = b64(json.dumps({"alg": "EdDSA", "nonce": client.nonce(), "url": BASE + "/acme/new-account",
                                "jwk": jwk}))
    payload = b64(json.dumps({"termsOfServiceAgreed": True}))
    body = {"protected": protected, "payload": payload, "signature": b64(key.sign(f"{protected}.{payload}".encode()))}
    created = client.post("/acme/new-account", None, body=body)
    assert created.status_code == 201, created.get_json()
    forged = {**body, "signature": b64(key.sign(b"something else"))}
    forged["protected"] = b64(json.dumps({"alg": "EdDSA", "nonce": client.nonce(), "url": BASE + "/acme/new-account",
                                          "jwk": jwk}))
    problem(client.post("/acme/new-account", None, body=forged), "unauthorized", 403)
    hs = client.jws(BASE + "/acme/new-account", {}, jwk=True)
    hs["protected"] = b64(json.dumps({"alg": "HS256", "nonce": client.nonce(), "url": BASE + "/acme/new-account",
                                      "jwk": client.key.public_key().to_partial_json()}))
    refused = problem(client.post("/acme/new-account", None, body=hs), "badSignatureAlgorithm")
    assert "ES256" in refused["algorithms"]


def test_the_challenge_answer_holds_the_outcome_of_a_validation_done_within_the_wait(acme_app, http_port):
    """`[acme] validation_wait_ms`: "ready" is answered once the validation is done, when that comes
    within the wait (lego, seeing it valid, then skips its polling: 1.2 s -> 0.09 s an order here);
    a validation that takes longer is answered `processing` when the wait is over."""
    import socket

    acme = ScriptedAcme(acme_app(validation_wait_ms=5000).test_client(), BASE)
    acme.new_account()
    order = acme.new_order("127.0.0.1").get_json()
    challenge = acme.challenge(order)
    with http01_responder(http_port) as tokens:
        tokens[challenge["token"]] = acme.key_authorization(challenge["token"])
        answered = acme.post(challenge["url"], {})
    assert answered.get_json()["status"] == "valid", answered.get_json()
    assert acme.post(order["authorizations"][0], None).get_json()["status"] == "valid"

    slow = ScriptedAcme(acme_app(validation_wait_ms=300, validation_timeout_seconds=5).test_client(), BASE)
    slow.new_account()
    order = slow.new_order("127.0.0.1").get_json()
    challenge = slow.challenge(order)
    with socket.create_server(("127.0.0.1", http_port)):  # connections are taken, never answered
        answered = slow.post(challenge["url"], {})
        assert answered.get_json()["status"] == "processing", answered.get_json()
        assert answered.headers["Retry-After"] == "1"


def test_no_more_challenges_wait_for_their_validation_than_validations_run_at_once(acme_app, http_port):
    """Each waiting "ready" holds one of the server's threads: with one validation thread, a
    second challenge that comes while the first waits is answered `processing` at once."""
    import socket
    import threading
    import time

    app = acme_app(validation_wait_ms=3000, validation_timeout_seconds=5, validation_threads=1)
    clients = [ScriptedAcme(app.test_client(), BASE) for _ in range(2)]
    challenges = []
    for acme in clients:
        acme.new_account()
        challenges.append(acme.challenge(acme.new_order("127.0.0.1").get_json()))
    waiters, answered = app.wsgi_app.acme.validator.waiters, []

    def ready(n: int) -> None:
        answered.append((n, clients[n].post(challenges[n]["url"], {}).get_json()["status"]))

    with socket.create_server(("127.0.0.1", http_port)):  # connections are taken, never answered
        first = threading.Thread(target=ready, args=(0,))
        first.start()
        while first.is_alive() and waiters.acquire(blocking=False):  # until the first request waits
            waiters.release()
            time.sleep(0.005)
        ready(1)
        first.join(10)
    assert answered == [(1, "processing"), (0, "processing")]


def test_a_validation_cut_off_by_a_restart_runs_again_when_the_client_polls(client, http_port, svc):
    """A challenge left `processing` by a worker that stopped is validated again on the next poll."""
    from ca_server.acme import challenges as acme_challenges
    from ca_server.acme import state

    client.new_account()
    order = client.new_order("127.0.0.1")
    challenge = client.challenge(order.get_json())
    challenge_id = challenge["url"].rsplit("/", 1)[1]
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    # What a worker that died right after accepting "ready" leaves: processing, never validated.
    assert acme_challenges.start_challenge(svc.store, state.load(svc.store, state.Challenge, challenge_id), long_ago)
    authz_url = order.get_json()["authorizations"][0]
    with http01_responder(http_port) as tokens:
        tokens[challenge["token"]] = client.key_authorization(challenge["token"])
        wait_until(lambda: client.post(authz_url, None).get_json()["status"] == "valid", 10)
    assert client.post(order.headers["Location"], None).get_json()["status"] == "ready"


def test_an_http01_target_that_trickles_its_answer_is_cut_off_at_the_timeout():
    """A target that sends its answer a byte at a time, each within the per-read timeout, held a
    validator thread for as long as it liked (and there are only validation_threads of them):
    this one took about 6 s for a 1 s timeout, and passed. Now the whole answer gets the timeout."""
    import dataclasses

    from ca_server.acme.validation import ValidationError, check_http01
    from ca_server.config import AcmeConfig

    from .checks import trickling_server

    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nX-Pad: " + b"a" * 20 + b"\r\n\r\ntok.thumb"
    with trickling_server(answer) as port, pytest.raises(ValidationError) as cut:
        check_http01({"type": "ip", "value": "127.0.0.1"}, "tok", "tok.thumb",
                     dataclasses.replace(AcmeConfig(), http01_port=port), 1)
    assert cut.value.kind == "connection" and "did not answer within 1 s" in cut.value.detail, cut.value.detail


def test_a_tls_alpn01_target_that_trickles_its_handshake_is_cut_off_at_the_timeout():
    """The same for tls-alpn-01: a target that answers the ClientHello with a TLS record header and
    then a byte every 0.1 s. Python's handshake already has one deadline for the whole handshake
    (not one per read), so it ends after the timeout; this keeps it so."""
    import dataclasses

    from ca_server.acme.validation import ValidationError, check_tls_alpn01
    from ca_server.config import AcmeConfig

    from .checks import trickling_server

    record = b"\x16\x03\x03\x40\x00" + b"\x02" * 200  # a handshake record of 16 KB, coming slowly
    with trickling_server(record) as port, pytest.raises(ValidationError) as cut:
        check_tls_alpn01({"type": "ip", "value": "127.0.0.1"}, "tok.thumb",
                         dataclasses.replace(AcmeConfig(), tls_alpn01_port=port), 1)
    assert cut.value.kind == "connection" and "handshake operation timed out" in cut.value.detail, cut.value.detail
