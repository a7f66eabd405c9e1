"""Sign-in sessions held by the server (issue 28), on SQLite and PostgreSQL: the cookie carries only
a random id; POST /logout ends the session for good (the old cookie, sent again, is signed out);
"sign out everywhere", an admin and `ca-server user sign-out` end every session of a user; a
session ends after [auth] session_idle_minutes unused and session_hours after sign-in; two apps
on one store (two nodes) see the same sessions."""

from __future__ import annotations

import datetime as dt

from click.testing import CliRunner

from ca_server import accounts
from ca_server.cli import main

from .conftest import csrf_token, sign_in


def add(svc, name: str, *, admin: bool = False) -> None:
    accounts.add_user(svc.store, name, f"{name}-password", is_admin=admin, domains=("example.test",) if not admin
                      else (), allow_ip=admin, email=None, now=dt.datetime.now(dt.UTC))


def signed_in(app, name: str):
    client = app.test_client()
    assert sign_in(client, name, f"{name}-password").status_code == 303
    return client


def is_signed_in(client) -> bool:
    r = client.get("/certificates")
    return r.status_code == 200


def post(client, path: str):
    page = client.get("/logout").get_data(as_text=True)
    return client.post(path, data={"csrf_token": csrf_token(page)})


def cookie_of(client, app) -> str:
    return client.get_cookie(app.config["SESSION_COOKIE_NAME"]).value


def test_signing_out_ends_the_session_on_the_server(app, svc):
    add(svc, "bob")
    client = signed_in(app, "bob")
    cookie = cookie_of(client, app)
    content = app.session_interface.get_signing_serializer(app).loads(cookie)
    assert set(content) <= {"sid", "csrf_token", "_flashes"} and "bob" not in str(content)  # only a random id
    assert is_signed_in(client)
    assert post(client, "/logout").status_code == 303
    replayed = app.test_client()
    replayed.set_cookie(app.config["SESSION_COOKIE_NAME"], cookie)
    r = replayed.get("/certificates")
    assert r.status_code == 302 and "/login" in r.headers["Location"]  # the old cookie is signed out
    assert [e["action"] for e in svc.store.audit_entries(actor="user:bob")][:2] == ["sign_out", "sign_in"]


def test_sign_out_everywhere_ends_the_other_browsers_session(app, svc):
    add(svc, "bob")
    laptop, phone = signed_in(app, "bob"), signed_in(app, "bob")
    page = phone.get("/logout").get_data(as_text=True)
    assert "Your sessions" in page and "Sign out everywhere (2 sessions)" in page
    assert post(phone, "/logout/everywhere").status_code == 303
    assert not is_signed_in(laptop) and not is_signed_in(phone)
    again = signed_in(app, "bob")  # signing in again works, with a new session
    assert is_signed_in(again)


def test_an_admin_or_the_cli_ends_a_users_sessions(app, svc, instance, monkeypatch):
    add(svc, "bob")
    add(svc, "boss", admin=True)
    bob, boss = signed_in(app, "bob"), signed_in(app, "boss")
    page = boss.get("/admin/tokens").get_data(as_text=True)
    assert "End the sessions of bob" in page
    r = boss.post("/admin/users/bob/sessions/end", data={"csrf_token": csrf_token(page)})
    assert r.status_code == 303 and not is_signed_in(bob) and is_signed_in(boss)
    assert bob.post("/admin/users/boss/sessions/end").status_code == 302  # signed out: to the sign-in page
    bob = signed_in(app, "bob")
    token = csrf_token(bob.get("/logout").get_data(as_text=True))
    assert bob.post("/admin/users/boss/sessions/end", data={"csrf_token": token}).status_code == 403  # no admin
    monkeypatch.setenv("CA_SERVER_INSTANCE", str(instance))
    done = CliRunner().invoke(main, ["--instance", str(instance), "user", "sign-out", "bob"])
    assert done.exit_code == 0 and "1 session ended" in done.output, done.output
    assert not is_signed_in(bob)


