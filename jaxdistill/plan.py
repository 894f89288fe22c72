"""``python -m jaxdistill.plan --config FILE``: device memory a calibration run needs, per device, before launching.

    python -m jaxdistill.plan --config configs/qwen3_8b_gsm8k.yaml
    python -m jaxdistill.plan --config configs/qwen3_8b_gsm8k.yaml devices=16 device_memory_gib=95
    python -m jaxdistill.plan --config configs/qwen3_8b_gsm8k.yaml mesh.tensor=4 prompts_per_step=32

Only the models' ``config.json`` files are read (a local folder, the Hugging Face cache, or a
built-in copy of the published config of a few Qwen checkpoints); no weight is loaded and no
device is needed. Every parameter is placed by the same logical-axis rules as ``load_model``, on
the mesh the config asks for, so the numbers are per device, after sharding.

What is counted (bytes on the device holding the most):

- static, for the whole run: teacher weights, LoRA adapters, AdamW state, proxy weights (and, for a
  learning proxy, ``proxy_learning_rate > 0``, its AdamW state);
- generation (rollouts and greedy evaluation): the teacher's KV cache,
  layers x 2 x rows x (prompt + completion) x kv_heads x head_dim, rows split over (data, fsdp)
  and kv heads over tensor (when they divide);
- training (one micro-batch): LoRA gradients, the activations the backward pass keeps, and one
  chunk of fp32 logits (``GRPOSettings.chunk_size`` positions at a time);
- calibration scoring: one chunk of the proxy's fp32 logits (a learning proxy: also its gradients
  and the activations of its backward pass);
- ``calibration_mode=influence``: the harm direction u (static, one proxy-sized pytree), the
  direction's estimate (a phase of its own, at step 1 and every ``influence_direction_steps`` for a
  learning proxy: the proxy's backward over one validation batch of ``influence_batch_size`` rows,
  padded to split over the batch axes, and the gradient sums of the two halves), and the harm
  score's forward pass with tangents (``jax.jvp``: primal and tangent, twice a plain forward).

The static parts and the KV cache are exact sizes of the arrays the code allocates (a test checks
them against arrays it builds). Activations and logits chunks are estimates of what XLA keeps alive
(rematerialisation as configured by ``remat``); XLA's own buffers, fragmentation and the compiled
programs come on top, so leave 10-20% headroom.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import AbstractMesh

from jaxdistill.config import ConfigError, check_ranges, option, run_cli
from jaxdistill.generation.sampler import bucket_length
from jaxdistill.models.config import LoraConfig, QwenConfig, as_dtype
from jaxdistill.models.lora import LoraParam
from jaxdistill.models.qwen import KVCache, Qwen
from jaxdistill.rl.config import CalibrateConfig
from jaxdistill.rl.influence import validation_shape
from jaxdistill.sharding import MESH_AXES, batch_shards, logical_to_spec, mesh_axis_sizes

GIB = 1024 ** 3

# Architecture fields of published checkpoints (copied from their config.json on the Hugging Face hub),
# so plans for the real configs work offline. A local folder or the HF cache always takes precedence.
PUBLISHED_CONFIGS: dict[str, dict[str, Any]] = {
    "Qwen/Qwen3-8B": dict(model_type="qwen3", vocab_size=151936, hidden_size=4096, intermediate_size=12288,
                          num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                          tie_word_embeddings=False, max_position_embeddings=40960, torch_dtype="bfloat16"),
    "Qwen/Qwen3-4B": dict(model_type="qwen3", vocab_size=151936, hidden_size=2560, intermediate_size=9728,
                          num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                          tie_word_embeddings=True, max_position_embeddings=40960, torch_dtype="bfloat16"),
    "Qwen/Qwen3-1.7B": dict(model_type="qwen3", vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                            num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                            tie_word_embeddings=True, max_position_embeddings=40960, torch_dtype="bfloat16"),
    "Qwen/Qwen3-0.6B": dict(model_type="qwen3", vocab_size=151936, hidden_size=1024, intermediate_size=3072,
                            num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                            tie_word_embeddings=True, max_position_embeddings=40960, torch_dtype="bfloat16"),
    "Qwen/Qwen2.5-0.5B-Instruct": dict(model_type="qwen2", vocab_size=151936, hidden_size=896,
                                       intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                                       num_key_value_heads=2, tie_word_embeddings=True,
                                       max_position_embeddings=32768, torch_dtype="bfloat16"),
    "Qwen/Qwen2.5-1.5B-Instruct": dict(model_type="qwen2", vocab_size=151936, hidden_size=1536,
                                       intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                                       num_key_value_heads=2, tie_word_embeddings=True,
                                       max_position_embeddings=32768, torch_dtype="bfloat16"),
}
PUBLISHED_CONFIGS["Qwen/Qwen2.5-0.5B"] = PUBLISHED_CONFIGS["Qwen/Qwen2.5-0.5B-Instruct"]
PUBLISHED_CONFIGS["Qwen/Qwen2.5-1.5B"] = PUBLISHED_CONFIGS["Qwen/Qwen2.5-1.5B-Instruct"]


def read_model_config(name_or_path: str) -> tuple[dict[str, Any], str]:
    """The ``config.json`` dict of a model folder or hub name, and where it came from."""
    folder = Path(name_or_path).expanduser()
    if (folder / "config.json").is_file():
        return json.loads((folder / "config.json").read_text()), str(folder / "config.json")
    if folder.is_dir():
        raise FileNotFoundError(f"{folder} has no config.json; point to an HF model folder")
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, "config.json")
    except Exception:  # not a valid repo id: fall through to the clear error below
        cached = None
    if isinstance(cached, str):
        return json.loads(Path(cached).read_text()), cached
    if name_or_path in PUBLISHED_CONFIGS:
        return dict(PUBLISHED_CONFIGS[name_or_path]), f"built-in copy of {name_or_path}/config.json"
    raise FileNotFoundError(
        f"no config.json for {name_or_path!r}: not a local folder, not in the Hugging Face cache, not one of "
        f"{sorted(PUBLISHED_CONFIGS)}. Fetch it with: huggingface-cli download {name_or_path} config.json")


# ---- per-device sizes of sharded arrays ------------------------------------------------------------

def per_device_bytes(shape: tuple[int, ...], dtype, logical_axes: tuple[str | None, ...] | None,
                     mesh: AbstractMesh) -> int:
    """Bytes of the largest shard of an array placed by ``logical_to_spec`` (replicated without axes)."""
    spec = logical_to_spec(tuple(logical_axes), tuple(shape), mesh) if logical_axes else (None,) * len(shape)
    elements = 1
    for size, axes in zip(shape, tuple(spec) + (None,) * (len(shape) - len(tuple(spec)))):
        names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
        elements *= math.ceil(size / math.prod(mesh.shape[a] for a in names))
    return elements * np.dtype(dtype).itemsize


def _state_bytes(state: nnx.State, mesh: AbstractMesh, layer_copies: int = 1) -> tuple[int, int]:
    """(per-device bytes, total bytes) of the variables of an abstract state; variables under
    ``layers`` count ``layer_copies`` times (see ``_one_layer_model``)."""
    per_device = total = 0
    for path, var in nnx.to_flat_state(state):
        value = var.get_value()
        axes = var.get_metadata().get("logical_axes")
        copies = layer_copies if path[0] == "layers" else 1
        per_device += copies * per_device_bytes(value.shape, value.dtype, axes, mesh)
        total += copies * math.prod(value.shape) * np.dtype(value.dtype).itemsize
    return per_device, total


def _one_layer_model(config: QwenConfig, lora: LoraConfig | None) -> Qwen:
    """The abstract model (shapes, dtypes, logical axes; nothing allocated) with one decoder layer.

    Every layer of a Qwen has the same variables, so one stands for all of them; tracing all 36
    layers of an 8B model would take seconds for the same answer."""
    one_layer = dataclasses.replace(config, num_hidden_layers=1)
    return nnx.eval_shape(lambda: Qwen(one_layer, rngs=nnx.Rngs(0), lora=lora))


# ---- the plan -------------------------------------------------------------------------------------

PHASES = ("generation", "training", "scoring", "direction")  # one at a time, each on top of the static part


@dataclasses.dataclass
class PlanItem:
    phase: str  # static | generation | training | scoring | direction (influence mode)
    what: str
    bytes_per_device: int
    exact: bool  # an array size (True) or an estimate of what XLA keeps alive (False)
    detail: str = ""


@dataclasses.dataclass
class MemoryPlan:
    mesh: dict[str, int]
    sources: dict[str, str]  # model -> where its config.json came from
    items: list[PlanItem]

    def get(self, what: str) -> int:
        return next(i.bytes_per_device for i in self.items if i.what == what)

    def phase_bytes(self, phase: str) -> int:
        return sum(i.bytes_per_device for i in self.items if i.phase == phase)

    @property
    def peak_bytes(self) -> int:
        """Static memory plus the largest of the phases (they do not overlap in time)."""
        return self.phase_bytes("static") + max(self.phase_bytes(p) for p in PHASES)

    def table(self, device_memory_gib: float | None = None) -> str:
        mesh = " x ".join(f"{k}={v}" for k, v in self.mesh.items())
        lines = [f"memory plan per device (mesh {mesh}, {math.prod(self.mesh.values())} devices)"]
        lines += [f"  {name}: {src}" for name, src in self.sources.items()]
        lines.append(f"  {'phase':<11}{'part':<34}{'GiB':>9}  detail")
        for item in self.items:
            mark = "" if item.exact else " ~"
            lines.append(f"  {item.phase:<11}{item.what:<34}{item.bytes_per_device / GIB:>9.3f}{mark:2} {item.detail}")
        lines.append(f"  {'':<11}{'static total':<34}{self.phase_bytes('static') / GIB:>9.3f}")
        for phase in (p for p in PHASES if any(i.phase == p for i in self.items)):
            lines.append(f"  {'':<11}{'peak while ' + phase:<34}"
                         f"{(self.phase_bytes('static') + self.phase_bytes(phase)) / GIB:>9.3f}")
        lines.append(f"  {'':<11}{'estimated peak':<34}{self.peak_bytes / GIB:>9.3f}")
        lines.append("  (~ = estimate of live activations; add 10-20% for XLA buffers and fragmentation)")
        if device_memory_gib:
            need = self.peak_bytes / GIB
            verdict = "fits" if need <= 0.85 * device_memory_gib else "does NOT fit (keep 15% headroom)"
            lines.append(f"  on {device_memory_gib:g} GiB devices: {verdict}")
        return "\n".join(lines)


def plan_memory(config, num_devices: int | None = None) -> MemoryPlan:
    """The per-device memory plan of a ``CalibrateConfig`` on ``num_devices`` devices
    (default: ``config.mesh.num_devices``, else the product of explicit mesh axes, else the local devices)."""
    if num_devices is None:
        sizes = (config.mesh.data, config.mesh.fsdp, config.mesh.tensor)
        num_devices = (config.mesh.num_devices if config.mesh.num_devices > 0
                       else math.prod(sizes) if -1 not in sizes else jax.device_count())
    mesh = AbstractMesh(mesh_axis_sizes(config.mesh, num_devices), MESH_AXES)
    shards = batch_shards(mesh)
    tensor = mesh.shape["tensor"]
    dtype = config.dtype
    itemsize = np.dtype(as_dtype(dtype)).itemsize

    teacher_hf, teacher_src = read_model_config(config.teacher)
    proxy_hf, proxy_src = read_model_config(config.proxy)
    teacher_cfg = QwenConfig.from_hf(teacher_hf, param_dtype=dtype, compute_dtype=dtype)
    proxy_cfg = QwenConfig.from_hf(proxy_hf, param_dtype=dtype, compute_dtype=dtype)
    lora = LoraConfig(rank=config.lora_rank, alpha=config.lora_alpha, dropout=config.lora_dropout,
                      targets=tuple(config.lora_targets))
    items: list[PlanItem] = []

    # -- static: weights, adapters, optimizer --
    layers = teacher_cfg.num_hidden_layers
    teacher = _one_layer_model(teacher_cfg, lora)
    base_dev, base_total = _state_bytes(nnx.state(teacher, nnx.Not(LoraParam)), mesh, layers)
    lora_state = nnx.state(teacher, LoraParam)  # one layer's adapters: the optimizer state mirrors them
    lora_dev, lora_total = _state_bytes(lora_state, mesh, layers)
    one_layer_lora_total = _state_bytes(lora_state, mesh)[1]
    items.append(PlanItem("static", "teacher weights", base_dev, True,
                          f"{base_total / GIB:.2f} GiB in all, {dtype}"))
    items.append(PlanItem("static", "teacher LoRA adapters", lora_dev, True,
                          f"rank {lora.rank} on {','.join(lora.targets)}"))
    from jaxdistill.training import make_optimizer

    optimizer = make_optimizer(config.learning_rate, config.max_steps, max_grad_norm=config.max_grad_norm or None)
    opt_abstract = jax.eval_shape(optimizer.init, lora_state)
    opt_leaves = jax.tree.leaves(opt_abstract)
    mirrors = sum(math.prod(x.shape) * x.dtype.itemsize for x in opt_leaves if x.ndim > 0) / one_layer_lora_total
    scalar_bytes = sum(x.dtype.itemsize for x in opt_leaves if x.ndim == 0)
    optimizer_dev = round(mirrors * lora_dev) + scalar_bytes  # the moments mirror the adapters and their sharding
    items.append(PlanItem("static", "AdamW state", optimizer_dev, True,
                          f"{mirrors:.0f}x LoRA (mu, nu) + counters"))
    proxy_dev, proxy_total = _state_bytes(nnx.state(_one_layer_model(proxy_cfg, None)), mesh,
                                          proxy_cfg.num_hidden_layers)
    items.append(PlanItem("static", "proxy weights", proxy_dev, True, f"{proxy_total / GIB:.2f} GiB in all"))
    learning_proxy = config.proxy_learning_rate > 0
    if learning_proxy:  # jaxdistill.rl.proxy: AdamW on every proxy parameter
        proxy_opt = jax.eval_shape(make_optimizer(config.proxy_learning_rate, config.max_steps).init,
                                   nnx.state(_one_layer_model(proxy_cfg, None), nnx.Param))
        leaves = jax.tree.leaves(proxy_opt)
        scalars = sum(x.dtype.itemsize for x in leaves if x.ndim == 0)
        items.append(PlanItem("static", "proxy AdamW state (learning proxy)", 2 * proxy_dev + scalars, True,
                              "2x proxy (mu, nu) + counters"))
    if config.calibration_mode == "influence":  # jaxdistill.rl.influence.estimate_direction
        items.append(PlanItem("static", "harm direction u", proxy_dev, True, "a unit proxy gradient, kept"))

    # -- generation: the teacher's KV cache --
    rollout_rows = config.prompts_per_step * config.num_generations
    eval_rows = min(config.eval_num_prompts, 64)  # greedy_accuracy generates 64 prompts at a time
    rows = max(rollout_rows, eval_rows)
    rows_padded = math.ceil(rows / shards) * shards  # generate() pads rows to divide
    # prompts are left-padded to a bucket of 16, 24, 32, 48, 64, ... tokens (at most max_prompt_length for
    # rollouts; evaluation prompts may use the bucket above it), then max_completion_length slots follow
    length = bucket_length(config.max_prompt_length) + config.max_completion_length
    kv = teacher_cfg.num_key_value_heads
    kv_shape = (rows_padded, kv, length, teacher_cfg.head_dim)
    one_layer = per_device_bytes(kv_shape, as_dtype(dtype), KVCache.VALUE_AXES, mesh)  # keys: same bytes
    cache = 2 * teacher_cfg.num_hidden_layers * one_layer
    cache += per_device_bytes((rows_padded, length), np.bool_, ("batch", "length"), mesh)  # valid slots
    items.append(PlanItem("generation", "teacher KV cache", cache, True,
                          f"{rows_padded} rows x {length} tokens x {teacher_cfg.num_hidden_layers} layers"))

    # -- training: gradients, activations, a logits chunk --
    micro_rows = math.ceil(rollout_rows / config.gradient_accumulation_steps / shards)
    grads = lora_dev * (2 if config.gradient_accumulation_steps > 1 else 1)
    items.append(PlanItem("training", "LoRA gradients", grads, True,
                          "+ running sum" if config.gradient_accumulation_steps > 1 else ""))
    act = _activation_bytes(teacher_cfg, lora, micro_rows, length, tensor, itemsize, config.remat)
    items.append(PlanItem("training", "teacher activations (backward)", act, False,
                          f"{micro_rows} rows/device x {length} tokens, remat={config.remat}"))
    chunk = min(128, config.max_completion_length)
    vocab_dev = _split(teacher_cfg.vocab_size, tensor)
    items.append(PlanItem("training", "logits chunk (fp32)", 3 * micro_rows * chunk * vocab_dev * 4, False,
                          f"{chunk} positions: logits, log-softmax, gradient"))

    # -- scoring: the proxy reads the rollouts --
    proxy_rows = math.ceil(rollout_rows / shards)
    proxy_vocab = _split(proxy_cfg.vocab_size, tensor)
    proxy_chunk = 2 * proxy_rows * chunk * proxy_vocab * 4 + proxy_rows * length * proxy_cfg.hidden_size * itemsize
    if learning_proxy:
        items.append(PlanItem("scoring", "proxy logits chunk (fp32)", 3 * proxy_rows * chunk * proxy_vocab * 4, False,
                              f"{chunk} positions: logits, log-softmax, gradient"))
        items.append(PlanItem("scoring", "proxy gradients", proxy_dev, True, "one SFT step per calibration step"))
        items.append(PlanItem("scoring", "proxy activations (backward)",
                              _activation_bytes(proxy_cfg, None, proxy_rows, length, tensor, itemsize, config.remat),
                              False, f"{proxy_rows} rows/device x {length} tokens, remat={config.remat}"))
    if config.calibration_mode == "influence":  # the harm score's jvp: after the plain forward or update
        items.append(PlanItem("scoring", "proxy forward with tangents (harm)", 2 * proxy_chunk, False,
                              "jax.jvp along u: primal + tangent hidden states and logits chunk"))
    elif not learning_proxy:
        items.append(PlanItem("scoring", "proxy forward (logits chunk)", proxy_chunk, False,
                              "hidden states + one fp32 logits chunk, no gradient"))
    if config.calibration_mode == "influence":  # jaxdistill.rl.influence.estimate_direction
        # validation batches are padded to divide over data x fsdp (rl.influence.validation_shape)
        _, rows = validation_shape(config.influence_validation_size, config.influence_batch_size, shards)
        rows //= shards
        items.append(PlanItem("direction", "validation gradients", 4 * proxy_dev, False,
                              "one batch's, the running sum, the two halves' directions"))
        items.append(PlanItem("direction", "proxy activations (backward)",
                              _activation_bytes(proxy_cfg, None, rows, length, tensor, itemsize, config.remat),
                              False, f"{rows} validation rows/device x {length} tokens, remat={config.remat} "
                              "(gold text longer than the rollouts needs more)"))
        items.append(PlanItem("direction", "proxy logits chunk (fp32)", 3 * rows * chunk * proxy_vocab * 4, False,
                              f"{chunk} positions: logits, log-softmax, gradient"))
    return MemoryPlan(dict(mesh.shape), {"teacher": teacher_src, "proxy": proxy_src}, items)


def _split(size: int, ways: int) -> int:
    """Per-device extent of a dimension split ``ways`` ways (unsplit when it does not divide)."""
    return size // ways if size % ways == 0 else size


def _activation_bytes(cfg: QwenConfig, lora: LoraConfig | None, rows: int, length: int, tensor: int,
                      itemsize: int, remat: str = "none") -> int:
    """Estimate of what the backward pass keeps per layer and token, times layers, rows and tokens.

    Kept per token and layer: the two norm outputs and two residuals (4 D), q/k/v before and after
    norm + RoPE (2 x (H + 2 KV) x hd), the attention output (H x hd), gate, up, silu(gate) and their
    product (4 I), the LoRA intermediates (rank per target), and the attention probabilities
    (H x length, in the compute dtype plus fp32 softmax statistics). Head and MLP widths are split by
    the tensor axis where they divide.

    With rematerialisation (``remat``) the layers keep less and one layer at a time is recomputed, so
    its whole set is alive once on top: ``dots`` keeps the weight matmuls' outputs (q, k, v, o, gate,
    up, down and the LoRA intermediates) and the layer input; ``full`` only the layer input."""
    heads = _split(cfg.num_attention_heads, tensor)
    kv_heads = _split(cfg.num_key_value_heads, tensor)
    hd, d, inter = cfg.head_dim, cfg.hidden_size, _split(cfg.intermediate_size, tensor)
    adapters = lora.rank * len(lora.targets) if lora else 0
    per_token = 4 * d + 2 * (heads + 2 * kv_heads) * hd + heads * hd + 4 * inter + adapters
    per_token_bytes = per_token * itemsize + heads * length * (itemsize + 4)
    kept = {"none": per_token_bytes,
            "dots": (d + (heads + 2 * kv_heads) * hd + d + 2 * inter + d + adapters) * itemsize,
            "full": d * itemsize}[remat]
    recomputed = 0 if remat == "none" else per_token_bytes  # one layer's set, during its backward
    return (cfg.num_hidden_layers * kept + recomputed) * rows * length + rows * length * d * itemsize


# ---- CLI ------------------------------------------------------------------------------------------

@dataclasses.dataclass
class PlanConfig(CalibrateConfig):
    """A calibration's config (``--config`` takes the same file) and the slice it is planned for."""

    devices: int | None = option(None, "devices in the target slice (default: mesh.num_devices, the product of "
                                       "the mesh axes when none is -1, else this machine's devices)", ge=1)
    device_memory_gib: float | None = option(None, "memory of one device (e.g. 16 for TPU v5e, 95 for v5p, 80 for "
                                                   "H100) to say if the plan fits", gt=0)

    def validate(self) -> None:
        check_ranges(self)
        if not self.teacher or not self.proxy:
            raise ConfigError("the plan needs teacher and proxy (in the YAML config or as teacher=... proxy=...)")


def run(config: PlanConfig, **flags: bool) -> None:
    plan = plan_memory(config, config.devices)
    if flags["json"]:
        print(json.dumps({"mesh": plan.mesh, "sources": plan.sources, "peak_bytes": plan.peak_bytes,
                           "items": [dataclasses.asdict(i) for i in plan.items]}, indent=2))
    else:
        print(plan.table(config.device_memory_gib))


def main(argv: list[str] | None = None) -> int:
    return run_cli(PlanConfig, run, argv, prog="jaxdistill-plan",
                   description="Per-device memory plan of a calibration run (reads config.json files only). Config "
                               "fields are those of jaxdistill-calibrate, plus devices and device_memory_gib.",
                   flags=[("--json", "print the plan as JSON")])


if __name__ == "__main__":
    sys.exit(main())
