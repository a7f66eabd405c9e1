"""The real server: `ca-server serve` (Granian, two workers) over HTTP, end to end."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import threading
import time

import pytest
import requests
from cryptography import x509

from ca_server.server import reentrant_safe_signals

from .checks import assert_openssl_verifies, run_openssl, serials_in_database_file, wait_until
from .conftest import new_token
from .factories import make_csr, pem
from .server import running_server


@pytest.fixture
def server(instance, svc):
    token = new_token(svc, "serve-admin")
    with running_server(instance) as base:
        yield base, token


def test_serve_uses_a_production_wsgi_server(server):
    base, _ = server
    response = requests.get(f"{base}/healthz", timeout=5)
    assert response.json()["status"] == "ok"
    assert response.headers["Server"].startswith("granian")


def test_the_server_logs_one_line_per_request(server, instance):
    base, token = server
    issued = requests.post(f"{base}/api/v1/certificates", headers={"Authorization": f"Bearer {token}"}, timeout=30,
                           json={"csr": pem(make_csr(["logged.example.test"]))})
    assert issued.status_code == 201
    assert requests.get(f"{base}/api/v1/certificates/00ff", headers={"Authorization": f"Bearer {token}"},
                        timeout=5).status_code == 404
    assert requests.get(f"{base}/no/such%0Apage", timeout=5).status_code == 404
    # Each worker writes its lines in batches (server/access_log.py): the three requests may have
    # gone to two workers, whose batches come out up to FLUSH_SECONDS apart.
    wait_until(lambda: all(part in (instance / "serve.log").read_text()
                           for part in ("/no/such", '"POST /api/v1/certificates', "/api/v1/certificates/00ff")), 10)
    log = (instance / "serve.log").read_text()
    assert re.search(r'^127\.0\.0\.1 - "POST /api/v1/certificates HTTP/1\.1" 201 \d+\.\d{3}ms$', log, re.M), log[-2000:]
    assert re.search(r'^127\.0\.0\.1 - "GET /api/v1/certificates/00ff HTTP/1\.1" 404 ', log, re.M)
    # A newline in the URL stays inside its line.
    assert re.search(r'^127\.0\.0\.1 - "GET /no/such%0Apage HTTP/1\.1" 404 ', log, re.M)
    assert not any(line.startswith("page ") for line in log.splitlines())
    assert token not in log  # the bearer token is a header, never logged


def test_the_last_lines_are_written_when_the_server_stops(instance, svc):
    """Lines wait up to a fraction of a second for the access log's writer; a server stopped at
    once (SIGTERM) still writes them: the workers flush as they exit."""
    with running_server(instance, workers=1) as base:
        for n in range(3):
            assert requests.get(f"{base}/last/line/{n}", timeout=5).status_code == 404
    log = (instance / "serve.log").read_text()
    for n in range(3):
        assert re.search(rf'^127\.0\.0\.1 - "GET /last/line/{n} HTTP/1\.1" 404 ', log, re.M), log[-2000:]


def test_form_flow_of_the_acceptance_check(server, svc, tmp_path):
    """Sign in, paste the CUCM CSR, land on the detail page, download DER and PEM, verify both
    against /ca/chain.pem with openssl."""
    base, _ = server
    from ca_server import accounts
    from ca_server.clock import utcnow

    accounts.add_user(svc.store, "op", "op-password", is_admin=False, domains=("example.test",), allow_ip=False,
                      email=None, now=utcnow())
    s = requests.Session()
    login = s.get(f"{base}/login", timeout=5).text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', login).group(1)
    assert s.post(f"{base}/login", data={"username": "op", "password": "op-password", "csrf_token": token},
                  timeout=5).url.endswith("/")
    form = s.get(f"{base}/certificates/new", timeout=5).text
    token = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', form).group(1)
    csr = make_csr(["cucm1.example.test", "cucm-pub.example.test"])
    response = s.post(f"{base}/certificates/new", allow_redirects=False, timeout=10,
                      data={"csr": pem(csr), "profile": "server", "csrf_token": token})
    assert response.status_code == 303
    detail = s.get(base + response.headers["Location"], timeout=5)
    assert detail.status_code == 200 and "cucm-pub.example.test" in detail.text
    serial = response.headers["Location"].rsplit("/", 1)[1]
    chain = tmp_path / "chain.pem"
    chain.write_bytes(requests.get(f"{base}/ca/chain.pem", timeout=5).content)
    der_file = tmp_path / "leaf.der"
    der_file.write_bytes(s.get(f"{base}/certificates/{serial}.der", timeout=5).content)
    pem_file = tmp_path / "leaf.pem"
    pem_file.write_bytes(s.get(f"{base}/certificates/{serial}.pem", timeout=5).content)
    assert x509.load_der_x509_certificate(der_file.read_bytes()) == x509.load_pem_x509_certificate(
        pem_file.read_bytes())
    assert_openssl_verifies(pem_file, chain)
    converted = run_openssl("x509", "-inform", "DER", "-in", str(der_file), "-outform", "PEM")
    (tmp_path / "from-der.pem").write_bytes(converted.stdout)
    assert_openssl_verifies(tmp_path / "from-der.pem", chain)

    wildcard = s.post(f"{base}/certificates/new", timeout=10,
                      data={"csr": pem(make_csr(["*.example.test"])), "profile": "server", "csrf_token": token})
    assert wildcard.status_code == 422 and "wildcards are not allowed" in wildcard.text


def test_api_over_http_with_concurrent_requests(server, instance):
    base, token = server
    headers = {"Authorization": f"Bearer {token}"}
    from concurrent.futures import ThreadPoolExecutor

    def one(i):
        r = requests.post(f"{base}/api/v1/certificates", headers=headers, timeout=30,
                          json={"csr": pem(make_csr([f"c{i}.example.test"]))})
        return r.status_code, r.json().get("serial")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(40)))
    assert all(code == 201 for code, _ in results), results
    serials = [s for _, s in results]
    assert len(set(serials)) == 40
    conn = sqlite3.connect(instance / "ca.sqlite3")
    stored = {row[0] for row in conn.execute("SELECT serial FROM certificates")}
    assert set(serials) <= stored
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_chunked_bodies_are_read_whole_and_too_large_ones_get_413(server, instance):
    """A body sent with Transfer-Encoding: chunked (no Content-Length) is read like any other; one
    past [server] max_request_bytes is a 413, as with a declared length (Werkzeug alone cut it at
    the limit: a 400 "not valid JSON", or a CSR "of 1048576 bytes")."""
    import json

    base, token = server
    headers = {"Authorization": f"Bearer {token}"}

    def chunked(data: bytes):
        return (data[i:i + 65536] for i in range(0, len(data), 65536))  # a generator: requests sends it chunked

    body = json.dumps({"csr": pem(make_csr(["chunked.example.test"]))}).encode()
    ok = requests.post(f"{base}/api/v1/certificates", data=chunked(body), timeout=30,
                       headers={**headers, "Content-Type": "application/json"})
    assert ok.request.headers.get("Transfer-Encoding") == "chunked" and "Content-Length" not in ok.request.headers
    assert ok.status_code == 201, ok.text
    assert "DNS:chunked.example.test" in ok.json()["sans"]
    big = json.dumps({"csr": "A" * 1_200_000}).encode()
    for content_type in ("application/json", "application/pkcs10"):
        response = requests.post(f"{base}/api/v1/certificates", data=chunked(big), timeout=30,
                                 headers={**headers, "Content-Type": content_type})
        assert response.status_code == 413, (content_type, response.text)
        assert response.json()["error"]["code"] == "too_large"
        assert "larger than the 1048576 bytes" in response.json()["error"]["message"]


def test_the_scheduler_runs_once_however_many_workers(server, instance):

    wait_until(lambda: (instance / "serve.log").read_text().count("Started worker") >= 2, 10)
    log = (instance / "serve.log").read_text()
    assert log.count("Started worker") == 2, log
    assert log.count("scheduler started") == 1, log
    assert "reminders" in log and "crl-refresh" in log


def test_a_killed_worker_is_replaced_and_the_server_keeps_answering(server, instance):
    import os
    import signal

    base, token = server
    log = instance / "serve.log"
    wait_until(lambda: log.read_text().count("Started worker") >= 2, 10)
    pids = [int(p) for p in re.findall(r"Spawning worker-\d+ with PID: (\d+)", log.read_text())]
    assert len(pids) == 2, log.read_text()
    os.kill(pids[0], signal.SIGKILL)
    wait_until(lambda: log.read_text().count("Spawning worker") >= 3, 20, step=0.2)
    assert log.read_text().count("Spawning worker") == 3, log.read_text()
    for i in range(6):  # both workers (the survivor and the new one) answer; nothing is refused
        response = requests.post(f"{base}/api/v1/certificates", json={"csr": pem(make_csr([f"k{i}.example.test"]))},
                                 headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert response.status_code == 201, response.text


def test_the_scheduler_moves_to_the_replacement_of_its_worker(server, instance):
    """One worker runs the scheduler (the first to take its lock); the main process runs nothing
    but the workers, so forking a replacement never copies a thread caught inside SQLite. When the
    scheduler's worker dies, its replacement takes the lock and runs the scheduler."""
    import os
    import signal

    log = instance / "serve.log"
    started = r"\[(\d+)\] \[INFO\] ca_server.scheduler: scheduler started"
    wait_until(lambda: re.findall(started, log.read_text()), 10)
    holders = re.findall(started, log.read_text())
    workers = re.findall(r"Spawning worker-\d+ with PID: (\d+)", log.read_text())
    assert len(holders) == 1 and holders[0] in workers, log.read_text()
    os.kill(int(holders[0]), signal.SIGKILL)
    wait_until(lambda: len(re.findall(started, log.read_text())) >= 2, 20, step=0.2)
    holders = re.findall(started, log.read_text())
    assert len(holders) == 2 and holders[1] != holders[0], log.read_text()
    assert holders[1] in re.findall(r"Spawning worker-\d+ with PID: (\d+)", log.read_text())


