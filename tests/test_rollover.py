"""Issue 20, intermediate rollover: `ca-server intermediate rollover` (root online, or the offline
ceremony with `root sign-intermediate`) makes a new intermediate that a running server issues from
at once; the old one's certificates keep verifying with the chains the server hands out, and
their revocation shows in the old intermediate's CRL and OCSP. Checked with openssl and real servers."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

from ca_server import accounts, scheduler
from ca_server.ca import rollover
from ca_server.cli import main
from ca_server.config import Secrets
from ca_server.display import moment_text
from ca_server.errors import BadRequestError
from ca_server.services import open_services

from .checks import assert_pkilint_clean, run_openssl
from .conftest import PASSPHRASE, ROOT_PASSPHRASE, new_token, sign_in
from .factories import make_csr, pem
from .server import free_port, issue_verified, running_server
from .server import run_cli as cli
from .smtp import SMTPServer, write_config


def served(instance: Path) -> tuple[str, int]:
    """Point base_url at the port the server will have, so the URLs in certificates are fetchable."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    write_config(instance, server={"base_url": base})
    return base, port


def svc_base_url(instance: Path) -> str:
    return open_services(instance, secrets=Secrets(key_passphrase=PASSPHRASE)).config.server.base_url


def crl_url(cert: x509.Certificate) -> str:
    points = cert.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    return points[0].full_name[0].value


def ca_issuers_url(cert: x509.Certificate) -> str:
    aia = cert.extensions.get_extension_for_class(x509.AuthorityInformationAccess).value
    return next(d.access_location.value for d in aia if d.access_method == AuthorityInformationAccessOID.CA_ISSUERS)


def ocsp_status(base: str, issuer: Path, leaf: Path, root: Path) -> str:
    asked = run_openssl("ocsp", "-issuer", str(issuer), "-cert", str(leaf), "-url", f"{base}/ocsp", "-CAfile", str(root))
    return (asked.stdout + asked.stderr).decode()


def save_chain_parts(made: dict, folder: Path, name: str) -> tuple[Path, Path, x509.Certificate]:
    """(leaf.pem, its intermediate.pem, the leaf) from a certificate JSON's "chain"."""
    leaf_pem, intermediate_pem = made["chain"].split("-----END CERTIFICATE-----\n")[:2]
    leaf, issuer = folder / f"{name}-leaf.pem", folder / f"{name}-issuer.pem"
    leaf.write_text(leaf_pem + "-----END CERTIFICATE-----\n")
    issuer.write_text(intermediate_pem + "-----END CERTIFICATE-----\n")
    return leaf, issuer, x509.load_pem_x509_certificate(leaf.read_bytes())


