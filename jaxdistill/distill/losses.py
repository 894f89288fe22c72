"""Student objectives: SFT negative log-likelihood and token- and span-level distillation losses.

Shapes: ``B`` sequences, ``T`` positions, ``V`` vocabulary, ``S`` aligned spans. Logits are
``[B, T, V]`` and already shifted (position ``t`` predicts token ``t``); ``mask`` is ``[B, T]``, true on
the tokens that are trained. Losses are masked means over tokens (or spans); masked positions are
overwritten with harmless values *before* any softmax, so garbage padding (even inf/NaN) changes
neither losses nor gradients. Everything is float32 (lower-precision logits are upcast).

Divergences take log-probabilities ``[..., V]`` and sum over the last axis:

- forward KL ``KL(p_T || p_S) = sum_v p_T (log p_T - log p_S)`` (mass-covering),
- reverse KL ``KL(p_S || p_T) = sum_v p_S (log p_S - log p_T)`` (mode-seeking),
- generalized JSD(beta), in TRL's GKD convention (``GKDTrainer.generalized_jsd_loss``)::

      m = beta p_T + (1 - beta) p_S
      JSD_beta = beta KL(p_T || m) + (1 - beta) KL(p_S || m)        for 0 < beta < 1
      JSD_0 := KL(p_T || p_S)   (forward KL)      JSD_1 := KL(p_S || p_T)   (reverse KL)

  The mixture formula itself tends to 0 as beta -> 0 or 1 (``m`` collapses onto ``p_S`` or ``p_T``);
  TRL therefore *defines* the endpoints as the two KLs, and so do we: ``beta`` in (0, 1) interpolates
  in behaviour (near 0 it behaves like a scaled forward KL, ``JSD_beta ~ beta KL(p_T||p_S)``), but the
  value jumps at the endpoints. ``beta = 0.5`` is the symmetric Jensen-Shannon divergence.
"""
from __future__ import annotations

from typing import Literal, Optional

import jax
import jax.numpy as jnp

from jaxdistill.token_maths import bernoulli_log_probs, kl_divergence, masked_mean, token_logprobs

Array = jnp.ndarray
Divergence = Literal["forward_kl", "reverse_kl", "jsd"]
SpanDivergence = Literal["forward_kl", "reverse_kl", "jsd", "abs_logprob_gap"]

_DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
_SPAN_DIVERGENCES = _DIVERGENCES + ("abs_logprob_gap",)


# ----------------------------------------------------------------------------- logits -> log-probs


def slice_to_shared_vocab(
    student_logits: Array,
    teacher_logits: Array,
    student_vocab_size: Optional[int] = None,
    teacher_vocab_size: Optional[int] = None,
) -> tuple[Array, Array]:
    """Drops padded vocabulary rows: both logits keep ids ``[0, min(V_S, V_T))``.

    Checkpoints pad the output layer past the tokenizer (Qwen: 151936 or 152064 rows for ~151665
    real tokens); those rows are not tokens and must not take probability mass.

    Args:
      student_logits: ``[..., V_S_padded]``.
      teacher_logits: ``[..., V_T_padded]``.
      student_vocab_size: the student tokenizer's real size ``V_S``; None means all rows are real.
      teacher_vocab_size: the teacher tokenizer's real size ``V_T``; None means all rows are real.

    Returns:
      ``(student_logits[..., :V], teacher_logits[..., :V])`` with ``V = min(V_S, V_T)``.
    """
    v_s = student_logits.shape[-1] if student_vocab_size is None else student_vocab_size
    v_t = teacher_logits.shape[-1] if teacher_vocab_size is None else teacher_vocab_size
    vocab = min(v_s, v_t, student_logits.shape[-1], teacher_logits.shape[-1])
    return student_logits[..., :vocab], teacher_logits[..., :vocab]


def tempered_log_softmax(logits: Array, temperature: float = 1.0) -> Array:
    """``log softmax(logits / temperature)`` over the last axis, float32. ``[..., V] -> [..., V]``."""
    return jax.nn.log_softmax(jnp.asarray(logits, jnp.float32) / temperature, axis=-1)


