"""Browser end-to-end tests: Playwright driving Debian's chromium (headless) against the real
server. Screenshots of every step are saved under the test's tmp dir."""

from __future__ import annotations

import html
import os
import re
import shutil

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ca_server import accounts
from ca_server.clock import utcnow

from .factories import cached_key, der, make_csr, pem
from .server import running_server

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    not os.path.exists(CHROMIUM),
    reason=f"{CHROMIUM} is missing (make test installs Debian's chromium; run it as root with apt-get)",
)


@pytest.fixture
def browser_page(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[test])")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        context = browser.new_context(accept_downloads=True, viewport={"width": 1200, "height": 900})
        page = context.new_page()
        page.set_default_timeout(15_000)
        yield page
        context.close()
        browser.close()


@pytest.fixture
def site(instance, svc):
    accounts.add_user(svc.store, "operator", "operator-password", is_admin=True, domains=(), allow_ip=True,
                      email=None, now=utcnow())
    with running_server(instance, workers=1) as base:
        yield base


class Steps:
    def __init__(self, page, folder):
        self.page, self.folder, self.n = page, folder, 0

    def shot(self, name: str) -> None:
        self.n += 1
        path = self.folder / f"{self.n:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 1000


def test_a_person_gets_downloads_and_checks_a_certificate(site, browser_page, tmp_path, svc):
    page = browser_page
    steps = Steps(page, tmp_path)
    page.goto(f"{site}/certificates/new")
    assert "/login" in page.url  # the form requires sign-in
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill("operator-password")
    steps.shot("sign-in")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{site}/certificates/new")
    assert page.get_by_role("heading", name="What this CA signs").is_visible()

    csr = make_csr(["cucm1.example.test", "cucm-pub.example.test"])
    page.get_by_label("Paste the CSR (PEM text)").fill(pem(csr))
    page.get_by_label("Reminder e-mail").fill("ops@example.test")
    steps.shot("form-filled")
    page.get_by_role("button", name="Sign a CSR").click()
    page.wait_for_url(f"{site}/certificates/*")
    assert page.get_by_role("heading", level=1).inner_text().startswith("cucm1.example.test")
    assert page.get_by_text("expires in 90 days").first.is_visible()
    steps.shot("detail")
    serial = page.url.rsplit("/", 1)[1]

    with page.expect_download() as info:
        page.get_by_role("link", name="Certificate (DER)").click()
    downloaded = tmp_path / info.value.suggested_filename
    info.value.save_as(downloaded)
    cert = x509.load_der_x509_certificate(downloaded.read_bytes())
    assert format(cert.serial_number, "x") == serial
    assert cert == svc.store.get_certificate(serial).certificate
    assert downloaded.suffix == ".der"

    page.goto(f"{site}/certificates/new")
    page.get_by_label("Paste the CSR (PEM text)").fill(pem(make_csr(["*.example.test"])))
    page.get_by_role("button", name="Sign a CSR").click()
    alert = page.get_by_role("alert")
    assert "wildcards are not allowed" in alert.inner_text()
    steps.shot("wildcard-refused")

    # The file a device wrote, as chromium uploads it: DER (binary) and a Windows certreq PEM (CRLF,
    # "NEW CERTIFICATE REQUEST").
    for name, body in (("cucm-tomcat.der", der(make_csr(["tomcat.example.test"]))),
                       ("win.req", pem(make_csr(["win.example.test"])).replace("CERTIFICATE REQUEST",
                                                                            "NEW CERTIFICATE REQUEST")
                        .replace("\n", "\r\n").encode())):
        (tmp_path / name).write_bytes(body)
        page.goto(f"{site}/certificates/new")
        page.get_by_label("…or upload the CSR file (.csr, .pem or .der)").set_input_files(str(tmp_path / name))
        page.get_by_role("button", name="Sign a CSR").click()
        page.wait_for_url(f"{site}/certificates/*")
        host = name.split(".")[0].split("-")[-1]
        assert page.get_by_role("heading", level=1).inner_text().startswith(f"{host}.example.test")
    steps.shot("uploaded")
    (tmp_path / "key.pem").write_bytes(cached_key("ec-p256", 31).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    page.goto(f"{site}/certificates/new")
    page.get_by_label("…or upload the CSR file (.csr, .pem or .der)").set_input_files(str(tmp_path / "key.pem"))
    page.get_by_role("button", name="Sign a CSR").click()
    assert "This is a private key, not a certificate request: keep it on the device" in \
        page.get_by_role("alert").inner_text()

    stored = svc.store.get_certificate(serial).certificate
    key = cached_key("ec-p256", 30)
    tampered = (x509.CertificateBuilder().subject_name(stored.subject).issuer_name(stored.issuer)
                .public_key(key.public_key()).serial_number(stored.serial_number)
                .not_valid_before(stored.not_valid_before_utc).not_valid_after(stored.not_valid_after_utc)
                .sign(key, hashes.SHA256()))
    page.get_by_role("link", name="Inspect").click()
    page.get_by_label("Certificate or CSR (PEM text)").fill(pem(tampered))
    page.get_by_role("button", name="Inspect").click()
    verdict = page.locator(".verdict")
    assert "NOT the certificate issued under this serial" in verdict.inner_text()
    steps.shot("counterfeit-verdict")

    page.get_by_label("Certificate or CSR (PEM text)").fill(pem(stored))
    page.get_by_label("Host name to check (optional)").fill("cucm-pub.example.test")
    page.get_by_role("button", name="Inspect").click()
    assert "Issued here" in page.locator(".verdict").inner_text()
    assert page.get_by_text("would accept it").is_visible()
    steps.shot("genuine-verdict")
    assert len(list(tmp_path.glob("*.png"))) == 7


def test_pages_fit_a_phone_screen(site, browser_page, tmp_path):
    page = browser_page
    page.set_viewport_size({"width": 375, "height": 800})
    page.goto(f"{site}/login")
    page.get_by_label("Username").fill("operator")
    page.get_by_label("Password").fill("operator-password")
    page.get_by_role("button", name="Sign in").click()
    for path in ("/", "/certificates/new", "/inspect", "/trust"):
        page.goto(site + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{path} scrolls sideways by {overflow}px on a phone"
        page.screenshot(path=str(tmp_path / f"phone{path.replace('/', '_') or '_root'}.png"), full_page=True)
    # Every form control has a label.
    page.goto(f"{site}/certificates/new")
    unlabelled = page.evaluate("""[...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')).map(e => e.name)""")
    assert unlabelled == []



def test_a_person_signs_in_through_the_company_provider_in_chromium(instance, svc, browser_page, tmp_path):
    """Issue 28: "Sign in with Corp SSO" on our page, the provider's own form (oidc-provider-mock,
    a real OpenID provider run here), back on the CA signed in with the role the groups give."""
    oidc_provider_mock = pytest.importorskip("oidc_provider_mock", reason="the test extra oidc-provider-mock is missing")
    import requests

    from ca_server.ca.authority import set_base_url

    from .server import free_port
    from .test_oidc import oidc_config

    page = browser_page
    steps = Steps(page, tmp_path)
    with oidc_provider_mock.run_server_in_thread() as provider:
        issuer = f"http://127.0.0.1:{provider.server_port}"
        claims = {"preferred_username": "carol", "email": "carol@example.test", "groups": ["net-admins"]}
        assert requests.put(f"{issuer}/users/carol", json=claims, timeout=10).status_code == 204
        port = free_port()
        set_base_url(instance / "config.toml", f"http://127.0.0.1:{port}")
        config = instance / "config.toml"
        config.write_text(config.read_text() + oidc_config(issuer))
        with running_server(instance, workers=1, port=port, env={"TEST_OIDC_SECRET": "s"}) as site:
            page.goto(f"{site}/certificates")
            assert "/login" in page.url
            page.get_by_role("link", name="Sign in with Corp SSO").click()
            page.wait_for_url(f"{issuer}/oauth2/authorize*")
            steps.shot("provider-form")
            page.get_by_placeholder("sub").fill("carol")
            page.get_by_role("button", name="Authorize").click()
            page.wait_for_url(f"{site}/certificates")
            steps.shot("signed-in")
            assert "carol" in page.content()
            page.goto(f"{site}/logout")
            page.get_by_role("button", name="Sign out", exact=True).click()
            page.wait_for_url(f"{site}/login")
            page.goto(f"{site}/certificates")
            assert "/login" in page.url  # signed out on the server


def test_chromium_trusts_this_cas_certificates_once_its_root_is_in_the_store(instance, svc, app, tmp_path):
    """What an intranet user's browser does with a certificate of this CA: Chromium's own verifier
    (Chromium on Linux reads locally trusted roots from the NSS database in ~/.pki/nssdb, not from
    the system store; the /trust page's two certutil commands, run as written, put root.pem there
    for a user whose browser never ran). An EC and an RSA leaf issued here, served
    with the intermediate by openssl s_server, and `serve --tls`'s own certificate, by name
    (localhost, the loopback name since today): all load. A name not in the certificate is
    ERR_CERT_COMMON_NAME_INVALID and, without the root, every one is ERR_CERT_AUTHORITY_INVALID."""
    import contextlib
    import datetime as dt
    import subprocess

    from ca_server import issuance

    from .checks import need, openssl_s_server
    from .conftest import PASSPHRASE

    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[test])")
    need("certutil")
    trusting, bare = tmp_path / "home", tmp_path / "bare-home"
    trusting.mkdir()
    (bare / ".pki" / "nssdb").mkdir(parents=True)
    # The /trust page's own commands for Chromium on Linux, run as a user whose browser never ran.
    page_text = html.unescape(app.test_client().get("/trust").get_data(as_text=True))
    section = page_text.split("<h2>Chrome and Chromium on Linux</h2>")[1].split("</section>")[0]
    add, make_db = re.findall(r'<pre class="cmd">(.*?)</pre>', section)
    shutil.copy(instance / "ca" / "root.pem", trusting / "root.pem")
    for command in (make_db, add):
        done = subprocess.run(["sh", "-c", command], cwd=trusting, env={**os.environ, "HOME": str(trusting)},
                              capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, command + done.stdout + done.stderr

    rules = ", ".join(f"MAP {host} 127.0.0.1" for host in ("ec.example.test", "rsa.example.test", "other.example.test"))

    def chromium_says(home, targets: list[str]) -> list[str]:
        said = []
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, env={"HOME": str(home)},
                                        args=[*ARGS, f"--host-resolver-rules={rules}"])
            page = browser.new_context().new_page()
            for url in targets:
                try:
                    said.append(str(page.goto(url, timeout=15_000).status))
                except sync_api.Error as exc:
                    said.append(str(exc).split("net::")[1].split()[0] if "net::" in str(exc) else str(exc))
            browser.close()
        return said

    with contextlib.ExitStack() as stack:
        urls = []
        for kind, name in (("ec-p256", "ec.example.test"), ("rsa-2048", "rsa.example.test")):
            key = cached_key(kind, 3)
            record = issuance.issue(svc.config, svc.store, svc.authority,
                                    issuance.IssueRequest(csr=pem(make_csr([name], key=key))), dt.datetime.now(dt.UTC))
            (tmp_path / f"{kind}.pem").write_text(record.pem)
            (tmp_path / f"{kind}-chain.pem").write_text(svc.authority.intermediate_pem)
            (tmp_path / f"{kind}.key").write_bytes(key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
            port = stack.enter_context(openssl_s_server(tmp_path / f"{kind}.pem", tmp_path / f"{kind}-chain.pem",
                                                        tmp_path / f"{kind}.key"))
            urls.append(f"https://{name}:{port}/")
        own = stack.enter_context(running_server(instance, workers=1, args=("--tls",), host_name="localhost",
                                                 env={"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE}))
        targets = [*urls, f"{own}/healthz"]
        assert chromium_says(trusting, targets) == ["200", "200", "200"]
        wrong_name = urls[0].replace("ec.example.test", "other.example.test")
        assert chromium_says(trusting, [wrong_name]) == ["ERR_CERT_COMMON_NAME_INVALID"]
        assert chromium_says(bare, targets) == ["ERR_CERT_AUTHORITY_INVALID"] * 3
