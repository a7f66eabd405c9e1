"""Several `ca-server serve` nodes on one PostgreSQL database (issue 17), each started as the
README says: the same CA (a copy of the instance folder), the same [database] url. Real servers,
a real PostgreSQL, new connections per request, 16 client threads."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID

from ca_server.cli import main
from ca_server.config import Secrets
from ca_server.issuance import issuance_audit
from ca_server.models import CertificateRecord
from ca_server.pki.keys import describe_public_key, spki_sha256
from ca_server.pki.serials import new_serial, serial_hex
from ca_server.services import open_services

from .conftest import PASSPHRASE, new_token, use_postgresql
from .factories import make_csr, pem
from .pg_server import PgServer
from .server import running_server
from .smtp import SMTPServer, write_config


def second_node(instance: Path, tmp_path: Path) -> Path:
    """Another machine's instance folder: a copy of the first (config, CA keys, secret key)."""
    other = tmp_path / "node-b"
    shutil.copytree(instance, other, ignore=shutil.ignore_patterns("serve.log", "metrics", "*.sqlite3*"))
    return other


def issue(base: str, token: str, name: str, **fields) -> requests.Response:
    return requests.post(f"{base}/api/v1/certificates", json={"csr": pem(make_csr([name])), **fields},
                         headers={"Authorization": f"Bearer {token}"}, timeout=60)


def api_get(base: str, path: str, token: str) -> dict:
    return requests.get(f"{base}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()


def ocsp_status(base: str, cert: x509.Certificate, issuer: x509.Certificate) -> ocsp.OCSPCertStatus:
    request = ocsp.OCSPRequestBuilder().add_certificate(cert, issuer, hashes.SHA1()).build()
    answer = requests.post(f"{base}/ocsp", data=request.public_bytes(Encoding.DER),
                           headers={"Content-Type": "application/ocsp-request"}, timeout=10)
    return ocsp.load_der_ocsp_response(answer.content).certificate_status


def crl_of(base: str) -> x509.CertificateRevocationList:
    return x509.load_der_x509_crl(requests.get(f"{base}/crl/intermediate.crl", timeout=10).content)


def burst(bases: list[str], token: str, count: int, tag: str, threads: int = 16, on_progress=None) -> list[tuple]:
    """`count` issuances over `bases` in turn from `threads` threads, each on a new connection:
    (base, status, serial or None, PEM or None, headers, body) per attempt."""
    def one(i: int):
        base = bases[i % len(bases)]
        try:
            r = issue(base, token, f"{tag}{i}.example.test")
        except requests.RequestException as exc:
            return (base, None, None, None, {}, str(exc))
        body = r.json() if r.headers.get("Content-Type", "").startswith("application/json") else {}
        if on_progress:
            on_progress(i)
        return (base, r.status_code, body.get("serial"), body.get("certificate"), r.headers, body)

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, range(count)))


def assert_acknowledged_are_stored(svc, results) -> int:
    """Every certificate a client received (201) is in the database, byte for byte."""
    acknowledged = [(serial, cert) for _, status, serial, cert, _, _ in results if status == 201]
    for serial, cert in acknowledged:
        record = svc.store.get_certificate(serial)
        assert record is not None, f"{serial} was returned to a client but is not stored"
        assert record.der == x509.load_pem_x509_certificate(cert.encode()).public_bytes(Encoding.DER)
    return len(acknowledged)