def teacher_top_k(student_logits: Array, teacher_logits: Array, top_k: int) -> tuple[Array, Array]:
    """Tail truncation: keeps the teacher's ``top_k`` tokens in both logits.

    ``K = argtop_k(teacher_logits)``; returns ``(z_S[K], z_T[K])``. A softmax over them renormalises
    both distributions on ``K``: ``p(v | K) = p(v) / sum_{u in K} p(u)``.

    Args:
      student_logits: ``[..., V]``.
      teacher_logits: ``[..., V]``.
      top_k: ``1 <= top_k <= V``.

    Returns:
      ``([..., top_k], [..., top_k])``, same order of tokens in both.
    """
    teacher_kept, index = jax.lax.top_k(teacher_logits, top_k)
    return jnp.take_along_axis(student_logits, index, axis=-1), teacher_kept


def kd_log_probs(
    student_logits: Array,
    teacher_logits: Array,
    *,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    student_vocab_size: Optional[int] = None,
    teacher_vocab_size: Optional[int] = None,
) -> tuple[Array, Array]:
    """Student and teacher log-probs on a common support, ready for a divergence.

    Pipeline: slice both to the shared real vocabulary, scale by ``1 / temperature``, optionally keep
    the teacher's top-k tokens, then ``log_softmax`` each (which renormalises over the kept set).

    Args:
      student_logits: ``[..., V_S_padded]``.
      teacher_logits: ``[..., V_T_padded]``.
      temperature: > 0, the same for both distributions.
      top_k: None (or 0) for the full shared vocabulary.
      student_vocab_size, teacher_vocab_size: real tokenizer sizes (see
        :func:`slice_to_shared_vocab`).

    Returns:
      ``(log p_S, log p_T)``, each ``[..., V']`` float32 with ``V' = top_k`` or the shared size.
    """
    student_logits, teacher_logits = slice_to_shared_vocab(
        student_logits, teacher_logits, student_vocab_size, teacher_vocab_size
    )
    student_logits = jnp.asarray(student_logits, jnp.float32) / temperature
    teacher_logits = jnp.asarray(teacher_logits, jnp.float32) / temperature
    if top_k:
        student_logits, teacher_logits = teacher_top_k(student_logits, teacher_logits, top_k)
    return jax.nn.log_softmax(student_logits, axis=-1), jax.nn.log_softmax(teacher_logits, axis=-1)


# ----------------------------------------------------------------------------- divergences
# ``kl_divergence(log_p, log_q) = KL(p || q)`` itself is in ``jaxdistill.token_maths``.


def forward_kl(student_logprobs: Array, teacher_logprobs: Array) -> Array:
    """``KL(p_T || p_S)``, the classic KD loss. ``[..., V] -> [...]``."""
    return kl_divergence(teacher_logprobs, student_logprobs)


def reverse_kl(student_logprobs: Array, teacher_logprobs: Array) -> Array:
    """``KL(p_S || p_T)``, mode-seeking. ``[..., V] -> [...]``."""
    return kl_divergence(student_logprobs, teacher_logprobs)


def generalized_jsd(student_logprobs: Array, teacher_logprobs: Array, beta: float = 0.5) -> Array:
    """Generalized Jensen-Shannon divergence, TRL GKD convention.

    ``m = beta p_T + (1 - beta) p_S``;
    ``JSD_beta = beta KL(p_T || m) + (1 - beta) KL(p_S || m)`` for ``0 < beta < 1``;
    ``JSD_0 = KL(p_T || p_S)`` (forward KL) and ``JSD_1 = KL(p_S || p_T)`` (reverse KL) by definition,
    since the mixture formula tends to 0 at both ends (see the module docstring).

    Args:
      student_logprobs: ``[..., V]``.
      teacher_logprobs: ``[..., V]``.
      beta: a static Python number in [0, 1].

    Returns:
      ``[...]``; for ``0 < beta < 1`` bounded by ``-beta log beta - (1 - beta) log(1 - beta)``.
    """
    beta = float(beta)
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    if beta == 0.0:
        return forward_kl(student_logprobs, teacher_logprobs)
    if beta == 1.0:
        return reverse_kl(student_logprobs, teacher_logprobs)
    log_mixture = jnp.logaddexp(
        teacher_logprobs + jnp.log(beta), student_logprobs + jnp.log1p(-beta)
    )
    return beta * kl_divergence(teacher_logprobs, log_mixture) + (1.0 - beta) * kl_divergence(
        student_logprobs, log_mixture
    )


