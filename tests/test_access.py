"""Who may ask for what: the permission table, scopes, approvals, the audit log, rate limits."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3

import psycopg
import pytest
from click.testing import CliRunner

from ca_server import accounts
from ca_server.cli import main
from ca_server.store import CertificateFilter

from .checks import well_inside_a_minute
from .conftest import ApiClient, csrf_token, new_token, sign_in
from .factories import make_csr, pem
from .smtp import SMTPServer


@pytest.fixture
def clients(app, svc):
    """anonymous, in-scope (example.test), out-of-scope (other.test) and admin token clients."""
    return {
        "anonymous": ApiClient(app.test_client(), None),
        "scoped": ApiClient(app.test_client(), new_token(svc, "scoped", admin=False, domains=["example.test"])),
        "outsider": ApiClient(app.test_client(), new_token(svc, "outsider", admin=False, domains=["other.test"])),
        "admin": ApiClient(app.test_client(), new_token(svc, "admin")),
    }


def _issued(clients) -> str:
    response = clients["admin"].post("/api/v1/certificates", json={"csr": pem(make_csr(["t.example.test"]))})
    return response.get_json()["serial"]


# (method, path, body, anonymous, scoped, outsider, admin)
TABLE = [
    ("GET", "/healthz", None, 200, 200, 200, 200),
    ("GET", "/ca/root.pem", None, 200, 200, 200, 200),
    ("GET", "/ca/root.der", None, 200, 200, 200, 200),
    ("GET", "/ca/intermediate.pem", None, 200, 200, 200, 200),
    ("GET", "/ca/intermediate.der", None, 200, 200, 200, 200),
    ("GET", "/ca/chain.pem", None, 200, 200, 200, 200),
    ("GET", "/crl/intermediate.crl", None, 200, 200, 200, 200),
    ("GET", "/crl/root.crl", None, 200, 200, 200, 200),
    ("POST", "/ocsp", b"garbage", 200, 200, 200, 200),
    ("GET", "/", None, 302, 200, 200, 200),
    ("GET", "/certificates/new", None, 302, 200, 200, 200),
    ("GET", "/certificates", None, 302, 200, 200, 200),
    ("GET", "/certificates/{serial}", None, 302, 200, 200, 200),
    ("GET", "/certificates/{serial}.pem", None, 302, 200, 200, 200),
    ("GET", "/certificates/{serial}.der", None, 302, 200, 200, 200),
    ("GET", "/certificates/{serial}/chain.pem", None, 302, 200, 200, 200),
    ("GET", "/inspect", None, 302, 200, 200, 200),
    ("POST", "/api/v1/certificates", {"csr": "a.example.test"}, 401, 201, 403, 201),
    ("GET", "/api/v1/certificates/{serial}", None, 401, 200, 200, 200),
    ("GET", "/api/v1/certificates", None, 401, 200, 200, 200),
    ("GET", "/api/v1/ca", None, 401, 200, 200, 200),
    ("POST", "/api/v1/inspect", {"pem": "{cert}"}, 401, 200, 200, 200),
    ("POST", "/api/v1/certificates/{serial}/revoke", {"reason": "superseded"}, 401, 403, 403, 200),
    ("GET", "/admin/requests", None, 302, 403, 403, 200),
    ("GET", "/admin/tokens", None, 302, 403, 403, 200),
    ("GET", "/admin/audit", None, 302, 403, 403, 200),
]


@pytest.mark.parametrize("method, path, body, expected", [(m, p, b, e) for m, p, b, *e in TABLE],
                         ids=[f"{m} {p}" for m, p, *_ in TABLE])
def test_permission_table(clients, method, path, body, expected):
    serial = _issued(clients)
    cert_pem = clients["admin"].get(f"/api/v1/certificates/{serial}").get_json()["certificate"]
    for who, status in zip(("anonymous", "scoped", "outsider", "admin"), expected, strict=True):
        url = path.format(serial=serial)
        if method == "GET":
            response = clients[who].get(url)
        elif isinstance(body, bytes):
            response = clients[who].post(url, data=body)
        else:
            data = {k: (pem(make_csr([v])) if k == "csr" else cert_pem if v == "{cert}" else v)
                    for k, v in body.items()}
            response = clients[who].post(url, json=data)
        assert response.status_code == status, f"{who}: {response.status_code} {response.get_data(as_text=True)[:300]}"
        if response.status_code == 403 and url.startswith("/api/"):
            assert response.get_json()["error"]["message"]


def test_out_of_scope_refusal_names_the_name_and_the_scope(clients):
    response = clients["scoped"].post("/api/v1/certificates", json={"csr": pem(make_csr(["a.other.test"]))})
    assert response.status_code == 403
    error = response.get_json()["error"]
    assert error["code"] == "name_out_of_scope"
    assert "a.other.test" in error["message"] and "example.test" in error["message"]


def test_ip_sans_need_allow_ip(app, svc, clients):
    csr = pem(make_csr(["a.example.test"], ips=["10.0.0.5"]))
    assert clients["scoped"].post("/api/v1/certificates", json={"csr": csr}).status_code == 403
    with_ip = ApiClient(app.test_client(), new_token(svc, "ipok", admin=False, domains=["example.test"], allow_ip=True))
    assert with_ip.post("/api/v1/certificates", json={"csr": csr}).status_code == 201


def test_non_admins_see_only_their_own_certificates_in_lists(clients):
    mine = clients["scoped"].post("/api/v1/certificates", json={"csr": pem(make_csr(["mine.example.test"]))})
    other = _issued(clients)
    listed = [c["serial"] for c in clients["scoped"].get("/api/v1/certificates").get_json()["certificates"]]
    assert listed == [mine.get_json()["serial"]]
    admin_listed = [c["serial"] for c in clients["admin"].get("/api/v1/certificates").get_json()["certificates"]]
    assert other in admin_listed and mine.get_json()["serial"] in admin_listed
    # A serial lookup stays open to any signed-in requester: "is this ours?" needs it.
    assert clients["scoped"].get(f"/api/v1/certificates/{other}").status_code == 200


@pytest.fixture
def approval_app(make_app):
    return make_app(policy={"approval_for_other_names": True})


@pytest.fixture
def mailing_approval_app(make_app):
    """An app with approvals on whose mail goes to a real SMTP server: (app, smtp)."""
    smtp = SMTPServer().start()
    try:
        yield make_app(policy={"approval_for_other_names": True}, mail={"host": "127.0.0.1", "port": smtp.port}), smtp
    finally:
        smtp.stop()


def test_pending_request_approved_from_the_web_page(mailing_approval_app):
    from ca_server.clock import utcnow

    app, smtp = mailing_approval_app
    svc = app.extensions["ca_server"]
    requester = ApiClient(app.test_client(), new_token(svc, "req", admin=False, domains=["example.test"]))
    response = requester.post("/api/v1/certificates", json={"csr": pem(make_csr(["a.other.test"])),
                                                            "notify": ["owner@example.test"]})
    assert response.status_code == 202
    body = response.get_json()
    assert body["status"] == "pending" and body["names"] == ["DNS:a.other.test"]
    request_id = body["request_id"]
    assert requester.get(f"/api/v1/requests/{request_id}").get_json()["status"] == "pending"

    accounts.add_user(svc.store, "boss", "boss-password", is_admin=True, domains=(), allow_ip=True, email=None,
                      now=utcnow())
    admin = app.test_client()
    assert sign_in(admin, "boss", "boss-password").status_code == 303
    queue = admin.get("/admin/requests").get_data(as_text=True)
    assert request_id in queue and "a.other.test" in queue
    page = admin.get(f"/requests/{request_id}").get_data(as_text=True)
    approved = admin.post(f"/admin/requests/{request_id}/approve", data={"csrf_token": csrf_token(page)})
    assert approved.status_code == 303
    outcome = requester.get(f"/api/v1/requests/{request_id}").get_json()
    assert outcome["status"] == "approved" and outcome["decided_by"] == "user:boss"
    assert outcome["certificate"]["sans"] == ["DNS:a.other.test"]
    record = svc.store.get_certificate(outcome["serial"])
    assert record.requester == "token:req"
    actions = [e["action"] for e in svc.store.audit_entries()]
    assert "request_pending" in actions and "approve" in actions
    # The requester hears of it by e-mail (the notify address, as tokens have none of their own).
    (mail,) = smtp.inbox.messages
    assert mail["To"] == "owner@example.test" and "approved" in mail["Subject"]
    assert outcome["serial"] in mail.get_body(("plain",)).get_content()
    # Deciding twice is a conflict, not a second certificate.
    again = admin.post(f"/admin/requests/{request_id}/approve", data={"csrf_token": csrf_token(page)})
    assert again.status_code == 409


def test_rejection_with_reason_is_shown_to_the_requester(approval_app):
    svc = approval_app.extensions["ca_server"]
    requester = ApiClient(approval_app.test_client(), new_token(svc, "req", admin=False, domains=["example.test"]))
    admin = ApiClient(approval_app.test_client(), new_token(svc, "adm"))
    request_id = requester.post("/api/v1/certificates",
                                json={"csr": pem(make_csr(["x.other.test"]))}).get_json()["request_id"]
    assert admin.post(f"/api/v1/requests/{request_id}/reject", json={}).status_code == 400
    assert requester.post(f"/api/v1/requests/{request_id}/reject", json={"reason": "x"}).status_code == 403
    response = admin.post(f"/api/v1/requests/{request_id}/reject", json={"reason": "not one of our servers"})
    assert response.status_code == 200 and response.get_json()["status"] == "rejected"
    page = requester.get(f"/requests/{request_id}").get_data(as_text=True)
    assert "Rejected by API token adm" in page and "not one of our servers" in page
    assert admin.post(f"/api/v1/requests/{request_id}/approve").status_code == 409
    other = ApiClient(approval_app.test_client(), new_token(svc, "other", admin=False, domains=["example.test"]))
    assert other.get(f"/api/v1/requests/{request_id}").status_code == 404


def test_the_rejection_mail_shows_the_reason_as_text(mailing_approval_app):
    """The reason went into the HTML part of the mail unescaped: markup of the admin's choosing."""
    app, smtp = mailing_approval_app
    svc = app.extensions["ca_server"]
    requester = ApiClient(app.test_client(), new_token(svc, "req", admin=False, domains=["example.test"]))
    admin = ApiClient(app.test_client(), new_token(svc, "adm"))
    request_id = requester.post("/api/v1/certificates", json={"csr": pem(make_csr(["y.other.test"])),
                                                              "notify": ["owner@example.test"]}).get_json()["request_id"]
    reason = 'use <a href="http://evil.test">this CA</a> & not ours'
    assert admin.post(f"/api/v1/requests/{request_id}/reject", json={"reason": reason}).status_code == 200
    (mail,) = smtp.inbox.messages
    assert reason in mail.get_body(("plain",)).get_content()
    html_part = mail.get_body(("html",)).get_content()
    assert "&lt;a href=&quot;http://evil.test&quot;&gt;this CA&lt;/a&gt; &amp; not ours" in html_part
    assert '<a href="http://evil.test">' not in html_part


