"""Issue 17: the same server on SQLite, on PostgreSQL (a server started here, Unix socket), and
as two nodes on that PostgreSQL: HTTP issuance (wrk, kept-alive, c=4 and c=16) and OCSP GET,
phases alternating so each comparison is seconds apart. CPU per certificate counts the ca-server
processes and, on PostgreSQL, the database server's too.

    python -m benchmarks.postgres [SECONDS]
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from ca_server import accounts, issuance
from ca_server.clock import utcnow
from ca_server.config import Secrets
from ca_server.services import open_services
from tests.pg_server import PgServer

from .common import cpu_seconds, free_port, make_csrs, run_wrk, wrk_faults
from .throughput import PASSPHRASE, make_instance, start_ca_server


def _postmaster_cpu(pg: PgServer) -> float:
    pid = int((pg.data / "postmaster.pid").read_text().split()[0])
    return cpu_seconds(pid)


def _issuance(servers, ports, bodies: Path, token: str, concurrency: int, seconds: float, pg) -> dict:
    """wrk against each port at once (`concurrency` each); certificates/s over all and CPU ms per
    certificate (ca-server processes + PostgreSQL). A node whose wrk run failed, or any error answer,
    makes the phase invalid: its figures would be one node's work divided as if it were two."""
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    results: list[dict] = []
    failures: list[str] = []

    def one(port, secs=seconds, sink=results):
        try:
            sink.append(run_wrk(f"http://127.0.0.1:{port}/api/v1/certificates", bodies,
                                concurrency=concurrency, seconds=secs, headers=headers))
        except Exception as exc:  # noqa: BLE001 - kept: the phase is reported invalid with it
            failures.append(f"node on port {port}: {' '.join(str(exc).split())[:300]}")
    for port in ports:  # warm-up
        one(port, 1, [])
    cpu0 = sum(s.cpu() for s in servers) + (_postmaster_cpu(pg) if pg else 0)
    threads = [threading.Thread(target=one, args=(p,)) for p in ports]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu1 = sum(s.cpu() for s in servers) + (_postmaster_cpu(pg) if pg else 0)
    return issuance_phase(results, failures, cpu1 - cpu0)


def issuance_phase(results: list[dict], failures: list[str], cpu_s: float) -> dict:
    """One phase's figures from its wrk summaries (one per node); `invalid_because` names each
    node that failed and each error count, and then the phase gets no figures to compare."""
    ok = sum(r["requests"] - r["status_errors"] for r in results)
    errors = sum(r["status_errors"] + r["socket_errors"] for r in results)
    wrong = list(failures) + ([f"{errors} error answers"] if errors else [])
    if not results:
        return {"cps": None, "cpu_ms": None, "errors": errors, "p99_ms": None, "invalid_because": wrong}
    duration = max(r["duration_us"] for r in results) / 1e6
    return {"cps": round(ok / duration, 1), "cpu_ms": round(cpu_s * 1000 / max(ok, 1), 3), "errors": errors,
            "p99_ms": round(max(r["p99_us"] for r in results) / 1000, 1), "invalid_because": wrong or None}


def _ocsp_url(root: Path, port: int) -> tuple[str, int]:
    svc = open_services(root, secrets=Secrets(key_passphrase=PASSPHRASE))
    record = issuance.issue(svc.config, svc.store, svc.authority,
                            issuance.IssueRequest(csr=make_csrs(1, "ocsp-pg")[0]), utcnow())
    request = ocsp.OCSPRequestBuilder().add_certificate(record.certificate, svc.authority.intermediate,
                                                        hashes.SHA1()).build()
    b64 = quote(base64.b64encode(request.public_bytes(serialization.Encoding.DER)).decode(), safe="")
    return f"http://127.0.0.1:{port}/ocsp/{b64}", record.certificate.serial_number


def named_faults(phases: dict[str, dict]) -> list[str]:
    """Every reason a row's phases are invalid, each named by its server ("SQLite: 3 error answers")."""
    return [f"{name}: {why}" for name, phase in phases.items() for why in phase["invalid_because"] or ()]


def _ocsp_sample(url: str, serial: int) -> list[str]:
    """One answer fetched and read: a SUCCESSFUL OCSP response for the certificate asked about."""
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            answer = ocsp.load_der_ocsp_response(resp.read())
    except (OSError, ValueError) as exc:
        return [f"sample answer: {exc}"]
    if answer.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return [f"sample answer: {answer.response_status.name}"]
    if answer.serial_number != serial:
        return [f"sample answer is for serial {answer.serial_number:x}, not {serial:x}"]
    return []


