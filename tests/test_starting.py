"""Starting and addresses (issue 30): one CA per port, base_url chosen knowingly at init, URLs in
certificates (pki_base_url) apart from where the server speaks https."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtensionOID

from .checks import run_openssl
from .conftest import PASSPHRASE, new_token
from .factories import make_csr, pem
from .server import free_port, run_cli, running_server


def _serve(instance: Path, port: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "CA_SERVER_KEY_PASSPHRASE": PASSPHRASE}
    return subprocess.run([sys.executable, "-m", "ca_server", "--instance", str(instance), "serve", "--host",
                           "127.0.0.1", "--port", str(port)], capture_output=True, text=True, env=env, timeout=60)


def test_a_second_instance_cannot_join_a_port_another_holds(instance, tmp_path):
    other = tmp_path / "other"
    made = run_cli("--instance", str(other), "init", "--no-admin", env={"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE})
    assert made.returncode == 0, made.stderr
    own_root = (instance / "ca" / "root.pem").read_text()
    assert (other / "ca" / "root.pem").read_text() != own_root  # two CAs, two roots
    port = free_port()
    with running_server(instance, port=port) as base:
        started = time.monotonic()
        second = _serve(other, port)
        assert time.monotonic() - started < 30
        assert second.returncode != 0
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, second.stderr  # one line, no traceback
        assert f"127.0.0.1:{port}" in lines[0] and "--port" in lines[0]
        assert "Traceback" not in second.stderr + second.stdout
        # The first keeps every connection: new connections each time, as clients come.
        roots = {requests.get(f"{base}/ca/root.pem", timeout=5, headers={"Connection": "close"}).text
                 for _ in range(20)}
        assert roots == {own_root}


def test_a_port_held_by_anything_else_gets_the_same_message(instance):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = _serve(instance, port)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"127.0.0.1:{port} is already in use" in lines[0], result.stderr


def test_init_base_url_is_written_into_the_certificates_and_said(tmp_path):
    folder = tmp_path / "inst"
    made = run_cli("--instance", str(folder), "init", "--no-admin", "--base-url", "http://ca.corp.example:8080",
                   env={"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE})
    assert made.returncode == 0, made.stderr
    assert "http://ca.corp.example:8080" in made.stdout and "every certificate" in made.stdout.lower()
    assert 'base_url = "http://ca.corp.example:8080"' in (folder / "config.toml").read_text()
    intermediate = x509.load_pem_x509_certificate((folder / "ca" / "intermediate.pem").read_bytes())
    cdp = intermediate.extensions.get_extension_for_oid(ExtensionOID.CRL_DISTRIBUTION_POINTS).value
    assert cdp[0].full_name[0].value == "http://ca.corp.example:8080/crl/root.crl"
    bad = run_cli("--instance", str(tmp_path / "bad"), "init", "--base-url", "ca.corp.example",
                  env={"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE})
    assert bad.returncode != 0 and "--base-url" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad" / "ca").exists()
    # init --if-absent with another URL did nothing without a word, as if the URL had been taken
    again = run_cli("--instance", str(folder), "init", "--if-absent", "--base-url", "http://ca.elsewhere.example",
                    env={"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE})
    assert again.returncode == 0 and "nothing to do" in again.stdout
    assert "its base_url is http://ca.corp.example:8080, not --base-url http://ca.elsewhere.example" in again.stderr
    same = run_cli("--instance", str(folder), "init", "--if-absent", "--base-url", "http://ca.corp.example:8080",
                   env={"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE})
    assert same.returncode == 0 and same.stderr == ""


def test_pki_base_url_is_where_certificates_point(instance, make_app):
    config = (instance / "config.toml").read_text()
    assert 'pki_base_url = ""' in config  # documented in the config init writes
    (instance / "config.toml").write_text(config.replace('pki_base_url = ""', 'pki_base_url = "http://pki.corp.example"'))
    app = make_app()
    svc = app.extensions["ca_server"]
    token = new_token(svc, "pki-url")
    answer = app.test_client().post("/api/v1/certificates", json={"csr": pem(make_csr(["www.example.test"]))},
                                    headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 201, answer.get_json()
    cert = x509.load_pem_x509_certificate(answer.get_json()["certificate"].encode())
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    ocsp = [d.access_location.value for d in aia if d.access_method == AuthorityInformationAccessOID.OCSP]
    assert ocsp == ["http://pki.corp.example/ocsp"]
    cdp = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name[0].value.startswith("http://pki.corp.example/crl/")


def test_serve_warns_when_it_listens_where_base_url_does_not_point(instance, svc):
    port = free_port()
    with running_server(instance, port=port):
        pass
    log = (instance / "serve.log").read_text()
    warnings = [line for line in log.splitlines() if "but [server] base_url is" in line]
    assert len(warnings) == 1 and f"http://127.0.0.1:{port}" in warnings[0]


def test_two_servers_starting_at_once_cannot_both_claim_an_address():
    """Before either listens, the second claim is refused by the first's lock, not by luck."""
    from ca_server.errors import AddressUnavailableError
    from ca_server.server import claim_address

    port = free_port()
    first = claim_address("127.0.0.1", port)
    try:
        with pytest.raises(AddressUnavailableError, match=f"127.0.0.1:{port} is already in use by another ca-server"):
            claim_address("127.0.0.1", port)
    finally:
        os.close(first)
    os.close(claim_address("127.0.0.1", port))  # free again once the first is gone


def _self_signed_pair(folder: Path, name: str) -> tuple[Path, Path]:
    import datetime as dt
    import ipaddress

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = folder / f"{name}.crt", folder / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def test_serve_with_the_operators_own_pair_and_a_wrong_pair_is_one_line(instance, tmp_path):
    """`serve --tls-cert/--tls-key` had no test; a key of another certificate, a file that is no
    certificate or an encrypted key gave a Granian traceback per worker, and --port 99999 Python's
    OverflowError."""
    cert, key = _self_signed_pair(tmp_path, "own")
    other_cert, other_key = _self_signed_pair(tmp_path, "other")
    encrypted = tmp_path / "encrypted.key"
    run_openssl("pkey", "-in", str(key), "-aes256", "-passout", "pass:secret", "-out", str(encrypted))
    with running_server(instance, args=("--tls-cert", str(cert), "--tls-key", str(key)), trust=cert) as base:
        assert base.startswith("https://")
        assert requests.get(f"{base}/ca/root.pem", verify=str(cert), timeout=10).status_code == 200
    env = {**os.environ, "CA_SERVER_KEY_PASSPHRASE": PASSPHRASE}
    for args, words in (((str(cert), str(other_key)), f"--tls-key {other_key} is not the key of the certificate"),
                        ((str(other_key), str(key)), "is not a PEM certificate"),
                        ((str(cert), str(other_cert)), "is not a PEM private key"),
                        ((str(cert), str(encrypted)), "is encrypted")):
        done = subprocess.run([sys.executable, "-m", "ca_server", "--instance", str(instance), "serve", "--host",
                               "127.0.0.1", "--port", str(free_port()), "--tls-cert", args[0], "--tls-key", args[1]],
                              capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 1 and words in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
    for option, value in (("--port", "99999"), ("--port", "-1"), ("--workers", "0")):
        done = subprocess.run([sys.executable, "-m", "ca_server", "--instance", str(instance), "serve", option, value],
                              capture_output=True, text=True, env=env, timeout=60)
        assert done.returncode == 2 and f"Invalid value for '{option}'" in done.stderr, done.stderr
