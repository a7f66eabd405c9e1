"""Intermediate rollover (issue 20): a new intermediate takes over issuance before the old one ends.

With the root key in the instance, `ca-server intermediate rollover` does it in one step. With
an offline root it is a ceremony in three:

    server:   ca-server intermediate rollover              -> key + ca/intermediate-N.csr
    offline:  ca-server root sign-intermediate FILE.csr    -> FILE.crt, signed by the root
    server:   ca-server intermediate rollover --certificate FILE.crt

The new intermediate's certificate is written last, in one rename: every process of the server
(and of the next node the operator copies ca/ and keys/ to) issues from it on its next request.
The earlier intermediates stay (intermediates.py): they answer for what they issued."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from ..clock import to_text
from ..config import Config
from ..display import moment_text
from ..errors import BadRequestError, ConflictError, NotFoundError
from ..notify.mail import mail_admins_once
from ..pki.extensions import EKU_NAMES, Endpoints, build_intermediate, crl_distribution_point, name_constraints
from ..pki.keys import encrypt_private_key, generate_private_key, signature_hash
from ..pki.serials import new_serial, serial_hex
from ..revocation import publish_crl, refresh_crls
from ..store import CaStore
from . import intermediates
from .authority import BACKDATE, Authority, write_private_file
from .intermediates import Intermediate

_ROOT_CRL_PATH = "/crl/root.crl"


@dataclass(frozen=True)
class Pending:
    """A new intermediate's key, waiting for its certificate."""

    number: int
    csr_path: Path
    key_label: str  # where the key is, for the audit log and the operator


def next_number(authority: Authority) -> int:
    return authority.intermediates[-1].number + 1


def subject_for(config: Config, number: int) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, config.ca.organization),
        x509.NameAttribute(NameOID.COMMON_NAME, intermediates.common_name(config.ca.intermediate_common_name, number)),
    ])


def prepare(authority: Authority, config: Config, key_uri: str | None) -> Pending:
    """The next generation's key (made now, or the one an earlier unfinished rollover made) and
    its certificate request, with the root CRL URL and name constraints the new certificate should carry."""
    paths = authority.paths
    number = next_number(authority)
    if key_uri:
        if authority.has_key(number) and authority.key_uri(number) != key_uri:
            raise ConflictError(f"An unfinished rollover made another key for intermediate {number} "
                                f"({authority.key_label(number)}): finish that one, or move it away.")
        if not authority.has_key(number):
            write_private_file(intermediates.key_uri_file(paths.keys, number), key_uri.encode() + b"\n")
        signer = authority.signer(number)
    elif authority.has_key(number):
        signer = authority.signer(number)
    else:
        signer = generate_private_key(config.ca.intermediate_key_type)
        write_private_file(intermediates.key_file(paths.keys, number),
                           encrypt_private_key(signer, authority.passphrase()))
    builder = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(subject_for(config, number))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(crl_distribution_point(Endpoints(config.server.pki_url).root_crl), critical=False)
    )
    if config.ca.permitted_domains:
        builder = builder.add_extension(name_constraints(config.ca.permitted_domains), critical=True)
    csr = builder.sign(signer, signature_hash(signer))
    csr_path = intermediates.csr_file(paths.root_cert.parent, number)
    temp = csr_path.with_suffix(".csr.new")
    temp.write_bytes(csr.public_bytes(Encoding.PEM))
    os.replace(temp, csr_path)
    return Pending(number, csr_path, authority.key_label(number))