@pytest.mark.postgresql_only
def test_two_nodes_issue_revoke_and_answer_as_one(instance, tmp_path, svc):
    token = new_token(svc)
    node_b = second_node(instance, tmp_path)
    with running_server(instance) as a, running_server(node_b) as b:
        results = burst([a, b], token, 500, "spread")
        assert [r[1] for r in results] == [201] * 500, {r[1] for r in results}
        serials = [r[2] for r in results]
        assert len(set(serials)) == 500
        assert {r[0] for r in results} == {a, b}
        for serial in serials[:250:5] + serials[250::5]:  # every certificate readable from both nodes
            for base in (a, b):
                assert api_get(base, f"/api/v1/certificates/{serial}", token)["serial"] == serial
        assert svc.store.count_certificates(_all(), dt.datetime.now(dt.UTC)) == 500

        # A revocation on one node is what the other's OCSP and CRL say next, cached answers or not.
        intermediate = svc.authority.intermediate
        crl_numbers = [crl_of(a).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number]
        for i, (revoker, asked) in enumerate([(a, b), (b, a), (a, b), (b, a)]):
            cert = x509.load_pem_x509_certificate(results[i][3].encode())
            assert ocsp_status(asked, cert, intermediate) == ocsp.OCSPCertStatus.GOOD  # now cached there
            answer = requests.post(f"{revoker}/api/v1/certificates/{results[i][2]}/revoke",
                                   json={"reason": "keyCompromise"}, headers={"Authorization": f"Bearer {token}"},
                                   timeout=10)
            assert answer.status_code == 200 and answer.json()["status"] == "revoked"
            assert ocsp_status(asked, cert, intermediate) == ocsp.OCSPCertStatus.REVOKED
            crl = crl_of(asked)
            assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
            crl_numbers.append(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
        assert crl_numbers == sorted(set(crl_numbers)), f"CRL numbers must strictly increase: {crl_numbers}"


def _all():
    from ca_server.store import CertificateFilter

    return CertificateFilter()


@pytest.mark.postgresql_only
def test_both_nodes_remind_at_once_and_each_reminder_is_mailed_once(instance, tmp_path, svc):
    smtp = SMTPServer().start()
    try:
        write_config(instance, mail={"host": "127.0.0.1", "port": smtp.port, "security": "none"})
        node_b = second_node(instance, tmp_path)
        token = new_token(svc)
        with running_server(instance) as a:
            for i in range(12):
                r = issue(a, token, f"due{i}.example.test", validity_days=5, notify=[f"owner{i}@example.test"])
                assert r.status_code == 201, r.text
        env = {**os.environ, "CA_SERVER_KEY_PASSPHRASE": PASSPHRASE}
        runs = [subprocess.Popen([sys.executable, "-m", "ca_server", "--instance", str(folder), "remind"],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for folder in
                (instance, node_b, instance, node_b)]
        outputs = [run.communicate(timeout=120)[0].decode() for run in runs]
        assert all(run.returncode == 0 for run in runs), outputs
        recipients = sorted(rcpt for _, rcpts in smtp.inbox.envelopes for rcpt in rcpts)
        assert recipients == sorted(f"owner{i}@example.test" for i in range(12)), outputs

        # The schedulers' own reminder job (with its lease), ticking at once on both nodes.
        smtp.inbox.clear()
        with running_server(instance) as a:
            for i in range(6):
                assert issue(a, token, f"tick{i}.example.test", validity_days=5,
                             notify=[f"tick{i}@example.test"]).status_code == 201
        tick = ("import sys; from ca_server.scheduler import build_scheduler; from ca_server.services import "
                "open_services; svc = open_services(sys.argv[1]); build_scheduler(svc).get_job('reminders').func(svc)")
        ticks = [subprocess.Popen([sys.executable, "-c", tick, str(folder)], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT) for folder in (instance, node_b)]
        outputs = [t.communicate(timeout=120)[0].decode() for t in ticks]
        assert all(t.returncode == 0 for t in ticks), outputs
        recipients = sorted(rcpt for _, rcpts in smtp.inbox.envelopes for rcpt in rcpts)
        assert recipients == sorted(f"tick{i}@example.test" for i in range(6)), outputs
    finally:
        smtp.stop()


@pytest.mark.postgresql_only
def test_a_node_killed_mid_burst_loses_no_certificate_and_the_other_goes_on(instance, tmp_path, svc):
    token = new_token(svc)
    node_b = second_node(instance, tmp_path)
    procs: list = []
    killed = threading.Event()
    with running_server(instance, procs=procs) as a, running_server(node_b) as b:
        def kill_a_after_some(i):
            if i >= 120 and not killed.is_set():
                killed.set()
                os.killpg(procs[0].pid, signal.SIGKILL)
        results = burst([a, b], token, 400, "killed", on_progress=kill_a_after_some)
        assert killed.is_set()
        stored = assert_acknowledged_are_stored(svc, results)
        after_kill_on_b = [r for r in results[200:] if r[0] == b]
        assert after_kill_on_b and all(r[1] == 201 for r in after_kill_on_b)
        assert all(r[1] in (201, None) for r in results), {r[1] for r in results}
        assert stored >= 200 + len(after_kill_on_b) // 2


@pytest.mark.postgresql_only
def test_the_database_going_away_gives_503s_then_the_nodes_recover_by_themselves(instance, tmp_path, svc):
    pg = PgServer()  # its own server: this test stops it
    try:
        url = pg.new_database()
        write_config(instance, database={"url": url}, server={"submission_rate_limit": "100000 per minute"})
        own = open_services(instance)
        token = new_token(own)
        node_b = second_node(instance, tmp_path)
        results: list = []
        stop = threading.Event()
        with running_server(instance) as a, running_server(node_b) as b:
            def clients(n):
                i = 0
                while not stop.is_set():
                    results.extend(burst([a, b], token, 4, f"outage{n}-{i}-", threads=2))
                    i += 1
            workers = [threading.Thread(target=clients, args=(n,)) for n in range(6)]
            for w in workers:
                w.start()
            time.sleep(1.5)
            pg.stop("immediate")
            down_at = len(results)
            time.sleep(3)
            # OCSP while the database is away: tryLater (RFC 6960 4.2.1), not a possibly stale "good".
            issued = next(r for r in results if r[1] == 201)
            request = ocsp.OCSPRequestBuilder().add_certificate(
                x509.load_pem_x509_certificate(issued[3].encode()), own.authority.intermediate, hashes.SHA1()).build()
            answer = requests.post(f"{b}/ocsp", data=request.public_bytes(Encoding.DER), timeout=10,
                                   headers={"Content-Type": "application/ocsp-request"})
            assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
            assert ocsp.load_der_ocsp_response(answer.content).response_status == ocsp.OCSPResponseStatus.TRY_LATER
            during = len(results)
            pg.start()
            time.sleep(4)
            stop.set()
            for w in workers:
                w.join()
            health = [requests.get(f"{base}/healthz", timeout=10).status_code for base in (a, b)]
        statuses = [r[1] for r in results]
        assert 500 not in statuses and set(statuses) <= {201, 503}, set(statuses)
        refused = [r for r in results[down_at:during] if r[1] == 503]
        assert refused, "requests while the database was down should have been answered 503"
        odd = [r[4:] for r in refused if not (r[4].get("Retry-After") and r[5]["error"]["code"] == "store_unavailable")]
        assert not odd, odd[:3]
        assert any(r[1] == 201 for r in results[during + 20:]), "the nodes did not recover"
        assert health == [200, 200]
        assert assert_acknowledged_are_stored(own, results) == statuses.count(201)
        own.store.close()
    finally:
        pg.destroy()


def signed_records(svc, count: int, now: dt.datetime) -> list[CertificateRecord]:
    """`count` real certificates signed by the instance's intermediate (a store to copy)."""
    authority = svc.authority
    keys = [ec.generate_private_key(ec.SECP256R1()).public_key() for _ in range(8)]
    out = []
    for i in range(count):
        public = keys[i % len(keys)]
        host = f"copy{i}.example.test"
        serial = new_serial()
        start = (now - dt.timedelta(days=1)).replace(microsecond=0)
        end = (now + dt.timedelta(days=30 + i % 300)).replace(microsecond=0)
        cert = authority.leaf_template.sign(subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]),
                                            public_key=public, sans=[x509.DNSName(host)], ekus=("serverAuth",),
                                            serial=serial, not_before=start, not_after=end)
        der = cert.public_bytes(Encoding.DER)
        out.append(CertificateRecord(
            serial=serial_hex(serial), issued_at=start, not_before=start, not_after=end, subject=f"CN={host}",
            issuer=authority.intermediate.subject.rfc4514_string(), common_name=host, sans=(f"DNS:{host}",),
            profile="server", key_label=describe_public_key(public).label,
            fingerprint_sha256=hashlib.sha256(der).hexdigest(), fingerprint_sha1=hashlib.sha1(der).hexdigest(),
            spki_sha256=spki_sha256(public), der=der, notify=("owner@example.test",), requester="token:copy"))
    return out


