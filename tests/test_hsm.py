"""Issue 20, the intermediate key in a PKCS#11 token (SoftHSM2): `init` with the key pair created
in the token, then the whole path (issuance, revocation, OCSP, CRL) through a real server whose
every intermediate signature is made by the token; verified with openssl."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pkcs11
import pytest
import requests
from click.testing import CliRunner
from cryptography import x509
from pkcs11 import Attribute, KeyType
from pkcs11.util.ec import encode_named_curve_parameters

from ca_server.ca.authority import InstancePaths
from ca_server.cli import main
from ca_server.config import Secrets
from ca_server.services import open_services

from .checks import run_openssl
from .conftest import PASSPHRASE, new_token
from .server import issue_verified, running_server

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
PIN = "4711-pin"
URI = f"pkcs11:token=ca-test;object=intermediate?module-path={SOFTHSM}"


@pytest.fixture
def token(tmp_path, monkeypatch) -> Path:
    """A SoftHSM2 token "ca-test" holding an EC P-256 key pair labelled "intermediate"."""
    if not Path(SOFTHSM).exists():
        pytest.fail("SoftHSM2 is missing: `make test` installs Debian's softhsm2")
    tokens = tmp_path / "softhsm-tokens"
    tokens.mkdir()
    conf = tmp_path / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n")
    monkeypatch.setenv("SOFTHSM2_CONF", str(conf))
    made = subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "ca-test", "--pin", PIN,
                           "--so-pin", "so-secret"], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    lib = pkcs11.lib(SOFTHSM)
    lib.reinitialize()  # SoftHSM reads SOFTHSM2_CONF when initialized
    with lib.get_token(token_label="ca-test").open(user_pin=PIN, rw=True) as session:
        params = session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True)
        params.generate_keypair(store=True, label="intermediate")
    return tokens


@pytest.fixture
def hsm_instance(token, tmp_path, monkeypatch) -> Path:
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "config.toml").write_text(f'[ca]\nintermediate_key = "{URI}"\n')
    monkeypatch.setenv("CA_SERVER_INSTANCE", str(instance))
    monkeypatch.setenv("CA_SERVER_KEY_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("CA_SERVER_PKCS11_PIN", PIN)
    made = CliRunner().invoke(main, ["init", "--no-admin"])
    assert made.exit_code == 0, made.output
    return instance


def test_init_keeps_the_intermediate_key_in_the_token(hsm_instance):
    paths = InstancePaths(hsm_instance)
    assert not paths.intermediate_key.exists()
    files_with_keys = {p for p in hsm_instance.rglob("*") if p.is_file() and b"PRIVATE KEY" in p.read_bytes()}
    # The root's (encrypted) and the issuance log's checkpoint key (Ed25519, encrypted, signs no
    # certificate); nothing of the intermediate.
    assert files_with_keys == {paths.root_key, paths.keys / "log-key.pem"}
    svc = open_services(hsm_instance, secrets=Secrets(key_passphrase=PASSPHRASE, pkcs11_pin=PIN))
    key = svc.authority.intermediate_key
    assert key.public_key() == svc.authority.intermediate.public_key()
    with pytest.raises(TypeError, match="never leaves the token"):
        key.private_bytes(None, None, None)
    checked = run_openssl("verify", "-CAfile", str(paths.root_cert), str(paths.intermediate_cert))
    assert checked.returncode == 0, checked.stderr


def test_issue_revoke_ocsp_and_crl_with_the_key_in_the_token(hsm_instance, tmp_path):
    svc = open_services(hsm_instance, secrets=Secrets(key_passphrase=PASSPHRASE, pkcs11_pin=PIN))
    api_token = new_token(svc)
    root = hsm_instance / "ca" / "root.pem"
    with running_server(hsm_instance) as base:
        made, leaf, chain = issue_verified(base, api_token, "hsm.example.test", root, tmp_path)
        intermediate = tmp_path / "intermediate.pem"
        intermediate.write_bytes(requests.get(f"{base}/ca/intermediate.pem", timeout=10).content)
        good = run_openssl("ocsp", "-issuer", str(intermediate), "-cert", str(leaf), "-url", f"{base}/ocsp",
                           "-CAfile", str(root))
        assert b": good" in good.stdout and b"Response verify OK" in good.stderr, good.stdout + good.stderr
        revoked = requests.post(f"{base}/api/v1/certificates/{made['serial']}/revoke",
                                json={"reason": "keyCompromise"}, headers={"Authorization": f"Bearer {api_token}"},
                                timeout=30)
        assert revoked.status_code == 200, revoked.text
        answer = run_openssl("ocsp", "-issuer", str(intermediate), "-cert", str(leaf), "-url", f"{base}/ocsp",
                             "-CAfile", str(root))
        assert b": revoked" in answer.stdout and b"Response verify OK" in answer.stderr, answer.stdout + answer.stderr
        crl_file = tmp_path / "intermediate.crl"
        crl_file.write_bytes(requests.get(f"{base}/crl/intermediate.crl", timeout=10).content)
        crl_checked = run_openssl("crl", "-inform", "DER", "-in", str(crl_file), "-CAfile", str(chain), "-noout")
        assert b"verify OK" in crl_checked.stderr + crl_checked.stdout, crl_checked.stderr
        crl = x509.load_der_x509_crl(crl_file.read_bytes())
        assert crl.get_revoked_certificate_by_serial_number(int(made["serial"], 16)) is not None


def test_a_wrong_pin_stops_start_up_with_a_clear_message(hsm_instance, monkeypatch):
    monkeypatch.setenv("CA_SERVER_PKCS11_PIN", "not-the-pin")
    started = subprocess.run([sys.executable, "-m", "ca_server", "serve", "--port", "1"], capture_output=True,
                             text=True, timeout=60)
    assert started.returncode == 1
    assert "The PIN for PKCS#11 token 'ca-test' is wrong" in started.stderr
    monkeypatch.delenv("CA_SERVER_PKCS11_PIN")
    unset = subprocess.run([sys.executable, "-m", "ca_server", "serve", "--port", "1"], capture_output=True,
                           text=True, timeout=60)
    assert unset.returncode == 1 and "CA_SERVER_PKCS11_PIN" in unset.stderr


def test_a_token_key_that_is_not_the_intermediates_is_refused(hsm_instance, token):
    """Another key pair in the same token, named by mistake: refused before anything is signed."""
    from ca_server.config import load_config, with_overrides
    from ca_server.errors import InstanceError

    lib = pkcs11.lib(SOFTHSM)
    with lib.get_token(token_label="ca-test").open(rw=True) as session:
        params = session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True)
        params.generate_keypair(store=True, label="other")
    config = load_config(hsm_instance / "config.toml")
    config = with_overrides(config, ca={"intermediate_key": URI.replace("object=intermediate", "object=other")})
    svc = open_services(hsm_instance, config, Secrets(key_passphrase=PASSPHRASE, pkcs11_pin=PIN))
    with pytest.raises(InstanceError, match="is not the intermediate's"):
        _ = svc.authority.intermediate_key  # loaded on first use


def test_a_rollover_to_a_second_token_key_issues_from_the_token(hsm_instance, tmp_path):
    """`intermediate rollover --key pkcs11:...`: the new intermediate's key is made in the token
    beforehand; the instance keeps only its URI, and a real server issues and answers OCSP with it."""
    lib = pkcs11.lib(SOFTHSM)
    lib.reinitialize()  # `init` above logged this process in; a new session needs a fresh start
    with lib.get_token(token_label="ca-test").open(user_pin=PIN, rw=True) as session:
        params = session.create_domain_parameters(
            KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp256r1")}, local=True)
        params.generate_keypair(store=True, label="intermediate-g2")
    lib.reinitialize()
    second = f"pkcs11:token=ca-test;object=intermediate-g2?module-path={SOFTHSM}"
    rolled = CliRunner().invoke(main, ["intermediate", "rollover", "--key", second])
    assert rolled.exit_code == 0, rolled.output
    assert not (hsm_instance / "keys" / "intermediate-2.key.pem").exists()
    assert (hsm_instance / "keys" / "intermediate-2.key.uri").read_text().strip() == second
    svc = open_services(hsm_instance, secrets=Secrets(key_passphrase=PASSPHRASE, pkcs11_pin=PIN))
    assert svc.authority.current.number == 2
    api_token = new_token(svc)
    root = hsm_instance / "ca" / "root.pem"
    with running_server(hsm_instance) as base:
        made, leaf, chain = issue_verified(base, api_token, "g2.example.test", root, tmp_path)
        assert made["issuer"].startswith("CN=Example Org Issuing CA G2")
        issuer = tmp_path / "g2.pem"
        issuer.write_bytes(requests.get(f"{base}/ca/intermediate-2.pem", timeout=10).content)
        good = run_openssl("ocsp", "-issuer", str(issuer), "-cert", str(leaf), "-url", f"{base}/ocsp",
                           "-CAfile", str(root))
        assert b": good" in good.stdout and b"Response verify OK" in good.stderr, good.stdout + good.stderr
    [entry] = svc.store.audit_entries(action="intermediate_rollover")
    assert entry["detail"]["key"] == second
