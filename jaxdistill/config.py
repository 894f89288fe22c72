"""Configs: dataclasses loaded from YAML with ``key=value`` overrides.

Each field is declared once, with its documentation, through ``option(default, "doc")``; ``--help``
prints those docs. Nested dataclasses are addressed with dots (``mesh.tensor=4``). Unknown keys and
wrong types are errors that name the nearest valid field.

    cfg = parse_args(CalibrateConfig, ["--config", "configs/tiny.yaml", "eta=-1", "mesh.fsdp=2"])
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml


def configure_logging() -> None:
    """The command lines' and job workers' logging: INFO with timestamps; absl (orbax) and jax at WARNING,
    since orbax logs every checkpoint file it writes at INFO and jax every backend it could not start
    (libtpu on a GPU or CPU machine), as plain JAX shows neither; and no transformers advisory notices
    (its "PyTorch was not found" reads like an error, but only its tokenizers are used here). The
    transformers switch is an environment variable read when it logs, so spawned workers inherit it."""
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", force=True)
    for name in ("absl", "jax"):
        logging.getLogger(name).setLevel(logging.WARNING)


def option(default: Any, doc: str, **kwargs: Any) -> Any:
    """A dataclass field with a default and its one-line documentation."""
    if isinstance(default, (list, dict, set)) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: _copy(default), metadata={"doc": doc}, **kwargs)
    return dataclasses.field(default=default, metadata={"doc": doc}, **kwargs)


def _copy(value):
    import copy

    return copy.deepcopy(value)


class ConfigError(ValueError):
    """A config file or override that does not fit the dataclass."""


def _fields(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _all_keys(cls, prefix: str = "") -> list[str]:
    keys = []
    hints = _hints(cls)
    for name in _fields(cls):
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            keys += _all_keys(typ, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _unknown_key(cls, key: str) -> ConfigError:
    near = difflib.get_close_matches(key, _all_keys(cls), n=1, cutoff=0.4)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    return ConfigError(f"unknown config key {key!r} for {cls.__name__}{hint} (see --help for every field)")


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the annotated type (int, float, str, bool, tuples, lists, Optional)."""
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(typ)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        raise ConfigError(f"{key}: cannot read {value!r} as {typ}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v.strip() for v in value.strip("[]()").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            value = [value]
        args = typing.get_args(typ)
        item = args[0] if args else Any
        return origin(_coerce(v, item, key) for v in value)
    if typ is Any:
        return value
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if typ in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            number = float(value) if typ is float else value
            if typ is int:
                number = int(value) if not isinstance(value, float) or value.is_integer() else None
                if number is None:
                    raise ValueError
            return number
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected {typ.__name__}, got {value!r}") from None
    if typ is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    raise ConfigError(f"{key}: unsupported field type {typ}")


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def from_dict(cls, data: dict[str, Any], prefix: str = "", root=None, base=None):
    """Build ``cls`` from a (possibly nested) dict, checking keys and types.

    Values not in ``data`` keep those of ``base`` (default: ``cls()``), so a nested section that sets
    one key keeps the parent's defaults for the others. ``root`` is the top-level class (for errors).
    """
    root = root or cls
    base = base if base is not None else cls()
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or cls.__name__}: expected a mapping, got {data!r}")
    fields, hints = _fields(cls), _hints(cls)
    kwargs = {}
    for key, value in data.items():
        if key not in fields:
            raise _unknown_key(root, prefix + key)
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            kwargs[key] = from_dict(typ, value or {}, prefix + key + ".", root, getattr(base, key))
        else:
            kwargs[key] = _coerce(value, typ, prefix + key)
    try:
        return dataclasses.replace(base, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{cls.__name__}: {err}") from err


def apply_overrides(data: dict[str, Any], overrides: list[str], cls) -> dict[str, Any]:
    """Apply ``key=value`` strings (dots for nesting) onto a plain dict."""
    valid = set(_all_keys(cls))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, text = item.split("=", 1)
        key = key.strip().lstrip("-").replace("-", "_")
        if key not in valid:
            raise _unknown_key(cls, key)
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = _parse_scalar(text)
    return data


def load_config(cls, path: str | Path | None = None, overrides: list[str] = ()):
    """YAML file (optional) + overrides -> a validated ``cls`` instance."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of config keys")
    return from_dict(cls, apply_overrides(data, list(overrides), cls))


def to_dict(config) -> dict[str, Any]:
    """A plain dict (tuples as lists) for YAML/JSON dumps."""
    def convert(v):
        if isinstance(v, tuple):
            return [convert(x) for x in v]
        if isinstance(v, dict):
            return {k: convert(x) for k, x in v.items()}
        return v
    return convert(dataclasses.asdict(config))


def field_docs(cls, prefix: str = "") -> list[tuple[str, str, Any]]:
    """(key, doc, default) of every leaf field, nested ones with dotted keys."""
    rows = []
    hints = _hints(cls)
    defaults = cls()
    for name, f in _fields(cls).items():
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            rows += field_docs(typ, f"{prefix}{name}.")
        else:
            rows.append((prefix + name, f.metadata.get("doc", ""), getattr(defaults, name)))
    return rows


def parse_args(cls, argv: list[str] | None, *, prog: str, description: str, extra_flags=()):
    """CLI: ``--config FILE`` plus ``key=value`` overrides; ``--help`` lists every field with its doc.

    ``extra_flags``: (flag, help) boolean switches returned alongside (e.g. ``--quick``).
    Returns (config, flags: dict[str, bool]).
    """
    epilog = "config fields (set in YAML or as key=value):\n" + "\n".join(
        f"  {key} = {default!r}\n      {doc}" for key, doc, default in field_docs(cls))
    parser = argparse.ArgumentParser(prog=prog, description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML file with config fields (overrides apply on top)")
    for flag, text in extra_flags:
        parser.add_argument(flag, action="store_true", help=text)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)
    try:
        config = load_config(cls, args.config, args.overrides)
    except ConfigError as err:
        parser.error(str(err))
    flags = {flag.lstrip("-").replace("-", "_"): getattr(args, flag.lstrip("-").replace("-", "_"))
             for flag, _ in extra_flags}
    return config, flags
