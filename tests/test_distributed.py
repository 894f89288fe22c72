"""Multi-process runs on one machine: 2 JAX processes (2 CPU devices each) over 127.0.0.1 give the
same calibration as 1 process with the same 4-device mesh and global batch; killed with SIGKILL after a
checkpoint and resumed, they finish with what an uninterrupted run writes; plus the init logic."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import load_file

from jaxdistill import distributed
from jaxdistill.training import measures_the_machine, read_metrics
from helpers import tiny_world

REPO = Path(__file__).resolve().parents[1]
RUN_TIMEOUT_S = 300  # generous: the runs take ~40 s on 2 idle cores, several times that on busy ones


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices_per_process: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "XLA_", "SLURM_", "OMPI_", "TPU_"))}
    env.update(JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_per_process}",
               # Both runs compile the same way; skipping XLA's slow optimisation passes halves the test time.
               JAX_DISABLE_MOST_OPTIMIZATIONS="1")
    return env


def _calibrate(config: Path, *overrides: str, devices: int, log: Path) -> subprocess.Popen:
    """Start ``python -m jaxdistill.calibrate`` (stdout/stderr to ``log``)."""
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", "jaxdistill.calibrate", "--config", str(config), *overrides],
                                cwd=REPO, env=_env(devices), stdout=out, stderr=subprocess.STDOUT)


def _two_processes(config: Path, out: Path, *overrides: str, logs: list[Path]) -> list[subprocess.Popen]:
    """Start a calibration as 2 processes x 2 CPU devices, joined over a free loopback port."""
    port = _free_loopback_port()
    return [_calibrate(config, f"output_dir={out}", "distributed.mode=explicit",
                       f"distributed.coordinator_address=127.0.0.1:{port}", "distributed.num_processes=2",
                       f"distributed.process_id={i}", *overrides, devices=2, log=logs[i]) for i in range(2)]


def _wait(processes: list[subprocess.Popen], logs: list[Path]) -> None:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        for p in processes:
            p.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        for p in processes:
            p.kill()
            p.wait()
        pytest.fail(f"calibrate processes ran past {RUN_TIMEOUT_S} s; logs:\n" +
                    "\n".join(f"--- {log}\n{log.read_text()[-3000:]}" for log in logs))
    for p, log in zip(processes, logs):
        assert p.returncode == 0, f"{log.name} exited with {p.returncode}:\n{log.read_text()[-5000:]}"


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same tiny calibration as 1 process x 4 devices and as 2 processes x 2 devices."""
    root = tmp_path_factory.mktemp("multiprocess")
    world = tiny_world(root / "world")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(dict(
        teacher=str(world["teacher"]), proxy=str(world["proxy"]), task="arith", num_generations=4,
        task_options=["train_size=500"],  # every process draws its prompts' split: 500 problems, not 20,000
        prompts_per_step=2, max_steps=2, max_completion_length=12, learning_rate=1e-2, lora_rank=4,
        lora_alpha=8.0, eval_steps=0, eval_num_prompts=4, save_steps=2, progress=False, eta=1.0, beta=0.04,
        mesh={"data": 1, "fsdp": 4, "tensor": 1},
        # the module's own cache: the resumed runs below load the programs these runs compiled
        compilation_cache_dir=str(root / "compilation_cache"))))
    one, two = root / "one", root / "two"
    logs = [root / f"two.process{i}.log" for i in range(2)] + [root / "one.log"]
    # All three processes run at once: XLA compiles mostly on one core, so this overlaps the compiles.
    processes = _two_processes(config, two, logs=logs)
    processes.append(_calibrate(config, f"output_dir={one}", "distributed.mode=off", devices=4, log=logs[2]))
    _wait(processes, logs)
    return {"one": one, "two": two, "logs": logs[:2], "config": config}