def divergence(
    student_logprobs: Array,
    teacher_logprobs: Array,
    kind: Divergence = "forward_kl",
    beta: float = 0.5,
) -> Array:
    """Dispatches to :func:`forward_kl`, :func:`reverse_kl` or :func:`generalized_jsd` ("jsd", uses
    ``beta``). ``[..., V] -> [...]``."""
    if kind == "forward_kl":
        return forward_kl(student_logprobs, teacher_logprobs)
    if kind == "reverse_kl":
        return reverse_kl(student_logprobs, teacher_logprobs)
    if kind == "jsd":
        return generalized_jsd(student_logprobs, teacher_logprobs, beta)
    raise ValueError(f"divergence must be one of {_DIVERGENCES}, got {kind!r}")


# ----------------------------------------------------------------------------- token-level KD


def _mask_logits(logits: Array, mask: Array) -> Array:
    """Padding positions become all-zero logits (a uniform distribution) before any softmax."""
    return jnp.where(jnp.asarray(mask, dtype=bool)[..., None], logits, 0.0)


def kd_token_divergence(
    student_logits: Array,
    teacher_logits: Array,
    mask: Optional[Array] = None,
    *,
    divergence_kind: Divergence = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    student_vocab_size: Optional[int] = None,
    teacher_vocab_size: Optional[int] = None,
) -> Array:
    """Per-token divergence ``D(p_S^tau, p_T^tau)`` after slicing, temperature and top-k.

    Args:
      student_logits: ``[B, T, V_S_padded]``.
      teacher_logits: ``[B, T, V_T_padded]`` (teacher-forced on the same tokens).
      mask: ``[B, T]``; masked positions are neutralised before the softmax and return 0.
      divergence_kind: "forward_kl", "reverse_kl" or "jsd".
      beta: JSD interpolation (see :func:`generalized_jsd`).
      temperature, top_k, student_vocab_size, teacher_vocab_size: see :func:`kd_log_probs`.

    Returns:
      ``[B, T]``.
    """
    if mask is not None:
        student_logits = _mask_logits(student_logits, mask)
        teacher_logits = _mask_logits(teacher_logits, mask)
    student_logprobs, teacher_logprobs = kd_log_probs(
        student_logits,
        teacher_logits,
        temperature=temperature,
        top_k=top_k,
        student_vocab_size=student_vocab_size,
        teacher_vocab_size=teacher_vocab_size,
    )
    per_token = divergence(student_logprobs, teacher_logprobs, divergence_kind, beta)
    if mask is not None:
        per_token = jnp.where(jnp.asarray(mask, dtype=bool), per_token, 0.0)
    return per_token


