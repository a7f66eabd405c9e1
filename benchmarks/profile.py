"""Where a path's CPU goes under load (issue 29): the server runs as `make bench` runs it (`serve`,
two workers), a client loads one path, and py-spy samples every worker meanwhile.

    python -m benchmarks.profile ocsp|issue|acme [SECONDS] [--all-threads]

Writes `benchmarks/profile-PATH.txt`, the samples as collapsed stacks (what `flamegraph.pl`,
inferno or speedscope.app draw as a flame graph), and prints the functions with the most
samples, by their own time and with what they call. By default only the thread holding the GIL is
sampled (`py-spy --gil`): the Python that costs CPU; `--all-threads` samples every thread that is
not idle, waits included. Not part of `make bench` (py-spy slows what it samples)."""

from __future__ import annotations

import collections
import contextlib
import re
import shutil
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


def profile(path: str, seconds: float, gil: bool) -> Path:
    out = HERE / f"profile-{path}.txt"
    with tempfile.TemporaryDirectory(prefix="ca-profile-") as tmp:
        folder = Path(tmp)
        if path == "acme":
            with acme.servers(folder, pebble=False) as ((ours, directory, verify), _, tokens, _root):
                acme.run_orders(directory, verify, "warm-", 20, 4, tokens, ours)
                orders = max(20, int(seconds * 60))  # more than `seconds` take at ~50 orders/s
                load = load_in_background(lambda: acme.run_orders(directory, verify, "p-", orders, 4, tokens, ours))
                record(ours, seconds, out, gil)
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
            record(server, seconds, out, gil)
            load.join()
        finally:
            server.stop()
    return out


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    if not args or args[0] not in ("ocsp", "issue", "acme"):
        print(__doc__, file=sys.stderr)
        return 2
    if not (shutil.which("py-spy") or Path(sys.executable).with_name("py-spy").exists()):
        print("py-spy is not installed: pip install py-spy (the test extra has it)", file=sys.stderr)
        return 1
    out = profile(args[0], float(args[1]) if len(args) > 1 else 8, gil="--all-threads" not in argv)
    print(table(out.read_text()))
    print(f"\ncollapsed stacks: {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main(sys.argv[1:]))
