"""Intermediate rollover (issue 20): what serving two intermediates costs. Two servers at once
(one CA with one intermediate, one after a rollover), measured in alternating phases with wrk:
issuance over HTTP (new connection each: clients as they come) and OCSP GET for a certificate
of each intermediate. Ratios are rolled / single."""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

from ca_server import accounts, issuance
from ca_server.ca import rollover
from ca_server.clock import utcnow
from ca_server.config import Secrets
from ca_server.services import open_services

from .common import free_port, run_wrk
from .throughput import PASSPHRASE, make_instance, start_ca_server


def _ocsp_url(port: int, record, issuer) -> str:
    request = ocsp.OCSPRequestBuilder().add_certificate(record.certificate, issuer, hashes.SHA1()).build()
    return f"http://127.0.0.1:{port}/ocsp/" + quote(base64.b64encode(
        request.public_bytes(serialization.Encoding.DER)).decode(), safe="")


def _ocsp_rps(url: str, seconds: float) -> float:
    text = subprocess.run(["wrk", "-t", "2", "-c", "4", "-d", f"{max(1, round(seconds))}s", url], capture_output=True, text=True,
                          timeout=120).stdout
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith("Requests/sec")))


def measure(tmp: Path, csrs: list[str], seconds: float, log, rounds: int = 4) -> dict:
    sides = {}
    for label in ("single", "rolled"):
        root = make_instance(tmp / f"rollover-{label}")
        svc = open_services(root, secrets=Secrets(key_passphrase=PASSPHRASE))
        first = svc.authority.current
        old = issuance.issue(svc.config, svc.store, svc.authority, issuance.IssueRequest(csr=csrs[0]), utcnow())
        if label == "rolled":
            rollover.rollover_online(svc.authority, svc.store, svc.config, utcnow(), actor="bench")
        new = issuance.issue(svc.config, svc.store, svc.authority, issuance.IssueRequest(csr=csrs[1]), utcnow())
        token = accounts.create_token(svc.store, f"bench-{time.time_ns()}", is_admin=True, domains=(),
                                      allow_ip=None, now=dt.datetime.now(dt.UTC))
        bodies = root / "bodies.jsonl"
        bodies.write_text("".join(json.dumps({"csr": c}) + "\n" for c in csrs[2:]))
        port = free_port()
        sides[label] = {"server": start_ca_server(root, port), "port": port, "bodies": bodies,
                        "headers": {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
                        "ocsp_old": _ocsp_url(port, old, first.cert),
                        "ocsp_new": _ocsp_url(port, new, svc.authority.current.cert)}
    totals = {label: {"issued": 0.0, "ocsp_old": 0.0, "ocsp_new": 0.0} for label in sides}
    try:
        for n in range(rounds):
            for label in ("single", "rolled") if n % 2 == 0 else ("rolled", "single"):  # no side always first
                side = sides[label]
                url = f"http://127.0.0.1:{side['port']}/api/v1/certificates"
                done = run_wrk(url, side["bodies"], concurrency=4, seconds=seconds, headers=side["headers"],
                               fresh_connections=True)
                totals[label]["issued"] += done["requests"] / seconds / rounds
                for which in ("ocsp_old", "ocsp_new"):
                    totals[label][which] += _ocsp_rps(side[which], seconds / 2) / rounds
    finally:
        for side in sides.values():
            side["server"].stop()
    single, rolled = totals["single"], totals["rolled"]
    out = {"single": {k: round(v, 1) for k, v in single.items()}, "rolled": {k: round(v, 1) for k, v in rolled.items()},
           "ratio_issuance": round(rolled["issued"] / single["issued"], 3),
           "ratio_ocsp_old_intermediate": round(rolled["ocsp_old"] / single["ocsp_old"], 3),
           "ratio_ocsp_new_intermediate": round(rolled["ocsp_new"] / single["ocsp_new"], 3)}
    log(f"  issuance (new connection each, c=4): single {single['issued']:.0f}/s, after rollover "
        f"{rolled['issued']:.0f}/s, ratio {out['ratio_issuance']:.2f}")
    log(f"  OCSP GET c=4: old intermediate's certificate {rolled['ocsp_old']:.0f}/s (ratio "
        f"{out['ratio_ocsp_old_intermediate']:.2f}), new one's {rolled['ocsp_new']:.0f}/s (ratio "
        f"{out['ratio_ocsp_new_intermediate']:.2f})")
    return out
