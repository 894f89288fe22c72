"""Qwen2 / Qwen2.5 / Qwen3 dense decoders in Flax NNX, the whole model on one screen.

    x = embed(ids)
    for each layer:  x = x + attn(rms(x));  x = x + mlp(rms(x))
    logits = rms(x) @ lm_head            (lm_head = embed.T when tied)

attn: grouped-query attention with RoPE (rope_theta from the config); Qwen2 adds q/k/v biases,
Qwen3 adds a per-head RMSNorm on q and k. mlp: SwiGLU, ``down(silu(gate(x)) * up(x))``.

Positions come from the attention mask (``cumsum(mask) - 1``), so left-padded batches give each row
the positions it would have alone. Decoding keeps a KV cache (``KVCache``): ``decode`` writes a chunk
of tokens (the whole prompt for prefill, then one token at a time) at slot ``cache.index`` and
attends to every valid earlier slot.

Every parameter carries ``logical_axes`` metadata (vocab, embed, q_heads, kv_heads, mlp, ...) that
``jaxdistill.sharding`` maps onto mesh axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from jaxdistill.models.config import LoraConfig, QwenConfig, as_dtype
from jaxdistill.models.lora import Linear


@struct.dataclass
class KVCache:
    """Keys/values of every layer for incremental decoding.

    keys:         per layer [batch, num_kv_heads, head_dim, max_len]
    values:       per layer [batch, num_kv_heads, max_len, head_dim]
    Heads-major, keys stored transposed: both attention products of a decode step are then plain
    batched matmuls that read the cache in place (the [B, S, K, H] layout cost a transposed copy of
    the whole cache per layer and step; see ``grouped_attention``).
    valid:        [batch, max_len] bool, slots holding a real (non-pad) token
    positions:    [batch] int32, RoPE position of the next real token of each row
    index:        [] int32, the next slot to write (shared by all rows: left padding keeps it so)
    """

    keys: tuple[jax.Array, ...]
    values: tuple[jax.Array, ...]
    valid: jax.Array
    positions: jax.Array
    index: jax.Array

    KEY_AXES = ("batch", "kv_heads", "head_dim", "length")  # logical axes, for sharding
    VALUE_AXES = ("batch", "kv_heads", "length", "head_dim")

    @property
    def max_len(self) -> int:
        return self.valid.shape[1]


class RMSNorm(nnx.Module):
    """``w * x / sqrt(mean(x^2) + eps)``, statistics in fp32 (as transformers' Qwen RMSNorm)."""

    def __init__(self, dim: int, eps: float, param_dtype):
        self.weight = nnx.Param(jnp.ones((dim,), param_dtype), logical_axes=("norm",))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = x.dtype
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.weight[...].astype(dtype) * x32.astype(dtype)


def rope_cos_sin(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
    """positions [B, T] -> cos, sin [B, T, head_dim] (fp32), the half-split RoPE layout of HF."""
    inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb), jnp.sin(emb)


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """x [B, T, heads, head_dim] rotated by position: ``x * cos + rotate_half(x) * sin``."""
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    out = x.astype(jnp.float32) * cos[:, :, None, :] + rotated.astype(jnp.float32) * sin[:, :, None, :]
    return out.astype(x.dtype)


def grouped_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array) -> jax.Array:
    """Grouped-query attention, ``softmax(q k^T / sqrt(head_dim), masked) v``.

    q [B, T, N, H]; k [B, K, H, S] (transposed); v [B, K, S, H]; N = K * G (G query heads share one
    key/value head); mask [B, T, S] bool (query attends key slot; every row needs one True).
    Returns [B, T, N * H]. Scores and softmax are fp32 whatever the compute dtype. With keys
    transposed, both products are plain [G*T, H] @ [H, S] and [G*T, S] @ [S, H] matmuls batched over
    (B, K): the cache is read in place, which at decode time (T = 1) is most of the work.
    """
    b, t, n, h = q.shape
    kv = k.shape[1]
    q = q.reshape(b, t, kv, n // kv, h).transpose(0, 2, 3, 1, 4)  # [B, K, G, T, H]
    scores = jnp.einsum("bkgth,bkhs->bkgts", q, k, preferred_element_type=jnp.float32)
    scores = jnp.where(mask[:, None, None], scores * (h ** -0.5), jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    out = jnp.einsum("bkgts,bksh->bkgth", probs, v)  # [B, K, G, T, H]
    return out.transpose(0, 3, 1, 2, 4).reshape(b, t, n * h)


class Attention(nnx.Module):
    def __init__(self, cfg: QwenConfig, rngs: nnx.Rngs):
        pd, cd = as_dtype(cfg.param_dtype), as_dtype(cfg.compute_dtype)
        d, h, kv, hd = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        kw = dict(param_dtype=pd, compute_dtype=cd, rngs=rngs)
        self.q_proj = Linear(d, h * hd, use_bias=cfg.qkv_bias, axes=("embed", "q_heads"), **kw)
        self.k_proj = Linear(d, kv * hd, use_bias=cfg.qkv_bias, axes=("embed", "kv_heads"), **kw)
        self.v_proj = Linear(d, kv * hd, use_bias=cfg.qkv_bias, axes=("embed", "kv_heads"), **kw)
        self.o_proj = Linear(h * hd, d, use_bias=cfg.o_bias, axes=("q_heads", "embed"), **kw)
        self.q_norm = RMSNorm(hd, cfg.rms_norm_eps, pd) if cfg.qk_norm else None
        self.k_norm = RMSNorm(hd, cfg.rms_norm_eps, pd) if cfg.qk_norm else None
        self.heads, self.kv_heads, self.head_dim, self.theta = h, kv, hd, cfg.rope_theta

    def __call__(self, x, positions, mask, kv_slot, *, lora):
        """x [B, T, D]; positions [B, T]; mask [B, T, S] bool (query attends key slot);
        kv_slot: None (keys are this chunk) or (keys, values, index) of the layer's cache.
        Returns the output [B, T, D] and the (keys, values) now in the cache (or None)."""
        b, t, _ = x.shape
        q = self.q_proj(x, lora=lora).reshape(b, t, self.heads, self.head_dim)
        k = self.k_proj(x, lora=lora).reshape(b, t, self.kv_heads, self.head_dim)
        v = self.v_proj(x, lora=lora).reshape(b, t, self.kv_heads, self.head_dim)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        cos, sin = rope_cos_sin(positions, self.head_dim, self.theta)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        k, v = k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)  # [B, K, H, T], [B, K, T, H]
        new_kv = None
        if kv_slot is not None:
            cache_k, cache_v, index = kv_slot
            cache_k = jax.lax.dynamic_update_slice(cache_k, k.astype(cache_k.dtype), (0, 0, 0, index))
            cache_v = jax.lax.dynamic_update_slice(cache_v, v.astype(cache_v.dtype), (0, 0, index, 0))
            new_kv, k, v = (cache_k, cache_v), cache_k.astype(q.dtype), cache_v.astype(q.dtype)
        return self.o_proj(grouped_attention(q, k, v, mask), lora=lora), new_kv


class MLP(nnx.Module):
    def __init__(self, cfg: QwenConfig, rngs: nnx.Rngs):
        kw = dict(use_bias=False, param_dtype=as_dtype(cfg.param_dtype),
                  compute_dtype=as_dtype(cfg.compute_dtype), rngs=rngs)
        self.gate_proj = Linear(cfg.hidden_size, cfg.intermediate_size, axes=("embed", "mlp"), **kw)
        self.up_proj = Linear(cfg.hidden_size, cfg.intermediate_size, axes=("embed", "mlp"), **kw)
        self.down_proj = Linear(cfg.intermediate_size, cfg.hidden_size, axes=("mlp", "embed"), **kw)

    def __call__(self, x, *, lora):
        return self.down_proj(jax.nn.silu(self.gate_proj(x, lora=lora)) * self.up_proj(x, lora=lora),
                              lora=lora)


class Block(nnx.Module):
    def __init__(self, cfg: QwenConfig, rngs: nnx.Rngs):
        pd = as_dtype(cfg.param_dtype)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, pd)
        self.self_attn = Attention(cfg, rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, pd)
        self.mlp = MLP(cfg, rngs)

    def __call__(self, x, positions, mask, kv_slot, *, lora):
        h, new_kv = self.self_attn(self.input_layernorm(x), positions, mask, kv_slot, lora=lora)
        x = x + h
        return x + self.mlp(self.post_attention_layernorm(x), lora=lora), new_kv


