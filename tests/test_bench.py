"""`make bench` is not part of the tests (it takes minutes); its scale part is run here small, so a
change to the store that breaks it, or a fixture that leaves out what a real store holds, shows."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _scale(count: int, cache: Path) -> tuple[dict, str]:
    run = subprocess.run([sys.executable, "-m", "benchmarks.scale", str(count), "--cache", str(cache)],
                         cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout), run.stderr


def test_the_scale_benchmark_measures_a_store_like_a_real_one(tmp_path):
    # A fixture cached by an older version of the benchmark (no audit rows) is built again.
    stale = tmp_path / "scale-2000"
    stale.mkdir()
    (stale / "COMPLETE").write_text("2000")
    result, progress = _scale(2000, tmp_path)
    assert "rebuilding" in progress

    assert result["certificates"] == 2000
    assert result["reminders_due"] == 20  # 1% expire within the reminder window
    with sqlite3.connect(stale / "ca.sqlite3") as db:
        unaudited = db.execute("SELECT count(*) FROM certificates c WHERE NOT EXISTS (SELECT 1 FROM audit_log a"
                               " WHERE a.serial = c.serial AND a.action = 'issue')").fetchone()[0]
    assert unaudited == 0, "every certificate of a real store has its issuance in the audit log"
    assert result["audit_rows"] > result["certificates"]
    assert {"newest", "action=revoke + the busy actor", "serial"} <= set(result["audit_ms_by_query"])
    assert result["audit_ms"] == max(result["audit_ms_by_query"].values())
    assert result["search_ms"] == max(result["search_ms_by_query"].values())
    # A complete fixture of this version is used as it is: the second run signs nothing.
    again, progress = _scale(2000, tmp_path)
    assert "using the cached fixture" in progress and "fixture built" not in progress
    assert again["certificates"] == 2000


def test_a_peers_wrong_answers_are_never_counted_as_certificates(svc, tmp_path):
    """The bench's check of a sample answer (issue 29: a comparison that counts a peer's failures
    as work is wrong): an error status, a success without a certificate, a certificate for other
    names or from another CA are each named; a right one passes, in cfssl's form and in ours."""
    import http.server
    import threading

    from benchmarks.throughput import sample_issue
    from ca_server import issuance
    from ca_server.clock import utcnow

    from .factories import make_csr, pem

    csr = pem(make_csr(["bench-sample.example.test", "www.bench-sample.example.test"]))
    good = issuance.issue(svc.config, svc.store, svc.authority, issuance.IssueRequest(csr=csr), utcnow()).pem
    other = issuance.issue(svc.config, svc.store, svc.authority,
                           issuance.IssueRequest(csr=pem(make_csr(["other.example.test"]))), utcnow()).pem
    replies: list[tuple[int, dict]] = []

    class Canned(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["Content-Length"]))
            status, body = replies.pop(0)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Canned)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    issuer = svc.authority.intermediate
    try:
        replies.append((400, {"success": False, "errors": [{"message": "bad"}]}))
        assert sample_issue(url, csr, {}, issuer, cfssl=True) == "HTTP 400"
        replies.append((200, {"success": False, "result": {}}))
        assert "no certificate in the answer" in sample_issue(url, csr, {}, issuer, cfssl=True)
        replies.append((200, {"success": True, "result": {"certificate": other}}))
        assert "names ['other.example.test']" in sample_issue(url, csr, {}, issuer, cfssl=True)
        replies.append((201, {"certificate": svc.authority.root_pem}))  # the root: not the intermediate's
        assert "not a certificate the intermediate signed" in sample_issue(url, csr, {}, issuer, cfssl=False)
        replies.append((200, {"success": True, "result": {"certificate": good}}))
        assert sample_issue(url, csr, {}, issuer, cfssl=True) is None
        replies.append((201, {"certificate": good}))
        assert sample_issue(url, csr, {}, issuer, cfssl=False) is None
    finally:
        server.shutdown()


def test_a_storing_peer_counts_only_when_every_certificate_it_answered_is_stored():
    """The peer that stores (cfssl with its certificate DB, issue 29) is compared only when its
    sample answer is right, it answered no error and its store holds a row for every certificate
    it answered: a peer that answers without storing would look cheaper than one that stores."""
    from benchmarks.throughput import storing_faults

    assert storing_faults({"ok": 500, "errors": 0}, 512, None) == []  # its warm-up second adds rows
    faults = storing_faults({"ok": 500, "errors": 0}, 0, None)
    assert faults == ["cfssl with a store: 500 certificates answered, 0 stored"]
    faults = storing_faults({"ok": 500, "errors": 3}, 500, "HTTP 400")
    assert faults == ["cfssl with a store: HTTP 400", "cfssl with a store: 3 error answers"]


