"""Where a path's CPU goes under load (issue 29): the server runs as `make bench` runs it (`serve`,
two workers), a client loads one path, and py-spy samples every worker meanwhile.

    python -m benchmarks.profile ocsp|issue|acme [SECONDS] [--all-threads | --native]

Writes `benchmarks/profile-PATH.txt`, the samples as collapsed stacks (what `flamegraph.pl`,
inferno or speedscope.app draw as a flame graph), and prints the functions with the most
samples, by their own time and with what they call. By default only the thread holding the GIL is
sampled (`py-spy --gil`): the Python that costs CPU; `--all-threads` samples every thread that is
not idle, waits included. Not part of `make bench` (py-spy slows what it samples).

`--native` samples with Linux `perf` instead (Debian's linux-perf) and writes
`benchmarks/profile-PATH-native.txt`: the workers' CPU by library (the interpreter, the kernel,
cryptography's Rust, SQLite, Granian) and the kernel's share by system call. py-spy sees only
Python frames; in a run of 2026-12-07 (issue 29) a third of the issuance CPU was the kernel's
(scheduling, fdatasync, file I/O), which no Python profile shows."""

from __future__ import annotations

import collections
import contextlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from . import acme, ocsp
from .common import free_port, make_csrs, run_wrk
from .throughput import api_load, make_instance, ocsp_request_for_new_leaf, start_ca_server

HERE = Path(__file__).resolve().parent


def workers(server) -> list[str]:
    return subprocess.run(["pgrep", "-P", str(server.proc.pid)], capture_output=True, text=True).stdout.split()


