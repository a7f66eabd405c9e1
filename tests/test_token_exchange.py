"""CI jobs by their OIDC token (issue 28): POST /api/v1/token/exchange takes a JWT from an issuer
in [[auth.jwt_issuers]], checked against the keys the issuer publishes (a real HTTP server here
serving a JWKS, as GitLab's /oauth/discovery/keys does), and returns an API token that can issue
only the mapped names and stops working by itself. Every way a JWT can be wrong gets 401 with the
reason."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .conftest import app_with_config
from .factories import make_csr, pem

AUDIENCE = "https://ca.example.test"


@contextmanager
def serve_issuer(tls=None):
    """An OIDC issuer's key and its JWKS, served over HTTP (HTTPS with `tls`, a server SSLContext)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    body = json.dumps({"keys": [{**jwk, "kid": "ci-key-1", "use": "sig", "alg": "RS256"}]}).encode()
    fetched = []

    class Keys(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            fetched.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Keys)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    try:
        yield {"key": key, "url": url, "fetched": fetched}
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def issuer():
    with serve_issuer() as served:
        yield served


@pytest.fixture
def ci_app(make_app, instance, issuer):
    return app_with_config(make_app, instance, f"""
[[auth.jwt_issuers]]
issuer = "{issuer['url']}"
jwks_url = "{issuer['url']}/oauth/discovery/keys"
audience = "{AUDIENCE}"
domains = ["ci.example.test"]
claims = {{ project_path = "net/routers", ref_protected = "true" }}
token_minutes = 30
""")


def mint(issuer, *, key=None, kid="ci-key-1", algorithm="RS256", **claims) -> str:
    now = int(time.time())
    payload = {"iss": issuer["url"], "aud": AUDIENCE, "sub": "project_path:net/routers:ref_type:branch:ref:main",
               "project_path": "net/routers", "ref_protected": "true", "iat": now, "nbf": now, "exp": now + 3600,
               **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, key or issuer["key"], algorithm=algorithm, headers={"kid": kid})


def issue(client, token: str, name: str):
    return client.post("/api/v1/certificates", json={"csr": pem(make_csr([name]))},
                       headers={"Authorization": f"Bearer {token}"})


def test_a_ci_token_becomes_an_api_token_for_the_mapped_domains(ci_app, issuer):
    client = ci_app.test_client()
    r = client.post("/api/v1/token/exchange", json={"token": mint(issuer)})
    assert r.status_code == 200, r.json
    token = r.json["token"]
    expires = dt.datetime.fromisoformat(r.json["expires_at"].replace("Z", "+00:00"))
    assert dt.timedelta(minutes=29) < expires - dt.datetime.now(dt.UTC) <= dt.timedelta(minutes=30)
    assert issuer["fetched"] == ["/oauth/discovery/keys"]
    made = issue(client, token, "router1.ci.example.test")
    assert made.status_code == 201, made.json
    outside = issue(client, token, "router1.other.example.test")
    assert outside.status_code == 403 and "ci.example.test" in outside.json["error"]["message"]
    admin_only = client.post(f"/api/v1/certificates/{made.json['serial']}/revoke", json={"reason": "superseded"},
                             headers={"Authorization": f"Bearer {token}"})
    assert admin_only.status_code == 403  # the exchanged token is a requester, not an admin: no revoking
    svc = ci_app.extensions["ca_server"]
    row = next(e for e in svc.store.audit_entries(action="token_create") if e["detail"].get("exchanged"))
    assert row["detail"]["issuer"] == issuer["url"] and row["detail"]["claims"]["project_path"] == "net/routers"
    # A second job gets its own token; the keys come from the cache.
    again = client.post("/api/v1/token/exchange", json={"token": mint(issuer)})
    assert again.status_code == 200 and again.json["token"] != token and len(issuer["fetched"]) == 1


def test_the_api_token_ends_with_its_life_and_never_outlives_the_jwt(ci_app, issuer):
    client = ci_app.test_client()
    short = mint(issuer, exp=int(time.time()) + 120)
    r = client.post("/api/v1/token/exchange", json={"token": short})
    assert r.status_code == 200
    expires = dt.datetime.fromisoformat(r.json["expires_at"].replace("Z", "+00:00"))
    assert expires - dt.datetime.now(dt.UTC) <= dt.timedelta(seconds=121)
    token = r.json["token"]
    assert issue(client, token, "a.ci.example.test").status_code == 201
    svc = ci_app.extensions["ca_server"]
    svc.clock = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(minutes=3)
    late = issue(client, token, "b.ci.example.test")
    assert late.status_code == 401, late.json


