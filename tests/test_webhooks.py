"""Chat and webhook notifications against a real HTTP receiver on loopback: the thresholds and
revocations, each once per receiver, signed JSON, Slack and Teams bodies, retries with doubling
waits when the receiver fails, and a config that says what is wrong."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
import http.server
import json
import threading
from contextlib import contextmanager

import pytest

from ca_server import issuance, revocation
from ca_server.config import Secrets, config_from_dict
from ca_server.config.notify import NotifyConfig, WebhookConfig
from ca_server.errors import ConfigError
from ca_server.notify import webhooks

from .factories import make_csr, pem
from .server import free_port

T0 = dt.datetime(2026, 11, 26, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


@contextmanager
def receiver(statuses: list[int] | None = None, tls=None):
    """Records every POST; answers the given statuses in turn, then 200. `tls`: a server
    ssl.SSLContext, to listen on https."""
    got: list[dict] = []
    plan = list(statuses or [])

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append({"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
            status = plan.pop(0) if plan else 200
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_port}", got
    finally:
        server.shutdown()
        server.server_close()


def with_hooks(svc, *hooks: WebhookConfig, secrets: tuple = ()):
    config = dataclasses.replace(svc.config, notify=NotifyConfig(hooks, retry_minutes=5))
    return config, Secrets(key_passphrase=svc.secrets.key_passphrase, webhook_secrets=secrets)


def issue(svc, config, name, days):
    request = issuance.IssueRequest(csr=pem(make_csr([name])), validity_days=days)
    return issuance.issue(config, svc.store, svc.authority, request, T0)


def test_a_threshold_reaches_each_receiver_once_signed(svc):
    with receiver() as (url, got):
        config, secrets = with_hooks(svc, WebhookConfig("inventory", url + "/hook", "json", "HOOK_SECRET"),
                                     secrets=(("inventory", "s3cret"),))
        record = issue(svc, config, "hooked.example.test", 90)
        at = record.not_after - 14 * DAY
        outcomes = webhooks.run_pass(config, secrets, svc.store, at)
        assert [o.status for o in outcomes] == ["sent"]
        assert webhooks.run_pass(config, secrets, svc.store, at + dt.timedelta(hours=1)) == []  # once
        assert len(got) == 1
        body, headers = got[0]["body"], got[0]["headers"]
        signature = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert headers["x-ca-server-signature"] == signature and headers["content-type"] == "application/json"
        sent = json.loads(body)
        assert sent["event"] == "certificate.expiring" and sent["serial"] == record.serial
        assert sent["threshold_days"] == 14 and sent["days_left"] == 14 and sent["names"] == ["hooked.example.test"]
        assert sent["url"].endswith(f"/certificates/{record.serial}")


def test_a_failing_receiver_is_retried_with_doubling_waits(svc):
    with receiver([500, 500]) as (url, got):
        config, secrets = with_hooks(svc, WebhookConfig("flaky", url, "json"))
        record = issue(svc, config, "flaky.example.test", 90)
        at = record.not_after - 7 * DAY
        assert [o.status for o in webhooks.run_pass(config, secrets, svc.store, at)] == ["failed"]
        assert "500" in svc.store.deliveries_of(record.serial)[0]["last_error"]
        assert webhooks.run_pass(config, secrets, svc.store, at + dt.timedelta(minutes=4)) == []  # waits 5 min
        # what `remind` prints while it waits (it said "0 sent, 0 failed", as if nothing waited)
        (waiting,) = webhooks.waiting_retries(config, svc.store, at + dt.timedelta(minutes=4))
        assert waiting.startswith(f"waiting: webhook flaky expiry-7 for {record.serial}: next try at ")
        assert "1 attempt(s) failed, the last with: " in waiting and "500" in waiting
        elsewhere = dataclasses.replace(config, notify=NotifyConfig((), retry_minutes=5))
        assert webhooks.waiting_retries(elsewhere, svc.store, at) == []  # a receiver taken out of the config
        assert [o.status for o in webhooks.run_pass(config, secrets, svc.store, at + dt.timedelta(minutes=5))] == ["failed"]
        assert webhooks.run_pass(config, secrets, svc.store, at + dt.timedelta(minutes=14)) == []  # then 10
        assert [o.status for o in webhooks.run_pass(config, secrets, svc.store, at + dt.timedelta(minutes=15))] == ["sent"]
        assert webhooks.run_pass(config, secrets, svc.store, at + dt.timedelta(hours=2)) == []
        assert len(got) == 3
        delivery = svc.store.deliveries_of(record.serial)[0]
        assert delivery["status"] == "sent" and delivery["attempts"] == 3


def test_slack_teams_and_revocations(svc):
    with receiver() as (url, got):
        config, secrets = with_hooks(svc, WebhookConfig("chat", url + "/slack", "slack"),
                                     WebhookConfig("teams", url + "/teams", "teams"))
        record = issue(svc, config, "chat.example.test", 200)
        revocation.revoke(config, svc.store, svc.authority, record.serial, "keyCompromise", T0, actor="test")
        outcomes = webhooks.run_pass(config, secrets, svc.store, T0 + dt.timedelta(minutes=1))
        assert sorted((o.webhook, o.event, o.status) for o in outcomes) == [("chat", "revoked", "sent"),
                                                                            ("teams", "revoked", "sent")]
        by_path = {g["path"]: json.loads(g["body"]) for g in got}
        assert "chat.example.test was revoked (keyCompromise)" in by_path["/slack"]["text"]
        assert by_path["/teams"]["@type"] == "MessageCard" and "was revoked" in by_path["/teams"]["text"]
        assert "x-ca-server-signature" not in got[0]["headers"]  # only JSON receivers with a secret


def test_an_https_receiver_with_a_certificate_from_this_ca_needs_its_ca_file(svc, tmp_path, instance):
    """An internal chat server whose certificate this CA issued: without ca_file the delivery fails
    with what to set (it said only "could not reach the receiver: [SSL: CERTIFICATE_VERIFY_FAILED]
    ..."), with ca_file = root.pem it is delivered."""
    from .checks import tls_server_context

    with receiver(tls=tls_server_context(svc, tmp_path)) as (url, got):
        config, secrets = with_hooks(svc, WebhookConfig("chat", url, "slack"))
        record = issue(svc, config, "tls-hook.example.test", 90)
        at = record.not_after - 14 * DAY
        (failed,) = [d for d in webhooks.run_pass(config, secrets, svc.store, at) if d.serial == record.serial]
        assert failed.status == "failed" and got == []
        assert failed.error.startswith("the receiver's TLS certificate is not trusted (unable to get local issuer "
                                       "certificate): set the webhook's ca_file"), failed.error
        root = str(instance / "ca" / "root.pem")
        config, secrets = with_hooks(svc, WebhookConfig("chat", url, "slack", ca_file=root))
        (sent,) = [d for d in webhooks.run_pass(config, secrets, svc.store, at + 2 * DAY)  # past the retry wait
                   if d.serial == record.serial]
        assert sent.status == "sent" and any(b"tls-hook.example.test" in g["body"] for g in got)


def test_a_receiver_that_never_answers_is_tried_once_per_pass_and_the_others_still_hear(svc):
    """A chat server that takes the connection and says nothing: each of its deliveries waited out
    timeout_seconds on a connection of its own. Now its first failure ends its tries for the pass
    (the rest fail at once, naming it, and wait for their retry); another receiver still hears."""
    from .checks import silent_server

    with silent_server() as (port, accepted):
        with receiver() as (url, got):
            hung = WebhookConfig("hung", f"http://127.0.0.1:{port}/hook", "json",
                                 timeout_seconds=1)
            config, secrets = with_hooks(svc, hung, WebhookConfig("chat", url, "slack"))
            records = [issue(svc, config, f"quiet{i}.example.test", 90) for i in range(3)]
            outcomes = webhooks.run_pass(config, secrets, svc.store, records[0].not_after - 14 * DAY)
        hung_ones = [o for o in outcomes if o.webhook == "hung"]
        assert [o.status for o in hung_ones] == ["failed"] * 3 and len(accepted) == 1
        assert hung_ones[0].error.startswith("could not reach the receiver: ")
        assert all(o.error.startswith("not tried, the receiver failed just before: could not reach the receiver")
                   for o in hung_ones[1:]), hung_ones
        assert [o.status for o in outcomes if o.webhook == "chat"] == ["sent"] * 3 and len(got) == 3


def test_no_receivers_no_work(svc):
    assert webhooks.run_pass(svc.config, svc.secrets, svc.store, T0) == []


@pytest.mark.parametrize("hook, words", [
    ({"name": "a", "url": "ftp://x", "format": "json"}, "notify.webhooks[0].url: must be an http"),
    ({"name": "a", "url": "https://x.test", "format": "xml"}, "notify.webhooks[0].format: must be one of"),
    ({"url": "https://x.test"}, "notify.webhooks[0].name"),
    ({"name": "a", "url": "https://x.test", "colour": "red"}, "notify.webhooks[0].colour: unknown key"),
    ({"name": "a", "url": "http://x.test", "ca_file": "root.pem"}, "for an https:// url only"),
    ({"name": "a", "url": "https://x.test", "ca_file": "/nonexistent/root.pem"}, "ca_file: cannot read"),
], ids=["fail-url", "fail-format", "fail-name", "fail-unknown-key", "fail-ca-file-http", "fail-ca-file-missing"])
def test_webhook_config_errors_name_the_key(hook, words):
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict({"notify": {"webhooks": [hook]}})


def test_webhook_secrets_come_from_the_environment():
    from ca_server.config import read_secrets

    config = config_from_dict({"notify": {"webhooks": [{"name": "inv", "url": "https://x.test", "secret_env": "S1"}]}})
    assert read_secrets(config, {"S1": "k"}).webhook_secrets == (("inv", "k"),)
    assert read_secrets(config, {}).webhook_secrets == ()


def test_a_failed_automatic_renewal_is_announced_for_the_certificate_it_leaves(svc):
    with receiver() as (url, got):
        config, secrets = with_hooks(svc, WebhookConfig("inventory", url, "json"))
        current = issue(svc, config, "renewing.example.test", 90)
        webhooks.record_renewal_failure(config, svc.store, ["DNS:renewing.example.test"], "order1", T0)
        webhooks.record_renewal_failure(config, svc.store, ["DNS:renewing.example.test"], "order1", T0)  # once
        webhooks.record_renewal_failure(config, svc.store, ["DNS:unknown.example.test"], "order2", T0)  # no cert
        outcomes = webhooks.run_pass(config, secrets, svc.store, T0)
        assert [(o.serial, o.event, o.status) for o in outcomes] == [
            (current.serial, "renewal-failed-order1", "sent")]
        sent = json.loads(got[0]["body"])
        assert sent["event"] == "certificate.renewal_failed" and sent["serial"] == current.serial


def test_an_acme_validation_failure_reports_the_orders_names(make_app):
    """challenges.validation_done says which order it invalidated and for which names."""
    from ca_server.acme import challenges, state

    from .acme_client import ScriptedAcme

    app = make_app(acme={"http01_port": free_port(), "validation_timeout_seconds": 1, "validation_attempts": 1})
    acme = ScriptedAcme(app.test_client(), "http://127.0.0.1:5000")
    acme.new_account()
    order = acme.new_order("127.0.0.1")
    challenge = acme.challenge(order.get_json())
    store = app.extensions["ca_server"].store
    assert challenges.start_challenge(store, state.load(store, state.Challenge, challenge["url"].rsplit("/", 1)[1]), T0)
    failed = challenges.validation_done(store, challenge["url"].rsplit("/", 1)[1],
                                    {"type": "urn:ietf:params:acme:error:connection", "detail": "refused"}, T0)
    assert failed == (order.headers["Location"].rsplit("/", 1)[1], ["IP:127.0.0.1"])
