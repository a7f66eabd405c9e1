"""OCSP responses per second: ca-server's /ocsp against `cfssl ocspserve` (pre-signed responses
from `cfssl ocspsign`) in the same run, POST and GET, concurrency 4 and 16, the same request for a
good certificate, wrk as the client; phases alternate so each ratio compares measurements seconds
apart. Before each phase one answer of each server is parsed and checked (SUCCESSFUL, the serial
asked about, GOOD); a phase where a sample is wrong or wrk counted an error on either side is
reported invalid, with the reason, and gets no ratio (issue 29). ca-server answers from the store (a revocation is what the next answer says); cfssl serves
a file signed in advance.

    python -m benchmarks.ocsp   (also part of `make bench`)"""

from __future__ import annotations

import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

from cryptography.x509 import ocsp

from .common import free_port
from .throughput import Server, ensure_cfssl, make_instance, ocsp_request_for_new_leaf, start_ca_server, write_cfssl_key

POST_SCRIPT = r"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/ocsp-request"
local f = io.open(os.getenv("OCSP_BODY"), "rb")
wrk.body = f:read("*all")
f:close()
function done(summary, latency, requests)
  io.write(string.format('WRK_JSON {"requests": %d, "duration_us": %d, "errors": %d, "p99_us": %d}\n',
    summary.requests, summary.duration,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(99)))
end
"""
GET_SCRIPT = "\n".join(line for line in POST_SCRIPT.splitlines()
                       if not line.startswith(("wrk.", "local f", "f:close")))


def wrk(url: str, script: Path, body: Path, concurrency: int, seconds: int) -> dict:
    out = subprocess.run(["wrk", "-t", "2", "-c", str(concurrency), "-d", f"{seconds}s", "-s", str(script), url],
                         capture_output=True, text=True, timeout=seconds + 60, env={**os.environ, "OCSP_BODY": str(body)})
    line = next(x for x in out.stdout.splitlines() if x.startswith("WRK_JSON "))
    result = json.loads(line[len("WRK_JSON "):])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    return result


def phase(server: Server, url: str, script: Path, body: Path, concurrency: int, seconds: int) -> dict:
    wrk(url, script, body, concurrency, 1)  # warm-up
    cpu0 = server.cpu()
    result = wrk(url, script, body, concurrency, seconds)
    cpu = server.cpu() - cpu0
    return {"rps": round(result["rps"]), "p99_ms": round(result["p99_us"] / 1000, 2), "errors": result["errors"],
            "cpu_us": round(cpu * 1e6 / max(result["requests"], 1), 1)}


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # a redirect is an answer we report, not one we follow


def sample(url: str, method: str, body: bytes, serial: int) -> str | None:
    """What is wrong with one answer of a server to the phase's request (None: a correct one)."""
    request = urllib.request.Request(url, data=body if method == "POST" else None, method=method,
                                     headers={"Content-Type": "application/ocsp-request"} if method == "POST" else {})
    try:
        with urllib.request.build_opener(_NoRedirects).open(request, timeout=10) as answer:
            der = answer.read()
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except OSError as exc:
        return f"no answer ({exc})"
    try:
        response = ocsp.load_der_ocsp_response(der)
    except ValueError:
        return "not an OCSP response"
    if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
        return f"OCSP {response.response_status.name}"
    if response.serial_number != serial or response.certificate_status != ocsp.OCSPCertStatus.GOOD:
        return f"serial {response.serial_number:x} {response.certificate_status.name}, not {serial:x} GOOD"
    return None


FLOOR_APP = """
ANSWER = open(__file__.replace("floor_app.py", "answer.der"), "rb").read()


def app(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/ocsp-response"), ("Content-Length", str(len(ANSWER)))])
    return [ANSWER]
"""


