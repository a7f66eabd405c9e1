"""Backups that restore (issue 27), on SQLite and PostgreSQL: `ca-server backup` of a running server
while certificates are being issued, `backup verify`, `restore` into a new folder that a real
server then serves as the same CA; damaged, cut and wrongly-keyed files refused in words; Debian's
`age` opening an encrypted backup by hand; scheduled backups keeping the newest `keep`."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pyrage
import pytest
import requests
from cryptography import x509
from cryptography.x509 import ocsp

from ca_server.ca.authority import InstancePaths
from ca_server.clock import utcnow
from ca_server.recovery import backup as backups

from .checks import need
from .conftest import new_token
from .server import running_server
from .test_nodes import api_get, crl_of, issue, ocsp_status


def cli(instance: Path | None, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    base = [sys.executable, "-m", "ca_server"] + (["--instance", str(instance)] if instance else [])
    done = subprocess.run([*base, *args], capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stdout + done.stderr
    return done


def with_recipient(instance: Path, recipient: str) -> None:
    config = instance / "config.toml"
    head, sep, tail = config.read_text().partition("[backup]")
    if sep:
        config.write_text(head + sep + tail.replace('recipient = ""', f'recipient = "{recipient}"', 1))
    else:
        config.write_text(head + f'\n[backup]\nrecipient = "{recipient}"\n')


def test_a_backup_of_a_busy_server_restores_to_a_server_of_the_same_ca(instance, svc, tmp_path):
    key = pyrage.x25519.Identity.generate()
    (tmp_path / "backup.key").write_text(f"{key}\n")
    with_recipient(instance, str(key.to_public()))
    token = new_token(svc)
    returned: dict[str, str] = {}
    with running_server(instance) as base:
        for i in range(20):
            body = issue(base, token, f"before{i}.example.test").json()
            returned[body["serial"]] = body["certificate"]
        revoked = next(iter(returned))
        r = requests.post(f"{base}/api/v1/certificates/{revoked}/revoke", json={"reason": "keyCompromise"},
                          headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 200, r.text
        last_crl = crl_of(base).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        during: dict[str, str] = {}
        busy = threading.Thread(target=lambda: during.update(
            (body["serial"], body["certificate"]) for body in
            (issue(base, token, f"during{i}.example.test").json() for i in range(20))))
        busy.start()
        made = cli(instance, "backup", "--to", str(tmp_path / "backups"))
        busy.join()
        after = issue(base, token, "after.example.test").json()["serial"]
    path = Path(made.stdout.strip().splitlines()[-1])
    assert path.exists() and path.name.endswith(".tar.age") and path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes().startswith(b"age-encryption.org/v1")
    verified = cli(None, "backup", "verify", str(path), "--identity", str(tmp_path / "backup.key"))
    assert verified.stdout.startswith("ok:")

    restored = tmp_path / "restored"
    done = cli(None, "restore", str(path), "--instance", str(restored), "--identity", str(tmp_path / "backup.key"))
    assert (restored / "ca" / "root.pem").read_bytes() == (instance / "ca" / "root.pem").read_bytes()
    # The log's file is not in a backup; the restore writes it from the store, so the new instance
    # verifies at once (it said "There is no issuance log ..." until its first certificate).
    assert "Wrote the issuance log" in done.stdout, done.stdout
    entries = backups.check(path, tmp_path / "backup.key").manifest["log_position"]
    checked = cli(restored, "log", "verify")
    assert entries > 20 and checked.stdout.startswith(f"ok: {entries} entries"), checked.stdout
    assert not (restored / "initial-admin-password").exists()
    for key_file in (restored / "ca").rglob("*key*"):
        assert key_file.stat().st_mode & 0o777 == 0o600, key_file
    with running_server(restored) as base:
        for serial, pem in returned.items():  # every certificate returned before the backup, byte for byte
            assert api_get(base, f"/api/v1/certificates/{serial}", token)["certificate"] == pem
        # each one issued while the backup ran is in it whole, or not at all
        stored_during = {s: api_get(base, f"/api/v1/certificates/{s}", token).get("certificate") for s in during}
        assert all(pem in (None, during[s]) for s, pem in stored_during.items())
        assert api_get(base, f"/api/v1/certificates/{after}", token).get("serial") is None  # after the backup
        cert = x509.load_pem_x509_certificate(returned[revoked].encode())
        intermediate = x509.load_pem_x509_certificate((restored / "ca" / "intermediate.pem").read_bytes())
        assert ocsp_status(base, cert, intermediate) == ocsp.OCSPCertStatus.REVOKED
        crl = crl_of(base)
        assert crl.get_revoked_certificate_by_serial_number(cert.serial_number) is not None
        assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number >= last_crl
        new = issue(base, token, "restored.example.test").json()["serial"]
        assert new not in returned and new not in during
    manifest = backups.check(path, tmp_path / "backup.key").manifest
    assert manifest["rows"]["certificates"] >= len(returned) + sum(1 for pem in stored_during.values() if pem)


def test_a_damaged_cut_or_wrongly_keyed_backup_is_refused_in_words(instance, svc, tmp_path):
    key = pyrage.x25519.Identity.generate()
    (tmp_path / "right.key").write_text(f"{key}\n")
    (tmp_path / "wrong.key").write_text(f"{pyrage.x25519.Identity.generate()}\n")
    with_recipient(instance, str(key.to_public()))
    path = Path(cli(instance, "backup", "--to", str(tmp_path)).stdout.strip().splitlines()[-1])
    data = path.read_bytes()
    flipped, cut = tmp_path / "flipped.tar.age", tmp_path / "cut.tar.age"
    flipped.write_bytes(data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 1]) + data[len(data) // 2 + 1:])
    cut.write_bytes(data[:len(data) - 100])
    for file, key_file, words in ((flipped, "right.key", "damaged"), (cut, "right.key", "damaged or cut short"),
                                  (path, "wrong.key", "the wrong key"), (path, None, "--identity")):
        extra = ["--identity", str(tmp_path / key_file)] if key_file else []
        done = cli(None, "backup", "verify", str(file), *extra, check=False)
        assert done.returncode == 1 and words in done.stderr, (file.name, key_file, done.stderr)
        target = tmp_path / f"restore-{file.name}-{key_file}"
        assert cli(None, "restore", str(file), "--instance", str(target), *extra, check=False).returncode == 1
        assert not target.exists() or not any(target.iterdir())  # nothing half-written
    # an unencrypted backup whose store was altered after the manifest was made
    plain = backups.take(InstancePaths(instance), svc.store, utcnow(), tmp_path / "plain")
    raw = bytearray(plain.read_bytes())
    at = raw.find(b"SQLite format 3")
    raw[at + 5000] ^= 0xFF
    plain.write_bytes(bytes(raw))
    done = cli(None, "backup", "verify", str(plain), check=False)
    assert done.returncode == 1 and "does not match its SHA-256" in done.stderr


def test_a_restore_whose_log_cannot_be_replayed_leaves_no_half_made_instance(instance, svc, tmp_path):
    """Found by walking the commands: the backup was written out, then the replay failed, and the
    folder stayed behind holding a CA without what the log was to bring back (exit 1 all the same)."""
    path = Path(cli(instance, "backup", "--to", str(tmp_path)).stdout.strip().splitlines()[-1])
    damaged = tmp_path / "entries.jsonl"
    damaged.write_text("this is not a log\n")
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    for target in (tmp_path / "new-folder", empty):
        done = cli(None, "restore", str(path), "--instance", str(target), "--replay-log", str(damaged), check=False)
        assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
        assert "is damaged, so it is not replayed" in done.stderr and "Nothing was restored" in done.stderr
        assert "Restored" not in done.stdout
        assert not target.exists() or not any(target.iterdir()), sorted(target.iterdir())
    assert empty.is_dir()  # the operator's empty folder is left, empty
    done = cli(None, "restore", str(path), "--instance", str(empty))
    assert "Restored the backup" in done.stdout and (empty / "ca.sqlite3").exists()


def test_a_folder_that_cannot_be_made_is_named_without_a_traceback(instance, svc, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    path = Path(cli(instance, "backup", "--to", str(tmp_path)).stdout.strip().splitlines()[-1])
    for where, args in ((None, ["restore", str(path), "--instance", str(blocker / "new")]),
                        (blocker / "new", ["init"]),
                        (instance, ["backup", "--to", str(blocker / "backups")])):
        done = cli(where, *args, check=False)
        assert done.returncode == 1 and "Traceback" not in done.stderr, (args, done.stderr)
        assert f"Cannot use {blocker / 'new' if args[0] != 'backup' else blocker / 'backups'}" in done.stderr, \
            (args, done.stderr)
        assert "Not a directory" in done.stderr


def test_debians_age_opens_a_backup_by_hand(instance, svc, tmp_path):
    age = need("age")
    key = pyrage.x25519.Identity.generate()
    (tmp_path / "backup.key").write_text(f"# created by the test\n{key}\n")
    with_recipient(instance, str(key.to_public()))
    path = Path(cli(instance, "backup", "--to", str(tmp_path)).stdout.strip().splitlines()[-1])
    opened = subprocess.run([age, "-d", "-i", str(tmp_path / "backup.key"), str(path)], capture_output=True,
                            timeout=60)
    assert opened.returncode == 0, opened.stderr
    listing = subprocess.run(["tar", "-t"], input=opened.stdout, capture_output=True, timeout=60)
    names = listing.stdout.decode().split()
    assert {"manifest.json", "store/ca.sqlite3", "ca/root.pem", "config.toml"} <= set(names)


def test_scheduled_backups_keep_the_newest_and_metrics_show_the_last(make_app, instance, tmp_path):
    from ca_server.scheduler import backup_job, build_scheduler

    app = make_app(backup={"dir": str(tmp_path / "b"), "interval_hours": 1, "keep": 2})
    svc = app.extensions["ca_server"]
    scheduler = build_scheduler(svc)
    assert scheduler.get_job("backup").trigger.interval.total_seconds() == 3600
    for _ in range(4):
        backup_job(svc)
    kept = sorted((tmp_path / "b").glob("ca-backup-*"))
    assert len(kept) == 2 and all(backups.check(p).manifest["format"] == backups.FORMAT for p in kept)
    body = app.test_client().get("/metrics").get_data(as_text=True)
    line = next(x for x in body.splitlines() if x.startswith("ca_server_backup_last_success_timestamp_seconds "))
    assert float(line.split()[1]) > utcnow().timestamp() - 600


@pytest.mark.parametrize("bad", ['recipient = "not-a-key"', "keep = 0", "interval_hours = -1"])
def test_backup_settings_are_checked(bad):
    from ca_server.config import ConfigError, config_from_dict

    key, value = bad.split(" = ")
    with pytest.raises(ConfigError) as refused:
        config_from_dict({"backup": {key: value.strip('"') if value.startswith('"') else int(value)}})
    assert str(refused.value).startswith("backup.")


def test_the_dashboard_says_when_scheduled_backups_are_late(make_app, instance, tmp_path):
    import datetime as dt

    from ca_server import accounts

    from .conftest import sign_in

    app = make_app(backup={"dir": str(tmp_path / "b"), "interval_hours": 6})
    svc, client = app.extensions["ca_server"], app.test_client()
    accounts.add_user(svc.store, "alice", "alice-password", is_admin=True, domains=(), allow_ip=True, email=None,
                      now=utcnow())
    assert sign_in(client, "alice", "alice-password").status_code == 303
    assert "none has been written yet" in client.get("/").get_data(as_text=True)
    backups.run(svc.config, svc.paths, svc.store, utcnow() - dt.timedelta(hours=13))
    assert "Backups are late" in client.get("/").get_data(as_text=True)  # 13 h > two intervals of 6 h
    backups.run(svc.config, svc.paths, svc.store, utcnow())
    assert "Backups are late" not in client.get("/").get_data(as_text=True)
