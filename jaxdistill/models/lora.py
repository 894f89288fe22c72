"""Dense projections with optional low-rank adapters (LoRA).

``y = x @ W + b + (alpha / r) * dropout(x) @ A @ B`` with ``W: [in, out]`` frozen and ``A: [in, r]``,
``B: [r, out]`` trainable. ``B`` starts at zero, so a fresh adapter leaves the model unchanged.
Adapter weights are ``LoraParam`` variables, a subclass of ``nnx.Param``: select them with
``nnx.state(model, LoraParam)`` (the trainable set) and everything else with
``nnx.Not(LoraParam)`` (the frozen base). Calling with ``lora=False`` skips the adapter, which is
how the reference policy is evaluated without a second copy of the weights.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class LoraParam(nnx.Param):
    """A trainable adapter weight (the only parameters calibration updates)."""


class Linear(nnx.Module):
    """``x @ kernel (+ bias)`` with an optional LoRA adapter.

    Shapes: kernel [in, out] (the transpose of torch's ``nn.Linear.weight``), bias [out],
    lora_a [in, rank], lora_b [rank, out]. ``axes`` names the logical axes of the kernel for sharding.
    """

    def __init__(self, in_features: int, out_features: int, *, use_bias: bool, axes: tuple[str, str],
                 param_dtype, compute_dtype, rngs: nnx.Rngs):
        init = nnx.initializers.normal(0.02)
        self.kernel = nnx.Param(init(rngs.params(), (in_features, out_features), param_dtype),
                                logical_axes=axes)
        self.bias = (nnx.Param(jnp.zeros((out_features,), param_dtype), logical_axes=axes[1:])
                     if use_bias else None)
        self.axes = axes
        self.compute_dtype = compute_dtype
        self.lora_a = nnx.data(None)  # set by add_lora
        self.lora_b = nnx.data(None)
        self.lora_scale = 0.0
        self.lora_dropout = nnx.data(None)

    def add_lora(self, rank: int, alpha: float, dropout: float, rngs: nnx.Rngs) -> None:
        """Attach a fresh adapter (A ~ N(0, 1/in), B = 0).

        Adapters are stored in fp32 whatever the base dtype: with bf16 weights and a small learning rate,
        bf16 adapters (and their AdamW moments) would lose most updates to rounding."""
        d_in, d_out = self.kernel[...].shape
        a = jax.random.normal(rngs.params(), (d_in, rank), jnp.float32) / jnp.sqrt(d_in)
        self.lora_a = LoraParam(a, logical_axes=(self.axes[0], "lora_rank"))
        self.lora_b = LoraParam(jnp.zeros((rank, d_out), jnp.float32), logical_axes=("lora_rank", self.axes[1]))
        self.lora_scale = alpha / rank
        self.lora_dropout = nnx.Dropout(dropout, rngs=rngs) if dropout > 0 else None

    def __call__(self, x: jax.Array, *, lora: bool = True) -> jax.Array:
        x = x.astype(self.compute_dtype)
        y = x @ self.kernel[...].astype(self.compute_dtype)
        if self.bias is not None:
            y = y + self.bias[...].astype(self.compute_dtype)
        if lora and self.lora_a is not None:
            h = self.lora_dropout(x) if self.lora_dropout is not None else x
            h = h @ self.lora_a[...].astype(self.compute_dtype)
            y = y + self.lora_scale * (h @ self.lora_b[...].astype(self.compute_dtype))
        return y

    def merged_kernel(self) -> jax.Array:
        """``W + scale * A @ B`` in fp32, cast to the kernel dtype (for export)."""
        w = self.kernel[...]
        if self.lora_a is None:
            return w
        delta = self.lora_a[...].astype(jnp.float32) @ self.lora_b[...].astype(jnp.float32)
        return (w.astype(jnp.float32) + self.lora_scale * delta).astype(w.dtype)
