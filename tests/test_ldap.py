"""LDAP sign-in (issue 28) against a real OpenLDAP server (Debian's slapd, started by the tests):
directory users sign in on the same form as local ones; [[auth.groups]] maps their groups
(groupOfNames members, posixGroup memberUid) to a role and domains at every sign-in; a wrong
password, a user in no mapped group and a directory that is down are each told in words, and the
local break-glass admin signs in all the same."""

from __future__ import annotations

import datetime as dt

import pytest

from ca_server import accounts

from .conftest import app_with_config, csrf_token, session_issue, sign_in
from .ldap_server import GROUPS, PEOPLE, LdapServer, slapd_path


@pytest.fixture(scope="module")
def directory():
    if slapd_path() is None:
        pytest.skip("slapd is not installed (make test installs Debian's slapd: the Makefile's TEST_DEBS)")
    server = LdapServer()
    carol = server.person("carol", "carol-directory-pw", mail="carol@example.test")
    dave = server.person("dave", "dave-directory-pw")
    server.person("erin", "erin-directory-pw")  # in no mapped group
    frank = server.person("frank", "frank-directory-pw")
    keeper = server.person("keeper", "keeper-pw")  # a groupOfNames needs a member
    server.group("net-admins", [carol, keeper])
    server.group("pki-admins", [dave])
    server.group("pki-approvers", [frank])
    server.posix_group("lab-users", ["carol"])
    yield server
    server.stop()


def ldap_config(url: str) -> str:
    return f"""
[auth.ldap]
url = "{url}"
bind_dn = "cn=admin,dc=example,dc=test"
bind_password_env = "TEST_LDAP_BIND_PASSWORD"
user_base = "{PEOPLE}"
user_filter = "(uid={{username}})"
group_base = "{GROUPS}"
timeout_seconds = 2

[[auth.groups]]
group = "net-admins"
role = "requester"
domains = ["corp.example.test"]

[[auth.groups]]
group = "lab-users"
role = "requester"
domains = ["lab.example.test"]

[[auth.groups]]
group = "pki-admins"
role = "admin"

[[auth.groups]]
group = "pki-approvers"
role = "approver"
"""


@pytest.fixture
def ldap_app(make_app, instance, directory, monkeypatch):
    monkeypatch.setenv("TEST_LDAP_BIND_PASSWORD", "directory-admin-secret")
    return app_with_config(make_app, instance, ldap_config(directory.url))



def test_a_directory_user_signs_in_with_the_scope_of_their_groups(ldap_app):
    client = ldap_app.test_client()
    r = sign_in(client, "carol", "carol-directory-pw")
    assert r.status_code == 303, r.get_data(as_text=True)
    assert session_issue(client, "web.corp.example.test").status_code == 201
    assert session_issue(client, "scope.lab.example.test").status_code == 201  # posixGroup memberUid counts too
    outside = session_issue(client, "web.other.example.test")
    assert outside.status_code == 403 and "corp.example.test" in outside.json["error"]["message"]
    svc = ldap_app.extensions["ca_server"]
    user = svc.store.get_user("carol")
    assert user["password_hash"] == "!ldap" and user["email"] == "carol@example.test" and not user["is_admin"]
    row = next(e for e in svc.store.audit_entries(action="sign_in") if e["actor"] == "user:carol")
    assert row["detail"]["method"] == "ldap" and set(row["detail"]["groups"]) == {"net-admins", "lab-users"}
    admin = ldap_app.test_client()
    assert sign_in(admin, "dave", "dave-directory-pw").status_code == 303
    assert admin.get("/admin/tokens").status_code == 200  # pki-admins -> admin


def test_wrong_passwords_and_unmapped_people_are_refused_in_words(ldap_app):
    client = ldap_app.test_client()
    r = sign_in(client, "carol", "not-her-password")
    assert r.status_code == 401 and "Wrong username or password." in r.get_data(as_text=True)
    r = sign_in(client, "nobody", "whatever")
    assert r.status_code == 401 and "Wrong username or password." in r.get_data(as_text=True)
    r = sign_in(client, "erin", "erin-directory-pw")
    page = r.get_data(as_text=True)
    assert r.status_code == 401 and "none of them gives access" in page
    r = sign_in(client, "carol", "")
    assert r.status_code == 401  # an empty password is never an (anonymous) bind
    assert ldap_app.extensions["ca_server"].store.get_user("erin") is None


