"""A calibration killed with SIGKILL, again and again, resumes to the same weights and metrics.

Seven kills land at random moments of one tiny calibration (``MAX_STEPS``, a checkpoint every step):
while it starts (imports done, loading, compiling, the step-0 evaluation), during a step, while orbax
writes a checkpoint (the kill fires the moment its temporary folder appears), and while the teacher is
exported. Each kill is followed by the next launch with ``resume=true`` in the same folder; the last one
runs to the end. The folder must then hold exactly what an uninterrupted run writes: the same bytes in
every exported ``.safetensors`` and the same ``metrics.jsonl`` (wall-clock fields aside).

Cost: every launch is a process forked from a server that has already imported jaxdistill, and every
compiled program comes from JAX's persistent cache, filled by the uninterrupted reference run. The
random moments are drawn from ``CRASH_SEED`` (printed on failure; set it to replay a draw).

The concurrency test is here too: two calibrations started at once into one folder, one refused at once
naming the other, whose ``metrics.jsonl`` is then well-formed.
"""
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from helpers import tiny_world
from jaxdistill.training import measures_the_machine

ROOT = Path(__file__).resolve().parents[1]
MAX_STEPS = 21  # room for seven kills: each lets the run on by up to two checkpoints (one step per kill ran out)
# the kinds of moment, in the order they are tried, each twice (three times cost the suite's time budget);
# the export comes last, when every step is done
TRIALS = ("save", "startup", "step", "save", "startup", "step", "export")


def _argv(world, out):
    return [f"teacher={world['teacher']}", f"proxy={world['proxy']}", "task=arith", f"output_dir={out}",
            "num_generations=4", "prompts_per_step=2", f"max_steps={MAX_STEPS}", "max_completion_length=12",
            "learning_rate=1e-2", "lora_rank=4", "lora_alpha=8", "eval_steps=0", "eval_num_prompts=4", "save_steps=1",
            "progress=false", "eta=1", "mesh.num_devices=1", "resume=true"]


def _calibrate_cli(argv, returned=None):
    """The command line, in a forked process: its exit status is the process's. ``main``'s return value is
    also written to the file ``returned``: under heavy load multiprocessing can lose a child's exit status
    (it reports 255 when the fork server's status pipe closes first), and the file still tells the truth."""
    from jaxdistill.calibrate import main

    if "crash_preload" not in sys.modules:  # the server ignores a preload that fails to import
        raise RuntimeError("the fork server did not import tests/crash_preload.py: is tests/ on its PYTHONPATH?")
    code = main(argv)
    if returned is not None:
        Path(returned).write_text(str(code))
    sys.exit(code)


def _launch(ctx, argv, returned=None):
    proc = ctx.Process(target=_calibrate_cli, args=(argv, returned))
    proc.start()
    return proc


def _temporary(out: Path) -> set[str]:
    """orbax's temporary checkpoint folders (one exists while a checkpoint is being written)."""
    try:
        return {p.name for p in (out / "checkpoints").iterdir() if "tmp" in p.name}
    except FileNotFoundError:
        return set()


def _committed(out: Path) -> int:
    """The step of the newest complete checkpoint (-1: none)."""
    try:
        return max((int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit()), default=-1)
    except FileNotFoundError:
        return -1


def _wait(proc, condition, timeout: float = 300) -> bool:
    """Poll (every 2 ms) until ``condition()`` or the process ends; True if the condition came first."""
    deadline = time.monotonic() + timeout
    while proc.is_alive() and time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.002)
    return False


