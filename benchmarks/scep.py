"""SCEP enrollments (issue 26): ca-server's /scep against micromdm's scepserver (Debian `scep`) on
the same work in the same run: PKCSReq by GET (as Cisco IOS sends it), AES-128 envelope, SHA-256
signature, a static challenge, unique common names, RSA 2048 device keys (a pool: SCEP has no rule
against reuse), wrk at concurrency 4, new connection per request, phases alternating.

scepserver gets a 2048-bit RSA CA (its default is 4096) so both open the envelope and sign with
keys of the same size. A phase counts only when a sample of the answers read from each server
just after it says SUCCESS and carries a certificate, and wrk saw no errors on either side;
otherwise the round is reported invalid, never as a ratio."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import quote

import requests
from asn1crypto import cms, core
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7
from cryptography.x509.oid import AttributeOID, NameOID

from .common import free_port, run_wrk, wait_http
from .throughput import PASSPHRASE, Server, make_instance

CHALLENGE = "bench-scep-challenge"
SCEP_OIDS = {"message_type": "2.16.840.1.113733.1.9.2", "pki_status": "2.16.840.1.113733.1.9.3",
             "sender_nonce": "2.16.840.1.113733.1.9.5", "transaction_id": "2.16.840.1.113733.1.9.7"}


def ensure_scepserver() -> bool:
    if shutil.which("scepserver"):
        return True
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq scep",
                       shell=True, capture_output=True, timeout=600)
    return shutil.which("scepserver") is not None


def recipient(url: str) -> x509.Certificate:
    """The certificate to encrypt to: the RA certificate (the RSA one that is no CA) or the CA's."""
    answer = requests.get(f"{url}?operation=GetCACert", timeout=30)
    answer.raise_for_status()
    if answer.headers["Content-Type"] == "application/x-x509-ca-ra-cert":
        return next(c for c in pkcs7.load_der_pkcs7_certificates(answer.content)
                    if isinstance(c.public_key(), rsa.RSAPublicKey)
                    and not c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    return x509.load_der_x509_certificate(answer.content)


def _attr(oid: str, value) -> cms.CMSAttribute:
    return cms.CMSAttribute({"type": cms.CMSAttributeType(oid), "values": [value]})


def pkcs_req(to: x509.Certificate, key: rsa.RSAPrivateKey, cn: str) -> bytes:
    """A PKCSReq pkiMessage (RFC 8894 3.3.1) for `cn`, enveloped to `to` with AES-128-CBC."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    csr = (x509.CertificateSigningRequestBuilder().subject_name(name)
           .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn)]), critical=False)
           .add_attribute(AttributeOID.CHALLENGE_PASSWORD, CHALLENGE.encode())
           .sign(key, hashes.SHA256())).public_bytes(Encoding.DER)
    now = dt.datetime.now(dt.UTC)
    signer = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
              .not_valid_after(now + dt.timedelta(days=1)).sign(key, hashes.SHA256()))
    content_key, iv = os.urandom(16), os.urandom(16)
    pad = 16 - len(csr) % 16
    encryptor = Cipher(algorithms.AES(content_key), modes.CBC(iv)).encryptor()
    encrypted = encryptor.update(csr + bytes([pad]) * pad) + encryptor.finalize()
    to_asn1 = asn1_x509.Certificate.load(to.public_bytes(Encoding.DER))
    envelope = cms.ContentInfo({"content_type": "enveloped_data", "content": cms.EnvelopedData({
        "version": "v0",
        "recipient_infos": [cms.RecipientInfo(name="ktri", value=cms.KeyTransRecipientInfo({
            "version": "v0", "rid": cms.RecipientIdentifier(name="issuer_and_serial_number", value=(
                cms.IssuerAndSerialNumber({"issuer": to_asn1.issuer, "serial_number": to_asn1.serial_number}))),
            "key_encryption_algorithm": {"algorithm": "rsaes_pkcs1v15"},
            "encrypted_key": to.public_key().encrypt(content_key, padding.PKCS1v15())}))],
        "encrypted_content_info": {"content_type": "data", "content_encryption_algorithm": {
            "algorithm": "aes128_cbc", "parameters": core.OctetString(iv)}, "encrypted_content": encrypted}})}).dump()
    attrs = cms.CMSAttributes([
        _attr("1.2.840.113549.1.9.3", cms.ContentType("data")),
        _attr("1.2.840.113549.1.9.4", core.OctetString(hashlib.sha256(envelope).digest())),
        _attr(SCEP_OIDS["message_type"], core.PrintableString("19")),
        _attr(SCEP_OIDS["transaction_id"], core.PrintableString(hashlib.sha256(os.urandom(16)).hexdigest())),
        _attr(SCEP_OIDS["sender_nonce"], core.OctetString(os.urandom(16)))])
    signer_asn1 = asn1_x509.Certificate.load(signer.public_bytes(Encoding.DER))
    signer_info = cms.SignerInfo({
        "version": "v1", "sid": cms.SignerIdentifier(name="issuer_and_serial_number", value=cms.IssuerAndSerialNumber(
            {"issuer": signer_asn1.issuer, "serial_number": signer_asn1.serial_number})),
        "digest_algorithm": {"algorithm": "sha256"}, "signed_attrs": attrs,
        "signature_algorithm": {"algorithm": "rsassa_pkcs1v15"},
        "signature": key.sign(attrs.dump(), padding.PKCS1v15(), hashes.SHA256())})
    return cms.ContentInfo({"content_type": "signed_data", "content": cms.SignedData({
        "version": "v1", "digest_algorithms": [{"algorithm": "sha256"}],
        "encap_content_info": {"content_type": "data", "content": envelope},
        "certificates": [signer_asn1], "signer_infos": [signer_info]})}).dump()


def succeeded(answer: bytes) -> bool:
    """Whether a CertRep says SUCCESS and carries an envelope (the certificate)."""
    try:
        signed = cms.ContentInfo.load(answer)["content"]
        attrs = {a["type"].dotted: a["values"][0] for a in signed["signer_infos"][0]["signed_attrs"]}
        status = core.PrintableString.load(attrs[SCEP_OIDS["pki_status"]].dump()).native
        return status == "0" and bool(signed["encap_content_info"]["content"].native)
    except (ValueError, KeyError, IndexError, TypeError):
        return False


def paths_file(folder: Path, name: str, url_path: str, to: x509.Certificate, keys: list, count: int) -> Path:
    lines = [f"{url_path}?operation=PKIOperation&message="
             f"{quote(base64.b64encode(pkcs_req(to, keys[i % len(keys)], f'{name}{i}.scep.bench.test')).decode())}"
             for i in range(count)]
    target = folder / f"{name}-paths.txt"
    target.write_text("\n".join(lines) + "\n")
    return target


def sample_ok(base: str, to: x509.Certificate, key) -> bool:
    message = pkcs_req(to, key, f"sample{os.urandom(4).hex()}.scep.bench.test")
    answer = requests.get(f"{base}?operation=PKIOperation&message={quote(base64.b64encode(message).decode())}",
                          timeout=30)
    return answer.status_code == 200 and succeeded(answer.content)


def phase(server: Server, base: str, paths: Path, seconds: float, concurrency: int) -> dict:
    run_wrk(base, paths, concurrency=concurrency, seconds=1, headers={}, fresh_connections=True, get_paths=True)
    cpu0 = server.cpu()
    result = run_wrk(base, paths, concurrency=concurrency, seconds=seconds, headers={}, fresh_connections=True,
                     get_paths=True)
    cpu1 = server.cpu()
    ok = result["requests"] - result["status_errors"]
    return {"eps": round(ok / (result["duration_us"] / 1e6), 1), "cpu_ms": round((cpu1 - cpu0) * 1000 / max(ok, 1), 2),
            "errors": result["status_errors"] + result["socket_errors"], "status_errors": result["status_errors"],
            "p50_ms": result["p50_us"] / 1000}


def _stored(root: Path) -> int:
    with sqlite3.connect(root / "ca.sqlite3") as db:
        return db.execute("SELECT count(*) FROM certificates").fetchone()[0]


def measure(seconds: float, log, rounds: int = 3, concurrency: int = 4) -> dict:
    if not ensure_scepserver():
        log("  scepserver (Debian scep) is not installed and could not be; no SCEP comparison")
        return {}
    with tempfile.TemporaryDirectory(prefix="ca-bench-scep-") as tmp:
        folder = Path(tmp)
        root = make_instance(folder / "instance")
        text = (root / "config.toml").read_text()
        (root / "config.toml").write_text(text + "\n[scep]\nenabled = true\n")
        port, peer_port = free_port(), free_port()
        ours = Server([sys.executable, "-m", "ca_server", "--instance", str(root), "serve", "--host", "127.0.0.1",
                       "--port", str(port), "--workers", "2"], root / "serve.log",
                      {"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE, "CA_SERVER_SCEP_CHALLENGE": CHALLENGE})
        depot = folder / "depot"
        subprocess.run(["scepserver", "ca", "-init", "-depot", str(depot), "-keySize", "2048"], check=True,
                       capture_output=True, timeout=120)
        peer = Server(["scepserver", "-depot", str(depot), "-port", str(peer_port), "-challenge", CHALLENGE,
                       "-allowrenew", "0"], folder / "scepserver.log")
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz")
            ours_url, peer_url = f"http://127.0.0.1:{port}/scep", f"http://127.0.0.1:{peer_port}/scep"
            wait_http(f"{peer_url}?operation=GetCACaps")
            keys = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(8)]
            ours_to, peer_to = recipient(ours_url), recipient(peer_url)
            count = max(200, int(seconds * 150))
            ours_paths = paths_file(folder, "ours", "/scep", ours_to, keys, count)
            peer_paths = paths_file(folder, "peer", "/scep", peer_to, keys, count)
            out: dict = {"rounds": [], "concurrency": concurrency}
            for r in range(rounds):
                stored = _stored(root)
                row = {"ca_server": phase(ours, ours_url, ours_paths, seconds, concurrency)}
                # every enrollment answered is a certificate in the store (the warm-up's too)
                row["ca_server"]["stored"] = _stored(root) - stored
                row["scepserver"] = phase(peer, peer_url, peer_paths, seconds, concurrency)
                row["valid"] = (sample_ok(ours_url, ours_to, keys[0]) and sample_ok(peer_url, peer_to, keys[0])
                                and not row["ca_server"]["errors"] and not row["scepserver"]["errors"]
                                and row["ca_server"]["stored"] >= row["ca_server"]["eps"] * seconds * 0.9)
                if row["valid"]:
                    row["eps_ratio"] = round(row["ca_server"]["eps"] / row["scepserver"]["eps"], 3)
                    row["cpu_ratio"] = round(row["ca_server"]["cpu_ms"] / row["scepserver"]["cpu_ms"], 3)
                out["rounds"].append(row)
                log(f"  round {r + 1}: ca-server {row['ca_server']}, scepserver {row['scepserver']}, "
                    + (f"enrollments/s ratio {row['eps_ratio']}, CPU/enrollment ratio {row['cpu_ratio']}"
                       if row["valid"] else "INVALID (errors or a sample answer that was not SUCCESS)"))
            return out
        finally:
            ours.stop()
            peer.stop()


if __name__ == "__main__":
    import json

    print(json.dumps(measure(float(sys.argv[1]) if len(sys.argv) > 1 else 10,
                             lambda m: print(m, file=sys.stderr, flush=True)), indent=2))