@pytest.mark.parametrize("change, words", [
    ({"iss": "https://gitlab.attacker.test"}, "are not accepted here"),
    ({"aud": "https://other-ca.example.test"}, "another audience"),
    ({"exp": int(time.time()) - 600, "iat": int(time.time()) - 4000, "nbf": None}, "has expired"),
    ({"project_path": "net/other"}, "project_path = 'net/routers'"),
    ({"ref_protected": "false"}, "ref_protected"),
    ({"nbf": int(time.time()) + 3600}, "not valid yet"),
    ({"exp": None}, '"exp"'),
])
def test_a_wrong_jwt_is_refused_with_the_reason(ci_app, issuer, change, words):
    r = ci_app.test_client().post("/api/v1/token/exchange", json={"token": mint(issuer, **change)})
    assert r.status_code == 401, r.json
    assert r.json["error"]["code"] == "token_exchange_refused" and words in r.json["error"]["message"], r.json


def test_an_issuer_behind_a_private_ca_needs_its_ca_file(make_app, instance, svc, tmp_path):
    """A GitLab whose certificate this CA issued: without ca_file the exchange said "could not be
    fetched (<urlopen error [SSL: CERTIFICATE_VERIFY_FAILED] ...>); try again later", which no
    retry mends; now it says what an admin sets, and with ca_file the token is exchanged."""
    from .checks import tls_server_context

    with serve_issuer(tls_server_context(svc, tmp_path)) as served:
        url = served["url"]
        table = (f'[[auth.jwt_issuers]]\nissuer = "{url}"\njwks_url = "{url}/keys"\n'
                 f'audience = "{AUDIENCE}"\ndomains = ["ci.example.test"]\n')
        config, original = instance / "config.toml", (instance / "config.toml").read_text()
        untrusting = app_with_config(make_app, instance, table)
        refused = untrusting.test_client().post("/api/v1/token/exchange", json={"token": mint(served)})
        assert refused.status_code == 401 and "its TLS certificate is not trusted here; an admin sets ca_file of " \
            "this [[auth.jwt_issuers]]" in refused.json["error"]["message"], refused.json
        config.write_text(original)
        trusting = app_with_config(make_app, instance, table + f'ca_file = "{instance / "ca" / "root.pem"}"\n')
        exchanged = trusting.test_client().post("/api/v1/token/exchange", json={"token": mint(served)})
        assert exchanged.status_code == 200, exchanged.json
        assert issue(trusting.test_client(), exchanged.json["token"], "r1.ci.example.test").status_code == 201


def test_a_forged_or_unsigned_jwt_is_refused(ci_app, issuer):
    client = ci_app.test_client()
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    forged = client.post("/api/v1/token/exchange", json={"token": mint(issuer, key=other)})
    assert forged.status_code == 401 and "does not verify" in forged.json["error"]["message"]
    unknown = client.post("/api/v1/token/exchange", json={"token": mint(issuer, key=other, kid="not-theirs")})
    assert unknown.status_code == 401 and "not among the keys" in unknown.json["error"]["message"]
    header, payload, signature = mint(issuer).split(".")
    changed = jwt.utils.base64url_encode(json.dumps({**json.loads(jwt.utils.base64url_decode(payload)),
                                                    "project_path": "net/routers", "sub": "admin"}).encode())
    tampered = client.post("/api/v1/token/exchange", json={"token": f"{header}.{changed.decode()}.{signature}"})
    assert tampered.status_code == 401 and "does not verify" in tampered.json["error"]["message"]
    none = jwt.encode({"iss": issuer["url"], "aud": AUDIENCE, "exp": int(time.time()) + 60}, None, algorithm="none")
    assert client.post("/api/v1/token/exchange", json={"token": none}).status_code == 401
    hs = jwt.encode({"iss": issuer["url"], "aud": AUDIENCE, "exp": int(time.time()) + 60}, "secret" * 8,
                    algorithm="HS256", headers={"kid": "ci-key-1"})
    refused = client.post("/api/v1/token/exchange", json={"token": hs})
    assert refused.status_code == 401 and "HS256" in refused.json["error"]["message"]
    ec_key = ec.generate_private_key(ec.SECP256R1())
    assert client.post("/api/v1/token/exchange",
                       json={"token": mint(issuer, key=ec_key, algorithm="ES256")}).status_code == 401
    for body in ({"token": "not-a-jwt"}, {"token": ""}, {"token": "a." * 9000}):
        r = client.post("/api/v1/token/exchange", json=body)
        assert r.status_code == 401 and r.json["error"]["message"], body
    assert client.post("/api/v1/token/exchange", data="x", content_type="text/plain").status_code == 400
    svc = ci_app.extensions["ca_server"]
    assert svc.store.audit_entries(action="token_exchange_refused")  # refusals are audited
    assert not [t for t in svc.store.list_tokens() if t["name"].startswith("ci-")]


def test_without_configured_issuers_nothing_is_exchanged(app, issuer):
    r = app.test_client().post("/api/v1/token/exchange", json={"token": mint(issuer)})
    assert r.status_code == 401 and "are not accepted here" in r.json["error"]["message"]
