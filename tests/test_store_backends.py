"""The store's interface on both backends (SQLite file, PostgreSQL server started by the tests):
the same behaviour from the same calls, and what multi-node operation relies on (leases, CRL
numbers, shared rate limits, the revocation marker)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import inspect
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from ca_server import issuance, revocation
from ca_server import store as store_package
from ca_server.errors import BadRequestError
from ca_server.pki.serials import new_serial, serial_hex
from ca_server.store import PostgresStore, SerialTakenError, Settlement, Store, StoreBackend, interfaces
from ca_server.store.postgres import redact, translate
from ca_server.store.schema import migrations
from ca_server.store.schema_pg import MIGRATIONS
from ca_server.web.ratelimit import RateLimitedError, RateLimits

from .conftest import NOW
from .factories import make_csr, pem


@pytest.fixture
def bare_store(backend, tmp_path, request):
    if backend == "postgresql":
        store = PostgresStore(request.getfixturevalue("pg_server").new_database())
    else:
        store = Store(tmp_path / "ca.sqlite3")
    store.migrate()
    yield store
    store.close()


def test_both_backends_provide_the_interface_the_queries_use(bare_store, backend):
    assert isinstance(bare_store, StoreBackend) and isinstance(bare_store, interfaces.CaStore)
    assert bare_store.kind == backend and bare_store.ping()


def test_one_schema_history_in_both_backends():
    sqlite_steps = [m.name for m in migrations._migrations]
    assert sqlite_steps == [name for name, _ in MIGRATIONS], "add each new migration to schema_pg.py too"


@pytest.mark.parametrize("backend_class", [Store, PostgresStore], ids=["sqlite", "postgresql"])
def test_both_backends_keep_every_promise_of_the_interface(backend_class):
    """Each area Protocol (store/interfaces.py): every method is on both backends with the same
    parameters, defaults and annotations; StoreBackend's with the same parameters (each backend
    annotates its own connection type)."""
    for protocol in (*interfaces.AREAS, StoreBackend):
        exact = protocol is not StoreBackend
        for name, declared in vars(protocol).items():
            if name.startswith("_") or not callable(declared):
                continue
            assert hasattr(backend_class, name), f"{backend_class.__name__} lacks {protocol.__name__}.{name}"
            ours, theirs = inspect.signature(declared), inspect.signature(getattr(backend_class, name))

            def shape(signature, exact=exact):
                params = [(p.name, p.kind, p.default, p.annotation if exact else None)
                          for p in signature.parameters.values()]
                return params, signature.return_annotation if exact else None
            assert shape(theirs) == shape(ours), f"{protocol.__name__}.{name}"


def test_every_query_the_store_offers_is_declared_in_one_area():
    declared = [name for protocol in interfaces.AREAS for name in vars(protocol)
                if not name.startswith("_") and callable(vars(protocol)[name])]
    assert len(declared) == len(set(declared)), "a method declared in two areas"
    offered = {name for queries in store_package._QUERIES for name, value in vars(queries).items()
               if callable(value) and not name.startswith("_")}
    assert offered == set(declared), offered ^ set(declared)


def test_migrating_twice_changes_nothing(bare_store):
    bare_store.migrate()
    assert bare_store.take_lease("x", "me", NOW, 10)


def test_the_spellings_that_differ_run_on_each_engine(bare_store, backend):
    """The dialect object names what SQLite and PostgreSQL spell differently; each spelling runs
    on its engine and means the same there."""
    d = bare_store.dialect
    assert d.name == backend
    db = bare_store.db
    assert sorted(r["value"] for r in db.query(f"SELECT value FROM {d.values()}", ['["b", "a"]'])) == ["a", "b"]
    detail = '{"codes": ["x", "y"], "certificate": "0A1B"}'
    assert [r["v"] for r in db.query(f"SELECT {d.field('t.detail', 'certificate')} AS v FROM (SELECT ? AS detail) t",
                                     [detail])] == ["0A1B"]
    rows = db.query(f"SELECT j.value AS v FROM (SELECT ? AS detail) t, {d.array_at('t.detail', 'codes', 'j')}", [detail])
    assert sorted(r["v"] for r in rows) == ["x", "y"]
    assert [r["n"] for r in db.query(f"SELECT count(*) AS n FROM (SELECT 'Web.Example.TEST' AS name) t"
                                     f" WHERE name {d.like} ?", ["web.example%"])] == [1]
    hinted = f"SELECT count(*) AS n FROM certificates{d.index('certificates_requester')} WHERE requester = ?"
    assert [r["n"] for r in db.query(hinted, ["nobody"])] == [0]
    assert [r["n"] for r in db.query(f"SELECT count(*) AS n FROM certificates c{d.no_index}")] == [0]


def test_postgresql_gets_only_its_placeholder_style():
    assert translate("SELECT a FROM t WHERE b = ? AND c LIKE ?") == "SELECT a FROM t WHERE b = %s AND c LIKE %s"
    assert translate("SELECT '100%' FROM t") == "SELECT '100%%' FROM t"


def test_named_parameters_and_a_password_never_shown():
    assert translate("VALUES (:name, :is_admin)", True) == "VALUES (%(name)s, %(is_admin)s)"
    assert redact("postgresql://ca:s3cret@db:5432/ca") == "postgresql://ca:***@db:5432/ca"
    assert "s3cret" not in repr(PostgresStore("postgresql://ca@db/ca", "s3cret"))


def test_a_lease_is_held_until_it_expires_then_taken_over(bare_store):
    s = bare_store
    assert s.take_lease("crl", "node-a", NOW, 60)
    assert not s.take_lease("crl", "node-b", NOW + dt.timedelta(seconds=59), 60)
    assert s.take_lease("crl", "node-a", NOW + dt.timedelta(seconds=30), 60), "the holder renews"
    assert s.lease_holder("crl", NOW + dt.timedelta(seconds=60)) == "node-a"
    assert s.take_lease("crl", "node-b", NOW + dt.timedelta(seconds=91), 60), "expired: another takes it"
    assert s.lease_holder("crl", NOW + dt.timedelta(seconds=92)) == "node-b"


def at_once(work, items) -> None:
    """work(item) for every item, each in its own thread, all released together."""
    barrier = threading.Barrier(len(items))

    def run(item):
        barrier.wait()
        work(item)

    threads = [threading.Thread(target=run, args=(item,)) for item in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)


def test_a_lease_is_taken_by_one_of_many_at_once(bare_store):
    winners = []

    def contend(i):
        if bare_store.take_lease("job:reminders", f"node-{i}", NOW, 60):
            winners.append(i)

    at_once(contend, range(8))
    assert len(winners) == 1


def test_crl_numbers_only_grow_in_commit_order(svc):
    """Threads publish at once (as nodes would) with clocks that disagree: each stored CRL's number
    is above every number stored before it."""
    numbers, errors = [], []

    def publish(i):
        try:  # a clock behind the others by up to 7 s: its millisecond number would be smaller
            crl = revocation.publish_crl(svc.config, svc.store, svc.authority, "intermediate",
                                         NOW - dt.timedelta(seconds=i % 8))
            numbers.append(crl.number)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    at_once(publish, range(12))
    assert not errors
    stored = [r[0] for r in svc.store.db.execute(
        "SELECT number FROM crls WHERE issuer = 'intermediate' ORDER BY number")]
    assert len(set(numbers)) == 12 and svc.store.latest_crl_number("intermediate") == max(numbers)
    assert stored == sorted(stored) and len(stored) <= 3  # the newest three are kept


def test_the_revocation_marker_changes_with_each_revocation(svc):
    record = issuance.issue(svc.config, svc.store, svc.authority,
                            issuance.IssueRequest(csr=pem(make_csr(["marker.example.test"]))), NOW)
    before = svc.store.revocation_marker()
    revocation.revoke(svc.config, svc.store, svc.authority, record.serial, "keyCompromise", NOW, actor="test")
    assert svc.store.revocation_marker() != before


def test_rate_limits_count_across_nodes_on_postgresql(svc, backend):
    """Two RateLimits, as two nodes have: on PostgreSQL they count together; on SQLite each
    worker counts its own (documented)."""
    node_a, node_b = RateLimits(svc.store), RateLimits(svc.store)
    node_a.hit("3 per minute", "sign-in", "10.0.0.9", what="sign-ins")
    node_b.hit("3 per minute", "sign-in", "10.0.0.9", what="sign-ins")
    node_a.hit("3 per minute", "sign-in", "10.0.0.9", what="sign-ins")
    if backend == "postgresql":
        with pytest.raises(RateLimitedError) as refused:
            node_b.hit("3 per minute", "sign-in", "10.0.0.9", what="sign-ins")
        assert 1 <= refused.value.retry_after <= 61
    else:
        node_b.hit("3 per minute", "sign-in", "10.0.0.9", what="sign-ins")
        node_b.hit("3 per minute", "sign-in", "10.0.0.9", what="sign-ins")  # b's own second and third
        with pytest.raises(RateLimitedError):
            node_b.hit("3 per minute", "sign-in", "10.0.0.9", what="sign-ins")


def test_text_postgresql_cannot_hold_is_a_400_not_a_500(svc, backend):
    if backend == "sqlite":
        assert svc.store.get_user("a\x00b") is None
    else:
        with pytest.raises(BadRequestError, match="NUL"):
            svc.store.get_user("a\x00b")


def test_a_taken_serial_fails_only_its_own_certificate_in_a_group_commit(svc):
    """Rows arriving together are written in one (pipelined, on PostgreSQL) transaction; a serial
    already stored makes only its own insert fail, and the connection stays usable."""
    first = issuance.issue(svc.config, svc.store, svc.authority,
                           issuance.IssueRequest(csr=pem(make_csr(["taken.example.test"]))), NOW)
    others = [dataclasses.replace(first, serial=serial_hex(new_serial())) for _ in range(15)]
    outcome: dict[str, object] = {}

    def insert(record):
        try:
            svc.store.insert_certificate(record, audit={"at": NOW, "action": "issue", "actor": "test",
                                                        "serial": record.serial})
            outcome[record.serial] = "stored"
        except SerialTakenError as exc:
            outcome[record.serial] = exc

    at_once(insert, [*others, first])
    assert isinstance(outcome[first.serial], SerialTakenError)
    assert all(outcome[r.serial] == "stored" and svc.store.get_certificate(r.serial) for r in others)
    audited = {row["serial"] for row in svc.store.audit_entries(action="issue", actor="test")}
    assert audited == {r.serial for r in others}


@pytest.mark.parametrize("logged", [True, False], ids=["with-issuance-log", "without"])
def test_what_a_certificate_settles_is_written_with_it_or_not_at_all(svc, logged, monkeypatch):
    """An ACME order in processing becomes valid in the certificate's own transaction: with the
    certificate, or (a taken serial, a failure after the move: the transaction rolled back) not at
    all, and `applied` says so only once committed; an order that expired meanwhile is left as it
    is, and the certificate stored all the same. Without the issuance log, PostgreSQL pipelines a
    certificate's transaction, but not one that settles something: whether the order moved must
    be known before the commit returns."""
    if not logged:
        svc.store.attach_log(None)
    first = issuance.issue(svc.config, svc.store, svc.authority,
                           issuance.IssueRequest(csr=pem(make_csr(["settle.example.test"]))), NOW)
    data = {"identifiers": [{"type": "dns", "value": "settle.example.test"}], "authorizations": [],
            "profile": "server", "expires": "2026-12-07T12:00:00Z", "certificate": None}
    assert svc.store.insert_acme_account({"id": "a1", "thumbprint": "t1", "jwk": "{}", "status": "valid", "contacts": [],
                                          "eab_name": None, "created_at": NOW, "client": None})
    svc.store.insert_acme_objects([{"id": f"o-{status}", "kind": "order", "account_id": "a1", "parent_id": None,
                                    "status": status, "expires_at": NOW, "created_at": NOW, "data": data}
                                   for status in ("processing", "invalid")])

    def order(order_id):
        row = svc.store.acme_object("order", order_id)
        return row["status"], row["data"]["certificate"]

    taken = Settlement("acme_order", "o-processing", data)
    with pytest.raises(SerialTakenError):
        svc.store.insert_certificate(first, settles=taken)
    assert not taken.applied and order("o-processing") == ("processing", None)

    def fails_after_the_settlement(db, events):
        assert order("o-processing") == ("valid", events[0][1].serial)  # moved, not yet committed
        raise RuntimeError("the transaction fails after the order moved")

    unlucky = dataclasses.replace(first, serial=serial_hex(new_serial()))
    rolled_back = Settlement("acme_order", "o-processing", data)
    monkeypatch.setattr(svc.store, "_log_events", fails_after_the_settlement)
    with pytest.raises(RuntimeError):
        svc.store.insert_certificate(unlucky, settles=rolled_back)
    monkeypatch.undo()
    assert not rolled_back.applied and order("o-processing") == ("processing", None)
    assert svc.store.get_certificate(unlucky.serial) is None

    fresh = dataclasses.replace(first, serial=serial_hex(new_serial()))
    done = Settlement("acme_order", "o-processing", data)
    svc.store.insert_certificate(fresh, settles=done)
    assert done.applied and order("o-processing") == ("valid", fresh.serial)

    late = dataclasses.replace(first, serial=serial_hex(new_serial()))
    expired = Settlement("acme_order", "o-invalid", data)
    svc.store.insert_certificate(late, settles=expired)
    assert not expired.applied and order("o-invalid") == ("invalid", None)
    assert svc.store.get_certificate(late.serial) is not None


def test_a_shared_job_runs_only_where_its_lease_is_held(svc, monkeypatch):
    """Nodes' schedulers tick independently; the reminder, webhook and CRL jobs run where the
    job's lease is taken, and elsewhere only once it has lapsed (or been released)."""
    from ca_server import scheduler
    from ca_server.clock import utcnow

    ran = []
    monkeypatch.setattr(scheduler.revocation, "refresh_crls", lambda *args: ran.append("crl") or [])
    job = scheduler.build_scheduler(svc).get_job("crl-refresh").func
    assert svc.store.take_lease("job:crl-refresh", "other-node:1", utcnow(), 600)
    job(svc)
    assert ran == []
    svc.store.release_lease("job:crl-refresh", "other-node:1")
    job(svc)
    job(svc)  # its own lease: taken again
    assert ran == ["crl", "crl"]
    assert svc.store.lease_holder("job:crl-refresh", utcnow()).endswith(f":{os.getpid()}")


