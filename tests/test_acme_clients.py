"""Real ACME clients against a real `ca-server serve --tls`: certbot (http-01 standalone, renew,
revoke, EAB) and lego (http-01, tls-alpn-01, dns-01 through an exec hook, renew). Names resolve
through pebble-challtestsrv on loopback (every A query answers 127.0.0.1, TXT records set over
its management API), which the server uses as `[acme] dns_resolvers`. Every certificate is
verified with openssl against root.pem and found in the store by its serial."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests
from cryptography import x509

from .checks import assert_openssl_verifies
from .conftest import PASSPHRASE
from .server import free_port, running_server

CLIENT_ENV_DROP = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE", "LEGO_CA_CERTIFICATES")


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed (make test installs Debian's certbot, lego and pebble)")
    return path


def client_env(**extra: str) -> dict[str, str]:
    """The machine's CA-bundle variables point at the package mirrors' CAs; the clients must use
    only the CA under test (ACME-CLIENTS.md)."""
    env = {k: v for k, v in os.environ.items() if k not in CLIENT_ENV_DROP}
    return {**env, **extra}


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory):
    exe = need("pebble-challtestsrv")
    dns_port, management = free_port(), free_port()
    log = open(tmp_path_factory.mktemp("dns") / "challtestsrv.log", "wb")
    proc = subprocess.Popen([exe, "-http01", "", "-https01", "", "-tlsalpn01", "", "-dns01", f"127.0.0.1:{dns_port}",
                             "-management", f"127.0.0.1:{management}", "-defaultIPv4", "127.0.0.1",
                             "-defaultIPv6", ""], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            requests.post(f"http://127.0.0.1:{management}/clear-txt", json={"host": "probe.test."}, timeout=1)
            break
        except requests.ConnectionError:
            time.sleep(0.1)
    yield {"dns": dns_port, "management": management}
    proc.terminate()
    proc.wait(timeout=10)
    log.close()


@pytest.fixture
def acme_server(instance, dns_server):
    """serve --tls on https://localhost:PORT, validating on loopback ports picked here."""
    port, http01, tls_alpn = free_port(), free_port(), free_port()
    config = instance / "config.toml"
    text = config.read_text().replace('base_url = "http://127.0.0.1:5000"', f'base_url = "https://localhost:{port}"')
    text = text.replace("http01_port = 80", f"http01_port = {http01}")
    text = text.replace("tls_alpn01_port = 443", f"tls_alpn01_port = {tls_alpn}")
    text = text.replace("dns_resolvers = []", f'dns_resolvers = ["127.0.0.1:{dns_server["dns"]}"]')
    config.write_text(text)

    def start(**extra_config: str):
        body = config.read_text()
        for key, value in extra_config.items():
            body = body.replace(f"{key} = false", f"{key} = {value}")
        config.write_text(body)
        return running_server(instance, port=port, args=("--tls",), host_name="localhost",
                              env={"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE})

    return {"start": start, "port": port, "http01": http01, "tls_alpn": tls_alpn, "instance": instance,
            "root": instance / "ca" / "root.pem", **dns_server}


def assert_issued_here(fullchain: Path, acme_server, svc) -> x509.Certificate:
    certs = x509.load_pem_x509_certificates(fullchain.read_bytes())
    assert len(certs) == 2, "leaf and intermediate"
    leaf = fullchain.with_name(fullchain.name + ".leaf.pem")
    leaf.write_bytes(fullchain.read_bytes().split(b"-----END CERTIFICATE-----")[0] + b"-----END CERTIFICATE-----\n")
    inter = fullchain.with_name(fullchain.name + ".intermediate.pem")
    inter.write_text(svc.authority.intermediate_pem)
    assert_openssl_verifies(leaf, acme_server["root"], inter)
    record = svc.store.get_certificate(format(certs[0].serial_number, "x"))
    assert record is not None and record.requester.startswith("acme:")
    return certs[0]


def certbot(acme_server, work: Path, *args: str) -> subprocess.CompletedProcess:
    exe = need("certbot")
    return subprocess.run(
        [exe, *args, "-n", "--server", f"https://localhost:{acme_server['port']}/acme/directory",
         "--config-dir", str(work), "--work-dir", str(work), "--logs-dir", str(work)],
        env=client_env(REQUESTS_CA_BUNDLE=str(acme_server["root"])), capture_output=True, text=True, timeout=180)


def test_certbot_gets_renews_and_revokes(acme_server, svc, tmp_path):
    need("certbot")
    with acme_server["start"]():
        work = tmp_path / "certbot"
        got = certbot(acme_server, work, "certonly", "--agree-tos", "-m", "ops@example.test", "--standalone",
                      "--http-01-port", str(acme_server["http01"]), "-d", "cb.example.test", "-d", "www.cb.example.test")
        assert got.returncode == 0, got.stdout + got.stderr
        live = work / "live" / "cb.example.test"
        first = assert_issued_here(live / "fullchain.pem", acme_server, svc)
        names = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
        assert sorted(names) == ["cb.example.test", "www.cb.example.test"]
        record = svc.store.get_certificate(format(first.serial_number, "x"))
        assert record.notify == ("ops@example.test",)

        renewed = certbot(acme_server, work, "renew", "--force-renewal", "--no-random-sleep-on-renew")
        assert renewed.returncode == 0, renewed.stdout + renewed.stderr
        second = assert_issued_here(live / "fullchain.pem", acme_server, svc)
        assert second.serial_number != first.serial_number

        revoked = certbot(acme_server, work, "revoke", "--cert-path", str(live / "cert.pem"), "--reason",
                          "keycompromise", "--no-delete-after-revoke")
        assert revoked.returncode == 0, revoked.stdout + revoked.stderr
        record = svc.store.get_certificate(format(second.serial_number, "x"))
        assert record.revoked_at is not None and record.revocation_reason == "keyCompromise"



def test_certbot_with_a_new_account_revokes_a_certificate_the_lost_one_ordered(acme_server, svc, tmp_path):
    """The server that ordered a certificate was rebuilt and its certbot account is gone: a new
    account validates the name again and revokes the old certificate (RFC 8555 7.6)."""
    need("certbot")
    with acme_server["start"]():
        lost, new = tmp_path / "lost", tmp_path / "new"
        for work in (lost, new):
            got = certbot(acme_server, work, "certonly", "--agree-tos", "--register-unsafely-without-email",
                          "--standalone", "--http-01-port", str(acme_server["http01"]), "-d", "lost.example.test")
            assert got.returncode == 0, got.stdout + got.stderr
        old = assert_issued_here(lost / "live" / "lost.example.test" / "fullchain.pem", acme_server, svc)
        revoked = certbot(acme_server, new, "revoke", "--cert-path", str(lost / "live" / "lost.example.test" / "cert.pem"),
                          "--reason", "keycompromise", "--no-delete-after-revoke")
        assert revoked.returncode == 0, revoked.stdout + revoked.stderr
    record = svc.store.get_certificate(format(old.serial_number, "x"))
    assert record.revoked_at is not None and record.revocation_reason == "keyCompromise"

def test_certbot_with_external_account_binding(acme_server, svc, tmp_path):
    need("certbot")
    import datetime as dt

    from ca_server.acme import accounts as acme_accounts

    eab = acme_accounts.create_eab_key(svc.store, "web-team", domains=("web.example.test",), allow_ip=False,
                                       now=dt.datetime.now(dt.UTC))
    with acme_server["start"](require_eab="true"):
        common = ("certonly", "--agree-tos", "-m", "web@example.test", "--standalone", "--http-01-port",
                  str(acme_server["http01"]))
        refused = certbot(acme_server, tmp_path / "no-eab", *common, "-d", "a.web.example.test")
        assert refused.returncode != 0
        # certbot reads meta.externalAccountRequired from the directory and says so itself.
        assert "requires external account binding" in (refused.stdout + refused.stderr).lower()
        work = tmp_path / "eab"
        bound = certbot(acme_server, work, *common, "--eab-kid", eab["kid"], "--eab-hmac-key", eab["hmac_key"],
                        "-d", "a.web.example.test")
        assert bound.returncode == 0, bound.stdout + bound.stderr
        assert_issued_here(work / "live" / "a.web.example.test" / "fullchain.pem", acme_server, svc)
        other = certbot(acme_server, work, *common, "-d", "b.other.example.test")
        assert other.returncode != 0
        # Debian's certbot 2.1 then fails to print any ACME error ("AttributeError: can't set
        # attribute" on josepy's immutable Error, Python 3.11); its log has what the server said.
        said = (work / "letsencrypt.log").read_text()
        assert "urn:ietf:params:acme:error:rejectedIdentifier" in said
        assert '\\"b.other.example.test\\" is outside the domains' in said


def lego(acme_server, work: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    exe = need("lego")
    return subprocess.run(
        [exe, "--server", f"https://localhost:{acme_server['port']}/acme/directory", "--accept-tos", "--email",
         "ops@example.test", "--path", str(work), *args],
        env=client_env(LEGO_CA_CERTIFICATES=str(acme_server["root"]), **(env or {})),
        capture_output=True, text=True, timeout=180)


def test_lego_with_http01_tls_alpn01_and_dns01_and_renew(acme_server, svc, tmp_path):
    need("lego")
    hook = tmp_path / "hook.sh"
    hook.write_text("#!/bin/sh\n"  # lego calls: hook.sh present|cleanup FQDN VALUE
                    f'M=http://127.0.0.1:{acme_server["management"]}\n'
                    'case "$1" in\n'
                    '  present) curl -s -X POST -d "{\\"host\\":\\"$2\\",\\"value\\":\\"$3\\"}" $M/set-txt ;;\n'
                    '  cleanup) curl -s -X POST -d "{\\"host\\":\\"$2\\"}" $M/clear-txt ;;\n'
                    "esac\n")
    hook.chmod(0o755)
    work = tmp_path / "lego"
    with acme_server["start"]():
        runs = {
            "http.example.test": ("--http", "--http.port", f":{acme_server['http01']}"),
            "tls.example.test": ("--tls", "--tls.port", f":{acme_server['tls_alpn']}"),
            "dns.example.test": ("--dns", "exec", "--dns.resolvers", f"127.0.0.1:{acme_server['dns']}",
                                 "--dns.disable-cp"),
        }
        for name, flags in runs.items():
            got = lego(acme_server, work, "-d", name, *flags, "run", env={"EXEC_PATH": str(hook)})
            assert got.returncode == 0, (name, got.stdout + got.stderr)
            assert_issued_here(work / "certificates" / f"{name}.crt", acme_server, svc)
        before = x509.load_pem_x509_certificates((work / "certificates" / "http.example.test.crt").read_bytes())[0]
        renewed = lego(acme_server, work, "-d", "http.example.test", *runs["http.example.test"], "renew",
                       "--days", "365", "--no-random-sleep")
        assert renewed.returncode == 0, renewed.stdout + renewed.stderr
        after = assert_issued_here(work / "certificates" / "http.example.test.crt", acme_server, svc)
        assert after.serial_number != before.serial_number


def test_lego_must_staple_gets_a_certificate_a_server_staples_our_ocsp_answer_for(acme_server, svc, tmp_path):
    """lego --must-staple asks for RFC 7633's TLS Feature; the certificate carries it (before, it
    was dropped without a word), the OCSP responder answers good for it, and openssl s_server
    staples that answer in a real handshake, which s_client reads."""
    from .checks import openssl, run_openssl

    need("lego")
    work = tmp_path / "lego"
    with acme_server["start"]():
        got = lego(acme_server, work, "-d", "staple.example.test", "--http", "--http.port",
                   f":{acme_server['http01']}", "run", "--must-staple")
        assert got.returncode == 0, got.stdout + got.stderr
        crt = work / "certificates" / "staple.example.test.crt"
        leaf = assert_issued_here(crt, acme_server, svc)
        assert list(leaf.extensions.get_extension_for_class(x509.TLSFeature).value) == [
            x509.TLSFeatureType.status_request]
        inter = crt.with_name(crt.name + ".intermediate.pem")
        answer = tmp_path / "ocsp.der"
        asked = run_openssl("ocsp", "-issuer", str(inter), "-cert", str(crt.with_name(crt.name + ".leaf.pem")),
                            "-url", f"https://localhost:{acme_server['port']}/ocsp", "-CAfile",
                            str(acme_server["root"]), "-respout", str(answer))
        assert asked.returncode == 0 and b": good" in asked.stdout, asked.stdout + asked.stderr
    port = free_port()
    server = subprocess.Popen([openssl(), "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(crt), "-cert_chain", str(inter), "-key",
                               str(work / "certificates" / "staple.example.test.key"), "-status_file", str(answer),
                               "-naccept", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        said = []  # "Using default temp DH parameters", then "ACCEPT" once it listens
        while b"ACCEPT" not in said and len(said) < 5:
            said.append(server.stdout.readline().strip())
        assert said[-1] == b"ACCEPT", f"openssl s_server did not start: {said}"
        hello = subprocess.run([openssl(), "s_client", "-connect", f"127.0.0.1:{port}", "-servername",
                                "staple.example.test", "-CAfile", str(acme_server["root"]), "-verify_hostname",
                                "staple.example.test", "-verify_return_error", "-status"],
                               input=b"", capture_output=True, timeout=30)
    finally:  # s_server ends its connection when its standard input ends, hence the open pipe
        server.kill()
        server.communicate(timeout=10)
    out = hello.stdout.decode(errors="replace")
    assert "OCSP Response Status: successful" in out and "Cert Status: good" in out, out + hello.stderr.decode()
    assert "Verify return code: 0 (ok)" in out, out


def test_serve_tls_serves_its_own_certificate_for_base_urls_host(acme_server):
    import socket
    import ssl

    with acme_server["start"]():
        context = ssl.create_default_context(cafile=str(acme_server["root"]))
        for host in ("localhost", "127.0.0.1"):  # base_url's host, and the listening address
            with socket.create_connection(("127.0.0.1", acme_server["port"]), timeout=5) as raw, \
                    context.wrap_socket(raw, server_hostname=host) as tls:
                assert tls.version() in ("TLSv1.2", "TLSv1.3")
        key = acme_server["instance"] / "tls" / "server-key.pem"
        assert oct(key.stat().st_mode & 0o777) == "0o600"


def test_the_servers_own_certificate_is_renewed_when_a_third_of_its_life_is_left(svc, instance):
    import datetime as dt

    from ca_server.server.tls import ensure_certificate, tls_files

    now = dt.datetime.now(dt.UTC)
    files, issued = ensure_certificate(svc.config, svc.store, svc.authority, svc.paths, "127.0.0.1", now)
    assert issued and oct(files.key.stat().st_mode & 0o777) == "0o600"
    first = x509.load_pem_x509_certificates(files.cert.read_bytes())[0]
    names = first.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    # base_url's 127.0.0.1 as an IP SAN, and localhost, the name the same loopback server is reached by
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert names.get_values_for_type(x509.DNSName) == ["localhost"]
    assert svc.store.get_certificate(format(first.serial_number, "x")) is not None  # stored like any other
    assert not ensure_certificate(svc.config, svc.store, svc.authority, svc.paths, "127.0.0.1",
                                  now + dt.timedelta(days=50))[1]  # 40 of 90 days left: kept
    later = now + dt.timedelta(days=65)  # 25 of 90 days left: renewed
    assert ensure_certificate(svc.config, svc.store, svc.authority, svc.paths, "127.0.0.1", later)[1]
    second = x509.load_pem_x509_certificates(tls_files(svc.paths).cert.read_bytes())[0]
    assert second.serial_number != first.serial_number


def test_certbot_over_https_on_an_http_instance_never_touches_plain_http(instance, dns_server, svc, tmp_path):
    """serve --tls on an instance whose base_url is http (made by `make run`): the directory and
    everything it links are at the https address certbot reached; base_url's plain-HTTP port (a
    listener held here) sees no connection; the server warns at start; pages send HSTS and the
    session cookie is Secure."""
    need("certbot")
    port, http01 = free_port(), free_port()
    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen(16)
    trap.setblocking(False)
    plain = f"http://127.0.0.1:{trap.getsockname()[1]}"
    config = instance / "config.toml"
    text = config.read_text().replace('base_url = "http://127.0.0.1:5000"', f'base_url = "{plain}"')
    text = text.replace("http01_port = 80", f"http01_port = {http01}")
    config.write_text(text.replace("dns_resolvers = []", f'dns_resolvers = ["127.0.0.1:{dns_server["dns"]}"]'))
    root = instance / "ca" / "root.pem"
    with running_server(instance, port=port, args=("--tls",), env={"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE}) as base:
        assert base == f"https://127.0.0.1:{port}"
        # The loopback server answers as https://localhost too (browsers, Caddy), hostname checked.
        health = requests.get(f"https://localhost:{port}/healthz", verify=str(root), timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        directory = requests.get(f"{base}/acme/directory", verify=str(root), timeout=10).json()
        assert directory["newOrder"] == f"{base}/acme/new-order" and directory["meta"]["website"] == base
        login = requests.get(f"{base}/login", verify=str(root), timeout=10)
        assert login.headers["Strict-Transport-Security"].startswith("max-age=")
        cookie = [c for c in login.cookies if c.name == "ca_server_session"]
        assert cookie and cookie[0].secure
        work = tmp_path / "certbot"
        got = subprocess.run(
            [shutil.which("certbot"), "certonly", "-n", "--server", f"{base}/acme/directory", "--config-dir", str(work),
             "--work-dir", str(work), "--logs-dir", str(work), "--agree-tos", "-m", "ops@example.test", "--standalone",
             "--http-01-port", str(http01), "-d", "tls-only.example.test"],
            env=client_env(REQUESTS_CA_BUNDLE=str(root)), capture_output=True, text=True, timeout=180)
        assert got.returncode == 0, got.stdout + got.stderr
        assert (work / "live" / "tls-only.example.test" / "fullchain.pem").exists()
    with pytest.raises(BlockingIOError):
        trap.accept()  # nobody came to the plain-HTTP base_url
    trap.close()
    log = (instance / "serve.log").read_text()
    assert f"listening on https://127.0.0.1:{port} but [server] base_url is {plain}" in log
    assert "POST /acme/finalize" in log or "/finalize" in log


def _dns_queries(dns_server, host: str) -> list[int]:
    """The query types pebble-challtestsrv was asked for `host` (1 = A, 28 = AAAA)."""
    history = requests.post(f"http://127.0.0.1:{dns_server['management']}/dns-request-history",
                            json={"host": host}, timeout=5).json()
    return [entry["Question"]["Qtype"] for entry in history or []]


def test_http01_asks_for_aaaa_only_when_no_ipv4_address_answers(dns_server):
    """The validator tries a name's IPv4 addresses first and looks up AAAA only when none of them
    answered (issue 29: a second query per validation for nothing). A name whose A record points
    where nothing listens is still validated over its IPv6 address."""
    import dataclasses

    from ca_server.acme.validation import ValidationError, check_http01
    from ca_server.config import AcmeConfig

    from .acme_client import http01_responder

    port = free_port()
    config = dataclasses.replace(AcmeConfig(), http01_port=port, dns_resolvers=(f"127.0.0.1:{dns_server['dns']}",))
    manage = f"http://127.0.0.1:{dns_server['management']}"
    for host, v4 in (("both.example.test", "127.0.0.1"), ("v6-works.example.test", "127.0.0.2")):
        requests.post(f"{manage}/add-a", json={"host": host, "addresses": [v4]}, timeout=5).raise_for_status()
        requests.post(f"{manage}/add-aaaa", json={"host": host, "addresses": ["::1"]}, timeout=5).raise_for_status()

    with http01_responder(port) as tokens:  # listens on 127.0.0.1 only
        tokens["tok"] = "tok.thumb"
        check_http01({"type": "dns", "value": "both.example.test"}, "tok", "tok.thumb", config, 5)
        assert _dns_queries(dns_server, "both.example.test") == [1]
        with pytest.raises(ValidationError) as refused:  # 127.0.0.2 refuses; nothing on ::1 yet
            check_http01({"type": "dns", "value": "v6-works.example.test"}, "tok", "tok.thumb", config, 5)
        assert refused.value.kind == "connection"
        assert "127.0.0.2" in refused.value.detail and "::1" in refused.value.detail
        assert _dns_queries(dns_server, "v6-works.example.test") == [1, 28]

    with http01_responder(port, host="::1") as v6_tokens:
        v6_tokens["tok"] = "tok.thumb"
        check_http01({"type": "dns", "value": "v6-works.example.test"}, "tok", "tok.thumb", config, 5)