def test_in_scope_names_are_issued_at_once_even_with_approvals_on(approval_app):
    svc = approval_app.extensions["ca_server"]
    requester = ApiClient(approval_app.test_client(), new_token(svc, "req", admin=False, domains=["example.test"]))
    assert requester.post("/api/v1/certificates", json={"csr": pem(make_csr(["in.example.test"]))}).status_code == 201
    refused = requester.post("/api/v1/certificates", json={"csr": pem(make_csr(["*.other.test"]))})
    assert refused.status_code == 422  # policy still refuses outright; approval is for scope only


def test_audit_log_records_and_exports_everything(clients, svc, app, instance):
    from ca_server.clock import utcnow

    serial = _issued(clients)
    clients["admin"].post("/api/v1/certificates", json={"csr": pem(make_csr(["*.example.test"]))})
    clients["outsider"].post("/api/v1/certificates", json={"csr": pem(make_csr(["a.example.test"]))})
    clients["admin"].post(f"/api/v1/certificates/{serial}/revoke", json={"reason": "superseded"})
    accounts.add_user(svc.store, "carol", "carol-password", is_admin=False, domains=(), allow_ip=False, email=None,
                      now=utcnow())
    web = app.test_client()
    sign_in(web, "carol", "wrong-password")
    sign_in(web, "carol", "carol-password")
    accounts.revoke_token(svc.store, "outsider", utcnow())
    entries = svc.store.audit_entries(limit=1000)
    actions = {e["action"] for e in entries}
    assert {"issue", "refuse", "revoke", "sign_in", "sign_in_failed", "token_create", "token_revoke",
            "user_add"} <= actions
    issue_row = next(e for e in entries if e["action"] == "issue" and e["serial"] == serial)
    assert issue_row["actor"] == "token:admin" and issue_row["client"] == "127.0.0.1" and issue_row["at"]
    issued = svc.store.get_certificate(serial)
    assert issue_row["detail"] == {"profile": issued.profile, "names": list(issued.sans), "door": "api"} and issued.sans
    refusals = [e for e in entries if e["action"] == "refuse"]
    assert {c for e in refusals for c in e["detail"]["codes"]} >= {"wildcard_not_allowed", "name_out_of_scope"}

    admin_page = clients["admin"].get("/admin/audit?action=revoke").get_data(as_text=True)
    assert serial[:16] in admin_page and "sign_in_failed" not in admin_page.split("<tbody>")[1]

    exported = CliRunner().invoke(main, ["audit", "export"])
    lines = [json.loads(line) for line in exported.output.splitlines()]
    assert len(lines) == len(entries) and lines[0]["id"] < lines[-1]["id"]
    # In steps, as a SIEM is fed: each step starts after the last id it got, and together they are the whole log.
    middle = lines[len(lines) // 2]["id"]
    rest = CliRunner().invoke(main, ["audit", "export", "--after-id", str(middle)])
    assert [json.loads(line) for line in rest.output.splitlines()] == [row for row in lines if row["id"] > middle]
    assert CliRunner().invoke(main, ["audit", "export", "--after-id", str(lines[-1]["id"])]).output == ""

    # The database itself refuses (a trigger in either backend), whoever connects.
    db = svc.store.db
    with pytest.raises((sqlite3.IntegrityError, psycopg.errors.RaiseException), match="append-only"):
        db.execute("UPDATE audit_log SET action = 'nothing'")
    with pytest.raises((sqlite3.IntegrityError, psycopg.errors.RaiseException), match="append-only"):
        db.execute("DELETE FROM audit_log")


@pytest.mark.parametrize("count_max", [20_000, 1, 4])
def test_audit_filters_combine_whichever_index_is_read(svc, monkeypatch, count_max):
    """action + actor read through the rarer value's index (counted up to AUDIT_COUNT_MAX); the
    entries and pages are the same whichever it is."""
    from ca_server.clock import utcnow
    from ca_server.store import audit

    monkeypatch.setattr(audit, "AUDIT_COUNT_MAX", count_max)
    plan = [("issue", "token:busy")] * 12 + [("revoke", "token:busy"), ("revoke", "user:rare"),
                                             ("issue", "user:rare")] * 3
    for action, actor in plan:
        svc.store.append_audit(at=utcnow(), action=action, actor=actor, serial=None)
    everything = svc.store.audit_entries(limit=1000)
    for action, actor in (("issue", "token:busy"), ("revoke", "token:busy"), ("revoke", "user:rare"),
                          ("issue", "user:rare"), ("revoke", "nobody")):
        expected = [e["id"] for e in everything if e["action"] == action and e["actor"] == actor]
        pages, before = [], None
        while True:  # pages of 2, as the audit page follows `before`
            page = [e["id"] for e in svc.store.audit_entries(action=action, actor=actor, limit=2, before_id=before)]
            pages += page
            if len(page) < 2:
                break
            before = page[-1]
        assert pages == expected, (action, actor)
    assert len([e for e in everything if e["actor"] == "token:busy"]) == 15


def test_failed_sign_ins_are_rate_limited(app, svc):
    from ca_server.clock import utcnow

    accounts.add_user(svc.store, "dave", "dave-password", is_admin=False, domains=(), allow_ip=False, email=None,
                      now=utcnow())
    client = app.test_client()
    well_inside_a_minute()
    statuses = [sign_in(client, "dave", f"guess-{i}").status_code for i in range(12)]
    assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]
    other = app.test_client()  # a successful sign-in from elsewhere is not counted against anyone
    assert sign_in(other, "dave", "dave-password").status_code in (303, 429)