@pytest.mark.postgresql_only
def test_a_connection_lost_inside_a_pipelined_write_is_store_unavailable_then_reconnects(pg_server, backend):
    """Found by the outage test: a connection that died inside a pipelined write (the group
    commit of certificates) turned the 503 into an AttributeError (a 500)."""
    import psycopg

    from ca_server.errors import StoreUnavailableError

    url = pg_server.new_database()
    store = PostgresStore(url)
    store.migrate()
    pid = store.db.execute("SELECT pg_backend_pid()").fetchone()[0]
    with psycopg.connect(url, autocommit=True) as other:
        with pytest.raises(StoreUnavailableError):
            with store.write_many() as db:
                other.execute("SELECT pg_terminate_backend(%s)", [pid])
                time.sleep(0.2)
                db.execute("INSERT INTO leases (name, holder, expires_at) VALUES ('x', 'y', 'z')")
    assert store.take_lease("after", "me", NOW, 10), "the next write uses a new connection"
    assert store.lease_holder("x", NOW) is None, "nothing of the lost transaction was stored"


@pytest.mark.parametrize("text", ["2026-11-26 18:10:51Z", "2026-11-26T18:10:51", "2026-13-26T18:10:51Z",
                                  "2026-11-26T18:10:51+00:00", "2026-1-26T18:10:51Z", "２026-11-26T18:10:51Z", ""])
