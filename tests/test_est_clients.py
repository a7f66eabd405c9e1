"""EST clients no one here wrote, against a real `ca-server serve --tls`: curl with openssl (as
RFC 7030's examples and ../shared/DEVICE-CLIENTS.md) and strongSwan's `pki --estca` / `pki --est`
(enroll, then re-enroll with a new key). Every certificate is verified with openssl against
root.pem and found in the store by its serial; the audit log names the door."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from ca_server import accounts
from ca_server.clock import utcnow

from .checks import assert_openssl_verifies, need, run_openssl
from .server import running_server
from .test_acme_clients import client_env


@pytest.fixture
def est_server(instance, svc):
    """(base URL, an admin API token, root.pem) of `serve --tls` with [est] enabled."""
    config = instance / "config.toml"
    head, sep, tail = config.read_text().partition("[est]")
    config.write_text(head + sep + tail.replace("enabled = false", "enabled = true", 1))
    token = accounts.create_token(svc.store, "est-devices", is_admin=True, domains=(), allow_ip=None, now=utcnow())
    with running_server(instance, args=("--tls",)) as base:
        yield base, token, instance / "ca" / "root.pem"


def run(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(args, input=input, capture_output=True, timeout=120, env=client_env())
    assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-3000:])
    return result


def stored_as_est(svc, cert: x509.Certificate, operation: str) -> dict:
    serial = format(cert.serial_number, "x")
    record = svc.store.get_certificate(serial)
    assert record is not None and record.certificate == cert
    (row,) = svc.store.audit_entries(action="issue", serial=serial)
    detail = row["detail"] if isinstance(row["detail"], dict) else json.loads(row["detail"])
    assert (detail["door"], detail["operation"]) == ("est", operation)
    return detail


def test_curl_and_openssl_enroll_and_reenroll_as_rfc_7030_shows(est_server, svc, tmp_path):
    curl = need("curl")
    base, token, root = est_server
    cacerts = run(curl, "-sS", "--fail", "--cacert", str(root), f"{base}/.well-known/est/cacerts").stdout
    chain = run_openssl("pkcs7", "-inform", "DER", "-print_certs", input=_unbase64(cacerts)).stdout.decode()
    assert "Issuing CA" in chain and "Root CA" in chain
    (tmp_path / "chain.pem").write_text(chain)

    def enroll(operation: str, key: Path, *extra: str) -> x509.Certificate:
        run_openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
        request = run_openssl("req", "-new", "-key", str(key), "-subj", "/CN=dev.example.test",
                              "-addext", "subjectAltName=DNS:dev.example.test", "-outform", "DER").stdout
        (tmp_path / "req.b64").write_text(base64.b64encode(request).decode())
        answer = run(curl, "-sS", "--fail", "--cacert", str(root), "-u", f"any:{token}", *extra,
                     "-H", "Content-Type: application/pkcs10", "--data-binary", f"@{tmp_path / 'req.b64'}",
                     f"{base}/.well-known/est/{operation}").stdout
        pem = run_openssl("pkcs7", "-inform", "DER", "-print_certs", input=_unbase64(answer)).stdout
        leaf = tmp_path / f"{operation}.pem"
        leaf.write_bytes(pem)
        assert_openssl_verifies(leaf, root, tmp_path / "chain.pem")
        return x509.load_pem_x509_certificate(pem)

    first = enroll("simpleenroll", tmp_path / "key.pem")
    stored_as_est(svc, first, "simpleenroll")
    # re-enroll as a device does: a new key, the same names, the current certificate at hand
    second = enroll("simplereenroll", tmp_path / "key2.pem", "--cert", str(tmp_path / "simpleenroll.pem"),
                    "--key", str(tmp_path / "key.pem"))
    assert stored_as_est(svc, second, "simplereenroll")["renews"] == format(first.serial_number, "x")
    assert second.public_key() != first.public_key()


def test_strongswan_pki_fetches_the_ca_enrolls_and_reenrolls(est_server, svc, tmp_path):
    pki = need("pki")
    base, token, root = est_server
    run(pki, "--estca", "--url", base, "--cacert", str(root), "--caout", str(tmp_path / "ca.pem"), "--outform", "pem")
    written = sorted(p.name for p in tmp_path.glob("ca*.pem"))
    assert written == ["ca-1.pem", "ca.pem"], written  # the root, then the issuing CA
    assert x509.load_pem_x509_certificate((tmp_path / "ca.pem").read_bytes()) == svc.authority.root

    def enroll(key: Path, *renew: str) -> x509.Certificate:
        key.write_bytes(run(pki, "--gen", "--type", "ecdsa", "--size", "256", "--outform", "pem").stdout)
        request = run(pki, "--req", "--in", str(key), "--type", "ecdsa", "--dn", "CN=vpn.example.test",
                      "--san", "vpn.example.test", "--outform", "der").stdout
        (tmp_path / "req.der").write_bytes(request)
        pem = run(pki, "--est", "--url", base, "--cacert", str(root), "--cacert", str(tmp_path / "ca-1.pem"),
                  "--in", str(tmp_path / "req.der"), "--userpass", f"device:{token}", *renew,
                  "--outform", "pem").stdout
        leaf = tmp_path / f"{key.stem}.crt"
        leaf.write_bytes(pem)
        assert_openssl_verifies(leaf, root, tmp_path / "ca-1.pem")
        return x509.load_pem_x509_certificate(pem)

    first = enroll(tmp_path / "key1.pem")
    stored_as_est(svc, first, "simpleenroll")
    second = enroll(tmp_path / "key2.pem", "--cert", str(tmp_path / "key1.crt"), "--key", str(tmp_path / "key1.pem"))
    assert stored_as_est(svc, second, "simplereenroll")["renews"] == format(first.serial_number, "x")


def _unbase64(data: bytes) -> bytes:
    return base64.b64decode(b"".join(data.split()))


def test_a_request_with_attributes_out_of_der_order_is_still_checked_on_reenroll(est_server, tmp_path):
    """strongSwan's CSRs (a challenge password beside the SANs) are read re-encoded; the re-enroll
    check once read them with the strict parser, failed, and let such a request through unchecked."""
    pki = need("pki")
    curl = need("curl")
    base, token, root = est_server
    key = tmp_path / "key.pem"
    key.write_bytes(run(pki, "--gen", "--type", "rsa", "--size", "2048", "--outform", "pem").stdout)
    request = run(pki, "--req", "--in", str(key), "--dn", "CN=never-issued.example.test", "--san",
                  "never-issued.example.test", "--password", "unused", "--outform", "der").stdout
    with pytest.raises(ValueError):
        x509.load_der_x509_csr(request)  # out of DER order, as the comment above says
    (tmp_path / "req.b64").write_text(base64.b64encode(request).decode())
    answer = subprocess.run([curl, "-sS", "--cacert", str(root), "-u", f"any:{token}", "-H",
                             "Content-Type: application/pkcs10", "--data-binary", f"@{tmp_path / 'req.b64'}",
                             "-w", "\n%{http_code}", f"{base}/.well-known/est/simplereenroll"],
                            capture_output=True, text=True, timeout=60, env=client_env())
    assert answer.stdout.rstrip().endswith("403"), answer.stdout
    assert "Use simpleenroll for a new one" in answer.stdout
