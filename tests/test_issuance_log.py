"""The append-only issuance log (issue 27): entries written before a certificate is returned,
checkpoints and proofs that Go's own sumdb verifier (golang.org/x/mod/sumdb/note and tlog)
accepts, `ca-server log verify` finding a changed, removed or reordered entry, issuance stopped
with words when the log cannot be written, and the restore drill on SQLite and PostgreSQL: 1,000
certificates, a backup while issuing, more issued and revoked, the store destroyed, restored and
the log replayed, and every certificate and revocation back."""

from __future__ import annotations

import base64
import json
import random
import shutil
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ca_server.ca.authority import set_config_value
from ca_server.recovery import merkle
from ca_server.recovery.checkpoint import open_note
from ca_server.recovery.issuance_log import entry_lines
from ca_server.store import open_store

from .checks import need
from .conftest import ApiClient, new_token
from .factories import make_csr, pem
from .server import running_server
from .test_backups import cli
from .test_nodes import crl_of, issue, ocsp_status

TLOGCHECK = Path(__file__).parent / "tlogcheck" / "main.go"


def issue_in(api, name: str):
    return api.post("/api/v1/certificates", json={"csr": pem(make_csr([name]))})


def issued(api, name: str) -> dict:
    r = issue_in(api, name)
    assert r.status_code == 201, r.json
    return r.json


def set_log_path(instance: Path, path: Path) -> None:
    set_config_value(instance / "config.toml", "log", "path", str(path))


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 9162's definition, recursively, as the reference."""
    if len(leaves) == 1:
        return leaves[0]
    k = merkle._split(len(leaves))
    return merkle.node_hash(_mth(leaves[:k]), _mth(leaves[k:]))


@pytest.mark.sqlite_only
def test_proofs_follow_the_rfc_definition():
    leaves = [merkle.leaf_hash(str(i).encode()) for i in range(37)]
    stored: dict[tuple[int, int], bytes] = {}
    running = merkle.RunningRoot()
    for i, leaf in enumerate(leaves):
        stored.update(((lv, ix), h) for lv, ix, h in merkle.completed(i, leaf, lambda lv, ix: stored[(lv, ix)]))
        running.append(leaf)
        assert running.root() == _mth(leaves[: i + 1])
    def get(level, index):
        return stored[(level, index)]
    for size in range(1, 38):
        root = _mth(leaves[:size])
        for index in range(size):
            proof = merkle.inclusion_proof(index, size, get)
            assert merkle.verify_inclusion(index, size, leaves[index], proof, root)
            assert not merkle.verify_inclusion(index, size, merkle.leaf_hash(b"other"), proof, root)
        for first in range(1, size + 1):
            proof = merkle.consistency_proof(first, size, get)
            assert merkle.verify_consistency(first, size, _mth(leaves[:first]), root, proof)
            if first < size:
                assert not merkle.verify_consistency(first, size, merkle.leaf_hash(b"x"), root, proof)


