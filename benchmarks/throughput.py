"""Issuance throughput: the raw cryptography pipeline, ca-server in-process, ca-server and cfssl
over HTTP (same CSRs, same client: wrk), OCSP responses, and server memory."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID

from ca_server import accounts, issuance, revocation
from ca_server.ca.authority import InstancePaths, init_instance
from ca_server.clock import utcnow
from ca_server.config import Secrets
from ca_server.models import CertificateRecord
from ca_server.services import open_services

from .common import cpu_seconds, free_port, make_csrs, rss_mb, run_wrk, wait_http

PASSPHRASE = "benchmark passphrase"
BENCH_CONFIG = '[server]\nsubmission_rate_limit = "100000000 per minute"\n'


def make_instance(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "config.toml").write_text(BENCH_CONFIG)
    init_instance(InstancePaths(root), Secrets(key_passphrase=PASSPHRASE), utcnow())
    svc = open_services(root, secrets=Secrets(key_passphrase=PASSPHRASE))
    revocation.refresh_crls(svc.config, svc.store, svc.authority, utcnow())
    return root


def ocsp_request_for_new_leaf(root: Path, prefix: str = "ocsp") -> tuple[CertificateRecord, bytes]:
    """A certificate issued in the instance at `root`, and an OCSP request (DER) for it."""
    svc = open_services(root, secrets=Secrets(key_passphrase=PASSPHRASE))
    record = issuance.issue(svc.config, svc.store, svc.authority, issuance.IssueRequest(csr=make_csrs(1, prefix)[0]),
                            utcnow())
    request = ocsp.OCSPRequestBuilder().add_certificate(record.certificate, svc.authority.intermediate,
                                                        hashes.SHA1()).build().public_bytes(serialization.Encoding.DER)
    return record, request


def api_load(root: Path, csrs: list[str], name: str) -> tuple[str, Path]:
    """An admin API token of the instance at `root`, and a file of JSON bodies, one CSR each (what
    wrk posts to /api/v1/certificates)."""
    svc = open_services(root, secrets=Secrets(key_passphrase=PASSPHRASE))
    token = accounts.create_token(svc.store, name, is_admin=True, domains=(), allow_ip=None, now=utcnow())
    bodies = root / f"{name}-bodies.jsonl"
    bodies.write_text("".join(json.dumps({"csr": c}) + "\n" for c in csrs))
    return token, bodies


def raw_pipeline(csrs: list[str], issuer: x509.Certificate, key) -> float:
    """The minimum: parse the CSR, verify its signature, build, sign, PEM. Certificates/s."""
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    ku = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
    start = time.perf_counter()
    for text in csrs:
        csr = x509.load_pem_x509_csr(text.encode())
        assert csr.is_signature_valid
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder().subject_name(csr.subject).issuer_name(issuer.subject)
                .public_key(csr.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now).not_valid_after(now + dt.timedelta(days=90))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(ku, critical=True)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(csr.public_key()), critical=False)
                .add_extension(aki, critical=False)
                .add_extension(san, critical=False)
                .sign(key, hashes.SHA256()))
        cert.public_bytes(serialization.Encoding.PEM)
    return len(csrs) / (time.perf_counter() - start)


def inprocess(root: Path, csrs: list[str], rounds: int = 4) -> dict:
    """issue() against the raw pipeline on the same CSRs, in alternating slices (this machine's
    speed drifts within minutes; alternating keeps the ratio honest)."""
    svc = open_services(root, secrets=Secrets(key_passphrase=PASSPHRASE))
    authority = svc.authority
    raw_s = ours_s = 0.0
    size = max(1, len(csrs) // rounds)
    for i in range(0, len(csrs), size):
        chunk = csrs[i:i + size]
        raw_s += len(chunk) / raw_pipeline(chunk, authority.intermediate, authority.intermediate_key)
        start = time.perf_counter()
        for text in chunk:
            issuance.issue(svc.config, svc.store, authority, issuance.IssueRequest(csr=text), utcnow())
        ours_s += time.perf_counter() - start
    ours, raw = len(csrs) / ours_s, len(csrs) / raw_s
    return {"ca_server_cps": round(ours, 1), "raw_cps": round(raw, 1), "ratio": round(ours / raw, 3)}


class Server:
    """A server process (group) with CPU and memory readings."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None) -> None:
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
                                     env={**os.environ, **(env or {})})

    def cpu(self) -> float:
        return cpu_seconds(self.proc.pid)

    def rss(self) -> float:
        return rss_mb(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()


def start_ca_server(root: Path, port: int, workers: int = 2) -> Server:
    server = Server([sys.executable, "-m", "ca_server", "--instance", str(root), "serve", "--host", "127.0.0.1",
                     "--port", str(port), "--workers", str(workers)], root / "serve.log",
                    {"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE})
    wait_http(f"http://127.0.0.1:{port}/healthz")
    return server


def ensure_cfssl() -> str | None:
    path = shutil.which("cfssl")
    if path:
        return path
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-cfssl",
                       shell=True, capture_output=True, timeout=600)
    return shutil.which("cfssl")


# The tables of cfssl's SQL certificate store (certdb/sqlite/migrations in cfssl's source, which
# Debian's package does not ship; created_at is a later version's, which 1.2 leaves empty): with
# `-db-config` every certificate `sign` makes is a row.
CFSSL_CERTDB = """
CREATE TABLE certificates (serial_number BLOB NOT NULL, authority_key_identifier BLOB NOT NULL, ca_label BLOB,
  status BLOB NOT NULL, reason INT, created_at TIMESTAMP, expiry TIMESTAMP, revoked_at TIMESTAMP, pem BLOB NOT NULL,
  PRIMARY KEY (serial_number, authority_key_identifier));
CREATE TABLE ocsp_responses (serial_number BLOB NOT NULL, authority_key_identifier BLOB NOT NULL, body BLOB NOT NULL,
  expiry TIMESTAMP, PRIMARY KEY (serial_number, authority_key_identifier));
"""


def cfssl_stored(root: Path) -> int:
    """How many certificates the storing cfssl (start_cfssl(certdb=True)) has written."""
    with contextlib.closing(sqlite3.connect(root / "cfssl-certs.sqlite3")) as conn:
        return conn.execute("SELECT count(*) FROM certificates").fetchone()[0]


def write_cfssl_key(root: Path, key_file: Path) -> Path:
    """The instance's intermediate key, unencrypted as cfssl reads it, in a file made 0600 before
    anything is written to it."""
    svc = open_services(root, secrets=Secrets(key_passphrase=PASSPHRASE))
    fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(svc.authority.intermediate_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption()))
    return key_file


def start_cfssl(root: Path, port: int, *, certdb: bool = False) -> Server:
    """cfssl serve with the intermediate; with `certdb`, storing each certificate in a SQLite
    file (its SQL certificate store), as ca-server stores every certificate (issue 29's peer that
    stores: plain `cfssl serve` keeps nothing)."""
    key_file = write_cfssl_key(root, root / "cfssl-intermediate-key.pem")
    config = root / "cfssl-config.json"
    config.write_text(json.dumps({"signing": {"default": {"expiry": "2160h",
                                                          "usages": ["digital signature", "server auth"]}}}))
    store = []
    if certdb:
        database = root / "cfssl-certs.sqlite3"
        database.unlink(missing_ok=True)
        with contextlib.closing(sqlite3.connect(database)) as conn:
            conn.executescript(CFSSL_CERTDB)
        (root / "cfssl-db.json").write_text(json.dumps({"driver": "sqlite3", "data_source": str(database)}))
        store = ["-db-config", str(root / "cfssl-db.json")]
    server = Server(["cfssl", "serve", "-address", "127.0.0.1", "-port", str(port), "-ca",
                     str(root / "ca" / "intermediate.pem"), "-ca-key", str(key_file), "-config", str(config), *store],
                    root / ("cfssl-db.log" if certdb else "cfssl.log"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            import urllib.request

            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/cfssl/sign", timeout=1)
        except Exception as exc:  # 405/400 means it is up
            if "HTTP Error" in str(exc):
                break
            time.sleep(0.1)
    return server


def http_phase(server: Server, url: str, bodies: Path, headers: dict, concurrency: int, seconds: float,
               fresh_connections: bool = False) -> dict:
    run_wrk(url, bodies, concurrency=concurrency, seconds=1, headers=headers, fresh_connections=fresh_connections)
    cpu0 = server.cpu()
    result = run_wrk(url, bodies, concurrency=concurrency, seconds=seconds, headers=headers,
                     fresh_connections=fresh_connections)
    cpu1 = server.cpu()
    ok = result["requests"] - result["status_errors"]
    return {"cps": ok / (result["duration_us"] / 1e6), "ok": ok, "errors": result["status_errors"],
            "cpu_ms": (cpu1 - cpu0) * 1000 / max(ok, 1), "p50_ms": result["p50_us"] / 1000,
            "p99_ms": result["p99_us"] / 1000, "max_ms": result["max_us"] / 1000,
            "socket_errors": result["socket_errors"], "rss_mb": server.rss()}


def sample_issue(url: str, csr: str, headers: dict, issuer: x509.Certificate, cfssl: bool) -> str | None:
    """What is wrong with one answer of a server to one of the phase's CSRs (None: a certificate
    for the CSR's names, signed by the intermediate), as the OCSP bench checks its peers (issue 29)."""
    body = json.dumps({"certificate_request": csr} if cfssl else {"csr": csr}).encode()
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:  # noqa: S310 - local servers
            reply = json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return f"no answer ({exc})"
    pem = (reply.get("result") or {}).get("certificate") if cfssl else reply.get("certificate")
    if not pem:
        return f"no certificate in the answer: {str(reply)[:120]}"
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
        cert.verify_directly_issued_by(issuer)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except Exception as exc:  # noqa: BLE001 - any flaw makes the phase invalid
        return f"not a certificate the intermediate signed ({exc})"
    wanted = x509.load_pem_x509_csr(csr.encode()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    return None if sorted(names) == sorted(wanted) else f"names {names}, not {wanted}"


def verify_issued_since(root: Path, rowid: int) -> tuple[int, int]:
    """Every certificate stored after `rowid`: (count, count whose signature verifies)."""
    svc = open_services(root, secrets=Secrets(key_passphrase=PASSPHRASE))
    issuer = svc.authority.intermediate
    conn = sqlite3.connect(root / "ca.sqlite3")
    total = good = 0
    for (der,) in conn.execute("SELECT der FROM certificates WHERE rowid > ?", [rowid]):
        total += 1
        try:
            x509.load_der_x509_certificate(der).verify_directly_issued_by(issuer)
            good += 1
        except Exception:
            pass
    return total, good


def max_rowid(root: Path) -> int:
    return sqlite3.connect(root / "ca.sqlite3").execute("SELECT coalesce(max(rowid), 0) FROM certificates").fetchone()[0]


def http(root: Path, csrs: list[str], seconds: float, log) -> list[dict]:
    svc = open_services(root, secrets=Secrets(key_passphrase=PASSPHRASE))
    token = accounts.create_token(svc.store, f"bench-{time.time_ns()}", is_admin=True, domains=(), allow_ip=None,
                                  now=utcnow())
    ours_bodies = root / "ca-server-bodies.jsonl"
    ours_bodies.write_text("".join(json.dumps({"csr": c}) + "\n" for c in csrs))
    cfssl_bodies = root / "cfssl-bodies.jsonl"
    cfssl_bodies.write_text("".join(json.dumps({"certificate_request": c}) + "\n" for c in csrs))
    headers = {"Content-Type": "application/json"}
    rows = []
    port = free_port()
    server = start_ca_server(root, port)
    # Both servers up at once and their phases alternating, so each ratio compares measurements a
    # few seconds apart (this machine's speed drifts by up to 2x within minutes).
    cfssl = cport = cfssl_db = dport = None
    if ensure_cfssl() is None:
        log("  cfssl: not installed and could not be installed (apt-get golang-cfssl); no peer numbers")
    else:
        cport, dport = free_port(), free_port()
        cfssl = start_cfssl(root, cport)
        cfssl_db = start_cfssl(root, dport, certdb=True)
    try:
        for c in (1, 4, 16):
            before = max_rowid(root)
            ours = http_phase(server, f"http://127.0.0.1:{port}/api/v1/certificates", ours_bodies,
                              {**headers, "Authorization": f"Bearer {token}"}, c, seconds)
            stored, verified = verify_issued_since(root, before)
            log(f"  ca-server c={c}: {ours['cps']:.0f}/s, p50 {ours['p50_ms']:.1f} ms, p99 {ours['p99_ms']:.1f} ms, "
                f"{ours['cpu_ms']:.2f} ms CPU/cert; {verified}/{stored} stored certificates verify")
            row = {"concurrency": c, "ca_server_cps": round(ours["cps"], 1),
                   "ca_server_cpu_ms": round(ours["cpu_ms"], 3), "p50_ms": round(ours["p50_ms"], 2),
                   "p99_ms": round(ours["p99_ms"], 2), "ca_server_rss_mb": round(ours["rss_mb"], 1),
                   "ca_server_errors": ours["errors"], "verified": verified, "stored": stored,
                   "cfssl_cps": None, "ratio": None, "cfssl_cpu_ms": None}
            if cfssl is not None:
                cfssl_url = f"http://127.0.0.1:{cport}/api/v1/cfssl/sign"
                peer = http_phase(cfssl, cfssl_url, cfssl_bodies, headers, c, seconds)
                log(f"  cfssl     c={c}: {peer['cps']:.0f}/s, p50 {peer['p50_ms']:.1f} ms, "
                    f"{peer['cpu_ms']:.2f} ms CPU/cert")
                # Only correct answers count: a sample of each, the status errors of both, every
                # certificate ca-server stored verified (issue 29).
                wrong = [f"{name}: {problem}" for name, url, hdrs, is_cfssl in (
                    ("ca-server", f"http://127.0.0.1:{port}/api/v1/certificates",
                     {**headers, "Authorization": f"Bearer {token}"}, False), ("cfssl", cfssl_url, headers, True))
                    if (problem := sample_issue(url, csrs[c], hdrs, svc.authority.intermediate, is_cfssl))]
                wrong += [f"{name}: {n} error answers" for name, n in (("ca-server", ours["errors"]),
                                                                        ("cfssl", peer["errors"])) if n]
                if verified != stored:
                    wrong.append(f"ca-server: {stored - verified} stored certificates do not verify")
                valid = not wrong
                row.update({"cfssl_cps": round(peer["cps"], 1), "cfssl_cpu_ms": round(peer["cpu_ms"], 3),
                            "cfssl_p50_ms": round(peer["p50_ms"], 2), "cfssl_errors": peer["errors"], "valid": valid,
                            "invalid_because": wrong or None,
                            "ratio": round(row["ca_server_cps"] / peer["cps"], 3) if valid and peer["cps"] else None,
                            "cpu_ratio": round(ours["cpu_ms"] / peer["cpu_ms"], 2) if valid and peer["cpu_ms"] else None})
                log(f"  c={c}: CPU per certificate {row['cpu_ratio']}x cfssl's (target 2.5x)" if valid
                    else f"  c={c}: INVALID ({'; '.join(wrong)}): no ratio")
                row.update(storing_peer(cfssl_db, f"http://127.0.0.1:{dport}/api/v1/cfssl/sign", cfssl_bodies,
                                        csrs[c], svc.authority.intermediate, c, seconds, ours, log, root,
                                        [w for w in wrong if w.startswith("ca-server")]))
            rows.append(row)
        # A new connection per request (issue 15: the kept-alive runs above hid a server that new
        # connections could not reach).
        for c in (16, 64):
            before = max_rowid(root)
            fresh = http_phase(server, f"http://127.0.0.1:{port}/api/v1/certificates", ours_bodies,
                               {**headers, "Authorization": f"Bearer {token}"}, c, seconds, fresh_connections=True)
            stored, verified = verify_issued_since(root, before)
            log(f"  ca-server c={c}, new connection per request: {fresh['cps']:.0f}/s, p99 {fresh['p99_ms']:.1f} ms, "
                f"max {fresh['max_ms']:.1f} ms, {fresh['errors']} status + {fresh['socket_errors']} socket errors, "
                f"{fresh['cpu_ms']:.2f} ms CPU/cert; {verified}/{stored} stored certificates verify")
            rows.append({"concurrency": c, "fresh_connections": True, "ca_server_cps": round(fresh["cps"], 1),
                         "ca_server_cpu_ms": round(fresh["cpu_ms"], 3), "p50_ms": round(fresh["p50_ms"], 2),
                         "p99_ms": round(fresh["p99_ms"], 2), "max_ms": round(fresh["max_ms"], 2),
                         "ca_server_errors": fresh["errors"], "socket_errors": fresh["socket_errors"],
                         "verified": verified, "stored": stored, "cfssl_cps": None, "ratio": None,
                         "cfssl_cpu_ms": None})
    finally:
        server.stop()
        if cfssl is not None:
            cfssl.stop()
            cfssl_db.stop()
            (root / "cfssl-intermediate-key.pem").unlink(missing_ok=True)
    return rows


def storing_faults(phase: dict, stored: int, sample_problem: str | None) -> list[str]:
    """Why a storing peer's phase does not count (empty: it counts): a wrong sample answer, error
    answers, or fewer rows in its store than certificates it answered."""
    wrong = [f"cfssl with a store: {sample_problem}"] if sample_problem else []
    if phase["errors"]:
        wrong.append(f"cfssl with a store: {phase['errors']} error answers")
    if stored < phase["ok"]:
        wrong.append(f"cfssl with a store: {phase['ok']} certificates answered, {stored} stored")
    return wrong


def storing_peer(peer: Server, url: str, bodies: Path, csr: str, issuer: x509.Certificate, c: int, seconds: float,
                 ours: dict, log, root: Path, ours_wrong: list[str]) -> dict:
    """cfssl with its certificate store, right after ca-server's and plain cfssl's phases: its
    CPU per certificate, counted only if a sample answer is right, no answer was an error and
    every answer is a stored row (and ca-server's phase counted: `ours_wrong` empty)."""
    before = cfssl_stored(root)
    phase = http_phase(peer, url, bodies, {"Content-Type": "application/json"}, c, seconds)
    stored = cfssl_stored(root) - before  # its warm-up second included
    wrong = ours_wrong + storing_faults(phase, stored, sample_issue(url, csr, {"Content-Type": "application/json"},
                                                                    issuer, True))
    ratio = round(ours["cpu_ms"] / phase["cpu_ms"], 2) if not wrong and phase["cpu_ms"] else None
    log(f"  cfssl+db  c={c}: {phase['cps']:.0f}/s, p99 {phase['p99_ms']:.1f} ms, {phase['cpu_ms']:.2f} ms CPU/cert, "
        + (f"ca-server's CPU per certificate {ratio}x" if ratio else f"INVALID ({'; '.join(wrong)})"))
    return {"cfssl_db_cps": round(phase["cps"], 1), "cfssl_db_cpu_ms": round(phase["cpu_ms"], 3),
            "cfssl_db_p99_ms": round(phase["p99_ms"], 2), "cpu_ratio_vs_cfssl_db": ratio,
            "cfssl_db_invalid_because": wrong or None}


def ocsp_rps(root: Path, log) -> dict:
    svc = open_services(root, secrets=Secrets(key_passphrase=PASSPHRASE))

    good, bad = (issuance.issue(svc.config, svc.store, svc.authority, issuance.IssueRequest(csr=c), utcnow())
                 for c in make_csrs(2, "ocsp"))
    revocation.revoke(svc.config, svc.store, svc.authority, bad.serial, "keyCompromise", utcnow(), actor="bench")
    port = free_port()
    server = start_ca_server(root, port)
    out = {}
    try:
        for label, record in (("good", good), ("revoked", bad)):
            request = ocsp.OCSPRequestBuilder().add_certificate(record.certificate, svc.authority.intermediate,
                                                                hashes.SHA1()).build()
            b64 = quote(base64.b64encode(request.public_bytes(serialization.Encoding.DER)).decode(), safe="")
            url = f"http://127.0.0.1:{port}/ocsp/{b64}"
            subprocess.run(["wrk", "-t", "2", "-c", "4", "-d", "2s", url], capture_output=True, timeout=60)  # warm-up
            args = ["wrk", "-t", "2", "-c", "4", "-d", "5s", "--latency", url]
            text = subprocess.run(args, capture_output=True, text=True, timeout=60).stdout
            rps = float(next(line.split()[1] for line in text.splitlines() if line.startswith("Requests/sec")))
            out[label] = round(rps, 1)
            log(f"  OCSP {label}: {rps:.0f} responses/s at concurrency 4")
    finally:
        server.stop()
    return out


def memory(root: Path, csrs: list[str], total: int, log) -> dict:
    """Server RSS after 1,000 and after `total` issuances over HTTP."""
    svc = open_services(root, secrets=Secrets(key_passphrase=PASSPHRASE))
    token = accounts.create_token(svc.store, f"mem-{time.time_ns()}", is_admin=True, domains=(), allow_ip=None,
                                  now=utcnow())
    bodies = root / "ca-server-bodies.jsonl"
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    port = free_port()
    server = start_ca_server(root, port)
    url = f"http://127.0.0.1:{port}/api/v1/certificates"
    try:
        issued = 0
        while issued < 1000:
            issued += run_wrk(url, bodies, concurrency=4, seconds=1, headers=headers)["requests"]
        after_1k = server.rss()
        start = time.monotonic()
        while issued < total:
            issued += run_wrk(url, bodies, concurrency=16, seconds=10, headers=headers)["requests"]
        after = server.rss()
        log(f"  RSS after {1000:,}: {after_1k:.0f} MB; after {issued:,} issuances: {after:.0f} MB "
            f"({time.monotonic() - start:.0f} s)")
    finally:
        server.stop()
    return {"after_1k": round(after_1k, 1), "after_100k": round(after, 1), "issued": issued,
            "growth": round(after / after_1k - 1, 3)}
