"""GRPO loss maths: KL estimators, the clipped surrogate, aggregation (token log-probs, entropy and
masked means are in ``jaxdistill.token_maths``).

Shapes: ``B`` sequences (completions), ``T`` completion positions, ``V`` vocabulary. ``mask`` is
``[B, T]``, true on real completion tokens and false on padding. Every function here is pure and
works on float32 (inputs in lower precision are upcast), and every masked position is replaced by a
harmless value *before* any ``exp``/``log``, so padding that holds garbage (even inf or NaN) changes
neither the loss nor its gradient.

Names follow TRL's ``GRPOConfig`` (``epsilon``, ``epsilon_high``, ``beta``, ``loss_type``,
``max_completion_length``) and its logged metrics (``kl``, ``clip_ratio/*``).
"""
from __future__ import annotations

from typing import Literal, Optional

import jax
import jax.numpy as jnp

from jaxdistill.token_maths import masked_mean

Array = jnp.ndarray
KLEstimator = Literal["k1", "k2", "k3"]
LossType = Literal["grpo", "dr_grpo", "dapo"]

_KL_ESTIMATORS = ("k1", "k2", "k3")
_LOSS_TYPES = ("grpo", "dr_grpo", "dapo")


# ----------------------------------------------------------------------------- KL estimators
# All three estimate KL(pi || pi_ref) = E_{y ~ pi}[log pi(y) - log pi_ref(y)] from one sample
# y ~ pi per token (Schulman, "Approximating KL divergence", 2020). With log r = logp_ref - logp:
#   k1 = -log r                 unbiased, high variance, can be negative
#   k2 = (log r)^2 / 2          biased (its expectation is a second-order approximation), >= 0
#   k3 = (r - 1) - log r        unbiased, >= 0, low variance: the GRPO default


def kl_k1(logp: Array, ref_logp: Array) -> Array:
    """``k1 = logp - ref_logp``; ``E_{y~pi}[k1] = KL(pi || pi_ref)``. Any shape, elementwise."""
    return logp - ref_logp


def kl_k2(logp: Array, ref_logp: Array) -> Array:
    """``k2 = (logp - ref_logp)^2 / 2``; ``E_{y~pi}[k2] ~ KL(pi || pi_ref)`` to second order, >= 0."""
    return 0.5 * jnp.square(logp - ref_logp)


def kl_k3(logp: Array, ref_logp: Array) -> Array:
    """``k3 = exp(ref_logp - logp) - (ref_logp - logp) - 1``; ``E_{y~pi}[k3] = KL(pi || pi_ref)``, >= 0."""
    log_ratio = ref_logp - logp
    return jnp.exp(log_ratio) - log_ratio - 1.0


def kl_estimate(logp: Array, ref_logp: Array, estimator: KLEstimator = "k3") -> Array:
    """Per-token estimate of ``KL(pi || pi_ref)`` from samples of ``pi``: k1, k2 or k3 (default).

    Args:
      logp: ``[...]`` log pi of the sampled tokens.
      ref_logp: same shape, log pi_ref of the same tokens.
      estimator: "k1", "k2" or "k3".

    Returns:
      same shape as ``logp``.
    """
    if estimator == "k1":
        return kl_k1(logp, ref_logp)
    if estimator == "k2":
        return kl_k2(logp, ref_logp)
    if estimator == "k3":
        return kl_k3(logp, ref_logp)
    raise ValueError(f"kl_estimator must be one of {_KL_ESTIMATORS}, got {estimator!r}")


# ----------------------------------------------------------------------------- surrogate


