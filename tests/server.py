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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_server(instance: Path, *, workers: int = 2, env: dict | None = None, port: int | None = None):
    """Yields the base URL; the server's output is in instance/serve.log."""
    port = port or free_port()
    log = open(instance / "serve.log", "ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ca_server", "--instance", str(instance), "serve", "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(workers)],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {(instance / 'serve.log').read_text()[-3000:]}")
            try:
                if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
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
