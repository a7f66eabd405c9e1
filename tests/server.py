"""Start the real `ca-server serve` (Granian) on a free loopback port for a test."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import requests

from .checks import run_openssl
from .factories import make_csr, pem


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """The real command in its own process, as an operator runs it (without CA_SERVER_INSTANCE: the
    offline root's machine has no instance; give --instance where one is meant)."""
    full = {k: v for k, v in os.environ.items() if k != "CA_SERVER_INSTANCE"}
    return subprocess.run([sys.executable, "-m", "ca_server", *args], capture_output=True, text=True,
                          env={**full, **(env or {})}, cwd=cwd, timeout=120)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(instance: Path, *, workers: int = 2, env: dict | None = None, port: int | None = None,
                   args: tuple[str, ...] = (), host_name: str = "127.0.0.1", procs: list | None = None,
                   trust: Path | None = None):
    """Yields the base URL; the server's output is in instance/serve.log. With "--tls" (or
    "--tls-cert") in `args` the URL is https://host_name:port and the health check trusts the
    instance's root (or `trust`)."""
    port = port or free_port()
    tls = "--tls" in args or "--tls-cert" in args
    log = open(instance / "serve.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ca_server", "--instance", str(instance), "serve", "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(workers), *args],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True,
    )
    if procs is not None:
        procs.append(proc)
    base = f"https://{host_name}:{port}" if tls else f"http://127.0.0.1:{port}"
    verify = str(trust or instance / "ca" / "root.pem") if tls else True
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {(instance / 'serve.log').read_text()[-3000:]}")
            try:
                if requests.get(f"{base}/healthz", timeout=1, verify=verify).status_code == 200:
                    break
            except (requests.ConnectionError, requests.exceptions.SSLError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start: {(instance / 'serve.log').read_text()[-3000:]}")
            time.sleep(0.1)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def server_errors(instance: Path, most: int = 6000) -> str:
    """The server log from its first traceback or error line (at most `most` characters), for an
    assertion's message: what a failed request did on the server's side."""
    text = (instance / "serve.log").read_text(errors="replace")
    starts = [i for i in (text.find("Traceback"), text.find("[ERROR]")) if i >= 0]
    return text[max(0, min(starts) - 300):][:most] if starts else "(no traceback or error in serve.log)"


def issue_verified(base: str, token: str, name: str, root_pem: Path, folder: Path) -> tuple[dict, Path, Path]:
    """Issue `name` over the API, save the leaf and its chain in `folder`, and check with openssl
    that they verify against `root_pem`: (certificate JSON, leaf.pem, chain.pem)."""
    made = requests.post(f"{base}/api/v1/certificates", json={"csr": pem(make_csr([name]))},
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert made.status_code == 201, made.text
    leaf, chain = folder / "leaf.pem", folder / "chain.pem"
    leaf.write_text(made.json()["certificate"])
    chain.write_text(made.json()["chain"])
    verified = run_openssl("verify", "-CAfile", str(root_pem), "-untrusted", str(chain), str(leaf))
    assert verified.returncode == 0, verified.stdout + verified.stderr
    return made.json(), leaf, chain
