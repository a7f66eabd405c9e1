"""`ca-server serve`: gunicorn (a production WSGI server) plus the scheduler, which runs once in
the gunicorn master process however many workers serve requests."""

from __future__ import annotations

import logging

from gunicorn.app.base import BaseApplication

from .services import Services

log = logging.getLogger("ca_server")


class _Gunicorn(BaseApplication):
    def __init__(self, services: Services, options: dict) -> None:
        self._services = services
        self._options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self._options.items():
            self.cfg.set(key, value)

    def load(self):
        # Runs in each worker after the fork: every worker opens its own store connections.
        from . import create_app

        return create_app(self._services.config, instance_path=self._services.paths.root)


def run_server(services: Services, *, host: str | None, port: int | None, workers: int | None) -> None:
    cfg = services.config.server
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    scheduler_holder: dict = {}

    def when_ready(server) -> None:
        from .clock import utcnow
        from .revocation import refresh_crls
        from .scheduler import start_scheduler

        refresh_crls(services.config, services.store, services.authority, utcnow())
        scheduler_holder["scheduler"] = start_scheduler(services)

    def on_exit(server) -> None:
        scheduler = scheduler_holder.get("scheduler")
        if scheduler is not None:
            scheduler.shutdown(wait=False)

    options = {
        "bind": f"{host or cfg.host}:{port or cfg.port}",
        "workers": workers or cfg.workers,
        "threads": cfg.threads,
        "worker_class": "gthread",
        "timeout": 60,
        "graceful_timeout": 10,
        "accesslog": "-" if cfg.access_log else None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "ca-server",
        "when_ready": when_ready,
        "on_exit": on_exit,
        "limit_request_line": 8190,
    }
    app = _Gunicorn(services, options)
    if "control_socket_disable" in app.cfg.settings:
        # gunicorn >= 24 opens a control socket in the home directory by default; two servers
        # on one host would fight over it, and nothing here uses it.
        app.cfg.set("control_socket_disable", True)
    app.run()
