"""The web pages through Flask's test client: form, detail, downloads, list, CSRF, headers."""

from __future__ import annotations

import io
import re
import subprocess

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from ca_server.pki.serials import serial_colon

from .conftest import csrf_token
from .factories import der, make_csr, pem, with_broken_signature


def submit(web, *, text=None, file=None, filename="host.csr", **fields):
    page = web.get("/certificates/new")
    data = {"csrf_token": csrf_token(page.get_data(as_text=True)), "profile": "server", **fields}
    if text is not None:
        data["csr"] = text
    if file is not None:
        data["csr_file"] = (io.BytesIO(file), filename)
    return web.post("/certificates/new", data=data, content_type="multipart/form-data")


def serial_from(response) -> str:
    assert response.status_code == 303, response.get_data(as_text=True)[:2000]
    return response.headers["Location"].rsplit("/", 1)[1]


def test_form_page_shows_fields_and_policy(web):
    html = web.get("/certificates/new").get_data(as_text=True)
    for label in ("Paste the CSR", "upload the CSR file", "Profile", "Validity in days", "Reminder e-mail"):
        assert label in html
    assert 'name="csr"' in html and 'name="csr_file"' in html and 'enctype="multipart/form-data"' in html
    assert "Wildcard names" in html and "refused" in html
    assert "at most 397 days" in html
    assert "RSA keys with a known flaw (ROCA, close primes, exponent below 65537) are refused" in html


def test_pasting_a_pem_csr_issues_and_redirects_to_the_detail_page(web, svc):
    response = submit(web, text=pem(make_csr(["cucm1.example.test", "cucm-pub.example.test"])),
                      validity_days="30", notify="ops@example.test, dev@example.test")
    serial = serial_from(response)
    record = svc.store.get_certificate(serial)
    assert record.notify == ("ops@example.test", "dev@example.test")
    html = web.get(f"/certificates/{serial}").get_data(as_text=True)
    for text in ("cucm1.example.test", "cucm-pub.example.test", serial, serial_colon(int(serial, 16)),
                 "expires in 30 days", "Issued by", "Valid from", "SHA-256 fingerprint", "EC P-256",
                 "Certificate (PEM)", "Certificate (DER)"):
        assert text in html, text


def test_the_detail_page_says_what_was_changed_from_the_csr(web):
    """The API answered with its notes; the form's redirect showed nothing of them."""
    csr = make_csr(["mail.example.test"], subject=x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "mail.example.test"),
        x509.NameAttribute(NameOID.EMAIL_ADDRESS, "admin@example.test")]))
    serial = serial_from(submit(web, text=pem(csr)))
    html = web.get(f"/certificates/{serial}").get_data(as_text=True)
    assert "subject: emailAddress (admin@example.test)" in html


@pytest.mark.parametrize("kind", ["pem", "der", "utf-16", "utf-8-sig", "certreq"])
def test_uploading_a_csr_file(web, kind):
    """PEM saved as UTF-16 (Notepad's "Unicode", PowerShell 5's `>`) was "not a certificate request";
    Windows certreq writes "BEGIN NEW CERTIFICATE REQUEST"."""
    csr = make_csr(["upload.example.test"])
    if kind == "der":
        data = der(csr)
    elif kind == "certreq":
        data = pem(csr).replace("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST").replace("\n", "\r\n").encode()
    else:
        data = pem(csr).encode("utf-8" if kind == "pem" else kind)
    assert serial_from(submit(web, file=data, filename=f"upload.{kind}"))


def test_wildcard_is_refused_on_the_form_with_words(web, svc):
    response = submit(web, text=pem(make_csr(["*.example.test"])))
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "The certificate was not issued" in html
    assert "wildcards are not allowed" in html
    assert "wildcard_not_allowed" in html
    # The pasted text stays in the form so the person can fix and resubmit.
    assert "BEGIN CERTIFICATE REQUEST" in html


@pytest.mark.parametrize(
    "kwargs, status, words",
    [
        ({"text": "garbage"}, 400, "not a certificate request"),
        ({"text": ""}, 400, "Paste the CSR"),
        ({"file": with_broken_signature(make_csr(["a.example.test"]))}, 422, "signature does not verify"),
        ({"text": pem(make_csr(["a.example.test"])), "validity_days": "1000"}, 422, "at most 397 days"),
        ({"text": pem(make_csr(["a.example.test"])), "notify": "nope"}, 400, "not an e-mail address"),
        ({"text": pem(make_csr(["a.example.test"])), "validity_days": "abc"}, 400, "Not a valid integer"),
    ],
    ids=["garbage", "empty", "bad-signature", "too-long", "bad-email", "validity-text"],
)
def test_form_failures_are_4xx_with_reasons(web, kwargs, status, words):
    response = submit(web, **kwargs)
    assert response.status_code == status
    assert words in response.get_data(as_text=True)


