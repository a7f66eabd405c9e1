"""Proving control of an identifier (RFC 8555 8.3-8.4, RFC 8737, RFC 8738), run in a bounded
pool of background threads: the request that starts a validation waits for it up to `[acme]
validation_wait_ms`, then is answered with the outcome or `processing`, and the client polls.

The validator connects to `[acme] http01_port` / `tls_alpn01_port` and resolves names through
`[acme] dns_resolvers` (dnspython), so an operator can point it at internal DNS or a test set-up.
Each attempt has `validation_timeout_seconds`; a failed one is retried (`validation_attempts`)
after 1, 2, 4 ... seconds, and the last failure is what the challenge says. http-01 follows
redirects by Let's Encrypt's rules (check_http01)."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import http.client
import ipaddress
import logging
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass

import dns.exception
import dns.resolver
import dns.reversename
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from ..config import AcmeConfig
from ..pki.names import a_label, dns_name_problem, parse_ip
from .challenges import dns01_value, key_authorization
from .problems import problem_dict
from .state import Challenge

log = logging.getLogger(__name__)

ACME_IDENTIFIER_OID = ObjectIdentifier("1.3.6.1.5.5.7.1.31")  # RFC 8737 3
MAX_HTTP_BODY = 8192


class ValidationError(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail


def _resolver(config: AcmeConfig, timeout: float) -> dns.resolver.Resolver:
    if not config.dns_resolvers:
        resolver = dns.resolver.Resolver()
    else:
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = []
        resolver.nameserver_ports = {}
        for entry in config.dns_resolvers:
            host, _, port = entry.rpartition(":")
            host = host.strip("[]")
            address = host if parse_ip(host) is not None else socket.gethostbyname(host)
            resolver.nameservers.append(address)
            resolver.nameserver_ports[address] = int(port)
    resolver.lifetime = timeout
    resolver.timeout = timeout
    return resolver


def addresses(identifier: dict, config: AcmeConfig, timeout: float) -> Iterator[str]:
    """Where to connect for this identifier, in order: the IP itself, or the name's A records,
    then its AAAA records. The AAAA query is sent only when the caller asks past every IPv4
    address (none answered): the validators stop at the first address that answers, so a name
    with a working IPv4 address costs one query, not two (issue 29: the lookups were 12% of an
    ACME order's Python)."""
    if identifier["type"] == "ip":
        yield identifier["value"]
        return
    if not config.dns_resolvers:  # the system's resolver, /etc/hosts included (dnspython skips it)
        try:
            infos = socket.getaddrinfo(identifier["value"], None, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ValidationError("dns", f"{identifier['value']} does not resolve: {exc}") from None
        yield from dict.fromkeys(info[4][0] for info in infos)
        return
    resolver = _resolver(config, timeout)
    found = False
    for rdtype in ("A", "AAAA"):
        try:
            answer = resolver.resolve(identifier["value"], rdtype)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
            continue
        except dns.exception.DNSException as exc:
            raise ValidationError("dns", f"Looking up {identifier['value']} failed: {exc}") from None
        for record in answer:
            found = True
            yield record.to_text()
    if not found:
        raise ValidationError("dns", f"{identifier['value']} has no A or AAAA record.")


def check_http01(identifier: dict, token: str, key_auth: str, config: AcmeConfig, timeout: float) -> None:
    """GET http://NAME/.well-known/acme-challenge/TOKEN, following redirects as Let's Encrypt does
    (RFC 8555 8.3: the server SHOULD): at most MAX_REDIRECTS, to http: or https: on ports 80 and
    443 (connected at http01_port and tls_alpn01_port), to host names (an IP address only as the
    identifier itself), https without checking the certificate (the target has none yet: it is
    getting one). A site that sends all of plain http to https validates so."""
    target = _Target("http", identifier["value"], None, f"/.well-known/acme-challenge/{token}",
                     is_ip=identifier["type"] == "ip")
    chain_deadline = None  # the first connection that answers sets it: redirects share its timeout
    for redirects in range(MAX_REDIRECTS + 1):
        status, location, body, chain_deadline = _fetch(target, config, timeout, chain_deadline, redirects)
        if status not in REDIRECTS:
            break
        if redirects == MAX_REDIRECTS:
            raise ValidationError("connection", f"Stopped after {MAX_REDIRECTS} redirects (a loop?); the last was "
                                  f"from {target.shown(config)} to {location}.")
        target = _redirected(target, location, status, identifier, config)
    if status != 200:
        raise ValidationError("unauthorized", f"{target.shown(config)} answered {status}, not 200.")
    if body.strip() != key_auth.encode():
        raise ValidationError("incorrectResponse", f"The file at {target.shown(config)} does not hold the key "
                              "authorization.")


REDIRECTS = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 10
URL_SAFE = "/?%:@!$&'()*+,;=-._~"  # RFC 3986's reserved and unreserved characters of a path and query


@dataclass(frozen=True)
class _Target:
    scheme: str  # http or https
    host: str  # a host name (A-label) or an IP address
    port: int | None  # as the URL gave it (80, 443) or None; connected at the configured port
    path: str  # with its query
    is_ip: bool = False

    def port_for(self, config: AcmeConfig) -> int:
        return config.http01_port if self.scheme == "http" else config.tls_alpn01_port

    @property
    def url_host(self) -> str:
        """The host as a URL and a Host header write it: an IPv6 address in brackets."""
        return f"[{self.host}]" if ":" in self.host else self.host

    def url(self) -> str:
        """As the target's own links see it (what a relative Location is read against)."""
        return f"{self.scheme}://{self.url_host}{'' if self.port is None else f':{self.port}'}{self.path}"

    def shown(self, config: AcmeConfig) -> str:
        """As connected: the port this server used."""
        return f"{self.scheme}://{self.url_host}:{self.port_for(config)}{self.path}"


def _redirected(target: _Target, location: str | None, status: int, identifier: dict,
                config: AcmeConfig) -> _Target:
    def refuse(why: str) -> ValidationError:
        return ValidationError("connection", f"{target.shown(config)} redirected ({status}) to {location}: {why}")

    if not location:
        raise ValidationError("connection", f"{target.shown(config)} answered {status} without a Location to "
                              "follow.")
    try:
        url = urllib.parse.urlsplit(urllib.parse.urljoin(target.url(), location.strip()))
        port = url.port
    except ValueError:
        raise refuse("not a URL this server can follow.") from None
    if url.scheme not in ("http", "https"):
        raise refuse("only redirects to http: and https: URLs are followed.")
    if port not in (None, 80, 443):
        raise refuse(f"only redirects to ports 80 and 443 are followed, not {port}.")
    host = (url.hostname or "").rstrip(".")
    address = parse_ip(host)
    if address is not None:
        if identifier["type"] != "ip" or address != parse_ip(identifier["value"]):
            raise refuse("a redirect to an IP address is followed only to the address being validated; "
                         "redirect to a host name.")
        host = str(address)
    else:
        host = a_label(host) or ""
        if not host or dns_name_problem(host):
            raise refuse("not a host name this server can look up.")
    path = (url.path or "/") + (f"?{url.query}" if url.query else "")
    # As a browser sends it: a space or non-ASCII character percent-encoded, escapes kept.
    return _Target(url.scheme, host, port, urllib.parse.quote(path, safe=URL_SAFE), is_ip=address is not None)


def _fetch(target: _Target, config: AcmeConfig, timeout: float, chain_deadline: float | None,
           redirects: int) -> tuple[int, str | None, bytes, float]:
    """(status, Location, body, the deadline it met) from the first of the target's addresses
    that answers; each gets `timeout`, or what is left of `chain_deadline`."""
    port = target.port_for(config)
    errors = []
    for address in addresses({"type": "ip" if target.is_ip else "dns", "value": target.host}, config, timeout):
        deadline = chain_deadline or time.monotonic() + timeout
        try:
            return (*_exchange(target, address, port, deadline), deadline)
        except _PastDeadline:
            errors.append(f"{address}:{port}: did not answer within {timeout:g} s")
        except (OSError, http.client.HTTPException) as exc:  # ssl.SSLError is an OSError
            errors.append(f"{address}:{port}: {exc.__class__.__name__} {exc}".strip())
    where = f" at {target.shown(config)}" if redirects else ""
    raise ValidationError("connection", f"Could not fetch the http-01 file{where}: {'; '.join(errors)}")


def _exchange(target: _Target, address: str, port: int, deadline: float) -> tuple[int, str | None, bytes]:
    sock: socket.socket = _DeadlineSocket.connect_by(address, port, deadline)
    if target.scheme == "https":
        sock.settimeout(max(deadline - time.monotonic(), 0.001))  # one deadline for the whole handshake
        try:
            sock = _tls_context().wrap_socket(sock, server_hostname=None if target.is_ip else target.host)
        except TimeoutError:
            sock.close()
            raise _PastDeadline from None
        sock.deadline = deadline
    host = target.url_host
    conn = http.client.HTTPConnection(host)  # given its socket: it never connects itself
    conn.sock = sock
    try:
        conn.request("GET", target.path, headers={
            "Host": host if target.port is None else f"{host}:{target.port}",
            "User-Agent": "ca-server-acme", "Accept": "*/*"})
        response = conn.getresponse()
        if response.status in REDIRECTS:
            return response.status, response.getheader("Location"), b""
        return response.status, None, response.read(MAX_HTTP_BODY + 1)
    finally:
        conn.close()


class _PastDeadline(TimeoutError):
    pass


class _Deadline:
    """Reads that together end at `deadline`: a socket's timeout bounds each read, so a target
    that trickles its answer a byte a second held a validator thread (there are only
    validation_threads of them) as long as it liked."""

    deadline = 0.0

    def recv_into(self, buffer, *args):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise _PastDeadline
        self.settimeout(left)
        try:
            return super().recv_into(buffer, *args)
        except TimeoutError:
            raise _PastDeadline from None


class _DeadlineSocket(_Deadline, socket.socket):
    @classmethod
    def connect_by(cls, address: str, port: int, deadline: float) -> _DeadlineSocket:
        left = deadline - time.monotonic()
        if left <= 0:
            raise _PastDeadline
        try:
            raw = socket.create_connection((address, port), timeout=left)
        except TimeoutError:
            raise _PastDeadline from None
        sock = cls(fileno=raw.detach())
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as http.client's own connect
        sock.deadline = deadline
        return sock


class _DeadlineTLSSocket(_Deadline, ssl.SSLSocket):
    pass


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """https after a redirect: no certificate check (the target is getting its first one)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.sslsocket_class = _DeadlineTLSSocket
    return context


def check_dns01(identifier: dict, key_auth: str, config: AcmeConfig, timeout: float) -> None:
    name = "_acme-challenge." + identifier["value"]
    try:
        answer = _resolver(config, timeout).resolve(name, "TXT")
    except dns.resolver.NXDOMAIN:
        raise ValidationError("dns", f"{name} does not exist.") from None
    except (dns.resolver.NoAnswer, dns.resolver.NoNameservers):
        raise ValidationError("unauthorized", f"{name} has no TXT record.") from None
    except dns.exception.DNSException as exc:
        raise ValidationError("dns", f"Looking up the TXT record {name} failed: {exc}") from None
    expected = dns01_value(key_auth)
    values = [b"".join(r.strings).decode("ascii", "replace") for r in answer]
    if expected not in values:
        raise ValidationError("incorrectResponse", f"No TXT record of {name} holds the expected value "
                              f"(found {len(values)} other).")


def check_tls_alpn01(identifier: dict, key_auth: str, config: AcmeConfig, timeout: float) -> None:
    sni = identifier["value"]
    if identifier["type"] == "ip":  # RFC 8738 6: the reverse-mapping name
        sni = dns.reversename.from_address(identifier["value"]).to_text(omit_final_dot=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the certificate is self-signed by design (RFC 8737 3)
    context.set_alpn_protocols(["acme-tls/1"])
    errors = []
    for address in addresses(identifier, config, timeout):
        try:
            with socket.create_connection((address, config.tls_alpn01_port), timeout=timeout) as raw, \
                    context.wrap_socket(raw, server_hostname=sni) as tls:
                if tls.selected_alpn_protocol() != "acme-tls/1":
                    raise ValidationError("tls", "The server did not negotiate the acme-tls/1 protocol.")
                der = tls.getpeercert(binary_form=True)
        except ValidationError:
            raise
        except (OSError, ssl.SSLError) as exc:
            errors.append(f"{address}:{config.tls_alpn01_port}: {exc}")
            continue
        _check_alpn_certificate(der, identifier, key_auth)
        return
    raise ValidationError("connection", f"Could not complete the tls-alpn-01 handshake: {'; '.join(errors)}")


def _check_alpn_certificate(der: bytes | None, identifier: dict, key_auth: str) -> None:
    try:
        cert = x509.load_der_x509_certificate(der or b"")
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        extension = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
    except (ValueError, x509.ExtensionNotFound):
        raise ValidationError("unauthorized", "The tls-alpn-01 certificate lacks its SAN or acmeIdentifier "
                              "extension.") from None
    if identifier["type"] == "ip":
        wanted = [ipaddress.ip_address(identifier["value"])]
        present = names.get_values_for_type(x509.IPAddress)
    else:
        wanted, present = [identifier["value"]], [n.lower() for n in names.get_values_for_type(x509.DNSName)]
    if present != wanted or len(list(names)) != 1:
        raise ValidationError("unauthorized", "The tls-alpn-01 certificate must name exactly the identifier.")
    digest = hashlib.sha256(key_auth.encode()).digest()
    if not extension.critical or extension.value.value != b"\x04\x20" + digest:
        raise ValidationError("incorrectResponse", "The acmeIdentifier extension does not hold the key "
                              "authorization's digest (or is not critical).")


def check(challenge: Challenge, thumbprint: str, config: AcmeConfig) -> None:
    key_auth = key_authorization(challenge.token, thumbprint)
    timeout = float(config.validation_timeout_seconds)
    identifier = challenge.identifier.to_json()
    if challenge.type == "http-01":
        check_http01(identifier, challenge.token, key_auth, config, timeout)
    elif challenge.type == "dns-01":
        check_dns01(identifier, key_auth, config, timeout)
    elif challenge.type == "tls-alpn-01":
        check_tls_alpn01(identifier, key_auth, config, timeout)
    else:  # pragma: no cover - orders.py makes only these
        raise ValidationError("malformed", f"Unknown challenge type {challenge.type}.")


class Validator:
    """The bounded pool of one process. `submit` returns at once; the outcome goes to the store
    through `done(challenge_id, problem_or_None)`."""

    def __init__(self, config: AcmeConfig, done: Callable[[str, dict | None], None],
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config, self.done, self.sleep = config, done, sleep
        self.pool = futures.ThreadPoolExecutor(config.validation_threads, thread_name_prefix="acme-validate")
        self.running: set[str] = set()
        self.lock = threading.Lock()
        # Requests waiting for an outcome hold one of the server's threads each: at most as many
        # as validations run at once, so a burst of challenges cannot take them all.
        self.waiters = threading.BoundedSemaphore(config.validation_threads)

    def submit(self, challenge: Challenge, thumbprint: str) -> futures.Future | None:
        """The validation, started: done once its outcome is in the store (None when it was
        running already)."""
        with self.lock:
            if challenge.id in self.running:
                return None
            self.running.add(challenge.id)
        return self.pool.submit(self._run, challenge, thumbprint)

    def wait(self, validation: futures.Future, seconds: float,
             idle: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext) -> None:
        """Until `validation` is done or `seconds` have passed, inside `idle()` (the server's
        "this request only waits"); at once when as many requests as there are validation
        threads are waiting already."""
        if self.waiters.acquire(blocking=False):
            try:
                with idle():
                    futures.wait([validation], seconds)
            finally:
                self.waiters.release()

    def _run(self, challenge: Challenge, thumbprint: str) -> None:
        error: dict | None = None
        try:
            for attempt in range(self.config.validation_attempts):
                try:
                    check(challenge, thumbprint, self.config)
                    error = None
                    break
                except ValidationError as exc:
                    error = problem_dict(exc.kind, exc.detail, challenge.identifier.to_json())
                    if attempt + 1 < self.config.validation_attempts:
                        self.sleep(2 ** attempt)
        except Exception as exc:  # a bug must still end the challenge, not leave it processing
            log.exception("validation of challenge %s failed unexpectedly", challenge.id)
            error = problem_dict("serverInternal", f"The validation failed inside the server ({type(exc).__name__}).",
                                 challenge.identifier.to_json())
        try:
            self.done(challenge.id, error)
        finally:
            with self.lock:
                self.running.discard(challenge.id)