def test_a_removed_membership_counts_at_the_next_sign_in(ldap_app, directory):
    client = ldap_app.test_client()
    assert sign_in(client, "carol", "carol-directory-pw").status_code == 303
    assert session_issue(client, "before.corp.example.test").status_code == 201
    directory.remove_member("net-admins", f"uid=carol,{PEOPLE}")
    try:
        again = ldap_app.test_client()
        assert sign_in(again, "carol", "carol-directory-pw").status_code == 303
        assert session_issue(again, "after.corp.example.test").status_code == 403
        assert session_issue(again, "after.lab.example.test").status_code == 201
    finally:
        with directory.admin() as conn:
            conn.modify(f"cn=net-admins,{GROUPS}", {"member": [(2, [f"uid=carol,{PEOPLE}"])]})  # MODIFY_ADD


def test_a_directory_that_is_down_is_said_and_the_local_admin_still_signs_in(make_app, instance, monkeypatch, svc):
    monkeypatch.setenv("TEST_LDAP_BIND_PASSWORD", "x")
    config = instance / "config.toml"
    config.write_text(config.read_text() + ldap_config("ldap://127.0.0.1:9"))  # nothing listens there
    accounts.add_user(svc.store, "root-admin", "break-glass-password", is_admin=True, domains=(), allow_ip=True,
                      email=None, now=dt.datetime.now(dt.UTC))
    app = make_app()
    r = sign_in(app.test_client(), "carol", "carol-directory-pw")
    assert r.status_code == 503 and "cannot be reached right now" in r.get_data(as_text=True)
    assert sign_in(app.test_client(), "root-admin", "break-glass-password").status_code == 303


def test_active_directory_style_groups_come_from_memberof_alone(make_app, instance, monkeypatch):
    """No group_base: as with Active Directory, a person's groups are the cn of each DN in their
    memberOf (slapd's memberof overlay keeps it, as AD does), nested OU paths included."""
    server = LdapServer(memberof=True)
    try:
        server.add(f"ou=pki,{GROUPS}", ["organizationalUnit"], {"ou": "pki"})
        grace = server.person("grace", "grace-directory-pw")
        heidi = server.person("heidi", "heidi-directory-pw")
        keeper = server.person("keeper", "keeper-pw")  # a groupOfNames needs a member
        server.group("net-admins", [grace, keeper])
        server.add(f"cn=pki-admins,ou=pki,{GROUPS}", ["groupOfNames"], {"cn": "pki-admins", "member": [heidi]})
        with server.admin() as conn:  # what the sign-in will read: the overlay filled memberOf
            conn.search(f"uid=grace,{PEOPLE}", "(objectClass=*)", attributes=["memberOf"])
            assert [str(v) for v in conn.entries[0].memberOf.values] == [f"cn=net-admins,{GROUPS}"]
        monkeypatch.setenv("TEST_LDAP_BIND_PASSWORD", "directory-admin-secret")
        config = ldap_config(server.url).replace(f'group_base = "{GROUPS}"\n', "")
        assert "group_base" not in config
        app = app_with_config(make_app, instance, config)
        client = app.test_client()
        assert sign_in(client, "grace", "grace-directory-pw").status_code == 303
        assert session_issue(client, "ad.corp.example.test").status_code == 201
        assert session_issue(client, "ad.lab.example.test").status_code == 403  # not in lab-users
        admin = app.test_client()
        assert sign_in(admin, "heidi", "heidi-directory-pw").status_code == 303
        assert admin.get("/admin/tokens").status_code == 200  # cn=pki-admins,ou=pki,... -> admin
        server.remove_member("net-admins", grace)  # the overlay drops memberOf too
        r = sign_in(app.test_client(), "grace", "grace-directory-pw")
        assert r.status_code == 401 and "none of them gives access" in r.get_data(as_text=True)
    finally:
        server.stop()


def test_a_local_account_is_not_taken_over_by_a_directory_namesake(ldap_app):
    svc = ldap_app.extensions["ca_server"]
    accounts.add_user(svc.store, "carol", "local-carol-password", is_admin=False, domains=("example.test",),
                      allow_ip=False, email=None, now=dt.datetime.now(dt.UTC))
    assert sign_in(ldap_app.test_client(), "carol", "carol-directory-pw").status_code == 401
    assert sign_in(ldap_app.test_client(), "carol", "local-carol-password").status_code == 303
    assert svc.store.get_user("carol")["domains"] == ("example.test",)


