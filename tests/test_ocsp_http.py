"""OCSP over HTTP the RFC 5019 way: GET answers cacheable (max-age within nextUpdate,
Last-Modified, Expires, ETag, 304 on a conditional GET), every answer right after a revocation,
unknown serials cheap, and an nginx cache in front doing what the README says."""

from __future__ import annotations

import base64
import datetime as dt
import os
import random
import shutil
import subprocess
import time
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp

from .checks import run_openssl, wait_until
from .conftest import new_token
from .factories import make_csr, pem
from .server import free_port, running_server


def ocsp_request(cert: x509.Certificate, issuer: x509.Certificate, serial: int | None = None) -> bytes:
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
    if serial is not None:  # the same issuer, another serial
        request = ocsp.OCSPRequestBuilder().add_certificate_by_hash(
            request.issuer_name_hash, request.issuer_key_hash, serial, hashes.SHA1()).build()
    return request.public_bytes(Encoding.DER)


def get_path(request_der: bytes) -> str:
    return "/ocsp/" + base64.b64encode(request_der).decode().replace("+", "%2B").replace("/", "%2F")


def issued(api) -> x509.Certificate:
    response = api.post("/api/v1/certificates", json={"csr": pem(make_csr(["ocsp-http.example.test"]))})
    assert response.status_code == 201
    return x509.load_pem_x509_certificate(response.get_json()["certificate"].encode())


def assert_openssl_says(answer: bytes, leaf: x509.Certificate, instance: Path, tmp_path: Path, status: str) -> None:
    """`openssl ocsp` verifies the answer's signature (responder -> intermediate -> root) and reads it."""
    (tmp_path / "answer.der").write_bytes(answer)
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(Encoding.PEM))
    result = run_openssl("ocsp", "-respin", str(tmp_path / "answer.der"), "-issuer",
                         str(instance / "ca" / "intermediate.pem"), "-cert", str(tmp_path / "leaf.pem"),
                         "-CAfile", str(instance / "ca" / "root.pem"))
    out = (result.stdout + result.stderr).decode()
    assert result.returncode == 0 and "Response verify OK" in out, out
    assert f"{tmp_path / 'leaf.pem'}: {status}" in out, out


def test_get_answers_carry_coherent_caching_headers_and_304(app, api, svc):
    client = app.test_client()
    leaf = issued(api)
    path = get_path(ocsp_request(leaf, svc.authority.intermediate))
    response = client.get(path)
    assert response.status_code == 200 and response.mimetype == "application/ocsp-response"
    parsed = ocsp.load_der_ocsp_response(response.data)
    assert parsed.certificate_status == ocsp.OCSPCertStatus.GOOD
    cache_control = response.headers["Cache-Control"]
    max_age = int(cache_control.split("max-age=")[1].split(",")[0])
    assert 0 < max_age <= svc.config.revocation.ocsp_max_age_seconds
    assert max_age <= (parsed.next_update_utc - dt.datetime.now(dt.UTC)).total_seconds()
    assert "public" in cache_control and "no-transform" in cache_control
    assert parsedate_to_datetime(response.headers["Last-Modified"]) == parsed.this_update_utc
    expires = parsedate_to_datetime(response.headers["Expires"])
    assert parsed.this_update_utc < expires <= parsed.next_update_utc
    etag = response.headers["ETag"]
    assert etag.startswith('"')
    # Conditional GETs: the same answer is not sent again.
    later = format_datetime(parsed.this_update_utc + dt.timedelta(seconds=1), usegmt=True)
    for headers in ({"If-None-Match": etag}, {"If-Modified-Since": later}):
        again = client.get(path, headers=headers)
        assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == etag
    assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200
    # The same second as the answer: a new answer could have come within it (a revocation), so 200.
    assert client.get(path, headers={"If-Modified-Since": response.headers["Last-Modified"]}).status_code == 200
    # POST answers are not for HTTP caches (RFC 5019 5).
    post = client.post("/ocsp", data=ocsp_request(leaf, svc.authority.intermediate),
                       headers={"Content-Type": "application/ocsp-request"})
    assert post.headers["Cache-Control"] == "no-cache" and "ETag" not in post.headers


