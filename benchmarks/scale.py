"""ca-server at scale: a store of a million real signed certificates (built once, cached under
benchmarks/.cache/), lookups, search, the reminder pass, and a CRL of 100,000 entries."""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import multiprocessing
import os
import random
import shutil
import sqlite3
import statistics
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ca_server import accounts, create_app, revocation
from ca_server.clock import utcnow
from ca_server.config import Secrets
from ca_server.issuance import issuance_audit
from ca_server.models import CertificateRecord
from ca_server.notify import reminders
from ca_server.pki.keys import describe_public_key, spki_sha256
from ca_server.pki.serials import new_serial, serial_hex
from ca_server.services import open_services

from .common import HERE
from .throughput import PASSPHRASE, make_instance

BATCH = 10_000
DUE_EVERY = 100  # 1% of the certificates expire within the reminder window
# Written into COMPLETE: a cached fixture of another version is rebuilt. 2: with the issuance audit
# rows a real store has (version 1 had none, so its bytes per certificate left them out).
FIXTURE_VERSION = 2


def _records(args) -> list[CertificateRecord]:
    """Worker: sign certificates start..end with the instance's intermediate."""
    root, start, end, now = args
    svc = open_services(Path(root), secrets=Secrets(key_passphrase=PASSPHRASE), migrate=False)
    authority = svc.authority
    keys = [ec.generate_private_key(ec.SECP256R1()) for _ in range(32)]
    publics = [(k.public_key(), spki_sha256(k.public_key()), describe_public_key(k.public_key()).label) for k in keys]
    rng = random.Random(start)
    out = []
    for i in range(start, end):
        public, spki, label = publics[i % len(publics)]
        host = f"host{i}.scale.test"
        days = rng.uniform(1, 30) if i % DUE_EVERY == 0 else rng.uniform(31, 397)
        not_before = now - dt.timedelta(days=rng.uniform(0, 30))
        not_after = now + dt.timedelta(days=days)
        not_after = not_after.replace(microsecond=0)
        serial = new_serial()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
        cert = authority.leaf_template.sign(
            subject=subject, public_key=public, sans=[x509.DNSName(host), x509.DNSName(f"www.{host}")],
            ekus=("serverAuth",), serial=serial, not_before=not_before.replace(microsecond=0), not_after=not_after)
        der = cert.public_bytes(Encoding.DER)
        out.append(CertificateRecord(
            serial=serial_hex(serial), issued_at=not_before.replace(microsecond=0),
            not_before=not_before.replace(microsecond=0), not_after=not_after, subject=f"CN={host}",
            issuer=authority.intermediate.subject.rfc4514_string(), common_name=host,
            sans=(f"DNS:{host}", f"DNS:www.{host}"), profile="server", key_label=label,
            fingerprint_sha256=hashlib.sha256(der).hexdigest(), fingerprint_sha1=hashlib.sha1(der).hexdigest(),
            spki_sha256=spki, der=der, notify=("owner@example.test",), requester="token:bench"))
    return out


def build_fixture(cache: Path, count: int, log) -> Path:
    """The store of `count` certificates, under `cache`; reused when a complete one is there."""
    root = cache / f"scale-{count}"
    done = root / "COMPLETE"
    stamp = f"{count} certificates, fixture version {FIXTURE_VERSION}"
    if done.exists() and done.read_text() == stamp:
        log(f"  using the cached fixture {root} ({count:,} certificates)")
        return root
    if root.exists():
        log(f"  rebuilding {root}: it is not a complete version {FIXTURE_VERSION} fixture")
        shutil.rmtree(root)
    make_instance(root)
    svc = open_services(root, secrets=Secrets(key_passphrase=PASSPHRASE))
    now = utcnow()
    jobs = [(str(root), s, min(s + BATCH, count), now) for s in range(0, count, BATCH)]
    start = time.monotonic()
    with multiprocessing.get_context("fork").Pool(os.cpu_count() or 2) as pool:
        for n, batch in enumerate(pool.imap(_records, jobs), 1):
            svc.store.import_certificates(batch, audits=[issuance_audit(r, "127.0.0.1") for r in batch])
            if n % 10 == 0:
                log(f"  fixture: {n * BATCH:,} certificates ({time.monotonic() - start:.0f} s)")
    svc.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    svc.store.db.execute("ANALYZE")
    done.write_text(stamp)
    log(f"  fixture built in {time.monotonic() - start:.0f} s")
    return root


