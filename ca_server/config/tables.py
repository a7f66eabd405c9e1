"""One [section] of the TOML checked and converted into its dataclass: unknown keys and wrong
types raise ConfigError naming the dotted key."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from ..errors import ConfigError

# TOML key -> dataclass field, where a TOML name is not a valid Python name.
ALIASES = {"mail": {"from": "from_address"}}


def section(name: str, cls: type, values: typing.Any, python_names: bool = False) -> typing.Any:
    """Check and convert one [section]; with `python_names`, keys are the dataclass field names
    (with_overrides) and the result is a dict of them instead of the dataclass."""
    if not isinstance(values, dict):
        raise ConfigError(f"{name}: must be a table, like [{name}]")
    aliases = {} if python_names else ALIASES.get(name, {})
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        attr = aliases.get(key, key)
        if attr not in known or (key in aliases.values() and key not in aliases):
            shown = sorted(k for k in known if k not in aliases.values()) + sorted(aliases)
            raise ConfigError(f"{name}.{key}: unknown key (known keys: {', '.join(shown)})")
        kwargs[attr] = coerce(f"{name}.{key}", hints[attr], value)
    return kwargs if python_names else cls(**kwargs)


def coerce(key: str, hint: typing.Any, value: typing.Any) -> typing.Any:
    origin = typing.get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: must be true or false, not {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: must be a whole number, not {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: must be a string, not {value!r}")
        return value
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            example = "[1, 2]" if item is int else '["a", "b"]'
            raise ConfigError(f"{key}: must be a list, like {example}")
        return tuple(coerce(f"{key}[{i}]", item, v) for i, v in enumerate(value))
    raise ConfigError(f"{key}: unsupported type")  # pragma: no cover


def check_ca_file(key: str, path: str) -> None:
    """A `ca_file` key's PEM file of CA certificates: there, and holding one."""
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read {path}: {exc.strerror}") from None
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise ConfigError(f"{key}: {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
