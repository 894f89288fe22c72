"""Token maths shared by RL, distillation, evaluation and diagnostics: log-probs of chosen tokens,
entropy, KL, masked means and binarised (two-outcome) likelihoods.

Shapes: ``T`` positions, ``V`` vocabulary. Every function is pure, works in float32 (lower precision
is upcast) and is safe on padding: masked positions may hold garbage (even inf/NaN) without
changing values or gradients.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jnp.ndarray

# The lowest log-probability kept: a -inf (a masked logit) clipped to it cannot turn a difference of
# two log-probs into inf - inf = NaN.
LOGPROB_FLOOR = -1e9
# Binarised likelihoods ``log p -> [log p, log(1 - p)]`` clip ``log p`` into [LOGPROB_FLOOR,
# BINARY_LOGPROB_CEILING]: the ceiling keeps ``p <= 1 - 1e-6`` so ``log(1 - p) >= log(1e-6) ~ -13.8``
# stays finite for a certain event.
BINARY_LOGPROB_CEILING = -1e-6


# ----------------------------------------------------------------------------- log-probs, entropy


def token_logprobs(logits: Array, tokens: Array, temperature: float = 1.0) -> Array:
    """Log-probability of the chosen tokens under ``softmax(logits / temperature)``.

    ``log p(y_t) = z_t[y_t] - logsumexp_v z_t[v]`` with ``z = logits / temperature`` (the same value as
    ``log_softmax(z)[y_t]`` without materialising the ``[B, T, V]`` log-softmax). Old log-probs must be
    scored at the sampling temperature for the importance ratio to be right.

    Args:
      logits: ``[..., T, V]``.
      tokens: ``[..., T]`` int ids in ``[0, V)``.
      temperature: > 0.

    Returns:
      ``[..., T]`` float32.
    """
    scaled = jnp.asarray(logits, jnp.float32) / temperature
    chosen = jnp.take_along_axis(scaled, jnp.asarray(tokens)[..., None], axis=-1)[..., 0]
    return chosen - jax.nn.logsumexp(scaled, axis=-1)


def token_entropy(logits: Array, temperature: float = 1.0) -> Array:
    """Entropy of each next-token distribution.

    ``H_t = -sum_v p_t(v) log p_t(v)``, ``p_t = softmax(logits_t / temperature)``; tokens with
    ``p = 0`` (logit ``-inf``) contribute 0, in value and gradient. Log-probabilities are valid
    logits (``log_softmax`` of them is the identity), so this is also ``H`` of a ``[..., V]``
    log-probability array.

    Args:
      logits: ``[..., T, V]``.
      temperature: > 0.

    Returns:
      ``[..., T]`` float32, in ``[0, log V]``.
    """
    log_p = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32) / temperature, axis=-1)
    p = jnp.exp(log_p)
    safe_log_p = jnp.where(p > 0, log_p, 0.0)
    return -jnp.sum(p * safe_log_p, axis=-1)


def kl_divergence(log_p: Array, log_q: Array) -> Array:
    """``KL(p || q) = sum_v p(v) (log p(v) - log q(v))`` over the last axis.

    Terms with ``p(v) = 0`` are 0 (in value and gradient), even where ``q(v) = 0`` too.

    Args:
      log_p: ``[..., V]`` log-probabilities.
      log_q: ``[..., V]`` log-probabilities.

    Returns:
      ``[...]``, >= 0.
    """
    p = jnp.exp(log_p)
    support = p > 0
    safe_log_p = jnp.where(support, log_p, 0.0)
    safe_log_q = jnp.where(support, log_q, 0.0)
    return jnp.sum(p * (safe_log_p - safe_log_q), axis=-1)


# ----------------------------------------------------------------------------- aggregation


def masked_mean(values: Array, mask: Array, axis=None) -> Array:
    """``sum(values * mask) / max(sum(mask), 1)`` over ``axis``; masked values may be inf/NaN."""
    mask = jnp.asarray(mask, dtype=bool)
    total = jnp.sum(jnp.where(mask, values, 0.0), axis=axis)
    return total / jnp.maximum(jnp.sum(mask, axis=axis), 1)


# ----------------------------------------------------------------------------- binarised likelihoods
# One event (a chosen token, an aligned span) with probability p is compared across two models as a
# Bernoulli: "the event happens" (p) vs "anything else" (1 - p).


def log1mexp(x: Array) -> Array:
    """``log(1 - exp(x))`` for ``x <= 0``, stable at both ends (Maechler 2012).

    Near 0 ``log(-expm1(x))`` (``1 - e^x`` cancels), below ``-log 2`` ``log1p(-exp(x))``.
    """
    return jnp.where(x > -0.6931472, jnp.log(-jnp.expm1(x)), jnp.log1p(-jnp.exp(x)))


def clip_binary_logprob(logp: Array) -> Array:
    """``log p`` clipped into ``[LOGPROB_FLOOR, BINARY_LOGPROB_CEILING]`` (see their comments), float32.

    In-range values pass unchanged (value and gradient); outside, the gradient is 0.
    """
    return jnp.clip(jnp.asarray(logp, jnp.float32), LOGPROB_FLOOR, BINARY_LOGPROB_CEILING)


def bernoulli_log_probs(logp: Array) -> Array:
    """Binarises a likelihood: ``log p -> [log p, log(1 - p)]``, ``log p`` clipped first
    (:func:`clip_binary_logprob`).

    Args:
      logp: ``[...]`` log-probabilities (<= 0).

    Returns:
      ``[..., 2]`` log-probabilities of a 2-outcome distribution.
    """
    logp = clip_binary_logprob(logp)
    return jnp.stack([logp, log1mexp(logp)], axis=-1)


def binary_kl(log_p: Array, log_q: Array) -> Array:
    """``KL(Bern(p) || Bern(q)) = p log(p / q) + (1 - p) log((1 - p) / (1 - q))`` from ``log p`` and
    ``log q`` (elementwise, nats, >= 0), both clipped first (:func:`clip_binary_logprob`).

    Written in closed form, it is exactly 0 with zero gradient where ``p = q``. Equal (to rounding)
    to ``kl_divergence(bernoulli_log_probs(log_p), bernoulli_log_probs(log_q))``.
    """
    lp, lq = clip_binary_logprob(log_p), clip_binary_logprob(log_q)
    p = jnp.exp(lp)
    kl = p * (lp - lq) + (1.0 - p) * (log1mexp(lp) - log1mexp(lq))
    return jnp.maximum(kl, 0.0)  # rounding can leave -1e-9 where the two sides are equal


# ----------------------------------------------------------------------------- token ids


def padding_id(tokenizer) -> int:
    """The id written after a sequence ends: the tokenizer's pad token, else its end-of-sequence token.

    Padding is always masked out, so any real id works; the pad token is preferred because a sampler
    never emits it. ``tokenizer``: anything with ``pad_id`` and ``eos_id`` (``jaxdistill.tokenizer``).
    """
    if tokenizer.pad_id is not None:
        return tokenizer.pad_id
    if tokenizer.eos_id is None:
        raise ValueError(f"tokenizer {getattr(tokenizer, 'path', tokenizer)!r} has neither a pad nor an eos "
                         "token; set pad_token or eos_token in its tokenizer_config.json")
    return tokenizer.eos_id
