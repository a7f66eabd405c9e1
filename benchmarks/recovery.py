"""Issue 27's figures. The issuance log's cost: issue() on an instance with [log] enabled against
one without, in alternating rounds in one process (one thread, the worst case: every certificate
waits for its own fsync; and four threads, where a group commit shares one). At scale, on the
store of a million certificates (scale.py's fixture): writing its log (an instance older than the
log does this once), `log verify` of every entry against the store, and backup and restore.

python -m benchmarks.recovery [COUNT [SECONDS]] runs it alone and prints JSON."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ca_server import accounts, issuance
from ca_server.clock import utcnow
from ca_server.config import Secrets
from ca_server.recovery import backup as backups
from ca_server.recovery import log_check
from ca_server.recovery.issuance_log import log_path, public_key_path
from ca_server.services import open_services
from ca_server.store import CertificateFilter

from .common import HERE, free_port, make_csrs
from .scale import build_fixture
from .throughput import PASSPHRASE, http_phase, make_instance, start_ca_server


def _open(root: Path):
    return open_services(root, secrets=Secrets(key_passphrase=PASSPHRASE))


def log_overhead(tmp: Path, rounds: int, per_round: int, log) -> dict:
    on, off = make_instance(tmp / "log-on"), make_instance(tmp / "log-off")
    config = off / "config.toml"
    config.write_text(config.read_text() + "\n[log]\nenabled = false\n")
    services = {"on": _open(on), "off": _open(off)}
    assert services["on"].log is not None and services["off"].log is None
    csrs = make_csrs(rounds * per_round * 4, prefix="logbench")
    out = {}
    for threads in (1, 4):
        rates: dict[str, list[float]] = {"on": [], "off": []}
        for r in range(rounds):
            for which in (("on", "off") if r % 2 == 0 else ("off", "on")):
                svc = services[which]
                chunk = [csrs.pop() for _ in range(per_round)]

                def one(text, svc=svc):
                    issuance.issue(svc.config, svc.store, svc.authority, issuance.IssueRequest(csr=text), utcnow())

                start = time.perf_counter()
                if threads == 1:
                    for text in chunk:
                        one(text)
                else:
                    with ThreadPoolExecutor(threads) as pool:
                        list(pool.map(one, chunk))
                rates[which].append(per_round / (time.perf_counter() - start))
        on_cps, off_cps = statistics.median(rates["on"]), statistics.median(rates["off"])
        out[f"threads_{threads}"] = {"log_on_cps": round(on_cps, 1), "log_off_cps": round(off_cps, 1),
                                     "ratio": round(on_cps / off_cps, 3),
                                     "rounds": {k: [round(x) for x in v] for k, v in rates.items()}}
        log(f"  {threads} thread(s): log on {on_cps:.0f}/s, off {off_cps:.0f}/s, ratio {on_cps / off_cps:.3f} "
            f"(medians of {rounds} alternating rounds of {per_round})")
    out["log_entries_written"] = services["on"].store.log_size()
    return out


def http_overhead(tmp: Path, seconds: float, log, rounds: int = 4) -> dict:
    """POST /api/v1/certificates through wrk (c=4, a new connection per request) to a server with
    the log and one without, alternating; a round counts only when neither side had an error."""
    sides = {}
    csrs = make_csrs(3000, prefix="loghttp")
    try:
        for label in ("on", "off"):
            root = make_instance(tmp / f"http-log-{label}")
            if label == "off":
                (root / "config.toml").write_text((root / "config.toml").read_text() + "\n[log]\nenabled = false\n")
            svc = _open(root)
            token = accounts.create_token(svc.store, f"bench-{time.time_ns()}", is_admin=True, domains=(),
                                          allow_ip=None, now=utcnow())
            bodies = root / "bodies.jsonl"
            bodies.write_text("".join(json.dumps({"csr": c}) + "\n" for c in csrs))
            port = free_port()
            sides[label] = {"server": start_ca_server(root, port), "root": root, "bodies": bodies,
                            "url": f"http://127.0.0.1:{port}/api/v1/certificates",
                            "headers": {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}}
        rates: dict[str, list[float]] = {"on": [], "off": []}
        cpu: dict[str, list[float]] = {"on": [], "off": []}
        invalid = 0
        for n in range(rounds):
            phase = {}
            for label in ("on", "off") if n % 2 == 0 else ("off", "on"):
                side = sides[label]
                phase[label] = http_phase(side["server"], side["url"], side["bodies"], side["headers"], 4, seconds,
                                          fresh_connections=True)
            if any(p["errors"] or p["socket_errors"] for p in phase.values()):
                invalid += 1
                continue
            for label, p in phase.items():
                rates[label].append(p["cps"])
                cpu[label].append(p["cpu_ms"])
    finally:
        for side in sides.values():
            side["server"].stop()
    on_svc = _open(sides["on"]["root"])
    logged = on_svc.store.log_size()
    stored = on_svc.store.count_certificates(CertificateFilter(), utcnow())
    if not rates["on"]:
        log(f"  HTTP: invalid, every round had errors ({invalid})")
        return {"valid": False}
    on_cps, off_cps = statistics.median(rates["on"]), statistics.median(rates["off"])
    out = {"valid": True, "log_on_cps": round(on_cps, 1), "log_off_cps": round(off_cps, 1),
           "ratio": round(on_cps / off_cps, 3), "cpu_ms_on": round(statistics.median(cpu["on"]), 2),
           "cpu_ms_off": round(statistics.median(cpu["off"]), 2), "invalid_rounds": invalid,
           "entries_equal_certificates": logged == stored}
    log(f"  HTTP c=4, new connection each: log on {on_cps:.0f}/s ({out['cpu_ms_on']} ms CPU), off {off_cps:.0f}/s "
        f"({out['cpu_ms_off']} ms CPU), ratio {out['ratio']:.3f}; {logged:,} entries for {stored:,} certificates")
    return out


def at_scale(fixture: Path, tmp: Path, log) -> dict:
    out = {}
    start = time.monotonic()
    svc = _open(fixture)  # a fixture cached before the log gets its log written here, once
    out["open_s"] = round(time.monotonic() - start, 1)
    entries = svc.store.log_size()
    path = log_path(svc.config, svc.paths)
    out["log_entries"] = entries
    out["log_bytes"] = path.stat().st_size
    log(f"  opening the instance (writing its log if it had none): {out['open_s']} s; "
        f"{entries:,} entries, {path.stat().st_size / 1e9:.2f} GB")
    start = time.monotonic()
    svc.log.checkpoint(svc.store, utcnow())
    out["checkpoint_s"] = round(time.monotonic() - start, 3)
    notes = [row["note"] for row in svc.store.log_checkpoints()]
    start = time.monotonic()
    report = log_check.verify(path, public_key_path(svc.paths).read_text().strip(), notes, svc.store)
    out["log_verify_s"] = round(time.monotonic() - start, 1)
    assert not report.problems, report.problems[:3]
    log(f"  log verify: {report.entries:,} entries, {report.checkpoints} checkpoints, store compared: "
        f"{out['log_verify_s']} s")
    start = time.monotonic()
    made = backups.take(svc.paths, svc.store, utcnow(), tmp / "backups")
    out["backup_s"] = round(time.monotonic() - start, 1)
    out["backup_bytes"] = made.stat().st_size
    log(f"  backup: {out['backup_s']} s, {made.stat().st_size / 1e9:.2f} GB")
    start = time.monotonic()
    with backups.check(made) as checked:
        backups.restore(checked, tmp / "restored")
    out["restore_s"] = round(time.monotonic() - start, 1)
    log(f"  verify and restore: {out['restore_s']} s")
    made.unlink()
    return out


def measure(scale_n: int, log, seconds: float = 10) -> dict:
    with tempfile.TemporaryDirectory(prefix="ca-bench-log-") as tmp:
        log("Issuance log: issue() with the log on vs off, alternating rounds")
        result = {"overhead": log_overhead(Path(tmp), rounds=6, per_round=200, log=log),
                  "http": http_overhead(Path(tmp), seconds, log)}
    with tempfile.TemporaryDirectory(prefix="ca-bench-restore-", dir=HERE) as tmp:
        log(f"Issuance log, backup and restore at {scale_n:,} certificates")
        result["scale"] = at_scale(build_fixture(HERE / ".cache", scale_n, log), Path(tmp), log)
    return result


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    count = int(args[0]) if args else 1_000_000
    seconds = float(args[1]) if len(args) > 1 else 10
    print(json.dumps(measure(count, lambda m: print(m, file=sys.stderr, flush=True), seconds), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
