"""Hardening: crash safety under SIGKILL, secrets kept out of logs, keys useless without the
passphrase, a bad-input campaign over every input surface (2,800 generated inputs: 300 sign-ins, 500 OCSP
bodies, 500 serials x 3 URLs, 500 API bodies)."""

from __future__ import annotations

import os
import re
import secrets
import signal
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
import requests
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ca_server import accounts
from ca_server.clock import utcnow

from .checks import serials_in_database_file, wait_until
from .conftest import PASSPHRASE, ApiClient, csrf_token, new_token
from .factories import cached_key, make_csr, pem
from .server import free_port, running_server

CAMPAIGN = settings(max_examples=500, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def test_a_sigkilled_server_loses_no_returned_certificate(instance, svc):
    """Kill the whole server (master and workers) with SIGKILL during a burst of issuance; after
    a restart every certificate a client received is stored, the database is intact and no serial
    was issued twice."""
    token = new_token(svc, "burst")
    headers = {"Authorization": f"Bearer {token}"}
    port = free_port()
    csrs = [pem(make_csr([f"b{i}.example.test"], key=cached_key("ec-p256", i % 4))) for i in range(400)]
    received: list[str] = []
    stop = threading.Event()
    log = open(instance / "kill.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "ca_server", "--instance", str(instance), "serve",
                             "--port", str(port), "--workers", "2"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env={**os.environ, "CA_SERVER_KEY_PASSPHRASE": PASSPHRASE})
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if requests.get(f"{base}/healthz", timeout=1).ok:
                break
        except requests.ConnectionError:
            time.sleep(0.1)

    def client(offset: int) -> None:
        session = requests.Session()
        for i in range(offset, len(csrs), 4):
            if stop.is_set():
                return
            try:
                r = session.post(f"{base}/api/v1/certificates", json={"csr": csrs[i]}, headers=headers, timeout=10)
            except requests.RequestException:
                return
            if r.status_code == 201:
                received.append(r.json()["serial"])

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    while len(received) < 40 and any(t.is_alive() for t in threads):
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    stop.set()
    for t in threads:
        t.join()
    log.close()
    assert len(received) >= 40

    with running_server(instance, workers=1) as base2:
        assert requests.get(f"{base2}/healthz", timeout=5).json()["status"] == "ok"
        for serial in received:
            response = requests.get(f"{base2}/api/v1/certificates/{serial}", headers=headers, timeout=5)
            assert response.status_code == 200, serial
    conn = sqlite3.connect(instance / "ca.sqlite3")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    count, distinct = conn.execute("SELECT count(*), count(DISTINCT serial) FROM certificates").fetchone()
    assert count == distinct and count >= len(received)
    audit_issues = conn.execute("SELECT count(*) FROM audit_log WHERE action = 'issue'").fetchone()[0]
    assert audit_issues == count  # no certificate without its audit row, no row without its certificate


def test_no_secrets_in_logs(instance, svc, tmp_path):
    password = "log-test-password-123"
    accounts.add_user(svc.store, "logger", password, is_admin=True, domains=(), allow_ip=True, email=None,
                      now=utcnow())
    token = new_token(svc, "log-token")
    with running_server(instance, workers=1) as base:
        s = requests.Session()
        page = s.get(f"{base}/login", timeout=5).text
        s.post(f"{base}/login", data={"username": "logger", "password": password, "csrf_token": csrf_token(page)},
               timeout=5)
        s.post(f"{base}/login", data={"username": "logger", "password": password + "x",
                                      "csrf_token": csrf_token(page)}, timeout=5)
        requests.post(f"{base}/api/v1/certificates", headers={"Authorization": f"Bearer {token}"}, timeout=10,
                      json={"csr": pem(make_csr(["log.example.test"]))})
        requests.post(f"{base}/api/v1/certificates", headers={"Authorization": "Bearer cas_wrongtoken"}, timeout=10,
                      json={})
    text = (instance / "serve.log").read_text()
    assert "POST /api/v1/certificates" in text  # the log is there and has the requests
    for secret in (password, token, PASSPHRASE, "PRIVATE KEY", "cas_wrongtoken"):
        assert secret not in text, secret
    assert svc.paths.secret_key.read_text() not in text


def test_ca_keys_are_useless_without_the_passphrase(instance):
    for name in ("root.key.pem", "intermediate.key.pem"):
        data = (instance / "keys" / name).read_bytes()
        assert b"ENCRYPTED" in data
        with pytest.raises(TypeError):
            load_pem_private_key(data, password=None)
        with pytest.raises(ValueError):
            load_pem_private_key(data, password=b"wrong passphrase")
        assert load_pem_private_key(data, password=PASSPHRASE.encode()) is not None
    result = subprocess.run([sys.executable, "-m", "ca_server", "--instance", str(instance), "issue", "-"],
                            input=pem(make_csr(["x.example.test"])), capture_output=True, text=True,
                            env={k: v for k, v in os.environ.items() if k != "CA_SERVER_KEY_PASSPHRASE"})
    assert result.returncode != 0 and "passphrase" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture
def lax_app(make_app):
    """Rate limits out of the way, so every generated input reaches the code under test."""
    return make_app(server={"sign_in_rate_limit": "1000000 per minute", "submission_rate_limit": "1000000 per minute"})


@settings(CAMPAIGN, max_examples=300)
@given(username=st.text(max_size=80), password=st.text(max_size=200), token=st.text(max_size=60))
def test_campaign_sign_in(lax_app, username, password, token):
    client = lax_app.test_client()
    page = client.get("/login").get_data(as_text=True)
    use = token if token.startswith("x") else csrf_token(page)
    response = client.post("/login", data={"username": username, "password": password, "csrf_token": use})
    assert response.status_code in (400, 401)


@CAMPAIGN
@given(body=st.binary(max_size=400))
def test_campaign_ocsp(app, body):
    response = app.test_client().post("/ocsp", data=body)
    assert response.status_code == 200 and response.mimetype == "application/ocsp-response"


@CAMPAIGN
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_campaign_serial_parsing(api, text):
    safe = re.sub(r"[/?#%]", "", text)
    for url in (f"/api/v1/certificates/{safe}", f"/certificates/{safe}", f"/certificates/{safe}.der"):
        response = api.get(url)
        assert response.status_code in (200, 404), (url, response.status_code)


@CAMPAIGN
@given(body=st.one_of(st.binary(max_size=3000), st.text(max_size=3000).map(str.encode)),
       content_type=st.sampled_from(["application/json", "application/pkcs10", "text/plain", "application/x-pem-file",
                                     "multipart/form-data", "", "application/xml"]))
def test_campaign_api_bodies(lax_app, body, content_type):
    api = ApiClient(lax_app.test_client(), new_token(lax_app.extensions["ca_server"], f"c{secrets.token_hex(8)}"))
    response = api.post("/api/v1/certificates", data=body, headers={"Content-Type": content_type})
    assert response.status_code < 500
    assert "error" in response.get_json() or response.status_code == 201


def test_certificates_issued_at_once_by_many_threads_are_each_stored_with_their_audit_row(svc):
    """Rows arriving together are written in one transaction (store/certificates.py GroupCommit);
    every caller returns only when its row is committed, and a taken serial fails only its own
    certificate."""
    from ca_server import issuance
    from ca_server.store import SerialTakenError

    records = [issuance.issue(svc.config, svc.store, svc.authority,
                              issuance.IssueRequest(csr=pem(make_csr([f"g{i}.example.test"]))), utcnow())
               for i in range(2)]
    taken = records[0]
    _back_out(svc, records)  # to insert them again below, from many threads at once
    svc.store.insert_certificate(taken)  # its serial is now taken
    fresh = [issuance.issue(svc.config, svc.store, svc.authority,
                            issuance.IssueRequest(csr=pem(make_csr([f"h{i}.example.test"]))), utcnow())
             for i in range(24)]
    _back_out(svc, fresh)
    todo = [*fresh, taken, records[1]]
    outcome: dict[str, object] = {}
    barrier = threading.Barrier(len(todo))

    def insert(record):
        store = svc.store
        barrier.wait()
        try:
            store.insert_certificate(record, audit={"at": utcnow(), "action": "issue", "actor": "test",
                                                    "serial": record.serial})
            outcome[record.serial] = "stored"
        except SerialTakenError as exc:
            outcome[record.serial] = exc

    threads = [threading.Thread(target=insert, args=(r,)) for r in todo]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert isinstance(outcome[taken.serial], SerialTakenError)
    stored = [r.serial for r in todo if outcome.get(r.serial) == "stored"]
    assert len(stored) == len(todo) - 1
    conn = sqlite3.connect(svc.store.path)
    for serial in stored:
        assert svc.store.get_certificate(serial) is not None
        assert conn.execute("SELECT count(*) FROM audit_log WHERE serial = ? AND actor = 'test'", [serial]).fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM audit_log WHERE serial = ? AND actor = 'test'",
                        [taken.serial]).fetchone() == (0,)


