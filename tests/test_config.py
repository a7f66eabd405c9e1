"""The config model: config.example.toml documents every key, and bad files stop start-up with
the dotted key named."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ca_server.config import EXAMPLE_CONFIG, Config, ConfigError, config_from_dict, load_config, read_secrets

ROOT = Path(__file__).resolve().parent.parent


def test_example_config_is_the_packaged_one_and_equals_the_defaults():
    assert EXAMPLE_CONFIG.read_text() == (ROOT / "config.example.toml").read_text()
    assert load_config(ROOT / "config.example.toml") == Config()


def test_every_key_of_the_model_is_documented_with_a_comment():
    text = (ROOT / "config.example.toml").read_text()
    data = tomllib.loads(text)
    config = Config()
    for section in ("server", "ca", "policy", "mail", "reminders", "revocation"):
        fields = {f.name for f in dataclasses.fields(getattr(config, section))}
        keys = {"from_address" if k == "from" else k for k in data[section]}
        assert keys == fields, f"[{section}] in config.example.toml differs from the model"
    # Every key line is preceded by a comment line (somewhere in its block).
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[a-z_]+ = ", line):
            block = []
            j = i - 1
            while j >= 0 and lines[j].strip():
                block.append(lines[j])
                j -= 1
            assert any(b.startswith("#") for b in block), f"key without a comment: {line}"


@pytest.mark.parametrize(
    "data, key",
    [
        ({"policy": {"allow_wildcard": True}}, "policy.allow_wildcard: unknown key"),
        ({"polcy": {}}, "polcy: unknown section"),
        ({"policy": {"max_validity_days": "90"}}, "policy.max_validity_days: must be a whole number"),
        ({"policy": {"allow_wildcards": "yes"}}, "policy.allow_wildcards: must be true or false"),
        ({"policy": {"max_validity_days": 0}}, "policy.max_validity_days"),
        ({"policy": {"default_validity_days": 400}}, "policy.default_validity_days: must not exceed"),
        ({"policy": {"allowed_domains": ["bad_domain.test"]}}, "policy.allowed_domains[0]"),
        ({"policy": {"allowed_domains": "example.test"}}, "policy.allowed_domains: must be a list"),
        ({"policy": {"min_rsa_bits": 1024}}, "policy.min_rsa_bits"),
        ({"policy": {"key_types": ["dsa"]}}, "policy.key_types[0]"),
        ({"policy": {"default_profile": "nope"}}, "policy.default_profile"),
        ({"server": {"base_url": "ftp://x"}}, "server.base_url"),
        ({"server": {"base_url": "http://x/"}}, "server.base_url: write it without a trailing slash"),
        ({"server": {"base_url": "http://ops:secret@ca.example.test"}}, "server.base_url: no user name or password"),
        ({"server": {"submission_rate_limit": "lots"}}, "server.submission_rate_limit"),
        ({"ca": {"root_key_type": "ed25519"}}, "ca.root_key_type"),
        ({"ca": {"intermediate_validity_days": 9999}}, "ca.intermediate_validity_days"),
        ({"mail": {"security": "ssl"}}, "mail.security"),
        ({"mail": {"from": "not-an-address"}}, "mail.from"),
        ({"mail": {"from_address": "a@example.test"}}, "mail.from_address: unknown key"),
        ({"reminders": {"days_before": []}}, "reminders.days_before"),
        ({"reminders": {"days_before": [30, 30]}}, "reminders.days_before"),
        ({"reminders": {"default_recipients": ["x"]}}, "reminders.default_recipients[0]"),
        ({"profiles": {"server": {"extended_key_usage": ["codeSigning"]}}}, "profiles.server.extended_key_usage"),
        ({"profiles": {"server": {"eku": ["serverAuth"]}}}, "profiles.server.eku: unknown key"),
    ],
)
def test_bad_config_names_the_key(data, key):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    assert str(info.value).startswith(key.split(":")[0]), str(info.value)
    assert key in str(info.value)


def test_profiles_can_be_defined_in_config():
    config = config_from_dict({"profiles": {"web": {"extended_key_usage": ["serverAuth"]}},
                               "policy": {"default_profile": "web"}})
    assert list(config.profiles) == ["web"]


def test_secrets_come_from_the_environment_named_in_config():
    config = config_from_dict({"ca": {"passphrase_env": "MY_PASS"}, "mail": {"password_env": "MY_SMTP"}})
    secret = read_secrets(config, {"MY_PASS": "p1", "MY_SMTP": "p2", "CA_SERVER_KEY_PASSPHRASE": "other"})
    assert secret.key_passphrase == "p1" and secret.smtp_password == "p2"
    assert "p1" not in repr(secret)


def test_invalid_toml_is_reported(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[policy\nallow_wildcards = true\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)


def test_a_bad_config_stops_the_cli_with_the_key_named(tmp_path):
    instance = tmp_path / "inst"
    instance.mkdir()
    (instance / "config.toml").write_text("[policy]\nmax_validity_day = 5\n")
    result = subprocess.run([sys.executable, "-m", "ca_server", "--instance", str(instance), "list"],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "policy.max_validity_day: unknown key" in result.stderr
    assert "Traceback" not in result.stderr
