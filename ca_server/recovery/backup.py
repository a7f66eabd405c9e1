"""Backups (issue 27): one file holding a consistent snapshot of the store, the CA certificates and
encrypted key files, config.toml (no secrets live in it) and a manifest (SHA-256 of every file, row
counts per table, the audit position it covers); encrypted to an age recipient when [backup]
recipient names one, so the backup host holds no secret (Debian's `age -d -i KEY` opens it too).

The store snapshot is always SQLite: SQLite's online backup of a running instance, or on
PostgreSQL every table read in one repeatable-read transaction. A restore makes a new instance
folder that serves the same CA; put it back on PostgreSQL with `ca-server db copy`. CRL numbers
stay above every one published before (they start at the time in milliseconds, store/revocation.py),
and serials are random, so a restored CA reuses neither."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyrage

from ..ca.authority import InstancePaths, set_config_value
from ..clock import to_text
from ..config import Config
from ..display import moment_text
from ..errors import CAError
from ..store import CaStore
from ..store.snapshot import snapshot_problem, upgrade, write_snapshot

FORMAT = "ca-server-backup/1"
AGE_HEADER = b"age-encryption.org/v1"
STORE_NAME = "store/ca.sqlite3"
# Not in a backup: the store files (the snapshot stands for them), what a server makes at run time,
# the password shown once at init, and backups themselves.
SKIP_NAMES = {"initial-admin-password", "metrics", "backups", "serve.log", "scheduler.lock", "issuance-log"}
SKIP_SUFFIXES = (".sqlite3", ".sqlite3-wal", ".sqlite3-shm", ".lock", ".write-queue", ".migrate-lock", ".log")


class BackupError(CAError):
    code = "backup_invalid"
    status = 422


@dataclass
class Checked:
    """A backup that passed every check, unpacked into a temporary folder (files are streamed, so
    a store of millions of certificates never sits in memory); `close()` removes it."""
    manifest: dict
    members: dict[str, Path]  # name -> the unpacked file, every file of the backup (manifest.json aside)
    folder: tempfile.TemporaryDirectory

    def close(self) -> None:
        self.folder.cleanup()

    def __enter__(self) -> Checked:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def backup_dir(config: Config, paths: InstancePaths) -> Path:
    return Path(config.backup.dir).expanduser() if config.backup.dir else paths.root / "backups"


def run(config: Config, paths: InstancePaths, store: CaStore, now: dt.datetime, *, to_dir: Path | None = None,
        actor: str = "scheduler") -> Path:
    """Take a backup (into `to_dir`, else [backup] dir), audit it, keep the newest [backup] keep."""
    folder = to_dir or backup_dir(config, paths)
    path = take(paths, store, now, folder, config.backup.recipient)
    store.append_audit(at=now, action="backup", actor=actor, client=None, detail={
        "file": str(path), "bytes": path.stat().st_size, "encrypted": bool(config.backup.recipient)})
    if to_dir is None:
        prune(folder, config.backup.keep)
    return path


def stale_warning(config: Config, paths: InstancePaths, store: CaStore, now: dt.datetime) -> str | None:
    """A sentence for the dashboard when scheduled backups are on and none was written within two
    intervals (the scheduler is not running, the disk is full, the folder is gone...)."""
    hours = config.backup.interval_hours
    if not hours:
        return None
    when = store.last_action_at("backup")
    if when is not None and now - when <= dt.timedelta(hours=2 * hours):
        return None
    since = f"the last one was written {moment_text(when)}" if when else "none has been written yet"
    return (f"Backups are due every {hours} hours, but {since}: check the server's log for 'backup', and that "
            f"{backup_dir(config, paths)} is writable.")


def take(paths: InstancePaths, store: CaStore, now: dt.datetime, to_dir: Path, recipient: str = "") -> Path:
    """Write one backup file into `to_dir` and return its path (mode 0600, written whole or not at all)."""
    to_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stamp = now.strftime("%Y%m%dT%H%M%S") + f"{now.microsecond // 1000:03d}Z"
    target = to_dir / f"ca-backup-{stamp}.tar{'.age' if recipient else ''}"
    with tempfile.TemporaryDirectory(dir=to_dir, prefix=".backup-") as tmp:
        snapshot = Path(tmp) / "ca.sqlite3"
        counts = write_snapshot(store, snapshot)
        rows, position = counts["rows"], counts["audit_position"]
        files = {STORE_NAME: snapshot, **_instance_files(paths.root)}
        digests = {name: _sha256(path) for name, path in sorted(files.items())}
        root_pem = files.get("ca/root.pem")
        manifest = {"format": FORMAT, "created_at": to_text(now),
                    "root_sha256": hashlib.sha256(root_pem.read_bytes()).hexdigest() if root_pem else None,
                    "source": store.kind, "audit_position": position, "rows": rows,
                    "log_position": rows.get("log_entries", 0), "files": digests}
        plain = Path(tmp) / "backup.tar"
        with tarfile.open(plain, "w") as tar:
            data = json.dumps(manifest, indent=1).encode()
            tar.addfile(_info("manifest.json", len(data), now), io.BytesIO(data))
            for name, path in sorted(files.items()):
                with open(path, "rb") as fh:
                    tar.addfile(_info(name, path.stat().st_size, now), fh)
        snapshot.unlink()
        partial = Path(tmp) / "out"
        if recipient:
            pyrage.encrypt_file(str(plain), str(partial), [_recipient(recipient)])
        else:
            plain.rename(partial)
        os.chmod(partial, 0o600)
        os.replace(partial, target)
    return target


def _info(name: str, size: int, now: dt.datetime) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(now.timestamp())
    return info


def _sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def check(path: Path, identity_file: Path | None = None) -> Checked:
    """Open and check a backup without restoring it: decrypt (when age-encrypted), unpack the tar
    into a temporary folder, compare every file with the manifest, check the store snapshot's
    integrity and row counts. Anything wrong raises BackupError saying what. Close the result."""
    try:
        with open(path, "rb") as fh:
            encrypted = fh.read(len(AGE_HEADER)) == AGE_HEADER
    except OSError as exc:
        raise BackupError(f"Cannot read {path}: {exc.strerror}.") from None
    folder = tempfile.TemporaryDirectory(prefix="ca-restore-", dir=path.parent if os.access(path.parent, os.W_OK)
                                         else None)
    try:
        plain = path
        if encrypted:
            plain = Path(folder.name) / "backup.tar"
            _decrypt(path, identity_file, plain)
        members = _unpack(path, plain, Path(folder.name) / "files")
        if plain != path:
            plain.unlink()
        manifest = _manifest(path, members)
        problem = snapshot_problem(members[STORE_NAME], manifest["rows"])
        if problem:
            raise BackupError(f"The store in {path.name} cannot be used: {problem}.")
        return Checked(manifest, members, folder)
    except BaseException:
        folder.cleanup()
        raise


def _decrypt(path: Path, identity_file: Path | None, out: Path) -> None:
    if identity_file is None:
        raise BackupError(f"{path.name} is encrypted with age: give the identity (private key) file with --identity.")
    try:
        identities = [pyrage.x25519.Identity.from_str(line.strip()) for line in
                      identity_file.read_text().splitlines() if line.strip().startswith("AGE-SECRET-KEY-")]
    except (OSError, pyrage.IdentityError, ValueError) as exc:
        raise BackupError(f"{identity_file} is not an age identity file: {exc}.") from None
    if not identities:
        raise BackupError(f"{identity_file} holds no age identity (a line AGE-SECRET-KEY-1...).")
    try:
        pyrage.decrypt_file(str(path), str(out), identities)
    except (pyrage.DecryptError, OSError) as exc:  # decrypting a file reports damage as OSError
        raise BackupError(f"{path.name} does not decrypt with {identity_file.name}: the wrong key, or the "
                          f"file is damaged or cut short ({exc}).") from None


def _manifest(path: Path, members: dict[str, Path]) -> dict:
    try:
        manifest = json.loads(members.pop("manifest.json").read_bytes())
    except (KeyError, ValueError):
        raise BackupError(f"{path.name} has no readable manifest.json: it is not a ca-server backup or is "
                          "damaged.") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{path.name} is a backup of format {manifest.get('format')!r}; this version reads {FORMAT}.")
    for name, digest in manifest["files"].items():
        if name not in members:
            raise BackupError(f"{path.name} lacks {name}, which its manifest lists: the file is damaged.")
        if _sha256(members[name]) != digest:
            raise BackupError(f"{name} in {path.name} does not match its SHA-256 in the manifest: the file is damaged.")
    extra = set(members) - set(manifest["files"])
    if extra:
        raise BackupError(f"{path.name} holds files its manifest does not list ({', '.join(sorted(extra))}).")
    return manifest


@contextlib.contextmanager
def new_instance_folder(target: Path) -> Iterator[None]:
    """All or nothing: a restore that fails part-way (a damaged log to replay, a full disk, a
    member outside the folder) leaves no half-made instance that looks like a CA: the folder is
    removed again (emptied, when it was there and empty before)."""
    _must_be_new(target)
    existed = target.exists()
    try:
        yield
    except BaseException as exc:
        if existed:  # the operator's empty folder: emptied, kept
            for child in target.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        else:
            shutil.rmtree(target, ignore_errors=True)
        if isinstance(exc, CAError):
            exc.message = f"{exc.message} Nothing was restored: {target} is {'empty' if existed else 'gone'} again."
            exc.args = (exc.message,)
        raise


def _must_be_new(target: Path) -> None:
    if target.exists() and any(target.iterdir()):
        raise BackupError(f"{target} exists and is not empty: restore into a new folder, so nothing is overwritten.")


def restore(checked: Checked, target: Path) -> bool:
    """Write a checked backup out as a new instance folder `target` (absent or empty). The store
    is SQLite: a backup of a PostgreSQL instance has its [database] url cleared (True returned)."""
    _must_be_new(target)
    target.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name, source in checked.members.items():
        out = target / ("ca.sqlite3" if name == STORE_NAME else name)
        if target.resolve() not in out.resolve().parents:
            raise BackupError(f"The backup names a file outside the instance folder ({name}).")
        out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh, open(source, "rb") as src:
            shutil.copyfileobj(src, fh, 1 << 20)
    upgrade(target / "ca.sqlite3")
    if checked.manifest.get("source") == "sqlite" or not (target / "config.toml").exists():
        return False
    set_config_value(target / "config.toml", "database", "url", "")
    return True


def prune(to_dir: Path, keep: int) -> list[Path]:
    """Remove all but the newest `keep` backups in `to_dir`; returns what was removed."""
    backups = sorted(to_dir.glob("ca-backup-*.tar*"))
    removed = backups[:-keep] if keep > 0 else []
    for old in removed:
        old.unlink(missing_ok=True)
    return removed


def newest(to_dir: Path) -> Path | None:
    backups = sorted(to_dir.glob("ca-backup-*.tar*"))
    return backups[-1] if backups else None


def _recipient(text: str):
    try:
        return pyrage.x25519.Recipient.from_str(text.strip())
    except (pyrage.RecipientError, ValueError):
        raise BackupError(f"{text!r} is not an age public key (age1...): make one with age-keygen.") from None


def _instance_files(root: Path) -> dict[str, Path]:
    files = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if not path.is_file() or relative.parts[0] in SKIP_NAMES or path.name in SKIP_NAMES \
                or path.name.endswith(SKIP_SUFFIXES) or path.name.startswith("."):
            continue
        files[relative.as_posix()] = path
    return files


def _unpack(path: Path, tar_file: Path, into: Path) -> dict[str, Path]:
    """Every member of the tar as a file under `into` (names checked, content streamed)."""
    members = {}
    into.mkdir(mode=0o700)
    try:
        with tarfile.open(tar_file, mode="r:") as tar:
            for n, member in enumerate(tar):
                if not member.isfile():
                    raise BackupError(f"{path.name} holds {member.name!r}, which is not a plain file.")
                out = into / str(n)
                handle = tar.extractfile(member)
                fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    if handle is not None:
                        shutil.copyfileobj(handle, fh, 1 << 20)
                if out.stat().st_size != member.size:
                    raise EOFError("a member is cut short")
                members[member.name] = out
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise BackupError(f"{path.name} is not a whole backup (a tar file): damaged or cut short ({exc}).") from None
    return members