def test_two_processes_join_one_runtime(two_runs):
    for i, log in enumerate(two_runs["logs"]):
        assert f"process {i} of 2, 2 local / 4 global devices" in log.read_text()
    # only process 0 prints the result
    assert '"output_dir"' in two_runs["logs"][0].read_text()
    assert '"output_dir"' not in two_runs["logs"][1].read_text()


def test_two_processes_log_the_same_metrics_as_one(two_runs):
    one, two = read_metrics(two_runs["one"]), read_metrics(two_runs["two"])
    assert [r["step"] for r in two] == [0, 1, 2]  # written once (process 0), not once per process
    assert [r["step"] for r in one] == [0, 1, 2]
    compared = 0
    for a, b in zip(one, two):
        assert a.keys() == b.keys()
        for key in a:
            if measures_the_machine(key):
                continue
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-5), (a["step"], key)
            compared += 1
    assert compared > 50
    assert two[2]["grad_norm"] > 0 and two[2]["kl"] > 0  # the adapters did move


def test_two_processes_export_and_checkpoint_like_one(two_runs):
    for folder, name in (("teacher", "model.safetensors"), ("adapter", "adapter.safetensors")):
        a = load_file(str(two_runs["one"] / folder / name))
        b = load_file(str(two_runs["two"] / folder / name))
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_allclose(b[key], a[key], rtol=1e-4, atol=1e-5, err_msg=key)
    assert (two_runs["two"] / "checkpoints" / "2").is_dir()
    assert json.loads((two_runs["two"] / "config.json").read_text())["distributed"]["num_processes"] == 2


def test_two_processes_measure_the_harm_of_one_in_influence_mode(two_runs, tmp_path):
    """Influence mode: the validation batches and rollouts split over the 4 devices of both processes
    (sharding.shard_rows); the direction, its stability and the harm are those of one process."""
    influence = ("calibration_mode=influence", "influence_validation_size=8", "influence_batch_size=2",
                 "eta=-1", "max_steps=1", "save_steps=1", "export=false")
    logs = [tmp_path / f"two.process{i}.log" for i in range(2)] + [tmp_path / "one.log"]
    processes = _two_processes(two_runs["config"], tmp_path / "two", *influence, logs=logs)
    processes.append(_calibrate(two_runs["config"], f"output_dir={tmp_path / 'one'}", "distributed.mode=off",
                                *influence, devices=4, log=logs[2]))
    _wait(processes, logs)
    one, two = read_metrics(tmp_path / "one")[1], read_metrics(tmp_path / "two")[1]
    for key in ("calibration/harm_mean", "calibration/harm_std", "calibration/direction_stability",
                "calibration/validation_loss", "calibration/validation_grad_norm", "loss"):
        assert two[key] == pytest.approx(one[key], rel=1e-4, abs=1e-6), key


def _committed_checkpoints(out: Path) -> list[int]:
    """The steps of orbax's complete checkpoints (a checkpoint being written has a temporary name)."""
    try:
        return sorted(int(p.name) for p in (out / "checkpoints").iterdir() if p.name.isdigit())
    except FileNotFoundError:
        return []