@pytest.mark.sqlite_only
def test_db_copy_moves_a_store_of_10000_certificates_and_the_server_serves_them(instance, svc, pg_server):
    now = dt.datetime.now(dt.UTC)
    records = signed_records(svc, 10_000, now)
    svc.store.import_certificates(records, audits=[issuance_audit(r, "127.0.0.1") for r in records[:500]])
    revoked = records[7].serial
    svc.store.revoke_certificate(revoked, now, "superseded")
    new_token(svc, "copied-token")
    url = pg_server.new_database()

    copied = CliRunner().invoke(main, ["db", "copy", "--to", url])
    assert copied.exit_code == 0, copied.output
    assert "certificates: 10000 rows, 10000 in the target" in copied.output
    assert "tokens: 1 rows, 1 in the target" in copied.output and "MISMATCH" not in copied.output
    again = CliRunner().invoke(main, ["db", "copy", "--to", url])
    assert again.exit_code == 1 and "already holds rows" in again.output and "--resume" in again.output
    resumed = CliRunner().invoke(main, ["db", "copy", "--to", url, "--resume"])
    assert resumed.exit_code == 0 and "certificates: 10000 rows, 10000 in the target" in resumed.output

    use_postgresql(instance, url)
    token = new_token(open_services(instance), "after-copy")
    with running_server(instance) as base:
        for record in records[::997]:
            got = api_get(base, f"/api/v1/certificates/{record.serial}", token)
            assert got["serial"] == record.serial and got["fingerprint_sha256"] == record.fingerprint_sha256
        assert api_get(base, f"/api/v1/certificates/{revoked}", token)["status"] == "revoked"
        listed = api_get(base, "/api/v1/certificates?q=copy9999.example.test", token)
        assert [c["serial"] for c in listed["certificates"]] == [records[9999].serial]
        page = api_get(base, "/api/v1/certificates?limit=1000", token)
        assert len(page["certificates"]) == 1000 and page["next"]
        token_pg = open_services(instance, secrets=Secrets(key_passphrase=PASSPHRASE)).store
        assert token_pg.kind == "postgresql" and token_pg.get_token("copied-token") is not None
        r = issue(base, token, "after-copy.example.test")
        assert r.status_code == 201, r.text


