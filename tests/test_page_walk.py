"""Every page an admin sees, after one issuance, one ACME order and one renewal, read in Chromium
as a person reads it (issue 30): one form for moments and fingerprints, a renewed certificate
called renewed wherever it is listed, a state in the ACME accounts' State column, and no page
that says what is not true. A screenshot of each page is kept in build/page-walk/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ca_server import accounts
from ca_server.clock import utcnow

from .acme_client import ScriptedAcme, http01_responder
from .conftest import ApiClient, new_token
from .factories import make_csr, pem
from .server import free_port, running_server
from .test_acme import BASE, valid_order
from .test_browser import ARGS, CHROMIUM

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason=f"{CHROMIUM} is missing (make test installs Debian's chromium; run it as root with apt-get)")

SHOTS = Path(__file__).resolve().parent.parent / "build" / "page-walk"
ISO_MOMENT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d)?(Z|[+-]\d\d:\d\d)?")
BARE_FINGERPRINT = re.compile(r"\b[0-9a-f]{64}\b")  # SHA-256 as lowercase hex without colons


@pytest.fixture
def history(instance, make_app):
    """One issuance by the form's user, one renewal of it (the same names again), one ACME order."""
    port = free_port()
    app = make_app(acme={"http01_port": port, "validation_timeout_seconds": 5, "validation_attempts": 1})
    svc = app.extensions["ca_server"]
    accounts.add_user(svc.store, "operator", "operator-password", is_admin=True, domains=(), allow_ip=True,
                      email=None, now=utcnow())
    api = ApiClient(app.test_client(), new_token(svc, "walk-admin"))
    first = api.post("/api/v1/certificates", json={"csr": pem(make_csr(["web.example.test"]))}).get_json()
    renewal = api.post("/api/v1/certificates", json={"csr": pem(make_csr(["web.example.test"])),
                                                     "notify": ["ops@example.test"]}).get_json()
    acme = ScriptedAcme(app.test_client(), BASE)
    acme.new_account(contact=["mailto:acme@example.test"])
    with http01_responder(port) as tokens:
        ready = valid_order(acme, tokens, "127.0.0.1")
    done = acme.finalize(ready, make_csr([], ips=["127.0.0.1"])).get_json()
    assert done["status"] == "valid", done
    acme_serial = done["certificate"].rsplit("/", 1)[1]
    return {"first": first["serial"], "renewal": renewal["serial"], "acme": acme_serial, "svc": svc}


def visible_text(page) -> str:
    return page.locator("body").inner_text()


def test_every_admin_page_reads_as_finished(history, instance, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e .[test])")
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()
    first, renewal, acme_serial = history["first"], history["renewal"], history["acme"]
    with running_server(instance, workers=1) as site, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.set_default_timeout(15_000)
        page.goto(f"{site}/login")
        page.get_by_label("Username").fill("operator")
        page.get_by_label("Password").fill("operator-password")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{site}/")
        page.goto(f"{site}/calendar")
        assert "Subscribe to the URL below" not in visible_text(page)  # no URL yet: nothing to subscribe to
        page.get_by_role("button", name="Make my calendar URL").click()
        assert "no longer works" not in visible_text(page)  # the first URL replaces nothing

        pages = {"dashboard": "/", "list": "/certificates", "first": f"/certificates/{first}",
                 "renewal": f"/certificates/{renewal}", "acme-certificate": f"/certificates/{acme_serial}",
                 "new": "/certificates/new", "inspect": "/inspect", "trust": "/trust", "calendar": "/calendar",
                 "approvals": "/admin/requests", "tokens": "/admin/tokens", "acme": "/admin/acme",
                 "audit": "/admin/audit", "devices": "/admin/devices"}
        texts, rows = {}, {}
        for n, (name, path) in enumerate(pages.items(), 1):
            answer = page.goto(site + path)
            assert answer.status == 200, (path, answer.status)
            page.screenshot(path=str(SHOTS / f"{n:02d}-{name}.png"), full_page=True)
            texts[name] = text = visible_text(page)
            rows[name] = [" ".join(row.split()) for row in page.locator("tr").all_inner_texts()]
            assert not ISO_MOMENT.search(text), f"{path} shows an ISO moment: {ISO_MOMENT.search(text).group()}"
            assert not BARE_FINGERPRINT.search(text), f"{path} shows a fingerprint as bare lowercase hex"
            assert "user:" not in text and "token:" not in text, f"{path} shows an internal requester label"

        # A page with a certificate pasted in: fingerprints and dates as on every other page.
        page.goto(f"{site}/inspect")
        page.get_by_label("Certificate or CSR (PEM text)").fill(history["svc"].store.get_certificate(first).pem)
        page.get_by_role("button", name="Inspect").click()
        page.screenshot(path=str(SHOTS / f"{len(pages) + 1:02d}-inspect-result.png"), full_page=True)
        inspected = visible_text(page)
        assert not ISO_MOMENT.search(inspected) and not BARE_FINGERPRINT.search(inspected)
        assert re.search(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", inspected)
        browser.close()

    def row_of(name: str, serial: str) -> str:
        return next(row for row in rows[name] if serial[:16] in row)

    # The renewed certificate is "renewed" wherever it is listed, as on its own page.
    assert "renewed" in texts["first"].lower()
    assert row_of("list", first).endswith("renewed") and row_of("dashboard", first).endswith("renewed")
    assert row_of("list", renewal).endswith("valid")
    # The ACME accounts' State column holds a state.
    account_row = next(row for row in rows["acme"] if "acme@example.test" in row)
    assert re.search(r"\bvalid Deactivate$", account_row), account_row
    # An ACME certificate's page says when reminders really go out: after its renewal window.
    assert "renewal" in texts["acme-certificate"] and "window" in texts["acme-certificate"]
    # One name for issuing, on the dashboard, the menu and the form.
    for name in ("dashboard", "new"):
        assert "Sign a CSR" in texts[name]
        assert "New certificate" not in texts[name] and "Sign certificate" not in texts[name]
    # Who issued: a person's words, not a label.
    assert "walk-admin" in texts["first"]
    # The commands to copy are whole lines (a <pre>), not broken mid-option.
    assert "-addext" in texts["new"] and "add-trusted-cert" in texts["trust"]
    shots = sorted(SHOTS.glob("*.png"))
    assert len(shots) == len(pages) + 1 and all(s.stat().st_size > 2000 for s in shots)
    print(f"screenshots: {SHOTS}")
