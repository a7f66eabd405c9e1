"""http-01 through redirects (RFC 8555 8.3: the server SHOULD follow them), as Let's Encrypt
follows them: a site that sends all of plain http to https, or every host's challenges to one
responder, validates. At most 10 redirects, to http: or https: on ports 80 and 443 (connected at
`[acme] http01_port` and `tls_alpn01_port`), to host names; https without a certificate check.
Real servers on loopback: plain and TLS web servers here, pebble-challtestsrv for DNS (every
name is 127.0.0.1), and certbot for the whole exchange."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import http.server
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ca_server.acme.validation import ValidationError, check_http01
from ca_server.config import AcmeConfig

from .checks import trickling_server
from .server import free_port
from .test_acme_clients import acme_server, assert_issued_here, certbot, dns_server, need  # noqa: F401 (fixtures)

TOKEN, KEY_AUTH = "tok", "tok.thumb"
PATH = f"/.well-known/acme-challenge/{TOKEN}"


def self_signed(folder: Path) -> tuple[Path, Path]:
    """What a site has before it has its certificate: one nobody trusts."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "snakeoil")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    paths = folder / "snakeoil.pem", folder / "snakeoil.key"
    paths[0].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@contextlib.contextmanager
def web_server(port: int, answer, tls: tuple[Path, Path] | None = None):
    """On 127.0.0.1:port; `answer(path, host)` gives (status, headers, body). Yields the requests
    it got, as (Host header, path)."""
    seen: list[tuple[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the stdlib's name)
            seen.append((self.headers.get("Host", ""), self.path))
            status, headers, body = answer(self.path, self.headers.get("Host", ""))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield seen
    finally:
        server.shutdown()
        server.server_close()


def redirect(location: str, status: int = 301):
    return lambda path, host: (status, {"Location": location.format(path=path, host=host)}, b"")


def key_file(path, host):
    return (200, {}, KEY_AUTH.encode()) if path == PATH else (404, {}, b"")


@pytest.fixture
def ports(dns_server):  # noqa: F811 (the fixture)
    http01, https = free_port(), free_port()
    config = dataclasses.replace(AcmeConfig(), http01_port=http01, tls_alpn01_port=https,
                                 dns_resolvers=(f"127.0.0.1:{dns_server['dns']}",))
    return http01, https, config


def validate(config: AcmeConfig, name: str = "site.example.test", kind: str = "dns", timeout: float = 5) -> None:
    check_http01({"type": kind, "value": name}, TOKEN, KEY_AUTH, config, timeout)


def refused(config: AcmeConfig, name: str = "site.example.test", kind: str = "dns") -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        validate(config, name, kind)
    return caught.value


def test_a_site_that_sends_all_http_to_https_validates_over_an_untrusted_certificate(ports, tmp_path):
    http01, https, config = ports
    with web_server(http01, redirect("https://{host}{path}")) as plain, \
            web_server(https, key_file, tls=self_signed(tmp_path)) as secure:
        validate(config)
    assert plain == [("site.example.test", PATH)]
    assert secure == [("site.example.test", PATH)]  # the Host a virtual host is chosen by


def test_a_relative_redirect_and_one_to_a_central_responder_host_are_followed(ports, tmp_path):
    http01, https, config = ports
    hops = {PATH: (308, {"Location": "/moved" + PATH}, b""),
            "/moved" + PATH: (302, {"Location": "https://acme-responder.example.test" + PATH}, b"")}
    with web_server(http01, lambda path, host: hops[path]) as plain, \
            web_server(https, key_file, tls=self_signed(tmp_path)) as secure:
        validate(config)
    assert plain == [("site.example.test", PATH), ("site.example.test", "/moved" + PATH)]
    assert secure == [("acme-responder.example.test", PATH)]



def test_a_location_with_spaces_or_non_ascii_is_followed_percent_encoded(ports):
    """As a browser sends it (before, http.client refused to send such a path: "Could not fetch ...
    InvalidURL URL can't contain control characters")."""
    http01, _, config = ports
    moved = "/moved%20here/%C3%BC"
    hops = {PATH: (302, {"Location": "/moved here/ü"}, b""), moved: (200, {}, KEY_AUTH.encode())}
    with web_server(http01, lambda path, host: hops.get(path, (404, {}, b""))) as plain:
        validate(config)
    assert [path for _, path in plain] == [PATH, moved]

def test_a_wrong_answer_after_a_redirect_names_the_url_it_came_from(ports, tmp_path):
    http01, https, config = ports
    with web_server(http01, redirect("https://{host}/elsewhere")), \
            web_server(https, key_file, tls=self_signed(tmp_path)):
        error = refused(config)
    assert error.kind == "unauthorized"
    assert error.detail == f"https://site.example.test:{https}/elsewhere answered 404, not 200."


def test_a_redirect_loop_stops_after_ten(ports):
    http01, _, config = ports
    with web_server(http01, redirect("http://{host}{path}")) as plain:
        error = refused(config)
    assert len(plain) == 11  # the first request and ten redirects
    assert error.kind == "connection" and error.detail.startswith("Stopped after 10 redirects (a loop?)")


@pytest.mark.parametrize(("location", "words"), [
    ("ftp://site.example.test/file", "only redirects to http: and https: URLs are followed."),
    ("http://site.example.test:8080" + PATH, "only redirects to ports 80 and 443 are followed, not 8080."),
    ("https://127.0.0.1" + PATH, "a redirect to an IP address is followed only to the address being validated"),
    ("http://bad_name!.example.test/", "not a host name this server can look up."),
    ("http://site.example.test:99999/", "not a URL this server can follow."),
])
def test_redirects_that_are_not_followed_say_why(ports, location, words):
    http01, _, config = ports
    with web_server(http01, redirect(location)) as plain:
        error = refused(config)
    assert len(plain) == 1, "nothing else was fetched"
    assert error.kind == "connection"
    assert error.detail.startswith(f"http://site.example.test:{http01}{PATH} redirected (301) to {location}: ")
    assert words in error.detail


def test_a_redirect_without_a_location_says_so(ports):
    http01, _, config = ports
    with web_server(http01, lambda path, host: (302, {}, b"")):
        error = refused(config)
    assert error.detail == f"http://site.example.test:{http01}{PATH} answered 302 without a Location to follow."


def test_an_ip_identifier_may_redirect_to_https_on_its_own_address(ports, tmp_path):
    http01, https, config = ports
    with web_server(http01, redirect("https://127.0.0.1{path}")), \
            web_server(https, key_file, tls=self_signed(tmp_path)) as secure:
        validate(config, "127.0.0.1", "ip")
    assert secure == [("127.0.0.1", PATH)]


def test_an_https_target_that_trickles_after_a_redirect_is_cut_off_at_the_timeout(dns_server):  # noqa: F811
    """The redirect's TLS connection shares the first connection's deadline: a target that sends
    a TLS record a byte at a time does not hold a validator thread past the timeout."""
    import time

    http01 = free_port()
    with trickling_server(b"\x16\x03\x03\x40\x00" + b"\x00" * 100) as https:
        config = dataclasses.replace(AcmeConfig(), http01_port=http01, tls_alpn01_port=https,
                                     dns_resolvers=(f"127.0.0.1:{dns_server['dns']}",))
        with web_server(http01, redirect("https://{host}{path}")):
            started = time.monotonic()
            with pytest.raises(ValidationError) as cut:
                validate(config, timeout=1)
            took = time.monotonic() - started
    assert cut.value.kind == "connection"
    assert f"127.0.0.1:{https}: did not answer within 1 s" in cut.value.detail
    assert took < 3, f"held for {took:.1f} s"


def test_certbot_webroot_on_a_site_that_redirects_everything_to_https(acme_server, svc, tmp_path):  # noqa: F811
    """The everyday set-up: nginx answers plain http with `return 301 https://$host$request_uri`,
    and certbot --webroot writes the challenge where the https site serves it."""
    need("certbot")
    root = tmp_path / "www"
    (root / ".well-known" / "acme-challenge").mkdir(parents=True)

    def serve_root(path, host):
        file = root / path.lstrip("/")
        return (200, {}, file.read_bytes()) if file.is_file() else (404, {}, b"")

    with web_server(acme_server["http01"], redirect("https://{host}{path}")) as plain, \
            web_server(acme_server["tls_alpn"], serve_root, tls=self_signed(tmp_path)) as secure, \
            acme_server["start"]():
        work = tmp_path / "certbot"
        got = certbot(acme_server, work, "certonly", "--agree-tos", "-m", "ops@example.test", "--webroot",
                      "-w", str(root), "-d", "redirected.example.test")
        assert got.returncode == 0, got.stdout + got.stderr
    leaf = assert_issued_here(work / "live" / "redirected.example.test" / "fullchain.pem", acme_server, svc)
    assert leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName) == ["redirected.example.test"]
    assert [p for _, p in plain if p.startswith("/.well-known/")] and \
        [p for _, p in secure if p.startswith("/.well-known/")], "the key authorization came over https"

