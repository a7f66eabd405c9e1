"""Where an ACME request's CPU goes (issue 29), per request rather than per order:

1. server CPU per request of each kind, ca-server (`serve --tls`) and Pebble in the same run,
   sequential requests on one keep-alive TLS connection (no contention between clients);
2. ca-server's whole WSGI stack (RequestGate, AccessLog, HotPaths, the ACME door) called in
   this process: the thread's CPU per POST-as-GET of an order, no server and no network;
3. a bare Granian WSGI app over TLS answering a same-size POST with a constant: what the server
   alone costs per request.

    python -m benchmarks.acme_requests [REQUESTS]   (not part of `make bench`)

On 2026-12-08: a POST-as-GET of an order cost 540-700 us through `serve --tls` against Pebble's
300-430; (2) was 259-284 us (the P-256 signature check ~75 of it, SQLite ~45) and (3) 100-167:
(2) + (3) already costs what Pebble's whole answer does."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import requests

from .acme import Client, localhost_tls, servers
from .common import free_port
from .throughput import PASSPHRASE, Server, make_instance

ORDER_BODY = (b'{"status": "pending", "expires": "2026-12-09T00:00:00Z", "identifiers": [{"type": "dns", "value":'
              b' "x.example.test"}], "authorizations": ["https://localhost/acme/authz/abcdefabcdef"],'
              b' "finalize": "https://localhost/acme/order/abcdef/finalize"}')
FLOOR_APP = f"""
BODY = {ORDER_BODY!r}
def app(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(BODY))),
                              ("Replay-Nonce", "n" * 43)])
    return [BODY]
"""


def per_request(server: Server, action, count: int) -> float:
    """Server CPU in microseconds per call of `action`."""
    before = server.cpu()
    for _ in range(count):
        action()
    return (server.cpu() - before) / count * 1e6


def through_servers(folder: Path, count: int) -> dict:
    out = {}
    with servers(folder) as ((ours, directory, verify), peer, _tokens, _root):
        for name, server, url, ca in (("ca-server", ours, directory, verify), ("pebble", peer[0], peer[1], peer[2])):
            client = Client(url, ca)
            client.kid = client.post(client.dir["newAccount"], {"termsOfServiceAgreed": True}).headers["Location"]
            order = client.post(client.dir["newOrder"], {"identifiers": [{"type": "dns", "value": "x.example.test"}]})
            order_url, authz_url = order.headers["Location"], order.json()["authorizations"][0]
            per_request(server, lambda c=client, u=order_url: c.post(u, None), 20)  # warm

            def new_client(u=url, c=ca) -> None:
                fresh = Client(u, c)
                fresh.post(fresh.dir["newAccount"], {"termsOfServiceAgreed": True})

            out[name] = {
                "head_new_nonce_us": per_request(server, lambda c=client: c.session.head(c.dir["newNonce"], timeout=30),
                                                 count),
                "post_as_get_order_us": per_request(server, lambda c=client, u=order_url: c.post(u, None), count),
                "post_as_get_authz_us": per_request(server, lambda c=client, u=authz_url: c.post(u, None), count),
                "new_client_and_account_us": per_request(server, new_client, max(count // 5, 10)),
            }
    return out


def in_process(folder: Path, count: int) -> float:
    """Thread CPU per POST-as-GET of an order through ca-server's whole WSGI stack, in process."""
    from werkzeug.test import EnvironBuilder

    from ca_server import create_app
    from ca_server.config import load_config
    from ca_server.server.access_log import AccessLog
    from ca_server.server.stalled_connections import RequestGate
    from tests.acme_client import ScriptedAcme

    os.environ["CA_SERVER_KEY_PASSPHRASE"] = PASSPHRASE
    root = make_instance(folder / "in-process")
    app = create_app(load_config(root / "config.toml"), instance_path=root)
    base = "http://127.0.0.1:5000"
    acme = ScriptedAcme(app.test_client(), base)
    acme.new_account()
    order_url = acme.new_order("x.example.test").headers["Location"]
    with open(os.devnull, "w") as devnull:
        stack = RequestGate(AccessLog(app.wsgi_app, stream=devnull), threads=4, max_bytes=1 << 20)
        nonce = [acme.nonce()]
        spent = 0.0
        for _ in range(count):
            body = json.dumps(acme.jws(order_url, None, nonce=nonce[0]))
            environ = EnvironBuilder(path=acme.path(order_url), method="POST", data=body, base_url=base,
                                     content_type="application/jose+json").get_environ()
            answered: list = []
            started = time.thread_time()
            b"".join(stack(environ, lambda status, headers, exc=None, into=answered: into.append((status, headers))))
            spent += time.thread_time() - started
            status, headers = answered[0]
            if not status.startswith("200"):
                raise RuntimeError(f"the order answered {status}")
            nonce[0] = dict(headers)["Replay-Nonce"]
    return spent / count * 1e6


def bare_granian(folder: Path, count: int) -> float:
    """Server CPU per POST of a bare Granian WSGI app over TLS, as many workers and threads as serve."""
    ca, cert, key = localhost_tls(folder)
    (folder / "floor_app.py").write_text(FLOOR_APP)
    port = free_port()
    granian = str(Path(sys.executable).with_name("granian"))
    server = Server([granian, "--interface", "wsgi", "--host", "127.0.0.1", "--port", str(port), "--workers", "2",
                     "--blocking-threads", "36", "--ssl-certificate", str(cert), "--ssl-keyfile", str(key),
                     "--working-dir", str(folder), "floor_app:app"], folder / "floor.log")
    try:
        session = requests.Session()
        session.verify, session.trust_env = str(ca), False
        url = f"https://localhost:{port}/acme/order/x"
        body = json.dumps({"protected": "e" * 300, "payload": "", "signature": "s" * 86})
        deadline = time.monotonic() + 20
        while True:
            try:
                session.post(url, data=body, timeout=5)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return per_request(server, lambda: session.post(url, data=body, timeout=30), count)
    finally:
        server.stop()


def main(argv: list[str]) -> int:
    count = int(argv[0]) if argv else 500
    with tempfile.TemporaryDirectory(prefix="ca-acme-requests-") as tmp:
        folder = Path(tmp)
        (folder / "servers").mkdir()
        (folder / "floor").mkdir()
        result = {"through_servers": through_servers(folder / "servers", count),
                  "in_process_post_as_get_order_us": in_process(folder, count),
                  "bare_granian_tls_post_us": bare_granian(folder / "floor", count)}
    print(json.dumps({k: ({n: {m: round(x) for m, x in v.items()} for n, v in val.items()} if isinstance(val, dict)
                          else round(val)) for k, val in result.items()}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
