"""The command line: init, issue, show, list, user and token commands, help texts."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID

from ca_server.cli import main

from .checks import assert_openssl_verifies, assert_pkilint_clean
from .factories import der, make_csr, pem


def run(*args, input=None, env=None):
    return CliRunner().invoke(main, list(args), input=input, env=env, catch_exceptions=False)


@pytest.fixture
def fresh(tmp_path, monkeypatch):
    root = tmp_path / "inst"
    monkeypatch.setenv("CA_SERVER_INSTANCE", str(root))
    monkeypatch.delenv("CA_SERVER_KEY_PASSPHRASE", raising=False)
    return root


def _ext(cert, cls):
    return cert.extensions.get_extension_for_class(cls)


def test_init_creates_the_hierarchy_with_private_files(fresh):
    result = run("init")
    assert result.exit_code == 0, result.output
    root = x509.load_pem_x509_certificate((fresh / "ca" / "root.pem").read_bytes())
    inter = x509.load_pem_x509_certificate((fresh / "ca" / "intermediate.pem").read_bytes())
    assert root.public_key().curve.name == "secp384r1" and inter.public_key().curve.name == "secp256r1"
    assert (root.not_valid_after_utc - root.not_valid_before_utc).days == 3650
    assert (inter.not_valid_after_utc - inter.not_valid_before_utc).days == 1825
    bc = _ext(root, x509.BasicConstraints)
    assert bc.critical and bc.value.ca
    ku = _ext(root, x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    assert _ext(root, x509.SubjectKeyIdentifier)
    ibc = _ext(inter, x509.BasicConstraints)
    assert ibc.critical and ibc.value.ca and ibc.value.path_length == 0
    assert _ext(inter, x509.AuthorityKeyIdentifier).value.key_identifier == _ext(
        root, x509.SubjectKeyIdentifier).value.digest
    inter.verify_directly_issued_by(root)
    for path in [fresh / "keys" / "root.key.pem", fresh / "keys" / "intermediate.key.pem",
                 fresh / "keys" / "passphrase", fresh / "secret_key", fresh / "ca.sqlite3",
                 fresh / "config.toml"]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path
    key_text = (fresh / "keys" / "root.key.pem").read_text()
    assert "ENCRYPTED PRIVATE KEY" in key_text
    assert "ca-admin" in result.output
    root_fp = root.fingerprint(hashes.SHA256()).hex().upper()
    assert f"SHA-256 {':'.join(root_fp[i:i + 2] for i in range(0, 64, 2))}" in result.output  # as browsers show it
    assert re.search(r"valid to \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", result.output)


def test_commands_in_a_folder_without_a_ca_say_so_and_make_nothing(fresh):
    """Run in the wrong folder (a typo in --instance, a missing CA_SERVER_INSTANCE): `list` gave a
    SQLite traceback, `backup` a traceback after making the folder, `show` "No certificate with
    serial ...", `token list` nothing at all, from a store it had just created."""
    for args in (["list"], ["backup"], ["show", "00ab"], ["token", "list"], ["user", "list"], ["acme", "eab", "list"],
                 ["scep", "challenge", "list"], ["audit", "export"], ["revoke", "00ab", "--reason", "superseded"]):
        done = run(*args)
        assert done.exit_code == 1, (args, done.output)
        assert f"No CA in {fresh}: run `ca-server init` first" in done.output, (args, done.output)
        assert not fresh.exists(), args
    assert run("init", "--no-admin").exit_code == 0
    assert run("list").exit_code == 0


def test_odd_arguments_are_refused_in_words_not_tracebacks(fresh):
    """Found by running every command with odd values (700 runs): these three were tracebacks."""
    assert run("init", "--no-admin").exit_code == 0
    big = run("audit", "export", "--after-id", "9" * 30)  # OverflowError from SQLite
    assert big.exit_code == 2 and "Invalid value for '--after-id'" in big.output
    empty = run("log", "verify", "")  # ValueError: PosixPath('.') has an empty name
    assert empty.exit_code == 2 and "is not the log file" in empty.output
    for serial in ("0", "00", "a" * 60):  # cryptography's ValueError: serial not positive / over 159 bits
        refused = run("root", "sign-crl", "--revoke", f"{serial}:keyCompromise")
        assert refused.exit_code == 1 and "is no certificate serial number" in refused.output, refused.output


def test_init_refuses_to_overwrite_an_existing_ca(fresh):
    assert run("init").exit_code == 0
    before = (fresh / "keys" / "root.key.pem").read_bytes()
    again = run("init")
    assert again.exit_code != 0 and "refusing to overwrite" in again.output
    assert (fresh / "keys" / "root.key.pem").read_bytes() == before
    assert run("init", "--if-absent").exit_code == 0


