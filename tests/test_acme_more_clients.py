"""More real ACME clients the README and CONTRACT.md name: Caddy (it gets its certificate and serves
it), dehydrated (curl and openssl in shell) and uacme (C, libcurl; it checks each certificate's
OCSP status itself). Names resolve through pebble-challtestsrv as in test_acme_clients.py; http-01
answers come from a plain web root served here, written by each client's hook or config."""

from __future__ import annotations

import functools
import http.server
import socket
import ssl
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .checks import go_build
from .conftest import PASSPHRASE
from .server import free_port, running_server
from .test_acme_clients import acme_server, assert_issued_here, client_env, dns_server, need  # noqa: F401


@contextmanager
def web_root(port: int, root: Path):
    """Serves `root` on 127.0.0.1:port, where the server validates http-01."""
    (root / ".well-known" / "acme-challenge").mkdir(parents=True, exist_ok=True)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield root / ".well-known" / "acme-challenge"
    finally:
        server.shutdown()
        server.server_close()


def run(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=180)


def test_caddy_gets_its_certificate_and_serves_it(acme_server, svc, tmp_path):  # noqa: F811 (the fixture)
    """The Caddyfile of the README (acme_ca, acme_ca_root); Caddy answers the challenge on the
    ports the server validates, stores the certificate, and serves it to a client that trusts
    root.pem and checks the host name."""
    caddy = need("caddy")
    folder = tmp_path / "caddy"
    folder.mkdir()
    https_port = acme_server["tls_alpn"]
    (folder / "Caddyfile").write_text(
        "{\n"
        f"  http_port {acme_server['http01']}\n  https_port {https_port}\n"
        f"  acme_ca https://localhost:{acme_server['port']}/acme/directory\n  acme_ca_root {acme_server['root']}\n"
        f"  email ops@example.test\n  storage file_system {folder}/data\n  admin off\n"
        "}\n"
        'caddy.example.test {\n  respond "hello from caddy"\n}\n')
    with acme_server["start"]():
        proc = subprocess.Popen([caddy, "run", "--config", str(folder / "Caddyfile"), "--adapter", "caddyfile"],
                                env=client_env(HOME=str(folder), XDG_DATA_HOME=str(folder),
                                               XDG_CONFIG_HOME=str(folder)),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 90
            stored: list[Path] = []
            while not stored:
                assert time.monotonic() < deadline and proc.poll() is None, "Caddy got no certificate"
                time.sleep(0.3)
                stored = list((folder / "data").rglob("caddy.example.test.crt"))
            leaf = assert_issued_here(stored[0], acme_server, svc)
            context = ssl.create_default_context(cafile=str(acme_server["root"]))
            while True:  # Caddy loads the certificate a moment after it writes it
                try:
                    with socket.create_connection(("127.0.0.1", https_port), timeout=5) as raw, \
                            context.wrap_socket(raw, server_hostname="caddy.example.test") as tls:
                        served = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
                        tls.sendall(b"GET / HTTP/1.1\r\nHost: caddy.example.test\r\nConnection: close\r\n\r\n")
                        answer = b"".join(iter(lambda: tls.recv(4096), b""))
                    break
                except (ssl.SSLError, ConnectionError) as exc:
                    assert time.monotonic() < deadline, f"Caddy does not serve its certificate: {exc}"
                    time.sleep(0.3)
        finally:
            proc.terminate()
            output = proc.communicate(timeout=20)[0]
    assert served.serial_number == leaf.serial_number, output[-3000:]
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hello from caddy")


def test_dehydrated_registers_gets_renews_and_revokes(acme_server, svc, tmp_path):  # noqa: F811 (the fixture)
    need("dehydrated")
    work = tmp_path / "dehydrated"
    work.mkdir()
    with web_root(acme_server["http01"], tmp_path / "www") as challenges, acme_server["start"]():
        config = work / "config"
        config.write_text(f'CA="https://localhost:{acme_server["port"]}/acme/directory"\nCHALLENGETYPE="http-01"\n'
                          f'WELLKNOWN="{challenges}"\nBASEDIR="{work}"\nCONTACT_EMAIL="ops@example.test"\n'
                          "KEY_ALGO=secp384r1\n")
        env = client_env(CURL_CA_BUNDLE=str(acme_server["root"]))
        registered = run("dehydrated", "-f", str(config), "--register", "--accept-terms", env=env)
        assert registered.returncode == 0, registered.stdout + registered.stderr
        names = ("-d", "dh.example.test", "-d", "www.dh.example.test")
        first = run("dehydrated", "-f", str(config), "-c", *names, env=env)
        assert first.returncode == 0 and "Challenge is valid!" in first.stdout, first.stdout + first.stderr
        leaf = assert_issued_here(work / "certs" / "dh.example.test" / "fullchain.pem", acme_server, svc)
        assert sorted(leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
                      .get_values_for_type(x509.DNSName)) == ["dh.example.test", "www.dh.example.test"]
        renewed = run("dehydrated", "-f", str(config), "-c", *names, "--force", env=env)
        assert renewed.returncode == 0, renewed.stdout + renewed.stderr
        second = assert_issued_here(work / "certs" / "dh.example.test" / "fullchain.pem", acme_server, svc)
        assert second.serial_number != leaf.serial_number
        revoked = run("dehydrated", "-f", str(config), "--revoke", str(work / "certs" / "dh.example.test" / "cert.pem"),
                      env=env)
        assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    assert svc.store.get_certificate(format(second.serial_number, "x")).revoked_at is not None
    assert svc.store.get_certificate(format(leaf.serial_number, "x")).revoked_at is None


def test_uacme_over_http_checks_our_ocsp_and_revokes(instance, dns_server, svc, tmp_path):  # noqa: F811
    """uacme has no option for a CA file, so this one runs against plain http (base_url http, as
    `make run` serves). It asks our OCSP responder about each certificate before renewing it."""
    need("uacme")
    port, http01 = free_port(), free_port()
    config = instance / "config.toml"
    config.write_text(config.read_text()
                      .replace('base_url = "http://127.0.0.1:5000"', f'base_url = "http://127.0.0.1:{port}"')
                      .replace("http01_port = 80", f"http01_port = {http01}")
                      .replace("dns_resolvers = []", f'dns_resolvers = ["127.0.0.1:{dns_server["dns"]}"]'))
    hook = tmp_path / "hook.sh"  # uacme calls: hook.sh begin|done|failed TYPE IDENT TOKEN KEY_AUTHORIZATION
    work = tmp_path / "uacme"
    with web_root(http01, tmp_path / "www") as challenges, \
            running_server(instance, port=port, env={"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE}):
        hook.write_text(f'#!/bin/sh\nD={challenges}\ncase "$1" in\n'
                        '  begin) [ "$2" = http-01 ] || exit 1; printf %s "$5" > "$D/$4" ;;\n'
                        '  *) rm -f "$D/$4" ;;\nesac\n')
        hook.chmod(0o755)
        base = ("uacme", "-v", "-a", f"http://127.0.0.1:{port}/acme/directory", "-c", str(work))
        env = client_env()
        made = run(*base, "-y", "new", "ops@example.test", env=env)
        assert made.returncode == 0, made.stderr
        got = run(*base, "-h", str(hook), "-m", "issue", "u.example.test", "www.u.example.test", env=env)
        assert got.returncode == 0, got.stderr
        cert_file = work / "u.example.test" / "cert.pem"
        leaf = x509.load_pem_x509_certificates(cert_file.read_bytes())[0]
        record = svc.store.get_certificate(format(leaf.serial_number, "x"))
        assert record is not None and record.requester.startswith("acme:")
        assert x509.TLSFeatureType.status_request in leaf.extensions.get_extension_for_class(x509.TLSFeature).value
        again = run(*base, "-h", str(hook), "issue", "u.example.test", "www.u.example.test", env=env)
        assert again.returncode == 1 and "OCSP certificate status is GOOD" in again.stderr, again.stderr  # not due
        gone = run(*base, "-r", "4", "revoke", str(cert_file), env=env)
        assert gone.returncode == 0, gone.stderr
        assert svc.store.get_certificate(record.serial).revocation_reason == "superseded"
        again = run(*base, "-h", str(hook), "issue", "u.example.test", "www.u.example.test", env=env)
        assert again.returncode == 0, again.stderr  # uacme set the revoked one aside: a new one
        assert x509.load_pem_x509_certificates(cert_file.read_bytes())[0].serial_number != leaf.serial_number


@pytest.mark.parametrize("bound", [False, True], ids=["open", "eab"])
def test_go_x_crypto_acme_the_client_of_cert_manager(acme_server, svc, tmp_path, bound):  # noqa: F811 (the fixture)
    """cert-manager's ACME issuer is built on golang.org/x/crypto/acme (a fork of it); Kubernetes
    is not here, its client is. An account (bound with EAB, as a private CA's cert-manager Issuer
    usually is), Register again with the same key (what cert-manager does at each start: the
    account exists), two orders on it with http-01, each chain verified by Go's x509 for the
    name, and a revocation by the account."""
    binary = go_build("goacme", tmp_path)
    name = "cm.web.example.test"
    args = [str(binary), "-dir", f"https://localhost:{acme_server['port']}/acme/directory",
            "-root", str(acme_server["root"]), "-name", name, "-http01", str(acme_server["http01"]),
            "-out", str(tmp_path)]
    extra = {}
    if bound:
        import datetime as dt

        from ca_server.acme import accounts as acme_accounts

        eab = acme_accounts.create_eab_key(svc.store, "k8s", domains=("web.example.test",), allow_ip=False,
                                           now=dt.datetime.now(dt.UTC))
        args += ["-eab-kid", eab["kid"], "-eab-hmac", eab["hmac_key"]]
        extra["require_eab"] = "true"
    with acme_server["start"](**extra):
        done = subprocess.run(args, env=client_env(), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("registered https://localhost:") and lines[0].endswith("status valid"), lines
    assert lines[1] == "existing account " + lines[0].split()[1], lines
    serials = []
    for round_ in (1, 2):
        chain = tmp_path / f"chain-{round_}.pem"
        leaf = assert_issued_here(chain, acme_server, svc)
        assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
            .get_values_for_type(x509.DNSName) == [name]
        serials.append(format(leaf.serial_number, "x"))
    assert serials[0] != serials[1] and lines[-1] == "revoked the first", lines
    revoked = svc.store.get_certificate(serials[0])
    assert revoked.revoked_at is not None and revoked.revocation_reason == "superseded"
    assert svc.store.get_certificate(serials[1]).revoked_at is None


def test_a_go_server_with_autocert_gets_its_certificate_at_its_first_handshake(acme_server, svc, tmp_path):  # noqa: F811
    """golang.org/x/crypto/acme/autocert, how Go services get certificates: the first handshake for
    its allowed name makes it order one, answering tls-alpn-01 on its own listener (the port the
    server validates on); the client that waited in that handshake gets the certificate, checked
    against root.pem for the name, and the page behind it."""
    binary = go_build("goacme", tmp_path)
    name = "go.example.test"
    port = acme_server["tls_alpn"]
    with acme_server["start"]():
        proc = subprocess.Popen([str(binary), "-dir", f"https://localhost:{acme_server['port']}/acme/directory",
                                 "-root", str(acme_server["root"]), "-name", name, "-autocert", f"127.0.0.1:{port}",
                                 "-cache", str(tmp_path / "autocert")],
                                env=client_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert proc.stdout.readline().strip() == "listening"
            context = ssl.create_default_context(cafile=str(acme_server["root"]))
            deadline = time.monotonic() + 30
            while True:
                try:
                    raw = socket.create_connection(("127.0.0.1", port), timeout=60)
                    break
                except ConnectionRefusedError:
                    assert time.monotonic() < deadline, "the Go server did not listen"
                    time.sleep(0.2)
            with raw, context.wrap_socket(raw, server_hostname=name) as tls:
                served = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
                tls.sendall(f"GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode())
                answer = b"".join(iter(lambda: tls.recv(4096), b""))
        finally:
            proc.terminate()
            said = proc.communicate(timeout=10)[0]
    assert answer.endswith(b"hello from autocert"), (answer, said)
    record = svc.store.get_certificate(format(served.serial_number, "x"))
    assert record is not None and record.der == served.public_bytes(serialization.Encoding.DER)
    assert served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.DNSName) == [name]
