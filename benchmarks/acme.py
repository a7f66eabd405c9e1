"""ACME orders per second: ca-server (`serve --tls`) against Debian's Pebble in the same run, with
the same client, the same http-01 responder and the same DNS (pebble-challtestsrv). Each order is
a whole client's work: a new account, a new order for one name, the http-01 challenge answered,
polling until ready, finalize, polling until valid, the certificate downloaded. Pebble keeps
nothing; ca-server stores and audits every account, order and certificate.

    python -m benchmarks.acme [ORDERS]   (also part of `make bench`)"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import josepy as jose
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.acme_client import http01_responder

from .common import free_port
from .throughput import PASSPHRASE, Server, make_instance

POLL = 0.02


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Client:
    """A lean ACME client (the same for both servers): josepy signs, requests sends."""

    def __init__(self, directory: str, verify: str) -> None:
        self.session = requests.Session()
        self.session.verify = verify
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE here would win over session.verify
        self.dir = self.session.get(directory, timeout=30).json()
        self.key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
        self.kid: str | None = None
        self.nonce: str | None = None

    def post(self, url: str, payload) -> requests.Response:
        if self.nonce is None:
            self.nonce = self.session.head(self.dir["newNonce"], timeout=30).headers["Replay-Nonce"]
        protected = {"alg": "ES256", "nonce": self.nonce, "url": url}
        if self.kid:
            protected["kid"] = self.kid
        else:
            protected["jwk"] = self.key.public_key().to_partial_json()
        p64 = b64(json.dumps(protected).encode())
        body64 = "" if payload is None else b64(json.dumps(payload).encode())
        signature = jose.ES256.sign(self.key.key, f"{p64}.{body64}".encode())
        response = self.session.post(url, data=json.dumps({"protected": p64, "payload": body64,
                                                            "signature": b64(signature)}),
                                     headers={"Content-Type": "application/jose+json"}, timeout=60)
        self.nonce = response.headers.get("Replay-Nonce")
        if response.status_code >= 400:
            raise RuntimeError(f"{url}: {response.status_code} {response.text[:300]}")
        return response

    def order(self, name: str, tokens: dict) -> None:
        account = self.post(self.dir["newAccount"], {"termsOfServiceAgreed": True,
                                                     "contact": ["mailto:bench@example.test"]})
        self.kid = account.headers["Location"]
        created = self.post(self.dir["newOrder"], {"identifiers": [{"type": "dns", "value": name}]})
        order_url, order = created.headers["Location"], created.json()
        for authz_url in order["authorizations"]:
            authz = self.post(authz_url, None).json()
            challenge = next(c for c in authz["challenges"] if c["type"] == "http-01")
            tokens[challenge["token"]] = f"{challenge['token']}.{b64(self.key.thumbprint())}"
            self.post(challenge["url"], {})
            while (status := self.post(authz_url, None).json()["status"]) == "pending":
                time.sleep(POLL)
            assert status == "valid", status
        key = ec.generate_private_key(ec.SECP256R1())
        csr = (x509.CertificateSigningRequestBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
               .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
               .sign(key, hashes.SHA256()))
        while self.post(order_url, None).json()["status"] == "pending":
            time.sleep(POLL)
        done = self.post(order["finalize"], {"csr": b64(csr.public_bytes(serialization.Encoding.DER))}).json()
        while done["status"] in ("processing", "ready"):
            time.sleep(POLL)
            done = self.post(order_url, None).json()
        assert done["status"] == "valid", done
        chain = self.post(done["certificate"], None).text
        leaf = x509.load_pem_x509_certificate(chain.encode())  # the first of the chain
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
        if names != [name] or leaf.public_key().public_numbers() != key.public_key().public_numbers():
            raise RuntimeError(f"{done['certificate']}: a certificate for {names}, not for {name} and this key")


def run_orders(directory: str, verify: str, prefix: str, count: int, concurrency: int, tokens: dict,
               server: Server) -> dict:
    latencies: list[float] = []
    errors: list[str] = []

    def one(i: int) -> None:
        started = time.perf_counter()
        try:
            Client(directory, verify).order(f"{prefix}{i}.example.test", tokens)
        except Exception as exc:  # noqa: BLE001 - counted: a round with an error is invalid
            errors.append(str(exc)[:200])
            return
        latencies.append(time.perf_counter() - started)

    cpu0, started = server.cpu(), time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(count)))
    elapsed, cpu = time.perf_counter() - started, server.cpu() - cpu0
    latencies.sort()
    done = max(len(latencies), 1)
    return {"orders": len(latencies), "orders_per_s": round(len(latencies) / elapsed, 2),
            "cpu_ms_per_order": round(cpu * 1000 / done, 2),
            "p99_ms": round(latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000, 1) if latencies else 0.0,
            "errors": len(errors), **({"first_error": errors[0]} if errors else {})}


def localhost_tls(folder: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a localhost certificate for Pebble, which ships none."""
    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench pebble CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
          .not_valid_after(now + dt.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True).sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = folder / "pebble-ca.pem", folder / "pebble-cert.pem", folder / "pebble-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def ensure(*tools: str) -> bool:
    if all(shutil.which(t) for t in tools):
        return True
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pebble",
                       shell=True, capture_output=True, timeout=600)
    return all(shutil.which(t) for t in tools)


