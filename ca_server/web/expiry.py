"""Expiry where people look: a certificate's expiry as an iCalendar event, and Prometheus metrics."""

from __future__ import annotations

from flask import Blueprint, Response, g, request

from .. import calendar_events, metrics
from ..errors import AuthError
from .auth import bearer_requester
from .common import now, services
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
    if not svc.config.metrics.public and g.get("requester") is None:
        header = request.headers.get("Authorization", "")
        if not header:
            raise AuthError("Metrics need an API token here ([metrics] public = false): send "
                            "'Authorization: Bearer TOKEN'.")
        bearer_requester(svc.store, header, now())
    body = metrics.exposition(svc.config, svc.store, svc.authority, now())
    return Response(body, mimetype="text/plain", headers={"Cache-Control": "no-store"},
                    content_type="text/plain; version=0.0.4; charset=utf-8")