def test_the_server_checkpoints_in_the_background(server, instance):
    """A thread in each worker copies the WAL into the database file every half second; no request
    pays for a checkpoint (the automatic one is only a 200 MB backstop)."""
    base, token = server
    headers = {"Authorization": f"Bearer {token}"}
    serials = {requests.post(f"{base}/api/v1/certificates", headers=headers, timeout=30,
                             json={"csr": pem(make_csr([f"ckpt{i}.example.test"]))}).json()["serial"]
               for i in range(10)}
    wait_until(lambda: serials <= serials_in_database_file(instance / "ca.sqlite3"), 10)
    assert serials <= serials_in_database_file(instance / "ca.sqlite3")


def test_a_signal_arriving_inside_the_previous_signals_handler_does_not_hang_the_server():
    """Granian's handler called Event.set() again inside the first call (a nested signal) and
    deadlocked on the event's lock: the README test's `make run` once never exited after SIGTERM.
    Here the nested signal arrives exactly there, in a thread so a deadlock shows as a timeout."""
    class FakeServer:
        interrupt_signal = reload_signal = False

    server = FakeServer()
    server.main_loop_interrupt = threading.Event()
    reentrant_safe_signals(server)
    original_set = server.main_loop_interrupt.set

    def set_with_a_signal_inside() -> None:
        with server.main_loop_interrupt._cond:  # what Event.set holds when the next signal lands
            server.signal_handler_reload()
        original_set()

    server.main_loop_interrupt.set = set_with_a_signal_inside
    worker = threading.Thread(target=server.signal_handler_interrupt, daemon=True)
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive(), "the nested signal deadlocked the handler"
    deadline = time.monotonic() + 10
    while not server.main_loop_interrupt.is_set() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.interrupt_signal and server.reload_signal and server.main_loop_interrupt.is_set()