def test_two_processes_killed_after_a_checkpoint_resume_to_the_uninterrupted_run(two_runs, tmp_path):
    """Both processes SIGKILLed once the step-1 checkpoint is complete (step 2 of 2 still to run), then both
    relaunched with resume=true: the run takes over the folder its killed process 0 still names as locked,
    continues from step 1 and ends with the uninterrupted 2-process run's weights and metrics, bit for bit
    (``save_steps=1`` here against 2 there: when checkpoints are written never changes what a step computes)."""
    out, settings = tmp_path / "run", ("save_steps=1", "resume=true")
    killed = [tmp_path / f"killed.process{i}.log" for i in range(2)]
    processes = _two_processes(two_runs["config"], out, *settings, logs=killed)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (not _committed_checkpoints(out) and all(p.poll() is None for p in processes)
           and time.monotonic() < deadline):
        time.sleep(0.005)
    running = all(p.poll() is None for p in processes)
    for p in processes:  # both at once, before process 1 sees process 0 gone (it would abort itself)
        p.kill()  # SIGKILL: no handler runs, the folder's lock and owner record stay behind
    for p in processes:
        p.wait()
    logs = "\n".join(f"--- {log}\n{log.read_text()[-3000:]}" for log in killed)
    assert running, f"a process ended before the step-1 checkpoint was complete (or it never was):\n{logs}"
    assert [p.returncode for p in processes] == [-signal.SIGKILL] * 2, logs
    assert _committed_checkpoints(out) == [1], logs  # killed between the two checkpoints
    assert json.loads((out / "manifest.json").read_text())["status"] == "running"
    assert (out / ".owner.json").exists()  # the killed process 0 still names itself the folder's owner

    resumed = [tmp_path / f"resumed.process{i}.log" for i in range(2)]
    _wait(_two_processes(two_runs["config"], out, *settings, logs=resumed), resumed)
    log0 = resumed[0].read_text()
    assert "its lock was stale and this run takes over" in log0
    assert "resumed from step 1" in log0
    assert "resumed from step 1" in resumed[1].read_text()  # process 1 restores the same step
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "finished" and len(manifest["resumes"]) == 1
    assert _committed_checkpoints(out) == [1, 2]

    reference = two_runs["two"]
    for folder, name in (("teacher", "model.safetensors"), ("adapter", "adapter.safetensors")):
        a, b = load_file(str(reference / folder / name)), load_file(str(out / folder / name))
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(b[key], a[key], err_msg=f"{folder}/{key}")
    comparable = lambda records: [{k: v for k, v in r.items() if not measures_the_machine(k)}  # noqa: E731
                                  for r in records]
    expected, got = comparable(read_metrics(reference)), comparable(read_metrics(out))
    assert [r["step"] for r in got] == [0, 1, 2]  # step 1 from the killed run, step 2 from the resumed one
    assert got == expected


# ---- initialisation logic (no runtime is started) ------------------------------------------------

def _clear_cluster_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")):
            monkeypatch.delenv(key)


def test_auto_without_a_cluster_is_a_single_process(monkeypatch):
    _clear_cluster_env(monkeypatch)
    monkeypatch.setattr(distributed, "detect_cluster", lambda: None)
    assert distributed.initialize("auto") == "single"
    assert distributed.initialize("off") == "off"


def test_slurm_job_with_several_tasks_is_detected(monkeypatch):
    _clear_cluster_env(monkeypatch)
    slurm = dict(SLURM_JOB_ID="42", SLURM_STEP_NODELIST="node[001-002]", SLURM_NTASKS="2", SLURM_PROCID="1",
                 SLURM_LOCALID="0")
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    assert distributed.detect_cluster() == "slurm"
    monkeypatch.setenv("SLURM_NTASKS", "1")  # a one-task allocation runs as one process
    assert distributed.detect_cluster() != "slurm"


def test_explicit_errors_name_the_missing_fields(monkeypatch):
    _clear_cluster_env(monkeypatch)
    with pytest.raises(ValueError, match="distributed.num_processes, distributed.process_id"):
        distributed.initialize("explicit", coordinator_address="127.0.0.1:1234")
    with pytest.raises(ValueError, match="only coordinator_address set"):
        distributed.initialize("auto", coordinator_address="127.0.0.1:1234")
    with pytest.raises(ValueError, match=r"process_id=2 must be in \[0, num_processes=2\)"):
        distributed.initialize("explicit", "127.0.0.1:1234", 2, 2)
    with pytest.raises(ValueError, match="mode must be one of"):
        distributed.initialize("slurm")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two' is not an integer"):
        distributed.initialize("auto")


def test_to_host_copies_local_arrays():
    import jax.numpy as jnp

    np.testing.assert_array_equal(distributed.to_host(jnp.arange(6).reshape(2, 3)), np.arange(6).reshape(2, 3))
