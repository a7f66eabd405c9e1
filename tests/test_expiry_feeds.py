"""Expiry beyond e-mail: a certificate's .ics (read back with the icalendar library) and the
Prometheus exposition (read back with prometheus_client's parser)."""

from __future__ import annotations

import datetime as dt

from icalendar import Calendar
from prometheus_client.parser import text_string_to_metric_families

from .conftest import ApiClient, new_token
from .factories import make_csr, pem


def issue(api, names, days=90):
    response = api.post("/api/v1/certificates", json={"csr": pem(make_csr(names)), "validity_days": days})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def event_of(api, serial):
    response = api.get(f"/certificates/{serial}.ics")
    assert response.status_code == 200 and response.mimetype == "text/calendar"
    assert "attachment" in response.headers["Content-Disposition"]
    calendar = Calendar.from_ical(response.data)
    events = calendar.walk("VEVENT")
    assert len(events) == 1
    return events[0]


def test_a_certificates_ics_is_an_all_day_event_with_alarms_at_the_thresholds(api, svc):
    cert = issue(api, ["cal.example.test"])
    event = event_of(api, cert["serial"])
    not_after = dt.datetime.fromisoformat(cert["not_after"].replace("Z", "+00:00"))
    start = event.decoded("dtstart")
    assert isinstance(start, dt.date) and not isinstance(start, dt.datetime)  # DTSTART;VALUE=DATE
    assert start == not_after.date()
    assert str(event["uid"]) == f"{cert['serial']}@127.0.0.1"
    assert str(event["url"]).endswith(f"/certificates/{cert['serial']}")
    assert "cal.example.test" in str(event["description"]) and cert["serial"] in str(event["description"])
    assert event.decoded("sequence") == 0
    triggers = sorted(alarm.decoded("trigger") for alarm in event.walk("VALARM"))
    assert triggers == [dt.timedelta(days=-d) for d in sorted(svc.config.reminders.days_before, reverse=True)]
    assert all(str(alarm["action"]) == "DISPLAY" for alarm in event.walk("VALARM"))


def test_revoked_and_renewed_certificates_change_their_event(api):
    first = issue(api, ["changing.example.test"])
    renewed = issue(api, ["changing.example.test"])
    event = event_of(api, first["serial"])
    assert event.decoded("sequence") == 1 and renewed["serial"] in str(event["description"])
    assert not event.walk("VALARM")  # nothing left to remind of
    assert api.post(f"/api/v1/certificates/{renewed['serial']}/revoke", json={"reason": "superseded"}).status_code == 200
    event = event_of(api, renewed["serial"])
    assert event.decoded("sequence") == 2 and str(event["status"]) == "CANCELLED"


def test_the_ics_needs_a_signed_in_user_or_a_token(app, api):
    cert = issue(api, ["private.example.test"])
    assert app.test_client().get(f"/certificates/{cert['serial']}.ics").status_code in (302, 401)


def metrics_of(client, headers: dict | None = None) -> dict:
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "text/plain"
    return {family.name: family for family in text_string_to_metric_families(response.get_data(as_text=True))}


def test_metrics_expose_expiry_counts_issuances_refusals_and_the_cas(app, api, svc):
    soon = issue(api, ["soon.example.test"], days=10)
    later = issue(api, ["later.example.test"], days=200)
    assert api.post("/api/v1/certificates", json={"csr": pem(make_csr(["*.example.test"]))}).status_code == 422
    assert api.post(f"/api/v1/certificates/{later['serial']}/revoke", json={"reason": "superseded"}).status_code == 200
    anonymous = metrics_of(app.test_client())  # counts public by default, like /healthz
    assert "ca_server_certificate_expiry_timestamp_seconds" not in anonymous  # no inventory of hosts
    body = app.test_client().get("/metrics").get_data(as_text=True)
    assert soon["serial"] not in body and "soon.example.test" not in body and "admin-token" not in body
    assert anonymous["ca_server_certificates_due"].samples[0].value == 1
    assert {s.labels["status"]: s.value for s in anonymous["ca_server_certificates"].samples}["valid"] == 1
    families = metrics_of(app.test_client(), {"Authorization": f"Bearer {api.token}"})
    expiry = {s.labels["serial"]: s.value for s in families["ca_server_certificate_expiry_timestamp_seconds"].samples}
    not_after = dt.datetime.fromisoformat(soon["not_after"].replace("Z", "+00:00"))
    assert expiry == {soon["serial"]: not_after.timestamp()}  # the 200-day one is not due (and revoked)
    counts = {s.labels["status"]: s.value for s in families["ca_server_certificates"].samples}
    assert counts == {"valid": 1, "revoked": 1, "expired": 0}
    assert families["ca_server_issuances"].samples[0].value == 2
    refusals = {s.labels["code"]: s.value for s in families["ca_server_refusals"].samples}
    assert refusals == {"wildcard_not_allowed": 1}
    cas = {s.labels["ca"]: s.value for s in families["ca_server_ca_certificate_expiry_timestamp_seconds"].samples}
    assert cas["intermediate"] == svc.authority.intermediate.not_valid_after_utc.timestamp()
    assert cas["root"] == svc.authority.root.not_valid_after_utc.timestamp()
    assert families["ca_server_reminders_failed"].samples[0].value == 0


