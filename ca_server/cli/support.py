"""What every command shares: finding the instance, opening services, reporting domain errors."""

from __future__ import annotations

import functools
import getpass
from pathlib import Path

import click

from ..ca.authority import InstancePaths, default_instance_path, require_ca
from ..config import load_config
from ..errors import CAError, StoreUnavailableError
from ..services import Services, open_services


def operator() -> str:
    """Who ran the command, for the audit log: "cli:" and the operating-system user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no name for this uid (a container)
        return "cli:unknown"


def instance_path() -> Path:
    """--instance of the `ca-server` group, else $CA_SERVER_INSTANCE, else ./instance."""
    root = click.get_current_context().find_root()
    path = root.params.get("instance") if root.params else None
    return Path(path).resolve() if path else default_instance_path()


def cli_services() -> Services:
    """The instance's services; a folder without a CA is refused first (`list` gave a SQLite
    traceback there, `backup` made the folder, `token list` an empty store)."""
    path = instance_path()
    paths = InstancePaths(path)
    config = load_config(paths.config) if paths.config.exists() else None  # a bad key is named first
    require_ca(paths)
    return open_services(path, config)


def domain_errors(fn):
    """CAError -> click's clean "Error: ..." and exit status 1; policy refusals list each reason; an
    OSError about a file or folder names it, without a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except StoreUnavailableError as exc:  # the server's "try again in 5 seconds" tells an operator nothing
            raise click.ClickException(f"The certificate database cannot be reached: {unavailable_reason(exc)} "
                                       "(check [database] url in config.toml and that the database runs).") from None
        except CAError as exc:
            lines = [exc.message]
            violations = getattr(exc, "violations", None) or []
            if len(violations) > 1:
                lines = ["The request was refused:"] + [f"  - [{v.code}] {v.message}" for v in violations]
            elif violations:
                lines = [f"[{violations[0].code}] {exc.message}"]
            raise click.ClickException("\n".join(lines)) from None
        except OSError as exc:  # a folder that cannot be made, a disk that is full: say which, no traceback
            if exc.filename is None:
                raise
            raise click.ClickException(f"Cannot use {exc.filename}: {exc.strerror or exc}.") from None

    return wrapper


def unavailable_reason(exc: StoreUnavailableError) -> str:
    """The driver's words for why the database could not be reached, on one line."""
    return " ".join(line.strip() for line in str(exc.__cause__ or exc).splitlines() if line.strip())