def _back_out(svc, records) -> None:
    with sqlite3.connect(svc.store.path) as conn:
        for r in records:
            conn.execute("DELETE FROM certificate_search WHERE serial = ?", [r.serial])
            conn.execute("DELETE FROM certificates WHERE serial = ?", [r.serial])


def test_the_checkpointer_copies_the_wal_into_the_database_file(svc):
    """A server worker leaves checkpoints to its Checkpointer thread, so no request waits for one:
    certificates reach the database file without any commit checkpointing."""
    from ca_server import issuance
    from ca_server.store.checkpoints import Checkpointer

    svc.store.checkpoint_in_background()
    assert svc.store.db.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 50_000
    issued = {issuance.issue(svc.config, svc.store, svc.authority,
                             issuance.IssueRequest(csr=pem(make_csr([f"wal{i}.example.test"]))), utcnow()).serial
              for i in range(5)}
    database = svc.paths.database
    assert not issued & serials_in_database_file(database)  # only in the WAL so far
    checkpointer = Checkpointer(database, interval=0.05).start()
    try:
        wait_until(lambda: issued <= serials_in_database_file(database), 10, step=0.05)
    finally:
        checkpointer.stop()
    assert issued <= serials_in_database_file(database)
    assert svc.store.integrity_check() == "ok"


