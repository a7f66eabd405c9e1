"""Expiry reminders with a real SMTP server: when, to whom, exactly once, retried after failures."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading

import pytest
from click.testing import CliRunner

from ca_server import issuance
from ca_server.cli import main
from ca_server.config import Secrets, load_config
from ca_server.notify import reminders
from ca_server.scheduler import build_scheduler
from ca_server.services import open_services

from .checks import tls_server_context
from .conftest import PASSPHRASE
from .factories import make_csr, pem
from .smtp import SMTPServer, write_config

T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


@pytest.fixture
def smtp():
    server = SMTPServer().start()
    yield server
    server.stop()


@pytest.fixture
def rsvc(instance, smtp):
    """Services whose [mail] points at the test SMTP server."""
    write_config(instance, mail={"host": "127.0.0.1", "port": smtp.port, "from": "ca@example.test"},
                 server={"base_url": "http://ca.example.test:8080"})
    return open_services(instance, secrets=Secrets(key_passphrase=PASSPHRASE))


def issue(svc, names=("app.example.test",), days=90, notify=("owner@example.test",), at=T0):
    request = issuance.IssueRequest(csr=pem(make_csr(list(names))), validity_days=days, notify=tuple(notify))
    return issuance.issue(svc.config, svc.store, svc.authority, request, at)


def run(svc, now, **kw):
    return reminders.run_pass(svc.config, svc.secrets, svc.store, now, **kw)


@pytest.mark.parametrize(
    "offset, expected",
    [
        (-40 * DAY, None), (-30 * DAY, 30), (-29 * DAY, 30), (-14 * DAY, 14), (-10 * DAY, 14), (-7 * DAY, 7),
        (-2 * DAY, 7), (-DAY, 1), (-dt.timedelta(hours=5), 0), (dt.timedelta(hours=5), 0), (DAY, None),
    ],
    ids=["before-30", "at-30", "29", "at-14", "10", "at-7", "2", "at-1", "expiry-day", "just-expired", "long-gone"],
)
def test_due_threshold(offset, expected):
    not_after = dt.datetime(2027, 3, 10, 18, 0, tzinfo=dt.UTC)
    assert reminders.due_threshold(not_after, not_after + offset, (30, 14, 7, 1)) == expected


def test_one_mail_per_threshold_as_time_passes(rsvc, smtp):
    record = issue(rsvc)
    end = record.not_after
    plan = [(end - 40 * DAY, 0), (end - 30 * DAY, 1), (end - 30 * DAY, 0), (end - 20 * DAY, 0),
            (end - 14 * DAY, 1), (end - 7 * DAY, 1), (end - DAY, 1), (end - dt.timedelta(hours=2), 1),
            (end + dt.timedelta(hours=2), 0), (end + 3 * DAY, 0)]
    for now, expected in plan:
        before = len(smtp.inbox.messages)
        run(rsvc, now)
        assert len(smtp.inbox.messages) - before == expected, now
    subjects = [m["Subject"] for m in smtp.inbox.messages]
    assert "expires in 30 days" in subjects[0] and "expires in 14 days" in subjects[1]
    assert "expires today" in subjects[-1]
    history = rsvc.store.reminders_for(record.serial)
    assert [(h["threshold"], h["status"]) for h in history] == [(30, "sent"), (14, "sent"), (7, "sent"),
                                                                 (1, "sent"), (0, "sent")]


def test_several_thresholds_crossed_while_down_send_only_the_most_urgent(rsvc, smtp):
    record = issue(rsvc)
    run(rsvc, record.not_after - 5 * DAY)
    assert len(smtp.inbox.messages) == 1
    assert "expires in 5 days" in smtp.inbox.messages[0]["Subject"]
    assert [h["threshold"] for h in rsvc.store.reminders_for(record.serial)] == [7]
    run(rsvc, record.not_after - 4 * DAY)
    assert len(smtp.inbox.messages) == 1


def test_the_mail_says_what_expires_when_and_how_to_renew(rsvc, smtp):
    record = issue(rsvc, ["cucm1.example.test", "cucm-pub.example.test"], notify=("a@example.test", "b@example.test"))
    run(rsvc, record.not_after - 14 * DAY)
    (message,) = smtp.inbox.messages
    assert message["To"] == "a@example.test, b@example.test"
    assert message["From"] == "ca@example.test"
    assert sorted(smtp.inbox.envelopes[0][1]) == ["a@example.test", "b@example.test"]
    assert "cucm1.example.test" in message["Subject"] and "14 days" in message["Subject"]
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    expiry = record.not_after.strftime("%Y-%m-%d %H:%M:%S UTC")
    for body in (text, html):
        for fact in ("cucm1.example.test", "cucm-pub.example.test", record.serial, expiry,
                     f"http://ca.example.test:8080/certificates/{record.serial}", "Generate a new CSR"):
            assert fact in body, fact



@pytest.mark.parametrize(("door", "requester", "words"), [
    ("scep", issuance.Requester(name="phones", kind="scep"),
     ("enrolled over SCEP", "Its SCEP client", "http://ca.example.test:8080/scep", "getcert resubmit")),
    ("est", issuance.Requester(name="routers", kind="token"),
     ("enrolled over EST", "Its EST client", "http://ca.example.test:8080/.well-known/est/", "simplereenroll")),
])
def test_a_device_that_enrolled_itself_is_told_to_check_its_client_not_to_make_a_csr(rsvc, smtp, door, requester,
                                                                                    words):
    """Before, the reminder of a certificate a device got over SCEP or EST said to generate a CSR on
    the device and submit it through the web form: the device renews by itself, and what the
    owner must check is its client."""
    request = issuance.IssueRequest(csr=pem(make_csr(["device.example.test"])), validity_days=90,
                                    notify=("owner@example.test",), requester=requester, door=door)
    record = issuance.issue(rsvc.config, rsvc.store, rsvc.authority, request, T0)
    run(rsvc, record.not_after - 14 * DAY)
    (message,) = smtp.inbox.messages
    for body in (message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()):
        for phrase in words:
            assert phrase in body, phrase
        assert "Generate a new CSR" not in body and "/certificates/new" not in body

def test_a_line_break_in_a_stored_cn_neither_stops_the_pass_nor_reaches_a_header(rsvc, smtp):
    """Found by a CSR whose CN held CR/LF: building the mail raised ValueError (mail headers refuse
    line breaks) after the reminder was claimed, which ended the whole pass, so no certificate due
    after it got its reminder, in this pass or any later one. Policy now refuses such a CN
    (subject_invalid); a certificate stored before that still gets its mail."""
    early = issue(rsvc, ["early.example.test"], days=80)
    crlf = issue(rsvc, ["crlf.example.test"], days=81)
    late = issue(rsvc, ["late.example.test"], days=82)
    rsvc.store.db.execute("UPDATE certificates SET common_name = ? WHERE serial = ?",
                          ["crlf\r\nBcc: someone@evil.test", crlf.serial])
    outcomes = run(rsvc, late.not_after - 14 * DAY)
    assert sorted(o.serial for o in outcomes if o.status == "sent") == sorted([early.serial, crlf.serial, late.serial])
    subjects = sorted(" ".join(m["Subject"].split()) for m in smtp.inbox.messages)  # unfolded
    assert any(s.startswith("Certificate crlf Bcc: someone@evil.test expires") for s in subjects), subjects
    assert all(sorted(envelope[1]) == ["owner@example.test"] for envelope in smtp.inbox.envelopes)


def test_a_reminder_that_cannot_be_made_is_retried_and_the_others_are_sent(rsvc, smtp, monkeypatch):
    broken = issue(rsvc, ["broken.example.test"])
    fine = issue(rsvc, ["fine.example.test"])
    real = reminders.reminder_message

    def failing_for_one(record, **kw):
        if record.serial == broken.serial:
            raise RuntimeError("injected")
        return real(record, **kw)

    monkeypatch.setattr(reminders, "reminder_message", failing_for_one)
    outcomes = {o.serial: o for o in run(rsvc, fine.not_after - 14 * DAY)}
    assert outcomes[fine.serial].status == "sent" and len(smtp.inbox.messages) == 1
    assert outcomes[broken.serial].status == "failed" and "injected" in outcomes[broken.serial].error
    monkeypatch.setattr(reminders, "reminder_message", real)
    retried = run(rsvc, fine.not_after - 14 * DAY + dt.timedelta(hours=2))
    assert [(o.serial, o.status) for o in retried] == [(broken.serial, "sent")]


def test_an_address_under_an_international_domain_gets_its_mail(rsvc, smtp):
    """Stored as given (ops@bücher.example.test), the envelope needed SMTPUTF8: smtplib refuses to send
    it to a server that does not offer the extension (this test server does). The domain is now
    stored in its xn-- form, which any SMTP server takes."""
    record = issue(rsvc, ["idn.example.test"], notify=("ops@bücher.example.test",))
    assert record.notify == ("ops@xn--bcher-kva.example.test",)
    outcomes = run(rsvc, record.not_after - 14 * DAY)
    assert [o.status for o in outcomes] == ["sent"]
    assert smtp.inbox.envelopes[0][1] == ["ops@xn--bcher-kva.example.test"]


def test_revoked_renewed_and_unaddressed_certificates_get_no_mail(rsvc, smtp):
    revoked = issue(rsvc, ["gone.example.test"])
    from ca_server import revocation

    revocation.revoke(rsvc.config, rsvc.store, rsvc.authority, revoked.serial, "cessationOfOperation", T0,
                      actor="test")
    old = issue(rsvc, ["renewed.example.test"])
    new = issue(rsvc, ["renewed.example.test"], days=200, at=T0 + DAY)
    nobody = issue(rsvc, ["nobody.example.test"], notify=())
    outcomes = run(rsvc, old.not_after - 10 * DAY)
    assert smtp.inbox.messages == []
    assert [(o.serial, o.status) for o in outcomes] == [(nobody.serial, "no recipients")]
    assert rsvc.store.get_certificate(old.serial, with_renewal=True).superseded_by == new.serial


def test_detail_page_says_renewed_by(rsvc, web):
    old = issue(rsvc, ["page.example.test"])
    new = issue(rsvc, ["page.example.test"], at=T0 + DAY)
    html = web.get(f"/certificates/{old.serial}").get_data(as_text=True)
    assert "renewed by" in html and new.serial in html
    assert "renewed by" not in web.get(f"/certificates/{new.serial}").get_data(as_text=True)


def test_default_recipients_cover_certificates_without_notify(instance, smtp):
    write_config(instance, mail={"host": "127.0.0.1", "port": smtp.port},
                 reminders={"default_recipients": ["pki-team@example.test"]})
    svc = open_services(instance, secrets=Secrets(key_passphrase=PASSPHRASE))
    record = issue(svc, notify=())
    run(svc, record.not_after - 7 * DAY)
    assert smtp.inbox.envelopes[0][1] == ["pki-team@example.test"]


def test_two_passes_at_once_in_threads_send_one_mail(rsvc, smtp):
    records = [issue(rsvc, [f"t{i}.example.test"]) for i in range(5)]
    now = records[0].not_after - 7 * DAY
    barrier = threading.Barrier(4)

    def one_pass():
        svc = open_services(rsvc.paths.root, secrets=rsvc.secrets)  # each pass its own connections
        barrier.wait()
        run(svc, now)

    threads = [threading.Thread(target=one_pass) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(smtp.inbox.messages) == 5
    assert sorted(m["Subject"] for m in smtp.inbox.messages) == sorted(set(m["Subject"] for m in smtp.inbox.messages))


def test_two_remind_processes_at_once_send_one_mail(rsvc, smtp, instance):
    issue(rsvc, ["proc.example.test"], days=1, at=dt.datetime.now(dt.UTC))
    env = {**os.environ, "CA_SERVER_INSTANCE": str(instance), "CA_SERVER_KEY_PASSPHRASE": PASSPHRASE}
    procs = [subprocess.Popen([sys.executable, "-m", "ca_server", "remind"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    assert len(smtp.inbox.messages) == 1
    assert sum(out.count("sent:") for out, _ in outputs) == 1


def test_smtp_down_then_up_delivers_once_late_and_records_it(rsvc, smtp, web):
    record = issue(rsvc)
    smtp.stop()
    now = record.not_after - 14 * DAY
    outcomes = run(rsvc, now)
    assert [o.status for o in outcomes] == ["failed"]
    (failed,) = rsvc.store.reminders_for(record.serial)
    assert failed["status"] == "failed" and failed["attempts"] == 1 and failed["last_error"]
    # Visible on the detail page and the dashboard.
    assert "failed" in web.get(f"/certificates/{record.serial}").get_data(as_text=True)
    assert "Reminders that failed" in web.get("/").get_data(as_text=True)
    smtp.start()
    assert run(rsvc, now + dt.timedelta(minutes=1)) == []  # backoff: not yet
    outcomes = run(rsvc, now + dt.timedelta(minutes=rsvc.config.reminders.retry_minutes))
    assert [o.status for o in outcomes] == ["sent"]
    assert len(smtp.inbox.messages) == 1
    (sent,) = rsvc.store.reminders_for(record.serial)
    assert sent["status"] == "sent" and sent["attempts"] == 2
    assert run(rsvc, now + DAY) == []


def test_a_relay_that_accepts_and_never_answers_is_tried_once_per_pass(instance, svc):
    """A mail relay that takes the connection and says nothing (a hung MTA, a firewall's tarpit):
    each of a pass's reminders waited out timeout_seconds on a new connection of its own (100 due
    reminders: 33 minutes with the default 20 s). Now the first failure ends the tries for that
    pass: the others fail at once with the reason, and every one waits for a retry."""
    from .checks import silent_server

    with silent_server() as (port, accepted):
        write_config(instance, mail={"host": "127.0.0.1", "port": port, "timeout_seconds": 1})
        now = dt.datetime.now(dt.UTC)
        for name in ("hung1.example.test", "hung2.example.test", "hung3.example.test"):
            issue(svc, [name], days=1, at=now)
        result = CliRunner().invoke(main, ["remind"])
        assert result.exit_code == 1 and "0 sent, 3 failed" in result.output, result.output
        failed = [line for line in result.output.splitlines() if line.startswith("failed: ")]
        assert len(failed) == 3 and failed[0].endswith("SMTPServerDisconnected: Connection unexpectedly closed: "
                                                       "timed out"), failed
        assert all(": not tried, the SMTP server failed just before: SMTP 127.0.0.1:" in line and
                   line.endswith("timed out") for line in failed[1:]), failed
        assert len(accepted) == 1, "one connection for the pass, not one per reminder"
        assert "3 waiting for a retry" in result.output


def test_failures_back_off_doubling(rsvc, smtp):
    record = issue(rsvc)
    smtp.stop()
    now = record.not_after - 14 * DAY
    run(rsvc, now)
    step = dt.timedelta(minutes=rsvc.config.reminders.retry_minutes)
    run(rsvc, now + step)
    (row,) = rsvc.store.reminders_for(record.serial)
    assert row["attempts"] == 2
    assert row["next_attempt_at"] == (now + step + 2 * step).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_dry_run_sends_and_claims_nothing(rsvc, smtp):
    record = issue(rsvc)
    outcomes = run(rsvc, record.not_after - 7 * DAY, dry_run=True)
    assert [o.status for o in outcomes] == ["would send"]
    assert smtp.inbox.messages == [] and rsvc.store.reminders_for(record.serial) == []


def test_cli_remind_acceptance(rsvc, smtp, instance):
    """Issue a 1-day certificate with notify; `ca-server remind` sends one mail naming the serial and
    the expiry; running it again sends nothing more."""
    record = issue(rsvc, ["oneday.example.test"], days=1, at=dt.datetime.now(dt.UTC))
    dry = CliRunner().invoke(main, ["remind", "--dry-run"])
    assert dry.exit_code == 0 and "would send" in dry.output and smtp.inbox.messages == []
    result = CliRunner().invoke(main, ["remind"])
    assert result.exit_code == 0, result.output
    assert "sent:" in result.output and record.serial in result.output
    (message,) = smtp.inbox.messages
    body = message.get_body(("plain",)).get_content()
    assert record.serial in body and record.not_after.strftime("%Y-%m-%d %H:%M:%S UTC") in body
    assert CliRunner().invoke(main, ["remind"]).exit_code == 0
    assert len(smtp.inbox.messages) == 1


def test_cli_remind_says_which_reminders_wait_for_a_retry(rsvc, smtp, instance):
    """With the mail server down, the first `remind` said "0 sent, 1 failed"; every later one, until
    the retry time, said "0 sent, 0 failed" (and --dry-run "0 reminder(s) due"), as if nothing waited."""
    record = issue(rsvc, ["waiting.example.test"], days=1, at=dt.datetime.now(dt.UTC))
    smtp.stop()
    first = CliRunner().invoke(main, ["remind"])
    assert first.exit_code == 1 and "0 sent, 1 failed" in first.output, first.output
    for args in (["remind"], ["remind", "--dry-run"]):
        again = CliRunner().invoke(main, args)
        assert again.exit_code == 0, again.output
        assert f"waiting: 1-day reminder for waiting.example.test (serial {record.serial}) to owner@example.test: " \
               "next try at " in again.output, again.output
        assert "1 attempt(s) failed, the last with: SMTP 127.0.0.1" in again.output
        assert "1 waiting for a retry" in again.output
    rsvc.store.revoke_certificate(record.serial, dt.datetime.now(dt.UTC), "superseded")
    assert "waiting" not in CliRunner().invoke(main, ["remind"]).output  # a revoked one is never retried


@pytest.mark.parametrize("security", ["starttls", "tls"])
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # aiosmtpd's, on implicit TLS
def test_reminders_through_a_tls_relay_that_wants_a_login(instance, svc, tmp_path, monkeypatch, security):
    """[mail] security starttls (port 587 style) and tls (465), a login, and a relay whose certificate
    this CA issued: with ca_file = root.pem the mail goes; without it, remind says the certificate
    is not trusted and what to set, and the password is in no output."""
    relay = SMTPServer(tls=tls_server_context(svc, tmp_path), implicit=security == "tls",
                       users={"ca-server": "relay-Secret-9"}).start()
    monkeypatch.setenv("CA_SERVER_SMTP_PASSWORD", "relay-Secret-9")
    try:
        mail = {"host": "127.0.0.1", "port": relay.port, "security": security, "username": "ca-server"}
        write_config(instance, mail=mail)
        issue(svc, ["tls-relay.example.test"], days=1, at=dt.datetime.now(dt.UTC))
        untrusted = CliRunner().invoke(main, ["remind"])
        assert untrusted.exit_code == 1 and "0 sent, 1 failed" in untrusted.output, untrusted.output
        assert "its TLS certificate is not trusted (unable to get local issuer certificate): set [mail] ca_file " \
               "to the CA certificate that signed it" in untrusted.output
        assert relay.inbox.messages == [] and "relay-Secret-9" not in untrusted.output
        write_config(instance, mail={**mail, "ca_file": str(instance / "ca" / "root.pem")})
        issue(svc, ["tls-relay2.example.test"], days=1, at=dt.datetime.now(dt.UTC))
        sent = CliRunner().invoke(main, ["remind"])
        assert sent.exit_code == 0 and "1 sent" in sent.output, sent.output
        (message,) = relay.inbox.messages
        assert "tls-relay2.example.test" in message["Subject"] and relay.logins == ["ca-server"]
        monkeypatch.setenv("CA_SERVER_SMTP_PASSWORD", "wrong-password")
        issue(svc, ["tls-relay3.example.test"], days=1, at=dt.datetime.now(dt.UTC))
        refused = CliRunner().invoke(main, ["remind"])
        assert "1 failed" in refused.output and "SMTPAuthenticationError" in refused.output, refused.output
        assert "wrong-password" not in refused.output and len(relay.inbox.messages) == 1
    finally:
        relay.stop()


def test_mail_ca_file_is_checked_when_the_config_is_read(instance):
    for mail, words in (({"security": "starttls", "ca_file": str(instance / "missing.pem")},
                         "mail.ca_file: cannot read"),
                        ({"security": "starttls", "ca_file": str(instance / "config.toml")}, "holds no PEM certificate"),
                        ({"security": "none", "ca_file": str(instance / "ca" / "root.pem")},
                         'set mail.security to "starttls" or "tls"')):
        write_config(instance, mail=mail)
        result = CliRunner().invoke(main, ["remind", "--dry-run"])
        assert result.exit_code != 0 and words in result.output, result.output


def test_scheduler_registers_the_reminder_job_with_the_configured_interval(instance):
    write_config(instance, reminders={"interval_minutes": 17})
    svc = open_services(instance, load_config(instance / "config.toml"), Secrets(key_passphrase=PASSPHRASE))
    scheduler = build_scheduler(svc)
    job = scheduler.get_job("reminders")
    assert job is not None and job.trigger.interval == dt.timedelta(minutes=17)
    assert job.coalesce and job.max_instances == 1
    assert scheduler.get_job("crl-refresh") is not None
    job.func(*job.args)  # the job is the plain pass function; runs without a scheduler thread
    # First runs a minute after the start, not a whole interval later: a server restarted more
    # often than interval_minutes still runs its passes.
    for name in ("reminders", "crl-refresh"):
        first = scheduler.get_job(name).next_run_time
        assert dt.timedelta(seconds=30) < first - dt.datetime.now(dt.UTC) <= dt.timedelta(seconds=61), (name, first)


def test_the_schedulers_routine_runs_leave_no_lines_in_the_log_and_a_failing_job_does(instance, caplog):
    """`serve`'s log had two APScheduler lines a minute ("Running job
    _once_across_processes.<locals>.run ...", "... executed successfully") from the issuance log's
    checkpoint job alone. A job that runs well now says nothing; one that fails is logged, by its id."""
    import logging
    import os

    from ca_server.scheduler import start_scheduler

    from .checks import wait_until

    svc = open_services(instance, load_config(instance / "config.toml"), Secrets(key_passphrase=PASSPHRASE))
    ran: list[str] = []

    def failing(services):
        ran.append("boom")
        raise RuntimeError("the disk is full")

    with caplog.at_level(logging.INFO):
        scheduler = start_scheduler(svc, extra_jobs=(("tls-renewal", failing, 60),))
        assert scheduler is not None
        try:
            now = dt.datetime.now(dt.UTC)
            crl = scheduler.get_job("crl-refresh")
            crl.modify(next_run_time=now)
            scheduler.get_job("tls-renewal").modify(next_run_time=now)
            wait_until(lambda: ran and scheduler.get_job("crl-refresh").next_run_time > now + dt.timedelta(minutes=1),
                       10)
            wait_until(lambda: "the disk is full" in caplog.text, 10)
        finally:
            scheduler.shutdown()
            os.close(scheduler._ca_server_lock_fd)
    assert "Running job" not in caplog.text and "executed successfully" not in caplog.text, caplog.text
    assert "Adding job" not in caplog.text and "scheduler started: crl-refresh, " in caplog.text
    failure = next(r for r in caplog.records if "the disk is full" in (r.exc_text or "") or r.exc_info)
    assert failure.levelno == logging.ERROR and "tls-renewal" in failure.getMessage()


def test_acme_certificates_remind_only_when_their_automatic_renewal_did_not_happen(rsvc, smtp):
    """An ACME client renews in the ARI window (from 1/3 of the life left to halfway from there to
    the end); a person hears only after that, at the next threshold, in words that say so."""
    request = issuance.IssueRequest(csr=pem(make_csr(["auto.example.test"])), validity_days=90,
                                    notify=("acme-owner@example.test",),
                                    requester=issuance.Requester(name="acct1", kind="acme"))
    record = issuance.issue(rsvc.config, rsvc.store, rsvc.authority, request, T0)
    for days_left in (30, 29, 20, 15):  # inside the window (it closes ~14.85 days before the end)
        run(rsvc, record.not_after - days_left * DAY)
    assert smtp.inbox.messages == []
    run(rsvc, record.not_after - 14 * DAY)
    assert len(smtp.inbox.messages) == 1
    mail = smtp.inbox.messages[0]
    assert mail["To"] == "acme-owner@example.test" and "expires in 14 days" in mail["Subject"]
    assert "automatic renewal did not happen" in mail.get_body(("plain",)).get_content()