_LORA_TARGETS = {"q": ("self_attn", "q_proj"), "k": ("self_attn", "k_proj"), "v": ("self_attn", "v_proj"),
                 "o": ("self_attn", "o_proj"), "gate": ("mlp", "gate_proj"), "up": ("mlp", "up_proj"),
                 "down": ("mlp", "down_proj")}


# Rematerialisation of the decoder layers in full forwards (training, scoring): what the backward pass
# keeps of each layer. "none": everything; "dots": the outputs of the weight matmuls (projections, MLP),
# recomputing norms, RoPE, attention and activations; "full": only the layer's input, recomputing the
# whole layer. The results are the same; memory goes down and compute up (a second forward at most).
REMAT_POLICIES = {"none": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
                  "full": jax.checkpoint_policies.nothing_saveable}


def check_remat(remat: str) -> str:
    if remat not in REMAT_POLICIES:
        raise ValueError(f"remat={remat!r}: use one of {', '.join(REMAT_POLICIES)}")
    return remat


def _rematerialised(block, x, positions, mask, *, lora: bool, policy):
    """``block``'s full forward under ``jax.checkpoint(policy)`` (a pure function of its state)."""
    graphdef, state = nnx.split(block)

    def layer(state, x, positions, mask):
        return nnx.merge(graphdef, state)(x, positions, mask, None, lora=lora)[0]

    return jax.checkpoint(layer, policy=policy)(state, x, positions, mask)


