"""ACME state as typed objects (issue 25): one transition table (RFC 8555 7.1.6), one `move`
that checks it and writes only when the object is still as it was read."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from ca_server.acme import state
from ca_server.acme.state import Authorization, Challenge, Order, TransitionError

from .acme_client import ScriptedAcme
from .test_acme import BASE

NOW = dt.datetime(2026, 12, 6, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def account(app) -> str:
    acme = ScriptedAcme(app.test_client(), BASE)
    assert acme.new_account().status_code == 201
    return acme.kid.rsplit("/", 1)[1]


def insert(store, kind: str, status: str, account: str) -> str:
    identifier = {"type": "dns", "value": "a.example.test"}
    data = {"order": {"identifiers": [identifier], "authorizations": ["z1"], "profile": "server",
                      "expires": "2026-12-07T12:00:00Z", "certificate": None, "error": None, "replaces": None},
            "authz": {"identifier": identifier, "wildcard": False, "challenges": ["c1"], "expires": "2026-12-07T12:00:00Z"},
            "challenge": {"type": "http-01", "token": "tok", "identifier": identifier, "wildcard": False,
                          "order_id": "o1"}}[kind]
    object_id = f"{kind}-{status}"
    store.insert_acme_objects([{"id": object_id, "kind": kind, "account_id": account, "parent_id": "p",
                                "status": status, "expires_at": NOW + dt.timedelta(days=1), "created_at": NOW,
                                "data": data}])
    return object_id


CASES = [(kind, source, target, target in allowed)
         for kind, table in state.TRANSITIONS.items()
         for source, allowed in table.items()
         for target in table]


@pytest.mark.parametrize("kind,source,target,allowed", CASES,
                         ids=[f"{'ok' if a else 'fail'}-{k}-{s}-to-{t}" for k, s, t, a in CASES])
def test_moves_follow_the_one_table(svc, account, kind, source, target, allowed):
    cls = state.CLASSES[kind]
    obj = state.load(svc.store, cls, insert(svc.store, kind, source, account))
    assert isinstance(obj, cls) and obj.status == source
    if not allowed:
        with pytest.raises(TransitionError, match=f"cannot go from {source} to {target}"):
            state.move(svc.store, obj, target, NOW)
        assert state.load(svc.store, cls, obj.id).status == source
        return
    moved = state.move(svc.store, obj, target, NOW)
    assert moved is not None and moved.status == target
    assert state.load(svc.store, cls, obj.id) == moved  # what was written reads back as the same object


def test_a_move_from_a_stale_read_changes_nothing(svc, account):
    order = state.load(svc.store, Order, insert(svc.store, "order", "ready", account))
    assert state.move(svc.store, order, "processing", NOW) is not None
    assert state.move(svc.store, order, "invalid", NOW) is None  # another worker moved it first
    assert state.load(svc.store, Order, order.id).status == "processing"


def test_objects_read_with_their_fields(svc, account):
    challenge = state.load(svc.store, Challenge, insert(svc.store, "challenge", "pending", account))
    assert (challenge.type, challenge.token, challenge.order_id, challenge.identifier.san) == (
        "http-01", "tok", "o1", "DNS:a.example.test")
    moved = state.move(svc.store, challenge, "processing", NOW, started="2026-12-06T12:00:00Z")
    assert state.load(svc.store, Challenge, challenge.id).started == moved.started == "2026-12-06T12:00:00Z"
    authz = state.load(svc.store, Authorization, insert(svc.store, "authz", "pending", account))
    assert authz.challenges == ("c1",) and not authz.expired(NOW) and authz.expired(NOW + dt.timedelta(days=2))
    assert state.load(svc.store, Order, "absent") is None


def test_an_account_reads_as_a_typed_object_with_its_orders(svc, app, account):
    acct = state.account(svc.store, account)
    assert isinstance(acct, state.Account) and acct.status == "valid" and acct.actor == f"acme:{account}"
    assert state.account_by_thumbprint(svc.store, acct.thumbprint) == acct
    with pytest.raises(dataclasses.FrozenInstanceError):
        acct.status = "deactivated"  # type: ignore[misc]
    order_id = insert(svc.store, "order", "valid", account)
    listed = dict((a.id, orders) for a, orders in state.all_accounts(svc.store))
    assert [o.id for o in listed[account]] == [order_id] and isinstance(listed[account][0], Order)
    assert svc.store.update_acme_account(account, status="deactivated")
    assert state.account(svc.store, account).status == "deactivated"
    assert state.account(svc.store, "nobody") is None


def insert_processing_order(store, account: str, n: int) -> None:
    """Order o<n> (pending) with one authorization z<n> (pending) whose challenge c<n> is being
    validated (processing): what the validator finds when it records an outcome."""
    identifier = {"type": "dns", "value": f"o{n}.example.test"}
    common = {"expires_at": NOW + dt.timedelta(days=1), "created_at": NOW, "account_id": account}
    store.insert_acme_objects([
        {"id": f"o{n}", "kind": "order", "parent_id": None, "status": "pending", **common,
         "data": {"identifiers": [identifier], "authorizations": [f"z{n}"], "profile": "server",
                  "expires": "2026-12-07T12:00:00Z", "certificate": None, "error": None, "replaces": None}},
        {"id": f"z{n}", "kind": "authz", "parent_id": f"o{n}", "status": "pending", **common,
         "data": {"identifier": identifier, "wildcard": False, "challenges": [f"c{n}"],
                  "expires": "2026-12-07T12:00:00Z"}},
        {"id": f"c{n}", "kind": "challenge", "parent_id": f"z{n}", "status": "processing", **common,
         "data": {"type": "http-01", "token": "tok", "identifier": identifier, "wildcard": False, "order_id": f"o{n}",
                  "started": "2026-12-06T12:00:00Z"}}])


def test_a_validation_outcome_is_recorded_whole_or_not_at_all(svc, account, monkeypatch):
    """The challenge, its authorization and its order move in one transaction: a worker that stops
    before the order is ready leaves the challenge processing (validated again on the next poll),
    never an authorization valid behind an order still pending, which a client that finalizes
    as soon as its authorizations read valid (certbot) is refused with orderNotReady."""
    from ca_server.acme import challenges

    insert_processing_order(svc.store, account, 1)
    real_move = state.move

    def stops_before_the_order(store, obj, to, now, **changes):
        if isinstance(obj, Order):
            raise RuntimeError("the worker stopped here")
        return real_move(store, obj, to, now, **changes)

    monkeypatch.setattr(state, "move", stops_before_the_order)
    with pytest.raises(RuntimeError):
        challenges.validation_done(svc.store, "c1", None, NOW)
    statuses = {cls: state.load(svc.store, cls, i).status for cls, i in ((Challenge, "c1"), (Authorization, "z1"),
                                                                         (Order, "o1"))}
    assert statuses == {Challenge: "processing", Authorization: "pending", Order: "pending"}

    monkeypatch.setattr(state, "move", real_move)
    assert challenges.validation_done(svc.store, "c1", None, NOW) is None
    assert state.load(svc.store, Challenge, "c1").status == "valid"
    assert state.load(svc.store, Authorization, "z1").status == "valid"
    assert state.load(svc.store, Order, "o1").status == "ready"


def test_another_connection_never_reads_the_authorization_valid_before_the_order_is_ready(svc, account, monkeypatch):
    """What a poll (another worker thread, its own connection) reads while the validator records
    a success: the authorization still pending until the order is ready with it."""
    import threading

    from ca_server.acme import challenges

    insert_processing_order(svc.store, account, 2)
    real_move, seen = state.move, []

    def poll_after_each_move(store, obj, to, now, **changes):
        moved = real_move(store, obj, to, now, **changes)
        reader = threading.Thread(target=lambda: seen.append(
            (type(obj).__name__, to, state.load(store, Authorization, "z2").status, state.load(store, Order, "o2").status)))
        reader.start()
        reader.join()
        return moved

    monkeypatch.setattr(state, "move", poll_after_each_move)
    challenges.validation_done(svc.store, "c2", None, NOW)
    assert [(kind, to) for kind, to, _, _ in seen] == [("Challenge", "valid"), ("Authorization", "valid"),
                                                      ("Order", "ready")]
    assert {(authz, order) for _, _, authz, order in seen} == {("pending", "pending")}  # nothing shown half-way
    assert (state.load(svc.store, Authorization, "z2").status, state.load(svc.store, Order, "o2").status) == (
        "valid", "ready")
