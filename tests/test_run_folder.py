"""The run-folder contract (jaxdistill.run_folder): lock, manifest, rerun rules, finished test, arm keys.

No model is loaded: each test is a few file operations (the whole file runs in about a second)."""
import dataclasses
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jaxdistill import run_folder
from jaxdistill.run_folder import (FolderBusy, FolderHoldsRun, RunFolderError, SettingsChanged, arm_is_finished,
                                   is_finished, open_run, read_manifest)

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class Mesh:
    data: int = 1
    tensor: int = 1


@dataclasses.dataclass
class Config:
    teacher: str = ""
    output_dir: str = ""
    eta: float = 1.0
    learning_rate: float = 1e-3
    max_steps: int = 4
    progress: bool = True
    resume: bool = False
    overwrite: bool = False
    mesh: Mesh = dataclasses.field(default_factory=Mesh)


@pytest.fixture
def teacher(tmp_path):
    folder = tmp_path / "teacher"
    folder.mkdir()
    (folder / "config.json").write_text('{"hidden_size": 32}')
    (folder / "model.safetensors").write_bytes(b"weights" * 100)
    return folder


def _run(out, config, *, results=("metrics.jsonl", "teacher_out"), finish=True, **kw):
    """One run into ``out``: writes its results and (``finish``) marks itself finished."""
    kw.setdefault("resume", config.resume)
    kw.setdefault("overwrite", config.overwrite)
    with open_run(out, config, command="test", inputs={"teacher": config.teacher}, input_fields=("teacher",),
                  **kw) as run:
        if run.finished:
            return run
        (out / "metrics.jsonl").write_text(json.dumps({"step": config.max_steps, "eta": config.eta}) + "\n")
        (out / "teacher_out").mkdir(exist_ok=True)
        (out / "checkpoints" / str(config.max_steps)).mkdir(parents=True, exist_ok=True)
        if finish:
            run.finish(results=list(results), summary={"final_step": config.max_steps})
        return run


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_second_run_is_refused_at_once_naming_folder_and_process(tmp_path):
    out = tmp_path / "run"
    with open_run(out, Config(), command="calibrate"):
        with pytest.raises(FolderBusy) as err:
            with open_run(out, Config(), command="calibrate"):
                pass
        message = str(err.value)
        assert str(out) in message and f"pid {os.getpid()}" in message and socket.gethostname() in message
        assert "calibrate" in message
    with open_run(out, Config(), command="calibrate"):  # released at exit: the next run gets it
        pass