def test_the_access_log_records_a_request_that_raised(tmp_path):
    """A request whose handler raised is logged as a 500 (Granian answers it so), and the error
    goes on to the server; an odd path never turns an answered request into an error."""
    from ca_server.server.access_log import AccessLog

    def broken(environ, start_response):
        raise RuntimeError("boom")

    log = tmp_path / "access.log"
    environ = {"REMOTE_ADDR": "10.0.0.9", "REQUEST_METHOD": "GET", "PATH_INFO": "/x y", "SERVER_PROTOCOL": "HTTP/1.1"}
    with open(log, "ab") as stream:
        access = AccessLog(broken, stream)
        with pytest.raises(RuntimeError, match="boom"):
            access(environ, lambda *args: None)
        access.close()
    assert re.fullmatch(r'10\.0\.0\.9 - "GET /x%20y HTTP/1\.1" 500 \d+\.\d{3}ms', log.read_text().splitlines()[-1])

    def fine(environ, start_response):
        start_response("200 OK", [])
        return [b"ok"]

    # A path no WSGI server should give (not latin-1) is still logged, and the answer still goes out;
    # so is a decoded "%" (quoted again, so the line reads unambiguously).
    with open(log, "ab") as stream:
        access = AccessLog(fine, stream)
        assert access({**environ, "PATH_INFO": "/\u20ac"}, lambda *args: None) == [b"ok"]
        assert access({**environ, "PATH_INFO": "/50%"}, lambda *args: None) == [b"ok"]
        access.close()
    lines = log.read_text().splitlines()
    assert re.fullmatch(r'10\.0\.0\.9 - "GET /%5Cu20ac HTTP/1\.1" 200 \d+\.\d{3}ms', lines[-2])
    assert re.fullmatch(r'10\.0\.0\.9 - "GET /50%25 HTTP/1\.1" 200 \d+\.\d{3}ms', lines[-1])


