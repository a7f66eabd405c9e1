"""Expiry where people look: a certificate's expiry as an iCalendar event, and Prometheus metrics."""

from __future__ import annotations

from flask import Blueprint, Response, abort, flash, g, redirect, render_template, url_for

from .. import accounts
from ..errors import AuthError
from ..notify import calendar_events, metrics
from .auth import load_requester
from .common import now, own_base_url, services
from .pages import _filename_base, find_certificate

bp = Blueprint("expiry", __name__)


@bp.get("/certificates/<serial>.ics")
def certificate_ics(serial: str):
    """"Add to calendar": one all-day event on the expiry date, alarms at the reminder thresholds."""
    svc = services()
    record = find_certificate(serial, with_renewal=True)
    body = calendar_events.certificate_calendar(record, base_url=svc.config.server.base_url,
                                                days_before=svc.config.reminders.days_before, now=now())
    response = Response(body, mimetype="text/calendar")
    response.headers["Content-Disposition"] = f'attachment; filename="{_filename_base(record)}-expiry.ics"'
    return response


@bp.get("/metrics")
def prometheus_metrics():
    svc = services()
    load_requester()  # a token (a wrong one is a 401, not counts alone) or a signed-in user
    requester = g.requester
    if not svc.config.metrics.public and requester is None:
        raise AuthError("Metrics need an API token here ([metrics] public = false): send "
                        "'Authorization: Bearer TOKEN'.")
    # Series that name certificates (hosts, serials, requesters) only to a token or a signed-in user.
    body = metrics.exposition(svc.config, svc.store, svc.authority, now(), per_certificate=requester is not None)
    return Response(body, mimetype="text/plain", headers={"Cache-Control": "no-store"},
                    content_type="text/plain; version=0.0.4; charset=utf-8")


def _feed_url(token: str) -> str:
    return f"{own_base_url()}/calendar/{token}.ics"


@bp.get("/calendar")
def calendar_page():
    token = services().store.calendar_feed_of(g.requester.label)
    return render_template("calendar.html", url=_feed_url(token) if token else None)


@bp.post("/calendar/new")
def calendar_new():
    had_one = services().store.calendar_feed_of(g.requester.label) is not None
    accounts.new_calendar_feed(services().store, g.requester.label, now())
    flash("A new calendar URL is ready; the one before no longer works." if had_one else
          "Your calendar URL is ready: subscribe to it below.")
    return redirect(url_for("expiry.calendar_page"), code=303)


@bp.post("/calendar/off")
def calendar_off():
    accounts.turn_off_calendar_feed(services().store, g.requester.label, now())
    flash("The calendar URL is turned off.")
    return redirect(url_for("expiry.calendar_page"), code=303)


@bp.post("/api/v1/calendar")
def calendar_api_new():
    """A token's (or user's) calendar URL, new on each call: {"url": ...}."""
    token = accounts.new_calendar_feed(services().store, g.requester.label, now())
    return {"url": _feed_url(token)}, 201


@bp.delete("/api/v1/calendar")
def calendar_api_off():
    accounts.turn_off_calendar_feed(services().store, g.requester.label, now())
    return Response(status=204)


@bp.get("/calendar/<token>.ics")
def calendar_feed(token: str):
    """Public: the secret in the URL is the credential (calendar apps send no sign-in)."""
    svc = services()
    owner = svc.store.calendar_feed_owner(token) if token else None
    body = calendar_events.feed_calendar(svc.store, owner, base_url=svc.config.server.base_url,
                                         days_before=svc.config.reminders.days_before, now=now()) if owner else None
    if body is None:
        abort(404)
    return Response(body, mimetype="text/calendar", headers={"Cache-Control": "private, max-age=3600"})
