"""`make bench`: every measurement of issue 7 in one run; prints a table and writes
benchmarks/latest.json. Options (environment): BENCH_SECONDS (per HTTP phase, default 10),
BENCH_SCALE (fixture size, default 1000000), BENCH_MEMORY_TOTAL (default 100000), BENCH_ACME_ORDERS
(per round and server, default 100)."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import acme, ocsp, postgres, recovery, rollover, scale, scep, throughput
from .common import HERE, make_csrs


def log(message: str) -> None:
    print(message, flush=True)


def main() -> int:
    if shutil.which("wrk") is None:
        os.system("apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null")
    if shutil.which("wrk") is None:
        log("wrk (Debian package) is needed as the HTTP client; install it and run again")
        return 2
    seconds = float(os.environ.get("BENCH_SECONDS", "10"))
    scale_n = int(os.environ.get("BENCH_SCALE", "1000000"))
    memory_total = int(os.environ.get("BENCH_MEMORY_TOTAL", "100000"))
    started = time.monotonic()
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    with tempfile.TemporaryDirectory(prefix="ca-bench-") as tmp:
        root = throughput.make_instance(Path(tmp) / "instance")
        csrs = make_csrs(2000)
        log("In-process (one thread): raw cryptography pipeline vs ca-server issue()")
        results["inprocess"] = throughput.inprocess(root, csrs[:1500])
        ip = results["inprocess"]
        log(f"  raw {ip['raw_cps']:.0f}/s, ca-server {ip['ca_server_cps']:.0f}/s, ratio {ip['ratio']:.2f}")
        log(f"HTTP: POST /api/v1/certificates (token, storage, audit) vs cfssl /api/v1/cfssl/sign, {seconds:.0f} s each")
        results["http"] = throughput.http(root, csrs, seconds, log)
        log("OCSP")
        results["ocsp"] = throughput.ocsp_rps(root, log)
        results["ocsp_rps"] = min(results["ocsp"].values())
        log("OCSP against cfssl ocspserve (pre-signed), POST and GET, c=4 and c=16")
        results["ocsp_vs_cfssl"] = ocsp.measure(log)
        log(f"Memory: {memory_total:,} issuances")
        results["rss_mb"] = throughput.memory(root, csrs, memory_total, log)
        orders = int(os.environ.get("BENCH_ACME_ORDERS", "100"))
        log(f"ACME: {orders} orders (new account, order, http-01, finalize, download) at concurrency 4, "
            "ca-server vs Pebble")
        results["acme"] = acme.measure(orders, log)
        log("SCEP: PKCSReq by GET, AES and SHA-256, a new connection each, ca-server vs micromdm's scepserver, "
            "alternating")
        results["scep"] = scep.measure(seconds, log)
        log("PostgreSQL: HTTP issuance and OCSP on SQLite, on PostgreSQL (a server started here) and on two "
            "nodes sharing it, alternating")
        results["postgresql"] = postgres.measure(seconds, log)
        log("CRL")
        results["crl"] = scale.crl_build(Path(tmp) / "crl", 100_000, log)
        log("Intermediate rollover: a CA with one intermediate vs one after a rollover, alternating")
        results["rollover"] = rollover.measure(Path(tmp), csrs, seconds / 2, log)
    log(f"Scale: {scale_n:,} certificates")
    fixture = scale.build_fixture(HERE / ".cache", scale_n, log)
    results["scale"] = scale.measure(fixture, log)
    log("Issue 27: the issuance log's cost (in-process and HTTP, on vs off, alternating); log verify, backup and "
        f"restore at {scale_n:,} certificates")
    results["recovery"] = recovery.measure(scale_n, log, seconds)
    results["elapsed_s"] = round(time.monotonic() - started)
    (HERE / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    return 0


def print_table(r: dict) -> None:
    log("\n| concurrency | ca-server cert/s | cfssl cert/s | ratio | ca-server CPU ms/cert | cfssl CPU ms/cert | CPU ratio |"
        " p50 ms | p99 ms |")
    log("|---|---|---|---|---|---|---|---|---|")
    for row in r["http"]:
        fresh = " (new connection each)" if row.get("fresh_connections") else ""
        ratio = (f"{row['ratio']:.2f} | " if row.get("ratio") is not None else "- | ")
        cpu_ratio = (f"{row['cpu_ratio']:.2f}x" if row.get("cpu_ratio") is not None
                     else f"INVALID: {'; '.join(row['invalid_because'])}" if row.get("invalid_because") else "-")
        log(f"| {row['concurrency']}{fresh} | {row['ca_server_cps']:.0f} | {row['cfssl_cps'] or 0:.0f} | {ratio}"
            f"{row['ca_server_cpu_ms']:.2f} | {row['cfssl_cpu_ms'] or 0:.2f} | {cpu_ratio} | {row['p50_ms']:.1f} | "
            f"{row['p99_ms']:.1f} |"
            + (f" max {row['max_ms']:.0f} ms, {row['ca_server_errors'] + row['socket_errors']} errors" if fresh else ""))
    for row in r["http"]:
        if "cfssl_db_cpu_ms" in row:
            verdict = (f"ca-server at {row['cpu_ratio_vs_cfssl_db']}x its CPU" if row["cpu_ratio_vs_cfssl_db"]
                       else f"INVALID: {'; '.join(row['cfssl_db_invalid_because'] or [])}")
            log(f"c={row['concurrency']}: cfssl storing to its SQLite certificate DB {row['cfssl_db_cps']:.0f} cert/s, "
                f"{row['cfssl_db_cpu_ms']:.2f} ms CPU/cert, p99 {row['cfssl_db_p99_ms']:.0f} ms; {verdict}")
    ip, s, c, m = r["inprocess"], r["scale"], r["crl"], r["rss_mb"]
    log(f"\nin-process: ca-server {ip['ca_server_cps']:.0f}/s, raw pipeline {ip['raw_cps']:.0f}/s, ratio {ip['ratio']:.2f}")
    log(f"scale ({s['certificates']:,}): lookup p99 {s['lookup_p99_ms']:.2f} ms, search page {s['search_ms']:.0f} ms "
        f"(worst query), audit page {s['audit_ms']:.0f} ms, reminder pass {s['reminder_pass_s']:.2f} s, {s['bytes_per_cert']} bytes/cert")
    log(f"CRL {c['entries']:,} entries: {c['build_s']:.2f} s, {c['bytes'] / 1e6:.1f} MB; OCSP {r['ocsp_rps']:.0f}/s")
    for row in r["postgresql"]["issuance"]:
        log(f"store c={row['concurrency']} round {row['round']}: " + (
            f"INVALID: {'; '.join(row['invalid_because'])}" if row.get("invalid_because") else
            f"SQLite {row['sqlite']['cps']:.0f}/s ({row['sqlite']['cpu_ms']:.2f} ms CPU), PostgreSQL "
            f"{row['postgresql']['cps']:.0f}/s ({row['postgresql']['cpu_ms']:.2f} ms incl. database), two nodes "
            f"{row['two_nodes']['cps']:.0f}/s ({row['two_nodes']['cpu_ms']:.2f} ms)"))
    for row in r["postgresql"]["ocsp"]:
        log(f"OCSP GET c={row['concurrency']}: " + (
            f"INVALID: {'; '.join(row['invalid_because'])}" if row.get("invalid_because") else
            f"SQLite {row['sqlite_rps']:.0f}/s, PostgreSQL {row['postgresql_rps']:.0f}/s"))
    log(f"RSS: {m['after_1k']:.0f} MB after 1k, {m['after_100k']:.0f} MB after {m['issued']:,} ({m['growth']:+.0%})")
    for row in (r.get("ocsp_vs_cfssl") or {}).get("rows", []):
        verdict = (f"ratio {row['ratio']}, CPU {row['cpu_ratio']}x" if row.get("valid")
                   else f"INVALID: {'; '.join(row.get('invalid_because') or [])}")
        log(f"OCSP {row['method']} c={row['concurrency']}: ca-server {row['ca_server']['rps']}/s "
            f"({row['ca_server']['cpu_us']} us CPU), cfssl ocspserve {row['cfssl']['rps']}/s "
            f"({row['cfssl']['cpu_us']} us CPU), {verdict}"
            + (f"; bare Granian {row['floor']['cpu_us']} us CPU, ca-server at {row['cpu_vs_floor']}x of it (target 1.5x)"
               if "floor" in row else ""))
    a = r.get("acme") or {}
    if a:
        best = {k: max(a[k], key=lambda x: x["orders_per_s"]) for k in ("ca_server", "pebble")}
        log(f"ACME c=4: ca-server {best['ca_server']['orders_per_s']:.1f} orders/s ({best['ca_server']['cpu_ms_per_order']:.1f} "
            f"ms CPU, p99 {best['ca_server']['p99_ms']:.0f} ms), Pebble {best['pebble']['orders_per_s']:.1f} orders/s "
            f"({best['pebble']['cpu_ms_per_order']:.1f} ms CPU), "
            + (f"ratio {a['ratio']:.2f}, CPU per order {a['cpu_ratio']}x Pebble's; " if a.get("valid", True)
               else f"INVALID: {'; '.join(a['invalid_because'])}; ")
            + f"{a.get('ca_server_certificates_stored')} certificates stored")
    for i, row in enumerate((r.get("scep") or {}).get("rounds", ()), 1):
        ours, peer = row["ca_server"], row["scepserver"]
        verdict = (f"enrollments/s ratio {row['eps_ratio']:.2f}, CPU ratio {row['cpu_ratio']:.2f}" if row["valid"]
                   else "invalid (errors, or a sample answer that was not SUCCESS)")
        log(f"SCEP round {i}: ca-server {ours['eps']:.0f}/s ({ours['cpu_ms']:.2f} ms CPU, {ours['errors']} errors), "
            f"scepserver {peer['eps']:.0f}/s ({peer['cpu_ms']:.2f} ms CPU, {peer['errors']} errors): {verdict}")
    log(f"total {r['elapsed_s']} s; written to benchmarks/latest.json")


if __name__ == "__main__":
    sys.exit(main())