@pytest.mark.postgresql_only
def test_a_node_set_up_with_its_own_init_is_refused_by_the_database(instance, tmp_path, svc):
    """Node B must be a copy of node A's folder: an instance with another CA (its own `init`)
    pointed at the same database stops with words, before it signs anything into it."""
    from ca_server.ca.authority import InstancePaths, init_instance
    from ca_server.errors import InstanceError

    other = tmp_path / "other"
    other.mkdir()
    (other / "config.toml").write_text((instance / "config.toml").read_text())
    init_instance(InstancePaths(other), Secrets(key_passphrase=PASSPHRASE), dt.datetime.now(dt.UTC))
    with pytest.raises(InstanceError, match="belongs to another CA") as refused:
        open_services(other, secrets=Secrets(key_passphrase=PASSPHRASE))
    assert "copy of the first node's instance folder" in refused.value.message
    started = subprocess.run([sys.executable, "-m", "ca_server", "--instance", str(other), "list"],
                             capture_output=True, text=True, env={**os.environ, "CA_SERVER_KEY_PASSPHRASE": PASSPHRASE})
    assert started.returncode == 1 and "belongs to another CA" in started.stderr


def test_db_copy_to_a_database_it_cannot_reach_names_it_and_why(svc):
    """It said "The certificate database is unavailable right now; try again in 5 seconds", the
    server's words, as if this instance's own store were down."""
    from .server import free_port

    url = f"postgresql://ca:secret-pw@127.0.0.1:{free_port()}/ca"
    done = CliRunner().invoke(main, ["db", "copy", "--to", url])
    assert done.exit_code == 1, done.output
    assert "Cannot reach the PostgreSQL database postgresql://ca:***@127.0.0.1:" in done.output, done.output
    assert "Connection refused" in done.output and "secret-pw" not in done.output and "try again" not in done.output
    # An instance whose [database] url points where nothing listens: each command says so, not "try again in 5 s".
    instance = svc.paths.root
    use_postgresql(instance, url.replace(":secret-pw", ""))
    for args in (["list"], ["backup"]):
        down = CliRunner().invoke(main, ["--instance", str(instance), *args])
        assert down.exit_code == 1 and "The certificate database cannot be reached: connection failed" in down.output, \
            down.output
        assert "Connection refused" in down.output and "try again" not in down.output


def test_db_copy_takes_every_table_but_runtime_state(svc):
    """A table added to the schema and forgotten in store/copy.py would be left behind by `db copy`
    (the one-time SCEP challenges once were)."""
    from ca_server.store.copy import TABLES

    runtime = {"leases", "rate_counters", "acme_nonces", "_ca_server_migrations", "_sqlite_migrations",
               "certificate_names", "certificate_search_data", "certificate_search_idx",
               "certificate_search_docsize", "certificate_search_config"}
    tables = {row["name"] for row in svc.store.db.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables - runtime - set(TABLES) == set()