def test_lock_held_by_another_process_is_refused(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from jaxdistill.run_folder import FolderLock
        lock = FolderLock({str(out)!r}, "calibrate"); lock.acquire()
        print("held", flush=True); time.sleep(60)""")], stdout=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusy, match=f"pid {holder.pid} on host"):
            with open_run(out, Config(), command="calibrate"):
                pass
    finally:
        holder.kill()
        holder.wait()
    # killed: the OS dropped its lock, and its owner record is reported as stale
    with open_run(out, Config(), command="calibrate") as run:
        assert run.stale_owner["pid"] == holder.pid


def test_stale_lock_of_a_killed_run_is_reported_and_taken_over(tmp_path, caplog):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / run_folder.OWNER_FILE).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(),
                                                         "command": "calibrate", "started": "earlier"}))
    with caplog.at_level(logging.WARNING, logger="jaxdistill.run_folder"):
        with open_run(out, Config(), command="calibrate") as run:
            assert run.stale_owner["pid"] == dead.pid
            assert json.loads((out / run_folder.OWNER_FILE).read_text())["pid"] == os.getpid()
    assert f"pid {dead.pid}" in caplog.text and "stale" in caplog.text
    assert not (out / run_folder.OWNER_FILE).exists()  # a clean exit leaves no owner record


def test_manifest_records_config_inputs_and_results(tmp_path, teacher):
    out = tmp_path / "run"
    _run(out, Config(teacher=str(teacher)))
    manifest = read_manifest(out)
    assert manifest["status"] == "finished" and manifest["command"] == "test"
    assert manifest["config"]["eta"] == 1.0 and manifest["config"]["mesh"] == {"data": 1, "tensor": 1}
    assert manifest["inputs"]["teacher"] == run_folder.fingerprint_path(teacher)
    assert manifest["results"] == ["metrics.jsonl", "teacher_out"]
    assert manifest["summary"] == {"final_step": 4}
    assert is_finished(out)


def test_changed_settings_are_refused_naming_each_field(tmp_path, teacher):
    out = tmp_path / "run"
    _run(out, Config(teacher=str(teacher)))
    before = _snapshot(out)
    for resume in (False, True):  # resuming does not make an unsafe change acceptable
        with pytest.raises(SettingsChanged) as err:
            _run(out, Config(teacher=str(teacher), eta=-3.0, learning_rate=2e-3, resume=resume))
        message = str(err.value)
        assert "eta: 1.0 there, -3.0 now" in message and "learning_rate: 0.001 there, 0.002 now" in message
        assert "overwrite=true" in message and "max_steps" not in message
    assert _snapshot(out) == before


def test_changed_input_contents_are_refused_but_a_moved_copy_is_the_same_input(tmp_path, teacher):
    out = tmp_path / "run"
    _run(out, Config(teacher=str(teacher)), finish=False)
    moved = tmp_path / "elsewhere" / "teacher"
    moved.parent.mkdir()
    teacher.rename(moved)
    run = _run(out, Config(teacher=str(moved), resume=True))  # the same bytes at another path: resumes
    assert run.resumed
    (moved / "model.safetensors").write_bytes(b"retrained" * 100)
    with pytest.raises(SettingsChanged, match="contents of teacher: \"fingerprint [0-9a-f]{12}\" there"):
        _run(out, Config(teacher=str(moved), resume=True))


def test_resume_accepts_only_the_documented_safe_changes(tmp_path, caplog):
    out = tmp_path / "run"
    _run(out, Config(), finish=False)  # an interrupted run
    with pytest.raises(FolderHoldsRun, match="unfinished run.*resume=true"):
        _run(out, Config())  # not resuming: starting over would overwrite it
    with caplog.at_level(logging.INFO, logger="jaxdistill.run_folder"):
        run = _run(out, Config(max_steps=8, progress=False, mesh=Mesh(data=2), resume=True))
    assert run.resumed and is_finished(out)
    assert "max_steps: 4 there, 8 now" in caplog.text
    changed = read_manifest(out)["resumes"][-1]["changed"]
    assert set(changed) == {"max_steps", "progress", "mesh.data"}
    assert read_manifest(out)["config"]["max_steps"] == 8  # the manifest describes what now runs


def test_finished_run_is_reported_finished_and_left_untouched(tmp_path):
    out = tmp_path / "run"
    _run(out, Config())
    before = _snapshot(out)
    assert _run(out, Config()).finished  # same settings: nothing to do
    assert _run(out, Config(progress=False)).finished  # watching it differently finishes nothing new
    assert _snapshot(out) == before
    with pytest.raises(FolderHoldsRun, match="max_steps: 4 there, 8 now.*resume=true"):
        _run(out, Config(max_steps=8))
    run = _run(out, Config(max_steps=8, resume=True), finish=False)  # more steps, resuming: continues it
    assert not run.finished and run.resumed and read_manifest(out)["config"]["max_steps"] == 8


def test_finished_test_reads_manifest_and_results_not_checkpoints(tmp_path):
    out = tmp_path / "run"
    _run(out, Config())
    import shutil

    shutil.rmtree(out / "checkpoints")  # to save disk: the run is still finished, and never overwritten
    metrics = (out / "metrics.jsonl").read_bytes()
    assert is_finished(out)
    assert _run(out, Config()).finished
    assert (out / "metrics.jsonl").read_bytes() == metrics
    shutil.rmtree(out / "teacher_out")  # a result gone: not finished, and a rerun says which
    assert not is_finished(out)
    with pytest.raises(FolderHoldsRun, match=r"results \['teacher_out'\] are gone.*overwrite=true"):
        _run(out, Config(), resume=True)
    assert (out / "metrics.jsonl").read_bytes() == metrics


def test_overwrite_moves_the_old_run_aside_and_says_where(tmp_path, caplog):
    out = tmp_path / "run"
    _run(out, Config())
    old = _snapshot(out)
    with caplog.at_level(logging.WARNING, logger="jaxdistill.run_folder"):
        run = _run(out, Config(eta=-3.0, overwrite=True))
    assert run.moved_to.parent == tmp_path and run.moved_to.name.startswith("run.replaced-")
    assert str(run.moved_to) in caplog.text
    del old[run_folder.LOCK_FILE]  # the lock stays: this run holds it
    assert _snapshot(run.moved_to) == old  # every old file, manifest included, intact beside it
    assert read_manifest(out)["config"]["eta"] == -3.0 and is_finished(out)


def test_folder_of_an_earlier_version_without_manifest(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints" / "4").mkdir(parents=True)
    (out / "metrics.jsonl").write_text('{"step": 4}\n')
    with pytest.raises(FolderHoldsRun, match="no manifest.json.*resume=true") as err:
        _run(out, Config())
    assert isinstance(err.value, FileExistsError) and isinstance(err.value, ValueError)  # CLIs print both
    assert (out / "metrics.jsonl").read_text() == '{"step": 4}\n'
    assert _run(out, Config(resume=True), finish=False).manifest["status"] == "running"


def test_a_folder_holding_only_a_manifest_has_nothing_to_lose(tmp_path):
    """A run that failed before writing anything (a missing model, say) does not block a corrected rerun."""
    out = tmp_path / "run"
    with open_run(out, Config(teacher=str(tmp_path / "typo")), command="test", inputs={"teacher": "typo"}):
        pass
    with open_run(out, Config(eta=2.0), command="test") as run:
        assert not run.finished and read_manifest(out)["config"]["eta"] == 2.0


def test_output_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "out").write_text("x")
    with pytest.raises(RunFolderError, match="is a file"):
        with open_run(tmp_path / "out", Config(), command="test"):
            pass


def test_arms_are_reused_by_key_never_by_label(tmp_path, teacher):
    arm = tmp_path / "arms" / "eta-1"
    config = Config(teacher=str(teacher), eta=-1.0)
    _run(arm, config)
    key = read_manifest(arm)["key"]
    same = run_folder.key_for(dataclasses.replace(config, progress=False), {"teacher": str(teacher)}, ("teacher",))
    other = run_folder.key_for(dataclasses.replace(config, eta=-3.0), {"teacher": str(teacher)}, ("teacher",))
    longer = run_folder.key_for(dataclasses.replace(config, max_steps=8), {"teacher": str(teacher)}, ("teacher",))
    assert same == key and other != key and longer != key
    assert arm_is_finished(arm, same) and not arm_is_finished(arm, other) and not arm_is_finished(arm, longer)
    arm_config = dataclasses.replace(config, output_dir=str(arm))
    assert run_folder.finished_as(arm_config, ("teacher",))
    assert not run_folder.finished_as(dataclasses.replace(arm_config, eta=-3.0), ("teacher",))
    (teacher / "model.safetensors").write_bytes(b"recalibrated" * 100)  # the same label, another teacher
    assert not arm_is_finished(arm, run_folder.key_for(config, {"teacher": str(teacher)}, ("teacher",)))


def test_large_files_are_fingerprinted_by_samples(tmp_path, monkeypatch):
    monkeypatch.setattr(run_folder, "WHOLE_FILE_LIMIT", 4096)
    monkeypatch.setattr(run_folder, "SAMPLE", 256)
    path = tmp_path / "big.safetensors"
    data = bytearray(os.urandom(10_000))
    path.write_bytes(bytes(data))
    first = run_folder.fingerprint_path(path)
    os.utime(path, (0, 0))  # a copy with another modification time: the same input
    assert run_folder.fingerprint_path(path) == first
    data[5000] ^= 1  # a change inside the middle sample
    path.write_bytes(bytes(data))
    assert run_folder.fingerprint_path(path) != first


def test_a_command_that_cannot_resume_redoes_its_unfinished_run(tmp_path):
    """evaluate, diagnose: a killed run of the same settings is redone; other settings are still refused."""
    out = tmp_path / "run"
    _run(out, Config(), finish=False)
    run = _run(out, Config(), resumable=False)
    assert run.resumed and is_finished(out)
    with pytest.raises(SettingsChanged, match="eta"):
        _run(out, Config(eta=2.0), resumable=False)


def test_overwrite_replaces_only_what_would_be_refused(tmp_path):
    out = tmp_path / "run"
    _run(out, Config())
    before = _snapshot(out)
    run = _run(out, Config(overwrite=True))  # the same settings, finished: still just reported
    assert run.finished and run.moved_to is None and _snapshot(out) == before


def test_a_finished_run_without_checkpoints_is_not_continued_from_step_0(tmp_path):
    out = tmp_path / "run"
    _run(out, Config())
    with pytest.raises(FolderHoldsRun, match="nothing to continue from"):
        _run(out, Config(max_steps=8, resume=True), can_continue=lambda: False)
    run = _run(out, Config(max_steps=8, resume=True, overwrite=True), can_continue=lambda: False)
    assert run.moved_to is not None and not run.resumed


@dataclasses.dataclass
class LaterConfig(Config):
    """``Config`` as a later version declares it: one setting added, whose default keeps the old behaviour."""
    influence_steps: int = 1


def test_a_setting_added_later_at_its_default_is_the_same_run(tmp_path, teacher):
    out = tmp_path / "run"
    _run(out, Config(teacher=str(teacher), output_dir=str(out)))
    before = _snapshot(out)
    later = LaterConfig(teacher=str(teacher), output_dir=str(out))
    assert run_folder.finished_as(later, ("teacher",))       # reused by a sweep after the upgrade
    assert _run(out, later).finished and _snapshot(out) == before   # and read back by a rerun
    changed = dataclasses.replace(later, influence_steps=4)  # set to another value: a change, named
    assert not run_folder.finished_as(changed, ("teacher",))
    with pytest.raises(SettingsChanged, match="influence_steps: \"<absent>\" there, 4 now"):
        _run(out, changed)
    assert not run_folder.finished_as(dataclasses.replace(later, eta=-1.0), ("teacher",))
    assert _snapshot(out) == before


def test_an_experiment_holds_its_folder_for_the_block(tmp_path):
    """``held``: a second experiment (or run) into the folder is refused while the block runs, naming the
    holder; the folder is free again after it, also when the block raised."""
    with run_folder.held(tmp_path, "knob grid"):
        with pytest.raises(run_folder.FolderBusy, match="knob grid"):
            run_folder.FolderLock(tmp_path, "ceiling test").acquire()
    with pytest.raises(RuntimeError, match="boom"):
        with run_folder.held(tmp_path, "knob grid"):
            raise RuntimeError("boom")
    lock = run_folder.FolderLock(tmp_path, "scorecard")
    lock.acquire()
    assert lock.stale is None  # released cleanly: no owner record left behind
    lock.release()


def test_an_experiment_into_a_held_folder_is_refused_before_it_writes(tmp_path):
    from jaxdistill.experiments import ceiling

    with run_folder.held(tmp_path, "ceiling test"):
        with pytest.raises(run_folder.FolderBusy, match="in use by another run"):
            ceiling.run_ceiling(students={"a": "A"}, out=tmp_path, prompts=5)
    assert not (tmp_path / "sets").exists()
