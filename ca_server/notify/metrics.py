"""Prometheus metrics (GET /metrics), read from the store at each scrape so every worker (and
every node) says the same: certificate expiry, counts by status, issuances and refusals, reminder
failures, and the CA certificates' own expiry.

Series per certificate are bounded: only certificates that expire within the largest reminder
threshold and are neither revoked nor renewed, at most MAX_EXPIRY_SERIES of them (the soonest),
and a gauge says how many more there were. A store of millions never makes a million series.

Those series name a certificate (its serial, host name and requester): an inventory of the
network that the certificate list and the API keep behind sign-in. So they go only to a scrape
that presents an API token (or comes from a signed-in user); without one /metrics has counts alone."""

from __future__ import annotations

import datetime as dt
import os
import typing

from prometheus_client import Counter, values
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import CollectorRegistry

from ..config import Config
from ..store import CaStore, CertificateFilter

if typing.TYPE_CHECKING:  # a type only: notify/ sits below the CA package
    from ..ca.authority import Authority

MAX_EXPIRY_SERIES = 1000
# Counted in the process that answers. Under `serve` every worker writes its counts to files in
# PROMETHEUS_MULTIPROC_DIR (server.py sets it) and a scrape adds them up, whichever worker it reaches.
OCSP_ANSWERS = Counter("ca_server_ocsp_answers", "OCSP answers by status", ["status"], registry=None)


# prometheus_client's multi-process values ask os.getpid() at every increment (a system call) to
# notice a fork: 7.6% of the Python a worker runs per OCSP answer (issue 29, py-spy --gil). The
# pid is kept here instead, and set again in a forked child.
_PID = [os.getpid()]
os.register_at_fork(after_in_child=lambda: _PID.__setitem__(0, os.getpid()))


def _process_id() -> int:
    return _PID[0]


if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # chosen before any counter has a value (labels() makes them)
    values.ValueClass = values.MultiProcessValue(process_identifier=_process_id)


class StoreCollector:
    def __init__(self, config: Config, store: CaStore, authority: Authority, now: dt.datetime, *,
                 per_certificate: bool) -> None:
        self.config, self.store, self.authority, self.now = config, store, authority, now
        self.per_certificate = per_certificate

    def collect(self):
        now, store = self.now, self.store
        horizon = max(self.config.reminders.days_before)
        due = store.soonest_expiring(now, horizon, requester=None, limit=MAX_EXPIRY_SERIES * 2,
                                     not_renewed=True)
        yield GaugeMetricFamily("ca_server_certificates_due",
                                f"Valid, not renewed certificates that expire within {horizon} days"
                                + ("" if len(due) < MAX_EXPIRY_SERIES * 2 else " (at least)"), value=len(due))
        if self.per_certificate:
            expiry = GaugeMetricFamily(
                "ca_server_certificate_expiry_timestamp_seconds",
                f"Expiry (Unix time) of each valid, not renewed certificate that expires within {horizon} days",
                labels=["serial", "common_name", "profile", "requester"])
            for record in due[:MAX_EXPIRY_SERIES]:
                expiry.add_metric([record.serial, record.common_name or "", record.profile, record.requester or ""],
                                  record.not_after.timestamp())
            yield expiry
            yield GaugeMetricFamily("ca_server_certificate_expiry_series_left_out",
                                    f"Certificates due within {horizon} days beyond the {MAX_EXPIRY_SERIES} listed",
                                    value=max(0, len(due) - MAX_EXPIRY_SERIES))
        counts = GaugeMetricFamily("ca_server_certificates", "Certificates in the store by status", labels=["status"])
        for status in ("valid", "revoked", "expired"):
            counts.add_metric([status], store.count_certificates(CertificateFilter(status=status), now))
        yield counts
        actions = store.audit_action_counts(("issue", "refuse", "revoke"))
        yield CounterMetricFamily("ca_server_issuances", "Certificates issued", value=actions["issue"])
        doors = CounterMetricFamily("ca_server_issuances_by_door", "Certificates issued, approved ones included, by "
                                    "the door they came through (web, api, acme, scep, est, cli, ca)", labels=["door"])
        for door, n in sorted(store.issuance_door_counts().items()):
            doors.add_metric([door], n)
        yield doors
        last = store.last_action_at("backup")
        yield GaugeMetricFamily("ca_server_backup_last_success_timestamp_seconds",
                                "When the newest backup was written (Unix time; 0: none yet)",
                                value=last.timestamp() if last else 0)
        yield CounterMetricFamily("ca_server_revocations", "Certificates revoked", value=actions["revoke"])
        refusals = CounterMetricFamily("ca_server_refusals", "Requests refused, by policy code", labels=["code"])
        for code, n in sorted(store.refusal_code_counts().items()):
            refusals.add_metric([code], n)
        yield refusals
        yield GaugeMetricFamily("ca_server_reminders_failed", "Reminder mails whose last attempt failed (retried)",
                                value=len(store.failed_reminders(limit=100_000)))
        yield GaugeMetricFamily("ca_server_webhook_deliveries_failed",
                                "Webhook deliveries whose last attempt failed (retried)", value=store.webhook_failures())
        ca = GaugeMetricFamily("ca_server_ca_certificate_expiry_timestamp_seconds",
                               "Expiry (Unix time) of the CA certificates", labels=["ca", "subject"])
        current = self.authority.current  # "intermediate": the issuing one; earlier ones "intermediate-N"
        cas = [("root", self.authority.root)] + [("intermediate" if gen is current else f"intermediate-{gen.number}",
                                                  gen.cert) for gen in self.authority.intermediates]
        for role, cert in cas:
            ca.add_metric([role, cert.subject.rfc4514_string()], cert.not_valid_after_utc.timestamp())
        yield ca


def exposition(config: Config, store: CaStore, authority: Authority, now: dt.datetime, *,
               per_certificate: bool) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(config, store, authority, now, per_certificate=per_certificate))
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client.multiprocess import MultiProcessCollector

        MultiProcessCollector(registry)
    else:
        registry.register(OCSP_ANSWERS)
    return generate_latest(registry)
