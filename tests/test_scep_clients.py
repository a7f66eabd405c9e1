"""SCEP clients no one here wrote, against a real `ca-server serve`: micromdm's scepclient (single
DES, SHA-1, whatever GetCACaps says) and strongSwan's pki (AES or 3DES, SHA-256, attributes out of
DER order, RenewalReq signed with the current certificate, CertPoll). Static and one-time challenges,
a challenge used twice, a wrong one; a named endpoint with its own domains, where a request outside
them waits for an admin and strongSwan polls it in. Every certificate is verified with openssl against root.pem and
found in the store; the audit log names the door, the cipher and the digest."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca_server import approvals
from ca_server.clock import utcnow
from ca_server.issuance import Requester
from ca_server.scep import enroll

from .checks import assert_openssl_verifies, need
from .server import running_server
from .test_acme_clients import client_env

STATIC = "static-challenge-for-tests"
PHONES = "the-phones-endpoint-challenge"
PHONES_ENDPOINT = """
[scep.endpoints.phones]
challenge_env = "CA_SERVER_SCEP_PHONES_CHALLENGE"
domains = ["phones.example.test"]
notify = ["voice-team@example.test"]
hold_out_of_scope = true
"""


@pytest.fixture
def scep_server(instance):
    config = instance / "config.toml"
    head, sep, tail = config.read_text().partition("[scep]")
    config.write_text(head + sep + tail.replace("enabled = false", "enabled = true", 1) + PHONES_ENDPOINT)
    with running_server(instance, env={"CA_SERVER_SCEP_CHALLENGE": STATIC,
                                       "CA_SERVER_SCEP_PHONES_CHALLENGE": PHONES}) as base:
        yield f"{base.replace('localhost', '127.0.0.1')}/scep"


def issued_by_scep(svc, instance: Path, pem_file: Path, operation: str, action: str = "issue") -> dict:
    assert_openssl_verifies(pem_file, instance / "ca" / "root.pem", instance / "ca" / "intermediate.pem")
    cert = x509.load_pem_x509_certificate(pem_file.read_bytes())
    serial = format(cert.serial_number, "x")
    assert svc.store.get_certificate(serial).certificate == cert
    (row,) = svc.store.audit_entries(action=action, serial=serial)
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


def strongswan(folder: Path, url: str):
    """pki, and the --cacert options after fetching the CA and RA certificates from `url`."""
    pki = need("pki")

    def run(*args: str) -> bytes:
        result = subprocess.run([pki, *args], capture_output=True, timeout=120, env=client_env())
        assert result.returncode == 0, (args, result.stdout[-1500:], result.stderr[-3000:])
        return result.stdout

    run("--scepca", "--url", url, "--caout", str(folder / "ca.der"), "--raout", str(folder / "ra.der"), "--force")
    return run, ["--cacert-enc", str(folder / "ra.der"), "--cacert-sig", str(folder / "ra.der"),
                 "--cacert", str(folder / "ca.der"), "--cacert", str(folder / "ca-1.der")]


def test_strongswan_pki_enrolls_with_aes_and_3des_and_renews(scep_server, svc, instance, tmp_path):
    run, ca = strongswan(tmp_path, scep_server)
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


def test_a_named_endpoint_has_its_own_challenges_domains_and_reminder_addresses(scep_server, svc, instance,
                                                                                 tmp_path):
    need("scepclient")
    phones = f"{scep_server}/phones"
    requests.get(f"{phones}?operation=GetCACert", timeout=30).raise_for_status()
    ok = scepclient(phones, tmp_path / "desk1", PHONES, "desk1.phones.example.test", instance)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    detail = issued_by_scep(svc, instance, tmp_path / "desk1" / "cert.pem", "PKCSReq")
    assert detail["endpoint"] == "phones"
    cert = x509.load_pem_x509_certificate((tmp_path / "desk1" / "cert.pem").read_bytes())
    record = svc.store.get_certificate(format(cert.serial_number, "x"))
    assert record.notify == ("voice-team@example.test",) and record.requester == "scep:phones"
    # each endpoint takes its own static challenge only
    crossed = scepclient(scep_server, tmp_path / "crossed", PHONES, "desk2.phones.example.test", instance)
    assert crossed.returncode != 0 and not (tmp_path / "crossed" / "cert.pem").exists()
    # a one-time challenge made for the endpoint works there, and not at /scep
    made = subprocess.run([sys.executable, "-m", "ca_server", "--instance", str(instance), "scep", "challenge",
                           "create", "--endpoint", "phones"], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0 and "/scep/phones" in made.stdout, made.stdout + made.stderr
    once = made.stdout.strip().splitlines()[-1]
    elsewhere = scepclient(scep_server, tmp_path / "elsewhere", once, "desk3.phones.example.test", instance)
    assert elsewhere.returncode != 0
    there = scepclient(phones, tmp_path / "there", once, "desk3.phones.example.test", instance)
    assert there.returncode == 0, there.stdout + there.stderr
    unknown = requests.get(f"{scep_server}/nowhere?operation=GetCACaps", timeout=30)
    assert unknown.status_code == 404 and "/scep/phones" in unknown.text


def test_outside_its_domains_a_request_waits_for_an_admin_and_strongswan_polls_it_in(scep_server, svc, instance,
                                                                                     tmp_path):
    phones = f"{scep_server}/phones"
    run, ca = strongswan(tmp_path, phones)
    admin = Requester(name="alice", kind="user", is_admin=True)
    outcomes = {}
    for name, decide in (("vpn-held", "approve"), ("vpn-refused", "reject")):
        key = tmp_path / f"{name}-key.pem"
        key.write_bytes(run("--gen", "--type", "rsa", "--size", "2048", "--outform", "pem"))
        client = subprocess.Popen(
            [need("pki"), "--scep", "--url", phones, "--in", str(key), "--dn", f"CN={name}.example.test",
             "--san", f"{name}.example.test", "--password", PHONES, *ca, "--cipher", "aes", "--digest", "sha256",
             "--interval", "1", "--maxpolltime", "90", "--outform", "pem"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=client_env())
        try:
            deadline = time.monotonic() + 60
            while not (held := svc.store.list_requests(status="pending")):
                assert client.poll() is None and time.monotonic() < deadline, client.communicate()
                time.sleep(0.2)
            (row,) = held
            assert row["requester"] == "scep:phones"
            time.sleep(2.5)  # strongSwan polls a few times and is told PENDING
            assert client.poll() is None, client.communicate()
            if decide == "approve":
                approvals.approve(svc.config, svc.secrets, svc.store, svc.authority, row["id"], admin, utcnow())
            else:
                approvals.reject(svc.config, svc.secrets, svc.store, row["id"], admin, "not a phone", utcnow())
            outcomes[name] = (client.communicate(timeout=60), client.returncode)
        finally:
            client.kill()
    (out, _err), code = outcomes["vpn-held"]
    assert code == 0, _err[-2000:]
    (tmp_path / "held.pem").write_bytes(out)
    issued_by_scep_after_approval = svc.store.audit_entries(action="approve")
    assert len(issued_by_scep_after_approval) == 1
    assert_openssl_verifies(tmp_path / "held.pem", instance / "ca" / "root.pem", instance / "ca" / "intermediate.pem")
    cert = x509.load_pem_x509_certificate(out)
    assert cert.subject.rfc4514_string() == "CN=vpn-held.example.test"
    assert svc.store.get_certificate(format(cert.serial_number, "x")).certificate == cert
    (_out, _err), code = outcomes["vpn-refused"]
    assert code != 0 and not _out.strip()
    refusals = json.dumps([e["detail"] for e in svc.store.audit_entries(action="refuse")])
    assert "was rejected: not a phone" in refusals


@pytest.fixture
def getcert(tmp_path):
    """certmonger on a D-Bus session bus of this test's own, with its own HOME; yields `getcert`."""
    daemon_path, getcert_path, dbus = need("certmonger"), need("getcert"), need("dbus-daemon")
    home = tmp_path / "certmonger-home"
    home.mkdir()
    # its state in folders of this test's own (in session mode it would use ~/.config of the user the
    # passwd file names, whatever HOME says); the bus starts certmonger on demand: it must see them too
    folders = {f"CERTMONGER_{name}": str(home / name.lower()) for name in
               ("CONFIG_DIR", "REQUESTS_DIR", "CAS_DIR", "LOCAL_CA_DIR", "TMPDIR")}
    for folder in folders.values():
        Path(folder).mkdir()
    env = client_env(HOME=str(home), **folders)
    bus = subprocess.Popen([dbus, "--session", "--nofork", "--print-address=1"], stdout=subprocess.PIPE, text=True,
                           env=env)
    env["DBUS_SESSION_BUS_ADDRESS"] = bus.stdout.readline().strip()
    log = open(tmp_path / "certmonger.log", "wb")
    daemon = subprocess.Popen([daemon_path, "-s", "-n", "-d", "2"], env=env, stdout=log, stderr=subprocess.STDOUT)
    time.sleep(1)  # its bus name taken before getcert asks the bus, which would start another

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([getcert_path, args[0], "-s", *args[1:]], env=env, capture_output=True, text=True,
                              timeout=120)

    deadline = time.monotonic() + 30
    while run("list-cas").returncode != 0:
        assert time.monotonic() < deadline, (tmp_path / "certmonger.log").read_text()[-2000:]
        time.sleep(0.2)
    yield run
    for proc in (daemon, bus):
        proc.terminate()
        proc.wait(timeout=30)
    log.close()


