"""The memory plan: its exact parts match the arrays the code really allocates on a sharded mesh."""
from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from pathlib import Path

import jax
import pytest
from flax import nnx

from jaxdistill.rl.config import CalibrateConfig
from jaxdistill.config import load_config
from jaxdistill.generation.sampler import _constrain_cache
from jaxdistill.models import LoraConfig, LoraParam, load_model
from jaxdistill.plan import PUBLISHED_CONFIGS, main, plan_memory
from jaxdistill.rl.influence import validation_shape
from jaxdistill.sharding import MeshConfig, make_mesh
from jaxdistill.training import make_optimizer
from helpers import tiny_qwen_folder

REPO = Path(__file__).resolve().parents[1]
TOLERANCE = 0.15  # the acceptance bound; the exact parts should in fact agree to the byte


def measured_per_device(tree) -> int:
    """Bytes of the fullest device over every array in ``tree`` (what is really allocated)."""
    per_device: dict = defaultdict(int)
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array):
            for shard in leaf.addressable_shards:
                per_device[shard.device] += shard.data.nbytes
    return max(per_device.values())


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    from jaxdistill.tasks.tiny_tokenizers import train_tiny_tokenizers

    root = tmp_path_factory.mktemp("plan")
    toks = train_tiny_tokenizers(root / "tokenizers", n_problems=200)
    return {"teacher": tiny_qwen_folder(root / "teacher", toks["teacher"], model_type="qwen3", hidden_size=64,
                                        layers=2, head_dim=16, tie=False),
            "proxy": tiny_qwen_folder(root / "proxy", toks["proxy"], model_type="qwen2")}


@pytest.mark.parametrize("mesh,dtype", [(MeshConfig(data=2, fsdp=2, tensor=2), "float32"),
                                        (MeshConfig(data=1, fsdp=4, tensor=2), "bfloat16")])
def test_plan_matches_measured_allocations(tiny_models, mesh, dtype):
    config = CalibrateConfig(teacher=str(tiny_models["teacher"]), proxy=str(tiny_models["proxy"]), dtype=dtype,
                             mesh=mesh, prompts_per_step=3, num_generations=4, max_prompt_length=64,
                             max_completion_length=32, eval_num_prompts=4, lora_rank=8, lora_alpha=16.0)
    plan = plan_memory(config, num_devices=8)
    device_mesh = make_mesh(mesh)
    lora = LoraConfig(rank=8, alpha=16.0)
    teacher, _ = load_model(config.teacher, dtype=dtype, mesh=device_mesh, lora=lora)
    proxy, _ = load_model(config.proxy, dtype=dtype, mesh=device_mesh)
    lora_state = nnx.state(teacher, LoraParam)
    opt_state = make_optimizer(config.learning_rate, config.max_steps).init(lora_state)

    # the KV cache the sampler builds for the rollouts: 12 rows padded to divide over data x fsdp = 4
    rows = math.ceil(12 / 4) * 4
    cache = jax.jit(lambda: _constrain_cache(teacher.init_cache(rows, 64 + 32), device_mesh))()
    measured = {
        "teacher weights": measured_per_device(nnx.state(teacher, nnx.Not(LoraParam))),
        "teacher LoRA adapters": measured_per_device(lora_state),
        "AdamW state": measured_per_device(opt_state),
        "proxy weights": measured_per_device(nnx.state(proxy)),
        "teacher KV cache": measured_per_device((cache.keys, cache.values, cache.valid)),
    }
    for part, real in measured.items():
        planned = plan.get(part)
        assert abs(planned - real) <= TOLERANCE * real, (part, planned, real)
    assert plan.peak_bytes > plan.phase_bytes("static")


def test_learning_proxy_adds_its_optimizer_gradients_and_backward(tiny_models):
    mesh = MeshConfig(data=2, fsdp=2, tensor=2)
    config = CalibrateConfig(teacher=str(tiny_models["teacher"]), proxy=str(tiny_models["proxy"]), mesh=mesh,
                             prompts_per_step=3, num_generations=4, max_prompt_length=64, max_completion_length=32)
    frozen = plan_memory(config, num_devices=8)
    learning = plan_memory(dataclasses.replace(config, proxy_learning_rate=1e-3), num_devices=8)
    proxy, _ = load_model(config.proxy, mesh=make_mesh(mesh))
    params = nnx.state(proxy, nnx.Param)
    real = measured_per_device(make_optimizer(1e-3, config.max_steps).init(params))
    planned = learning.get("proxy AdamW state (learning proxy)")
    assert abs(planned - real) <= TOLERANCE * real, (planned, real)
    assert learning.get("proxy gradients") == learning.get("proxy weights")
    assert learning.phase_bytes("scoring") > frozen.phase_bytes("scoring")
    assert learning.phase_bytes("static") == frozen.phase_bytes("static") + planned


