"""The calibration reward r_cal: how well the frozen proxy student agrees with the teacher's output.

Pure functions on log-probs already computed by the models (``docs/design.md`` section 2).
The knob's sign is applied upstream (``A = groupnorm(r_task) + eta * groupnorm(r_cal)``), never here:
a higher r_cal always means "the proxy finds this output easier to match".

Two modes (``alm`` is ``span`` with the binary-KL gap; the ``influence`` mode's reward, minus the harm
score, is ``jaxdistill.rl.influence``):

* ``sequence`` (closest to the paper): the proxy's mean log-prob per byte of the completion, under
  its own tokenizer, optionally minus the reference teacher's mean log-prob per byte of the same
  completion (how much more natural the text is for the proxy than for the original teacher).
  Per byte, so that tokenizers with different granularity are on the same scale.
* ``span`` (this project's default): on spans aligned across tokenizers
  (:func:`jaxdistill.align.align_spans`), the gap between log p_teacher(span) and log p_proxy(span);
  r_cal = minus the mean gap over spans, and a dense per-token reward gives every teacher token
  minus its span's gap. Two gap functions:

  - ``"abs"``: a smooth absolute value ``sqrt(d^2 + delta^2) - delta`` of d = log p_T - log p_P.
    It is 0 with zero gradient at d = 0 (``jnp.abs`` has gradient 1 there in JAX), stays within
    ``delta`` of |d| everywhere and increases with |d|.
  - ``"alm"`` (after approximate likelihood matching): binary cross-entropy between the span
    probabilities p^(1/tau) of both sides, minus the teacher side's binary entropy, i.e. the binary
    KL divergence KL(Bern(p_T^(1/tau)) || Bern(p_P^(1/tau))). Subtracting the entropy is this
    project's choice: it makes the gap 0 (with zero gradient) when both sides agree, as the reward
    requires; plain BCE is not 0 there.

Numerics: log-probs are clipped to ``LOGPROB_FLOOR`` (so -inf from masked logits cannot produce
inf - inf), and every branch is finite for log-probs in [LOGPROB_FLOOR, 0]: no NaN or Inf at -1e4
or 0, in values or gradients.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from jaxdistill.align import SpanAlignment, span_logprobs, span_mask
from jaxdistill.token_maths import LOGPROB_FLOOR, binary_kl

__all__ = [
    "LOGPROB_FLOOR",
    "smooth_abs",
    "binary_kl_from_logprobs",
    "span_gaps",
    "sequence_calibration_reward",
    "SpanCalibration",
    "span_calibration_reward",
    "calibration_metrics",
]


def smooth_abs(x: jax.Array, delta: float = 1e-3) -> jax.Array:
    """sqrt(x^2 + delta^2) - delta (elementwise): |x| smoothed at 0 (value 0, gradient 0 there)."""
    return jnp.sqrt(jnp.square(x) + delta**2) - delta


def binary_kl_from_logprobs(log_p: jax.Array, log_q: jax.Array, tau: float = 1.0) -> jax.Array:
    """KL(Bern(p^(1/tau)) || Bern(q^(1/tau))) from log p and log q (elementwise, nats, >= 0).

    = BCE(p', q') - H(p') with p' = p^(1/tau), q' = q^(1/tau); 0 with zero gradient when p = q.
    ``log p / tau`` is clipped to [LOGPROB_FLOOR, -1e-6] (``jaxdistill.token_maths.binary_kl``).
    """
    return binary_kl(log_p / tau, log_q / tau)


def span_gaps(
    teacher_span_logprobs: jax.Array,
    proxy_span_logprobs: jax.Array,
    *,
    gap: Literal["abs", "alm"] = "abs",
    delta: float = 1e-3,
    tau: float = 1.0,
) -> jax.Array:
    """Per-span gap between teacher and proxy: float [B, S] from two float [B, S] log-probs."""
    teacher = jnp.maximum(teacher_span_logprobs, LOGPROB_FLOOR)
    proxy = jnp.maximum(proxy_span_logprobs, LOGPROB_FLOOR)
    if gap == "abs":
        return smooth_abs(teacher - proxy, delta)
    if gap == "alm":
        return binary_kl_from_logprobs(teacher, proxy, tau)
    raise ValueError(f"unknown calibration gap {gap!r}: use 'abs' or 'alm'")


def sequence_calibration_reward(
    proxy_token_logprobs: jax.Array,
    proxy_mask: jax.Array,
    num_bytes: jax.Array,
    reference_token_logprobs: jax.Array | None = None,
    reference_mask: jax.Array | None = None,
) -> jax.Array:
    """``sequence`` mode: the proxy's mean log-prob per byte of each completion (float [B]).

    proxy_token_logprobs: float [B, T_p]  log p_P of the completion re-tokenized by the proxy.
    proxy_mask:           bool  [B, T_p]  completion tokens (no prompt, no padding).
    num_bytes:            int   [B]       bytes of the completion text (both sides hold the same).
    reference_token_logprobs / reference_mask: [B, T_r], optional: the reference teacher's log-probs
        of its own completion tokens; when given, its per-byte log-prob is subtracted.
    Rows with no bytes get 0.
    """
    per_byte = jnp.maximum(num_bytes, 1).astype(jnp.float32)

    def mean_per_byte(logprobs: jax.Array, mask: jax.Array) -> jax.Array:
        clipped = jnp.maximum(logprobs.astype(jnp.float32), LOGPROB_FLOOR)
        return jnp.where(mask, clipped, 0.0).sum(axis=1) / per_byte

    reward = mean_per_byte(proxy_token_logprobs, proxy_mask)
    if reference_token_logprobs is not None:
        if reference_mask is None:
            raise ValueError("reference_token_logprobs needs reference_mask (its completion tokens)")
        reward = reward - mean_per_byte(reference_token_logprobs, reference_mask)
    return jnp.where(num_bytes > 0, reward, 0.0)


class SpanCalibration(NamedTuple):
    """Output of :func:`span_calibration_reward` (a pytree of arrays).

    reward:        float [B]       r_cal = -(mean gap over the row's counted spans); 0 without spans.
    token_rewards: float [B, T_a]  -(gap of the teacher token's span); 0 for tokens in no span.
    gaps:          float [B, S]    per-span gap (0 in empty slots).
    counted:       bool  [B, S]    spans that entered the mean (real and, if given, weighted in).
    """

    reward: jax.Array
    token_rewards: jax.Array
    gaps: jax.Array
    counted: jax.Array


def span_calibration_reward(
    teacher_token_logprobs: jax.Array,
    proxy_token_logprobs: jax.Array,
    alignment: SpanAlignment,
    *,
    span_weights: jax.Array | None = None,
    gap: Literal["abs", "alm"] = "abs",
    delta: float = 1e-3,
    tau: float = 1.0,
) -> SpanCalibration:
    """``span`` mode: per-span gaps between teacher and proxy, their mean and a dense version.

    teacher_token_logprobs: float [B, T_a]  log p_T of the teacher's completion tokens (side a).
    proxy_token_logprobs:   float [B, T_b]  log p_P of the proxy's tokens of the same text (side b).
    alignment:   from :func:`jaxdistill.align.align_spans` (side a = teacher, side b = proxy).
    span_weights: optional bool/float [B, S] with S = min(T_a, T_b): e.g. ``TextAlignment.exact_spans``
        to leave out spans whose bytes differ across the sides. The mean is weighted by it.
    gap, delta, tau: see :func:`span_gaps`.
    Jit-able with ``gap``, ``delta`` and ``tau`` static.
    """
    capacity = min(teacher_token_logprobs.shape[1], proxy_token_logprobs.shape[1])
    teacher = jnp.maximum(teacher_token_logprobs.astype(jnp.float32), LOGPROB_FLOOR)
    proxy = jnp.maximum(proxy_token_logprobs.astype(jnp.float32), LOGPROB_FLOOR)
    teacher_spans = span_logprobs(teacher, alignment.span_ids_a, capacity)  # [B, S]
    proxy_spans = span_logprobs(proxy, alignment.span_ids_b, capacity)  # [B, S]
    weights = span_mask(alignment.num_spans, capacity).astype(jnp.float32)
    if span_weights is not None:
        weights = weights * jnp.asarray(span_weights, jnp.float32)
    gaps = span_gaps(teacher_spans, proxy_spans, gap=gap, delta=delta, tau=tau) * (weights > 0)
    total_weight = weights.sum(axis=1)
    mean_gap = (gaps * weights).sum(axis=1) / jnp.maximum(total_weight, 1e-12)
    reward = jnp.where(total_weight > 0, -mean_gap, 0.0)

    span_of_token = alignment.span_ids_a
    has_span = (span_of_token >= 0) & (span_of_token < capacity)
    token_gap = jnp.take_along_axis(gaps, jnp.clip(span_of_token, 0, capacity - 1), axis=1)
    token_rewards = jnp.where(has_span, -token_gap, 0.0)
    return SpanCalibration(reward, token_rewards, gaps, weights > 0)


def calibration_metrics(
    alignment: SpanAlignment, calibration: SpanCalibration | None = None
) -> dict[str, jax.Array]:
    """Batch scalars for logging (TRL-style names under ``calibration/``).

    calibration/aligned_byte_fraction: bytes inside spans / teacher bytes.
    calibration/mean_span_bytes:       mean span length in bytes.
    calibration/bytes_mismatch_rows:   fraction of rows whose two sides hold different byte totals.
    calibration/span_gap:              mean gap over counted spans (with ``calibration``).
    """
    aligned = alignment.aligned_bytes.sum().astype(jnp.float32)
    spans = alignment.num_spans.sum().astype(jnp.float32)
    metrics = {
        "calibration/aligned_byte_fraction": aligned
        / jnp.maximum(alignment.total_bytes_a.sum().astype(jnp.float32), 1.0),
        "calibration/mean_span_bytes": aligned / jnp.maximum(spans, 1.0),
        "calibration/bytes_mismatch_rows": 1.0 - jnp.mean(alignment.bytes_match.astype(jnp.float32)),
    }
    if calibration is not None:
        counted = calibration.counted.astype(jnp.float32)
        metrics["calibration/span_gap"] = (calibration.gaps * counted).sum() / jnp.maximum(
            counted.sum(), 1.0
        )
    return metrics
