"""`ca-server serve`: Granian (a production WSGI server: HTTP in Rust, the app in Python threads)
plus the scheduler, which runs in one worker however many serve requests (store/checkpoints.py:
each worker also copies the WAL into the database in a background thread).

gunicorn served here first; its Python HTTP parsing cost ~0.2 ms of CPU per request against
Granian's ~0.03 ms (a bare WSGI app, same machine, same load), a quarter of the issuance budget."""

from __future__ import annotations

import logging

from granian import Granian
from granian.constants import Interfaces
from granian.log import LogLevels

from .services import Services
from .store.checkpoints import Checkpointer


def run_server(services: Services, *, host: str | None, port: int | None, workers: int | None) -> None:
    cfg = services.config.server

    def before_workers() -> None:
        # In the main process, before the workers start. Nothing here keeps running: the main
        # process forks replacement workers, and a fork while one of its threads is inside SQLite
        # would give the new worker SQLite's process-wide mutexes held (its first query would hang).
        from .clock import utcnow
        from .revocation import refresh_crls

        refresh_crls(services.config, services.store, services.authority, utcnow())
        services.store.close()  # the workers open their own connections

    def load_app(_target: str):
        # Runs in each worker process: every worker opens its own store connections, copies the
        # WAL into the database in a thread, and the first to take the scheduler's lock runs the
        # scheduler (a replacement for that worker takes the lock over when it starts).
        from . import create_app
        from .scheduler import start_scheduler
        from .web.access_log import AccessLog

        app = create_app(services.config, instance_path=services.paths.root)
        worker_services = app.extensions["ca_server"]
        worker_services.store.checkpoint_in_background()
        Checkpointer(worker_services.store.path).start()
        start_scheduler(worker_services)
        if cfg.access_log:
            app.wsgi_app = AccessLog(app.wsgi_app)
        return app

    server = Granian(
        "ca_server:create_app",
        address=host or cfg.host,
        port=port or cfg.port,
        interface=Interfaces.WSGI,
        workers=workers or cfg.workers,
        blocking_threads=cfg.threads,
        # Requests beyond what the threads can take wait in the socket backlog, not in memory.
        backpressure=cfg.threads,
        log_level=LogLevels.info,
        log_access=False,  # web/access_log.py writes it
        respawn_failed_workers=True,
        workers_kill_timeout=10,
    )
    # After Granian configured its own loggers (which drops the handlers it finds): ours go to stderr.
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    server.on_startup(before_workers)
    server.serve(target_loader=load_app)