def test_a_rate_limited_page_says_when_to_try_again(app, svc):
    """The HTML answer to a rate-limited request is the error page with status 429 and Retry-After,
    like the JSON one."""
    client = app.test_client()
    well_inside_a_minute()
    responses = [sign_in(client, "nobody", f"guess-{i}") for i in range(11)]
    limited = responses[-1]
    assert limited.status_code == 429 and limited.mimetype == "text/html"
    assert int(limited.headers["Retry-After"]) >= 1
    assert "Too many failed sign-ins" in limited.get_data(as_text=True)


def test_submissions_are_rate_limited(make_app):
    app = make_app(server={"submission_rate_limit": "3 per minute"})
    client = ApiClient(app.test_client(), new_token(app.extensions["ca_server"], "fast"))
    well_inside_a_minute()
    statuses = [client.post("/api/v1/certificates", json={"csr": pem(make_csr([f"r{i}.example.test"]))}).status_code
                for i in range(5)]
    assert statuses == [201, 201, 201, 429, 429]
    assert client.post("/api/v1/certificates", json={}).get_json()["error"]["code"] == "rate_limited"


def test_rate_limit_counters_do_not_start_a_thread_per_request_burst(monkeypatch):
    """limits' memory storage started a sweeping thread 10 ms after the last one for as long as
    requests came in (~100 threads a second per worker); ours sweeps once a minute. Counting and
    refusing are unchanged."""
    import threading
    import time

    from ca_server.web.ratelimit import RateLimitedError, RateLimits

    started = []

    class CountingTimer(threading.Timer):
        def start(self):
            started.append(self)
            super().start()

    monkeypatch.setattr(threading, "Timer", CountingTimer)
    limits = RateLimits()
    well_inside_a_minute()
    for _ in range(40):
        limits.submission("40 per minute", "token:steady")
        time.sleep(0.005)  # longer than the library's 10 ms sweep delay, every second request
    assert len(started) <= 2, f"{len(started)} sweeping threads for 40 requests"
    assert all(t.daemon for t in started[1:])  # a waiting sweep does not hold up a worker's exit
    with pytest.raises(RateLimitedError):
        limits.submission("40 per minute", "token:steady")


