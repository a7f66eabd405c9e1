"""Is this CSR acceptable? Every violation, each with a stable code and a sentence telling the
person what to change; nothing here raises, signs or stores."""

from __future__ import annotations

from dataclasses import dataclass, field

from cryptography import x509
from cryptography.x509.oid import NameOID

from .config import PolicyConfig
from .errors import Violation
from .pki import subjects
from .pki.csr import ParsedCSR
from .pki.extensions import EKU_NAMES, EKU_OIDS
from .pki.names import dns_name_problem, in_domains, is_wildcard, looks_like_dns_name, parse_ip
from .pki.weak_keys import rsa_key_flaws

MAX_NAMES = 100
MAX_CN_LENGTH = 64  # RFC 5280 ub-common-name
KEY_LABELS = {"rsa": "RSA", "ec-p256": "EC P-256", "ec-p384": "EC P-384", "ed25519": "Ed25519"}

# code -> what it means and how to fix the CSR (shown on the form and in the README).
EXPLANATIONS = {
    "csr_invalid": "What was sent is not a readable PKCS#10 CSR. Upload the .csr/.pem/.der file the device made, or paste its whole PEM text.",
    "csr_signature_invalid": "The CSR's signature does not verify: it was altered or damaged. Generate a new CSR on the device.",
    "csr_signature_weak": "The CSR is signed with SHA-1 or MD5, which cannot be trusted. Generate it again with SHA-256.",
    "wildcard_not_allowed": "Wildcard names (*.example.test) are refused. Request each host name explicitly.",
    "dns_name_invalid": "A DNS name breaks DNS syntax (letters, digits, hyphens; labels up to 63, names up to 253 characters; IDNs as xn-- A-labels; a top-level label of letters). Fix the name in the CSR.",
    "domain_not_allowed": "A name is outside the domains this CA issues for. Use names under an allowed domain.",
    "ip_san_not_allowed": "IP addresses in certificates are turned off here. Use DNS names.",
    "san_type_not_allowed": "The CSR asks for e-mail, URI or other name types; only DNS names and IP addresses are issued.",
    "no_names": "The CSR names no host. Put the server's DNS name in the CN and/or the Subject Alternative Names.",
    "too_many_names": f"More than {MAX_NAMES} names in one CSR. Split it into several certificates.",
    "common_name_too_long": f"The CN is longer than {MAX_CN_LENGTH} characters. Use a shorter CN; long names go in the SANs only.",
    "subject_invalid": "A subject field breaks RFC 5280: a country (C) that is not two letters, or a field that is empty or too long (O, OU 64; L, ST 128). Fix the subject in the CSR.",
    "key_type_not_allowed": "The key type is not accepted (RSA, EC P-256, EC P-384 and Ed25519 are). Generate the CSR with an accepted key.",
    "key_too_small": "The RSA key is too short. Generate a new key of at least the minimum size.",
    "key_too_large": "The RSA key is longer than this CA accepts. Generate a key within the allowed range.",
    "key_weak": "The RSA key has a known flaw (ROCA, close primes, a small factor, a bad exponent) that lets its private key be found. Generate a new key, on updated firmware where the message says so.",
    "key_compromised": "The CSR's public key belongs to a certificate revoked for key compromise. Generate a new key pair and CSR.",
    "validity_too_long": "The requested validity is longer than the maximum. Ask for fewer days.",
    "name_out_of_scope": "Your account or token may not request this name. Ask an admin for the domain, or for approval.",
}


@dataclass(frozen=True)
class Decision:
    """What policy says about one request: the violations (empty = acceptable), the names the
    certificate will carry (CN added when missing), and the validity it will get."""

    violations: list[Violation]
    sans: list[str]
    validity_days: int
    subject: x509.Name  # what the certificate carries (pki/subjects.certificate_subject)
    notes: list[str] = field(default_factory=list)
    must_staple: bool = False  # the CSR asked for OCSP Must-Staple (RFC 7633), which this CA gives

    @property
    def acceptable(self) -> bool:
        return not self.violations