def test_metrics_can_require_a_token(make_app):
    app = make_app(metrics={"public": False})
    client = app.test_client()
    refused = client.get("/metrics")
    assert refused.status_code == 401 and "Bearer" in refused.get_json()["error"]["message"]
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    token = new_token(app.extensions["ca_server"], "prometheus", admin=False, domains=("example.test",))
    assert "ca_server_certificates" in metrics_of(ApiClient(client, token))
    assert "ca_server_certificate_expiry_timestamp_seconds" in metrics_of(client, {"Authorization": f"Bearer {token}"})


def test_someone_always_hears(app, svc, web):
    """Users have an address; the form fills it in as the reminder address; admins change it; the
    dashboard counts certificates that would notify nobody."""
    from ca_server import accounts

    from .conftest import csrf_token, sign_in

    accounts.add_user(svc.store, "bob", "bob-password-long", is_admin=False, domains=("example.test",),
                      allow_ip=False, email="Bob@Example.test", now=dt.datetime.now(dt.UTC))
    bob = app.test_client()
    assert sign_in(bob, "bob", "bob-password-long").status_code == 303
    form = bob.get("/certificates/new").get_data(as_text=True)
    assert 'value="Bob@example.test"' in form  # the domain part is normalised
    submitted = bob.post("/certificates/new", data={"csr": pem(make_csr(["bob.example.test"])), "profile": "server",
                                                   "notify": "Bob@example.test", "csrf_token": csrf_token(form)})
    assert submitted.status_code == 303
    serial = submitted.headers["Location"].rsplit("/", 1)[1]
    assert svc.store.get_certificate(serial).notify == ("Bob@example.test",)

    page = web.get("/admin/tokens").get_data(as_text=True)
    changed = web.post("/admin/users/bob/email", data={"email": "ops@example.test", "csrf_token": csrf_token(page)})
    assert changed.status_code == 303 and svc.store.get_user("bob")["email"] == "ops@example.test"
    bad = web.post("/admin/users/bob/email", data={"email": "not an address", "csrf_token": csrf_token(page)})
    assert bad.status_code == 400 and "is not an e-mail address" in bad.get_data(as_text=True)

    api = ApiClient(app.test_client(), new_token(svc, "quiet"))
    issue(api, ["nobody-hears.example.test"])
    dashboard = web.get("/").get_data(as_text=True)
    assert "Certificates that would notify nobody" in dashboard and "1 valid certificate names no" in dashboard


def test_user_set_email_from_the_command_line(instance, svc):
    from click.testing import CliRunner

    from ca_server import accounts
    from ca_server.cli import main

    accounts.add_user(svc.store, "carol", "carol-password-long", is_admin=False, domains=(), allow_ip=False,
                      email=None, now=dt.datetime.now(dt.UTC))
    runner = CliRunner()
    assert runner.invoke(main, ["user", "set-email", "carol", "carol@example.test"]).exit_code == 0
    assert svc.store.get_user("carol")["email"] == "carol@example.test"
    assert "carol@example.test" in runner.invoke(main, ["user", "list"]).output
    wrong = runner.invoke(main, ["user", "set-email", "carol", "carol-at-example"])
    assert wrong.exit_code != 0 and "is not an e-mail address" in wrong.output
    assert runner.invoke(main, ["user", "set-email", "nobody", "x@example.test"]).exit_code != 0


