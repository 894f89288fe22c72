"""Configs and command lines: dataclasses loaded from YAML with ``key=value`` overrides, one CLI runner.

Each field is declared once, with its documentation and its valid range, through
``option(default, "doc", gt=0)``; ``--help`` prints those docs. Nested dataclasses are addressed with
dots (``mesh.tensor=4``). Unknown keys, wrong types and values out of range are errors that name the
field (and, for a renamed field, its new name; for a typo, the nearest valid one).

    cfg = load_config(CalibrateConfig, "configs/tiny.yaml", ["eta=-1", "mesh.fsdp=2"])

Every run's config derives from :class:`BaseConfig` (the run folder) and every training run's from
:class:`TrainingConfig`; the names follow TRL's ``TrainingArguments`` / ``GRPOConfig`` where TRL has one.

Every command line goes through :func:`run_cli`, so they all end the same way: a project error prints
one ``error: ...`` line and exits 1 (``--debug`` or ``JAXDISTILL_DEBUG=1`` shows the traceback);
Ctrl-C prints ``interrupted`` and exits 130. A training loop that runs inside
:func:`stop_at_step_boundaries` is not interrupted mid-step (nor mid-checkpoint): the first Ctrl-C
only asks it to stop, it checks :func:`stop_requested` after each step, saves a checkpoint and raises
:class:`Interrupted`; a second Ctrl-C stops at once.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import difflib
import importlib.resources
import logging
import math
import os
import signal
import sys
import threading
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import yaml

DEBUG_ENV = "JAXDISTILL_DEBUG"


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


# ---- declaring fields -------------------------------------------------------------------------------

def option(default: Any, doc: str, *, gt: float | None = None, ge: float | None = None,
           le: float | None = None, choices: Sequence[Any] | None = None, **kwargs: Any) -> Any:
    """A dataclass field with a default, its one-line documentation and its valid values.

    ``gt`` / ``ge`` / ``le``: bounds of a number (of every item of a tuple of numbers); ``choices``:
    the allowed values. A float must be finite whatever its bounds. Checked by :func:`check_ranges`.
    """
    metadata = {"doc": doc, "gt": gt, "ge": ge, "le": le, "choices": tuple(choices) if choices else None}
    if isinstance(default, (list, dict, set)) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: copy.deepcopy(default), metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


class ConfigError(ValueError):
    """A config file, override or value that does not fit the dataclass."""


def range_text(metadata: typing.Mapping[str, Any]) -> str:
    """``"> 0"``, ``">= 1"``, ``"0 .. 1"``, ``"one of a | b"`` or ``""``: a field's valid values."""
    if metadata.get("choices"):
        return "one of " + " | ".join(str(c) for c in metadata["choices"])
    low = (f"> {metadata['gt']:g}" if metadata.get("gt") is not None else
           f">= {metadata['ge']:g}" if metadata.get("ge") is not None else "")
    high = f"<= {metadata['le']:g}" if metadata.get("le") is not None else ""
    return " and ".join(t for t in (low, high) if t)


def _check_value(key: str, value: Any, metadata: typing.Mapping[str, Any]) -> None:
    if isinstance(value, (tuple, list)):
        for item in value:
            _check_value(key, item, metadata)
        return
    choices = metadata.get("choices")
    if choices and value not in choices:
        near = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise ConfigError(f"{key}={value!r}: choose one of {' | '.join(str(c) for c in choices)}{hint}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}={value}: must be a finite number")
    gt, ge, le = metadata.get("gt"), metadata.get("ge"), metadata.get("le")
    if (gt is not None and not value > gt) or (ge is not None and not value >= ge) or (le is not None and not value <= le):
        raise ConfigError(f"{key}={value}: must be {range_text(metadata)}")


def check_ranges(config: Any, prefix: str = "") -> None:
    """Every leaf field of ``config`` (nested dataclasses included) within its declared range."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            check_ranges(value, f"{prefix}{f.name}.")
        else:
            _check_value(prefix + f.name, value, f.metadata)


# ---- the shared run fields ----------------------------------------------------------------------------

@dataclasses.dataclass
class BaseConfig:
    """What every run shares: the folder it writes. Subclasses redeclare a field to change its default."""

    output_dir: str = option("runs/run", "run folder: everything this run writes goes here")
    overwrite: bool = option(False, "replace the results of an earlier, different run in output_dir (else "
                                    "such a rerun is refused)")
    compilation_cache_dir: str = option("default", "folder of JAX's persistent compilation cache, so a rerun or "
                                        "resume skips compiling (default: $JAXDISTILL_CACHE, else "
                                        "~/.cache/jaxdistill/jax; off: no cache)")

    def validate(self) -> None:
        """The checks that need no model: every field within its range, output_dir usable. Runs at the
        command line's edge, before anything is loaded; subclasses add their own and call this."""
        check_ranges(self)
        out = Path(self.output_dir).expanduser()
        for folder in (out, *out.parents):
            if folder.exists() and not folder.is_dir():
                raise ConfigError(f"output_dir={self.output_dir}: {folder} is a file, not a folder; "
                                  "choose another output_dir")
            if folder.exists():
                break