def measure(root: Path, log) -> dict:
    svc = open_services(root, secrets=Secrets(key_passphrase=PASSPHRASE))
    conn = sqlite3.connect(root / "ca.sqlite3")
    count = conn.execute("SELECT count(*) FROM certificates").fetchone()[0]
    max_rowid = conn.execute("SELECT max(rowid) FROM certificates").fetchone()[0]
    rng = random.Random(1)
    serials = [row[0] for row in (conn.execute("SELECT serial FROM certificates WHERE rowid = ?",
                                               [rng.randint(1, max_rowid)]).fetchone() for _ in range(10_000)) if row]
    times = []
    for serial in serials:
        t = time.perf_counter()
        record = svc.store.get_certificate(serial, with_renewal=True)
        times.append(time.perf_counter() - t)
        assert record is not None
    lookup_p99 = statistics.quantiles(times, n=100)[98] * 1000
    log(f"  lookup by serial: p50 {statistics.median(times) * 1000:.3f} ms, p99 {lookup_p99:.3f} ms "
        f"({len(serials):,} lookups)")

    app = create_app(instance_path=root)
    token = accounts.create_token(svc.store, f"scale-{time.time_ns()}", is_admin=True, domains=(), allow_ip=None,
                                  now=utcnow())
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    host = serials[0]
    example_host = svc.store.get_certificate(host).common_name
    # "host1" matches 111,111 names (host1, host1x ... host1xxxxx), none among the newest 800,000.
    # The store has no revoked certificate; every one expires within ten years.
    searches = _page_times(client, headers, "/certificates", (
        ("name", f"q={example_host}"), ("name prefix", f"q={example_host[:8]}"),
        ("serial prefix", f"q={host[:10]}"), ("domain (matches all)", "q=scale.test"),
        ("prefix, old matches only", "q=host1"), ("status=revoked (none)", "status=revoked"),
        ("expiring within 10 years (all)", "expiring_within_days=3650"),
        ("prefix + status matching nothing", "q=host1&status=revoked")), log)
    # Every certificate's issuance is in the audit log (one row each, actor token:bench).
    audit_pages = _page_times(client, headers, "/admin/audit", (
        ("newest", ""), ("action=issue (every row)", "action=issue"),
        ("actor (every row)", "actor=token:bench"), ("serial", f"serial={serials[1]}"),
        ("action=revoke (none)", "action=revoke"),
        ("action=revoke + the busy actor", "action=revoke&actor=token:bench"),
        ("action=issue, an old page", f"action=issue&before={count // 2}")), log)
    audit_rows = conn.execute("SELECT count(*) FROM audit_log").fetchone()[0]

    now = utcnow()
    t = time.perf_counter()
    due = reminders.due_reminders(svc.config, svc.store, now)
    reminder_s = time.perf_counter() - t
    log(f"  reminder pass (which are due): {len(due):,} due of {count:,} in {reminder_s:.2f} s")
    svc.store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = os.path.getsize(root / "ca.sqlite3")
    log(f"  database: {size / 1e9:.2f} GB, {size / count:.0f} bytes per certificate")
    return {"certificates": count, "lookup_p99_ms": round(lookup_p99, 3), "search_ms": round(max(searches.values()), 1),
            "search_ms_by_query": _rounded(searches), "reminder_pass_s": round(reminder_s, 3),
            "reminders_due": len(due), "bytes_per_cert": round(size / count), "audit_rows": audit_rows,
            "audit_ms": round(max(audit_pages.values()), 1), "audit_ms_by_query": _rounded(audit_pages)}


def _page_times(client, headers: dict, path: str, queries, log) -> dict[str, float]:
    """Milliseconds per page load (mean of five, after one to warm up), by label."""
    times = {}
    for label, query in queries:
        client.get(f"{path}?{query}", headers=headers)
        t = time.perf_counter()
        for _ in range(5):
            response = client.get(f"{path}?{query}", headers=headers)
            assert response.status_code == 200
        times[label] = (time.perf_counter() - t) / 5 * 1000
        log(f"  {path}?{query} ({label}): {times[label]:.1f} ms")
    return times


def _rounded(times: dict[str, float]) -> dict[str, float]:
    return {label: round(ms, 1) for label, ms in times.items()}


def crl_build(root: Path, entries: int, log) -> dict:
    """A CRL of `entries` revoked certificates (distinct serials; the rows share one DER, which the
    CRL never reads)."""
    if root.exists():
        shutil.rmtree(root)
    make_instance(root)
    svc = open_services(root, secrets=Secrets(key_passphrase=PASSPHRASE))
    now = utcnow().replace(microsecond=0)
    template = _records((str(root), 0, 1, now))[0]
    for start in range(0, entries, BATCH):
        batch = []
        for _ in range(start, min(start + BATCH, entries)):
            serial = serial_hex(new_serial())
            batch.append(CertificateRecord(**{**template.__dict__, "serial": serial, "extra": {},
                                              "revoked_at": now, "revocation_reason": "keyCompromise",
                                              "sans": (f"DNS:{serial}.crl.test",)}))
        svc.store.import_certificates(batch)
    svc.authority.intermediate_key  # noqa: B018  (decrypt outside the timing)
    t = time.perf_counter()
    published = revocation.publish_crl(svc.config, svc.store, svc.authority, "intermediate", now)
    seconds = time.perf_counter() - t
    crl = x509.load_der_x509_crl(published.der)
    assert len(crl) == entries and crl.is_signature_valid(svc.authority.intermediate.public_key())
    log(f"  CRL with {entries:,} entries: built in {seconds:.2f} s, {len(published.der) / 1e6:.1f} MB")
    shutil.rmtree(root)
    return {"entries": entries, "build_s": round(seconds, 2), "bytes": len(published.der)}


def main(argv: list[str] | None = None) -> int:
    """Only this part of `make bench`: python -m benchmarks.scale [COUNT] [--cache DIR] prints the
    measurements as JSON (progress on stderr)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale", description=main.__doc__)
    parser.add_argument("count", type=int, nargs="?", default=1_000_000, help="certificates in the store")
    parser.add_argument("--cache", type=Path, default=HERE / ".cache", help="where fixtures are kept")
    args = parser.parse_args(argv)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    print(json.dumps(measure(build_fixture(args.cache, args.count, log), log), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