def test_a_subscribable_calendar_per_user_and_per_token(app, svc, web):
    from ca_server import accounts

    from .conftest import csrf_token

    scoped = ApiClient(app.test_client(), new_token(svc, "team", admin=False, domains=("team.example.test",)))
    mine = issue(scoped, ["a.team.example.test"])
    gone = issue(scoped, ["b.team.example.test"])
    other = issue(ApiClient(app.test_client(), new_token(svc, "other")), ["c.example.test"])
    made = scoped.post("/api/v1/calendar")
    assert made.status_code == 201
    url = made.get_json()["url"]
    assert url.startswith(svc.config.server.base_url + "/calendar/") and url.endswith(".ics")
    feed_path = url[len(svc.config.server.base_url):]
    public = app.test_client()  # calendar apps send no sign-in: the URL's secret is enough

    def uids() -> set[str]:
        response = public.get(feed_path)
        assert response.status_code == 200 and response.mimetype == "text/calendar"
        calendar = Calendar.from_ical(response.data)
        assert str(calendar["x-wr-calname"]) == "Certificate expiry"
        return {str(e["uid"]).split("@")[0] for e in calendar.walk("VEVENT")}

    assert uids() == {mine["serial"], gone["serial"]}  # the token's own, not the other token's
    admin = ApiClient(app.test_client(), new_token(svc, "revoker"))
    assert admin.post(f"/api/v1/certificates/{gone['serial']}/revoke", json={"reason": "superseded"}).status_code == 200
    assert uids() == {mine["serial"]}  # revoked ones leave the feed
    again = scoped.post("/api/v1/calendar").get_json()["url"]
    assert again != url and public.get(feed_path).status_code == 404  # a new URL; the old one is dead
    assert scoped.client.delete("/api/v1/calendar", headers={"Authorization": f"Bearer {scoped.token}"}).status_code == 204
    assert public.get(again[len(svc.config.server.base_url):]).status_code == 404
    # An admin user's calendar page, and the certificates of the whole CA in the feed.
    page = web.get("/calendar")
    assert page.status_code == 200 and "no calendar URL yet" in page.get_data(as_text=True)
    assert web.post("/calendar/new", data={"csrf_token": csrf_token(page.get_data(as_text=True))}).status_code == 303
    shown = web.get("/calendar").get_data(as_text=True)
    admin_url = shown.split('id="feed-url" type="text" readonly value="')[1].split('"')[0]
    admin_feed = Calendar.from_ical(public.get(admin_url[len(svc.config.server.base_url):]).data)
    assert {mine["serial"], other["serial"]} <= {str(e["uid"]).split("@")[0] for e in admin_feed.walk("VEVENT")}
    last = scoped.post("/api/v1/calendar").get_json()["url"][len(svc.config.server.base_url):]
    assert public.get(last).status_code == 200
    accounts.revoke_token(svc.store, "team", dt.datetime.now(dt.UTC))
    assert public.get(last).status_code == 404  # a revoked token's feed stops with it
    assert public.get("/calendar/not-a-token.ics").status_code == 404


def test_ocsp_answers_are_counted_across_the_servers_workers(instance, svc):
    """Under `serve` each worker counts the answers it gives; every scrape adds all workers up."""
    import base64

    import requests
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509 import ocsp

    from .server import running_server

    token = new_token(svc, "ocsp-metrics")
    with running_server(instance) as base:
        cert = requests.post(f"{base}/api/v1/certificates", headers={"Authorization": f"Bearer {token}"}, timeout=10,
                             json={"csr": pem(make_csr(["counted.example.test"]))}).json()
        leaf = x509.load_pem_x509_certificate(cert["certificate"].encode())
        der = ocsp.OCSPRequestBuilder().add_certificate(leaf, svc.authority.intermediate, hashes.SHA1()).build()
        path = "/ocsp/" + base64.b64encode(der.public_bytes(Encoding.DER)).decode().replace("/", "%2F")
        for _ in range(12):  # new connections: they land on both workers
            assert requests.get(base + path, timeout=5, headers={"Connection": "close"}).status_code == 200
        for _ in range(4):
            families = {f.name: f for f in text_string_to_metric_families(
                requests.get(f"{base}/metrics", timeout=10, headers={"Connection": "close"}).text)}
            counted = {s.labels["status"]: s.value for s in families["ca_server_ocsp_answers"].samples
                       if s.name.endswith("_total")}
            assert counted.get("good") == 12, counted


def test_ocsp_answers_are_counted_in_process(app, api, svc):
    import base64

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509 import ocsp

    def good_count() -> float:
        family = metrics_of(app.test_client())["ca_server_ocsp_answers"]
        return next((s.value for s in family.samples if s.labels.get("status") == "good" and s.name.endswith("_total")), 0)

    leaf = x509.load_pem_x509_certificate(issue(api, ["counted2.example.test"])["certificate"].encode())
    der = ocsp.OCSPRequestBuilder().add_certificate(leaf, svc.authority.intermediate, hashes.SHA1()).build()
    before = good_count()
    for _ in range(3):
        app.test_client().get("/ocsp/" + base64.b64encode(der.public_bytes(Encoding.DER)).decode().replace("/", "%2F"))
    assert good_count() == before + 3


def test_metrics_name_certificates_to_a_signed_in_user(web, api):
    """The README's claim: the per-certificate series go to a token or a signed-in user's browser."""
    soon = issue(api, ["browser-seen.example.test"], days=5)
    families = metrics_of(web)
    serials = {s.labels["serial"] for s in families["ca_server_certificate_expiry_timestamp_seconds"].samples}
    assert soon["serial"] in serials