def test_the_cli_sets_a_new_password_and_ends_the_users_sessions(app, svc, instance):
    """A forgotten or leaked password had no way back but a second account: `user set-password`."""
    add(svc, "bob")
    browser = signed_in(app, "bob")
    done = CliRunner().invoke(main, ["--instance", str(instance), "user", "set-password", "bob", "--password-stdin"],
                              input="bobs-new-password\n")
    assert done.exit_code == 0 and done.output.strip() == "bob: new password set; 1 session ended", done.output
    assert not is_signed_in(browser)
    assert sign_in(app.test_client(), "bob", "bob-password").status_code != 303
    assert sign_in(app.test_client(), "bob", "bobs-new-password").status_code == 303
    audit = [e for e in svc.store.audit_entries() if e["action"] == "user_password_set"]
    assert [e["detail"] for e in audit] == [{"user": "bob"}] and "bobs-new-password" not in str(audit)
    for args, words in ((["nobody"], "There is no active user named 'nobody'"), (["bob"], "at least 8 characters")):
        refused = CliRunner().invoke(main, ["--instance", str(instance), "user", "set-password", *args,
                                            "--password-stdin"], input="short\n")
        assert refused.exit_code == 1 and words in refused.output, refused.output
    svc.store.upsert_directory_user({"name": "carol", "password_hash": "!ldap", "is_admin": 0, "domains": (),
                                     "allow_ip": 0, "email": None, "created_at": "2026-12-07T00:00:00Z"})
    directory = CliRunner().invoke(main, ["--instance", str(instance), "user", "set-password", "carol",
                                          "--password-stdin"], input="carols-password\n")
    assert directory.exit_code == 1 and "signs in through the directory (ldap)" in directory.output


def test_sessions_end_when_idle_and_after_their_lifetime(app, svc):
    add(svc, "bob")
    start = dt.datetime.now(dt.UTC)
    svc.clock = lambda: start
    client = signed_in(app, "bob")
    idle = svc.config.auth.session_idle_minutes
    svc.clock = lambda: start + dt.timedelta(minutes=idle - 1)
    assert is_signed_in(client)  # used within the idle time: goes on
    svc.clock = lambda: start + dt.timedelta(minutes=2 * idle - 3)
    assert is_signed_in(client)
    svc.clock = lambda: start + dt.timedelta(minutes=3 * idle)
    assert not is_signed_in(client)  # unused too long
    svc.clock = lambda: start
    client = signed_in(app, "bob")
    moment = start
    while moment < start + dt.timedelta(hours=svc.config.auth.session_hours - 1):
        moment += dt.timedelta(minutes=idle - 1)
        svc.clock = lambda m=moment: m
        if moment < start + dt.timedelta(hours=svc.config.auth.session_hours):
            assert is_signed_in(client), moment
    svc.clock = lambda: start + dt.timedelta(hours=svc.config.auth.session_hours, minutes=1)
    assert not is_signed_in(client)  # used all along, but past its lifetime


def test_two_nodes_share_sessions(make_app, svc):
    add(svc, "bob")
    node_a, node_b = make_app(), make_app()
    client = signed_in(node_a, "bob")
    cookie = cookie_of(client, node_a)
    other = node_b.test_client()
    other.set_cookie(node_b.config["SESSION_COOKIE_NAME"], cookie)
    assert is_signed_in(other)  # the session begun on node a is known to node b
    assert post(other, "/logout").status_code == 303
    assert not is_signed_in(client)  # ended on node b: signed out on node a too


def test_disabling_a_user_ends_their_sessions_and_their_sign_ins(app, svc, instance):
    add(svc, "bob")
    client = signed_in(app, "bob")
    done = CliRunner().invoke(main, ["--instance", str(instance), "user", "disable", "bob"])
    assert done.exit_code == 0 and "bob: disabled; 1 session ended" in done.output, done.output
    assert not is_signed_in(client)
    assert sign_in(app.test_client(), "bob", "bob-password").status_code == 401
    again = CliRunner().invoke(main, ["--instance", str(instance), "user", "disable", "bob"])
    assert again.exit_code == 1 and "no active user named 'bob'" in again.output
    enabled = CliRunner().invoke(main, ["--instance", str(instance), "user", "enable", "bob"])
    assert enabled.exit_code == 0 and "bob: enabled" in enabled.output, enabled.output
    assert is_signed_in(signed_in(app, "bob"))  # the same password works again
    listed = CliRunner().invoke(main, ["--instance", str(instance), "user", "list"])
    assert "bob" in listed.output and "disabled" not in listed.output