def test_an_ab_runs_the_other_builds_code_even_from_this_repository(tmp_path, monkeypatch):
    """benchmarks/ab.py starts the other build's servers so that they import its tree: from this
    repository's folder `python -m` would import this tree's code whatever PYTHONPATH says, and an
    A/B would compare this build with itself (as three did on 2026-12-07)."""
    from benchmarks.ab import other_build

    other = tmp_path / "other"
    (other / "ca_server").mkdir(parents=True)
    (other / "ca_server" / "__init__.py").write_text("BUILD = 'other'\n")
    (other / "ca_server" / "__main__.py").write_text("import ca_server; print(ca_server.BUILD)\n")
    monkeypatch.chdir(REPO)

    with other_build(other):
        started = subprocess.run([sys.executable, "-m", "ca_server"], capture_output=True, text=True, timeout=60)
    assert started.stdout.strip() == "other", started.stderr
    assert Path.cwd() == REPO and os.environ.get("PYTHONPATH") != str(other)
    naive = subprocess.run([sys.executable, "-m", "ca_server", "--help"], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "PYTHONPATH": str(other)})
    assert naive.stdout.strip() != "other" and "Usage" in naive.stdout  # what the three A/Bs ran: this tree's


def test_the_native_profile_reads_perfs_report():
    """`benchmarks.profile --native` turns `perf report --stdio` (both forms) into its table."""
    from benchmarks.profile import perf_rows

    by_library = """# Samples: 17K of event 'cpu-clock:ppp'
#
# Overhead  Shared Object
# ........  ....................
#
    37.00%  libpython3.11.so.1.0
    32.68%  [kernel.kallsyms]
     0.65%  libcrypto.so.3
"""
    by_symbol = """# Children      Self  Symbol
    30.25%     0.66%  [k] do_syscall_64
     6.77%     0.00%  [k] __x64_sys_fdatasync
"""
    assert perf_rows(by_library) == [(37.0, "libpython3.11.so.1.0"), (32.68, "[kernel.kallsyms]"),
                                     (0.65, "libcrypto.so.3")]
    assert perf_rows(by_symbol) == [(30.25, "[k] do_syscall_64"), (6.77, "[k] __x64_sys_fdatasync")]


def test_a_store_phase_with_a_failed_node_or_error_answers_is_invalid():
    """The store bench (issue 17's two nodes on PostgreSQL): a node whose wrk run failed once left
    the "two nodes" figure computed from the other node alone, and error answers were counted as
    work. Either now makes the phase invalid, with the reason, and an OCSP phase whose wrk report
    shows error answers or socket errors, or prints no rate, is invalid too."""
    from benchmarks.postgres import issuance_phase, wrk_faults

    node = {"requests": 800, "status_errors": 0, "socket_errors": 0, "duration_us": 8_000_000, "p99_us": 9_000}
    fine = issuance_phase([node, node], [], 2.0)
    assert fine["invalid_because"] is None
    assert fine["cps"] == 200.0 and fine["cpu_ms"] == 1.25  # both nodes' certificates, both nodes' CPU
    one_failed = issuance_phase([node], ["node on port 9: wrk printed no summary (exit status 1): 834 requests in 8.00s, 279.14MB read"], 2.0)
    assert one_failed["invalid_because"] == ["node on port 9: wrk printed no summary (exit status 1): 834 requests in 8.00s, 279.14MB read"]
    errors = issuance_phase([node, dict(node, status_errors=5, socket_errors=2)], [], 2.0)
    assert errors["invalid_because"] == ["7 error answers"]
    assert issuance_phase([], ["node on port 9: timed out"], 1.0)["cps"] is None

    report = """Running 5s test @ http://127.0.0.1:8931/ocsp/x
  2 threads and 4 connections
  14770 requests in 5.10s, 1.83MB read
  Socket errors: connect 0, read 3, write 0, timeout 0
  Non-2xx or 3xx responses: 14770
Requests/sec:  2896.15
"""
    assert wrk_faults(report) == ["socket errors (connect 0, read 3, write 0, timeout 0)", "14770 error answers"]
    assert wrk_faults("14770 requests in 5.10s, 1.83MB read\nRequests/sec:  2896.15\n") == []
    assert wrk_faults("unable to connect to 127.0.0.1:8932 Connection refused") == [
        "wrk printed no rate: unable to connect to 127.0.0.1:8932 Connection refused"]