def test_form_post_without_csrf_token_is_refused(web):
    response = web.post("/certificates/new", data={"csr": pem(make_csr(["a.example.test"])), "profile": "server"})
    assert response.status_code == 400
    assert "security token" in response.get_data(as_text=True)


def test_downloads_pem_equals_der_and_chain_order(web, svc):
    serial = serial_from(submit(web, text=pem(make_csr(["dl.example.test"]))))
    p = web.get(f"/certificates/{serial}.pem")
    d = web.get(f"/certificates/{serial}.der")
    assert p.mimetype == "application/x-pem-file" and d.mimetype == "application/pkix-cert"
    assert "attachment" in d.headers["Content-Disposition"]
    from_pem = x509.load_pem_x509_certificate(p.data)
    from_der = x509.load_der_x509_certificate(d.data)
    assert from_pem == from_der and d.data[:1] == b"\x30"
    chain = x509.load_pem_x509_certificates(web.get(f"/certificates/{serial}/chain.pem").data)
    assert chain == [from_pem, svc.authority.intermediate]
    full = x509.load_pem_x509_certificates(web.get(f"/certificates/{serial}/fullchain.pem").data)
    assert full == [from_pem, svc.authority.intermediate, svc.authority.root]


def test_the_p7b_bundle_holds_the_chain_as_openssl_reads_it(web, app, svc, tmp_path):
    serial = serial_from(submit(web, text=pem(make_csr(["p7b.example.test"]))))
    response = web.get(f"/certificates/{serial}/chain.p7b")
    assert response.mimetype == "application/x-pkcs7-certificates"
    assert response.headers["Content-Disposition"] == 'attachment; filename="p7b.example.test.p7b"'
    bundle = tmp_path / "chain.p7b"
    bundle.write_bytes(response.data)
    printed = subprocess.run(["openssl", "pkcs7", "-inform", "DER", "-in", str(bundle), "-print_certs"],
                             capture_output=True, check=True).stdout
    leaf = x509.load_der_x509_certificate(web.get(f"/certificates/{serial}.der").data)
    # a PKCS #7 "certificates" field is a SET: DER sorts it, and importers build the chain themselves
    assert set(x509.load_pem_x509_certificates(printed)) == {leaf, svc.authority.intermediate, svc.authority.root}
    assert f'href="/certificates/{serial}/chain.p7b"' in web.get(f"/certificates/{serial}").get_data(as_text=True)
    assert app.test_client().get(f"/certificates/{serial}/chain.p7b").status_code == 302  # sign-in first


@pytest.mark.parametrize("cn, expected", [("cucm1.example.test", "cucm1.example.test"), ("服务器", None),
                                          ("Büro Server", "B_ro_Server")])
def test_download_file_names_are_plain_ascii(web, cn, expected):
    """A CN in other scripts went into Content-Disposition as it was: raw UTF-8 in a header."""
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    serial = serial_from(submit(web, text=pem(make_csr(["files.example.test"], subject=subject))))
    disposition = web.get(f"/certificates/{serial}.der").headers["Content-Disposition"]
    assert disposition == f'attachment; filename="{expected or serial}.der"'


def test_detail_and_downloads_accept_every_serial_form(web):
    serial = serial_from(submit(web, text=pem(make_csr(["forms.example.test"]))))
    colon = serial_colon(int(serial, 16))
    for form in (serial, serial.upper(), colon, colon.lower()):
        assert web.get(f"/certificates/{form}").status_code == 200, form
        assert web.get(f"/certificates/{form}.der").status_code == 200, form


def test_unknown_serial_page_is_404(web):
    response = web.get("/certificates/abcdef0123")
    assert response.status_code == 404
    assert "No certificate with serial abcdef0123" in response.get_data(as_text=True)
    assert web.get("/certificates/not-a-serial").status_code == 404


def test_list_and_search(web):
    serial = serial_from(submit(web, text=pem(make_csr(["searchme.example.test"]))))
    submit(web, text=pem(make_csr(["other.example.test"])))
    html = web.get("/certificates?q=searchme").get_data(as_text=True)
    assert serial[:16] in html and "other.example.test" not in html
    html = web.get("/certificates").get_data(as_text=True)
    assert "searchme.example.test" in html and "other.example.test" in html



def test_a_fingerprint_searched_is_told_what_finds_it(web):
    """A SHA-256 fingerprint, copied from a browser's certificate viewer into the search, found
    nothing and the page said no more: a person could take that for "not from this CA"."""
    serial = serial_from(submit(web, text=pem(make_csr(["fp.example.test"]))))
    detail = web.get(f"/certificates/{serial}").get_data(as_text=True)
    fingerprint = re.search(r"(?:[0-9A-F]{2}:){31}[0-9A-F]{2}", detail).group(0)
    for q in (fingerprint, fingerprint.replace(":", "").lower()):
        html = web.get("/certificates", query_string={"q": q}).get_data(as_text=True)
        assert "That is a SHA-256 fingerprint: the search finds serial numbers" in html, html[-3000:]
        assert 'href="/inspect"' in html and "certificate viewers show next to the" in html
    html = web.get("/certificates", query_string={"q": "fp.example"}).get_data(as_text=True)
    assert serial[:16] in html and "SHA-256 fingerprint:" not in html