def test_published_8b_config_has_8b_parameters():
    """The built-in Qwen3-8B shapes give the model card's 8.2B parameters (15.3 GiB in bf16)."""
    config = load_config(CalibrateConfig, REPO / "configs" / "qwen3_8b_gsm8k.yaml")
    plan = plan_memory(config, num_devices=1)
    assert plan.sources["teacher"].startswith("built-in copy of Qwen/Qwen3-8B")
    params = plan.get("teacher weights") / 2  # bf16, one device holds everything
    assert params == pytest.approx(8.19e9, rel=0.01)
    assert plan.get("proxy weights") / 2 == pytest.approx(0.596e9, rel=0.01)  # Qwen3-0.6B, tied embedding


def test_remat_shrinks_the_activations_the_backward_keeps():
    import dataclasses

    config = load_config(CalibrateConfig, REPO / "configs" / "qwen3_8b_gsm8k.yaml")
    act = {remat: plan_memory(dataclasses.replace(config, remat=remat), num_devices=1).get(
        "teacher activations (backward)") for remat in ("none", "dots", "full")}
    assert act["none"] > 2 * act["dots"] > 2 * act["full"], act
    # influence mode: the proxy's backward over a validation batch (the direction phase) follows remat too
    influence = dataclasses.replace(config, calibration_mode="influence")
    proxy = {remat: plan_memory(dataclasses.replace(influence, remat=remat), num_devices=1).get(
        "proxy activations (backward)") for remat in ("none", "full")}
    assert proxy["none"] > 2 * proxy["full"], proxy


def test_sharding_divides_the_static_parts():
    config = load_config(CalibrateConfig, REPO / "configs" / "qwen3_8b_gsm8k.yaml")
    one, sixteen = plan_memory(config, num_devices=1), plan_memory(config, num_devices=16)
    assert sixteen.get("teacher weights") == pytest.approx(one.get("teacher weights") / 16, rel=0.02)
    assert sixteen.get("teacher KV cache") == pytest.approx(one.get("teacher KV cache") / 16, rel=0.02)


def test_cli_prints_the_plan_and_the_verdict(capsys):
    assert main(["--config", str(REPO / "configs" / "qwen3_8b_gsm8k.yaml"), "devices=16",
                 "device_memory_gib=95"]) == 0
    out = capsys.readouterr().out
    for part in ("teacher weights", "teacher LoRA adapters", "AdamW state", "teacher KV cache",
                 "teacher activations", "estimated peak", "on 95 GiB devices: fits", "fsdp=16"):
        assert part in out, part
    assert main(["--config", str(REPO / "configs" / "qwen3_8b_gsm8k.yaml"), "devices=1",
                 "device_memory_gib=16"]) == 0
    assert "does NOT fit" in capsys.readouterr().out


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["teacher=someone/unknown-model", "proxy=Qwen/Qwen3-0.6B", "devices=1"]) == 1
    err = capsys.readouterr().err
    assert "huggingface-cli download someone/unknown-model config.json" in err
    assert set(PUBLISHED_CONFIGS) >= {"Qwen/Qwen3-8B", "Qwen/Qwen3-0.6B", "Qwen/Qwen2.5-0.5B-Instruct"}


def test_influence_mode_counts_the_direction_and_the_harm_jvp(tiny_models):
    mesh = MeshConfig(data=2, fsdp=2, tensor=2)
    config = CalibrateConfig(teacher=str(tiny_models["teacher"]), proxy=str(tiny_models["proxy"]), mesh=mesh,
                             prompts_per_step=3, num_generations=4, max_prompt_length=64, max_completion_length=32)
    span = plan_memory(config, num_devices=8)
    influence = plan_memory(dataclasses.replace(config, calibration_mode="influence", influence_batch_size=16),
                            num_devices=8)
    # the direction is a pytree like the proxy's parameters, placed like them
    assert influence.get("harm direction u") == influence.get("proxy weights")
    assert influence.phase_bytes("static") == span.phase_bytes("static") + influence.get("harm direction u")
    assert influence.get("proxy forward with tangents (harm)") == 2 * span.get("proxy forward (logits chunk)")
    assert span.phase_bytes("direction") == 0 and influence.phase_bytes("direction") > 0
    larger = plan_memory(dataclasses.replace(config, calibration_mode="influence", influence_batch_size=64),
                         num_devices=8)
    assert larger.get("proxy activations (backward)") == 4 * influence.get("proxy activations (backward)")
    # 1,024 texts in batches of at most 18: 58 batches of 18 rows, padded to 20 to split over data x fsdp = 4
    assert validation_shape(1024, 18, 4) == (58, 20) and validation_shape(1024, 16, 4) == (64, 16)
    odd = plan_memory(dataclasses.replace(config, calibration_mode="influence", influence_batch_size=18),
                      num_devices=8)
    assert 4 * odd.get("proxy activations (backward)") == 5 * influence.get("proxy activations (backward)")
    assert "peak while direction" in influence.table() and "peak while direction" not in span.table()


def test_docs_show_the_plan_the_code_prints(capsys):
    """docs/scale.md quotes the 8B plan; it must be what the CLI prints today."""
    main(["--config", str(REPO / "configs" / "qwen3_8b_gsm8k.yaml"), "devices=16", "device_memory_gib=95"])
    printed = capsys.readouterr().out.strip()
    assert printed in (REPO / "docs" / "scale.md").read_text()