def _kill_at(kind, proc, out, rng, timing) -> str:
    """Kill ``proc`` at a random moment of the ``kind``; returns what was under way when it died.
    ``timing``: the shortest time from a launch to its first checkpoint write, and one step's time.
    Each kind moves the run on by at most one checkpoint, so every kill finds work still to do."""
    exported = (out / "teacher").exists()
    leftover = _temporary(out)  # left by an earlier kill (until orbax clears them): not this launch's save
    saving = lambda: bool(_temporary(out) - leftover)  # noqa: E731
    start = _committed(out)
    if kind == "startup":  # uniformly within the launch's start (load, first evaluation, the first step)
        time.sleep(rng.uniform(0, timing["startup"]))
    elif kind == "step":  # uniformly within the step after this launch's first checkpoint
        if not _wait(proc, lambda: _committed(out) > start):
            return "finished first"
        time.sleep(rng.uniform(0, timing["step"]))
    elif kind == "save":  # the moment orbax starts writing
        if not _wait(proc, saving):
            return "finished first"
    elif kind == "export":
        if exported or not _wait(proc, lambda: (out / "teacher").exists()):
            return "finished first"
    if not proc.is_alive():
        return "finished first"
    proc.kill()  # SIGKILL
    proc.join()
    # -9; or 255, multiprocessing's "status lost" when the fork server's status pipe closes first (seen
    # once under heavy load, the kill having landed mid-save): either way the process did not exit itself
    assert proc.exitcode in (-signal.SIGKILL, 255), proc.exitcode
    if saving():
        return f"checkpoint {_committed(out) + 1} being written"
    return "export being written" if kind == "export" else f"after checkpoint {_committed(out)}"


def _watch(proc, out, timing, launched: float | None = None) -> None:
    """Until ``proc`` ends: its CPU seconds (``timing["cpu"][pid]``, for the cost report) and, given its
    launch time, the seconds to its first checkpoint write (the shortest is the startup kills' window)."""
    ticks = os.sysconf("SC_CLK_TCK")
    leftover = _temporary(out)
    while proc.is_alive():
        try:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            timing["cpu"][proc.pid] = (int(fields[11]) + int(fields[12])) / ticks  # utime + stime
        except (OSError, IndexError):
            pass
        if launched is not None and _temporary(out) - leftover:
            seconds = time.monotonic() - launched
            timing["startup"] = min(timing["startup"] or seconds, seconds)
            launched = None
        time.sleep(0.01)


def _comparable_metrics(out: Path) -> list[dict]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not measures_the_machine(k)} for r in records]