def test_dashboard_shows_the_hierarchy_and_expiring_certificates(web, svc):
    submit(web, text=pem(make_csr(["soon.example.test"])), validity_days="5")
    html = web.get("/").get_data(as_text=True)
    assert "CA hierarchy" in html and svc.authority.root.subject.rfc4514_string() in html
    assert "Expiring within 30 days" in html and "soon.example.test" in html
    assert re.search(r"expires in 5 days", html)


def test_dashboard_lists_the_certificates_that_expire_soonest_when_many_are_due(web, svc):
    """More certificates due than the dashboard shows: it shows the soonest, not the newest issued,
    and links to the full list."""
    from ca_server import issuance
    from ca_server.clock import utcnow
    from ca_server.web.pages import DASHBOARD_EXPIRING

    def issue(name, days):
        request = issuance.IssueRequest(csr=pem(make_csr([name])), validity_days=days)
        return issuance.issue(svc.config, svc.store, svc.authority, request, utcnow())

    first = issue("first-due.example.test", 2)  # issued first, expires first
    later = [issue(f"later{i}.example.test", 20) for i in range(DASHBOARD_EXPIRING)]
    second = issue("second-due.example.test", 3)  # issued last, expires second
    html = web.get("/").get_data(as_text=True)
    section = html[html.index("Expiring within 30 days"):html.index("Recently issued")]
    assert section.index("first-due.example.test") < section.index("second-due.example.test") < section.index("later")
    assert section.count("later") == DASHBOARD_EXPIRING - 2  # the two soonest plus 48 of the 50 later ones
    assert "expires in 2 days" in section and first.serial[:16] in section and second.serial[:16] in section
    shown = DASHBOARD_EXPIRING - 2
    assert all(r.serial[:16] in section for r in later[:shown])  # same expiry: issue order
    assert not any(r.serial[:16] in section for r in later[shown:])
    assert 'href="/certificates?expiring_within_days=30"' in section

    # A non-admin sees only their own, the soonest first, and no link while all fit.
    from .conftest import ApiClient, new_token

    ops = issuance.Requester(name="ops", kind="token", is_admin=False, domains=("example.test",))
    own = [issuance.issue(svc.config, svc.store, svc.authority,
                          issuance.IssueRequest(csr=pem(make_csr([name])), validity_days=days, requester=ops), utcnow())
           for name, days in (("ops-late.example.test", 25), ("ops-soon.example.test", 4))]
    client = ApiClient(web.application.test_client(), new_token(svc, "ops", admin=False, domains=("example.test",)))
    html = client.get("/").get_data(as_text=True)
    section = html[html.index("Expiring within 30 days"):html.index("Recently issued")]
    assert section.index("ops-soon.example.test") < section.index("ops-late.example.test")
    assert "first-due" not in section and "later0" not in section and own[0].serial[:16] in section
    assert "expiring_within_days=30" not in section


def test_ca_downloads_are_public(app, svc):
    client = app.test_client()
    assert x509.load_pem_x509_certificate(client.get("/ca/root.pem").data) == svc.authority.root
    assert x509.load_der_x509_certificate(client.get("/ca/root.der").data) == svc.authority.root
    assert x509.load_der_x509_certificate(client.get("/ca/intermediate.der").data) == svc.authority.intermediate
    chain = x509.load_pem_x509_certificates(client.get("/ca/chain.pem").data)
    assert chain == [svc.authority.intermediate, svc.authority.root]
    assert client.get("/ca/root.der").mimetype == "application/pkix-cert"
    assert client.get("/ca/other.pem").status_code == 404
    assert client.get("/healthz").get_json()["status"] == "ok"


def test_pages_require_sign_in(app):
    client = app.test_client()
    response = client.get("/certificates/new")
    assert response.status_code == 302 and "/login" in response.headers["Location"]


def test_security_headers(web):
    response = web.get("/certificates/new")
    csp = response.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_pages_load_no_third_party_assets(web):
    html = web.get("/certificates/new").get_data(as_text=True)
    assert not re.search(r'(src|href)="(https?:)?//', html)


def test_form_accepts_common_field_names_and_any_file_field(web):
    page = web.get("/certificates/new")
    token = csrf_token(page.get_data(as_text=True))
    by_alias = web.post("/certificates/new", data={"csrf_token": token, "pem": pem(make_csr(["alias.example.test"])),
                                                   "days": "10", "email": "ops@example.test"})
    assert by_alias.status_code == 303
    detail = web.get(by_alias.headers["Location"]).get_data(as_text=True)
    assert "expires in 10 days" in detail and "ops@example.test" in detail
    upload = web.post("/certificates/new", content_type="multipart/form-data", data={
        "csrf_token": token, "file": (io.BytesIO(der(make_csr(["anyfile.example.test"]))), "x.der")})
    assert upload.status_code == 303
