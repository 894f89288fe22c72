"""Model configuration: the fields of an HF ``config.json`` that a Qwen2/Qwen2.5/Qwen3 decoder needs.

Qwen2 and Qwen2.5 share ``model_type: qwen2`` (q/k/v biases, no q/k norm); Qwen3 is ``model_type:
qwen3`` (per-head RMSNorm on q and k, ``head_dim`` independent of ``hidden_size / num_heads``,
optional biases through ``attention_bias``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3")

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def as_dtype(name: str | Any) -> Any:
    """'float32' | 'bfloat16' | 'float16' (or a jnp dtype) -> jnp dtype."""
    if not isinstance(name, str):
        return jnp.dtype(name).type
    if name not in _DTYPES:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(_DTYPES)}")
    return _DTYPES[name]


@dataclasses.dataclass(frozen=True)
class QwenConfig:
    """Architecture of a Qwen2/Qwen2.5/Qwen3 dense decoder (names as in HF ``config.json``)."""

    model_type: str  # "qwen2" (Qwen2, Qwen2.5) or "qwen3"
    vocab_size: int  # rows of the embedding matrix (may exceed the tokenizer's real size)
    hidden_size: int
    intermediate_size: int  # SwiGLU inner width
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int  # grouped-query attention: heads share K/V in groups
    head_dim: int  # Qwen3 sets it explicitly; Qwen2 derives hidden_size // num_attention_heads
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    tie_word_embeddings: bool = False  # LM head reuses the embedding matrix
    qkv_bias: bool = False  # biases on q/k/v projections (always on for Qwen2)
    o_bias: bool = False  # bias on the output projection (Qwen3 attention_bias=True only)
    qk_norm: bool = False  # per-head RMSNorm on q and k (Qwen3)
    max_position_embeddings: int = 32768
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    param_dtype: str = "float32"  # storage dtype of the weights
    compute_dtype: str = "float32"  # dtype of activations and matmuls (norms and softmax stay fp32)

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"model_type {self.model_type!r} is not supported; jaxdistill ports {SUPPORTED_MODEL_TYPES}"
            )
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        as_dtype(self.param_dtype), as_dtype(self.compute_dtype)

    @property
    def eos_ids(self) -> tuple[int, ...]:
        """All end-of-sequence ids, as a tuple (HF allows an int or a list)."""
        if self.eos_token_id is None:
            return ()
        if isinstance(self.eos_token_id, int):
            return (self.eos_token_id,)
        return tuple(self.eos_token_id)

    @classmethod
    def from_hf(cls, hf: dict[str, Any], **overrides: Any) -> "QwenConfig":
        """Build from the dict of an HF ``config.json`` (transformers 4.x and 5.x layouts)."""
        model_type = hf.get("model_type")
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ValueError(
                f"config.json has model_type {model_type!r}; jaxdistill supports {SUPPORTED_MODEL_TYPES} "
                "(Qwen2, Qwen2.5, Qwen3 dense models)"
            )
        missing = [k for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                               "num_attention_heads") if k not in hf]
        if missing:
            raise ValueError(f"config.json lacks required field(s) {missing}")
        if hf.get("use_sliding_window"):
            raise ValueError("config.json sets use_sliding_window=true; sliding-window attention is not ported")
        rope = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type != "default":
            raise ValueError(f"rope type {rope_type!r} is not ported; only default RoPE is supported")
        rope_theta = rope.get("rope_theta", hf.get("rope_theta", 1_000_000.0))
        heads = hf["num_attention_heads"]
        qwen3 = model_type == "qwen3"
        attention_bias = bool(hf.get("attention_bias", False))
        dtype = hf.get("dtype") or hf.get("torch_dtype") or "float32"
        fields = dict(
            model_type=model_type,
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_hidden_layers=hf["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=hf.get("num_key_value_heads") or heads,
            head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            rope_theta=float(rope_theta),
            tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            qkv_bias=attention_bias if qwen3 else True,
            o_bias=attention_bias if qwen3 else False,
            qk_norm=qwen3,
            max_position_embeddings=hf.get("max_position_embeddings", 32768),
            bos_token_id=hf.get("bos_token_id"),
            eos_token_id=hf.get("eos_token_id"),
            pad_token_id=hf.get("pad_token_id"),
            param_dtype=dtype if dtype in _DTYPES else "float32",
            compute_dtype=dtype if dtype in _DTYPES else "float32",
        )
        fields.update(overrides)
        return cls(**fields)

    def to_hf(self) -> dict[str, Any]:
        """The ``config.json`` dict that ``transformers.AutoConfig`` reads back."""
        qwen3 = self.model_type == "qwen3"
        if not qwen3 and (not self.qkv_bias or self.o_bias or self.qk_norm):
            raise ValueError("a qwen2 config must have qkv_bias=True, o_bias=False, qk_norm=False")
        if qwen3 and (self.qkv_bias != self.o_bias or not self.qk_norm):
            raise ValueError("a qwen3 config must have qkv_bias == o_bias and qk_norm=True")
        out = {
            "architectures": ["Qwen3ForCausalLM" if qwen3 else "Qwen2ForCausalLM"],
            "model_type": self.model_type,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_parameters": {"rope_type": "default", "rope_theta": self.rope_theta},
            "tie_word_embeddings": self.tie_word_embeddings,
            "max_position_embeddings": self.max_position_embeddings,
            "use_sliding_window": False,
            "attention_dropout": 0.0,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
            "dtype": self.param_dtype,
        }
        if qwen3:
            out["attention_bias"] = self.qkv_bias
        return out


@dataclasses.dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters ``W + (alpha / rank) * A @ B`` on chosen projections."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0  # dropout on the adapter input (training only; 0 keeps rollouts exact)
    targets: tuple[str, ...] = ("q", "k", "v", "o", "gate", "up", "down")

    def __post_init__(self):
        valid = {"q", "k", "v", "o", "gate", "up", "down"}
        unknown = set(self.targets) - valid
        if unknown:
            raise ValueError(f"unknown LoRA target(s) {sorted(unknown)}; choose from {sorted(valid)}")
        if self.rank <= 0:
            raise ValueError(f"LoRA rank must be positive, got {self.rank}")

    @property
    def scale(self) -> float:
        return self.alpha / self.rank
