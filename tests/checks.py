"""Reusable checks with real tools: the openssl CLI, pkilint, a TLS handshake over loopback."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest


def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        pytest.skip("the openssl CLI is not installed (make test installs Debian's openssl)")
    return path


def run_openssl(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([openssl(), *args], input=input, capture_output=True, timeout=60)


def assert_openssl_verifies(leaf: Path, root: Path, untrusted: Path | None = None, *extra: str) -> None:
    args = ["verify", "-CAfile", str(root)]
    if untrusted is not None:
        args += ["-untrusted", str(untrusted)]
    result = run_openssl(*args, *extra, str(leaf))
    assert result.returncode == 0 and b": OK" in result.stdout, (result.stdout + result.stderr).decode()


def pkilint_findings(path: Path, tool: str = "lint_pkix_cert", *tool_args: str) -> list[dict]:
    """Findings of severity WARNING or worse from one of pkilint's linters."""
    exe = Path(sys.executable).with_name(tool)
    result = subprocess.run([str(exe), "lint", *tool_args, "-s", "WARNING", "-f", "JSON", str(path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode in (0, 1), result.stderr
    out = result.stdout.strip()
    if not out:
        return []
    data = json.loads(out)
    findings = []
    for entry in data.get("results", data if isinstance(data, list) else []):
        for desc in entry.get("finding_descriptions", []):
            findings.append({"validator": entry.get("validator"), "node": entry.get("node_path"), **desc})
    return findings


def assert_pkilint_clean(path: Path, tool: str = "lint_pkix_cert", *tool_args: str,
                         allow: tuple[str, ...] = ()) -> None:
    bad = [f for f in pkilint_findings(path, tool, *tool_args)
           if f.get("severity") in ("FATAL", "ERROR", "WARNING") and f.get("code") not in allow]
    assert not bad, f"pkilint findings for {path.name}: {bad}"


def tls_handshake(*, chain_pem: Path, key_pem: Path, root_pem: Path, server_hostname: str) -> tuple[bool, str]:
    """Serve chain+key on 127.0.0.1 and connect with hostname checking against `root_pem`.
    Returns (succeeded, error text)."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(str(chain_pem), str(key_pem))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass
        finally:
            listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client_ctx = ssl.create_default_context(cafile=str(root_pem))
    assert client_ctx.check_hostname and client_ctx.verify_mode == ssl.CERT_REQUIRED
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with client_ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
                tls.sendall(b"x")
        return True, ""
    except ssl.SSLError as exc:
        return False, str(exc)
    finally:
        thread.join(timeout=10)


@contextlib.contextmanager
def log_folder_unwritable(instance: Path):
    """Inside: the instance's issuance-log folder is a file, so the log cannot be written (a disk
    gone or read-only, as far as the log can tell; the tests run as root, so modes would not do)."""
    folder, away = instance / "issuance-log", instance / "issuance-log.away"
    folder.mkdir(exist_ok=True)
    shutil.move(folder, away)
    folder.write_text("a file where the log's folder should be")
    try:
        yield
    finally:
        folder.unlink()
        shutil.move(away, folder)


def wait_until(condition, seconds: float, step: float = 0.1) -> None:
    """Poll `condition` until it holds or `seconds` pass; the caller asserts what it expects."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(step)


def well_inside_a_minute(burst_seconds: float = 5.0) -> None:
    """Wait, if needed, so a burst of requests under a per-minute rate limit ends before the next
    whole minute. The limiter's sliding windows start on whole minutes of the epoch; in the new one
    the old one's count is weighted by the fraction of a minute left (10 hits count 9.99 a moment
    after), so a burst that crosses a minute's start is let one request further."""
    left = 60 - time.time() % 60
    if left < burst_seconds:
        time.sleep(left + 0.05)


def serials_in_database_file(path) -> set[str]:
    """Serials the database file itself holds, not counting the WAL (read while it may be written:
    a torn read is retried)."""
    for _ in range(50):
        try:
            conn = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
            try:
                return {row[0] for row in conn.execute("SELECT serial FROM certificates")}
            finally:
                conn.close()
        except sqlite3.DatabaseError:
            time.sleep(0.05)
    raise AssertionError("the database file could not be read")


def need(tool: str) -> str:
    """The path of a client program a test drives, or a skip that says why it is missing."""
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (make test installs it from Debian: the Makefile's TEST_DEBS)")
    return path



def go_build(program: str, out_dir: Path) -> Path:
    """tests/PROGRAM/main.go built with Debian's golang.org/x/crypto (GOPATH mode, no network)."""
    go = need("go")
    if not Path("/usr/share/gocode/src/golang.org/x/crypto/acme").exists():
        pytest.fail("golang-golang-x-crypto-dev is not installed (make system-deps installs it)")
    out = out_dir / f"{program}-bin"
    env = {"GO111MODULE": "off", "GOPATH": "/usr/share/gocode", "GOCACHE": str(out_dir / "gocache"),
           "HOME": str(out_dir), "PATH": "/usr/bin:/bin"}
    source = Path(__file__).with_name(program) / "main.go"
    done = subprocess.run([go, "build", "-o", str(out), str(source)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return out


@contextlib.contextmanager
def openssl_s_server(cert: Path, chain: Path, key: Path):
    """`openssl s_server -www` sending `cert` then `chain`, on a free loopback port: yields the port
    once it accepts connections."""
    from .server import free_port  # tests/server.py imports this module

    port = free_port()
    server = subprocess.Popen([openssl(), "s_server", "-cert", str(cert), "-cert_chain", str(chain), "-key", str(key),
                               "-accept", str(port), "-www", "-quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "openssl s_server did not listen"
                time.sleep(0.1)
        yield port
    finally:
        server.terminate()
        server.wait(timeout=10)

def tls_server_context(svc, tmp_path: Path):
    """A server-side ssl.SSLContext with a certificate this CA issued for 127.0.0.1 (and
    relay.example.test), as an internal mail relay or chat server has."""
    import datetime as dt

    from cryptography.hazmat.primitives import serialization

    from ca_server import issuance

    from .factories import cached_key, make_csr, pem

    key = cached_key("ec-p256", 40)
    record = issuance.issue(svc.config, svc.store, svc.authority, issuance.IssueRequest(
        csr=pem(make_csr(["relay.example.test"], ips=["127.0.0.1"], key=key))), dt.datetime.now(dt.UTC))
    (tmp_path / "relay.pem").write_text(record.pem + svc.authority.intermediate_pem)
    (tmp_path / "relay.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "relay.pem", tmp_path / "relay.key")
    return context


@contextlib.contextmanager
def silent_server():
    """A TCP server on 127.0.0.1 that takes every connection and never says a word (a hung mail
    relay or chat server, a tarpit). Yields (port, the connections it took)."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def take() -> None:
        while True:
            try:
                accepted.append(listener.accept()[0])  # kept open, unanswered
            except OSError:
                return

    threading.Thread(target=take, daemon=True).start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        listener.close()
        for conn in accepted:
            conn.close()


@contextlib.contextmanager
def trickling_server(answer: bytes, gap: float = 0.1):
    """A TCP server on 127.0.0.1 that reads a request and sends `answer` a byte every `gap`
    seconds, each byte well within any per-read timeout. Yields its port."""
    listener = socket.create_server(("127.0.0.1", 0))

    def trickle() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            for byte in answer:
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return
                time.sleep(gap)

    threading.Thread(target=trickle, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
