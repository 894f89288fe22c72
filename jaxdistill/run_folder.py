"""The run-folder contract every command line shares: one run at a time in a folder, a manifest of what
made the run, and fixed rules for running again into a folder that already holds work.

    with open_run(config.output_dir, config, command="calibrate", inputs={"teacher": config.teacher, ...},
                  resume=config.resume, overwrite=config.overwrite) as run:
        if run.finished:                       # the same settings finished here before: nothing to do
            return run.manifest["summary"]
        ...train, write results...
        run.finish(results=["teacher", "metrics.jsonl"], summary={...})

Rules (docs/runs.md):

- Lock. ``<output_dir>/.lock`` is held with ``flock`` (the ``filelock`` package) for the run's life; a
  second run into the folder is refused at once, naming the folder and the process that holds it
  (``.owner.json``: pid, host, command, start time). The operating system drops the lock when its
  process dies, however it dies; an owner record left behind is a run that was killed: the next run
  reports it and takes over.
- Manifest. ``<output_dir>/manifest.json`` holds the resolved config, a fingerprint of every input
  (``fingerprint_path``), the run's key (``run_key``: a digest of both), its status (running or
  finished) and, once finished, the result files it wrote.
- Rerunning. A folder that holds work is only ever continued or reused under the settings that made
  it. Settings that differ (inputs included) are refused, naming each changed field, unless
  ``overwrite=true`` (the old contents move aside to a sibling folder, and the log says where) or the
  run resumes and every change is on ``SAFE_RESUME_FIELDS`` (they change how a run is watched or how
  long it runs, never what a step computes). A finished run with the same settings is reported
  finished (``run.finished``) and left untouched; "finished" is read from the manifest and the result
  files it names, not from ``checkpoints/``.
- Cached arms. Sweeps and scorecards reuse an arm's folder only when ``arm_is_finished(folder, key)``:
  the arm finished there with the same ``run_key``, never because its label matches.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import shutil
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
OWNER_FILE = ".owner.json"
MANIFEST_FILE = "manifest.json"
BOOKKEEPING = frozenset({LOCK_FILE, OWNER_FILE, MANIFEST_FILE})

#: Fields a resumed run may change: how long it runs, how often it checkpoints or evaluates, how it
#: reports, and where it runs (mesh, processes) -- never what a step computes. A field matches by its
#: first dotted component (``mesh`` covers ``mesh.tensor``).
SAFE_RESUME_FIELDS = frozenset({
    "max_steps", "save_steps", "eval_steps", "progress", "tensorboard", "logging",
    "export", "mesh", "distributed", "workers", "resume", "overwrite", "output_dir", "debug"})

#: The fields that do not enter a run's key (``run_key``): the safe ones but ``max_steps``, which does
#: change what a finished run holds.
NOT_IN_KEY = SAFE_RESUME_FIELDS - {"max_steps"}

#: Fields that never describe the run itself: whether it resumes or overwrites, and where it is written.
NOT_SETTINGS = frozenset({"resume", "overwrite", "output_dir"})

WHOLE_FILE_LIMIT = 64 * 2**20   # files up to this size are hashed whole
SAMPLE = 2**20                  # larger ones: their size and three 1 MiB samples (start, middle, end)


class RunFolderError(ValueError):
    """A run that the folder's contract refuses (busy folder, changed settings); the message says why
    and what to do instead."""


class FolderBusy(RunFolderError):
    """Another live process holds the folder's lock."""


class SettingsChanged(RunFolderError):
    """The folder holds a run made with other settings."""


class FolderHoldsRun(RunFolderError, FileExistsError):
    """The folder holds an earlier run that this one would overwrite."""


# ---- fingerprints -----------------------------------------------------------------------------