def record(server, seconds: float, out: Path, gil: bool) -> None:
    """py-spy on every worker for `seconds`; their stacks into `out`."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    parts = []
    procs = []
    for pid in workers(server):
        part = out.with_name(f"{out.name}.{pid}")
        parts.append(part)
        procs.append(subprocess.Popen([spy, "record", "-p", pid, "-d", str(int(seconds)), "-r", "500", "-f", "raw",
                                       "-o", str(part), "--nonblocking", *(["--gil"] if gil else [])],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    for proc in procs:
        proc.wait()
    out.write_text("".join(p.read_text() for p in parts if p.exists()))
    for part in parts:
        part.unlink(missing_ok=True)


# Kernel entry points perf's call graphs pass through: the system calls and the scheduler.
KERNEL_PATHS = ("schedule", "__x64_sys_futex", "__x64_sys_fdatasync", "__x64_sys_fsync", "__x64_sys_pwrite64",
                "__x64_sys_pread64", "__x64_sys_epoll_wait", "__x64_sys_sched_yield", "do_writev", "ksys_write",
                "ksys_read", "__x64_sys_sendto", "__x64_sys_recvfrom", "__x64_sys_connect", "__do_sys_flock",
                "__x64_sys_fcntl", "__x64_sys_openat", "__do_sys_newfstatat", "__x64_sys_close", "exc_page_fault")


def record_native(server, seconds: float, out: Path) -> None:
    """perf on every worker for `seconds`; the CPU by library and the kernel's by path into `out`."""
    data = out.with_suffix(".data")
    proc = subprocess.Popen(["perf", "record", "-g", "-F", "999", "-o", str(data), "-p", ",".join(workers(server))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(seconds)
    proc.send_signal(signal.SIGINT)
    _, errors = proc.communicate()
    if not data.exists():  # e.g. kernel.perf_event_paranoid forbids it: say so, not an empty table
        raise SystemExit(f"perf record wrote nothing: {errors.strip()}")
    try:
        by_library = _perf_report(data, "--no-children", "--sort", "dso")
        by_path = _perf_report(data, "--children", "--sort", "sym")
    finally:
        data.unlink(missing_ok=True)
    lines = ["CPU by library (share of the workers' samples):"]
    lines += [f"{share:5.1f}%  {name}" for share, name in by_library if share >= 0.1]
    lines += ["", "kernel paths (inclusive share):"]
    lines += [f"{share:5.1f}%  {name.removeprefix('[k] ')}" for share, name in by_path
              if name.removeprefix("[k] ") in KERNEL_PATHS]
    out.write_text("\n".join(lines) + "\n")


def _perf_report(data: Path, *sort: str) -> list[tuple[float, str]]:
    return perf_rows(subprocess.run(["perf", "report", "-i", str(data), *sort, "--stdio", "-g", "none"],
                                    capture_output=True, text=True).stdout)


def perf_rows(text: str) -> list[tuple[float, str]]:
    """(share, name) of each row of `perf report --stdio`: its first column (with --children,
    the inclusive share) and what the row names."""
    rows = []
    for line in text.splitlines():
        found = re.match(r"\s*([\d.]+)%\s+(?:[\d.]+%\s+)?(.+?)\s*$", line)
        if found and not line.lstrip().startswith("#"):
            rows.append((float(found[1]), found[2]))
    return rows


def table(collapsed: str, rows: int = 25) -> str:
    """The functions with the most samples: by their own time, then with their callees."""
    own, inclusive, total = collections.Counter(), collections.Counter(), 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for frame in set(frames):
            inclusive[frame] += int(count)
    out = [f"{total} samples", "", "own time:"]
    out += [f"{100 * n / total:5.1f}%  {name}" for name, n in own.most_common(rows)]
    out += ["", "with what they call:"]
    out += [f"{100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(rows * 2)]
    return "\n".join(out)


def load_in_background(action) -> threading.Thread:
    thread = threading.Thread(target=action, daemon=True)
    thread.start()
    time.sleep(1)  # the load has begun before the sampling does
    return thread


def profile(path: str, seconds: float, gil: bool, native: bool = False) -> Path:
    out = HERE / f"profile-{path}{'-native' if native else ''}.txt"

    def sample(server) -> None:
        if native:
            record_native(server, seconds, out)
        else:
            record(server, seconds, out, gil)

    with tempfile.TemporaryDirectory(prefix="ca-profile-") as tmp:
        folder = Path(tmp)
        if path == "acme":
            with acme.servers(folder, pebble=False) as ((ours, directory, verify), _, tokens, _root):
                acme.run_orders(directory, verify, "warm-", 20, 4, tokens, ours)
                orders = max(20, int(seconds * 60))  # more than `seconds` take at ~50 orders/s
                load = load_in_background(lambda: acme.run_orders(directory, verify, "p-", orders, 4, tokens, ours))
                sample(ours)
                load.join()
            return out
        root = make_instance(folder / "instance")
        port = free_port()
        server = start_ca_server(root, port)
        try:
            if path == "ocsp":
                body, script = folder / "request.der", folder / "post.lua"
                body.write_bytes(ocsp_request_for_new_leaf(root, "profile")[1])
                script.write_text(ocsp.POST_SCRIPT)
                url = f"http://127.0.0.1:{port}/ocsp"
                ocsp.wrk(url, script, body, 4, 2)
                load = load_in_background(lambda: ocsp.wrk(url, script, body, 4, int(seconds) + 2))
            else:
                token, bodies = api_load(root, make_csrs(2000, "profile"), "profile")
                url = f"http://127.0.0.1:{port}/api/v1/certificates"
                headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
                run_wrk(url, bodies, concurrency=4, seconds=2, headers=headers)
                load = load_in_background(lambda: run_wrk(url, bodies, concurrency=4, seconds=seconds + 2,
                                                          headers=headers))
            sample(server)
            load.join()
        finally:
            server.stop()
    return out


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    if not args or args[0] not in ("ocsp", "issue", "acme"):
        print(__doc__, file=sys.stderr)
        return 2
    native = "--native" in argv
    if native and not shutil.which("perf"):
        print("perf is not installed: apt-get install linux-perf", file=sys.stderr)
        return 1
    if not native and not (shutil.which("py-spy") or Path(sys.executable).with_name("py-spy").exists()):
        print("py-spy is not installed: pip install py-spy (the test extra has it)", file=sys.stderr)
        return 1
    out = profile(args[0], float(args[1]) if len(args) > 1 else 8, gil="--all-threads" not in argv, native=native)
    print(out.read_text() if native else table(out.read_text()))
    print(f"\n{'the table' if native else 'collapsed stacks'}: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main(sys.argv[1:]))