def test_a_signal_arriving_while_the_serve_loop_holds_the_events_lock_does_not_hang_the_server():
    """The other place the main thread holds the event's lock: inside Event.wait() of the serve
    loop (a `make run` left running after SIGTERM showed it: the handler's Event.set() under the
    loop's own Condition). The handler must return at once and the loop still wake."""
    class FakeServer:
        interrupt_signal = reload_signal = False

    server = FakeServer()
    server.main_loop_interrupt = threading.Event()
    reentrant_safe_signals(server)

    def loop_with_a_signal_inside_wait() -> None:
        with server.main_loop_interrupt._cond:  # what Event.wait() holds around its waiting
            server.signal_handler_interrupt()  # the signal lands here, in the same thread
        server.main_loop_interrupt.wait(timeout=10)

    loop = threading.Thread(target=loop_with_a_signal_inside_wait, daemon=True)
    loop.start()
    loop.join(timeout=15)
    assert not loop.is_alive(), "the signal deadlocked the serve loop"
    assert server.interrupt_signal and server.main_loop_interrupt.is_set()


def test_serve_exits_when_sigterm_comes_twice(instance):
    """As under make or a supervisor that passes the signal on: the group and the process each get one."""
    procs: list = []
    with running_server(instance, procs=procs):
        proc = procs[0]
        os.kill(proc.pid, signal.SIGTERM)
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) is not None