def test_access_log_lines_go_out_in_batches_in_order_and_none_is_lost(tmp_path):
    """Lines wait for the writer thread (at most FLUSH_SECONDS, or FLUSH_LINES of them), keep the
    order of the requests, and what waits is written when the log is closed."""
    from ca_server.server import access_log

    def fine(environ, start_response):
        start_response("204 No Content", [])
        return []

    log = tmp_path / "access.log"
    with open(log, "ab") as stream:
        access = access_log.AccessLog(fine, stream, flush_seconds=3600)  # only a full batch wakes the writer
        for n in range(access_log.FLUSH_LINES - 1):
            access({"REQUEST_METHOD": "GET", "PATH_INFO": f"/n/{n}"}, lambda *args: None)
        time.sleep(0.3)
        assert log.read_text() == ""  # a batch not yet full waits
        access({"REQUEST_METHOD": "GET", "PATH_INFO": "/full"}, lambda *args: None)
        wait_until(lambda: "/full" in log.read_text(), 10)
        for n in range(5):
            access({"REQUEST_METHOD": "POST", "PATH_INFO": f"/after/{n}"}, lambda *args: None)
        access.close()
    paths = [line.split(" ")[3] for line in log.read_text().splitlines()]
    assert paths == [f"/n/{n}" for n in range(access_log.FLUSH_LINES - 1)] + ["/full"] + [f"/after/{n}" for n in range(5)]
    with open(log, "ab") as stream:
        timed = access_log.AccessLog(fine, stream, flush_seconds=0.05)
        timed({"REQUEST_METHOD": "GET", "PATH_INFO": "/timed"}, lambda *args: None)
        wait_until(lambda: "/timed" in log.read_text(), 10)  # a lone line goes out within flush_seconds
        timed.close()


def test_a_stalled_standard_output_never_holds_a_request_and_the_log_stays_bounded(monkeypatch):
    """Standard output that takes nothing (a full pipe nobody reads, a stalled journald): requests
    go on, at most MAX_WAITING lines wait, the rest are counted, and the count is written when the
    output moves again."""
    import fcntl

    from ca_server.server import access_log

    def fine(environ, start_response):
        start_response("200 OK", [])
        return [b"ok"]

    monkeypatch.setattr(access_log, "MAX_WAITING", 50)
    read_end, write_end = os.pipe()
    flags = fcntl.fcntl(write_end, fcntl.F_GETFL)
    fcntl.fcntl(write_end, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    try:
        while True:
            os.write(write_end, b"x" * 4096)  # fill the pipe: the next write blocks
    except BlockingIOError:
        pass
    fcntl.fcntl(write_end, fcntl.F_SETFL, flags)
    stream = os.fdopen(write_end, "wb")
    access = access_log.AccessLog(fine, stream, flush_seconds=0.05)
    served = []

    def requests_():
        for n in range(600):
            served.append(access({"REQUEST_METHOD": "GET", "PATH_INFO": f"/r/{n}"}, lambda *args: None))

    client = threading.Thread(target=requests_)
    client.start()
    client.join(60)
    assert not client.is_alive() and len(served) == 600  # every request answered while the output was stuck
    assert len(access.pending) <= 50 and access.dropped > 0
    chunks = []
    reader = threading.Thread(target=lambda: chunks.extend(iter(lambda: os.read(read_end, 65536), b"")))
    reader.start()
    access.close()
    stream.close()
    reader.join(30)
    os.close(read_end)
    text = b"".join(chunks).replace(b"x", b"").decode()
    found = re.search(r"access log: (\d+) lines dropped while standard output took none", text)
    assert found, text[-500:]
    logged = len(re.findall(r'"GET /r/\d+ ', text))
    assert logged + int(found.group(1)) == 600  # each request is either a line or counted
