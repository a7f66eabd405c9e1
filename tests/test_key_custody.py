"""Issue 20, the offline root: `init --offline-root DIR` keeps the root key out of the instance;
the server issues, revokes and answers OCSP without it; the root CRL is signed where the key is
(`root sign-crl`, no instance needed) and imported (`root import-crl`); an existing instance can
move its root key out. Checked with openssl and a real server."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from ca_server.ca.authority import InstancePaths
from ca_server.ca.offline_root import import_root_crl, sign_root_crl
from ca_server.ca.root_folder import RootFolder
from ca_server.cli import main
from ca_server.config import Secrets
from ca_server.errors import BadRequestError
from ca_server.pki.keys import decrypt_private_key, encrypt_private_key
from ca_server.services import open_services

from .checks import run_openssl
from .conftest import PASSPHRASE, ROOT_PASSPHRASE, new_token
from .server import issue_verified, running_server
from .server import run_cli as cli


def test_init_with_an_offline_root_never_writes_the_root_key_into_the_instance(offline):
    instance, root_dir = offline
    paths = InstancePaths(instance)
    assert not paths.root_key.exists() and paths.intermediate_key.exists()
    key_file = RootFolder(root_dir).key_file
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    root_key = decrypt_private_key(key_file.read_bytes(), ROOT_PASSPHRASE.encode())
    with pytest.raises(ValueError):
        decrypt_private_key(key_file.read_bytes(), PASSPHRASE.encode())  # not the server's passphrase
    root = x509.load_pem_x509_certificate(paths.root_cert.read_bytes())
    assert root.public_key().public_numbers() == root_key.public_key().public_numbers()
    keys_in_instance = {p for p in instance.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()}
    assert keys_in_instance == {paths.intermediate_key, paths.keys / "log-key.pem"}  # the log's signs no certificate
    svc = open_services(instance, secrets=Secrets(key_passphrase=PASSPHRASE))
    assert svc.authority.root_offline and svc.store.latest_crl("root", with_der=False) is not None


def test_the_offline_root_folder_must_be_new_and_outside_the_instance(instance, tmp_path):
    """Found walking the CLI: `init --offline-root` given another instance's ca/ folder replaced that
    CA's root.pem (its chain no longer verified), and a folder inside the instance put the root key
    where backups carry it; `root move-out` into the instance's own ca/ did the same."""
    env = {"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE}
    root_dir = tmp_path / "usb" / "ca-root"
    made = cli("--instance", str(tmp_path / "offline"), "init", "--no-admin", "--offline-root", str(root_dir), env=env)
    assert made.returncode == 0, made.stderr
    before = {p: p.read_bytes() for p in (instance / "ca").iterdir()}
    for target, where, words in ((tmp_path / "new-1", instance / "ca", "holds a root already (root.pem)"),
                                 (tmp_path / "new-2", root_dir, "holds a root already (root-key.pem, root.pem"),
                                 (tmp_path / "new-3", tmp_path / "new-3" / "root", "is in the instance folder"),
                                 (tmp_path / "new-4", tmp_path / "new-4", "is in the instance folder")):
        done = cli("--instance", str(target), "init", "--no-admin", "--offline-root", str(where), env=env)
        assert done.returncode == 1 and words in done.stderr, (where, done.stderr)
        assert not target.exists(), sorted(target.rglob("*"))  # refused before anything was written
    assert {p: p.read_bytes() for p in (instance / "ca").iterdir()} == before
    assert run_openssl("verify", "-CAfile", str(instance / "ca" / "root.pem"),
                       str(instance / "ca" / "intermediate.pem")).returncode == 0
    for where in (instance / "ca", instance / "offline-root", root_dir):
        moved = cli("--instance", str(instance), "root", "move-out", str(where), env=env)
        assert moved.returncode == 1, moved.stderr
        assert "holds a root already" in moved.stderr or "is in the instance folder" in moved.stderr, moved.stderr
    assert InstancePaths(instance).root_key.exists()  # the key stayed where it was
    assert {p: p.read_bytes() for p in (instance / "ca").iterdir()} == before


def test_a_server_without_the_root_key_issues_revokes_and_serves_the_imported_root_crl(offline, tmp_path):
    instance, root_dir = offline
    svc = open_services(instance, secrets=Secrets(key_passphrase=PASSPHRASE))
    token = new_token(svc)
    root_pem = instance / "ca" / "root.pem"
    with running_server(instance) as base:
        made, leaf, chain = issue_verified(base, token, "offline.example.test", root_pem, tmp_path)
        revoked = requests.post(f"{base}/api/v1/certificates/{made['serial']}/revoke",
                                json={"reason": "keyCompromise"}, headers={"Authorization": f"Bearer {token}"},
                                timeout=30)
        assert revoked.status_code == 200
        intermediate = tmp_path / "int.pem"
        intermediate.write_bytes(requests.get(f"{base}/ca/intermediate.pem", timeout=10).content)
        asked = run_openssl("ocsp", "-issuer", str(intermediate), "-cert", str(leaf), "-url", f"{base}/ocsp",
                            "-CAfile", str(root_pem))
        assert b": revoked" in asked.stdout, asked.stdout + asked.stderr

        first = x509.load_der_x509_crl(requests.get(f"{base}/crl/root.crl", timeout=10).content)
        signed = cli("root", "sign-crl", "--root-dir", str(root_dir), cwd=tmp_path,
                     env={"CA_SERVER_ROOT_PASSPHRASE": ROOT_PASSPHRASE, "CA_SERVER_KEY_PASSPHRASE": ""})
        assert signed.returncode == 0, signed.stderr
        crl_file = Path(signed.stdout.strip().rsplit(": ", 1)[1])
        imported = cli("--instance", str(instance), "root", "import-crl", str(crl_file),
                       env={"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE})
        assert imported.returncode == 0, imported.stderr
        served = requests.get(f"{base}/crl/root.crl", timeout=10).content
        assert served == crl_file.read_bytes()
        number = x509.load_der_x509_crl(served).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        assert number > first.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        checked = run_openssl("crl", "-inform", "DER", "-in", str(crl_file), "-CAfile", str(root_pem), "-noout")
        assert checked.returncode == 0 and b"verify OK" in checked.stderr + checked.stdout

        again = cli("--instance", str(instance), "root", "import-crl", str(crl_file),
                    env={"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE})
        assert again.returncode == 1 and "not newer than the root CRL served" in again.stderr


def test_a_foreign_or_lapsed_root_crl_is_refused_with_words(offline, tmp_path):
    instance, root_dir = offline
    svc = open_services(instance, secrets=Secrets(key_passphrase=PASSPHRASE))
    now = dt.datetime.now(dt.UTC)
    # Another key signing a CRL in the root's name (the same subject): refused by its signature.
    impostor = RootFolder(tmp_path / "impostor")
    impostor.create(encrypt_private_key(ec.generate_private_key(ec.SECP256R1()), b"pw"),
                    (root_dir / "root.pem").read_bytes(), instance_root=instance)
    _, foreign = sign_root_crl(impostor, b"pw", 24, now)
    with pytest.raises(BadRequestError, match="not signed by this CA's root"):
        import_root_crl(svc.store, svc.authority.root, foreign.read_bytes(), now)
    _, short = sign_root_crl(RootFolder(root_dir), ROOT_PASSPHRASE.encode(), 1, now)
    with pytest.raises(BadRequestError, match="has lapsed"):
        import_root_crl(svc.store, svc.authority.root, short.read_bytes(), now + dt.timedelta(hours=2))
    with pytest.raises(BadRequestError, match="Not a CRL"):
        import_root_crl(svc.store, svc.authority.root, b"hello", now)


def test_the_dashboard_warns_before_the_root_crl_lapses_and_a_lapsed_one_is_still_served(offline, monkeypatch):
    from ca_server import accounts, create_app

    from .conftest import sign_in

    instance, _ = offline
    app = create_app(instance_path=instance)
    svc = app.extensions["ca_server"]
    accounts.add_user(svc.store, "alice", "alice-password", is_admin=True, domains=(), allow_ip=True, email=None,
                      now=dt.datetime.now(dt.UTC))
    client = app.test_client()
    assert sign_in(client, "alice", "alice-password").status_code == 303
    page = client.get("/").get_data(as_text=True)
    assert "The root CRL needs signing" not in page and "offline (not on this server)" in page
    next_update = dt.datetime.fromisoformat(svc.store.latest_crl("root", with_der=False)["next_update"])
    svc.clock = lambda: next_update - dt.timedelta(days=10)
    client = app.test_client()  # months later: the first session has ended (session_hours), sign in again
    assert sign_in(client, "alice", "alice-password").status_code == 303
    page = client.get("/").get_data(as_text=True)
    assert "The root CRL needs signing" in page and "ends in 10 day(s)" in page and "root sign-crl" in page
    svc.clock = lambda: next_update + dt.timedelta(days=1)
    client = app.test_client()
    assert sign_in(client, "alice", "alice-password").status_code == 303
    assert "has lapsed" in client.get("/").get_data(as_text=True)
    served = client.get("/crl/root.crl")
    assert served.status_code == 200 and x509.load_der_x509_crl(served.data).next_update_utc == next_update


def test_an_existing_instance_moves_its_root_key_out_and_revokes_the_intermediate_offline(instance, svc, tmp_path):
    root_dir = tmp_path / "vault" / "root"
    moved = CliRunner().invoke(main, ["root", "move-out", str(root_dir)])
    assert moved.exit_code == 0, moved.output
    paths = InstancePaths(instance)
    assert not paths.root_key.exists() and RootFolder(root_dir).key_file.exists()
    refused = CliRunner().invoke(main, ["revoke-intermediate", "--reason", "keyCompromise", "--yes"])
    assert refused.exit_code == 1 and "The root key is offline" in refused.output and "--revoke" in refused.output

    serial = format(svc.authority.intermediate.serial_number, "x")
    signed = cli("root", "sign-crl", "--root-dir", str(root_dir), "--revoke", f"{serial}:keyCompromise", cwd=tmp_path,
                 env={"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE})
    assert signed.returncode == 0, signed.stderr
    crl_file = Path(signed.stdout.strip().rsplit(": ", 1)[1])
    assert CliRunner().invoke(main, ["root", "import-crl", str(crl_file)]).exit_code == 0
    crl = x509.load_der_x509_crl(svc.crls.current("root", dt.datetime.now(dt.UTC)).der)
    entry = crl.get_revoked_certificate_by_serial_number(svc.authority.intermediate.serial_number)
    assert entry is not None
    assert entry.extensions.get_extension_for_class(x509.CRLReason).value.reason == x509.ReasonFlags.key_compromise
    actions = {row["action"] for row in svc.store.audit_entries()}
    assert {"root_key_moved_out", "root_crl_import"} <= actions


def test_the_admins_are_mailed_once_when_the_root_crl_nears_its_end(offline):
    from ca_server import accounts
    from ca_server.ca.offline_root import warn_by_mail

    from .smtp import SMTPServer, write_config

    instance, _ = offline
    smtp = SMTPServer().start()
    try:
        write_config(instance, mail={"host": "127.0.0.1", "port": smtp.port, "security": "none"})
        svc = open_services(instance, secrets=Secrets(key_passphrase=PASSPHRASE))
        accounts.add_user(svc.store, "ops", "ops-password-long", is_admin=True, domains=(), allow_ip=True,
                          email="ops@example.test", now=dt.datetime.now(dt.UTC))
        next_update = dt.datetime.fromisoformat(svc.store.latest_crl("root", with_der=False)["next_update"])
        assert warn_by_mail(svc.config, svc.secrets, svc.store, next_update - dt.timedelta(days=60)) == []
        soon = next_update - dt.timedelta(days=20)
        other_node = open_services(instance, secrets=Secrets(key_passphrase=PASSPHRASE))
        sent = [warn_by_mail(s.config, s.secrets, s.store, soon) for s in (svc, other_node, svc)]
        assert sent == [["ops@example.test"], [], []]
        assert len(smtp.inbox.messages) == 1
        body = smtp.inbox.messages[0].get_body(("plain",)).get_content()
        assert "ends in 20 day(s)" in body and "ca-server root sign-crl" in body
    finally:
        smtp.stop()