def test_an_admin_lists_every_session_and_ends_one_of_them(app, svc):
    add(svc, "bob")
    add(svc, "boss", admin=True)
    laptop, phone, boss = signed_in(app, "bob"), signed_in(app, "bob"), signed_in(app, "boss")
    page = boss.get("/admin/sessions?user=bob").get_data(as_text=True)
    assert "Open sign-in sessions of bob" in page and page.count("End this session of bob") == 2
    assert "End this session of boss" not in page
    everyone = boss.get("/admin/sessions").get_data(as_text=True)
    assert everyone.count("End this session of bob") == 2 and "End this session of boss" in everyone
    # the phone's session is the newest: listed first
    first_key = page.split("/admin/sessions/")[1].split("/end")[0]
    r = boss.post(f"/admin/sessions/{first_key}/end", data={"csrf_token": csrf_token(page), "user": "bob"})
    assert r.status_code == 303 and r.headers["Location"].endswith("/admin/sessions?user=bob")
    assert not is_signed_in(phone) and is_signed_in(laptop)  # only that one browser is signed out
    after = boss.get("/admin/sessions?user=bob").get_data(as_text=True)
    assert after.count("End this session of bob") == 1
    again = boss.post(f"/admin/sessions/{first_key}/end", data={"csrf_token": csrf_token(after)}, follow_redirects=True)
    assert "That session had already ended" in again.get_data(as_text=True)
    ended = [e for e in svc.store.audit_entries(action="session_ended")]
    assert len(ended) == 1 and ended[0]["actor"] == "user:boss"
    token = csrf_token(laptop.get("/logout").get_data(as_text=True))
    assert laptop.get("/admin/sessions").status_code == 403  # not for requesters
    assert laptop.post(f"/admin/sessions/{first_key}/end", data={"csrf_token": token}).status_code == 403


def test_an_admin_disables_and_enables_a_user_on_the_users_page(app, svc):
    add(svc, "bob")
    add(svc, "boss", admin=True)
    bob, boss = signed_in(app, "bob"), signed_in(app, "boss")
    page = boss.get("/admin/tokens").get_data(as_text=True)
    assert "Disable bob" in page and "Disable boss" in page
    r = boss.post("/admin/users/bob/disable", data={"csrf_token": csrf_token(page)}, follow_redirects=True)
    assert "bob disabled: no more sign-ins; 1 session ended" in r.get_data(as_text=True)
    assert not is_signed_in(bob) and is_signed_in(boss)
    assert sign_in(app.test_client(), "bob", "bob-password").status_code == 401
    page = boss.get("/admin/tokens").get_data(as_text=True)
    assert "Enable bob" in page and "Disable bob" not in page
    r = boss.post("/admin/users/boss/disable", data={"csrf_token": csrf_token(page)})
    assert r.status_code == 403 and "cannot disable your own account" in r.get_data(as_text=True)
    r = boss.post("/admin/users/bob/enable", data={"csrf_token": csrf_token(page)}, follow_redirects=True)
    assert "bob enabled" in r.get_data(as_text=True)
    assert is_signed_in(signed_in(app, "bob"))
    r = boss.post("/admin/users/nobody/disable", data={"csrf_token": csrf_token(page)})
    assert r.status_code == 404 and "no active user named &#39;nobody&#39;" in r.get_data(as_text=True)
    assert [e["action"] for e in svc.store.audit_entries(actor="user:boss")][:3] == [
        "user_enable", "sessions_ended", "user_disable"]
