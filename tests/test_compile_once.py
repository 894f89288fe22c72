"""Compile once: a calibration's programs are all built at step 1, then reused (fixed shapes), and a rerun
loads them from the persistent compilation cache."""
import numpy as np
import pytest

from jaxdistill.calibrate import CalibrateConfig, calibrate
from jaxdistill.generation.sampler import bucket_length
from jaxdistill.sharding import MeshConfig
from jaxdistill.tasks import get_task
from jaxdistill.tasks.pipeline import prompt_text
from jaxdistill.tokenizer import load_tokenizer
from jaxdistill.training import read_metrics

from tiny_models import tiny_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny_world(tmp_path_factory.mktemp("world"))


def _config(world, out, **overrides):
    base = dict(teacher=str(world["teacher"]), proxy=str(world["proxy"]), task="arith", output_dir=str(out),
                num_generations=2, prompts_per_step=2, max_steps=20, max_completion_length=8,
                learning_rate=1e-2, lora_rank=4, lora_alpha=8.0, eval_every=0, eval_prompts=2,
                save_every=10, progress=False, eta=1.0, beta=0.04, proxy_learning_rate=1e-3,
                mesh=MeshConfig(num_devices=1))
    base.update(overrides)
    return CalibrateConfig(**base)


def test_no_program_is_compiled_after_the_first_step(world, tmp_path):
    calibrate(_config(world, tmp_path / "run"))
    records = read_metrics(tmp_path / "run")
    # the prompts drawn really have lengths that fall in different buckets of a per-batch ladder
    tok = load_tokenizer(world["teacher"])
    task = get_task("arith")
    lengths = [len(tok.encode(prompt_text(task, ex, tok.hf, False))) for ex in task.load("train")]
    assert len({bucket_length(n) for n in lengths}) >= 2, sorted(set(lengths))
    assert records[1]["compile/programs"] > 5  # step 1 builds the rollout, scoring, update ... programs
    later = {r["step"]: r["compile/programs"] for r in records if r["step"] >= 2}
    assert len(later) == 19 and all(n == 0 for n in later.values()), later