def clipped_surrogate(
    logp: Array,
    old_logp: Array,
    advantages: Array,
    *,
    epsilon: float = 0.2,
    epsilon_high: Optional[float] = None,
) -> Array:
    """Per-token PPO/GRPO clipped surrogate loss (to minimise).

    ``rho = exp(logp - old_logp)``;
    ``loss_t = -min(rho * A, clip(rho, 1 - epsilon, 1 + epsilon_high) * A)``.

    The gradient w.r.t. ``logp`` is ``-rho * A`` inside the trust region and 0 where the clipped
    branch is the minimum (``rho > 1 + epsilon_high`` with ``A > 0``, ``rho < 1 - epsilon`` with
    ``A < 0``).

    Args:
      logp: ``[B, T]`` log-probs under the current policy (differentiated).
      old_logp: ``[B, T]`` log-probs at sampling time (treated as constants).
      advantages: ``[B]`` (one per sequence, broadcast over tokens) or ``[B, T]`` (dense).
      epsilon: lower clip width.
      epsilon_high: upper clip width; None means ``epsilon`` (DAPO's clip-higher uses e.g. 0.28).

    Returns:
      ``[B, T]``, unmasked: aggregate with :func:`aggregate_token_losses`.
    """
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    advantages = _per_token(advantages, logp)
    ratio = jnp.exp(logp - jax.lax.stop_gradient(old_logp))
    clipped_ratio = jnp.clip(ratio, 1.0 - epsilon, 1.0 + epsilon_high)
    return -jnp.minimum(ratio * advantages, clipped_ratio * advantages)


def _per_token(advantages: Array, like: Array) -> Array:
    """``[B]`` -> ``[B, 1]`` so it broadcasts over tokens; ``[B, T]`` unchanged."""
    advantages = jnp.asarray(advantages, jnp.float32)
    if advantages.ndim == like.ndim - 1:
        advantages = advantages[..., None]
    return advantages


# ----------------------------------------------------------------------------- aggregation


def aggregate_token_losses(
    per_token_loss: Array,
    mask: Array,
    loss_type: LossType = "grpo",
    max_completion_length: Optional[int] = None,
) -> Array:
    """Reduces ``[B, T]`` per-token losses to a scalar.

    With ``m`` the mask, ``L_i = sum_t m_it l_it``, ``n_i = sum_t m_it`` and ``B'`` the number of
    sequences with ``n_i > 0``:

    - "grpo":    ``(1 / B') sum_i L_i / n_i``: each sequence weighs the same (long answers' tokens
      count less).
    - "dr_grpo": ``sum_i L_i / (B' * max_completion_length)``: a constant normaliser, no length bias.
    - "dapo":    ``sum_i L_i / sum_i n_i``: each token weighs the same.

    Sequences with no valid token (filler rows) are left out of ``B'``; TRL divides by all rows,
    which is the same whenever every row holds a completion.

    Args:
      per_token_loss: ``[B, T]``; values under ``mask == False`` are ignored (may be inf/NaN).
      mask: ``[B, T]`` bool.
      loss_type: "grpo", "dr_grpo" or "dapo".
      max_completion_length: the dr_grpo constant; None means ``T``.

    Returns:
      a scalar ``[]``.
    """
    mask = jnp.asarray(mask, dtype=bool)
    per_token_loss = jnp.where(mask, per_token_loss, 0.0)
    tokens_per_seq = jnp.sum(mask, axis=-1)
    num_seqs = jnp.maximum(jnp.sum(tokens_per_seq > 0), 1)
    if loss_type == "grpo":
        per_seq = jnp.sum(per_token_loss, axis=-1) / jnp.maximum(tokens_per_seq, 1)
        return jnp.sum(per_seq) / num_seqs
    if loss_type == "dr_grpo":
        length = mask.shape[-1] if max_completion_length is None else max_completion_length
        return jnp.sum(per_token_loss) / (num_seqs * length)
    if loss_type == "dapo":
        return jnp.sum(per_token_loss) / jnp.maximum(jnp.sum(tokens_per_seq), 1)
    raise ValueError(f"loss_type must be one of {_LOSS_TYPES}, got {loss_type!r}")


# ----------------------------------------------------------------------------- full loss