@dataclasses.dataclass
class TrainingConfig(BaseConfig):
    """What every training run shares (TRL's ``TrainingArguments`` names)."""

    seed: int = option(0, "seed of initialisation, data order and sampling")
    dtype: str = option("float32", "parameter and compute dtype", choices=("float32", "bfloat16"))
    resume: bool = option(False, "continue from the latest checkpoint in output_dir (exactly)")
    max_steps: int = option(100, "optimizer steps", ge=0)
    save_steps: int = option(100, "orbax checkpoint every N steps and at the end (0: only at the end)", ge=0)
    learning_rate: float = option(1e-4, "peak AdamW learning rate", gt=0)
    lr_schedule: str = option("constant", "decay after warmup", choices=("constant", "linear", "cosine"))
    warmup_steps: int = option(0, "linear warmup steps from 0", ge=0)
    weight_decay: float = option(0.0, "AdamW weight decay", ge=0)
    max_grad_norm: float = option(1.0, "global gradient-norm clip (0: off)", ge=0)
    max_bad_steps: int = option(5, "stop after this many consecutive steps with a NaN/Inf loss or gradient", ge=1)
    tensorboard: bool = option(False, "also write TensorBoard scalars (needs tensorboardX)")
    progress: bool = option(True, "show a progress bar with ETA")
    remat: str = option("none", "rematerialise decoder layers in the training forward: none, dots (keep the "
                                "weight matmuls' outputs) or full (keep only layer inputs); less memory, more "
                                "compute", choices=("none", "dots", "full"))


@dataclasses.dataclass
class EvalConfig(BaseConfig):
    """What every evaluation shares: which prompts, and how completions are sampled."""

    seed: int = option(0, "sampling seed")
    dtype: str = option("float32", "parameter and compute dtype", choices=("float32", "bfloat16"))
    chat_template: bool = option(False, "render prompts with each tokenizer's chat template")
    split: str = option("test", "split evaluated")
    num_prompts: int = option(200, "prompts: the first N of the split (0 = the whole split)", ge=0)
    temperature: float = option(0.0, "sampling temperature: 0 = greedy; > 0 samples (accuracy is avg@k over "
                                     "samples_per_prompt)", ge=0)
    top_p: float = option(1.0, "nucleus mass when sampling", gt=0, le=1)
    samples_per_prompt: int = option(1, "k of avg@k when sampling (greedy always uses 1)", ge=1)
    max_completion_length: int = option(256, "new tokens per completion", ge=1)
    generation_batch_size: int = option(64, "prompts per generation call (memory vs speed)", ge=1)


# Renamed fields, per config class: an old name in a config file or override is an error that names the new
# one. Filled as fields are renamed; the class is matched by name along the config's base classes.
RENAMED: dict[str, dict[str, str]] = {
    "CalibrateConfig": {"save_every": "save_steps", "eval_every": "eval_steps", "eval_prompts": "eval_num_prompts"},
    "DistillConfig": {"beta": "jsd_beta", "sampling_temperature": "temperature", "batch_size": "train_batch_size",
                      "eval_size": "eval_num_prompts", "train_limit": "train_num_prompts"},
    "EvalConfig": {"limit": "num_prompts", "max_new_tokens": "max_completion_length",
                   "batch_size": "generation_batch_size", "chat": "chat_template"},
    "SweepConfig": {"eval_limit": "eval_num_prompts", "eval_max_new_tokens": "eval_max_completion_length",
                    "eval_batch_size": "eval_generation_batch_size"},
}


# ---- loading ------------------------------------------------------------------------------------------

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


def _nested_class(cls, key: str):
    """The dataclass that holds the last part of dotted ``key`` (None when a part is not a section)."""
    for part in key.split(".")[:-1]:
        typ = _hints(cls).get(part)
        if not dataclasses.is_dataclass(typ):
            return None
        cls = typ
    return cls


def renamed_to(cls, name: str) -> str | None:
    """The new name of field ``name`` of ``cls`` when it was renamed (see ``RENAMED``)."""
    for klass in getattr(cls, "__mro__", (cls,)):
        new = RENAMED.get(klass.__name__, {}).get(name)
        if new is not None:
            return new
    return None