def test_init_with_rsa_keys_and_name_constraints(fresh):
    fresh.mkdir()
    (fresh / "config.toml").write_text(
        '[ca]\nroot_key_type = "rsa-3072"\nintermediate_key_type = "rsa-2048"\n'
        'permitted_domains = ["example.test"]\n')
    assert run("init", "--no-admin").exit_code == 0
    inter = x509.load_pem_x509_certificate((fresh / "ca" / "intermediate.pem").read_bytes())
    assert inter.public_key().key_size == 2048
    nc = _ext(inter, x509.NameConstraints)
    assert nc.critical and [n.value for n in nc.value.permitted_subtrees] == ["example.test"]
    assert_pkilint_clean(fresh / "ca" / "intermediate.pem")
    assert_pkilint_clean(fresh / "ca" / "root.pem")


def test_passphrase_from_environment_keeps_it_off_disk(fresh):
    result = run("init", env={"CA_SERVER_KEY_PASSPHRASE": "from the environment"})
    assert result.exit_code == 0
    assert not (fresh / "keys" / "passphrase").exists()
    wrong = run("issue", "-", input=pem(make_csr(["a.example.test"])),
                env={"CA_SERVER_KEY_PASSPHRASE": "wrong"})
    assert wrong.exit_code != 0 and "could not be decrypted" in wrong.output
    assert "from the environment" not in wrong.output
    ok = run("issue", "-", input=pem(make_csr(["a.example.test"])),
             env={"CA_SERVER_KEY_PASSPHRASE": "from the environment"})
    assert ok.exit_code == 0 and "BEGIN CERTIFICATE" in ok.output


def test_issue_show_list(fresh, tmp_path):
    assert run("init", "--no-admin").exit_code == 0
    csr_file = tmp_path / "host.der"
    csr_file.write_bytes(der(make_csr(["cucm1.example.test", "cucm-pub.example.test"])))
    result = CliRunner().invoke(
        main, ["issue", str(csr_file), "--profile", "server+client", "--days", "30", "--notify", "ops@example.test"])
    assert result.exit_code == 0, result.output
    leaf = tmp_path / "leaf.pem"
    leaf.write_text(result.stdout)
    assert_openssl_verifies(leaf, fresh / "ca" / "root.pem", fresh / "ca" / "intermediate.pem")
    cert = x509.load_pem_x509_certificate(result.stdout.encode())
    serial = format(cert.serial_number, "x")
    assert serial in result.stderr

    shown = run("show", serial.upper())
    assert shown.exit_code == 0 and "DNS:cucm-pub.example.test" in shown.output and "server+client" in shown.output
    listed = run("list", "--expiring-within", "31")
    assert serial in listed.output
    assert serial not in run("list", "--expiring-within", "10").output
    assert run("show", "abcdef").exit_code != 0
    by_prefix = run("show", serial[:8].upper())  # the first digits, as people read them off a page
    assert by_prefix.exit_code == 0 and f"Serial:          {serial}" in by_prefix.output
    fingerprint = cert.fingerprint(hashes.SHA256()).hex().upper()
    assert ":".join(fingerprint[i:i + 2] for i in range(0, 64, 2)) in shown.output  # as browsers show it
    by_fingerprint = run("show", fingerprint)  # a fingerprint where a serial belongs: said so, not "not hex"
    assert by_fingerprint.exit_code != 0 and "is a SHA-256 fingerprint, not a serial number" in by_fingerprint.output
    assert re.search(r"Valid to:\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", shown.output)


def test_show_says_which_certificates_a_short_prefix_matches(fresh, tmp_path):
    assert run("init", "--no-admin").exit_code == 0
    serials = []
    for i in range(5):  # the first hex digit is 1, 3, 5 or 7 (159 bits, bit 156 set): five share one
        result = run("issue", "-", input=pem(make_csr([f"h{i}.example.test"])))
        serials.append(format(x509.load_pem_x509_certificate(result.stdout.encode()).serial_number, "x"))
    first = max({s[0] for s in serials}, key=lambda d: sum(s[0] == d for s in serials))
    sharing = [s for s in serials if s.startswith(first)]
    assert len(sharing) > 1
    ambiguous = run("show", first)
    assert ambiguous.exit_code != 0 and "give more digits" in ambiguous.output
    assert sharing[0] in ambiguous.output or sharing[-1] in ambiguous.output


def test_the_command_list_says_each_first_sentence_whole():
    listing = run("--help").output.split("Commands:")[1]
    assert "..." not in listing
    assert "Create the instance: config, root and intermediate CA," in listing
    email_help = run("user", "add", "--help").output
    assert "reminder" in email_help and "approval outcomes" not in email_help


def test_issue_prints_what_was_changed_from_the_csr(fresh, tmp_path):
    assert run("init", "--no-admin").exit_code == 0
    csr_file = tmp_path / "mail.pem"
    csr_file.write_text(pem(make_csr(["mail.example.test"], subject=x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, "mail.example.test"),
        x509.NameAttribute(NameOID.EMAIL_ADDRESS, "admin@example.test")]))))
    result = CliRunner().invoke(main, ["issue", str(csr_file)])
    assert result.exit_code == 0, result.output
    assert "Note: Left out of the certificate's subject: emailAddress (admin@example.test)" in result.stderr
    assert x509.load_pem_x509_certificate(result.stdout.encode()).subject.rfc4514_string() == "CN=mail.example.test"


