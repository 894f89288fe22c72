"""Scoring completions under a model: the training-side twin of the sampler's log-probs.

``completion_logprobs`` runs one forward pass over ``prompt + completion`` and returns, for every
completion token, its log-prob under the same distribution the sampler reports (``reported_logits``:
for sampling, the transformed distribution it draws from (vocab limit, pad ban, temperature, top-k,
top-p); for greedy settings, the model's full softmax). With the same settings it reproduces the
sampler's ``logprobs`` exactly, so importance ratios start at 1.

Logits are formed chunk by chunk along the completion (``chunk_size`` positions at a time, each
chunk rematerialised in the backward pass), so a [batch, length, vocab] tensor never exists at once.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdistill.generation.sampler import SamplingParams, reported_logits
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


def map_completion_chunks(fn, chunk_size: int, *arrays: jax.Array):
    """``fn`` over chunks of the completion axis, each chunk rematerialised in the backward pass.

    arrays: [N, C, ...] each; ``fn(*chunks)`` with chunks [N, c, ...] returns [N, c] (or a tuple of
    them). Returns [N, C] (or the tuple). Only one chunk's logits are alive at a time.
    """
    n, c = arrays[0].shape[:2]
    chunk = max(1, min(chunk_size, c))
    pad = (-c) % chunk

    def split(x):  # [N, C, ...] -> [C / chunk, N, chunk, ...]
        if pad:
            x = jnp.pad(x, [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        return jnp.moveaxis(x.reshape(n, (c + pad) // chunk, chunk, *x.shape[2:]), 1, 0)

    out = jax.lax.map(lambda args: jax.checkpoint(fn)(*args), tuple(split(x) for x in arrays))
    return jax.tree.map(lambda y: jnp.moveaxis(y, 0, 1).reshape(n, -1)[:, :c], out)


def logprobs_from_hidden(model: Qwen, hidden: jax.Array, tokens: jax.Array, params: SamplingParams,
                         chunk_size: int = 128, with_entropy: bool = False):
    """hidden [N, C, D], tokens [N, C] -> log-probs [N, C] (and entropy [N, C]) under ``params``."""

    def one_chunk(h, t):
        n, c = t.shape
        logits = model.logits(h)  # [N, chunk, V]
        flat = reported_logits(logits.reshape(n * c, -1), params)  # as the sampler reports them
        logp = jax.nn.log_softmax(flat, axis=-1)
        chosen = jnp.take_along_axis(logp, t.reshape(-1, 1), axis=-1)[:, 0].reshape(n, c)
        entropy = -jnp.sum(jnp.where(logp > -jnp.inf, jnp.exp(logp) * logp, 0.0), axis=-1).reshape(n, c)
        return chosen, entropy

    chosen, entropy = map_completion_chunks(one_chunk, chunk_size, hidden, tokens)
    return (chosen, entropy) if with_entropy else chosen


def completion_logprobs(model: Qwen, prompt_ids, prompt_mask, tokens, mask, params: SamplingParams, *,
                        lora: bool = True, chunk_size: int = 128) -> jax.Array:
    """Log-prob [N, C] of each completion token (0 where ``mask`` is 0) under ``params``."""
    hidden = completion_hidden(model, prompt_ids, prompt_mask, tokens, mask, lora=lora)
    logp = logprobs_from_hidden(model, hidden, tokens, params, chunk_size)
    return jnp.where(mask.astype(bool), logp, 0.0)
