"""`ca-server serve`: Granian (a production WSGI server: HTTP in Rust, the app in Python threads)
plus the scheduler, which runs in one worker however many serve requests (store/checkpoints.py:
each worker also copies the WAL into the database in a background thread).

gunicorn served here first; its Python HTTP parsing cost ~0.2 ms of CPU per request against
Granian's ~0.03 ms (a bare WSGI app, same machine, same load), a quarter of the issuance budget."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import resource
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from granian import Granian
from granian.constants import Interfaces, SSLProtocols
from granian.http import HTTP1Settings
from granian.log import LogLevels

from ..errors import AddressUnavailableError
from ..services import Services
from ..store.checkpoints import Checkpointer
from ..store.postgres import redact
from .stalled_connections import ConnectionReaper, RequestGate, TrackedGate

TLS_RENEWAL_CHECK_MINUTES = 12 * 60


@dataclass(frozen=True)
class TLSSettings:
    cert: Path
    key: Path
    key_password: str | None
    self_issued: bool  # serve --tls: the scheduler renews it (tls.py)


def run_server(services: Services, *, host: str | None, port: int | None, workers: int | None,
               tls: TLSSettings | None = None) -> None:
    """Serve; the caller has claimed the address first (claim_address), before anything else."""
    cfg = services.config.server
    listen_host = host or cfg.host
    listen_port = port or cfg.port
    _metrics_folder(services)

    def before_workers() -> None:
        # In the main process, before the workers start. Nothing here keeps running: the main
        # process forks replacement workers, and a fork while one of its threads is inside SQLite
        # would give the new worker SQLite's process-wide mutexes held (its first query would hang).
        from ..clock import utcnow
        from ..revocation import refresh_crls

        refresh_crls(services.config, services.store, services.authority, utcnow())
        services.store.close()  # the workers open their own connections

    def load_app(_target: str):
        # Runs in each worker process: every worker opens its own store connections, copies the
        # WAL into the database in a thread, and the first to take the scheduler's lock runs the
        # scheduler (a replacement for that worker takes the lock over when it starts).
        from .. import create_app
        from ..scheduler import start_scheduler
        from .access_log import AccessLog

        app = create_app(services.config, instance_path=services.paths.root)
        worker_services = app.extensions["ca_server"]
        if worker_services.store.kind == "sqlite":
            worker_services.store.checkpoint_in_background()
            Checkpointer(worker_services.store.path).start()
        extra_jobs = ()
        if tls is not None and tls.self_issued:
            extra_jobs = (("tls-renewal", lambda svc: _renew_tls(svc, listen_host), TLS_RENEWAL_CHECK_MINUTES),)
        start_scheduler(worker_services, extra_jobs)
        if cfg.access_log:
            app.wsgi_app = AccessLog(app.wsgi_app)
        # Over TLS the gate also records running requests, for the reaper's quiet-connection rule.
        gate_class = RequestGate if tls is None else TrackedGate
        app.wsgi_app = gate = gate_class(app.wsgi_app, threads=cfg.threads, max_bytes=cfg.max_request_bytes)
        ConnectionReaper(listen_port, cfg.header_timeout_seconds, cfg.body_timeout_seconds, gate).start()
        return app

    open_files = raise_open_file_limit()
    needed = (workers or cfg.workers) * cfg.max_connections + 256
    server = Granian(
        "ca_server:create_app",
        address=listen_host,
        port=listen_port,
        interface=Interfaces.WSGI,
        websockets=False,  # none here; left on, Granian says at every start that WSGI cannot have them
        workers=workers or cfg.workers,
        # The threads bound the work: RequestGate lets `threads` requests run at once per worker;
        # `body_threads` more only wait for request bodies (stalled_connections.py). Requests past
        # those wait their turn in Granian's queue, in memory.
        blocking_threads=cfg.threads + cfg.body_threads,
        # Granian's backpressure caps the *connections* a worker holds, not the requests it runs
        # (granian issue 789): sized to the thread count, a dozen silent sockets or idle keep-alive
        # connections took every slot and the server answered no one. Sized for connections, and
        # with the header timeout closing those that never send a request, a slot always frees.
        backpressure=cfg.max_connections,
        backlog=cfg.backlog,  # connections past max_connections wait here (the kernel caps it at somaxconn)
        # hyper's header read timeout: a connection that has not sent a whole request head this
        # long after it opened, or after its previous response (an idle keep-alive one), is closed.
        http1_settings=HTTP1Settings(header_read_timeout=cfg.header_timeout_seconds * 1000),
        ssl_cert=tls.cert if tls else None,
        ssl_key=tls.key if tls else None,
        ssl_key_password=tls.key_password if tls else None,
        ssl_protocol_min=SSLProtocols.tls12,  # appliances (CUCM, older Java) still speak TLS 1.2
        log_level=LogLevels.info,
        log_access=False,  # access_log.py writes it
        respawn_failed_workers=True,
        workers_kill_timeout=10,
    )
    # After Granian configured its own loggers (which drops the handlers it finds): ours go to stderr.
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s: %(message)s")
    log = logging.getLogger(__name__)
    logging.getLogger("_granian").addFilter(_no_thread_count_warning)
    log.info("open-file limit %d; %d worker(s) x %d connections, header timeout %d s; per worker %d threads run "
             "requests and %d only wait for request bodies", open_files, workers or cfg.workers, cfg.max_connections,
             cfg.header_timeout_seconds, cfg.threads, cfg.body_threads)
    log.info("store: %s", "SQLite " + str(services.paths.database) if services.store.kind == "sqlite"
             else f"PostgreSQL {redact(services.config.database.url)}")
    if open_files < needed:
        log.warning("the open-file limit (%d) is below what [server] max_connections needs (%d): past it, "
                    "new connections are refused; raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower "
                    "max_connections", open_files, needed)
    warning = address_warning(services.config.server.base_url, listen_host, listen_port, tls is not None)
    if warning:
        log.warning("%s", warning)
    server.on_startup(before_workers)
    reentrant_safe_signals(server)
    server.serve(target_loader=load_app)


def _no_thread_count_warning(record: logging.LogRecord) -> bool:
    """Granian warns at every start when a WSGI worker may run more threads than twice the cores
    ("36 Python threads ... seems quite high"). Ours are `threads` that run requests and
    `body_threads` that only wait, with the GIL released, for bodies that stall (stalled_connections.py):
    by design, so the warning would only send an operator looking for a mistake. The start line
    says what the threads are instead."""
    return "Python threads, which seems quite high" not in record.getMessage()


def reentrant_safe_signals(server) -> None:
    """Granian's main process wakes its loop from the signal handler with Event.set(), which takes
    the event's lock. A signal handler runs in the main thread between two bytecodes, and the main
    thread takes that same lock itself: inside the handler of a first signal (a second SIGTERM from
    make or systemd, two Ctrl-C) and inside its own Event.wait() in the serve loop. Either time
    Event.set() waited for a lock its own thread held: a server that never exits (the README
    test's `make run` twice). Here the handler only raises its flag and hands the wake-up to a
    short-lived thread, which takes the lock once the main thread has let go of it."""

    def handler(flag: str):
        def on_signal(*_args, **_kwargs) -> None:
            setattr(server, flag, True)
            threading.Thread(target=server.main_loop_interrupt.set, name="signal-wakeup", daemon=True).start()
        return on_signal

    server.signal_handler_interrupt = handler("interrupt_signal")
    server.signal_handler_reload = handler("reload_signal")


def claim_address(host: str, port: int) -> int:
    """Refuse, in words, an address another process holds; hold it against other ca-servers.

    Granian binds the port in each worker with SO_REUSEPORT (the kernel then spreads connections
    evenly over the workers). That option also lets a second server of the same user join a port
    the first holds, and the kernel hands it half the connections: another instance, another CA,
    a foreign trust anchor half the time. So first a bind without SO_REUSEPORT (it fails while
    anything listens there), then a lock per address that a second ca-server cannot take even when
    both start at the same instant. Returns the lock's descriptor: held open, the lock lasts as
    long as this process (and the workers it forks)."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lock_path = Path(tempfile.gettempdir()) / f"ca-server-{host.replace(':', '_')}-{port}.lock"
    fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise AddressUnavailableError(f"{address} is already in use by another ca-server; choose another port "
                                      "with --port or [server] port.", address) from None
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed connection's TIME_WAIT is no holder
            probe.bind((host, port))
    except OSError as exc:  # socket.gaierror included
        os.close(fd)
        if isinstance(exc, socket.gaierror):
            why = f"Cannot listen on {address}: {host!r} is not an address of this machine (choose one with --host or [server] host)."
        elif exc.errno == errno.EADDRINUSE:
            why = (f"{address} is already in use by another process (another ca-server, or anything else); choose "
                   "another port with --port or [server] port.")
        elif exc.errno == errno.EACCES:
            why = (f"Cannot listen on {address}: ports below 1024 need root or CAP_NET_BIND_SERVICE; choose another "
                   "port with --port or [server] port.")
        else:
            why = f"Cannot listen on {address}: {exc.strerror}; choose another address with --host/--port or [server] host/port."
        raise AddressUnavailableError(why, address) from None
    return fd


def address_warning(base_url: str, host: str, port: int, tls: bool) -> str | None:
    """A line when the server listens on a scheme, host or port that base_url does not name:
    clients follow the URLs written into certificates and handed out, not the address typed."""
    url = urlsplit(base_url)
    scheme = "https" if tls else "http"
    url_port = url.port or (443 if url.scheme == "https" else 80)
    loopback = {"127.0.0.1", "localhost", "::1"}
    host_differs = host not in ("0.0.0.0", "::", "") and (url.hostname or "") != host and not (
        host in loopback and url.hostname in loopback)
    if url.scheme == scheme and url_port == port and not host_differs:
        return None
    listening = f"{scheme}://{'[' + host + ']' if ':' in host else host}:{port}"
    return (f"listening on {listening} but [server] base_url is {base_url}: certificates, CRL/OCSP and e-mail links "
            f"name base_url (right behind a proxy that forwards it here; otherwise set base_url before init)")


def _metrics_folder(services: Services) -> None:
    """A fresh folder where the workers' counters (OCSP answers) meet, set before any worker
    imports prometheus_client; /metrics adds up every worker's, whichever worker is scraped."""
    parent = services.paths.root / "metrics"
    parent.mkdir(mode=0o700, exist_ok=True)
    for old in parent.iterdir():  # a folder per server process; those of servers gone are removed
        if not (old.name.isdigit() and _alive(int(old.name))):
            shutil.rmtree(old, ignore_errors=True)
    folder = parent / str(os.getpid())
    shutil.rmtree(folder, ignore_errors=True)  # left by an earlier process that had this pid
    folder.mkdir(mode=0o700)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _renew_tls(services: Services, listen_host: str) -> None:
    from ..clock import utcnow
    from .tls import renew_and_reload

    if renew_and_reload(services.config, services.store, services.authority, services.paths, listen_host, utcnow()):
        logging.getLogger(__name__).info("renewed the server's TLS certificate; workers restart with it")


def raise_open_file_limit() -> int:
    """Raise this process's open-file soft limit to its hard limit (each connection is a file
    descriptor; many systems start services at a soft limit of 1024) and return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1_048_576)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep the soft limit we have; the warning above says what that means
    return soft