def start_floor(folder: Path, answer: bytes, port: int) -> Server:
    """The floor (issue 29): a bare Granian WSGI app, as many workers as ca-server's, answering a
    constant (ca-server's own answer to the phase's request) to every POST."""
    (folder / "answer.der").write_bytes(answer)
    (folder / "floor_app.py").write_text(FLOOR_APP)
    granian = str(Path(sys.executable).with_name("granian"))
    server = Server([granian, "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
                     "--working-dir", str(folder), "floor_app:app"], folder / "floor.log")
    _wait_cfssl(port)
    return server


def _median_phase(phases: list[dict]) -> dict:
    """One server's phases of a row: the median of each figure, its errors summed, and the CPU
    per answer of every round."""
    return {"rps": round(statistics.median(p["rps"] for p in phases)),
            "p99_ms": round(statistics.median(p["p99_ms"] for p in phases), 2),
            "errors": sum(p["errors"] for p in phases),
            "cpu_us": round(statistics.median(p["cpu_us"] for p in phases), 1),
            "cpu_us_rounds": [p["cpu_us"] for p in phases]}


def measure(log, seconds: int = 3, rounds: int = 5) -> dict:
    if ensure_cfssl() is None:
        log("  cfssl: not installed and could not be installed; no OCSP peer figures")
        return {}
    with tempfile.TemporaryDirectory(prefix="ca-bench-ocsp-") as tmp:
        folder = Path(tmp)
        root = make_instance(folder / "instance")
        record, request = ocsp_request_for_new_leaf(root)
        body = folder / "request.der"
        body.write_bytes(request)
        get_path = "/ocsp/" + quote(base64.b64encode(request).decode(), safe="")
        # cfssl: the same certificate, "good", signed in advance by the intermediate itself.
        key_file = write_cfssl_key(root, folder / "intermediate-key.pem")
        (folder / "leaf.pem").write_text(record.pem)
        signed = subprocess.run(["cfssl", "ocspsign", "-ca", str(root / "ca" / "intermediate.pem"), "-responder",
                                 str(root / "ca" / "intermediate.pem"), "-responder-key", str(key_file), "-cert",
                                 str(folder / "leaf.pem"), "-status", "good"], capture_output=True, text=True, check=True)
        # ocspsign prints {"ocspResponse": base64}; ocspserve reads bare base64 lines (given the JSON
        # it knew no response and answered every request UNAUTHORIZED, which earlier runs counted).
        (folder / "responses").write_text(json.loads(signed.stdout)["ocspResponse"] + "\n")
        key_file.unlink()
        scripts = {"POST": folder / "post.lua", "GET": folder / "get.lua"}
        scripts["POST"].write_text(POST_SCRIPT)
        scripts["GET"].write_text(GET_SCRIPT)
        ours_port, cfssl_port, floor_port = free_port(), free_port(), free_port()
        ours = start_ca_server(root, ours_port)
        answer = urllib.request.urlopen(urllib.request.Request(  # noqa: S310 - our own server
            f"http://127.0.0.1:{ours_port}/ocsp", data=request, headers={"Content-Type": "application/ocsp-request"}),
            timeout=10).read()
        floor = start_floor(folder, answer, floor_port)
        peer = Server(["cfssl", "ocspserve", "-address", "127.0.0.1", "-port", str(cfssl_port), "-responses",
                       str(folder / "responses")], folder / "cfssl.log")
        try:
            _wait_cfssl(cfssl_port)
            serial = record.certificate.serial_number
            encoded = base64.b64encode(request).decode()
            # RFC 6960 A.1 asks for the URL-encoded base64; use the first form ocspserve answers correctly.
            forms = [quote(encoded, safe=""), encoded, quote(encoded, safe="/+=")]
            cfssl_get = next((f for f in forms if sample(f"http://127.0.0.1:{cfssl_port}/{f}", "GET", request, serial)
                              is None), None)
            if cfssl_get is None:
                log("  cfssl ocspserve answers no GET form with a response (Debian's 1.2.0 decodes the URL path with "
                    "its leading '/' and turns '+' into ' ': 'Error decoding base64 from URL'), so the GET rows "
                    "measure ca-server alone")
            rows = []
            for method in ("POST", "GET"):
                for concurrency in (4, 16):
                    path = "/ocsp" if method == "POST" else get_path
                    urls = {"ca-server": f"http://127.0.0.1:{ours_port}{path}"}
                    if method == "POST" or cfssl_get is not None:
                        urls["cfssl"] = f"http://127.0.0.1:{cfssl_port}/{'' if method == 'POST' else cfssl_get}"
                    wrong = [f"{name}: {problem}" for name, url in urls.items()
                             if (problem := sample(url, method, request, serial))]
                    if "cfssl" not in urls:
                        wrong.append("cfssl: no GET form it answers")
                    servers = {"ca-server": (ours, urls["ca-server"])}
                    if "cfssl" in urls:
                        servers["cfssl"] = (peer, urls["cfssl"])
                    if method == "POST":  # the floor: what Granian alone costs per answer, in the same run
                        servers["floor"] = (floor, f"http://127.0.0.1:{floor_port}/")
                        if sample(servers["floor"][1], "POST", request, serial):
                            wrong.append("floor: a wrong answer")
                    # Rounds alternate the servers, and each figure is the median of its rounds: which
                    # worker the keep-alive connections land on moves one phase's CPU per answer by
                    # +-30% here, and a single phase per server made the ratio a draw.
                    runs: dict[str, list[dict]] = {name: [] for name in servers}
                    for _ in range(rounds):
                        for name, (server, url) in servers.items():
                            runs[name].append(phase(server, url, scripts[method], body, concurrency, seconds))
                    a = _median_phase(runs["ca-server"])
                    b = _median_phase(runs["cfssl"]) if "cfssl" in runs else {"rps": 0, "p99_ms": 0, "errors": 0,
                                                                              "cpu_us": 0}
                    wrong += [f"{name}: {sum(p['errors'] for p in phases)} errors in the phase"
                              for name, phases in runs.items() if any(p["errors"] for p in phases)]
                    valid = not wrong
                    row = {"method": method, "concurrency": concurrency, "rounds": rounds, "ca_server": a, "cfssl": b,
                           "valid": valid, "invalid_because": wrong or None,
                           "ratio": round(a["rps"] / b["rps"], 2) if valid and b["rps"] else None,
                           "cpu_ratio": round(a["cpu_us"] / b["cpu_us"], 2) if valid and b["cpu_us"] else None}
                    rows.append(row)
                    verdict = f"ratio {row['ratio']}, CPU {row['cpu_ratio']}x" if valid else \
                        f"INVALID ({'; '.join(wrong)}): no ratio"
                    if "floor" in runs:
                        f = row["floor"] = _median_phase(runs["floor"])
                        floor_ok = not [w for w in wrong if not w.startswith("cfssl")]
                        row["cpu_vs_floor"] = round(a["cpu_us"] / f["cpu_us"], 2) if floor_ok and f["cpu_us"] else None
                        verdict += f"; bare Granian {f['rps']}/s {f['cpu_us']} us CPU, ca-server at {row['cpu_vs_floor']}x"
                    log(f"  {method} c={concurrency} (median of {rounds}): ca-server {a['rps']}/s p99 {a['p99_ms']} ms "
                        f"{a['cpu_us']} us CPU {a['cpu_us_rounds']}; cfssl {b['rps']}/s p99 {b['p99_ms']} ms "
                        f"{b['cpu_us']} us CPU; {verdict}")
            return {"rows": rows}
        finally:
            ours.stop()
            peer.stop()
            floor.stop()


def _wait_cfssl(port: int) -> None:
    import socket

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("cfssl ocspserve did not come up")


if __name__ == "__main__":
    print(json.dumps(measure(lambda m: print(m, file=sys.stderr, flush=True)), indent=2))