def test_stored_times_read_back_only_in_the_form_they_are_written(text):
    """from_text (which reads every stored moment) takes what to_text writes and nothing else."""
    from ca_server.clock import from_text, to_text

    moment = dt.datetime(2026, 11, 26, 18, 10, 51, tzinfo=dt.UTC)
    assert from_text(to_text(moment)) == moment and from_text(to_text(moment)).tzinfo is dt.UTC
    with pytest.raises(ValueError):
        from_text(text)


def test_an_order_is_found_by_its_certificate_through_an_index(tmp_path):
    """The ACME download, revocation and renewal info look an order up by its certificate's
    serial: SQLite answers from the m023 index, not by reading every ACME object (issue 29)."""
    store = Store(tmp_path / "ca.sqlite3")
    store.migrate()
    asked: list[str] = []
    store.db.conn.set_trace_callback(asked.append)
    assert store.acme_order_of_certificate("ab12") is None
    store.db.conn.set_trace_callback(None)
    (statement,) = [s for s in asked if "acme_objects" in s]
    plan = " ".join(row[3] for row in store.db.conn.execute("EXPLAIN QUERY PLAN " + statement))
    assert "USING INDEX acme_objects_certificate" in plan, plan
    store.close()


def test_a_per_process_object_is_made_once_when_threads_ask_at_once(bare_store):
    """A worker's first requests arrive together: each asking thread must get the one object (two
    group commits in one worker were two leaders, whose log writes overlapped)."""
    made = []
    start = threading.Barrier(8)

    def make():
        time.sleep(0.05)  # wide enough for every other thread to ask meanwhile
        made.append(object())
        return made[-1]

    def ask(_):
        start.wait()
        return bare_store.per_process("_test_object", make)

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(ask, range(8)))
    assert len(made) == 1 and all(g is made[0] for g in got)