def test_issue_says_which_requested_extensions_the_certificate_does_not_carry(fresh, tmp_path):
    """A CUCM-like CSR (openssl) asks for serverAuth, clientAuth and IPsec end system, and one asks
    to be a CA: the certificate follows its profile, and the requester is told what was not given
    and how to get what the CA does give (before, it was dropped without a word)."""
    from .checks import run_openssl

    assert run("init", "--no-admin").exit_code == 0
    csr_file = tmp_path / "cucm.csr"
    made = run_openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
                       str(tmp_path / "cucm.key"), "-out", str(csr_file), "-subj", "/CN=cucm1.example.test",
                       "-addext", "subjectAltName=DNS:cucm1.example.test", "-addext",
                       "extendedKeyUsage=serverAuth,clientAuth,1.3.6.1.5.5.7.3.5", "-addext", "basicConstraints=CA:TRUE")
    assert made.returncode == 0, made.stderr
    server = CliRunner().invoke(main, ["issue", str(csr_file)])
    assert server.exit_code == 0, server.output
    assert ("Note: The CSR also asks for extended key usage clientAuth, ipsecEndSystem; the certificate has "
            "serverAuth, as its profile gives. For clientAuth, ask for a profile that gives it") in server.stderr
    assert "This CA does not issue ipsecEndSystem." in server.stderr
    assert "Note: The CSR asks to be a CA (basicConstraints CA:TRUE)" in server.stderr
    cert = x509.load_pem_x509_certificate(server.stdout.encode())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    both = CliRunner().invoke(main, ["issue", str(csr_file), "--profile", "server+client"])
    assert both.exit_code == 0 and "The CSR also asks for extended key usage ipsecEndSystem; the certificate has " \
        "serverAuth, clientAuth" in both.stderr
    assert "For clientAuth" not in both.stderr and "This CA does not issue ipsecEndSystem." in both.stderr
    plain = tmp_path / "plain.csr"
    plain.write_text(pem(make_csr(["plain.example.test"])))
    assert "Note:" not in CliRunner().invoke(main, ["issue", str(plain)]).stderr


def test_issue_refusal_lists_each_reason(fresh, tmp_path):
    assert run("init", "--no-admin").exit_code == 0
    csr_file = tmp_path / "w.pem"
    csr_file.write_text(pem(make_csr(["*.example.test", "bad_name.example.test"])))
    result = run("issue", str(csr_file))
    assert result.exit_code == 1
    assert "wildcard_not_allowed" in result.output and "dns_name_invalid" in result.output
    assert "Traceback" not in result.output


def test_user_and_token_commands(fresh):
    assert run("init", "--no-admin").exit_code == 0
    assert run("user", "add", "bob", "--domain", "example.test", "--password-stdin",
               input="bob-password\n").exit_code == 0
    assert "bob" in run("user", "list").output
    assert run("user", "add", "bob", "--password-stdin", input="another-pass\n").exit_code != 0
    created = CliRunner().invoke(main, ["token", "create", "deploy", "--domain", "example.test"])
    token = created.stdout.strip()
    assert created.exit_code == 0 and token.startswith("cas_") and len(token) > 40
    assert token not in (fresh / "ca.sqlite3").read_bytes().decode("latin-1")
    assert "deploy" in run("token", "list").output
    assert run("token", "revoke", "deploy").exit_code == 0
    assert run("token", "revoke", "deploy").exit_code != 0
    # a mistyped name said "nobody: 0 sessions ended", as if signed out
    typo = run("user", "sign-out", "bbo")
    assert typo.exit_code == 1 and "There is no user named 'bbo'" in typo.output
    assert run("user", "sign-out", "bob").output.strip() == "bob: 0 sessions ended"
    assert run("user", "disable", "bob").exit_code == 0
    disabled = run("user", "sign-out", "bob")
    assert disabled.exit_code == 1 and "bob is disabled: their sessions ended when they were." in disabled.output


def test_every_command_has_help_with_an_example():
    def walk(group, prefix=()):
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                yield from walk(cmd, (*prefix, name))
            else:
                yield (*prefix, name), cmd

    commands = dict(walk(main))
    for expected in ("init", "serve", "issue", "show", "list", "revoke", "remind"):
        assert (expected,) in commands, expected
    for path, cmd in commands.items():
        assert cmd.help and "Example" in cmd.help and "ca-server" in cmd.help, path


def test_flask_cli_has_the_same_commands(instance):
    result = subprocess.run([sys.executable, "-m", "flask", "--app", "ca_server", "list"],
                            capture_output=True, text=True, env={**os.environ})
    assert result.returncode == 0, result.stderr
    assert "certificate(s)" in result.stderr


def test_init_subject_uses_the_configured_names(fresh):
    fresh.mkdir()
    (fresh / "config.toml").write_text('[ca]\norganization = "ACME Corp"\nroot_common_name = "ACME Root"\n')
    assert run("init", "--no-admin").exit_code == 0
    root = x509.load_pem_x509_certificate((fresh / "ca" / "root.pem").read_bytes())
    assert root.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "ACME Root"