def requested_names(csr: ParsedCSR) -> tuple[list[str], list[str], list[str]]:
    """(dns, ips, other) the certificate would carry: the CSR's SANs, plus the CN when it is a
    host name or an address missing from them (RFC 6125: clients match SANs, not the CN)."""
    dns = list(dict.fromkeys(n.lower() for n in csr.dns_names))
    ips = list(dict.fromkeys(str(ip) for ip in csr.ip_addresses))
    cn = (csr.common_name or "").strip()
    if cn:
        ip = parse_ip(cn)
        if ip is not None and str(ip) not in ips:
            ips.append(str(ip))
        elif ip is None and looks_like_dns_name(cn) and cn.lower() not in dns:
            dns.append(cn.lower())
    return dns, ips, list(csr.other_names)


def evaluate(
    csr: ParsedCSR,
    *,
    policy: PolicyConfig,
    ekus: tuple[str, ...],
    validity_days: int,
    signature_ok: bool,
    key_compromised: bool = False,
) -> Decision:
    violations: list[Violation] = []
    notes: list[str] = []
    weak_hash = _weak_signature_hash(csr) if not signature_ok else None
    if weak_hash:
        violations.append(Violation("csr_signature_weak", (
            f"The CSR is signed with {weak_hash}, which this CA does not accept (its signature cannot be "
            "trusted): generate the CSR again with SHA-256 (openssl req -sha256; on CUCM choose SHA256 as "
            "the hash algorithm).")))
    elif not signature_ok:
        violations.append(Violation("csr_signature_invalid", (
            "The CSR's signature does not verify, so it was altered after it was made or is "
            "damaged: generate a new CSR on the device and submit that file unchanged.")))
    violations += _key_violations(csr, policy)
    if key_compromised:
        violations.append(Violation("key_compromised", (
            "This public key belongs to a certificate that was revoked because its key was "
            "compromised: generate a new key pair on the device and a new CSR.")))

    dns, ips, other = requested_names(csr)
    violations += name_violations(dns, ips, other, policy)
    if not dns and not ips and ("serverAuth" in ekus or len(csr.subject) == 0):
        violations.append(Violation("no_names", (
            "The CSR names no host: put the server's DNS name in the subject CN and in a DNS "
            "Subject Alternative Name (for example CN=cucm1.example.test).")))
    cn = csr.common_name or ""
    if len(cn) > MAX_CN_LENGTH:
        violations.append(Violation("common_name_too_long", (
            f"The common name is {len(cn)} characters long; a certificate's CN holds at most "
            f"{MAX_CN_LENGTH}. Use a shorter CN and keep the long name in the Subject Alternative "
            "Names."), cn[:80]))
    subject_problems = subject_violations(csr.subject)
    violations += subject_problems
    subject, left_out = (csr.subject, []) if subject_problems else subjects.certificate_subject(csr.subject)
    if left_out:
        notes.append(f"Left out of the certificate's subject: {', '.join(left_out)}. This CA copies the "
                     "standard fields of a CSR's subject except emailAddress (RFC 5280 deprecates it there).")

    extension_notes, must_staple = requested_extensions(csr.csr, ekus)
    notes += extension_notes

    if validity_days > policy.max_validity_days:
        if policy.over_max_validity == "cap":
            notes.append(f"Validity capped from {validity_days} to {policy.max_validity_days} days.")
            validity_days = policy.max_validity_days
        else:
            violations.append(Violation("validity_too_long", (
                f"A validity of {validity_days} days was asked for; this CA issues for at most "
                f"{policy.max_validity_days} days. Ask for {policy.max_validity_days} days or fewer.")))
    sans = [f"DNS:{n}" for n in dns] + [f"IP:{ip}" for ip in ips]
    return Decision(violations, sans, validity_days, subject, notes, must_staple)


