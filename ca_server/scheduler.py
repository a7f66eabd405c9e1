"""APScheduler 3.x set-up. Jobs are the plain functions of the domain modules; the scheduler only
triggers them. An advisory file lock makes one process per instance run the jobs: one of the
server's workers (a replacement takes over when that worker dies), and two `ca-server serve` on
one instance still send each reminder once (the store's claims make sure of that anyway). Nodes
that share a PostgreSQL store each run a scheduler; the jobs of SHARED_JOBS take a lease in the
store, so each tick's work is done by one of them."""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
from dataclasses import dataclass

from apscheduler.schedulers.background import BackgroundScheduler

from . import once, revocation
from .ca import offline_root, rollover
from .clock import utcnow
from .errors import MailError
from .notify import reminders, webhooks
from .recovery import backup
from .services import Services

log = logging.getLogger("ca_server.scheduler")

JOB_DEFAULTS = {"coalesce": True, "max_instances": 1, "misfire_grace_time": 300}


FIRST_RUN_SECONDS = 60  # after a (re)start; an interval trigger alone would wait a whole interval


def build_scheduler(services: Services, extra_jobs: tuple = ()) -> BackgroundScheduler:
    """The scheduler with its jobs registered, not started (tests inspect it). Each job runs a
    minute after the start, then every interval: a server restarted more often than
    `interval_minutes` (deploys, a replaced worker) still sends its reminders."""
    scheduler = BackgroundScheduler(timezone="UTC", job_defaults=JOB_DEFAULTS)
    first = utcnow() + dt.timedelta(seconds=FIRST_RUN_SECONDS)
    for job_id, func, minutes in [*jobs(services), *extra_jobs]:
        if job_id in SHARED_JOBS:
            func = _once_across_processes(job_id, func, minutes)
        scheduler.add_job(func, "interval", minutes=minutes, id=job_id, name=job_id, replace_existing=True,
                          args=[services], next_run_time=first, **JOB_DEFAULTS)
    return scheduler


# Jobs whose work is the store's (not this node's): on several nodes sharing a database, each tick
# runs on one of them. The lease lasts a little less than the interval, so the node that holds it
# takes it again on its next tick, and another node takes over within an interval of its death.
SHARED_JOBS = {"reminders", "crl-refresh", "webhooks", "backup", "log-checkpoint"}


def _once_across_processes(job_id: str, func, minutes: int):
    def run(services: Services) -> None:
        if not services.store.take_lease(f"job:{job_id}", once.holder(), utcnow(), max(minutes * 60 - 5, 30)):
            log.debug("%s: another process holds this job's lease; not running it here", job_id)
            return
        func(services)
    run.__name__ = func.__name__
    return run


def jobs(services: Services) -> list:
    """(id, function, interval minutes) for every periodic job."""
    periodic = [
        ("reminders", reminder_job, services.config.reminders.interval_minutes),
        ("crl-refresh", crl_job, CRL_CHECK_MINUTES),
    ]
    if services.config.notify.webhooks:
        periodic.append(("webhooks", webhook_job, WEBHOOK_MINUTES))
    if services.config.backup.interval_hours:
        periodic.append(("backup", backup_job, services.config.backup.interval_hours * 60))
    if services.log is not None:
        periodic.append(("log-checkpoint", checkpoint_job, 1))
    return periodic


def checkpoint_job(services: Services) -> None:
    """A signed checkpoint every minute when entries were appended (GET /log/checkpoint signs
    one on request too, so a reader always gets one that covers every entry)."""
    services.log.checkpoint(services.store, utcnow())


def backup_job(services: Services) -> None:
    path = backup.run(services.config, services.paths, services.store, utcnow())
    log.info("backup written: %s", path)


WEBHOOK_MINUTES = 1  # revocations and retries go out within a minute


CRL_CHECK_MINUTES = 60


def reminder_job(services: Services) -> None:
    for outcome in reminders.run_pass(services.config, services.secrets, services.store, utcnow()):
        log.info("reminder %s", outcome.line())


def webhook_job(services: Services) -> None:
    for delivery in webhooks.run_pass(services.config, services.secrets, services.store, utcnow()):
        log.info("webhook %s", delivery.line())


def crl_job(services: Services) -> None:
    for crl in revocation.refresh_crls(services.config, services.store, services.authority, utcnow()):
        log.info("published %s CRL number %s", crl.issuer, crl.number)
    for warning in ca_warnings(services, utcnow()):
        log.warning("%s", warning.line())


@dataclass(frozen=True)
class CAWarning:
    """One of the CA's own deadlines, and whom it was mailed to."""

    sentence: str
    mailed: tuple[str, ...] = ()
    error: str | None = None  # the mail failed (tried again on the next run)
    dry_run: bool = False

    def line(self) -> str:
        if self.dry_run:
            return f"CA warning (would mail the admins): {self.sentence}"
        if self.error:
            return f"CA warning, mailing the admins failed ({self.error}): {self.sentence}"
        sent = f"mailed {', '.join(self.mailed)}" if self.mailed else "mailed before, or no admin address"
        return f"CA warning ({sent}): {self.sentence}"


def ca_warnings(services: Services, now: dt.datetime, *, dry_run: bool = False) -> list[CAWarning]:
    """The CA's own deadlines: the issuing intermediate's end (`[ca] intermediate_warning_days`)
    and an offline root's CRL (`[revocation] root_crl_warning_days`), each mailed to the admins
    once (whichever process or node gets there first). Run by the CRL job and by `ca-server remind`."""
    config, authority, store = services.config, services.authority, services.store
    checks = [(rollover.ending_warning(authority, now, config.ca.intermediate_warning_days),
               lambda: rollover.warn_ending_by_mail(config, services.secrets.smtp_password, authority, store, now))]
    if authority.root_offline:
        checks.append((offline_root.root_crl_warning(store, now, config.revocation.root_crl_warning_days),
                       lambda: offline_root.warn_by_mail(config, services.secrets, store, now)))
    out = []
    for sentence, send in checks:
        if sentence is None:
            continue
        if dry_run:
            out.append(CAWarning(sentence, dry_run=True))
            continue
        try:
            out.append(CAWarning(sentence, tuple(send())))
        except MailError as exc:
            out.append(CAWarning(sentence, error=str(exc)))
    return out


def start_scheduler(services: Services, extra_jobs: tuple = ()) -> BackgroundScheduler | None:
    """Start the scheduler in this process if no other process of the instance runs it;
    `extra_jobs` are (id, function(services), minutes) the caller adds (serve --tls)."""
    lock_fd = os.open(services.paths.scheduler_lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        log.info("another process runs the scheduler for this instance; not starting one here")
        return None
    # APScheduler logs seven INFO lines at its start (the line below says the same in one) and two
    # each time a job runs: with the issuance log's checkpoint every minute, 2,880 lines a day that
    # say nothing. A job that fails (ERROR) or ran late (WARNING) is still logged, by the job's id.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    scheduler = build_scheduler(services, extra_jobs)
    scheduler.start()
    scheduler._ca_server_lock_fd = lock_fd  # held (and the lock with it) while the process lives
    log.info("scheduler started: %s", ", ".join(j.id for j in scheduler.get_jobs()) or "no jobs")
    return scheduler
