"""Helpers the benchmark parts share: CSRs, process CPU and memory, wrk runs."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

HERE = Path(__file__).resolve().parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def make_csrs(n: int, prefix: str = "bench") -> list[str]:
    """Fresh EC P-256 CSRs with two DNS SANs each (the workload of the issue's measurements)."""
    out = []
    for i in range(n):
        key = ec.generate_private_key(ec.SECP256R1())
        host = f"{prefix}{i}.example.test"
        csr = (x509.CertificateSigningRequestBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(host), x509.DNSName(f"www.{host}")]),
                              critical=False)
               .sign(key, hashes.SHA256()))
        out.append(csr.public_bytes(Encoding.PEM).decode())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def cpu_seconds(pid: int) -> float:
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError):
            continue
    return total / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    total = 0
    for p in process_tree(pid):
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


WRK_SCRIPT = r"""
local bodies = {}
local counter = 0
local thread_no = 0
function setup(thread)
  thread:set("id", thread_no)
  thread_no = thread_no + 1
end
function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then bodies[#bodies + 1] = line end
  end
  counter = id * 7919
end
function request()
  counter = counter + 1
  return wrk.format("POST", nil, nil, bodies[(counter % #bodies) + 1])
end
function done(summary, latency, requests)
  io.write(string.format('WRK_JSON {"requests": %d, "duration_us": %d, "status_errors": %d, "socket_errors": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""


def run_wrk(url: str, bodies_file: Path, *, concurrency: int, seconds: float, headers: dict[str, str],
            binary_bodies: bool = False, fresh_connections: bool = False, get_paths: bool = False) -> dict:
    """POST the bodies (one per line) round-robin; returns the WRK_JSON summary. With
    `fresh_connections` each request goes on a new connection (`Connection: close`: the server
    closes, wrk connects again), as curl, scripts and most ACME clients do. With `get_paths` each
    line is a path (and query) to GET instead (SCEP's PKIOperation as Cisco IOS sends it)."""
    script = bodies_file.with_suffix(".lua")
    script.write_text(WRK_SCRIPT.replace('wrk.format("POST", nil, nil, bodies', 'wrk.format("GET", bodies')
                      if get_paths else WRK_SCRIPT)
    args = ["wrk", "-t", str(min(concurrency, 2)), "-c", str(concurrency), "-d", f"{max(1, round(seconds))}s", "--timeout", "10s",
            "-s", str(script), "-H", "Connection: close" if fresh_connections else "Connection: keep-alive"]
    args += [a for k, v in headers.items() for a in ("-H", f"{k}: {v}")]
    args += [url, "--", str(bodies_file)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
    for line in out.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            result = json.loads(line[len("WRK_JSON "):])
            result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
            return result
    said = [line.strip() for line in out.stdout.splitlines()
            if any(k in line for k in ("requests in", "errors", "Non-2xx", "Requests/sec"))]
    raise RuntimeError(f"wrk printed no summary (exit status {out.returncode}): "
                       + "; ".join(said + [line.strip() for line in out.stderr.splitlines() if line.strip()][-3:]))


def wrk_faults(text: str) -> list[str]:
    """What wrk's plain report says went wrong: error answers, socket errors, or no rate at all."""
    faults = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("Non-2xx or 3xx responses:"):
            faults.append(f"{line.split(':')[1].strip()} error answers")
        elif line.startswith("Socket errors:"):
            faults.append(f"socket errors ({line.split(':', 1)[1].strip()})")
    if not any(line.startswith("Requests/sec") for line in text.splitlines()):
        faults.append(f"wrk printed no rate: {' '.join(text.split())[:200]}")
    return faults


def wait_http(url: str, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")