def test_the_very_next_answer_after_a_revocation_says_revoked(app, api, svc, instance, tmp_path):
    client = app.test_client()
    leaf = issued(api)
    request_der = ocsp_request(leaf, svc.authority.intermediate)
    for _ in range(3):  # warm every cache there is
        assert_openssl_says(client.get(get_path(request_der)).data, leaf, instance, tmp_path, "good")
        assert_openssl_says(client.post("/ocsp", data=request_der).data, leaf, instance, tmp_path, "good")
    serial = format(leaf.serial_number, "x")
    assert api.post(f"/api/v1/certificates/{serial}/revoke", json={"reason": "keyCompromise"}).status_code == 200
    assert_openssl_says(client.get(get_path(request_der)).data, leaf, instance, tmp_path, "revoked")
    assert_openssl_says(client.post("/ocsp", data=request_der).data, leaf, instance, tmp_path, "revoked")


def test_a_revocation_by_another_process_is_seen_at_once(make_app, api, svc, instance, tmp_path):
    """Two apps on one instance stand for two workers: the one that did not revoke answers revoked."""
    reader = make_app().test_client()
    leaf = issued(api)
    request_der = ocsp_request(leaf, svc.authority.intermediate)
    assert_openssl_says(reader.get(get_path(request_der)).data, leaf, instance, tmp_path, "good")
    assert api.post(f"/api/v1/certificates/{format(leaf.serial_number, 'x')}/revoke",
                    json={"reason": "superseded"}).status_code == 200
    assert_openssl_says(reader.get(get_path(request_der)).data, leaf, instance, tmp_path, "revoked")


def test_a_revocation_written_by_a_separate_process_is_the_next_answer(app, api, svc, instance, tmp_path):
    """A real second process (as a worker or `ca-server restore` is) revokes while this one's
    answer is cached: the marker it rewrites is shared memory here, so the next answer is revoked."""
    import sys

    client = app.test_client()
    leaf = issued(api)
    request_der = ocsp_request(leaf, svc.authority.intermediate)
    for _ in range(2):
        assert_openssl_says(client.post("/ocsp", data=request_der).data, leaf, instance, tmp_path, "good")
    script = ("import datetime as dt, sys; from ca_server.config import Secrets; "
              "from ca_server.services import open_services; "
              "store = open_services(sys.argv[1], secrets=Secrets(key_passphrase=None)).store; "
              "assert store.revoke_certificate(sys.argv[2], dt.datetime.now(dt.UTC), 'keyCompromise')")
    done = subprocess.run([sys.executable, "-c", script, str(instance), format(leaf.serial_number, "x")],
                          capture_output=True, text=True, timeout=60, env=os.environ)
    assert done.returncode == 0, done.stderr
    assert_openssl_says(client.post("/ocsp", data=request_der).data, leaf, instance, tmp_path, "revoked")


def test_a_flood_of_unknown_serials_is_unauthorized_and_evicts_nothing(app, api, svc):
    client = app.test_client()
    leaf = issued(api)
    good_path = get_path(ocsp_request(leaf, svc.authority.intermediate))
    before = client.get(good_path).data
    rng = random.Random(6960)
    statuses = set()
    for _ in range(10_000):
        der = ocsp_request(leaf, svc.authority.intermediate, serial=rng.getrandbits(120) | 1 << 100)
        response = client.post("/ocsp", data=der)
        statuses.add(ocsp.load_der_ocsp_response(response.data).response_status)
    assert statuses == {ocsp.OCSPResponseStatus.UNAUTHORIZED}
    # The good answer is still the cached one: the same bytes (its thisUpdate included), not re-signed.
    assert client.get(good_path).data == before