def test_ldaps_and_starttls_check_the_directorys_certificate(make_app, instance, svc, monkeypatch, tmp_path):
    """The directory's TLS certificate is issued by this very CA (root.pem as [auth.ldap] ca_file):
    ldaps:// and StartTLS sign in; a ca_file of another CA is refused in words."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from ca_server import issuance

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
           .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                       x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                          critical=False)
           .sign(key, hashes.SHA256()))
    record = issuance.issue(svc.config, svc.store, svc.authority, issuance.IssueRequest(
        csr=csr.public_bytes(serialization.Encoding.PEM), own_certificate=True), dt.datetime.now(dt.UTC))
    chain, key_file = tmp_path / "slapd-chain.pem", tmp_path / "slapd-key.pem"
    chain.write_text(record.pem + (instance / "ca" / "intermediate.pem").read_text())
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    other_key = ec.generate_private_key(ec.SECP256R1())
    other_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Another CA")])
    other = (x509.CertificateBuilder().subject_name(other_name).issuer_name(other_name)
             .public_key(other_key.public_key()).serial_number(1)
             .not_valid_before(dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
             .not_valid_after(dt.datetime.now(dt.UTC) + dt.timedelta(days=30))
             .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
             .sign(other_key, hashes.SHA256()))
    (tmp_path / "other-ca.pem").write_bytes(other.public_bytes(serialization.Encoding.PEM))
    server = LdapServer(tls=(chain, key_file))
    try:
        carol = server.person("carol", "carol-directory-pw")
        server.group("net-admins", [carol])
        monkeypatch.setenv("TEST_LDAP_BIND_PASSWORD", "directory-admin-secret")
        original = (instance / "config.toml").read_text()

        def app_for(url: str, ca_file: str, start_tls: bool):
            (instance / "config.toml").write_text(original)
            extra = f'ca_file = "{ca_file}"\nstart_tls = {"true" if start_tls else "false"}\n'
            return app_with_config(make_app, instance, ldap_config(url).replace("timeout_seconds = 2\n",
                                                                                 "timeout_seconds = 2\n" + extra))

        root = str(instance / "ca" / "root.pem")
        for url, start_tls in ((f"ldaps://127.0.0.1:{server.tls_port}", False), (server.url, True)):
            app = app_for(url, root, start_tls)
            assert sign_in(app.test_client(), "carol", "carol-directory-pw").status_code == 303, url
        app = app_for(f"ldaps://127.0.0.1:{server.tls_port}", str(tmp_path / "other-ca.pem"), False)
        refused = sign_in(app.test_client(), "carol", "carol-directory-pw")
        page = refused.get_data(as_text=True)
        assert refused.status_code == 503 and "certificate" in page and "ca_file" in page, page[-600:]
    finally:
        server.stop()


def test_an_approver_decides_held_requests_and_nothing_else(make_app, instance, directory, monkeypatch):
    monkeypatch.setenv("TEST_LDAP_BIND_PASSWORD", "directory-admin-secret")
    config = instance / "config.toml"
    config.write_text(config.read_text().replace("approval_for_other_names = false", "approval_for_other_names = true"))
    app = app_with_config(make_app, instance, ldap_config(directory.url))
    carol = app.test_client()
    assert sign_in(carol, "carol", "carol-directory-pw").status_code == 303
    held = session_issue(carol, "outside.other.example.test")
    assert held.status_code == 202, held.json
    request_id = held.json["request_id"]
    frank = app.test_client()
    assert sign_in(frank, "frank", "frank-directory-pw").status_code == 303
    queue = frank.get("/admin/requests")
    assert queue.status_code == 200 and request_id in queue.get_data(as_text=True)
    assert frank.get("/admin/tokens").status_code == 403  # an approver is no admin
    approved = frank.post(f"/admin/requests/{request_id}/approve",
                          data={"csrf_token": csrf_token(queue.get_data(as_text=True))})
    assert approved.status_code == 303 and "/certificates/" in approved.headers["Location"]
    assert session_issue(frank, "own.other.example.test").status_code == 202  # no domains of its own: held too


def test_a_disabled_directory_user_cannot_sign_in_again(ldap_app):
    from ca_server import accounts as user_accounts

    assert sign_in(ldap_app.test_client(), "carol", "carol-directory-pw").status_code == 303
    svc = ldap_app.extensions["ca_server"]
    user_accounts.disable_user(svc.store, "carol", dt.datetime.now(dt.UTC))
    refused = sign_in(ldap_app.test_client(), "carol", "carol-directory-pw")
    assert refused.status_code == 401 and "disabled by an admin" in refused.get_data(as_text=True)
