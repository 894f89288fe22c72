"""Model FLOPs of a Qwen forward and training step, and peak FLOP/s of common accelerators, for MFU.

Counts are the model's own arithmetic (a multiply-add is 2 FLOPs), as in the PaLM paper's MFU:

    forward per token = 2 * (matmul weights of the layers + LM head) + 4 * layers * heads * head_dim * context

where ``context`` is the number of positions the token attends to (the attention scores Q.K and the
weighted sum of V, causal: about half the sequence on average). Training costs a forward plus a
backward: 3x forward when every weight is trained (gradients of activations and of weights), 2x when
the base weights are frozen (LoRA: gradients of activations only; the adapters' own FLOPs are small
and not counted). Recomputed forwards (rematerialisation) are not model FLOPs and are not counted.

MFU = model FLOPs of a step / (its seconds x the device's peak dense bf16 FLOP/s x devices).
"""

from __future__ import annotations

import jax

from jaxdistill.models.config import QwenConfig

# Peak dense bf16 FLOP/s per chip, from the vendors' data sheets (NVIDIA: SXM parts, without sparsity).
PEAK_FLOPS = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "TPU v4": 275e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6e": 918e12,
}

# jax's device_kind -> the table's name (first match wins, so the longer names come first)
_KINDS = (("TPU v5 lite", "TPU v5e"), ("TPU v5e", "TPU v5e"), ("TPU v5p", "TPU v5p"), ("TPU v5", "TPU v5p"),
          ("TPU v6 lite", "TPU v6e"), ("TPU v6e", "TPU v6e"), ("TPU v4", "TPU v4"),
          ("H200", "H200"), ("H100", "H100"), ("A100", "A100"))


def accelerator_name(device_kind: str) -> str | None:
    """The PEAK_FLOPS entry of a ``jax.Device.device_kind`` (None: not in the table, e.g. a CPU)."""
    for pattern, name in _KINDS:
        if pattern.lower() in device_kind.lower():
            return name
    return None


def peak_flops(devices=None) -> float | None:
    """Peak dense bf16 FLOP/s of ``devices`` (default: all of jax's devices), or None when unknown."""
    devices = jax.devices() if devices is None else devices
    name = accelerator_name(devices[0].device_kind) if devices else None
    return PEAK_FLOPS[name] * len(devices) if name else None


def layer_weights(config: QwenConfig) -> int:
    """Matmul weights of one decoder layer (attention projections + SwiGLU MLP)."""
    d, h, kv, hd, ff = (config.hidden_size, config.num_attention_heads, config.num_key_value_heads,
                        config.head_dim, config.intermediate_size)
    return d * h * hd + 2 * d * kv * hd + h * hd * d + 3 * d * ff


def forward_flops_per_token(config: QwenConfig, context: float) -> float:
    """FLOPs of one token's forward pass attending to ``context`` positions."""
    weights = config.num_hidden_layers * layer_weights(config) + config.hidden_size * config.vocab_size
    attention = 4 * config.num_hidden_layers * config.num_attention_heads * config.head_dim * context
    return 2.0 * weights + attention


def sequence_forward_flops(config: QwenConfig, length: int) -> float:
    """FLOPs of a causal forward over ``length`` tokens (token t attends to t + 1 positions)."""
    return length * forward_flops_per_token(config, (length + 1) / 2)


def train_flops(config: QwenConfig, rows: int, length: int, *, frozen_base: bool) -> float:
    """Model FLOPs of one forward + backward over ``rows`` sequences of ``length`` tokens."""
    return (2.0 if frozen_base else 3.0) * rows * sequence_forward_flops(config, length)


def mfu(flops: float, seconds: float, peak: float | None) -> float | None:
    """Model FLOPs utilisation in [0, 1], or None without a peak (CPU) or a time."""
    if not peak or seconds <= 0:
        return None
    return flops / seconds / peak