@contextlib.contextmanager
def servers(folder: Path, pebble: bool = True, make=make_instance):
    """ca-server (`serve --tls`) and, with `pebble`, Pebble, on the same DNS (pebble-challtestsrv)
    and the same http-01 responder. Yields ((ca-server, its directory URL, the root to trust),
    (Pebble, its directory URL, its CA) or None, the responder's tokens, ca-server's instance).
    `make(folder)` makes the instance (benchmarks/ab.py: by the code of the build under test)."""
    dns_port, management, http01 = free_port(), free_port(), free_port()
    started: list[Server] = []
    with contextlib.ExitStack() as stack:
        started.append(Server(["pebble-challtestsrv", "-http01", "", "-https01", "", "-tlsalpn01", "", "-dns01",
                               f"127.0.0.1:{dns_port}", "-management", f"127.0.0.1:{management}", "-defaultIPv4",
                               "127.0.0.1", "-defaultIPv6", ""], folder / "dns.log"))
        stack.callback(lambda: [server.stop() for server in started])
        tokens = stack.enter_context(http01_responder(http01))
        port = free_port()
        root = make(folder / "instance")
        config = (root / "config.toml").read_text()
        (root / "config.toml").write_text(config.replace("[server]\n", f'[server]\nbase_url = "https://localhost:{port}"\n', 1)
                                          + f'\n[acme]\nhttp01_port = {http01}\ndns_resolvers = ["127.0.0.1:{dns_port}"]\n')
        ours = Server([sys.executable, "-m", "ca_server", "--instance", str(root), "serve", "--host", "127.0.0.1",
                       "--port", str(port), "--tls"], root / "serve.log", {"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE})
        started.append(ours)
        peer = None
        if pebble:
            pebble_port = free_port()
            ca, cert, key = localhost_tls(folder)
            (folder / "pebble.json").write_text(json.dumps({"pebble": {
                "listenAddress": f"127.0.0.1:{pebble_port}", "managementListenAddress": f"127.0.0.1:{free_port()}",
                "certificate": str(cert), "privateKey": str(key), "httpPort": http01, "tlsPort": free_port(),
                "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
            started.append(Server(["pebble", "-config", str(folder / "pebble.json"), "-dnsserver",
                                    f"127.0.0.1:{dns_port}"], folder / "pebble.log",
                                   {"PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0"}))
            peer = (started[-1], f"https://localhost:{pebble_port}/dir", str(ca))
            _wait(peer[1], peer[2])
        ours_dir = f"https://localhost:{port}/acme/directory"
        _wait(ours_dir, str(root / "ca" / "root.pem"))
        yield (ours, ours_dir, str(root / "ca" / "root.pem")), peer, tokens, root


def measure(count: int, log, concurrency: int = 4, rounds: int = 5) -> dict:
    """`rounds` alternating rounds of `count` orders on each server. The CPU ratio is that of the
    medians: this machine's speed drifts within minutes (the two rounds of 100 orders of one
    `make bench` read 10.9 and 9.1 ms an order), and a median of five moves less than a mean of two."""
    if not ensure("pebble", "pebble-challtestsrv"):
        log("  pebble: not installed and could not be installed (apt-get pebble); no ACME figures")
        return {}
    with tempfile.TemporaryDirectory(prefix="ca-bench-acme-") as tmp, servers(Path(tmp)) as (ca_server, peer, tokens,
                                                                                            root):
        ours, ours_dir, ours_root = ca_server
        pebble, pebble_dir, pebble_ca = peer
        out: dict = {"ca_server": [], "pebble": []}
        for r in range(rounds):  # alternating, so both see the same machine
            out["ca_server"].append(run_orders(ours_dir, ours_root, f"o{r}-", count, concurrency, tokens, ours))
            out["pebble"].append(run_orders(pebble_dir, pebble_ca, f"p{r}-", count, concurrency, tokens, pebble))
            log(f"  round {r + 1}: ca-server {out['ca_server'][-1]}, pebble {out['pebble'][-1]}")
        # Only correct work counts (issue 29): every order's certificate is checked (its name, its
        # key); a round where either server failed an order makes the comparison invalid.
        failed = [f"{k} round {i + 1}: {r['errors']} failed orders ({r.get('first_error')})"
                  for k, rounds_ in out.items() for i, r in enumerate(rounds_) if r["errors"]]
        out["valid"], out["invalid_because"] = not failed, failed or None
        best = {k: max(v, key=lambda x: x["orders_per_s"]) for k, v in out.items() if k in ("ca_server", "pebble")}
        out["ratio"] = round(best["ca_server"]["orders_per_s"] / best["pebble"]["orders_per_s"], 3) if not failed \
            else None
        cpu = {k: statistics.median(r["cpu_ms_per_order"] for r in out[k]) for k in ("ca_server", "pebble")}
        out["cpu_ratio"] = round(cpu["ca_server"] / cpu["pebble"], 2) if not failed else None
        # Each round's own ratio too (the two servers a few seconds apart): the target is every round.
        out["round_cpu_ratios"] = [round(o["cpu_ms_per_order"] / p["cpu_ms_per_order"], 2)
                                   for o, p in zip(out["ca_server"], out["pebble"], strict=True)] if not failed else None
        log(f"  CPU per order: ca-server {cpu['ca_server']:.1f} ms, Pebble {cpu['pebble']:.1f} ms (medians of "
            f"{rounds} rounds): " + (f"{out['cpu_ratio']}x (target 1.0x); each round {out['round_cpu_ratios']}"
                                     if not failed else f"INVALID: {'; '.join(failed)}"))
        with sqlite3.connect(root / "ca.sqlite3") as db:
            out["ca_server_certificates_stored"] = db.execute("SELECT count(*) FROM certificates").fetchone()[0]
            out["ca_server_orders_audited"] = db.execute(
                "SELECT count(*) FROM audit_log WHERE action = 'issue' AND detail LIKE '%acme_order%'").fetchone()[0]
        return out


def _wait(url: str, verify: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            requests.get(url, verify=verify, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


if __name__ == "__main__":
    result = measure(int(sys.argv[1]) if len(sys.argv) > 1 else 100, lambda m: print(m, file=sys.stderr, flush=True))
    print(json.dumps(result, indent=2))
