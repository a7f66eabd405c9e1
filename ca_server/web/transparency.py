"""The issuance log, read-only and without sign-in (issue 27): the newest signed checkpoint, the
log's verifier key, entries, and inclusion and consistency proofs (recovery/proofs.py)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from ..errors import BadRequestError, NotFoundError
from ..recovery import proofs
from .common import now, services

bp = Blueprint("transparency", __name__, url_prefix="/log")


def _log():
    svc = services()
    if svc.log is None:
        raise NotFoundError("This CA keeps no issuance log ([log] enabled = false).")
    return svc


def _text(body: str) -> Response:
    response = Response(body, mimetype="text/plain")
    response.headers["Cache-Control"] = "no-cache"
    return response


def _int_arg(name: str, default: int | None = None) -> int | None:
    value = request.args.get(name)
    if value is None or value == "":
        return default
    if not value.isdigit() or len(value) > 18:
        raise BadRequestError(f"{name} must be a whole number, not {value[:40]!r}.", code=f"{name}_invalid")
    return int(value)


@bp.get("/checkpoint")
def checkpoint():
    """The newest checkpoint as a signed note (C2SP tlog-checkpoint), covering every entry."""
    svc = _log()
    return _text(svc.log.checkpoint(svc.store, now()))


@bp.get("/key")
def key():
    """The verifier key for the checkpoints' signatures: name+key ID+base64 key (Go's note format)."""
    return _text(_log().log.verifier() + "\n")


@bp.get("/entries/<int:index>")
def entry(index: int):
    return jsonify(proofs.entry_at(_log().store, index))


@bp.get("/proof/<serial>")
def inclusion(serial: str):
    """?kind=issue (default) or revoke; ?tree_size=N (default: the newest checkpoint's, included)."""
    svc = _log()
    kind = request.args.get("kind", "issue")
    if kind not in ("issue", "revoke"):
        raise BadRequestError("kind is issue or revoke.", code="kind_invalid")
    return jsonify(proofs.inclusion(svc.store, svc.log, serial.lower(), now(), kind=kind,
                                    tree_size=_int_arg("tree_size")))


@bp.get("/consistency")
def consistency():
    return jsonify(proofs.consistency(_log().store, _int_arg("first", 0), _int_arg("second", 0)))