def _file_digest(path: Path) -> str:
    """sha256 of the file's bytes; above ``WHOLE_FILE_LIMIT``, of its size and three 1 MiB samples.

    Contents, not modification times: copying or re-downloading the same model must not look like a
    change, and reading 8B-parameter weights in full at every start would cost minutes. Retrained
    weights differ in every sample, so the samples tell them apart."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as f:
        if size <= WHOLE_FILE_LIMIT:
            for block in iter(lambda: f.read(2**22), b""):
                h.update(block)
        else:
            h.update(f"size={size}".encode())
            for offset in (0, size // 2, size - SAMPLE):
                f.seek(offset)
                h.update(f.read(SAMPLE))
    return h.hexdigest()


def fingerprint_path(path: str | Path) -> str:
    """A digest of a file, or of a folder's files (relative names and contents; hidden entries such as
    a download cache are skipped). ``"missing"`` for a path that does not exist (the run will fail to
    load it and its folder will hold nothing)."""
    path = Path(path)
    if path.is_file():
        return _file_digest(path)
    if not path.is_dir():
        return "missing"
    h = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path)
        if any(part.startswith(".") for part in relative.parts):
            continue
        h.update(f"{relative.as_posix()}\0{_file_digest(file)}\0".encode())
    return h.hexdigest()


def fingerprint(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Each input's fingerprint: a path (``Path``, or a string naming an existing file or folder) by its
    contents, anything else (a hub dataset name, a generator version) by its value; empty ones as None."""
    out: dict[str, Any] = {}
    for name, value in sorted(inputs.items()):
        if value is None or value == "":
            out[name] = None
        elif isinstance(value, Path) or (isinstance(value, str) and os.path.exists(value)):
            out[name] = fingerprint_path(value)
        else:
            out[name] = value if isinstance(value, (int, float, bool)) else str(value)
    return out


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def config_dict(config: Any) -> dict[str, Any]:
    """A config (dataclass or mapping) as plain JSON data (tuples as lists)."""
    data = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return json.loads(json.dumps(data, default=str))


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _is_safe(key: str, safe: frozenset[str]) -> bool:
    return key.split(".", 1)[0] in safe


def run_key(config: Mapping[str, Any], inputs: Mapping[str, Any], *, input_fields: Sequence[str] = ()) -> str:
    """The digest of everything that makes a run's results: its settings (less ``NOT_IN_KEY`` and the path
    fields in ``input_fields``, which count by content) and its inputs' fingerprints."""
    settings = {k: v for k, v in _flatten(config).items()
                if not _is_safe(k, NOT_IN_KEY) and k.split(".", 1)[0] not in input_fields}
    return _digest({"config": settings, "inputs": dict(inputs)})


def key_for(config: Any, inputs: Mapping[str, Any], input_fields: Sequence[str] = ()) -> str:
    """The ``run_key`` that ``open_run`` records for this config and these inputs."""
    return run_key(config_dict(config), fingerprint(inputs), input_fields=input_fields)


def inputs_of(config: Any, input_fields: Sequence[str]) -> dict[str, Any]:
    """The paths a config names in ``input_fields`` (a field the config lacks reads as None)."""
    return {name: getattr(config, name, None) for name in input_fields}


def default_settings(config: Any) -> dict[str, Any]:
    """The flattened default value of every field of a dataclass config (``{}`` for a mapping): what a
    setting added in a later jaxdistill holds when nobody sets it."""
    if not dataclasses.is_dataclass(config):
        return {}
    defaults = {}
    for field in dataclasses.fields(config):
        if field.default is not dataclasses.MISSING:
            defaults[field.name] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            defaults[field.name] = field.default_factory()
    return _flatten(config_dict({k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
                                 for k, v in defaults.items()}))


def changes(old: Mapping[str, Any], new: Mapping[str, Any], *, ignore: Sequence[str] = (),
            defaults: Mapping[str, Any] | None = None) -> dict[str, tuple]:
    """``{dotted field: (old value, new value)}`` for every field that differs, less ``ignore`` (matched
    by first dotted component). A field missing on one side reads as ``<absent>``, except that a field
    missing in ``old`` whose new value is its default (``defaults``, flattened) is no change: a setting
    added by a later jaxdistill, left at the default that keeps the old behaviour."""
    a, b = _flatten(old), _flatten(new)
    ignore, defaults = frozenset(ignore), defaults or {}
    added_at_default = {k for k in b.keys() - a.keys() if k in defaults and defaults[k] == b[k]}
    return {k: (a.get(k, "<absent>"), b.get(k, "<absent>")) for k in sorted(a.keys() | b.keys())
            if a.get(k, "<absent>") != b.get(k, "<absent>") and not _is_safe(k, ignore)
            and k not in added_at_default}


