"""OIDC sign-in (issue 28) against a real OpenID provider run by the tests (oidc-provider-mock: a
Flask app built on Authlib's server side, with discovery, a JWKS, the authorization form and the
token endpoint): the person picks their account on the provider's own form, comes back signed in
with the role and domains their groups give; a replayed state, an unmapped person and a provider
that is down are each refused in words."""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit

import pytest
import requests

from .conftest import app_with_config, session_issue

oidc_provider_mock = pytest.importorskip("oidc_provider_mock", reason="the test extra oidc-provider-mock is missing")


@pytest.fixture(scope="module")
def provider():
    with oidc_provider_mock.run_server_in_thread() as server:
        url = f"http://127.0.0.1:{server.server_port}"
        for sub, claims in {
            "carol": {"preferred_username": "carol", "email": "carol@example.test", "groups": ["net-admins"]},
            "dave": {"preferred_username": "dave", "email": "dave@example.test", "groups": ["pki-admins", "staff"]},
            "erin": {"preferred_username": "erin", "groups": ["staff"]},
        }.items():
            assert requests.put(f"{url}/users/{quote(sub)}", json=claims, timeout=10).status_code == 204
        yield url


def oidc_config(issuer: str) -> str:
    return f"""
[auth.oidc]
issuer = "{issuer}"
client_id = "ca-server-test"
client_secret_env = "TEST_OIDC_SECRET"
groups_claim = "groups"
name = "Corp SSO"

[[auth.groups]]
group = "net-admins"
role = "requester"
domains = ["corp.example.test"]

[[auth.groups]]
group = "pki-admins"
role = "admin"
"""


@pytest.fixture
def sso_app(make_app, instance, provider, monkeypatch):
    monkeypatch.setenv("TEST_OIDC_SECRET", "any-secret")
    return app_with_config(make_app, instance, oidc_config(provider))


def through_provider(client, who: str, verify: bool | str = True) -> tuple[object, str]:
    """Start at our /login/oidc, pick `who` on the provider's form, return our callback's answer
    and the callback URL (for replaying). `verify`: the browser's trust, for a provider on https."""
    start = client.get("/login/oidc?next=/certificates")
    assert start.status_code == 302, start.get_data(as_text=True)
    authorize = start.headers["Location"]
    assert "code_challenge=" in authorize and "state=" in authorize and "nonce=" in authorize
    form = requests.get(authorize, timeout=10, verify=verify)
    assert form.status_code == 200 and "<form" in form.text
    chosen = requests.post(authorize, data={"sub": who}, allow_redirects=False, timeout=10, verify=verify)
    assert chosen.status_code == 302, chosen.text
    back = urlsplit(chosen.headers["Location"])
    assert back.path == "/login/oidc/callback"
    url = f"{back.path}?{back.query}"
    return client.get(url), url



def test_the_sign_in_page_offers_the_provider(sso_app):
    page = sso_app.test_client().get("/login").get_data(as_text=True)
    assert "Sign in with Corp SSO" in page and "/login/oidc" in page


def test_a_person_signs_in_through_the_provider_with_their_groups_role(sso_app):
    client = sso_app.test_client()
    answer, _ = through_provider(client, "carol")
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/certificates")
    assert session_issue(client, "app.corp.example.test").status_code == 201
    assert session_issue(client, "app.other.example.test").status_code == 403
    svc = sso_app.extensions["ca_server"]
    user = svc.store.get_user("carol")
    assert user["password_hash"] == "!oidc" and user["email"] == "carol@example.test"
    row = next(e for e in svc.store.audit_entries(action="sign_in") if e["actor"] == "user:carol")
    assert row["detail"] == {"method": "oidc", "groups": ["net-admins"]}
    admin = sso_app.test_client()
    assert through_provider(admin, "dave")[0].status_code == 303
    assert admin.get("/admin/tokens").status_code == 200


def test_a_replayed_state_and_an_unmapped_person_are_refused_in_words(sso_app):
    client = sso_app.test_client()
    answer, url = through_provider(client, "carol")
    assert answer.status_code == 303
    replayed = sso_app.test_client().get(url)  # the same code and state, from another browser
    assert replayed.status_code == 401 and "used already or is not from this browser" in replayed.get_data(as_text=True)
    again = client.get(url)  # or from the same one, a second time
    assert again.status_code == 401
    erin = sso_app.test_client()
    refused, _ = through_provider(erin, "erin")
    assert refused.status_code == 401 and "none of them gives access" in refused.get_data(as_text=True)
    assert erin.get("/certificates").status_code == 302  # not signed in


