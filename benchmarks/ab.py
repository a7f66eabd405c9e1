"""Two builds side by side (issue 29): this tree and another checkout, both serving at once, their
phases alternating, each figure the median of its rounds. Server CPU per unit of work, since the
client and the servers share this machine's cores and its speed drifts within minutes.

    git worktree add /tmp/base <revision>
    python -m benchmarks.ab /tmp/base acme|issue|ocsp [ROUNDS]

The other build's servers start with PYTHONPATH at its tree *and* from its tree: `python -m` puts
the working directory first on sys.path, so a server started from this repository runs this
repository's code whatever PYTHONPATH says (three A/Bs on 2026-12-07 compared this tree with
itself that way, and showed "no change").

The ACME A/B makes each build's instance with that build's own code (a subprocess in its tree),
so a build with a newer schema is compared with one that never saw it. The issuance and OCSP
A/Bs still make both instances here, with this tree's code: between builds whose schemas differ,
run those from the older tree."""

from __future__ import annotations

import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from . import acme, throughput
from . import ocsp as ocsp_bench
from .common import free_port, make_csrs


@contextlib.contextmanager
def other_build(tree: Path) -> Iterator[None]:
    """Processes started inside run the code of `tree` (a checkout of this repository)."""
    cwd, path = os.getcwd(), os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = str(tree)
    os.chdir(tree)
    try:
        yield
    finally:
        os.chdir(cwd)
        if path is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = path


def _builds(tree: Path, start) -> dict:
    """{"this": start(), "other": start() within other_build(tree)}."""
    this = start()
    with other_build(tree):
        other = start()
    return {"this": this, "other": other}


def _report(runs: dict[str, list[float]], unit: str, label: str) -> dict:
    medians = {name: statistics.median(values) for name, values in runs.items()}
    print(f"{label}: this {medians['this']:.3f} {unit}, other {medians['other']:.3f} {unit}, "
          f"this/other {medians['this'] / medians['other']:.3f} (rounds: {runs})", flush=True)
    return {"medians": medians, "rounds": runs, "ratio": medians["this"] / medians["other"]}


def make_instance_by_this_build(root: Path) -> Path:
    """throughput.make_instance, run by the code of the working directory's tree (inside
    other_build: the other build's), so the instance has that build's schema."""
    subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                    "from benchmarks.throughput import make_instance; make_instance(Path(sys.argv[1]))", str(root)],
                   check=True)
    return root


def ab_acme(tree: Path, rounds: int, orders: int = 150) -> dict:
    with contextlib.ExitStack() as stack:
        def start():
            return stack.enter_context(acme.servers(Path(stack.enter_context(tempfile.TemporaryDirectory())),
                                                    pebble=False, make=make_instance_by_this_build))
        builds = _builds(tree, start)
        runs: dict[str, list[float]] = {name: [] for name in builds}
        for r in range(rounds):
            for name, ((server, directory, root_pem), _peer, tokens, _root) in builds.items():
                out = acme.run_orders(directory, root_pem, f"{name}{r}-", orders, 4, tokens, server)
                if out["errors"]:
                    raise RuntimeError(f"{name}: {out['errors']} failed orders ({out.get('first_error')})")
                runs[name].append(out["cpu_ms_per_order"])
        return _report(runs, "ms CPU/order", "ACME")


def ab_issue(tree: Path, rounds: int, seconds: float = 4) -> dict:
    csrs = make_csrs(2000)
    folder = Path(tempfile.mkdtemp(prefix="ca-bench-ab-"))
    made = iter(("this", "other"))

    def start():
        root = throughput.make_instance(folder / next(made))
        token, bodies = throughput.api_load(root, csrs, "bench")
        port = free_port()
        return throughput.start_ca_server(root, port), f"http://127.0.0.1:{port}/api/v1/certificates", bodies, token

    builds = _builds(tree, start)
    out = {}
    try:
        for c in (4, 16):
            runs: dict[str, list[float]] = {name: [] for name in builds}
            for _ in range(rounds):
                for name, (server, url, bodies, token) in builds.items():
                    phase = throughput.http_phase(server, url, bodies, {"Content-Type": "application/json",
                                                                         "Authorization": f"Bearer {token}"}, c, seconds)
                    if phase["errors"]:
                        raise RuntimeError(f"{name}: {phase['errors']} error answers")
                    runs[name].append(phase["cpu_ms"])
            out[f"c={c}"] = _report(runs, "ms CPU/cert", f"issuance c={c}")
    finally:
        for server, *_ in builds.values():
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return out


def ab_ocsp(tree: Path, rounds: int, seconds: int = 3) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="ca-bench-ab-"))
    script = folder / "post.lua"
    script.write_text(ocsp_bench.POST_SCRIPT)
    made = iter(("this", "other"))

    def start():
        name = next(made)
        root = throughput.make_instance(folder / name)
        body = folder / f"{name}.der"
        body.write_bytes(throughput.ocsp_request_for_new_leaf(root)[1])
        port = free_port()
        return throughput.start_ca_server(root, port), f"http://127.0.0.1:{port}/ocsp", body

    builds = _builds(tree, start)
    server, url, body = builds["this"]
    answer = urllib.request.urlopen(urllib.request.Request(  # noqa: S310 - our own server
        url, data=body.read_bytes(), headers={"Content-Type": "application/ocsp-request"}), timeout=10).read()
    floor_port = free_port()
    builds["floor"] = (ocsp_bench.start_floor(folder, answer, floor_port), f"http://127.0.0.1:{floor_port}/", body)
    out = {}
    try:
        for c in (4, 16):
            runs: dict[str, list[float]] = {name: [] for name in builds}
            for _ in range(rounds):
                for name, (srv, target, data) in builds.items():
                    phase = ocsp_bench.phase(srv, target, script, data, c, seconds)
                    if phase["errors"]:
                        raise RuntimeError(f"{name}: {phase['errors']} errors")
                    runs[name].append(phase["cpu_us"])
            floor = statistics.median(runs.pop("floor"))
            out[f"c={c}"] = _report(runs, "us CPU/answer", f"OCSP POST c={c} (floor {floor:.1f} us)")
            out[f"c={c}"]["floor"] = floor
    finally:
        for srv, *_ in builds.values():
            srv.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return out


PATHS = {"acme": ab_acme, "issue": ab_issue, "ocsp": ab_ocsp}


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[1] not in PATHS or not (Path(argv[0]) / "ca_server").is_dir():
        print(__doc__, file=sys.stderr)
        return 2
    PATHS[argv[1]](Path(argv[0]).resolve(), int(argv[2]) if len(argv) > 2 else 5)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