def test_rollover_on_a_running_server_old_and_new_certificates_verify_and_revoke_apart(instance, tmp_path):
    base, port = served(instance)
    svc = open_services(instance, secrets=Secrets(key_passphrase=PASSPHRASE))
    token = new_token(svc)
    auth = {"Authorization": f"Bearer {token}"}
    root = instance / "ca" / "root.pem"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with running_server(instance, port=port) as url:
        assert url == base
        old, _, _ = issue_verified(base, token, "before.example.test", root, tmp_path / "a")
        old_leaf, old_issuer, old_cert = save_chain_parts(old, tmp_path, "old")

        rolled = cli("--instance", str(instance), "intermediate", "rollover",
                     env={"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE})
        assert rolled.returncode == 0, rolled.stderr
        assert "Example Org Issuing CA G2" in rolled.stdout and "now issues" in rolled.stdout

        new, _, _ = issue_verified(base, token, "after.example.test", root, tmp_path / "b")  # no restart
        new_leaf, new_issuer, new_cert = save_chain_parts(new, tmp_path, "new")
        assert new_cert.issuer != old_cert.issuer
        assert new["issuer"] == "CN=Example Org Issuing CA G2,O=Example Org"
        # Every worker (2) issues from it: a dozen more requests, each on a new connection.
        issuers = {requests.post(f"{base}/api/v1/certificates", json={"csr": pem(make_csr([f"w{i}.example.test"]))},
                                 headers=auth, timeout=30).json()["issuer"] for i in range(12)}
        assert issuers == {new["issuer"]}
        assert old_cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "Example Org Issuing CA"

        # Each certificate's own chain (download and JSON) names its own intermediate; both verify.
        for made, leaf in ((old, old_leaf), (new, new_leaf)):
            chain = tmp_path / f"chain-{made['serial']}.pem"
            chain.write_bytes(requests.get(f"{base}/certificates/{made['serial']}/chain.pem", headers=auth, timeout=10).content)
            assert chain.read_text() == made["chain"]
            verified = run_openssl("verify", "-CAfile", str(root), "-untrusted", str(chain), str(leaf))
            assert verified.returncode == 0, verified.stdout + verified.stderr
            again = requests.get(f"{base}/api/v1/certificates/{made['serial']}", headers=auth, timeout=10).json()
            assert again["chain"] == made["chain"]
        # The old chain does not verify the new certificate: the intermediates really differ.
        crossed = run_openssl("verify", "-CAfile", str(root), "-untrusted", str(old_issuer), str(new_leaf))
        assert crossed.returncode != 0

        # /ca/chain.pem and /ca/intermediate.* are the issuing intermediate's; each is kept by number.
        ca_chain = tmp_path / "ca-chain.pem"
        ca_chain.write_bytes(requests.get(f"{base}/ca/chain.pem", timeout=10).content)
        assert x509.load_pem_x509_certificates(ca_chain.read_bytes())[0].subject == new_cert.issuer
        assert run_openssl("verify", "-CAfile", str(root), "-untrusted", str(ca_chain), str(new_leaf)).returncode == 0
        assert requests.get(f"{base}/ca/intermediate.pem", timeout=10).text == new_issuer.read_text()
        assert requests.get(f"{base}/ca/intermediate-1.pem", timeout=10).text == old_issuer.read_text()
        assert requests.get(f"{base}/ca/intermediate-2.pem", timeout=10).text == new_issuer.read_text()
        assert requests.get(f"{base}/ca/intermediate-3.pem", timeout=10).status_code == 404
        # The new leaves' URLs lead to the new intermediate's own certificate and CRL.
        assert crl_url(new_cert) == f"{base}/crl/intermediate-2.crl"
        assert crl_url(old_cert) == f"{base}/crl/intermediate.crl"
        aia = requests.get(ca_issuers_url(new_cert), timeout=10)
        assert x509.load_der_x509_certificate(aia.content).subject == new_cert.issuer
        hierarchy = requests.get(f"{base}/api/v1/ca", headers=auth, timeout=10).json()
        assert set(hierarchy) == {"root", "intermediate", "intermediate-1"}
        assert hierarchy["intermediate"]["subject"] == new["issuer"] and hierarchy["intermediate"]["issuing"]
        assert hierarchy["intermediate-1"]["subject"] == old["issuer"] and not hierarchy["intermediate-1"]["issuing"]
        assert hierarchy["intermediate-1"]["urls"]["crl"] == f"{base}/crl/intermediate.crl"

        # Both answer OCSP, each for its own certificates.
        assert f"{old_leaf}: good" in ocsp_status(base, old_issuer, old_leaf, root)
        assert f"{new_leaf}: good" in ocsp_status(base, new_issuer, new_leaf, root)
        assert "unauthorized" in ocsp_status(base, new_issuer, old_leaf, root)  # asked of the wrong issuer

        revoked = requests.post(f"{base}/api/v1/certificates/{old['serial']}/revoke", json={"reason": "keyCompromise"},
                                headers=auth, timeout=30)
        assert revoked.status_code == 200, revoked.text
        assert f"{old_leaf}: revoked" in ocsp_status(base, old_issuer, old_leaf, root)
        assert f"{new_leaf}: good" in ocsp_status(base, new_issuer, new_leaf, root)

        old_crl, new_crl = tmp_path / "old.crl", tmp_path / "new.crl"
        old_crl.write_bytes(requests.get(crl_url(old_cert), timeout=10).content)
        new_crl.write_bytes(requests.get(crl_url(new_cert), timeout=10).content)
        for crl_file, issuer in ((old_crl, old_issuer), (new_crl, new_issuer)):
            checked = run_openssl("crl", "-inform", "DER", "-in", str(crl_file), "-CAfile", str(issuer), "-noout")
            assert b"verify OK" in checked.stdout + checked.stderr
        listed = lambda path: {r.serial_number for r in x509.load_der_x509_crl(path.read_bytes())}  # noqa: E731
        assert listed(old_crl) == {old_cert.serial_number} and listed(new_crl) == set()
        # openssl's own revocation check of the old certificate with its chain and CRL.
        crl_pem = tmp_path / "old-crl.pem"
        crl_pem.write_bytes(run_openssl("crl", "-inform", "DER", "-in", str(old_crl)).stdout)
        checked = run_openssl("verify", "-crl_check", "-CAfile", str(root), "-untrusted", str(old_issuer),
                              "-CRLfile", str(crl_pem), str(old_leaf))
        assert checked.returncode != 0 and b"certificate revoked" in checked.stdout + checked.stderr

        requests.post(f"{base}/api/v1/certificates/{new['serial']}/revoke", json={}, headers=auth, timeout=30)
        new_crl.write_bytes(requests.get(crl_url(new_cert), timeout=10).content)
        old_crl.write_bytes(requests.get(crl_url(old_cert), timeout=10).content)
        assert listed(new_crl) == {new_cert.serial_number} and listed(old_crl) == {old_cert.serial_number}
        assert f"{new_leaf}: revoked" in ocsp_status(base, new_issuer, new_leaf, root)

    assert_pkilint_clean(instance / "ca" / "intermediate-2.pem")
    new_intermediate = x509.load_pem_x509_certificate(new_issuer.read_bytes())
    [entry] = svc.store.audit_entries(action="intermediate_rollover")
    assert entry["actor"].startswith("cli:") and int(entry["serial"], 16) == new_intermediate.serial_number
    assert entry["detail"]["key"] == "keys/intermediate-2.key.pem" and entry["detail"]["generation"] == 2


def test_the_offline_ceremony_signs_a_new_intermediate_that_takes_over_issuance(offline, tmp_path):
    instance, root_dir = offline
    base, port = served(instance)
    svc = open_services(instance, secrets=Secrets(key_passphrase=PASSPHRASE))
    token = new_token(svc)
    root = instance / "ca" / "root.pem"
    server_env = {"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE}
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
    with running_server(instance, port=port):
        first, _, _ = issue_verified(base, token, "first.example.test", root, tmp_path / "a")
        asked = cli("--instance", str(instance), "intermediate", "rollover", env=server_env)
        assert asked.returncode == 0, asked.stderr
        assert "The root key is offline" in asked.stdout and "root sign-intermediate" in asked.stdout
        csr_file = instance / "ca" / "intermediate-2.csr"
        assert csr_file.exists() and not (instance / "ca" / "intermediate-2.pem").exists()
        # Until the certificate comes back, the first intermediate goes on issuing.
        waiting, _, _ = issue_verified(base, token, "waiting.example.test", root, tmp_path / "b")
        assert waiting["issuer"] == first["issuer"]

        # The ceremony: a machine with the root folder and the request, no instance, no server passphrase.
        carried = root_dir.parent / "intermediate-2.csr"
        carried.write_bytes(csr_file.read_bytes())
        signed = cli("root", "sign-intermediate", str(carried), "--root-dir", str(root_dir),
                     env={"CA_SERVER_ROOT_PASSPHRASE": ROOT_PASSPHRASE, "CA_SERVER_KEY_PASSPHRASE": ""})
        assert signed.returncode == 0, signed.stderr
        cert_file = root_dir.parent / "intermediate-2.crt"
        assert f"Wrote {cert_file}" in signed.stdout
        assert run_openssl("verify", "-CAfile", str(root), str(cert_file)).returncode == 0
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        assert crl_url(cert) == f"{base}/crl/root.crl"  # the server's URL, carried in the request
        # Inside the root's folder, neither command needs to be told where it is.
        ceremony = {"CA_SERVER_ROOT_PASSPHRASE": ROOT_PASSPHRASE, "CA_SERVER_KEY_PASSPHRASE": ""}
        here = cli("root", "sign-intermediate", str(carried), "--out", str(tmp_path / "spare.pem"), cwd=root_dir,
                   env=ceremony)
        assert here.returncode == 0 and (tmp_path / "spare.pem").exists(), here.stderr
        crl_here = cli("root", "sign-crl", cwd=root_dir, env=ceremony)
        assert crl_here.returncode == 0 and "Signed root CRL" in crl_here.stdout, crl_here.stderr
        nowhere = cli("root", "sign-crl", cwd=tmp_path, env=ceremony)
        assert nowhere.returncode == 1 and "Where is the root's folder?" in nowhere.stderr
        # A request made elsewhere, signed in the folder with no instance: the URL the folder was made with.
        made = run_openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                           "-keyout", str(tmp_path / "x.key"), "-out", str(tmp_path / "x.csr"), "-subj", "/CN=X CA")
        assert made.returncode == 0, made.stderr
        elsewhere = cli("root", "sign-intermediate", str(tmp_path / "x.csr"), cwd=root_dir, env=ceremony)
        assert elsewhere.returncode == 0, elsewhere.stderr
        folder_url = json.loads((root_dir / "root-crl-state.json").read_text())["base_url"]
        assert folder_url == "http://127.0.0.1:5000"  # what the config said at `init`
        assert crl_url(x509.load_pem_x509_certificate((tmp_path / "x.crt").read_bytes())) == f"{folder_url}/crl/root.crl"
        # Signed in place (the root folder mounted on the server): a .crt beside the request, which is
        # not yet an intermediate of the instance: nothing changes until it is installed.
        in_place = cli("root", "sign-intermediate", str(csr_file), "--root-dir", str(root_dir), env=ceremony)
        assert in_place.returncode == 0 and (instance / "ca" / "intermediate-2.crt").exists(), in_place.stderr
        assert requests.get(f"{base}/ca/intermediate-2.pem", timeout=10).status_code == 404
        logged = json.loads((root_dir / "root-crl-state.json").read_text())["signed_intermediates"][0]
        assert int(logged["serial"], 16) == cert.serial_number and logged["by"].startswith("cli:")

        wrong = cli("--instance", str(instance), "intermediate", "rollover", "--certificate",
                    str(instance / "ca" / "intermediate.pem"), env=server_env)
        assert wrong.returncode == 1 and "not for the key of the waiting rollover" in wrong.stderr
        installed = cli("--instance", str(instance), "intermediate", "rollover", str(cert_file), env=server_env)
        assert installed.returncode == 0 and "now issues" in installed.stdout, installed.stderr
        assert not csr_file.exists()

        after, _, _ = issue_verified(base, token, "after.example.test", root, tmp_path / "c")
        assert after["issuer"] == cert.subject.rfc4514_string()
        again = cli("--instance", str(instance), "intermediate", "import", str(instance / "ca" / "intermediate-2.crt"),
                    env=server_env)
        assert again.returncode == 1 and "No rollover is waiting" in again.stderr
        listed = cli("--instance", str(instance), "intermediate", "list", env=server_env)
        assert "issuing" in listed.stdout and "2 certificate(s) valid" in listed.stdout, listed.stdout
    assert not (instance / "keys" / "root.key.pem").exists()
    # Each key operation is in the audit log: who, when, which key.
    audit = {e["action"]: e for e in svc.store.audit_entries()}
    assert audit["ca_created"]["detail"]["root_key"] == str(root_dir)
    assert audit["intermediate_key_created"]["detail"] == {"generation": 2, "key": "keys/intermediate-2.key.pem"}
    assert audit["intermediate_rollover"]["detail"]["generation"] == 2
    assert all(audit[a]["actor"].startswith("cli:") and audit[a]["at"] for a in
               ("ca_created", "intermediate_key_created", "intermediate_rollover"))


def test_sign_intermediate_refuses_what_it_must_not_sign(instance, svc):
    now = dt.datetime.now(dt.UTC)
    authority = svc.authority
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Somebody CA")])
    plain = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    with pytest.raises(BadRequestError, match="base URL"):
        rollover.sign_request(plain.public_bytes(Encoding.PEM), authority.root, authority.root_key, now, 365)
    made = rollover.sign_request(plain.public_bytes(Encoding.PEM), authority.root, authority.root_key, now, 365,
                                 base_url="https://ca.example.test")
    assert crl_url(made) == "https://ca.example.test/crl/root.crl"
    assert made.not_valid_after_utc <= authority.root.not_valid_after_utc
    with pytest.raises(BadRequestError, match="not a readable certificate request"):
        rollover.sign_request(b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
                              authority.root, authority.root_key, now, 365)
    der = bytearray(plain.public_bytes(Encoding.DER))
    der[-5] ^= 0x01  # a flipped bit in the signature
    with pytest.raises(BadRequestError, match="signature does not verify"):
        rollover.sign_request(bytes(der), authority.root, authority.root_key, now, 365, base_url="https://x.test")
    # A server's CSR handed to the root by mistake was signed as an intermediate CA (found walking the CLI).
    for extension, words in ((x509.SubjectAlternativeName([x509.DNSName("host.example.test")]),
                              "it names DNS:host.example.test"),
                             (x509.BasicConstraints(ca=False, path_length=None), "CA:FALSE"),
                             (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), "serverAuth")):
        leaf = x509.CertificateSigningRequestBuilder().subject_name(name).add_extension(extension, critical=False)
        with pytest.raises(BadRequestError, match=f"end-entity certificate .*{words}"):
            rollover.sign_request(leaf.sign(key, hashes.SHA256()).public_bytes(Encoding.PEM), authority.root,
                                  authority.root_key, now, 365, base_url="https://ca.example.test")


def test_the_dashboard_shows_both_intermediates_and_when_the_old_one_can_be_retired(instance, web, svc, api):
    made = api.post("/api/v1/certificates", json={"csr": pem(make_csr(["kept.example.test"]))}).get_json()
    now = dt.datetime.now(dt.UTC)
    rollover.rollover_online(svc.authority, svc.store, svc.config, now, actor="test")
    page = web.get("/").get_data(as_text=True)
    assert "Example Org Issuing CA G2" in page and "Previous intermediate CA" in page
    assert "1 certificate it issued is still valid" in page
    assert f"retired after <time datetime=\"{made['not_after']}\">{moment_text(made['not_after'])}</time>" in page
    assert "/ca/intermediate-1.pem" in page and "/crl/intermediate.crl" in page
    assert "nears its end" not in page


def test_an_intermediate_near_its_end_warns_on_the_dashboard_and_mails_the_admins_once(instance, make_app):
    smtp = SMTPServer().start()
    try:
        write_config(instance, mail={"host": "127.0.0.1", "port": smtp.port, "security": "none"},
                     ca={"intermediate_warning_days": 1900})  # beyond its 1825 days: it warns today
        app = make_app()
        svc = app.extensions["ca_server"]
        accounts.add_user(svc.store, "ops", "ops-password-long", is_admin=True, domains=(), allow_ip=True,
                          email="ops@example.test", now=dt.datetime.now(dt.UTC))
        client = app.test_client()
        sign_in(client, "ops", "ops-password-long")
        page = client.get("/").get_data(as_text=True)
        assert "The intermediate nears its end" in page and "ca-server intermediate rollover" in page
        env = {"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE}
        dry = CliRunner().invoke(main, ["--instance", str(instance), "remind", "--dry-run"], env=env)
        assert dry.exit_code == 0 and "CA warning (would mail the admins): The issuing intermediate" in dry.output
        assert smtp.inbox.messages == []
        # `ca-server remind` mails it; the CRL job on two nodes afterwards does not again.
        reminded = CliRunner().invoke(main, ["--instance", str(instance), "remind"], env=env)
        assert reminded.exit_code == 0 and "CA warning (mailed ops@example.test)" in reminded.output, reminded.output
        other_node = open_services(instance, secrets=Secrets(key_passphrase=PASSPHRASE))
        for node in (svc, other_node, svc):
            scheduler.crl_job(node)
        assert len(smtp.inbox.messages) == 1
        message = smtp.inbox.messages[0]
        assert message["To"] == "ops@example.test" and "roll a new intermediate in" in message["Subject"]
        assert re.search(r"ends in 18\d\d day\(s\)", message.get_body(("plain",)).get_content())
        # After a rollover the new one is far from its end: no warning, and its own mail would be new.
        rollover.rollover_online(svc.authority, svc.store, svc.config, dt.datetime.now(dt.UTC), actor="test")
        write_config(instance, ca={"intermediate_warning_days": 365})
        page = make_app().test_client()
        sign_in(page, "ops", "ops-password-long")
        assert "nears its end" not in page.get("/").get_data(as_text=True)
    finally:
        smtp.stop()


def test_root_sign_intermediate_signs_an_openssl_request_with_the_instance_root(instance, tmp_path, monkeypatch):
    """A request made elsewhere (openssl, an HSM's tool) carries no server URL: the instance's, or --base-url."""
    monkeypatch.setenv("CA_SERVER_INSTANCE", str(instance))
    monkeypatch.setenv("CA_SERVER_KEY_PASSPHRASE", PASSPHRASE)
    key, csr = tmp_path / "other.key", tmp_path / "other.csr"
    made = run_openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                       "-keyout", str(key), "-out", str(csr), "-subj", "/O=Example Org/CN=Example Org Issuing CA G9")
    assert made.returncode == 0, made.stderr
    plain = CliRunner().invoke(main, ["root", "sign-intermediate", str(csr), "--out", str(tmp_path / "plain.crt")])
    assert plain.exit_code == 0, plain.output  # the instance's base URL for its links
    made_plain = x509.load_pem_x509_certificate((tmp_path / "plain.crt").read_bytes())
    assert crl_url(made_plain) == f"{svc_base_url(instance)}/crl/root.crl"
    signed = CliRunner().invoke(main, ["root", "sign-intermediate", str(csr), "--base-url", "https://ca.example.test",
                                       "--days", "400"])
    assert signed.exit_code == 0, signed.output
    cert_file = tmp_path / "other.crt"
    assert run_openssl("verify", "-CAfile", str(instance / "ca" / "root.pem"), str(cert_file)).returncode == 0
    cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 400
    assert crl_url(cert) == "https://ca.example.test/crl/root.crl"
    # Not the waiting rollover's key (there is none): the instance refuses to install it.
    installed = CliRunner().invoke(main, ["intermediate", "import", str(cert_file)])
    assert installed.exit_code == 1 and "No rollover is waiting" in installed.output


def test_an_earlier_intermediate_can_be_put_on_the_root_crl(instance, svc, tmp_path):
    old = svc.authority.current
    rollover.rollover_online(svc.authority, svc.store, svc.config, dt.datetime.now(dt.UTC), actor="test")
    revoked = CliRunner().invoke(main, ["--instance", str(instance), "revoke-intermediate", "--generation", "1",
                                        "--reason", "superseded", "--yes"],
                                 env={"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE})
    assert revoked.exit_code == 0, revoked.output
    root_crl = x509.load_der_x509_crl(svc.crls.current("root", dt.datetime.now(dt.UTC)).der)
    entry = root_crl.get_revoked_certificate_by_serial_number(old.cert.serial_number)
    assert entry is not None and root_crl.get_revoked_certificate_by_serial_number(
        svc.authority.current.cert.serial_number) is None
    missing = CliRunner().invoke(main, ["--instance", str(instance), "revoke-intermediate", "--generation", "7", "--yes"],
                                 env={"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE})
    assert missing.exit_code == 1 and "There is no intermediate 7" in missing.output


def test_an_old_intermediate_is_retired_only_when_nothing_it_issued_is_valid(instance, svc, api, tmp_path):
    made = api.post("/api/v1/certificates", json={"csr": pem(make_csr(["old.example.test"]))}).get_json()
    now = dt.datetime.now(dt.UTC)
    rollover.rollover_online(svc.authority, svc.store, svc.config, now, actor="test")
    env = {"CA_SERVER_KEY_PASSPHRASE": PASSPHRASE}
    run = lambda *args: CliRunner().invoke(main, ["--instance", str(instance), "intermediate", *args], env=env)  # noqa: E731
    current = run("retire", "2")
    assert current.exit_code == 1 and "cannot be retired: roll a new one in first" in current.output
    early = run("retire", "1")
    assert early.exit_code == 1 and f"valid until {made['not_after']}" in early.output
    assert (instance / "keys" / "intermediate.key.pem").exists()

    retired = run("retire", "1", "--force")
    assert retired.exit_code == 0 and "removed keys/intermediate.key.pem" in retired.output
    assert not (instance / "keys" / "intermediate.key.pem").exists()
    assert "retired (its key is destroyed)" in run("list").output
    assert run("retire", "1").exit_code == 1
    [entry] = svc.store.audit_entries(action="intermediate_retired")
    assert entry["detail"]["key"] == "keys/intermediate.key.pem" and entry["detail"]["valid_certificates"] == 1

    # Its last CRL is served on, even lapsed; the CRL job passes it by; revoking its certificate
    # still works; the new one issues.
    client = api.client
    later = now + dt.timedelta(days=30)
    assert client.get("/crl/intermediate.crl").status_code == 200
    last = svc.store.latest_crl("intermediate", with_der=False)
    lapsed = svc.crls.current("intermediate", later)  # served, not rebuilt (no key to sign with)
    assert lapsed.number == last["number"] and lapsed.next_update < later
    # The CRL job refreshes the new intermediate's CRL (the root's lasts a year) and passes the retired one by.
    assert [c.issuer for c in scheduler.revocation.refresh_crls(svc.config, svc.store, svc.authority, later)] == \
        ["intermediate-2"]
    revoked = api.post(f"/api/v1/certificates/{made['serial']}/revoke", json={"reason": "superseded"})
    assert revoked.status_code == 200, revoked.get_data(as_text=True)
    fresh = api.post("/api/v1/certificates", json={"csr": pem(make_csr(["new.example.test"]))})
    assert fresh.status_code == 201 and fresh.get_json()["issuer"].startswith("CN=Example Org Issuing CA G2")


def test_inspect_knows_the_certificates_and_certificates_of_every_intermediate(instance, svc, api):
    old = api.post("/api/v1/certificates", json={"csr": pem(make_csr(["old.example.test"]))}).get_json()
    old_intermediate = svc.authority.current.pem
    rollover.rollover_online(svc.authority, svc.store, svc.config, dt.datetime.now(dt.UTC), actor="test")
    new = api.post("/api/v1/certificates", json={"csr": pem(make_csr(["new.example.test"]))}).get_json()
    for made in (old, new):
        found = api.post("/api/v1/inspect", json={"pem": made["certificate"], "hostname": made["sans"][0][4:]})
        body = found.get_json()
        assert found.status_code == 200 and body["verdict"] == "issued_here", body
        assert body["chain"]["valid"], body["chain"]
        assert body["hostname"]["accepted"], body["hostname"]  # path validation with every intermediate
    for ca_pem in (old_intermediate, svc.authority.current.pem):
        body = api.post("/api/v1/inspect", json={"pem": ca_pem}).get_json()
        assert body["verdict"] == "issued_here", body