def test_session_cookie_flags(app, svc, make_app):
    from ca_server.clock import utcnow

    accounts.add_user(svc.store, "erin", "erin-password", is_admin=False, domains=(), allow_ip=False, email=None,
                      now=utcnow())
    client = app.test_client()
    cookie = sign_in(client, "erin", "erin-password").headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    https_app = make_app(server={"base_url": "https://ca.example.test"})
    assert https_app.config["SESSION_COOKIE_SECURE"] is True


def test_sign_out_ends_the_session(web):
    page = web.get("/").get_data(as_text=True)
    assert web.post("/logout", data={"csrf_token": csrf_token(page)}).status_code == 303
    assert web.get("/").status_code == 302


def test_open_redirect_after_sign_in_is_refused(app, svc):
    from ca_server.clock import utcnow

    accounts.add_user(svc.store, "fay", "fay-password", is_admin=False, domains=(), allow_ip=False, email=None,
                      now=utcnow())
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    response = client.post("/login?next=https://evil.example/", data={
        "username": "fay", "password": "fay-password", "csrf_token": csrf_token(page)})
    assert response.headers["Location"] == "/"


def test_server_errors_show_no_internals(make_app):
    app = make_app()

    @app.get("/boom")
    def boom():
        raise RuntimeError("secret internal detail")

    client = ApiClient(app.test_client(), new_token(app.extensions["ca_server"], "t"))
    response = client.get("/boom", headers={"Accept": "application/json"})
    assert response.status_code == 500
    text = response.get_data(as_text=True)
    assert "secret internal detail" not in text and "Traceback" not in text
    assert response.get_json()["error"]["code"] == "internal_error"