def _ocsp_rps(url: str, serial: int, concurrency: int) -> dict:
    subprocess.run(["wrk", "-t", "2", "-c", str(concurrency), "-d", "1s", url], capture_output=True, timeout=60)
    text = subprocess.run(["wrk", "-t", "2", "-c", str(concurrency), "-d", "5s", url], capture_output=True, text=True,
                          timeout=60).stdout
    wrong = wrk_faults(text) + _ocsp_sample(url, serial)
    rate = next((float(line.split()[1]) for line in text.splitlines() if line.startswith("Requests/sec")), None)
    return {"rps": None if wrong else rate, "invalid_because": wrong or None}


def measure(seconds: float, log, rounds: int = 2) -> dict:
    pg = PgServer()
    tmp = Path(tempfile.mkdtemp(prefix="ca-bench-pg-"))
    servers = []
    try:
        lite = make_instance(tmp / "sqlite")
        node_a = tmp / "pg-a"
        shutil.copytree(lite, node_a, ignore=shutil.ignore_patterns("*.sqlite3*", "serve.log"))
        url = pg.new_database()
        with (node_a / "config.toml").open("a") as fh:
            fh.write(f'\n[database]\nurl = "{url}"\n')
        node_b = tmp / "pg-b"
        shutil.copytree(node_a, node_b)
        tokens = {}
        for name, root in (("sqlite", lite), ("postgresql", node_a)):
            svc = open_services(root, secrets=Secrets(key_passphrase=PASSPHRASE))
            tokens[name] = accounts.create_token(svc.store, f"bench-{name}", is_admin=True, domains=(),
                                                 allow_ip=None, now=utcnow())
        csrs = make_csrs(2000, "pg")
        bodies = tmp / "bodies.jsonl"
        bodies.write_text("".join(json.dumps({"csr": c}) + "\n" for c in csrs))
        ports = {"sqlite": free_port(), "a": free_port(), "b": free_port()}
        s_lite = start_ca_server(lite, ports["sqlite"])
        s_a = start_ca_server(node_a, ports["a"])
        s_b = start_ca_server(node_b, ports["b"])
        servers = [s_lite, s_a, s_b]
        rows = []
        for c in (4, 16):
            for n in range(rounds):
                lite_r = _issuance([s_lite], [ports["sqlite"]], bodies, tokens["sqlite"], c, seconds, None)
                pg_r = _issuance([s_a], [ports["a"]], bodies, tokens["postgresql"], c, seconds, pg)
                two_r = _issuance([s_a, s_b], [ports["a"], ports["b"]], bodies, tokens["postgresql"], c // 2, seconds, pg)
                wrong = named_faults({"SQLite": lite_r, "PostgreSQL": pg_r, "two nodes": two_r})
                row = {"concurrency": c, "round": n + 1, "sqlite": lite_r, "postgresql": pg_r, "two_nodes": two_r,
                       "ratio_pg_to_sqlite": None if wrong else round(pg_r["cps"] / lite_r["cps"], 3),
                       "invalid_because": wrong or None}
                rows.append(row)
                log(f"  c={c} round {n + 1}: " + (f"INVALID: {'; '.join(wrong)}" if wrong else
                    f"SQLite {lite_r['cps']:.0f}/s ({lite_r['cpu_ms']:.2f} ms CPU/cert), "
                    f"PostgreSQL {pg_r['cps']:.0f}/s ({pg_r['cpu_ms']:.2f} ms incl. the database), "
                    f"two nodes {two_r['cps']:.0f}/s ({two_r['cpu_ms']:.2f} ms); ratio PG/SQLite "
                    f"{row['ratio_pg_to_sqlite']:.2f}"))
        ocsp_rows = []
        lite_url, pg_url = _ocsp_url(lite, ports["sqlite"]), _ocsp_url(node_a, ports["a"])
        for c in (4, 16):
            lite_o, pg_o = _ocsp_rps(*lite_url, c), _ocsp_rps(*pg_url, c)
            wrong = named_faults({"SQLite": lite_o, "PostgreSQL": pg_o})
            ocsp_rows.append({"concurrency": c, "sqlite_rps": lite_o["rps"], "postgresql_rps": pg_o["rps"],
                              "ratio": None if wrong else round(pg_o["rps"] / lite_o["rps"], 3),
                              "invalid_because": wrong or None})
            log(f"  OCSP GET c={c}: " + (f"INVALID: {'; '.join(wrong)}" if wrong else
                f"SQLite {lite_o['rps']:.0f}/s, PostgreSQL {pg_o['rps']:.0f}/s, ratio {pg_o['rps'] / lite_o['rps']:.2f}"))
        return {"issuance": rows, "ocsp": ocsp_rows}
    finally:
        for s in servers:
            s.stop()
        pg.destroy()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(measure(float(sys.argv[1]) if len(sys.argv) > 1 else 8, print), indent=2))