def requested_extensions(csr: x509.CertificateSigningRequest, ekus: tuple[str, ...]) -> tuple[list[str], bool]:
    """(notes, must_staple): what the CSR asked for that the certificate does not carry, said
    rather than dropped in silence (to be a CA; extended key usages its profile does not give: a
    CUCM CSR asks for serverAuth and clientAuth, the server profile gives serverAuth alone), and
    whether it asked for OCSP Must-Staple, which the certificate then carries: this CA always
    answers OCSP, so a server that staples can honour it."""
    notes: list[str] = []
    must_staple = False
    try:
        extensions = list(csr.extensions)
    except ValueError:  # unreadable extensions beyond the SAN: parse_csr took what it needs
        return notes, must_staple
    for ext in extensions:
        if isinstance(ext.value, x509.BasicConstraints) and ext.value.ca:
            notes.append("The CSR asks to be a CA (basicConstraints CA:TRUE); this CA signs end-entity "
                         "certificates only, so the certificate says CA:FALSE.")
        elif isinstance(ext.value, x509.ExtendedKeyUsage):
            asked = [EKU_NAMES.get(oid, oid.dotted_string) for oid in ext.value]
            missing = [name for name in asked if name not in ekus]
            offered = [name for name in missing if name in EKU_OIDS]
            never = [name for name in missing if name not in EKU_OIDS]
            if missing:
                notes.append(f"The CSR also asks for extended key usage {', '.join(missing)}; the certificate "
                             f"has {', '.join(ekus) or 'none'}, as its profile gives."
                             + (f" For {', '.join(offered)}, ask for a profile that gives it (--profile, or the "
                                "form's Profile)." if offered else "")
                             + (f" This CA does not issue {', '.join(never)}." if never else ""))
        elif isinstance(ext.value, x509.TLSFeature):
            must_staple = x509.TLSFeatureType.status_request in ext.value
            others = [feature.name for feature in ext.value if feature != x509.TLSFeatureType.status_request]
            if must_staple:
                notes.append("The certificate carries OCSP Must-Staple, as the CSR asked: the server must staple "
                             "this CA's OCSP answer (nginx: ssl_stapling on; Apache: SSLUseStapling on), or "
                             "browsers refuse the certificate.")
            if others:
                notes.append(f"The CSR also asks for TLS feature {', '.join(others)}; this CA gives "
                             "status_request (Must-Staple) only.")
    return notes, must_staple


def subject_violations(subject: x509.Name) -> list[Violation]:
    """Subject attributes a certificate cannot carry as they are (pki/subjects.py has the rules);
    the CN's length has its own code, common_name_too_long."""
    out: list[Violation] = []
    components = []
    for attribute in subject:
        if attribute.oid == NameOID.COMMON_NAME and len(subjects.text(attribute.value)) > MAX_CN_LENGTH:
            continue
        problem = subjects.value_problem(attribute)
        if problem:
            name = subjects.label(attribute)
            out.append(Violation("subject_invalid", f"The subject's {name} {problem}. Fix {name} in the CSR, or "
                                 "leave it out.", subjects.text(attribute.value)[:80]))
        elif attribute.oid == NameOID.DOMAIN_COMPONENT:
            components.append(subjects.text(attribute.value))
    domain = ".".join(reversed(components))  # DC=example, DC=test is stored test first, as pkilint reads it
    if components and (len(components) < 2 or "*" in components or dns_name_problem(domain)):
        out.append(Violation("subject_invalid", (
            f'The subject\'s DC fields spell "{domain[:80]}", not a domain of two labels or more '
            "(like DC=example, DC=test). Fix them in the CSR, or leave DC out."), domain[:80]))
    return out