def kd_loss(
    student_logits: Array,
    teacher_logits: Array,
    mask: Array,
    *,
    divergence_kind: Divergence = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    scale_by_temperature_squared: bool = False,
    top_k: Optional[int] = None,
    student_vocab_size: Optional[int] = None,
    teacher_vocab_size: Optional[int] = None,
) -> Array:
    """Same-tokenizer token-level KD: masked mean over tokens of the per-token divergence.

    ``L = c * sum_{b,t} m_bt D(p_S^tau, p_T^tau)_bt / sum m`` with ``p^tau = softmax(z / tau)`` (both
    at the same ``tau``), ``c = tau^2`` if ``scale_by_temperature_squared`` (Hinton et al., keeps
    gradient magnitudes comparable across temperatures) else 1.

    Args:
      student_logits: ``[B, T, V_S_padded]``.
      teacher_logits: ``[B, T, V_T_padded]``.
      mask: ``[B, T]`` bool.
      divergence_kind, beta, temperature, top_k, student_vocab_size, teacher_vocab_size: see
        :func:`kd_token_divergence`.
      scale_by_temperature_squared: multiply by ``tau^2``.

    Returns:
      a scalar ``[]``.
    """
    per_token = kd_token_divergence(
        student_logits,
        teacher_logits,
        mask,
        divergence_kind=divergence_kind,
        beta=beta,
        temperature=temperature,
        top_k=top_k,
        student_vocab_size=student_vocab_size,
        teacher_vocab_size=teacher_vocab_size,
    )
    loss = masked_mean(per_token, mask)
    return loss * temperature**2 if scale_by_temperature_squared else loss


# ----------------------------------------------------------------------------- SFT


def token_nll(
    logits: Array, tokens: Array, *, temperature: float = 1.0, vocab_size: Optional[int] = None
) -> Array:
    """``-log softmax(logits[..., :vocab_size] / temperature)[y_t]`` per token. ``[B, T, V] -> [B, T]``."""
    if vocab_size is not None:
        logits = logits[..., :vocab_size]
    return -token_logprobs(logits, tokens, temperature)


def sft_loss(
    logits: Array, tokens: Array, mask: Array, *, vocab_size: Optional[int] = None
) -> Array:
    """SFT negative log-likelihood: ``sum_{b,t} m_bt (-log p(y_bt)) / sum m``.

    Args:
      logits: ``[B, T, V_padded]``, shifted so position ``t`` predicts ``tokens[:, t]``.
      tokens: ``[B, T]`` int targets (any id in ``[0, vocab_size)`` under padding).
      mask: ``[B, T]`` bool.
      vocab_size: real tokenizer size; padded logit rows beyond it are dropped.

    Returns:
      a scalar ``[]``.
    """
    logits = _mask_logits(logits, mask)
    tokens = jnp.where(jnp.asarray(mask, dtype=bool), tokens, 0)
    return masked_mean(token_nll(logits, tokens, vocab_size=vocab_size), mask)


# ----------------------------------------------------------------------------- span-level KD
# Different tokenizers share no vocabulary, so full next-token distributions cannot be compared.
# What they share are byte spans whose boundaries coincide (jaxdistill.align): for each span s both
# models give the log-probability of producing exactly its bytes, log p_T(s) and log p_S(s) (sums of
# token log-probs over the span). We compare them as two Bernoulli distributions, "the span is
# produced" with probability p vs "anything else" with 1 - p (the binarised likelihoods of ALM,
# Minixhofer et al. 2025), and apply the *same* divergence as token-level KD to those 2-outcome
# distributions. With identical tokenizers every span is one token and log p(s) is the chosen-token
# log-prob, so the span loss equals :func:`chosen_token_kd_loss`, the same-tokenizer loss of the same
# kind on chosen tokens (tested). "abs_logprob_gap" = |log p_S(s) - log p_T(s)| is also offered: it is
# the span gap the calibration reward uses. Binarising (``jaxdistill.token_maths.bernoulli_log_probs``)
# clips log p to [-1e9, -1e-6] so that log(1 - p) stays finite; the closed-form forward KL of two
# Bernoullis is ``jaxdistill.token_maths.binary_kl`` (equal to the forward_kl here to rounding).


