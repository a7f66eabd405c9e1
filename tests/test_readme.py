"""The README runs as written (issue 30): in a fresh copy of this tree, `make run` from the Quick
start, then every ```sh block of the Quick start, section 3 (issue certificates) and the ACME
section, in order, in bash with `set -e`. certbot is Debian's; `sudo` is provided (the tests run
as root) and certbot's folders are kept in the test's tmp dir through its cli.ini."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from cryptography import x509

from .checks import assert_openssl_verifies
from .test_acme_clients import client_env

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("## Quick start", "### 3. Issue certificates", "### ACME: certificates that renew themselves")


def shell_blocks(readme: str, heading: str) -> list[str]:
    """The ```sh blocks between `heading` and the next heading of its level or above."""
    start = readme.index(heading) + len(heading)
    level = len(heading.split(" ", 1)[0])
    end = re.search(rf"^#{{1,{level}}} ", readme[start:], re.M)
    section = readme[start:start + end.start()] if end else readme[start:]
    return [re.sub(r"^ {0,4}", "", block, flags=re.M) if block.startswith("  ") else block
            for block in re.findall(r"^ *```sh\n(.*?)^ *```", section, re.S | re.M)]


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def fresh_copy(dest: Path) -> Path:
    """The tree as a fresh clone would have it (what git tracks, and new files it does not ignore)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


def test_the_readme_runs_as_written(tmp_path):
    for port in (5000, 5443, 80):
        if not port_free(port):
            pytest.skip(f"port {port} is in use here; the README's commands need it (make run, serve --tls, certbot)")
    if shutil.which("certbot") is None:
        pytest.skip("certbot is not installed (make test installs Debian's certbot)")
    readme = (ROOT / "README.md").read_text()
    blocks = {heading: shell_blocks(readme, heading) for heading in SECTIONS}
    assert blocks["## Quick start"] == [". .venv/bin/activate\n"]
    assert len(blocks["### 3. Issue certificates"]) == 3 and len(blocks[SECTIONS[2]]) == 2

    clone = fresh_copy(tmp_path / "ca-server")
    tools = tmp_path / "tools"
    tools.mkdir()
    (tools / "sudo").write_text('#!/bin/sh\nexec env "$@"\n')  # root already; keeps VAR=value arguments
    (tools / "sudo").chmod(0o755)
    certbot_home = tmp_path / "certbot"
    (tmp_path / "xdg" / "letsencrypt").mkdir(parents=True)
    (tmp_path / "xdg" / "letsencrypt" / "cli.ini").write_text(
        f"config-dir = {certbot_home}\nwork-dir = {certbot_home}\nlogs-dir = {certbot_home}\n")
    env = {k: v for k, v in client_env().items() if not k.startswith(("CA_SERVER_", "VIRTUAL_ENV"))}
    env.update(PATH=f"{tools}:{env['PATH']}", XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    make_log = tmp_path / "make-run.log"
    with open(make_log, "wb") as log:
        make = subprocess.Popen(["make", "run"], cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    scripts: list[subprocess.Popen] = []

    def run(*parts: str) -> subprocess.CompletedProcess:
        script = "set -euo pipefail\n" + "".join(parts)
        proc = subprocess.Popen(["bash", "-c", script], cwd=clone, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        scripts.append(proc)
        out, _ = proc.communicate(timeout=300)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out)

    try:
        deadline = time.monotonic() + 300
        while True:
            assert make.poll() is None, make_log.read_text()[-3000:]
            try:
                if requests.get("http://127.0.0.1:5000/healthz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, make_log.read_text()[-3000:]
            time.sleep(0.5)
        assert "Every certificate names http://127.0.0.1:5000" in make_log.read_text()  # init says it

        activate = blocks["## Quick start"][0]
        issued = run(activate, *blocks["### 3. Issue certificates"])
        assert issued.returncode == 0, issued.stdout
        assert '"serial"' in issued.stdout  # the API's 201
        assert_openssl_verifies(clone / "cucm1.pem", clone / "instance" / "ca" / "root.pem",
                                clone / "instance" / "ca" / "intermediate.pem")

        over_http = run(activate, blocks[SECTIONS[2]][0])
        assert over_http.returncode == 0, over_http.stdout
        time.sleep(0.6)  # the access log writes its lines in batches, within 0.2 s: all of them are there now
        plain_acme = make_log.read_text().count("/acme/")
        assert plain_acme > 0
        over_https = run(activate, blocks[SECTIONS[2]][1])
        assert over_https.returncode == 0, over_https.stdout + (clone / "serve-tls.log").read_text()[-3000:]
        assert make_log.read_text().count("/acme/") == plain_acme  # the https order touched no plain HTTP
        assert "/acme/" in (clone / "serve-tls.log").read_text()
        for name in ("localhost", "localhost-tls"):
            leaf = x509.load_pem_x509_certificate((certbot_home / "live" / name / "cert.pem").read_bytes())
            cdp = leaf.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
            assert cdp[0].full_name[0].value.startswith("http://127.0.0.1:5000/crl/")
    finally:
        for proc in [make, *scripts]:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        make.wait(timeout=30)
