"""Compile once: a calibration's programs are all built at step 1, then reused (fixed shapes), and a rerun
loads them from the persistent compilation cache."""
import jax
import pytest

from jaxdistill.rl.loop import calibrate
from jaxdistill.compilation import use_compilation_cache
from jaxdistill.generation.sampler import bucket_length
from jaxdistill.tasks import get_task
from jaxdistill.tasks.pipeline import prompt_text
from jaxdistill.tokenizer import load_tokenizer
from jaxdistill.training import read_metrics

from helpers import tiny_calibration, tiny_world


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return tiny_world(tmp_path_factory.mktemp("world"))


def _config(world, out, **overrides):
    return tiny_calibration(world, out, **{**dict(num_generations=2, max_steps=20, max_completion_length=8,
                                                  eval_num_prompts=2, save_steps=10, proxy_learning_rate=1e-3),
                                           **overrides})


@pytest.fixture
def compilation_cache(tmp_path):
    """JAX's persistent cache in a fresh folder for this test only."""
    before = (jax.config.jax_enable_compilation_cache, jax.config.jax_compilation_cache_dir,
              jax.config.jax_persistent_cache_min_compile_time_secs)
    yield use_compilation_cache(tmp_path / "jax_cache")
    for name, value in zip(("jax_enable_compilation_cache", "jax_compilation_cache_dir",
                            "jax_persistent_cache_min_compile_time_secs"), before):
        jax.config.update(name, value)
    from jax._src import compilation_cache as cc

    cc.reset_cache()


def test_programs_compile_at_step_one_only_and_a_rerun_loads_them(world, tmp_path, compilation_cache, capsys):
    jax.clear_caches()  # both runs start without the in-memory programs earlier tests in this process built
    calibrate(_config(world, tmp_path / "first"))
    first = read_metrics(tmp_path / "first")
    # the prompts drawn really have lengths that fall in different buckets of a per-batch ladder
    tok = load_tokenizer(world["teacher"])
    task = get_task("arith")
    lengths = [len(tok.encode(prompt_text(task, ex, tok.hf, False))) for ex in task.load("train")]
    assert len({bucket_length(n) for n in lengths}) >= 2, sorted(set(lengths))
    assert first[1]["compile/programs"] > 5  # step 1 builds the rollout, scoring, update ... programs
    later = {r["step"]: r["compile/programs"] for r in first if r["step"] >= 2}
    assert len(later) == 19 and all(n == 0 for n in later.values()), later
    assert any(compilation_cache.iterdir())

    jax.clear_caches()  # a new process, as far as compiled programs go: only the persistent cache remains
    calibrate(_config(world, tmp_path / "second"))
    second = read_metrics(tmp_path / "second")
    xla = [sum(r["compile/xla_seconds"] for r in run) for run in (first, second)]
    total = [sum(r["compile/seconds"] for r in run) for run in (first, second)]
    with capsys.disabled():
        print(f"\nXLA compile seconds: first run {xla[0]:.1f}, identical rerun {xla[1]:.1f} "
              f"({100 * xla[1] / xla[0]:.0f}%); with tracing and lowering: {total[0]:.1f}, {total[1]:.1f} "
              f"({100 * total[1] / total[0]:.0f}%)")
    assert xla[1] <= 0.25 * xla[0], xla  # tracing and lowering (Python) are redone by any new process
    assert [r["compile/programs"] for r in second] == [r["compile/programs"] for r in first]
    assert [r.get("reward") for r in second] == [r.get("reward") for r in first]
    # the step-time breakdown: every phase timed, and they add up to no more than the step
    for record in first[1:]:
        phases = [record[f"time/{p}"] for p in ("rollout", "reference", "rewards", "proxy_update", "update")]
        assert all(t > 0 for t in phases) and sum(phases) <= record["step_time"] + 1e-6, record
        assert record["update/tflops_per_second"] > 0 and "update/mfu" not in record  # no peak on a CPU