def sign_request(csr_pem: bytes, root_cert: x509.Certificate, root_key, now: dt.datetime, validity_days: int,
                 base_url: str | None = None, permitted_domains: tuple[str, ...] | None = None, *,
                 fallback_base_url: str | None = None) -> x509.Certificate:
    """The root's signature on an intermediate's request (`root sign-intermediate`): the subject
    and key from the request; the root CRL URL (hence the server's base URL) and name constraints
    from the request unless given; CA with pathLen 0; ends with the root at the latest."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem) if b"-----BEGIN" in csr_pem else x509.load_der_x509_csr(csr_pem)
    except (ValueError, x509.InvalidVersion):
        raise BadRequestError("This is not a readable certificate request (PEM or DER).") from None
    if not csr.is_signature_valid:
        raise BadRequestError("The request's signature does not verify: it was damaged or altered.")
    if not csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME):
        raise BadRequestError("The request has no common name: an intermediate needs a name of its own.")
    leaf = _leaf_marks(csr)
    if leaf:
        raise BadRequestError(f"This request is for an end-entity certificate ({leaf}), not for an intermediate CA: "
                              "the root signs only intermediates. Give the request `ca-server intermediate rollover` "
                              "wrote; a server's or device's request is signed by the CA (ca-server issue).")
    if base_url is None:
        base_url = _base_url_from(csr, fallback_base_url)
    if permitted_domains is None:
        try:
            constraints = csr.extensions.get_extension_for_class(x509.NameConstraints).value
            permitted_domains = tuple(n.value for n in constraints.permitted_subtrees or () if isinstance(n, x509.DNSName))
        except x509.ExtensionNotFound:
            permitted_domains = ()
    start = now.replace(microsecond=0) - BACKDATE
    not_after = min(start + dt.timedelta(days=validity_days), root_cert.not_valid_after_utc)
    return build_intermediate(subject=csr.subject, public_key=csr.public_key(), serial=new_serial(),
                              not_before=start, not_after=not_after, root_cert=root_cert, root_key=root_key,
                              permitted_domains=permitted_domains, endpoints=Endpoints(base_url.rstrip("/")))


def _leaf_marks(csr: x509.CertificateSigningRequest) -> str:
    """What in a request marks it as a leaf's (a server's CSR handed to the root by mistake): it
    asks not to be a CA, names hosts or addresses, or asks for TLS or other end-entity uses. A
    request without extensions (openssl, a token's tool) passes."""
    try:
        extensions = list(csr.extensions)
    except ValueError as exc:  # a duplicated or malformed extension
        raise BadRequestError(f"The request's extensions cannot be read: {exc}.") from None
    for ext in extensions:
        if isinstance(ext.value, x509.BasicConstraints) and not ext.value.ca:
            return "it asks for basicConstraints CA:FALSE"
        if isinstance(ext.value, x509.SubjectAlternativeName):
            names = ", ".join(f"{type(n).__name__.removesuffix('Name').replace('RFC822', 'email')}:{n.value}"
                              for n in list(ext.value)[:3])
            return f"it names {names}"
        if isinstance(ext.value, x509.ExtendedKeyUsage):
            return f"it asks for extended key usages {', '.join(EKU_NAMES.get(u, u.dotted_string) for u in ext.value)}"
    return ""


def _base_url_from(csr: x509.CertificateSigningRequest, fallback: str | None) -> str:
    try:
        points = csr.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
        url = points[0].full_name[0].value
    except (x509.ExtensionNotFound, IndexError, TypeError, AttributeError):
        url = ""
    if not url.endswith(_ROOT_CRL_PATH):
        if fallback:  # a request made elsewhere (openssl, a token's tool): the server's known URL
            return fallback
        raise BadRequestError("The request does not say where the server is (it names no .../crl/root.crl): give "
                              "the server's base URL with --base-url.")
    return url[: -len(_ROOT_CRL_PATH)]


def install(authority: Authority, store: CaStore, config: Config, cert_pem: bytes, now: dt.datetime, *,
            actor: str) -> Intermediate:
    """Check a signed intermediate against the pending key and the root, then make it the issuing one."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem) if b"-----BEGIN" in cert_pem else \
            x509.load_der_x509_certificate(cert_pem)
    except ValueError:
        raise BadRequestError("This is not a readable certificate (PEM or DER).") from None
    number = next_number(authority)
    if not authority.has_key(number):
        raise ConflictError("No rollover is waiting for a certificate: run `ca-server intermediate rollover` first.")
    if cert.public_key() != authority.signer(number).public_key():
        raise BadRequestError(f"This certificate is not for the key of the waiting rollover (intermediate {number}): "
                              "sign the request that rollover wrote.")
    try:
        cert.verify_directly_issued_by(authority.root)
    except (ValueError, TypeError, InvalidSignature):
        raise BadRequestError("This certificate is not signed by this CA's root.") from None
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        basic = None
    if basic is None or not basic.ca:
        raise BadRequestError("This certificate is not a CA certificate (BasicConstraints CA:TRUE is missing).")
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        raise BadRequestError(f"This certificate is not valid now (from {moment_text(cert.not_valid_before_utc)} "
                              f"to {moment_text(cert.not_valid_after_utc)}).")
    subject = cert.subject.rfc4514_string()
    if any(gen.issuer_text == subject for gen in authority.intermediates):
        raise BadRequestError(f"An intermediate named {subject} exists already: the new one needs its own name.")
    previous = authority.current
    path = intermediates.cert_file(authority.paths.root_cert.parent, number)
    temp = path.with_suffix(".pem.new")
    temp.write_bytes(cert.public_bytes(Encoding.PEM))
    os.replace(temp, path)  # from here on, every process issues from it
    intermediates.csr_file(authority.paths.root_cert.parent, number).unlink(missing_ok=True)
    gen = authority.current
    refresh_crls(config, store, authority, now)  # its first CRL, before a leaf names it
    store.append_audit(at=now, action="intermediate_rollover", actor=actor, serial=serial_hex(cert.serial_number),
                       detail={"generation": number, "subject": subject, "not_after": to_text(gen.not_after),
                               "key": authority.key_label(number),
                               "previous": serial_hex(previous.cert.serial_number)})
    return gen


def rollover_online(authority: Authority, store: CaStore, config: Config, now: dt.datetime, *, actor: str,
                    key_uri: str | None = None) -> Intermediate:
    """Key, request, the root's signature and the switch, in one step (the root key is here)."""
    root_key = authority.root_key
    pending = prepare(authority, config, key_uri)
    cert = sign_request(pending.csr_path.read_bytes(), authority.root, root_key, now,
                        config.ca.intermediate_validity_days, config.server.pki_url, config.ca.permitted_domains)
    return install(authority, store, config, cert.public_bytes(Encoding.PEM), now, actor=actor)


def ending_warning(authority: Authority, now: dt.datetime, warn_days: int) -> str | None:
    """A sentence for the dashboard and the admins when the issuing intermediate ends within
    `warn_days` (certificates issued from then on are cut short to its end)."""
    gen = authority.current
    left = gen.not_after - now
    if left > dt.timedelta(days=warn_days):
        return None
    when = "has ended" if left <= dt.timedelta(0) else f"ends in {left.days} day(s)"
    return (f"The issuing intermediate ({gen.issuer_text}) {when}, on {moment_text(gen.not_after)}: certificates "
            "issued now are cut short to that date. Roll a new one in with `ca-server intermediate rollover` "
            "(see the README's rollover procedure).")


def warn_ending_by_mail(config: Config, smtp_password: str | None, authority: Authority, store: CaStore,
                        now: dt.datetime) -> list[str]:
    """ending_warning() by mail to the admins, once per intermediate (across processes and nodes)."""
    sentence = ending_warning(authority, now, config.ca.intermediate_warning_days)
    if sentence is None:
        return []
    gen = authority.current
    return mail_admins_once(config, smtp_password, store, f"mail:intermediate-ending:{serial_hex(gen.cert.serial_number)}",
                            f"{gen.issuer_text}: roll a new intermediate in", sentence, now)


def retire(authority: Authority, store: CaStore, config: Config, number: int, now: dt.datetime, *, actor: str,
           force: bool = False) -> str:
    """Destroy an earlier intermediate's key once nothing it issued is valid: its last CRL is
    signed first and served on; OCSP and chains for its (expired) certificates go on from the store.
    Returns what was removed."""
    gen = authority.by_number(number)
    if gen is None:
        raise NotFoundError(f"There is no intermediate {number}: see `ca-server intermediate list`.")
    if gen is authority.current:
        raise ConflictError("The issuing intermediate cannot be retired: roll a new one in first.")
    if gen.number == 1 and config.ca.intermediate_key:
        raise ConflictError("Its key is the token key of [ca] intermediate_key: destroy it with the token's own tool.")
    if not authority.can_sign(gen):
        raise ConflictError(f"Intermediate {number} is retired already (its key is gone).")
    count, last = store.issuer_summary(authority.issued_by(gen), now)
    if count and not force:
        raise ConflictError(f"{count} certificate(s) it issued are valid until {last}: retire it after that "
                            "(or --force, and they can no longer be revoked).")
    publish_crl(config, store, authority, gen.slug, now)  # the last one, with every revocation so far
    keys = authority.paths.keys
    removed = intermediates.key_uri_file(keys, number) if authority.key_uri(number) else intermediates.key_file(keys, number)
    store.append_audit(at=now, action="intermediate_retired", actor=actor, serial=serial_hex(gen.cert.serial_number),
                       detail={"generation": number, "key": authority.key_label(number), "valid_certificates": count})
    removed.unlink()
    return str(removed.relative_to(authority.paths.root))


def retirement(authority: Authority, store: CaStore, now: dt.datetime) -> list[dict]:
    """For each intermediate that no longer issues: how many of its certificates are still valid,
    and from when it can be retired (its last certificate's end; now if none is left)."""
    out = []
    for gen in authority.intermediates[:-1]:
        count, last = store.issuer_summary(authority.issued_by(gen), now)
        out.append({"generation": gen.number, "subject": gen.issuer_text, "valid_certificates": count,
                    "retire_after": last or to_text(now), "retirable": count == 0,
                    "retired": not authority.can_sign(gen)})
    return out