@pytest.fixture(scope="module")
def tlogcheck(tmp_path_factory) -> Path:
    """The Go verifier, built from Debian's golang-golang-x-mod-dev sources (no network)."""
    need("go")
    source = Path("/usr/share/gocode/src/golang.org/x/mod/sumdb/tlog")
    if not source.exists():
        pytest.fail("golang-golang-x-mod-dev is not installed (make system-deps installs it)")
    out = tmp_path_factory.mktemp("go") / "tlogcheck"
    env = {"GO111MODULE": "off", "GOPATH": "/usr/share/gocode", "GOCACHE": str(out.parent / "cache"),
           "HOME": str(out.parent), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(["go", "build", "-o", str(out), str(TLOGCHECK)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return out


def go_check(binary: Path, body: dict) -> str:
    done = subprocess.run([str(binary)], input=json.dumps(body), capture_output=True, text=True, timeout=30)
    return done.stdout.strip()


@pytest.mark.sqlite_only
def test_gos_sumdb_verifier_accepts_our_checkpoints_and_proofs(api, app, tlogcheck):
    client = app.test_client()
    serials = [issued(api, f"go{i}.example.test")["serial"] for i in range(5)]
    older = client.get("/log/checkpoint").data.decode()
    assert open_note(older, client.get("/log/key").data.decode()).size == 5
    serials += [issued(api, f"go{i}.example.test")["serial"] for i in range(5, 11)]
    assert api.post(f"/api/v1/certificates/{serials[3]}/revoke", json={"reason": "superseded"}).status_code == 200
    key = client.get("/log/key").data.decode().strip()
    consistency = client.get("/log/consistency?first=5&second=12").json["proof"]
    for serial in serials:
        proof = client.get(f"/log/proof/{serial}").json
        assert proof["tree_size"] == 12, proof  # the checkpoint covers every entry, the revocation too
        assert api.get(f"/api/v1/certificates/{serial}").json["log_index"] == proof["index"]
        body = {"key": key, "checkpoint": proof["checkpoint"], "older": older, "index": proof["index"],
                "entry": base64.b64encode(proof["entry"].encode()).decode(), "proof": proof["proof"],
                "consistency": consistency}
        assert go_check(tlogcheck, body) == "ok"
        assert go_check(tlogcheck, {**body, "index": (proof["index"] + 1) % 12}).startswith("inclusion:")
        tampered = proof["entry"].replace(serial, serial[:-1] + ("0" if serial[-1] != "0" else "1"))
        assert go_check(tlogcheck, {**body, "entry": base64.b64encode(tampered.encode()).decode()}) != "ok"
    revoke = client.get(f"/log/proof/{serials[3]}?kind=revoke").json
    assert json.loads(revoke["entry"])["kind"] == "revoke" and revoke["index"] == 11
    assert api.get(f"/api/v1/certificates/{serials[3]}").json["log_revocation_index"] == 11
    forged = proof["checkpoint"].replace("\n12\n", "\n13\n")
    assert go_check(tlogcheck, {**body, "checkpoint": forged}).startswith("checkpoint signature")
    assert client.get("/log/consistency?first=9&second=99").status_code == 400
    assert client.get("/log/proof/00ff").status_code == 404


def test_a_new_instance_answers_its_first_checkpoint(app, instance):
    """A CA just made by `init` has no log folder until its first entry. Its first checkpoint, the
    scheduler's a minute after `make run` (a traceback in the log) or a client's GET
    /log/checkpoint (a 500), failed with FileNotFoundError before; now it is the empty tree's."""
    client = app.test_client()
    first = client.get("/log/checkpoint")
    assert first.status_code == 200, first.get_data(as_text=True)
    assert open_note(first.data.decode(), client.get("/log/key").data.decode()).size == 0
    lines = (instance / "issuance-log" / "entries.checkpoints.jsonl").read_text().splitlines()
    assert [json.loads(line)["size"] for line in lines] == [0]
    assert client.get("/log/checkpoint").data == first.data


def test_log_verify_on_a_ca_that_has_issued_nothing_yet(instance, api):
    """`ca-server log verify` right after init (a health check set up on day one) said "There is no
    issuance log" and exited 1: a CA that has issued nothing has an empty log, which verifies. A
    missing file behind a store that logged entries is still an error, in words."""
    fresh = cli(instance, "log", "verify", check=False)
    assert fresh.returncode == 0 and fresh.stdout.startswith("ok: 0 entries"), fresh.stdout + fresh.stderr
    issue_in(api, "first.example.test")
    (instance / "issuance-log" / "entries.jsonl").unlink()
    gone = cli(instance, "log", "verify", check=False)
    assert gone.returncode == 1 and "but the store's log holds 1 entry." in gone.stderr, gone.stderr


@pytest.mark.sqlite_only
def test_log_verify_says_where_an_entry_was_changed_removed_or_reordered(api, instance, app):
    for i in range(8):
        issue_in(api, f"v{i}.example.test")
    app.test_client().get("/log/checkpoint")
    log = instance / "issuance-log" / "entries.jsonl"
    done = cli(instance, "log", "verify")
    assert done.stdout.startswith("ok: 8 entries, 1 checkpoint verified") and "agrees with the store" in done.stdout
    good = log.read_bytes()
    lines = good.splitlines(keepends=True)

    def verdict(content: bytes, *args: str) -> str:
        log.write_bytes(content)
        failed = cli(instance, "log", "verify", *args, check=False)
        assert failed.returncode == 1, failed.stdout
        return failed.stderr

    changed = json.loads(lines[3])
    changed["requester"] = "user:mallory"
    said = verdict(b"".join([*lines[:3], json.dumps(changed).encode() + b"\n", *lines[4:]]))
    assert "Entry 4 (line 5) does not link to entry 3" in said and "checkpoint of 8 entries" in said
    said = verdict(b"".join([*lines[:5], *lines[6:]]))
    assert "Line 6 holds entry 6 where entry 5 belongs" in said
    key = (instance / "keys" / "log-key.pub").read_text().strip()
    said = verdict(b"".join(lines[:-1]), str(log), "--key", key, "--no-store")  # the file alone, cut short
    assert "signed, but the file holds only 7: entries were cut from its end" in said
    said = verdict(b"".join(lines[:-1]))  # one node: its file must hold what its store holds
    assert "entries 7 and on were removed from the file's end" in said
    said = verdict(b"".join([*lines[:2], lines[3], lines[2], *lines[4:]]))
    assert "Line 3 holds entry 3 where entry 2 belongs" in said
    last = json.loads(lines[-1])
    last["notify"] = ["someone@example.test"]
    said = verdict(b"".join([*lines[:-1], json.dumps(last).encode() + b"\n"]))
    assert "signed another root" in said  # the last entry has no successor: the checkpoint catches it
    log.write_bytes(good)
    assert cli(instance, "log", "verify").returncode == 0


@pytest.mark.sqlite_only
def test_issuance_stops_in_words_when_the_log_cannot_be_written(make_app, instance, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the log's folder should be")
    set_log_path(instance, blocker / "entries.jsonl")
    app = make_app()
    from .conftest import ApiClient

    svc = app.extensions["ca_server"]
    api = ApiClient(app.test_client(), new_token(svc))
    r = issue_in(api, "nolog.example.test")
    assert r.status_code == 503, r.json
    assert "issuance log" in r.json["error"]["message"] and "cannot be written" in r.json["error"]["message"]
    assert svc.store.log_size() == 0
    assert api.get("/api/v1/certificates").json["certificates"] == []  # nothing half-written


def test_the_form_and_est_also_answer_503_when_the_log_cannot_be_written(make_app, instance):
    """What the README says of every door besides the API (ACME's and SCEP's tests are theirs):
    the form shows the reason with 503, EST answers 503 (an EST client retries), nothing is stored."""
    import base64

    from ca_server import accounts
    from ca_server.clock import utcnow

    from .checks import log_folder_unwritable
    from .conftest import csrf_token, sign_in
    from .factories import der
    from .test_est import ENROLL, basic

    app = make_app(est={"enabled": True})
    svc = app.extensions["ca_server"]
    accounts.add_user(svc.store, "formuser", "formuser-password", is_admin=True, domains=(), allow_ip=True,
                      email=None, now=utcnow())
    web = app.test_client()
    assert sign_in(web, "formuser", "formuser-password").status_code == 303
    token = new_token(svc, "est-token")
    with log_folder_unwritable(instance):
        page = web.get("/certificates/new")
        form = web.post("/certificates/new", data={"csrf_token": csrf_token(page.get_data(as_text=True)),
                                                   "csr": pem(make_csr(["form-nolog.example.test"])),
                                                   "profile": "server"})
        assert form.status_code == 503 and "issuance log" in form.get_data(as_text=True)
        est = app.test_client().post(ENROLL, data=base64.b64encode(der(make_csr(["est-nolog.example.test"]))),
                                     headers=basic("router", token))
        assert est.status_code == 503, est.get_data(as_text=True)[:300]
    assert svc.store.log_size() == 0 and list(svc.store.certificate_states()) == []


@pytest.mark.sqlite_only
def test_a_log_ahead_of_its_store_stops_issuance_until_replayed(api, instance, svc):
    issue_in(api, "ahead1.example.test")
    log = instance / "issuance-log" / "entries.jsonl"
    first = log.read_bytes()
    issue_in(api, "ahead2.example.test")
    second = log.read_bytes()
    with svc.store.write() as db:  # the store as it was before the second certificate (an old copy)
        db.execute("DELETE FROM log_entries WHERE idx = 1")
        db.execute("DELETE FROM log_hashes WHERE NOT (level = 0 AND idx = 0)")
    r = issue_in(api, "ahead3.example.test")
    assert r.status_code == 503 and "--replay-log" in r.json["error"]["message"], r.json
    assert log.read_bytes() == second and len(first) < len(second)


@pytest.mark.sqlite_only
def test_a_store_older_than_its_log_gets_every_certificate_into_it(api, instance, svc, make_app):
    serials = [issued(api, f"old{i}.example.test")["serial"] for i in range(3)]
    api.post(f"/api/v1/certificates/{serials[0]}/revoke", json={"reason": "superseded"})
    with svc.store.write() as db:  # as a store from before the log was
        for table in ("log_entries", "log_hashes", "log_checkpoints"):
            db.execute(f"DELETE FROM {table}")  # noqa: S608
    shutil.rmtree(instance / "issuance-log")
    app = make_app()
    client = app.test_client()
    assert open_note(client.get("/log/checkpoint").data.decode(), client.get("/log/key").data.decode()).size == 3
    assert cli(instance, "log", "verify").returncode == 0


def test_restore_drill_brings_back_every_certificate_and_revocation(instance, svc, tmp_path, backend):
    """The drill of the issue: 1,000 certificates, a backup while issuing, more issued and revoked
    after it, the store (and the whole instance folder) lost, restore plus replay."""
    other_disk = tmp_path / "log-disk" / "entries.jsonl"
    set_log_path(instance, other_disk)
    token = new_token(svc)
    returned: dict[str, str] = {}
    lock = threading.Lock()

    def take(base: str, name: str) -> None:
        r = issue(base, token, name)
        assert r.status_code == 201, r.text
        with lock:
            returned[r.json()["serial"]] = r.json()["certificate"]

    with running_server(instance) as base, ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: take(base, f"d{i}.example.test"), range(1000)))
        busy = pool.map(lambda i: take(base, f"during{i}.example.test"), range(60))
        made = cli(instance, "backup", "--to", str(tmp_path / "backups"))
        list(busy)
        list(pool.map(lambda i: take(base, f"after{i}.example.test"), range(60)))
        revoked = random.Random(27).sample(sorted(returned), 12)
        for serial in revoked:
            r = requests.post(f"{base}/api/v1/certificates/{serial}/revoke", json={"reason": "keyCompromise"},
                              headers={"Authorization": f"Bearer {token}"}, timeout=30)
            assert r.status_code == 200, r.text
        last_crl = crl_of(base).extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    assert len(returned) == 1120
    backup = Path(made.stdout.strip().splitlines()[-1])
    shutil.rmtree(instance)  # the store's disk is gone; the log's and the backups' are not

    restored = tmp_path / "restored"
    done = cli(None, "restore", str(backup), "--instance", str(restored), "--replay-log", str(other_disk))
    assert "Replayed" in done.stdout and "12 revocations" in done.stdout, done.stdout
    assert cli(restored, "log", "verify").stdout.startswith("ok: 1132 entries")
    restored_token = new_restored_token(restored)
    with running_server(restored) as base:
        root = x509.load_pem_x509_certificate((restored / "ca" / "root.pem").read_bytes())
        served = requests.get(f"{base}/ca/intermediate.pem", timeout=10).content
        intermediate = x509.load_pem_x509_certificate(served)
        assert root.subject == intermediate.issuer
        for serial, certificate in random.Random(1).sample(sorted(returned.items()), 100):
            r = requests.get(f"{base}/api/v1/certificates/{serial}", timeout=10,
                             headers={"Authorization": f"Bearer {restored_token}"})
            assert r.status_code == 200 and r.json()["certificate"] == certificate, serial
            assert r.json()["log_index"] >= 0
        crl = crl_of(base)
        on_crl = {entry.serial_number for entry in crl}
        for serial in revoked:
            cert = x509.load_pem_x509_certificate(returned[serial].encode())
            assert ocsp_status(base, cert, intermediate).name == "REVOKED"
            assert cert.serial_number in on_crl
        assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number > last_crl
        fresh = issue(base, restored_token, "fresh.example.test")
        assert fresh.status_code == 201 and fresh.json()["serial"] not in returned
    store = open_store(restored / "ca.sqlite3")
    stored = {serial: record.der for serial in returned if (record := store.get_certificate(serial))}
    assert len(stored) == len(returned)
    for serial, certificate in returned.items():
        assert stored[serial] == x509.load_pem_x509_certificate(certificate.encode()).public_bytes(
            Encoding.DER), serial


def new_restored_token(instance: Path) -> str:
    out = cli(instance, "token", "create", "drill", "--admin").stdout
    return out.strip().splitlines()[-1].split()[-1]


@pytest.mark.postgresql_only
def test_two_nodes_append_one_log_in_the_stores_order(instance, svc, tmp_path):
    """Each node writes its own file; the store orders the entries; a node first writes what the
    other appended since its last write, so every file is a complete prefix of one log."""
    from .test_nodes import burst, second_node

    token = new_token(svc)
    node_b = second_node(instance, tmp_path)
    files = [instance / "issuance-log" / "entries.jsonl", node_b / "issuance-log" / "entries.jsonl"]
    with running_server(instance) as a, running_server(node_b) as b:
        results = burst([a, b], token, 200, "nodes")
        assert [r[1] for r in results] == [201] * 200 and {r[0] for r in results} == {a, b}
        size = svc.store.log_size()
        assert size == 200
        store_lines = list(entry_lines(svc.store, 0))
        for path in files:  # each a prefix of the store's log, in its order
            lines = path.read_bytes().splitlines()
            assert 0 < len(lines) <= size and lines == store_lines[:len(lines)], path
        for folder in (instance, node_b):
            assert cli(folder, "log", "verify").stdout.startswith("ok: 200 entries")
        for base in (a, b):
            assert issue(base, token, f"last-{base.rsplit(':', 1)[1]}.example.test").status_code == 201
        store_lines = list(entry_lines(svc.store, 0))
        assert files[1].read_bytes().splitlines() == store_lines  # b wrote last: it has everything
        assert files[0].read_bytes().splitlines() == store_lines[:201]
        checkpoint = requests.get(f"{a}/log/checkpoint", timeout=10).text
        assert requests.get(f"{b}/log/checkpoint", timeout=10).text.split("\n")[:3] == checkpoint.split("\n")[:3]
        assert open_note(checkpoint, requests.get(f"{b}/log/key", timeout=10).text).size == 202


def test_one_process_revoking_and_issuing_at_once_writes_each_entry_once(app, svc, instance):
    """Threads of one process sync the log at the same time (an issuance's group commit and
    revocations run side by side): flock on the process's one lock descriptor does not exclude its
    own threads, so both read the same file end and appended the same entries, and `log verify`
    then refused the file (issue 27's log; found while looking into a 500 in the availability test)."""
    token = new_token(svc)

    def client() -> ApiClient:  # one each: a test client is not shared between threads
        return ApiClient(app.test_client(), token)

    serials = [issued(client(), f"early{i}.example.test")["serial"] for i in range(24)]

    def revoke(serial: str) -> int:
        return client().post(f"/api/v1/certificates/{serial}/revoke", json={"reason": "superseded"}).status_code

    def take(i: int) -> int:
        return issue_in(client(), f"late{i}.example.test").status_code

    with ThreadPoolExecutor(8) as pool:
        revoked = pool.map(revoke, serials)
        taken = pool.map(take, range(24))
        assert list(revoked) == [200] * 24 and list(taken) == [201] * 24
    lines = (instance / "issuance-log" / "entries.jsonl").read_bytes().splitlines()
    assert [json.loads(line)["index"] for line in lines] == list(range(72))
    assert lines == list(entry_lines(svc.store, 0))
    assert cli(instance, "log", "verify").stdout.startswith("ok: 72 entries")