def test_admin_token_page_lists_and_revokes_tokens(web, svc, app):
    token = new_token(svc, "to-revoke", admin=False, domains=["example.test"])
    client = ApiClient(app.test_client(), token)
    assert client.get("/api/v1/certificates").status_code == 200
    page = web.get("/admin/tokens").get_data(as_text=True)
    assert "to-revoke" in page and "example.test" in page and token not in page
    assert "last used" in page.lower() or "Last used" in page
    response = web.post("/admin/tokens/to-revoke/revoke", data={"csrf_token": csrf_token(page)})
    assert response.status_code == 303
    assert client.get("/api/v1/certificates").status_code == 401
    assert "revoked" in web.get("/admin/tokens").get_data(as_text=True)
    assert any(e["action"] == "token_revoke" and e["actor"] == "user:alice" for e in svc.store.audit_entries())


def test_public_endpoints_stay_public_with_a_stale_token(app, svc):
    from ca_server.clock import utcnow

    token = new_token(svc, "stale")
    accounts.revoke_token(svc.store, "stale", utcnow())
    client = ApiClient(app.test_client(), token)
    for url in ("/ca/root.pem", "/crl/intermediate.crl", "/trust", "/healthz"):
        assert client.get(url).status_code == 200, url
    assert client.get("/api/v1/certificates").status_code == 401


