"""SCEP clients no one here wrote, against a real `ca-server serve`: micromdm's scepclient (single
DES, SHA-1, whatever GetCACaps says) and strongSwan's pki (AES or 3DES, SHA-256, attributes out of
DER order, RenewalReq signed with the current certificate). Static and one-time challenges, a
challenge used twice, a wrong one. Every certificate is verified with openssl against root.pem and
found in the store; the audit log names the door, the cipher and the digest."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca_server.clock import utcnow
from ca_server.scep import enroll

from .checks import assert_openssl_verifies, need
from .server import running_server
from .test_acme_clients import client_env

STATIC = "static-challenge-for-tests"


@pytest.fixture
def scep_server(instance):
    config = instance / "config.toml"
    head, sep, tail = config.read_text().partition("[scep]")
    config.write_text(head + sep + tail.replace("enabled = false", "enabled = true", 1))
    with running_server(instance, env={"CA_SERVER_SCEP_CHALLENGE": STATIC}) as base:
        yield f"{base.replace('localhost', '127.0.0.1')}/scep"


def issued_by_scep(svc, instance: Path, pem_file: Path, operation: str) -> dict:
    assert_openssl_verifies(pem_file, instance / "ca" / "root.pem", instance / "ca" / "intermediate.pem")
    cert = x509.load_pem_x509_certificate(pem_file.read_bytes())
    serial = format(cert.serial_number, "x")
    assert svc.store.get_certificate(serial).certificate == cert
    (row,) = svc.store.audit_entries(action="issue", serial=serial)
    detail = row["detail"] if isinstance(row["detail"], dict) else json.loads(row["detail"])
    assert (detail["door"], detail["operation"]) == ("scep", operation)
    return detail


def scepclient(url: str, folder: Path, challenge: str, cn: str, instance: Path) -> subprocess.CompletedProcess:
    folder.mkdir()
    ra = x509.load_pem_x509_certificate((instance / "scep" / "ra.pem").read_bytes())
    fingerprint = hashlib.sha256(ra.public_bytes(Encoding.DER)).hexdigest()
    return subprocess.run([need("scepclient"), "-server-url", url, "-private-key", str(folder / "key.pem"),
                           "-certificate", str(folder / "cert.pem"), "-challenge", challenge, "-cn", cn,
                           "-ca-fingerprint", fingerprint], capture_output=True, text=True, timeout=120,
                          env=client_env())


def test_scepclient_with_the_static_and_a_one_time_challenge(scep_server, svc, instance, tmp_path):
    need("scepclient")
    requests.get(f"{scep_server}?operation=GetCACert", timeout=30).raise_for_status()  # the RA exists now
    ok = scepclient(scep_server, tmp_path / "static", STATIC, "printer1.example.test", instance)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    detail = issued_by_scep(svc, instance, tmp_path / "static" / "cert.pem", "PKCSReq")
    assert (detail["cipher"], detail["digest"]) == ("des", "sha1")  # what this client always sends

    once = enroll.create_challenge(svc.store, utcnow(), hours=1)
    first = scepclient(scep_server, tmp_path / "once", once, "phone1.example.test", instance)
    assert first.returncode == 0, first.stdout + first.stderr
    issued_by_scep(svc, instance, tmp_path / "once" / "cert.pem", "PKCSReq")
    second = scepclient(scep_server, tmp_path / "twice", once, "phone2.example.test", instance)
    assert second.returncode != 0 and "badRequest" in second.stdout + second.stderr
    wrong = scepclient(scep_server, tmp_path / "wrong", "not-the-challenge", "phone3.example.test", instance)
    assert wrong.returncode != 0 and not (tmp_path / "wrong" / "cert.pem").exists()
    reasons = [e["detail"] for e in svc.store.audit_entries(action="refuse")]
    text = json.dumps(reasons)
    assert text.count("wrong, was used already or has expired") == 2, text


def test_strongswan_pki_enrolls_with_aes_and_3des_and_renews(scep_server, svc, instance, tmp_path):
    pki = need("pki")

    def run(*args: str) -> bytes:
        result = subprocess.run([pki, *args], capture_output=True, timeout=120, env=client_env())
        assert result.returncode == 0, (args, result.stdout[-1500:], result.stderr[-3000:])
        return result.stdout

    run("--scepca", "--url", scep_server, "--caout", str(tmp_path / "ca.der"), "--raout", str(tmp_path / "ra.der"),
        "--force")
    ca = ["--cacert-enc", str(tmp_path / "ra.der"), "--cacert-sig", str(tmp_path / "ra.der"),
          "--cacert", str(tmp_path / "ca.der"), "--cacert", str(tmp_path / "ca-1.der")]
    for cipher, expected in (("aes", "aes128_cbc"), ("des3", "tripledes_3key")):
        key = tmp_path / f"{cipher}-key.pem"
        key.write_bytes(run("--gen", "--type", "rsa", "--size", "2048", "--outform", "pem"))
        cert = tmp_path / f"{cipher}.pem"
        cert.write_bytes(run("--scep", "--url", scep_server, "--in", str(key), "--dn", f"CN=vpn-{cipher}.example.test",
                             "--san", f"vpn-{cipher}.example.test", "--password", STATIC, *ca, "--cipher", cipher,
                             "--digest", "sha256", "--interval", "2", "--maxpolltime", "10", "--outform", "pem"))
        detail = issued_by_scep(svc, instance, cert, "PKCSReq")
        assert (detail["cipher"], detail["digest"]) == (expected, "sha256")
    new_key = tmp_path / "renewed-key.pem"
    new_key.write_bytes(run("--gen", "--type", "rsa", "--size", "2048", "--outform", "pem"))
    renewed = tmp_path / "renewed.pem"
    renewed.write_bytes(run("--scep", "--url", scep_server, "--in", str(new_key), "--dn", "CN=vpn-aes.example.test",
                            "--san", "vpn-aes.example.test", *ca, "--cert", str(tmp_path / "aes.pem"),
                            "--key", str(tmp_path / "aes-key.pem"), "--digest", "sha256", "--interval", "2",
                            "--maxpolltime", "10", "--outform", "pem"))
    old = x509.load_pem_x509_certificate((tmp_path / "aes.pem").read_bytes())
    assert issued_by_scep(svc, instance, renewed, "RenewalReq")["renews"] == format(old.serial_number, "x")


def test_a_client_speaking_http_1_0_without_a_host_header_is_answered(scep_server):
    """Some SCEP clients (OpenXPKI's notes) send HTTP/1.0 with no Host header."""
    address = scep_server.split("//", 1)[1].split("/", 1)[0]
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as conn:
        conn.sendall(b"GET /scep?operation=GetCACaps HTTP/1.0\r\n\r\n")
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 200") or answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert b"POSTPKIOperation" in answer