def grpo_loss(
    logp: Array,
    old_logp: Optional[Array],
    ref_logp: Optional[Array],
    advantages: Array,
    mask: Array,
    *,
    epsilon: float = 0.2,
    epsilon_high: Optional[float] = None,
    beta: float = 0.0,
    kl_estimator: KLEstimator = "k3",
    loss_type: LossType = "grpo",
    max_completion_length: Optional[int] = None,
) -> tuple[Array, dict[str, Array]]:
    """GRPO objective: clipped surrogate plus a KL anchor, aggregated over completion tokens.

    ``l_t = -min(rho_t A, clip(rho_t, 1 - epsilon, 1 + epsilon_high) A) + beta * k(logp_t, ref_logp_t)``
    with ``rho_t = exp(logp_t - old_logp_t)`` and ``k`` the chosen KL estimator of
    ``KL(pi || pi_ref)``; the scalar is ``aggregate_token_losses(l, mask, loss_type)``.

    Padding is neutralised first: under ``mask == False`` all log-probs are replaced by 0, so the ratio
    is 1 and the KL estimate 0 there, and garbage in padding affects neither the loss nor gradients.

    Args:
      logp: ``[B, T]`` current-policy log-probs of the sampled tokens (differentiated).
      old_logp: ``[B, T]`` log-probs stored at sampling time (constants); None when the loss is
        evaluated on fresh samples (``num_iterations = 1``): then ``old_logp = stop_gradient(logp)``,
        the ratio is 1 and the gradient is the plain policy gradient.
      ref_logp: ``[B, T]`` reference (LoRA off) log-probs; may be None only when ``beta == 0``, in
        which case no reference pass is needed.
      advantages: ``[B]`` or ``[B, T]``.
      mask: ``[B, T]`` bool, true on completion tokens.
      epsilon, epsilon_high: clip widths (see :func:`clipped_surrogate`).
      beta: KL weight (static Python number: 0 removes the KL term).
      kl_estimator: "k1", "k2" or "k3".
      loss_type: "grpo", "dr_grpo" or "dapo" (see :func:`aggregate_token_losses`).
      max_completion_length: the dr_grpo constant; None means ``T``.

    Returns:
      ``(loss, metrics)``: ``loss`` a scalar; ``metrics`` scalars, all token-level masked means and
      free of gradient: ``ratio_mean``; ``clip_ratio/low_mean`` (``rho < 1 - epsilon`` and ``A < 0``),
      ``clip_ratio/high_mean`` (``rho > 1 + epsilon_high`` and ``A > 0``),
      ``clip_ratio/region_mean`` (either) with ``clip_ratio`` the same value; ``kl`` (mean estimate,
      present only when ``ref_logp`` is given).
    """
    if kl_estimator not in _KL_ESTIMATORS:
        raise ValueError(f"kl_estimator must be one of {_KL_ESTIMATORS}, got {kl_estimator!r}")
    if ref_logp is None and beta != 0:
        raise ValueError("ref_logp is required when beta != 0")
    epsilon_high = epsilon if epsilon_high is None else epsilon_high
    mask = jnp.asarray(mask, dtype=bool)
    logp = jnp.where(mask, jnp.asarray(logp, jnp.float32), 0.0)
    if old_logp is None:
        old_logp = jax.lax.stop_gradient(logp)
    else:
        old_logp = jnp.where(mask, jnp.asarray(old_logp, jnp.float32), 0.0)

    per_token = clipped_surrogate(
        logp, old_logp, advantages, epsilon=epsilon, epsilon_high=epsilon_high
    )
    metrics: dict[str, Array] = {}
    if ref_logp is not None:
        ref_logp = jnp.where(mask, jnp.asarray(ref_logp, jnp.float32), 0.0)
        kl = kl_estimate(logp, ref_logp, kl_estimator)
        if beta != 0:
            per_token = per_token + beta * kl
        metrics["kl"] = masked_mean(jax.lax.stop_gradient(kl), mask)
    loss = aggregate_token_losses(per_token, mask, loss_type, max_completion_length)

    ratio = jax.lax.stop_gradient(jnp.exp(logp - old_logp))
    adv = jax.lax.stop_gradient(_per_token(advantages, logp))
    low = (ratio < 1.0 - epsilon) & (adv < 0)
    high = (ratio > 1.0 + epsilon_high) & (adv > 0)
    metrics["ratio_mean"] = masked_mean(ratio, mask)
    metrics["clip_ratio/low_mean"] = masked_mean(low.astype(jnp.float32), mask)
    metrics["clip_ratio/high_mean"] = masked_mean(high.astype(jnp.float32), mask)
    metrics["clip_ratio/region_mean"] = masked_mean((low | high).astype(jnp.float32), mask)
    metrics["clip_ratio"] = metrics["clip_ratio/region_mean"]
    return loss, metrics