def describe(diff: Mapping[str, tuple]) -> str:
    return "; ".join(f"{k}: {_short(a)} there, {_short(b)} now" for k, (a, b) in diff.items())


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


# ---- reading a folder -------------------------------------------------------------------------

def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise RunFolderError(f"{path} is not valid JSON ({err}); it was not written by a finished write of "
                             f"this program. Move {Path(folder)} aside or rerun with overwrite=true") from None


def _missing_results(folder: Path, manifest: Mapping[str, Any]) -> list[str]:
    return [name for name in manifest.get("results", []) if not (folder / name).exists()]


def is_finished(folder: str | Path) -> bool:
    """Whether ``folder`` holds a finished run: its manifest says so and every result file it lists
    exists (deleting ``checkpoints/`` does not make a finished run look unfinished, deleting a result
    does)."""
    manifest = read_manifest(folder)
    return bool(manifest) and manifest.get("status") == "finished" and not _missing_results(Path(folder), manifest)


def arm_is_finished(folder: str | Path, key: str) -> bool:
    """Whether a sweep or scorecard arm can be reused: it finished in ``folder`` with this ``run_key``."""
    manifest = read_manifest(folder)
    return is_finished(folder) and manifest.get("key") == key


def finished_as(config: Any, input_fields: Sequence[str]) -> bool:
    """Whether ``config.output_dir`` holds the finished run of exactly ``config`` and the inputs its
    ``input_fields`` name: the one test of "reuse this arm" for sweeps and scorecards. A run recorded
    before a setting was added to its config counts as the same when the setting holds its default
    (``changes``); its key then differs only by that field."""
    inputs = inputs_of(config, input_fields)
    if arm_is_finished(config.output_dir, key_for(config, inputs, input_fields)):
        return True
    manifest = read_manifest(config.output_dir)
    if not manifest or not is_finished(config.output_dir) or "config" not in manifest:
        return False
    ignore = [*NOT_IN_KEY, *input_fields]
    return not (changes(manifest["config"], config_dict(config), ignore=ignore, defaults=default_settings(config))
                or changes(manifest.get("inputs", {}), fingerprint(inputs)))