def name_violations(
    dns: list[str], ips: list[str], other: list[str], policy: PolicyConfig
) -> list[Violation]:
    out: list[Violation] = []
    if len(dns) + len(ips) + len(other) > MAX_NAMES:
        out.append(Violation("too_many_names", (
            f"The CSR asks for {len(dns) + len(ips) + len(other)} names; at most {MAX_NAMES} fit in one "
            "certificate here. Split the names over several CSRs.")))
        return out
    for name in dns:
        problem = dns_name_problem(name)
        if problem:
            out.append(Violation("dns_name_invalid", (
                f'"{name}" is an IP address written as a DNS name; clients match an address only in an IP '
                f'SAN: put it in the CSR as IP:{name} (openssl: -addext "subjectAltName=IP:{name}").')
                if parse_ip(name) is not None else f'"{name}" is not a valid DNS name: {problem}.', name))
            continue
        if is_wildcard(name) and not policy.allow_wildcards:
            out.append(Violation("wildcard_not_allowed", (
                f'"{name}" is a wildcard name, and wildcards are not allowed by this CA: list each '
                f'host explicitly instead (for example www.{name[2:]}).'), name))
        if policy.allowed_domains and not in_domains(name, policy.allowed_domains):
            out.append(Violation("domain_not_allowed", (
                f'"{name}" is outside the domains this CA issues for '
                f'({", ".join(policy.allowed_domains)}): use a name under one of them.'), name))
    for ip in ips:
        if not policy.allow_ip_sans:
            out.append(Violation("ip_san_not_allowed", (
                f"IP address {ip} cannot be put in a certificate here (IP SANs are turned off): "
                "use a DNS name instead."), ip))
    for entry in other:
        out.append(Violation("san_type_not_allowed", (
            f"The CSR asks for {entry}; this CA puts only DNS names and IP addresses in "
            "certificates: remove it from the CSR's Subject Alternative Names."), entry))
    return out


def _weak_signature_hash(csr: ParsedCSR) -> str | None:
    """"SHA-1" or "MD5" when the CSR is signed with one: cryptography refuses to verify them, which
    must not read as "the CSR was altered" (older CUCM and Windows tools still sign with SHA-1)."""
    try:
        algorithm = csr.csr.signature_hash_algorithm
    except Exception:  # noqa: BLE001 - an algorithm cryptography does not know: not a weak hash
        return None
    return {"sha1": "SHA-1", "md5": "MD5"}.get(getattr(algorithm, "name", ""))


def _key_violations(csr: ParsedCSR, policy: PolicyConfig) -> list[Violation]:
    key = csr.key
    if key.kind not in policy.key_types:
        accepted = ", ".join(
            f"RSA ({policy.min_rsa_bits}-{policy.max_rsa_bits} bits)" if k == "rsa" else KEY_LABELS[k]
            for k in policy.key_types
        )
        return [Violation("key_type_not_allowed", (
            f"The CSR's key is {key.label}; this CA accepts {accepted}. Generate the CSR with one "
            "of those key types."), key.label)]
    if key.kind == "rsa" and key.bits < policy.min_rsa_bits:
        return [Violation("key_too_small", (
            f"The CSR's key is RSA {key.bits} bits, too short to be safe; this CA requires at "
            f"least {policy.min_rsa_bits} bits. Generate a new key of {policy.min_rsa_bits} bits "
            "or more (or an EC P-256 key) and a new CSR."), key.label)]
    if key.kind == "rsa" and key.bits > policy.max_rsa_bits:
        return [Violation("key_too_large", (
            f"The CSR's key is RSA {key.bits} bits; this CA accepts at most {policy.max_rsa_bits}. "
            "Generate a smaller key and a new CSR."), key.label)]
    if key.kind == "rsa":
        numbers = csr.public_key.public_numbers()
        return [Violation("key_weak", f"The CSR's RSA key {flaw}, and a new CSR.", key.label)
                for flaw in rsa_key_flaws(numbers.n, numbers.e)]
    return []
