"""Typed configuration machinery: dataclasses with help text, built from YAML and ``key=value``.

A config section is a dataclass whose fields are declared with :func:`option` (a default plus a
help string). :func:`from_dict` builds a section from plain data, checking every key and value
against the field types, and refuses unknown keys with the list of valid ones. Sections validate
their values in ``__post_init__`` by raising :class:`ConfigError` through :func:`check`.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import types
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")


class _Loader(yaml.SafeLoader):
    """YAML 1.1's safe loader, but reading ``5e-7`` as a float (plain PyYAML reads it as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                |\.[0-9_]+(?:[eE][-+][0-9]+)?
                |[-+]?\.(?:inf|Inf|INF)
                |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def yaml_load(text: Any) -> Any:
    """Parse YAML safely (no object construction), with ``1e-4`` read as a number."""
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader


class ConfigError(ValueError):
    """A config key or value is wrong. The message names the key, the bad value and the fix."""


def option(default: Any, help: str, **kwargs: Any) -> Any:  # noqa: A002 - "help" reads best here
    """A dataclass field with a default and help text (mutable defaults are copied per instance)."""
    metadata = {"help": help}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata, **kwargs)
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        return dataclasses.field(default_factory=lambda: dataclasses.replace(default), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def derived(default: Any, help: str, source: str) -> Any:  # noqa: A002
    """A field the run config sets from its top-level key ``source`` (one value for every stage):
    a library caller may pass it, a config file may not (:func:`from_dict` refuses it by name)."""
    return dataclasses.field(default=default, metadata={"help": help, "derived": source})


def derived_fields(config: Any) -> Iterator[tuple[Any, str, str]]:
    """``(section, field name, source key)`` of every derived field in ``config``'s sections."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.metadata.get("derived"):
            yield config, f.name, f.metadata["derived"]
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            yield from derived_fields(value)


def section(cls: type[T], help: str, **kwargs: Any) -> Any:  # noqa: A002
    """A field holding a nested config section, default-constructed."""
    return dataclasses.field(default_factory=cls, metadata={"help": help}, **kwargs)


def check(condition: bool, field: str, value: Any, fix: str) -> None:
    """Raise a :class:`ConfigError` naming ``field`` and ``value`` with ``fix`` unless ``condition``."""
    if not condition:
        raise ConfigError(f"{field}={value!r} is invalid: {fix}")


# --------------------------------------------------------------------------- building from data


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it (ints to floats, lists to tuples)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{key}={value!r} is invalid: expected {_type_name(tp)}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is invalid: expected one of {', '.join(map(repr, allowed))}")
        return value
    if origin in (list, tuple, Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}={value!r} is invalid: expected a list ({_type_name(tp)})")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}={value!r} is invalid: expected {len(args)} items ({_type_name(tp)})")
            return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r} is invalid: expected a mapping ({_type_name(tp)})")
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {_convert(k, kt, key): _convert(v, vt, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r} is invalid: expected a section (a mapping of keys of {tp.__name__})")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} is invalid: expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r} is invalid: expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}={value!r} is invalid: expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} is invalid: expected a string")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}={value!r} is invalid: expected {_type_name(tp)}")
    return value


def _unknown_key(cls: type, key: str, prefix: str) -> ConfigError:
    names = [f.name for f in dataclasses.fields(cls)]
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" Did you mean {prefix}{close[0]}?" if close else ""
    return ConfigError(
        f"unknown config key {prefix}{key!r}.{hint} Valid keys of {cls.__name__}: {', '.join(names)}"
    )


def from_dict(cls: type[T], data: Mapping[str, Any] | None, prefix: str = "") -> T:
    """Build the dataclass ``cls`` from ``data``, type-checking each value and refusing unknown keys."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key, value in data.items():
        if key not in fields:
            raise _unknown_key(cls, key, prefix)
        if source := fields[key].metadata.get("derived"):
            raise ConfigError(f"{prefix}{key}: set once for the whole run, by the top-level key {source} "
                              f"(e.g. {source}={value!r})")
        kwargs[key] = _convert(value, hints[key], f"{prefix}{key}")
    try:
        return cls(**kwargs)
    except ValueError as e:
        # A section's own validation (ConfigError, or a library dataclass's ValueError) gets the
        # section's key path in front, so the message names the full key.
        if isinstance(e, ConfigError) and (not prefix or str(e).startswith(prefix)):
            raise
        raise ConfigError(f"{prefix}{e}") from e


def to_dict(config: Any, *, derived: bool = True) -> dict[str, Any]:
    """Plain data of a config (tuples as lists); ``derived=False`` leaves out the fields set from a
    top-level key (:func:`derived`), which makes it the inverse of :func:`from_dict`."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                    if derived or not f.metadata.get("derived")}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(config)


def identity(config: Any) -> dict[str, Any]:
    """The part of a config section that decides what its stage makes: :func:`to_dict` without the
    fields the section lists in ``OPERATIONAL`` (how the work is run: concurrency, budgets,
    batch sizes), so that changing those on a rerun resumes the same artifact."""
    data = to_dict(config)
    for name in getattr(type(config), "OPERATIONAL", ()):
        data.pop(name, None)
    return data


def config_hash(config: Any) -> str:
    """A stable short hash of a config's content (sha256 of its canonical JSON)."""
    blob = json.dumps(to_dict(config), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- overrides and help


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and a YAML-parsed value (``x=1`` is an int)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} is malformed: write it as key=value or section.key=value")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({e})") from e
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Set each ``key=value`` of ``overrides`` into the nested mapping ``data`` (a copy is returned)."""
    merged = json.loads(json.dumps(data))  # deep copy of plain YAML data
    for text in overrides:
        path, value = parse_override(text)
        node = merged
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part!r} is a value, not a section")
            node = child
        node[path[-1]] = value
    return merged


def iter_help(cls: type, prefix: str = "") -> Iterator[tuple[str, str, Any, str]]:
    """Yield ``(key, type, default, help)`` of every field, nested sections flattened with dots."""
    hints = typing.get_type_hints(cls)
    instance = cls()
    for f in dataclasses.fields(cls):
        if f.metadata.get("derived"):
            continue
        tp = hints[f.name]
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(tp):
            yield from iter_help(tp, prefix=f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", _type_name(tp), to_dict(value), f.metadata.get("help", "")


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML mapping from ``path`` with a clear error for a missing or malformed file."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml_load(fh)
    except FileNotFoundError as e:
        raise ConfigError(f"config file {path!r} does not exist") from e
    except IsADirectoryError as e:
        raise ConfigError(f"config file {path!r} is a directory; give a YAML file such as "
                          "jobs/configs/default.yaml") from e
    except PermissionError as e:
        raise ConfigError(f"config file {path!r} cannot be read: permission denied") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path!r} is not a text file (byte {e.start} is not UTF-8); give a YAML "
                          "file") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path!r} is not valid YAML: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping of sections, found {type(data).__name__}")
    return data


def dump_yaml(config: Any) -> str:
    """The YAML text of a config, loadable again by :func:`from_dict`."""
    return yaml.safe_dump(to_dict(config, derived=False), sort_keys=False)