class Qwen(nnx.Module):
    """A Qwen2/Qwen2.5/Qwen3 causal LM. ``model(ids, mask) -> logits [B, T, vocab_size]``.

    ``model.remat`` (``REMAT_POLICIES``, default "none") applies to full forwards, not to decoding."""

    def __init__(self, config: QwenConfig, *, rngs: nnx.Rngs, lora: LoraConfig | None = None):
        self.config = config
        pd = as_dtype(config.param_dtype)
        self.compute_dtype = as_dtype(config.compute_dtype)
        embed = nnx.initializers.normal(0.02)(rngs.params(), (config.vocab_size, config.hidden_size), pd)
        self.embed_tokens = nnx.Param(embed, logical_axes=("vocab", "embed"))
        self.layers = nnx.List([Block(config, rngs) for _ in range(config.num_hidden_layers)])
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, pd)
        # The untied head is stored as HF stores it, [vocab, hidden] like the embedding: the product
        # hidden @ head.T reads each vocabulary row contiguously (20% faster than [hidden, vocab] on CPU).
        self.lm_head = (None if config.tie_word_embeddings else
                        nnx.Param(nnx.initializers.normal(0.02)(rngs.params(), (config.vocab_size, config.hidden_size), pd),
                                  logical_axes=("vocab", "embed")))
        self.lora_config = None
        self.remat = "none"
        if lora is not None:
            self.add_lora(lora, rngs)

    # ---- LoRA -------------------------------------------------------------------------------
    def add_lora(self, lora: LoraConfig, rngs: nnx.Rngs) -> None:
        """Attach adapters to the target projections of every layer."""
        self.lora_config = lora
        for block in self.layers:
            for target in lora.targets:
                parent, name = _LORA_TARGETS[target]
                getattr(getattr(block, parent), name).add_lora(lora.rank, lora.alpha, lora.dropout, rngs)

    # ---- forward ----------------------------------------------------------------------------
    def logits(self, hidden: jax.Array) -> jax.Array:
        """Final hidden states [B, T, D] -> logits [B, T, vocab_size] (fp32)."""
        head = self.embed_tokens if self.lm_head is None else self.lm_head  # [vocab, D]
        return jnp.einsum("...d,vd->...v", hidden, head[...].astype(hidden.dtype)).astype(jnp.float32)

    def _run(self, input_ids, positions, mask, cache, *, lora):
        x = jnp.take(self.embed_tokens[...], input_ids, axis=0).astype(self.compute_dtype)
        new_keys, new_values = [], []
        for i, block in enumerate(self.layers):
            if cache is None and self.remat != "none":
                x = _rematerialised(block, x, positions, mask, lora=lora, policy=REMAT_POLICIES[self.remat])
                continue
            slot = None if cache is None else (cache.keys[i], cache.values[i], cache.index)
            x, kv = block(x, positions, mask, slot, lora=lora)
            if kv is not None:
                new_keys.append(kv[0])
                new_values.append(kv[1])
        return self.norm(x), (new_keys, new_values)

    def hidden_states(self, input_ids: jax.Array, attention_mask: jax.Array | None = None, *,
                      lora: bool = True) -> jax.Array:
        """input_ids [B, T] int, attention_mask [B, T] (1 = token, 0 = pad) -> final-norm hidden [B, T, D]."""
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        valid = attention_mask.astype(bool)
        positions = jnp.maximum(jnp.cumsum(valid, axis=1) - 1, 0)
        t = input_ids.shape[1]
        causal = jnp.tril(jnp.ones((t, t), bool))
        mask = (causal[None] & valid[:, None, :]) | jnp.eye(t, dtype=bool)[None]
        hidden, _ = self._run(input_ids, positions, mask, None, lora=lora)
        return hidden

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None, *,
                 lora: bool = True) -> jax.Array:
        """input_ids [B, T], attention_mask [B, T] -> logits [B, T, vocab_size] (fp32).

        ``lora=False`` runs the frozen base weights only (the reference policy)."""
        return self.logits(self.hidden_states(input_ids, attention_mask, lora=lora))

    # ---- incremental decoding ---------------------------------------------------------------
    def init_cache(self, batch_size: int, max_len: int, dtype=None) -> KVCache:
        """An empty cache for ``batch_size`` rows of up to ``max_len`` tokens (prompt + completion)."""
        c = self.config
        dtype = dtype or self.compute_dtype
        k_shape = (batch_size, c.num_key_value_heads, c.head_dim, max_len)
        v_shape = (batch_size, c.num_key_value_heads, max_len, c.head_dim)
        layers = range(c.num_hidden_layers)
        return KVCache(keys=tuple(jnp.zeros(k_shape, dtype) for _ in layers),
                       values=tuple(jnp.zeros(v_shape, dtype) for _ in layers),
                       valid=jnp.zeros((batch_size, max_len), bool),
                       positions=jnp.zeros((batch_size,), jnp.int32), index=jnp.zeros((), jnp.int32))

    def decode(self, input_ids: jax.Array, attention_mask: jax.Array | None, cache: KVCache, *,
               lora: bool = True) -> tuple[jax.Array, KVCache]:
        """Run a chunk of T new tokens against the cache.

        input_ids [B, T], attention_mask [B, T] (0 marks left padding inside a prefill chunk).
        Returns logits [B, T, vocab_size] and the cache with the chunk written at slots
        ``[index, index + T)``. Prefill is one call with the padded prompts; decoding is T = 1.
        """
        if attention_mask is None:
            attention_mask = jnp.ones_like(input_ids)
        chunk_valid = attention_mask.astype(bool)
        t = input_ids.shape[1]
        positions = cache.positions[:, None] + jnp.maximum(jnp.cumsum(chunk_valid, axis=1) - 1, 0)
        valid = jax.lax.dynamic_update_slice(cache.valid, chunk_valid, (0, cache.index))
        query_slot = cache.index + jnp.arange(t)
        key_slot = jnp.arange(cache.max_len)
        causal = key_slot[None, :] <= query_slot[:, None]
        diagonal = key_slot[None, :] == query_slot[:, None]
        mask = (causal[None] & valid[:, None, :]) | diagonal[None]
        hidden, (keys, values) = self._run(input_ids, positions, mask, cache, lora=lora)
        new_cache = KVCache(keys=tuple(keys), values=tuple(values), valid=valid,
                            positions=cache.positions + chunk_valid.sum(axis=1).astype(jnp.int32),
                            index=cache.index + t)
        return self.logits(hidden), new_cache