def nginx_config(folder: Path, listen: int, upstream: str) -> Path:
    for sub in ("cache", "tmp"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    conf = folder / "nginx.conf"
    conf.write_text(f"""
user root;
worker_processes 1;
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/tmp/body;
    proxy_temp_path {folder}/tmp/proxy;
    fastcgi_temp_path {folder}/tmp/fastcgi;
    uwsgi_temp_path {folder}/tmp/uwsgi;
    scgi_temp_path {folder}/tmp/scgi;
    proxy_cache_path {folder}/cache keys_zone=ocsp:1m max_size=100m;
    server {{
        listen 127.0.0.1:{listen};
        location /ocsp/ {{
            proxy_pass {upstream};
            proxy_cache ocsp;
            proxy_cache_revalidate on;
            add_header X-Cache-Status $upstream_cache_status always;
        }}
    }}
}}
""")
    return conf


def test_nginx_in_front_caches_for_max_age_then_serves_the_revocation(instance, svc, tmp_path):
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx is None:
        pytest.skip("nginx is not installed (make test installs Debian's nginx)")
    config = instance / "config.toml"
    config.write_text(config.read_text().replace("ocsp_max_age_seconds = 300", "ocsp_max_age_seconds = 3"))
    token = new_token(svc, "nginx-test")
    with running_server(instance) as base:
        cert = requests.post(f"{base}/api/v1/certificates", headers={"Authorization": f"Bearer {token}"},
                             json={"csr": pem(make_csr(["cached.example.test"]))}, timeout=10).json()
        leaf = x509.load_pem_x509_certificate(cert["certificate"].encode())
        path = get_path(ocsp_request(leaf, svc.authority.intermediate))
        port = free_port()
        proc = subprocess.Popen([nginx, "-c", str(nginx_config(tmp_path / "nginx", port, base)), "-p",
                                 str(tmp_path / "nginx")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: _up(f"http://127.0.0.1:{port}/"), 10)  # not proxied: nginx's own 404
            front = f"http://127.0.0.1:{port}{path}"
            first_at = time.monotonic()
            first, second = requests.get(front, timeout=5), requests.get(front, timeout=5)
            assert first.headers["X-Cache-Status"] == "MISS" and second.headers["X-Cache-Status"] == "HIT"
            assert second.content == first.content
            assert_openssl_says(second.content, leaf, instance, tmp_path, "good")
            def served() -> int:
                return (instance / "serve.log").read_text().count('"GET /ocsp/')

            wait_until(lambda: served() >= 1, 10)  # the access log writes its lines in batches
            time.sleep(0.5)  # past the log's flush interval: a second line would be there by now
            assert served() == 1, "the second answer came from nginx without reaching ca-server"

            assert requests.post(f"{base}/api/v1/certificates/{cert['serial']}/revoke", timeout=10,
                                 headers={"Authorization": f"Bearer {token}"},
                                 json={"reason": "keyCompromise"}).status_code == 200
            assert_openssl_says(requests.get(base + path, timeout=5).content, leaf, instance, tmp_path, "revoked")
            cached = requests.get(front, timeout=5)
            if cached.headers["X-Cache-Status"] == "HIT":  # within max-age, the cache may still say good
                assert_openssl_says(cached.content, leaf, instance, tmp_path, "good")
            # nginx keeps time in whole seconds: a cached answer lives max-age plus up to 1 s.
            wait_until(lambda: time.monotonic() - first_at > 3 + 1.2, 10)
            # Past max-age the good answer is gone from the cache (what nginx serves now may be a
            # "revoked" it cached meanwhile: a HIT then, and right).
            after = requests.get(front, timeout=5)
            assert_openssl_says(after.content, leaf, instance, tmp_path, "revoked")
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def _up(url: str) -> bool:
    try:
        requests.get(url, timeout=1)
        return True
    except requests.ConnectionError:
        return False