def binarised_divergence(
    student_logp: Array,
    teacher_logp: Array,
    kind: SpanDivergence = "forward_kl",
    beta: float = 0.5,
) -> Array:
    """Divergence between the binarised likelihoods of one event (a chosen token or a span).

    For ``kind`` in forward_kl / reverse_kl / jsd: ``D(Bern(p_S), Bern(p_T))`` with ``D`` as
    :func:`divergence`; e.g. forward_kl gives
    ``p_T log(p_T / p_S) + (1 - p_T) log((1 - p_T) / (1 - p_S))``.
    For "abs_logprob_gap": ``|log p_S - log p_T|``.

    Args:
      student_logp: ``[...]`` student log-likelihoods of the events.
      teacher_logp: ``[...]`` teacher log-likelihoods of the same events.
      kind: "forward_kl", "reverse_kl", "jsd" or "abs_logprob_gap".
      beta: JSD interpolation.

    Returns:
      ``[...]``.
    """
    if kind == "abs_logprob_gap":
        return jnp.abs(jnp.asarray(student_logp, jnp.float32) - jnp.asarray(teacher_logp, jnp.float32))
    if kind not in _DIVERGENCES:
        raise ValueError(f"divergence must be one of {_SPAN_DIVERGENCES}, got {kind!r}")
    return divergence(
        bernoulli_log_probs(student_logp), bernoulli_log_probs(teacher_logp), kind, beta
    )


def span_kd_loss(
    student_span_logprobs: Array,
    teacher_span_logprobs: Array,
    span_mask: Array,
    *,
    divergence_kind: SpanDivergence = "forward_kl",
    beta: float = 0.5,
) -> Array:
    """Cross-tokenizer KD: masked mean over aligned spans of the binarised span divergence.

    ``L = sum_{b,s} m_bs D(Bern(p_S(s)), Bern(p_T(s))) / sum m`` (see :func:`binarised_divergence`).
    Score both models' span log-probs at the same temperature for temperature-scaled KD.

    Args:
      student_span_logprobs: ``[B, S]``, ``log p_S(span)`` (student tokens summed per span).
      teacher_span_logprobs: ``[B, S]``, ``log p_T(span)``.
      span_mask: ``[B, S]`` bool, true on real spans.
      divergence_kind: "forward_kl", "reverse_kl", "jsd" or "abs_logprob_gap".
      beta: JSD interpolation.

    Returns:
      a scalar ``[]``.
    """
    span_mask = jnp.asarray(span_mask, dtype=bool)
    # log(1/2): a finite, in-range stand-in for padded spans, replaced before any exp/log.
    student = jnp.where(span_mask, student_span_logprobs, -0.6931472)
    teacher = jnp.where(span_mask, teacher_span_logprobs, -0.6931472)
    per_span = binarised_divergence(student, teacher, divergence_kind, beta)
    return masked_mean(per_span, span_mask)


def chosen_token_kd_loss(
    student_logits: Array,
    teacher_logits: Array,
    tokens: Array,
    mask: Array,
    *,
    divergence_kind: SpanDivergence = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    student_vocab_size: Optional[int] = None,
    teacher_vocab_size: Optional[int] = None,
) -> Array:
    """Same-tokenizer counterpart of :func:`span_kd_loss`: every token is its own span.

    ``L = sum_{b,t} m_bt D(Bern(p_S(y_bt)), Bern(p_T(y_bt))) / sum m`` with
    ``p(y) = softmax(z[..., :V] / tau)[y]`` and ``V = min(V_S, V_T)`` the shared real vocabulary.

    Args:
      student_logits: ``[B, T, V_S_padded]``.
      teacher_logits: ``[B, T, V_T_padded]``.
      tokens: ``[B, T]`` the chosen (teacher-forced) tokens.
      mask: ``[B, T]`` bool.
      divergence_kind, beta: see :func:`binarised_divergence`.
      temperature: the same for both models.
      student_vocab_size, teacher_vocab_size: real tokenizer sizes.

    Returns:
      a scalar ``[]``.
    """
    student_logits, teacher_logits = slice_to_shared_vocab(
        _mask_logits(student_logits, mask),
        _mask_logits(teacher_logits, mask),
        student_vocab_size,
        teacher_vocab_size,
    )
    tokens = jnp.where(jnp.asarray(mask, dtype=bool), tokens, 0)
    return span_kd_loss(
        token_logprobs(student_logits, tokens, temperature),
        token_logprobs(teacher_logits, tokens, temperature),
        mask,
        divergence_kind=divergence_kind,
        beta=beta,
    )