def test_an_approval_the_policy_now_refuses_is_audited_and_left_pending(make_app):
    """One path for every door: approving re-checks the policy, and a refusal there is audited
    like any other (it was not before the issuance path was one), the request still pending."""
    app = make_app(policy={"approval_for_other_names": True})
    svc = app.extensions["ca_server"]
    requester = ApiClient(app.test_client(), new_token(svc, "req", admin=False, domains=["example.test"]))
    held = requester.post("/api/v1/certificates", json={"csr": pem(make_csr(["a.other.test"]))}).get_json()
    assert held["status"] == "pending"
    stricter = make_app(policy={"approval_for_other_names": True, "allowed_domains": ["example.test"]})
    admin = ApiClient(stricter.test_client(), new_token(svc, "boss"))
    refused = admin.post(f"/api/v1/requests/{held['request_id']}/approve", json={})
    assert refused.status_code == 422 and refused.get_json()["error"]["code"] == "domain_not_allowed"
    refusals = [e for e in svc.store.audit_entries() if e["action"] == "refuse"]
    assert refusals and refusals[-1]["detail"]["codes"] == ["domain_not_allowed"]
    assert refusals[-1]["actor"] == "token:req"  # whose request it was
    assert requester.get(f"/api/v1/requests/{held['request_id']}").get_json()["status"] == "pending"
    assert svc.store.count_certificates(CertificateFilter(), dt.datetime.now(dt.UTC)) == 0