def test_certmonger_enrolls_and_renews(scep_server, svc, instance, tmp_path, getcert):
    """`getcert add-scep-ca`, `getcert request` and `getcert resubmit` as the README writes them.
    (certmonger's own timer renews when a ttl of its certmonger.conf is crossed; no setting made it
    fire within a test's minutes, so the renewal is asked for here.)"""
    requests.get(f"{scep_server}?operation=GetCACert", timeout=30).raise_for_status()  # the RA exists now
    ca = instance / "ca"
    added = getcert("add-scep-ca", "-c", "ca-server", "-u", scep_server, "-R", str(ca / "root.pem"),
                    "-I", str(ca / "intermediate.pem"), "-r", str(instance / "scep" / "ra.pem"))
    assert added.returncode == 0, added.stdout + added.stderr
    key, cert = tmp_path / "cm1-key.pem", tmp_path / "cm1.pem"
    requested = getcert("request", "-c", "ca-server", "-k", str(key), "-f", str(cert), "-N", "CN=cm1.example.test",
                        "-D", "cm1.example.test", "-L", STATIC, "-w")
    assert requested.returncode == 0 and cert.exists(), requested.stdout + requested.stderr
    first = x509.load_pem_x509_certificate(cert.read_bytes())
    issued_by_scep(svc, instance, cert, "PKCSReq")
    request_id = getcert("list").stdout.split("Request ID '", 1)[1].split("'", 1)[0]
    resubmitted = getcert("resubmit", "-i", request_id, "-w")
    assert resubmitted.returncode == 0, resubmitted.stdout + resubmitted.stderr
    renewed = x509.load_pem_x509_certificate(cert.read_bytes())
    assert renewed.serial_number != first.serial_number
    assert renewed.public_key() == first.public_key()  # certmonger keeps the key, as it does by default
    issued_by_scep(svc, instance, cert, "PKCSReq")
