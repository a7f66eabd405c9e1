"""A throwaway PostgreSQL server for tests: initdb + pg_ctl in a temporary folder, listening on a
Unix socket only, run as the `postgres` system user (PostgreSQL refuses to run as root)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise RuntimeError(f"PostgreSQL's {name} is missing: `make test` installs Debian's postgresql")
    return found[-1]


class PgServer:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ca-server-pg-"))
        self.data = self.root / "data"
        self.socket_dir = self.root
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        if os.geteuid() == 0:
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run([_bin("initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                   "--locale=C.UTF-8", "--no-sync"])
        self.start()

    def _run(self, args: list[str], check: bool = True) -> subprocess.CompletedProcess:
        kwargs = {"user": "postgres"} if os.geteuid() == 0 else {}
        return subprocess.run(args, check=check, capture_output=True, text=True, cwd=self.root, **kwargs)

    def start(self) -> None:
        options = (f"-c listen_addresses='' -c unix_socket_directories='{self.socket_dir}' -c max_connections=300"
                   " -c fsync=on -c shared_buffers=64MB")
        result = self._run([_bin("pg_ctl"), "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
                            "-w", "-t", "30", "start"], check=False)
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {result.stderr}\n{(self.root / 'log').read_text()}")

    def stop(self, mode: str = "fast") -> None:
        self._run([_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"], check=False)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@/{database}?host={self.socket_dir}"

    def new_database(self, template: str | None = None) -> str:
        """A fresh database (empty, or a copy of `template`); its URL."""
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        return self.url(name)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