def _unknown_key(cls, key: str) -> ConfigError:
    holder = _nested_class(cls, key)
    new = renamed_to(holder, key.rsplit(".", 1)[-1]) if holder is not None else None
    if new is not None:
        section = key.rsplit(".", 1)[0] + "." if "." in key else ""
        return ConfigError(f"config key {key!r} was renamed: use {section + new!r} (see --help for every field)")
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
        if value is None:  # a YAML key without a value (``teacher:``): empty, never the text "None"
            return ""
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
            raise _unknown_key(root, prefix + str(key))
        typ = hints[key]
        if dataclasses.is_dataclass(typ):
            kwargs[key] = from_dict(typ, value or {}, prefix + key + ".", root, getattr(base, key))
        else:
            kwargs[key] = _coerce(value, typ, prefix + key)
    try:
        return dataclasses.replace(base, **kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{cls.__name__}: {err}") from err


def apply_overrides(data: dict[str, Any], overrides: Sequence[str], cls) -> dict[str, Any]:
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


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; a syntax error names ``file:line:column``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist" if not path.exists() else
                          f"config file {path} is not a file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = " ".join(str(p) for p in (getattr(err, "context", None), getattr(err, "problem", None)) if p)
        raise ConfigError(f"{where}: invalid YAML: {problem or err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys, got {type(data).__name__}")
    return data


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``, section by section."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(cls, path: str | Path | None = None, overrides: Sequence[str] = (), *,
                presets: Sequence[str | Path] = ()):
    """Defaults <- YAML file ``path`` <- preset files <- ``key=value`` overrides: a ``cls`` whose every field
    is of its type and within its range. An error in a file names the file."""
    data: dict[str, Any] = {}
    for source in ([path] if path is not None else []) + list(presets):
        layer = read_yaml(source)
        try:
            from_dict(cls, layer)
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None
        data = _merge(data, layer)
    config = from_dict(cls, apply_overrides(data, list(overrides), cls))
    check_ranges(config)
    return config


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
    """(key, doc, default) of every leaf field, nested ones with dotted keys; the doc ends with the range."""
    rows = []
    hints = _hints(cls)
    defaults = cls()
    for name, f in _fields(cls).items():
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            rows += field_docs(typ, f"{prefix}{name}.")
        else:
            valid = range_text(f.metadata)
            doc = f.metadata.get("doc", "") + (f" [{valid}]" if valid else "")
            rows.append((prefix + name, doc, getattr(defaults, name)))
    return rows


def preset_path(name: str) -> Path:
    """A config file shipped inside the package (``jaxdistill/presets/<name>``)."""
    return Path(str(importlib.resources.files("jaxdistill") / "presets" / name))


# ---- the command line -----------------------------------------------------------------------------------

