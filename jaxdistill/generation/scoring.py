"""Scoring completions under a model: the training-side twin of the sampler's log-probs.

``completion_logprobs`` runs one forward pass over ``prompt + completion`` and returns, for every
completion token, its log-prob under the same transformed distribution the sampler draws from
(``filter_logits``: vocab limit, pad ban, temperature, top-k, top-p). With the same settings it
reproduces the sampler's ``logprobs`` exactly, so importance ratios start at 1.

Logits are formed chunk by chunk along the completion (``chunk_size`` positions at a time, each
chunk rematerialised in the backward pass), so a [batch, length, vocab] tensor never exists at once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdistill.generation.sampler import SamplingParams, filter_logits
from jaxdistill.models.qwen import Qwen


def completion_hidden(model: Qwen, prompt_ids, prompt_mask, tokens, mask, *, lora: bool = True) -> jax.Array:
    """Final hidden states that predict each completion token: [N, C, D].

    prompt_ids/prompt_mask [N, P] (left-padded), tokens/mask [N, C] (right-padded completions).
    Position P - 1 + t predicts completion token t.
    """
    ids = jnp.concatenate([prompt_ids, tokens], axis=1)
    full_mask = jnp.concatenate([prompt_mask, mask], axis=1)
    hidden = model.hidden_states(ids, full_mask, lora=lora)
    p, c = prompt_ids.shape[1], tokens.shape[1]
    return hidden[:, p - 1:p - 1 + c]


def _chunks(x: jax.Array, chunk: int) -> jax.Array:
    """[N, C, ...] -> [C // chunk, N, chunk, ...] (C padded up to a multiple of chunk)."""
    n, c = x.shape[:2]
    pad = (-c) % chunk
    if pad:
        x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
    x = x.reshape(n, (c + pad) // chunk, chunk, *x.shape[2:])
    return jnp.moveaxis(x, 1, 0)


def logprobs_from_hidden(model: Qwen, hidden: jax.Array, tokens: jax.Array, params: SamplingParams,
                         chunk_size: int = 128, with_entropy: bool = False):
    """hidden [N, C, D], tokens [N, C] -> log-probs [N, C] (and entropy [N, C]) under ``params``."""
    n, c, _ = hidden.shape
    chunk = min(chunk_size, c)

    @jax.checkpoint
    def one_chunk(h, t):
        logits = model.logits(h)  # [N, chunk, V]
        v = logits.shape[-1]
        flat = filter_logits(logits.reshape(-1, v), params)  # temperature 0: untempered, as the sampler
        logp = jax.nn.log_softmax(flat, axis=-1)
        chosen = jnp.take_along_axis(logp, t.reshape(-1, 1), axis=-1)[:, 0].reshape(n, -1)
        entropy = -jnp.sum(jnp.where(logp > -jnp.inf, jnp.exp(logp) * logp, 0.0), axis=-1).reshape(n, -1)
        return chosen, entropy

    chosen, entropy = jax.lax.map(lambda args: one_chunk(*args), (_chunks(hidden, chunk), _chunks(tokens, chunk)))
    chosen = jnp.moveaxis(chosen, 0, 1).reshape(n, -1)[:, :c]
    entropy = jnp.moveaxis(entropy, 0, 1).reshape(n, -1)[:, :c]
    return (chosen, entropy) if with_entropy else chosen


def completion_logprobs(model: Qwen, prompt_ids, prompt_mask, tokens, mask, params: SamplingParams, *,
                        lora: bool = True, chunk_size: int = 128) -> jax.Array:
    """Log-prob [N, C] of each completion token (0 where ``mask`` is 0) under ``params``."""
    hidden = completion_hidden(model, prompt_ids, prompt_mask, tokens, mask, lora=lora)
    logp = logprobs_from_hidden(model, hidden, tokens, params, chunk_size)
    return jnp.where(mask.astype(bool), logp, 0.0)
