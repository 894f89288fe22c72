"""Reading task rows from a local JSONL/parquet file, a local data folder, or the HF hub.

Local JSONL is read line by line with ``json`` rather than through ``datasets``: the ``datasets``
JSON builder infers one Arrow schema for the whole file and fails on all of it when a single row
has a field of another type, whereas we want to skip that row and go on. Parquet files (typed
already) and hub datasets go through ``datasets.load_dataset``.
"""
from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: the task classes import this module, not the other way round
    from jaxdistill.tasks.base import Example, Task

JSON_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIXES = (".parquet",)


class MalformedRow(ValueError):
    """A data row that lacks a field or has a field of the wrong type; loaders skip it."""


class MalformedRowsWarning(UserWarning):
    """Some rows of a dataset were skipped because they lacked fields or had wrong types."""


class _InvalidJsonLine:
    """Stands in for a JSONL line that is not valid JSON (so it is counted like any bad row)."""

    def __init__(self, error: str):
        self.error = error


def load_examples(task: Task, split: str, path: str | Path | None = None, *,
                  limit: int | None = None) -> list[Example]:
    """Rows of ``split`` parsed into Examples by ``task.parse_row``; see the module docstring."""
    rows, source = read_rows(task, split, path)
    examples = parse_rows(rows, task.parse_row, source, limit=limit)
    if not examples:
        raise ValueError(
            f"{task.name}: no usable rows in {source} (split {split!r}). Fix: point path= at a "
            f"non-empty JSONL/parquet file with the fields this task reads "
            f"(see {type(task).__name__}.parse_row)."
        )
    return examples


def parse_rows(rows: Iterable[Any], parse_row, source: str, *,
               limit: int | None = None) -> list[Example]:
    """Parse rows, skipping malformed ones; one MalformedRowsWarning sums up what was skipped."""
    examples: list[Example] = []
    skipped = 0
    first_problem = ""
    total = 0
    for index, row in enumerate(rows):
        if limit is not None and len(examples) >= limit:
            break
        total += 1
        try:
            if isinstance(row, _InvalidJsonLine):
                raise MalformedRow(f"invalid JSON ({row.error})")
            if not isinstance(row, Mapping):
                raise MalformedRow(f"expected a JSON object, got {type(row).__name__}")
            examples.append(parse_row(row))
        except (MalformedRow, KeyError, TypeError, ValueError, AttributeError, IndexError) as err:
            skipped += 1
            if not first_problem:
                first_problem = f"row {index}: {err}"
    if skipped:
        warnings.warn(
            f"skipped {skipped} of {total} rows from {source} as malformed (missing fields or "
            f"wrong types); first: {first_problem}",
            MalformedRowsWarning,
            stacklevel=3,
        )
    return examples


def read_rows(task: Task, split: str, path: str | Path | None) -> tuple[Iterable[Any], str]:
    """(rows, a description of where they came from) for ``split``."""
    if path is None:
        return _read_hub(task, split)
    file = resolve_local_file(task, split, Path(path).expanduser())
    if file.suffix in JSON_SUFFIXES:
        return read_json_rows(file), str(file)
    return _read_parquet(file), str(file)


def resolve_local_file(task: Task, split: str, path: Path) -> Path:
    """``path`` itself when it is a file; the split's file inside it when it is a folder."""
    if path.is_dir():
        if split not in task.local_files:
            raise ValueError(f"{task.name}: unknown split {split!r}; valid splits: "
                             f"{sorted(task.local_files)}")
        file = path / task.local_files[split]
        if not file.is_file():
            present = sorted(p.name for p in path.iterdir())
            raise FileNotFoundError(
                f"{task.name}: split {split!r} expects {file}, which does not exist (the folder "
                f"holds {present}). Fix: pass path= the data file itself.")
        return file
    if not path.is_file():
        raise FileNotFoundError(
            f"{task.name}: no file or folder at {path}. Fix: pass path= an existing JSONL or "
            f"parquet file (or a folder holding {dict(task.local_files)}), or path=None to load "
            f"{task.hub_name or 'the data'} from the HF hub.")
    if path.suffix not in JSON_SUFFIXES + PARQUET_SUFFIXES:
        raise ValueError(f"{task.name}: cannot read {path}: expected a .jsonl, .json or .parquet "
                         f"file")
    return path


def read_json_rows(file: Path) -> list[Any]:
    """Rows of a JSONL file (or of a .json file holding one list of objects)."""
    text = file.read_text(encoding="utf-8")
    if file.suffix == ".json" and text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{file} is not valid JSON: {err}") from err
        return list(rows)
    rows: list[Any] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            rows.append(_InvalidJsonLine(str(err)))
    return rows


def _read_parquet(file: Path):
    import datasets

    return datasets.load_dataset("parquet", data_files=str(file), split="train")


def _read_hub(task: Task, split: str):
    if task.hub_name is None:
        raise ValueError(f"{task.name}: no hub dataset known; pass path= a local file")
    if split not in task.hub_splits:
        raise ValueError(f"{task.name}: unknown split {split!r}; valid splits: "
                         f"{sorted(task.hub_splits)}")
    import datasets

    hub_split = task.hub_splits[split]
    try:
        rows = datasets.load_dataset(task.hub_name, task.hub_config, split=hub_split)
    except Exception as err:  # offline, renamed, gated: all end the same way for the user
        raise RuntimeError(
            f"{task.name}: could not load {task.hub_name!r} (config {task.hub_config!r}, split "
            f"{hub_split!r}) from the HF hub: {err}. Fix: when offline, pass path= a local "
            f"JSONL/parquet file or data folder.") from err
    return rows, f"hub:{task.hub_name}/{hub_split}"