def holds_work(folder: str | Path) -> list[str]:
    """The entries of ``folder`` besides the contract's own files and hidden ones such as a half-written
    manifest's temporary file (empty: nothing to lose)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name not in BOOKKEEPING and not p.name.startswith("."))


# ---- the lock ---------------------------------------------------------------------------------

def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _owner_text(owner: Mapping[str, Any] | None) -> str:
    if not owner:
        return "a process that has not yet recorded itself"
    return (f"pid {owner.get('pid')} on host {owner.get('host')} ({owner.get('command', 'a run')}, "
            f"started {owner.get('started')})")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Atomic: a reader (or a kill) sees the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


class FolderLock:
    """An exclusive ``flock`` on ``<folder>/.lock`` plus an owner record naming the holder."""

    def __init__(self, folder: str | Path, command: str = ""):
        self.folder = Path(folder)
        self.command = command
        self.lock = FileLock(str(self.folder / LOCK_FILE), timeout=0)
        self.stale: dict[str, Any] | None = None   # the owner record of a killed run, found on acquiring

    def acquire(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        owner_path = self.folder / OWNER_FILE
        try:
            self.lock.acquire()
        except Timeout:
            raise FolderBusy(f"{self.folder} is in use by another run: {_owner_text(_read_json(owner_path))}. "
                             "Wait for it to finish, or choose another output_dir") from None
        self.stale = _read_json(owner_path) if owner_path.exists() else None
        if self.stale is not None:
            log.warning("%s: the previous run there (%s) ended without releasing the folder (killed or crashed); "
                        "its lock was stale and this run takes over", self.folder, _owner_text(self.stale))
        _write_json(owner_path, {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                                 "started": _now()})

    def release(self) -> None:
        (self.folder / OWNER_FILE).unlink(missing_ok=True)
        self.lock.release()


@contextmanager
def held(folder: str | Path, command: str) -> Iterator[FolderLock]:
    """Hold ``folder``'s lock for a block: an experiment that writes many runs and one table into a folder
    (a default run, a scorecard, a sweep, a knob grid, a selection or ceiling test) runs there one at a
    time, like every single run (``open_run``); a second is refused at once (``FolderBusy``, naming the
    holder). The runs it starts lock their own subfolders."""
    lock = FolderLock(folder, command)
    lock.acquire()
    try:
        yield lock
    finally:
        lock.release()


# ---- opening a run ----------------------------------------------------------------------------

@dataclasses.dataclass
class RunFolder:
    """An opened run folder: ``finished`` when the same settings already finished here."""

    path: Path
    manifest: dict[str, Any]
    previous: dict[str, Any] | None = None  # the manifest found on opening (None: a fresh folder)
    finished: bool = False
    resumed: bool = False
    moved_to: Path | None = None           # where overwrite=true moved the old contents
    stale_owner: dict[str, Any] | None = None
    primary: bool = True

    @property
    def key(self) -> str:
        return self.manifest["key"]

    def finish(self, results: Sequence[str] = (), summary: Mapping[str, Any] | None = None) -> None:
        """Mark the run finished, listing its result files (relative to the folder) and a JSON summary."""
        missing = [name for name in results if not (self.path / name).exists()] if self.primary else []
        if missing:
            raise RuntimeError(f"run in {self.path} claims results it did not write: {missing}")
        self.manifest.update(status="finished", finished=_now(), results=list(results),
                             summary=json.loads(json.dumps(summary or {}, default=str)))
        if self.primary:
            _write_json(self.path / MANIFEST_FILE, self.manifest)
        self.finished = True


def _move_aside(folder: Path, entries: Sequence[str]) -> Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    target = folder.with_name(f"{folder.name}.replaced-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}.replaced-{stamp}-{n}")
    target.mkdir()
    for name in [*entries, MANIFEST_FILE]:
        if (folder / name).exists():
            shutil.move(str(folder / name), str(target / name))
    return target


def _check_rerun(folder: Path, previous: dict[str, Any] | None, work: list[str], config: dict[str, Any],
                 inputs: dict[str, Any], key: str, *, resume: bool, resumable: bool, safe: frozenset[str],
                 input_fields: Sequence[str], can_continue: Callable[[], bool] | None,
                 defaults: Mapping[str, Any] | None = None) -> tuple[bool, dict[str, tuple]]:
    """(finished, safe changes) for a folder holding ``work``; raises where the rules refuse."""
    if previous is None:
        if resume:   # a folder of an earlier version of this program: resumable, but nothing to compare
            return False, {}
        raise FolderHoldsRun(
            f"{folder} already holds files of another run ({', '.join(work[:5])}{', ...' if len(work) > 5 else ''}) "
            "and no manifest.json to say which settings made them; starting over would overwrite them. "
            "Set resume=true to continue it, overwrite=true to move it aside and start over, or choose "
            "another output_dir")
    ignore = [*NOT_SETTINGS, *input_fields]
    setting_diff = changes(previous.get("config", {}), config, ignore=ignore, defaults=defaults)
    input_diff = {f"contents of {k}": ("fingerprint " + str(a)[:12], "fingerprint " + str(b)[:12])
                  for k, (a, b) in changes(previous.get("inputs", {}), inputs).items()}
    unsafe = {k: v for k, v in setting_diff.items() if not _is_safe(k, safe)} | input_diff
    safe_diff = {k: v for k, v in setting_diff.items() if _is_safe(k, safe)}
    done = previous.get("status") == "finished"
    missing = _missing_results(folder, previous) if done else []
    if unsafe:
        raise SettingsChanged(
            f"{folder} holds a {'finished' if done else 'unfinished'} run made with other settings "
            f"({describe(unsafe)}). Rerun with the settings it was made with, choose another output_dir, or "
            "set overwrite=true to move the old run aside and start over")
    if done and missing:
        raise FolderHoldsRun(f"{folder} holds a finished run whose results {missing} are gone; set "
                             "overwrite=true to move what is left aside and recompute it")
    old_steps, new_steps = safe_diff.get("max_steps", (0, 0))
    extends = isinstance(old_steps, int) and isinstance(new_steps, int) and new_steps > old_steps
    if done and not extends:   # watching it differently (progress, logging...) changes nothing finished
        return True, {}
    if done and resume and can_continue is not None and not can_continue():
        raise FolderHoldsRun(f"{folder} holds a finished run with nothing to continue from (its checkpoints are "
                             f"gone), so max_steps {old_steps} -> {new_steps} would start over at step 0 and replace "
                             "its results. Set overwrite=true to move it aside and start over, or choose another "
                             "output_dir")
    if not resume and not resumable and not done:  # nothing to continue from: redo the same work
        return False, safe_diff
    if not resume:
        state = "finished" if done else "unfinished"
        what = (f" (changed: {describe(safe_diff)})" if safe_diff else "")
        raise FolderHoldsRun(f"{folder} holds an {state} run{what}; starting over would overwrite it. Set "
                             f"resume=true to continue it, overwrite=true to move it aside and start over, or "
                             "choose another output_dir")
    return False, safe_diff


@contextmanager
def open_run(output_dir: str | Path, config: Any, *, command: str, inputs: Mapping[str, Any] | None = None,
             input_fields: Sequence[str] = (), resume: bool = False, overwrite: bool = False, resumable: bool = True,
             can_continue: Callable[[], bool] | None = None, safe_resume_fields: frozenset[str] = SAFE_RESUME_FIELDS,
             primary: bool = True) -> Iterator[RunFolder]:
    """Lock ``output_dir``, check a rerun against its manifest, write the manifest; yields a ``RunFolder``.

    ``inputs``: name -> path or value of everything the run reads besides its config (model folders,
    data files, a generator version); ``input_fields``: the config fields that name those paths (they
    are compared by the inputs' contents, so a model moved to another folder is the same input).
    ``overwrite``: where the rules refuse (other settings, an unfinished run without ``resume``, a folder
    without a manifest), move the folder's contents aside to ``<output_dir>.replaced-<time>`` and start
    over; a finished run of the same settings is still reported finished.
    ``can_continue``: whether the folder holds a state to continue from (a checkpoint); without one, a
    finished run is not continued with more ``max_steps`` (that would start at step 0 over its results).
    ``resumable``: False for a command that cannot resume (evaluate, diagnose): an unfinished run of the
    same settings is then simply redone.
    ``primary``: False on the other processes of a multi-process run (they share process 0's folder:
    only process 0 locks and writes; the others only read).
    """
    folder = Path(output_dir)
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"output_dir {folder} is a file, not a folder: choose another output_dir")
    settings = config_dict(config)
    prints = fingerprint(inputs or {})
    key = run_key(settings, prints, input_fields=input_fields)
    lock = FolderLock(folder, command) if primary else None
    if lock is not None:
        lock.acquire()
    try:
        previous = read_manifest(folder)
        work = holds_work(folder)
        run = RunFolder(path=folder, manifest={}, primary=primary, stale_owner=lock.stale if lock else None)
        finished, safe_diff = False, {}
        if work:
            run.previous = previous
            try:
                finished, safe_diff = _check_rerun(folder, previous, work, settings, prints, key, resume=resume,
                                                   resumable=resumable, safe=safe_resume_fields,
                                                   input_fields=input_fields, can_continue=can_continue,
                                                   defaults=default_settings(config))
            except (SettingsChanged, FolderHoldsRun) as refusal:
                if not overwrite:
                    raise
                if primary:
                    run.moved_to = _move_aside(folder, work)
                    log.warning("overwrite=true: %s\nSo its contents moved to %s; this run starts over", refusal,
                                run.moved_to)
                previous = run.previous = None
        else:
            previous = None   # a manifest alone (a run that stopped before writing anything): nothing to keep
        if finished:
            run.manifest, run.finished = previous, True
            log.info("%s already holds this run, finished %s: nothing to do (to compute it again, delete the "
                     "folder or choose another output_dir)", folder, previous.get("finished"))
        else:
            from jaxdistill import __version__

            history = list(previous.get("resumes", [])) if previous else []
            if previous is not None:
                run.resumed = True
                history.append({"at": _now(), "changed": {k: list(v) for k, v in safe_diff.items()}})
                if safe_diff:
                    log.info("resuming %s with changed settings (safe to change on resume): %s", folder,
                             describe(safe_diff))
            run.manifest = {"command": command, "status": "running", "key": key, "config": settings,
                            "inputs": prints, "jaxdistill": __version__,
                            "started": previous.get("started") if previous else _now(), "resumes": history}
            if primary:
                _write_json(folder / MANIFEST_FILE, run.manifest)
        yield run
    finally:
        if lock is not None:
            lock.release()