def test_a_provider_behind_a_private_ca_needs_its_ca_file(make_app, instance, monkeypatch, svc, tmp_path):
    """A Keycloak whose certificate this CA issued: without [auth.oidc] ca_file the sign-in said
    "cannot be reached right now (SSLError)"; now it says what an admin sets, and with ca_file the
    whole sign-in (metadata, token, keys) goes through."""
    import threading

    from werkzeug.serving import make_server

    from .checks import tls_server_context

    server = make_server("127.0.0.1", 0, oidc_provider_mock.app(), threaded=True,
                         ssl_context=tls_server_context(svc, tmp_path))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    root = str(instance / "ca" / "root.pem")
    url = f"https://127.0.0.1:{server.server_port}"
    try:
        assert requests.put(f"{url}/users/carol", json={"preferred_username": "carol", "groups": ["net-admins"]},
                            timeout=10, verify=root).status_code == 204
        monkeypatch.setenv("TEST_OIDC_SECRET", "any-secret")
        for name in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):  # this machine's; requests prefers them to ca_file
            monkeypatch.delenv(name, raising=False)
        config = instance / "config.toml"
        original = config.read_text()
        untrusting = app_with_config(make_app, instance, oidc_config(url))
        refused = untrusting.test_client().get("/login/oidc")
        assert refused.status_code == 503 and "The sign-in provider&#39;s TLS certificate is not trusted here: an " \
            "admin sets [auth.oidc] ca_file" in refused.get_data(as_text=True)
        config.write_text(original)
        trusting = app_with_config(make_app, instance, oidc_config(url).replace(
            'name = "Corp SSO"', f'name = "Corp SSO"\nca_file = "{root}"'))
        client = trusting.test_client()
        answer, _ = through_provider(client, "carol", verify=root)
        assert answer.status_code == 303 and session_issue(client, "app.corp.example.test").status_code == 201
    finally:
        server.shutdown()
        server.server_close()


def test_a_provider_that_never_answers_is_said_within_its_timeout(make_app, instance, monkeypatch):
    """A provider that takes the connection and says nothing: /login/oidc waited forever (requests
    has no timeout unless given one), holding one of the server's threads per person who clicked;
    a few clicks and OCSP stopped answering too. Now it gives up after timeout_seconds."""
    import threading

    from .checks import silent_server

    monkeypatch.setenv("TEST_OIDC_SECRET", "x")
    with silent_server() as (port, _):
        app = app_with_config(make_app, instance, oidc_config(f"http://127.0.0.1:{port}").replace(
            'name = "Corp SSO"', 'name = "Corp SSO"\ntimeout_seconds = 1'))
        answers = []
        asking = threading.Thread(target=lambda: answers.append(app.test_client().get("/login/oidc")), daemon=True)
        asking.start()
        asking.join(timeout=20)
        assert answers, "/login/oidc still waits for a provider that never answers"
    assert answers[0].status_code == 503 and "cannot be reached right now" in answers[0].get_data(as_text=True)


def test_a_provider_that_is_down_is_said_and_local_sign_in_works(make_app, instance, monkeypatch, svc):
    monkeypatch.setenv("TEST_OIDC_SECRET", "x")
    config = instance / "config.toml"
    config.write_text(config.read_text() + oidc_config("http://127.0.0.1:9"))
    app = make_app()
    r = app.test_client().get("/login/oidc")
    assert r.status_code == 503 and "cannot be reached right now" in r.get_data(as_text=True)


def test_id_tokens_forged_expired_or_for_another_client_are_refused(make_app, instance, monkeypatch):
    """The callback with ID tokens made here by a provider of the test's own (discovery, JWKS and
    a token endpoint answering what the test sets): a good one signs in; one signed by another
    key, for another audience, expired, from another issuer or with another nonce is refused in
    words, never a 500."""
    import json
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs

    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": "k1", "alg": "RS256"}
    documents: dict[str, bytes] = {}

    class Provider(BaseHTTPRequestHandler):
        def _send(self, body: bytes, status: int = 200) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):  # noqa: N802
            self._send(documents.get(self.path, b"{}"), 200 if self.path in documents else 404)

        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self._send(documents["token"])

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Provider)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    issuer = f"http://127.0.0.1:{server.server_address[1]}"
    documents["/.well-known/openid-configuration"] = json.dumps({
        "issuer": issuer, "jwks_uri": f"{issuer}/jwks", "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token", "id_token_signing_alg_values_supported": ["RS256"]}).encode()
    documents["/jwks"] = json.dumps({"keys": [jwk]}).encode()
    monkeypatch.setenv("TEST_OIDC_SECRET", "x")
    (instance / "config.toml").write_text((instance / "config.toml").read_text() + oidc_config(issuer))
    app = make_app()

    def sign_in_with(signer=key, **claims):
        browser = app.test_client()
        start = browser.get("/login/oidc")
        query = parse_qs(urlsplit(start.headers["Location"]).query)
        now = int(time.time())
        body = {"iss": issuer, "aud": "ca-server-test", "sub": "carol", "preferred_username": "carol",
                "groups": ["net-admins"], "nonce": query["nonce"][0], "iat": now, "exp": now + 300, **claims}
        documents["token"] = json.dumps({"access_token": "a", "token_type": "Bearer", "expires_in": 300,
                                         "id_token": jwt.encode(body, signer, algorithm="RS256",
                                                                headers={"kid": "k1"})}).encode()
        return browser.get(f"/login/oidc/callback?code=c1&state={query['state'][0]}")

    try:
        assert sign_in_with().status_code == 303
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        for bad, words in (({"signer": other}, "signature does not verify"),
                           ({"aud": "someone-else"}, "issued to another application"),
                           ({"exp": int(time.time()) - 600}, "has expired"),
                           ({"iss": "https://evil.example.test"}, "from another issuer"),
                           ({"nonce": "another-nonce"}, "belongs to another sign-in")):
            answer = sign_in_with(**bad)
            said = re.search(r'role="alert">([^<]*)', answer.get_data(as_text=True))
            assert answer.status_code == 401 and said and words in said.group(1), (bad, said)
    finally:
        server.shutdown()