class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are ConfigErrors (so they end like every other error: one line, exit 1)."""

    def error(self, message: str):
        raise ConfigError(message)


def parse_command_line(cls, argv: Sequence[str], *, prog: str, description: str,
                       flags: Sequence[tuple[str, str]] = (), presets: dict[str, tuple[str, str]] | None = None):
    """``[--config FILE] [--preset...] [--flag...] key=value ...`` -> (config, {flag: bool}).

    ``flags``: (flag, help) switches handed to the command; ``presets``: flag -> (shipped file, help), a
    config file (see :func:`preset_path`) applied after ``--config`` and before the overrides.
    ``--help`` lists every field with its doc, default and range.
    """
    presets = presets or {}
    epilog = "config fields (set in YAML or as key=value):\n" + "\n".join(
        f"  {key} = {default!r}\n      {doc}" for key, doc, default in field_docs(cls))
    parser = _Parser(prog=prog, description=description, epilog=epilog,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="FILE", help="YAML file with config fields (overrides apply on top)")
    for flag, (name, text) in presets.items():
        parser.add_argument(flag, action="store_true", help=f"{text} (the shipped config presets/{name}, applied "
                                                            "after --config and before key=value overrides)")
    for flag, text in flags:
        parser.add_argument(flag, action="store_true", help=text)
    parser.add_argument("--debug", action="store_true",
                        help=f"on an error, show the full traceback (also: {DEBUG_ENV}=1)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args, unknown = parser.parse_known_args(list(argv))
    if unknown:
        keys = set(_all_keys(cls))
        name = unknown[0].lstrip("-").split("=", 1)[0].replace("-", "_")
        if unknown[0].startswith("--") and name in keys:
            raise ConfigError(f"{unknown[0]}: config fields are set as key=value, e.g. {name}=...")
        raise ConfigError(f"unrecognized arguments: {' '.join(unknown)} (see --help)")
    chosen = [preset_path(name) for flag, (name, _) in presets.items() if getattr(args, _dest(flag))]
    config = load_config(cls, args.config, args.overrides, presets=chosen)
    return config, {_dest(flag): getattr(args, _dest(flag)) for flag, _ in flags}


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


class Interrupted(Exception):
    """A run stopped by Ctrl-C; the message says where its last checkpoint is."""


class _StopRequest:
    """Ctrl-C as a request to the training loop (see :func:`stop_at_step_boundaries`)."""

    listening = 0
    requested = False


def stop_requested() -> bool:
    """Whether Ctrl-C asked the running training loop to stop at the end of this step. In a multi-process
    run the processes agree (any one asked: all stop), since the checkpoint save is collective."""
    requested = _StopRequest.requested
    jax = sys.modules.get("jax")
    if _StopRequest.listening and jax is not None and jax.process_count() > 1:
        from jax.experimental import multihost_utils

        requested = bool(multihost_utils.process_allgather(int(requested)).max())
    return requested


@contextlib.contextmanager
def stop_at_step_boundaries() -> Iterator[None]:
    """Around a training loop: under :func:`run_cli`, the first Ctrl-C no longer raises KeyboardInterrupt
    wherever the main thread is (inside an orbax save, orbax's threads then log their own traceback); it
    only sets :func:`stop_requested`, which the loop checks after each step, saving a checkpoint and
    raising :class:`Interrupted`. A second Ctrl-C raises KeyboardInterrupt at once."""
    _StopRequest.listening += 1
    try:
        yield
    finally:
        _StopRequest.listening -= 1


def _on_sigint(signum, frame) -> None:
    if _StopRequest.listening and not _StopRequest.requested:
        _StopRequest.requested = True
        print("\nCtrl-C: stopping after this step and saving a checkpoint (Ctrl-C again stops at once)",
              file=sys.stderr, flush=True)
        return
    raise KeyboardInterrupt


@contextlib.contextmanager
def ctrl_c_as_stop_request() -> Iterator[None]:
    """Inside: Ctrl-C (SIGINT) as :func:`run_cli` handles it, a stop request to a listening training loop,
    else KeyboardInterrupt. Used by ``run_cli``, and by job workers (which the terminal's Ctrl-C reaches
    too) around each job. The main thread only (elsewhere: nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_sigint)
    _StopRequest.requested = False
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _StopRequest.requested = False


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors that are the user's to fix (bad input, files, resources): one line, no traceback.
    Others (KeyError, TypeError, AttributeError, ...) are bugs and keep their traceback."""
    errors: list[type[BaseException]] = [ValueError, OSError, RuntimeError]
    with contextlib.suppress(ImportError):
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    return tuple(errors)


def error_line(err: BaseException) -> str:
    """``error: <message>`` on one line."""
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    text = " ".join(str(text).split()) or type(err).__name__
    return f"error: {text}"


def run_cli(cls, run: Callable[..., int | None], argv: Sequence[str] | None = None, *, prog: str,
            description: str, flags: Sequence[tuple[str, str]] = (),
            presets: dict[str, tuple[str, str]] | None = None) -> int:
    """The one command-line runner: parse (``--config``, presets, ``key=value``; ``--help``), validate at
    the edge (``config.validate()``, before anything is loaded), then ``run(config, **flags)``.

    Returns the exit status: ``run``'s (None: 0); 1 after one ``error: ...`` line on stderr for any error
    the user can fix; 130 after ``interrupted`` on Ctrl-C. ``--debug`` or ``JAXDISTILL_DEBUG=1`` re-raises
    instead, with the traceback.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "").lower() not in ("", "0", "false", "no")
    configure_logging()
    with ctrl_c_as_stop_request():
        try:
            config, switches = parse_command_line(cls, argv, prog=prog, description=description, flags=flags,
                                                  presets=presets)
            if hasattr(config, "validate"):
                config.validate()
            if hasattr(config, "compilation_cache_dir"):  # programs compiled by an earlier run are loaded
                from jaxdistill.compilation import use_compilation_cache

                use_compilation_cache(config.compilation_cache_dir)
            status = run(config, **switches)
            return 0 if status is None else int(status)
        except (KeyboardInterrupt, Interrupted) as err:
            if debug:
                raise
            print("interrupted" + (f": {err}" if isinstance(err, Interrupted) else ""), file=sys.stderr, flush=True)
            return 130
        except _user_errors() as err:
            if debug:
                raise
            print(error_line(err), file=sys.stderr, flush=True)
            return 1

