"""A scripted ACME client over Flask's test client, for the protocol's edge cases: it signs what it
is told to (josepy does the signing), including what a real client never sends. And a loopback
HTTP server that answers http-01 challenges."""

from __future__ import annotations

import base64
import http.server
import json
import socket
import threading
from contextlib import contextmanager

import josepy as jose
from cryptography.hazmat.primitives.asymmetric import ec

from .factories import der


def b64(data: bytes | str) -> str:
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ec_key() -> jose.JWKEC:
    return jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))


class ScriptedAcme:
    def __init__(self, client, base_url: str, key: jose.JWK | None = None) -> None:
        self.client, self.base = client, base_url
        self.key = key or ec_key()
        self.kid: str | None = None

    def path(self, url: str) -> str:
        assert url.startswith(self.base), url
        return url[len(self.base):]

    def nonce(self) -> str:
        return self.client.head("/acme/new-nonce").headers["Replay-Nonce"]

    def jws(self, url: str, payload, *, nonce: str | None = None, key: jose.JWK | None = None, jwk: bool = False,
            kid: str | None = None, alg: str = "ES256", extra: dict | None = None) -> dict:
        key = key or self.key
        protected = {"alg": alg, "nonce": nonce or self.nonce(), "url": url, **(extra or {})}
        if jwk:
            protected["jwk"] = key.public_key().to_partial_json()
        else:
            protected["kid"] = kid or self.kid
        p64 = b64(json.dumps(protected))
        body64 = "" if payload is None else b64(json.dumps(payload))
        signature = jose.JWASignature.from_json(alg).sign(key.key, f"{p64}.{body64}".encode())
        return {"protected": p64, "payload": body64, "signature": b64(signature)}

    def post(self, url: str, payload, **kw):
        """POST a signed request to a full URL (or a path); payload None = POST-as-GET."""
        full = url if url.startswith("http") else self.base + url
        body = kw.pop("body", None) or self.jws(full, payload, **kw)
        return self.client.post(self.path(full), data=json.dumps(body), content_type="application/jose+json")

    def new_account(self, **payload):
        response = self.post("/acme/new-account", {"termsOfServiceAgreed": True, **payload}, jwk=True)
        if response.status_code in (200, 201):
            self.kid = response.headers["Location"]
        return response

    def new_order(self, *identifiers: str, **extra):
        ids = [{"type": "ip" if value.replace(".", "").isdigit() or ":" in value else "dns", "value": value}
               for value in identifiers]
        return self.post("/acme/new-order", {"identifiers": ids, **extra})

    def challenge(self, order: dict, kind: str = "http-01") -> dict:
        authz = self.post(order["authorizations"][0], None).get_json()
        return next(c for c in authz["challenges"] if c["type"] == kind)

    def key_authorization(self, token: str) -> str:
        return f"{token}.{b64(self.key.thumbprint())}"

    def finalize(self, order: dict, csr):
        return self.post(order["finalize"], {"csr": b64(der(csr))})


@contextmanager
def http01_responder(port: int, host: str = "127.0.0.1"):
    """Answers GET /.well-known/acme-challenge/<token> with what `tokens[token]` holds, on
    `host` only (an IPv6 address such as ::1 too)."""
    tokens: dict[str, str] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the stdlib's name)
            body = tokens.get(self.path.rsplit("/", 1)[-1], "").encode()
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server_class = http.server.ThreadingHTTPServer
    if ":" in host:
        server_class = type("ThreadingHTTPServerV6", (server_class,), {"address_family": socket.AF_INET6})
    server = server_class((host, port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield tokens
    finally:
        server.shutdown()
        server.server_close()