def _weights(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*.safetensors"))}


@pytest.fixture(scope="module")
def forkserver(tmp_path_factory):
    """Processes forked from one server that has imported jaxdistill and drawn the arith task
    (``crash_preload``), compiling through one persistent cache."""
    cache = tmp_path_factory.mktemp("compilation_cache")
    env = {"JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
           "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0", "JAX_PLATFORMS": "cpu",
           # the server imports its preload before it learns the parent's sys.path: crash_preload's folder
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the server starts with them: JAX reads them when it is imported there
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["jaxdistill.calibrate", "jaxdistill.rl.loop", "crash_preload"])
    try:
        yield ctx
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny_world(tmp_path_factory.mktemp("crash_world"))


@pytest.fixture(scope="module")
def reference(forkserver, world, tmp_path_factory):
    """The uninterrupted run (it also fills the compilation cache) and its step time."""
    out = tmp_path_factory.mktemp("reference") / "run"
    start, timing = time.monotonic(), {"cpu": {}, "startup": 0.0}
    returned = out.parent / "returned"
    proc = _launch(forkserver, _argv(world, out), returned)
    _watch(proc, out, timing)
    proc.join()
    assert returned.exists() and returned.read_text() == "0" and proc.exitcode in (0, 255), proc.exitcode
    steps = sorted(r["step_time"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
                   if "step_time" in r)
    reference = f"{time.monotonic() - start:.0f} s wall, {sum(timing['cpu'].values()):.0f} CPU s (compiling)"
    return out, {"step": steps[len(steps) // 2], "cpu": {}, "reference": reference}  # median: not compiling


def test_sigkill_at_random_moments_resumes_to_identical_weights_and_metrics(forkserver, world, reference, tmp_path):
    seed = int(os.environ.get("CRASH_SEED", random.randrange(2**31)))
    rng = random.Random(seed)
    ref_out, timing = reference
    out = tmp_path / "run"
    moments = []
    start = time.monotonic()
    timing = dict(timing, startup=0.0)
    returned = tmp_path / "returned"  # what the last launch's main returned (its exit status can be lost)
    for kind in [*TRIALS, "none"]:  # after the last kill, one launch runs to the end
        launched = time.monotonic()
        proc = _launch(forkserver, _argv(world, out), returned if kind == "none" else None)
        watcher = threading.Thread(target=_watch, args=(proc, out, timing, launched), daemon=True)
        watcher.start()
        if kind != "none":
            moments.append((kind, _kill_at(kind, proc, out, rng, timing)))
        proc.join()
        watcher.join()
    elapsed = time.monotonic() - start
    last = proc
    report = (f"CRASH_SEED={seed}; kills: {moments}; {elapsed:.0f} s wall and {sum(timing['cpu'].values()):.0f} "
              f"CPU s for the {len(timing['cpu'])} launches; reference run: {timing['reference']}")
    print(report)
    assert returned.exists() and returned.read_text() == "0", report  # main ran to its end and returned 0
    assert last.exitcode in (0, 255), report  # 255: multiprocessing lost the status (see _calibrate_cli)
    killed = [what for _, what in moments if what != "finished first"]
    # each kill is aimed at a moment of a live run; on a fast machine the run can outpace one or two
    assert len(killed) >= len(TRIALS) - 2, report
    assert any(what.endswith("being written") and what.startswith("checkpoint") for what in killed), report
    assert _weights(out).keys() == _weights(ref_out).keys() and _weights(out), report
    assert _weights(out) == _weights(ref_out), report  # bit for bit
    assert _comparable_metrics(out) == _comparable_metrics(ref_out), report
    manifest = json.loads((out / "manifest.json").read_text())
    # every later launch records its resume, unless a kill lands in its start-up before it writes the record
    assert manifest["status"] == "finished" and len(killed) - 2 <= len(manifest["resumes"]) <= len(TRIALS), report


def test_two_runs_into_one_folder_one_is_refused_at_once(world, reference, tmp_path):
    """Started together: one takes the folder, the other exits 1 within seconds naming it and the holder."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "jaxdistill.calibrate", *_argv(world, out)[:-1], "resume=false"]
    start = time.monotonic()
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    ended = {}
    while len(ended) < 2:
        for i, proc in enumerate(procs):
            if i not in ended and proc.poll() is not None:
                ended[i] = time.monotonic() - start
        time.sleep(0.01)
    results = [(proc.returncode, proc.stderr.read()) for proc in procs]
    assert sorted(code for code, _ in results) == [0, 1], results
    refused = next(i for i, (code, _) in enumerate(results) if code == 1)
    message = results[refused][1]
    assert ended[refused] < ended[1 - refused], ended  # at once: it did not wait for the other to finish
    assert f"error: {out} is in use by another run: pid" in message and "Traceback" not in message
    holder = [p.pid for p, (code, _) in zip(procs, results) if code == 0][0]
    assert f"pid {holder} on host" in message
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(MAX_STEPS + 1))  # one run's lines, in order, each well-formed JSON
    assert _weights(out) == _weights(reference[0])


def test_evaluate_keeps_earlier_results(world, tmp_path, capsys):
    """A rerun with the same settings reads its results back; other settings are refused, naming the field
    and overwrite=true, which then moves the earlier results aside instead of writing over them."""
    from jaxdistill.evaluate import main as evaluate_main

    out = tmp_path / "eval"
    argv = [f"models=[t={world['teacher']}]", "tasks=[arith]", "num_prompts=2", "max_completion_length=4",
            f"output_dir={out}"]
    more = [*argv[:2], "num_prompts=3", *argv[3:]]
    assert evaluate_main(argv) == 0
    first = (out / "results.json").read_bytes()
    stamp = (out / "results.json").stat().st_mtime_ns
    assert evaluate_main(argv) == 0  # the same evaluation: read back, not recomputed
    assert (out / "results.json").stat().st_mtime_ns == stamp
    capsys.readouterr()
    assert evaluate_main(more) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"error: {out} holds a finished run made with other settings (num_prompts: 2 there, "
                            "3 now)") and "overwrite=true" in error
    assert (out / "results.json").read_bytes() == first
    assert evaluate_main([*more, "overwrite=true"]) == 0
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("eval.replaced-")]
    assert len(kept) == 1 and (kept[0] / "results.json").read_bytes() == first
    assert json.loads((out / "manifest.json").read_text())["config"]["num_prompts"] == 3
