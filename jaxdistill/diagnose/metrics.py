"""Trap diagnostics as pure functions: why a student fails to learn from a teacher.

The paper names three traps of distillation and three symptoms they leave in a student's text. Each
function here measures one of them on arrays or strings, with no model and no I/O
(``jaxdistill.diagnose.run`` runs the models and feeds them):

traps (need both models' probabilities)
- *tail noise*: :func:`kl_head_tail` splits ``KL`` per token into the part on the teacher's top-k
  tokens (head) and the rest (tail); a large tail share means the KD signal is mostly about tokens the
  teacher barely uses.
- *off-policy instability*: the same per-token divergences on teacher samples and on student samples;
  their difference is the drift a teacher-forced student meets when it generates on its own.
- *teacher-student gap*: :func:`per_byte_loglik` / :func:`span_per_byte_logliks`: how much worse than
  the teacher the student predicts the teacher's own text, per byte (comparable across tokenizers).
  :func:`sequence_log_ratio` and :func:`kl_concentration` say whether the divergence is spread over
  every token or concentrated in a few (signal sparsity).

symptoms (text only, plus the generating model's token log-probs for confidence)
- *overconfident hallucination*: :func:`answer_byte_span`, :func:`answer_confidence`,
  :func:`expected_calibration_error`, :func:`overconfidence`;
- *self-correction collapse*: :func:`self_correction_markers`;
- *local degradation*: :func:`repeated_ngram_rate`, :func:`longest_repeat`, :func:`has_loop`, and
  the truncation rate (completions that hit the token budget).

reductions: :func:`token_level_report` and :func:`likelihood_report` turn diagnose's per-token arrays
of one sample source into the report's numbers.

Shapes: ``B`` sequences, ``T`` positions, ``V`` vocabulary, ``K`` values of top-k, ``S`` spans.
Log-probabilities are float32; masks are bool, true on real tokens (or spans).
"""

from __future__ import annotations

import math
import re
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdistill.distill.losses import binarised_divergence
from jaxdistill.token_maths import kl_divergence, token_entropy

Array = jnp.ndarray


# ============================================================================ token-level divergences


def kl_terms(log_p: Array, log_q: Array) -> Array:
    """Per-vocabulary-entry terms of ``KL(p || q)``: ``p(v) (log p(v) - log q(v))``.

    Their sum over the last axis is :func:`jaxdistill.token_maths.kl_divergence`. A single term can
    be negative (where ``q(v) > p(v)``); terms with ``p(v) = 0`` are 0.

    Args:
      log_p: ``[..., V]`` log-probabilities.
      log_q: ``[..., V]`` log-probabilities.

    Returns:
      ``[..., V]``.
    """
    p = jnp.exp(log_p)
    support = p > 0
    return jnp.where(support, p * (jnp.where(support, log_p, 0.0) - jnp.where(support, log_q, 0.0)), 0.0)


def kl_head_tail(log_p: Array, log_q: Array, rank_logprobs: Array, ks: Sequence[int]) -> tuple[Array, Array, Array]:
    """Splits ``KL(p || q)`` into the terms on the top-k tokens of ``rank_logprobs`` and the rest.

    ``head_k = sum_{v in top_k} p(v) (log p(v) - log q(v))`` with ``top_k`` the k most probable tokens
    under ``rank_logprobs`` (the teacher, for both forward and reverse KL), and
    ``tail_k = KL(p || q) - head_k``: the KL carried by every other token. The two parts add up to the
    total by definition (the terms are a partition of the sum); either can be negative on its own.

    Args:
      log_p: ``[..., V]`` log-probabilities of the first argument of the KL.
      log_q: ``[..., V]`` of the second.
      rank_logprobs: ``[..., V]`` decides which tokens form the head (ties: ``lax.top_k`` order).
      ks: K static ints, each in ``[1, V]``.

    Returns:
      ``(head [..., K], tail [..., K], total [...])``.
    """
    vocab = log_p.shape[-1]
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1 or max(ks) > vocab:
        raise ValueError(f"every top-k must be in [1, {vocab}] (the shared vocabulary), got {ks}")
    total = kl_divergence(log_p, log_q)
    _, index = jax.lax.top_k(rank_logprobs, max(ks))  # [..., k_max], most probable first
    head_terms = kl_terms(jnp.take_along_axis(log_p, index, axis=-1), jnp.take_along_axis(log_q, index, axis=-1))
    running = jnp.cumsum(head_terms, axis=-1)
    head = jnp.stack([running[..., k - 1] for k in ks], axis=-1)
    return head, total[..., None] - head, total


def top_k_mass(logprobs: Array, ks: Sequence[int]) -> Array:
    """Probability held by the k most probable tokens: ``[..., V] -> [..., K]``."""
    top, _ = jax.lax.top_k(logprobs, max(ks))
    running = jnp.cumsum(jnp.exp(top), axis=-1)
    return jnp.stack([running[..., int(k) - 1] for k in ks], axis=-1)


def token_divergences(student_logprobs: Array, teacher_logprobs: Array, ks: Sequence[int]) -> dict[str, Array]:
    """Every per-position divergence diagnose reports, from two next-token distributions.

    Args:
      student_logprobs: ``[..., V]`` log p_S (both on the same, shared vocabulary).
      teacher_logprobs: ``[..., V]`` log p_T.
      ks: the top-k values of the head/tail split (K of them).

    Returns:
      ``forward_kl`` ``[...]`` = KL(p_T || p_S); ``reverse_kl`` ``[...]`` = KL(p_S || p_T);
      ``forward_head``/``forward_tail``/``reverse_head``/``reverse_tail`` ``[..., K]`` (the split of
      each KL over the teacher's top-k, :func:`kl_head_tail`); ``teacher_top_k_mass`` ``[..., K]``;
      ``teacher_entropy`` and ``student_entropy`` ``[...]``.
    """
    forward_head, forward_tail, forward = kl_head_tail(teacher_logprobs, student_logprobs, teacher_logprobs, ks)
    reverse_head, reverse_tail, reverse = kl_head_tail(student_logprobs, teacher_logprobs, teacher_logprobs, ks)
    return {
        "forward_kl": forward,
        "reverse_kl": reverse,
        "forward_head": forward_head,
        "forward_tail": forward_tail,
        "reverse_head": reverse_head,
        "reverse_tail": reverse_tail,
        "teacher_top_k_mass": top_k_mass(teacher_logprobs, ks),
        "teacher_entropy": entropy(teacher_logprobs),
        "student_entropy": entropy(student_logprobs),
    }


def entropy(logprobs: Array) -> Array:
    """``H(p) = -sum_v p log p`` over the last axis (``p = 0`` terms are 0). ``[..., V] -> [...]``."""
    return token_entropy(logprobs)  # log_softmax of log-probabilities is the identity


# ============================================================================ sequences and bytes


def sequence_log_ratio(logprobs_a: Array, logprobs_b: Array, mask: Array) -> Array:
    """``log p_a(y) - log p_b(y)`` of each whole sequence: ``sum_t m_t (a_t - b_t)``. ``[B, T] -> [B]``.

    Averaged over sequences drawn from ``p_a`` it estimates the sequence-level ``KL(p_a || p_b)``,
    whose expectation equals the sum over positions of the token-level KLs (chain rule). The two
    estimates differ in variance: the sequence-level one is what a sequence-level objective (SeqKD,
    RL) sees, the token-level one what token KD sees.
    """
    mask = jnp.asarray(mask, bool)
    return jnp.sum(jnp.where(mask, logprobs_a - logprobs_b, 0.0), axis=-1)


def per_byte_loglik(token_logprobs: Array, byte_lengths: Array, mask: Array) -> Array:
    """Log-likelihood per byte of each sequence: ``sum_t m_t log p(y_t) / sum_t m_t bytes(y_t)``.

    Per byte, not per token, so that models with different tokenizers are comparable. Zero-byte
    tokens (EOS) add their log-prob but no bytes. A row with no bytes gives 0.

    Args:
      token_logprobs: ``[B, T]``.
      byte_lengths: ``[B, T]`` int, bytes of text each token holds.
      mask: ``[B, T]`` bool.

    Returns:
      ``[B]`` (<= 0).
    """
    mask = jnp.asarray(mask, bool)
    total = jnp.sum(jnp.where(mask, token_logprobs, 0.0), axis=-1)
    n_bytes = jnp.sum(jnp.where(mask, byte_lengths, 0), axis=-1)
    return jnp.where(n_bytes > 0, total / jnp.maximum(n_bytes, 1), 0.0)


def span_per_byte_logliks(span_logprobs_a: Array, span_logprobs_b: Array, span_bytes: Array,
                          span_weights: Array) -> tuple[Array, Array]:
    """Per-byte log-likelihoods of two models over the same aligned spans (different tokenizers).

    ``sum_s w_s log p_a(s) / sum_s w_s bytes(s)`` and the same for ``b``: both over exactly the same
    bytes, so their difference is the teacher-student gap per byte even when the tokenizers differ.

    Args:
      span_logprobs_a: ``[B, S]`` ``log p_a(span)`` (``jaxdistill.align.span_logprobs``).
      span_logprobs_b: ``[B, S]``.
      span_bytes: ``[B, S]`` bytes per span.
      span_weights: ``[B, S]`` bool, spans to count (real spans holding identical bytes on both sides).

    Returns:
      ``([B], [B])``.
    """
    return (per_byte_loglik(span_logprobs_a, span_bytes, span_weights),
            per_byte_loglik(span_logprobs_b, span_bytes, span_weights))


def kl_concentration(per_token_values: np.ndarray, top_fraction: float = 0.1) -> dict[str, float]:
    """How concentrated a per-token divergence is (signal sparsity), over a flat array of tokens.

    Returns ``top_share``: the share of the total held by the largest ``top_fraction`` of tokens;
    ``half_mass_fraction``: the smallest fraction of tokens that holds half of the total (small =
    sparse: a few tokens carry the signal). Negative values count as 0. Empty or all-zero input:
    ``top_share = 0`` and ``half_mass_fraction = 0``.
    """
    values = np.sort(np.clip(np.asarray(per_token_values, np.float64).ravel(), 0.0, None))[::-1]
    total = values.sum()
    if values.size == 0 or total <= 0:
        return {"top_share": 0.0, "half_mass_fraction": 0.0}
    cumulative = np.cumsum(values) / total
    n_top = max(1, int(math.ceil(top_fraction * values.size)))
    n_half = int(np.searchsorted(cumulative, 0.5 - 1e-12)) + 1
    return {"top_share": float(cumulative[n_top - 1]), "half_mass_fraction": n_half / values.size}


# ============================================================================ answers and confidence

_NUMBER = re.compile(rb"(?<![\d.])-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?")


def answer_byte_span(completion: bytes, prediction: str | None) -> tuple[int, int] | None:
    """Where the predicted answer is written in a completion: ``(start, end)`` byte offsets.

    Numeric predictions: the last number in the completion equal to it (``1,200`` matches ``1200``),
    which is where the verifiers read it (after ``####``, in ``\\boxed{}``, or the last number).
    Other predictions: the last case-insensitive occurrence of the text as a whole word (so the
    choice ``B`` is not found inside ``beta``). None when absent.
    """
    if prediction is None or not prediction.strip():
        return None
    try:
        value = float(prediction.replace(",", ""))
    except ValueError:
        value = None
    if value is not None:
        for match in reversed(list(_NUMBER.finditer(completion))):
            if math.isclose(float(match.group(0).replace(b",", b"")), value, rel_tol=1e-9, abs_tol=1e-9):
                return match.start(), match.end()
        return None
    word = re.compile(rb"(?<!\w)" + re.escape(prediction.strip().encode()) + rb"(?!\w)", re.IGNORECASE)
    matches = list(word.finditer(completion))
    return (matches[-1].start(), matches[-1].end()) if matches else None


def tokens_covering(byte_lengths: np.ndarray, start: int, end: int) -> np.ndarray:
    """Bool ``[T]``: tokens holding at least one byte of ``[start, end)``.

    Token ``t`` holds bytes ``[o_t, o_t + n_t)`` with ``o`` the exclusive cumsum of ``byte_lengths``;
    zero-byte tokens hold nothing.
    """
    lengths = np.asarray(byte_lengths, np.int64)
    ends = np.cumsum(lengths)
    starts = ends - lengths
    return (lengths > 0) & (starts < end) & (ends > start)


def answer_confidence(token_logprobs: np.ndarray, byte_lengths: np.ndarray, span: tuple[int, int] | None) -> float:
    """The model's probability of writing the answer as it did: ``exp(sum log p)`` over the tokens
    covering the answer's bytes (:func:`tokens_covering`). NaN when there is no answer span."""
    if span is None:
        return float("nan")
    covering = tokens_covering(byte_lengths, *span)
    if not covering.any():
        return float("nan")
    return float(np.exp(np.sum(np.asarray(token_logprobs, np.float64)[covering])))


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool], n_bins: int = 10
                               ) -> tuple[float, list[dict[str, float]]]:
    """ECE of answer confidences: ``sum_b (n_b / N) |accuracy_b - confidence_b|``.

    Bins are ``[i/n_bins, (i+1)/n_bins)`` (the last one closed at 1). NaN confidences (no answer)
    are left out. Returns ``(ece, bins)`` where ``bins`` lists the non-empty bins as
    ``{"low", "high", "count", "confidence", "accuracy"}``; ECE is NaN when nothing is left.
    """
    conf = np.asarray(confidences, np.float64)
    hit = np.asarray(correct, bool)
    keep = ~np.isnan(conf)
    conf, hit = conf[keep], hit[keep]
    if conf.size == 0:
        return float("nan"), []
    index = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece, bins = 0.0, []
    for b in range(n_bins):
        members = index == b
        if not members.any():
            continue
        confidence, accuracy = float(conf[members].mean()), float(hit[members].mean())
        ece += members.sum() / conf.size * abs(accuracy - confidence)
        bins.append({"low": b / n_bins, "high": (b + 1) / n_bins, "count": int(members.sum()),
                     "confidence": confidence, "accuracy": accuracy})
    return float(ece), bins


def overconfidence(confidences: Sequence[float], correct: Sequence[bool], threshold: float = 0.9
                   ) -> dict[str, float]:
    """Confidence on wrong answers (overconfident hallucination).

    Over completions with an answer (finite confidence): ``wrong_confidence`` = mean confidence of
    the wrong ones, ``right_confidence`` = of the right ones, ``confident_wrong_rate`` = share of
    answered completions that are wrong with confidence >= ``threshold``. NaN where a group is empty.
    """
    conf = np.asarray(confidences, np.float64)
    hit = np.asarray(correct, bool)
    keep = ~np.isnan(conf)
    conf, hit = conf[keep], hit[keep]

    def mean(values):
        return float(values.mean()) if values.size else float("nan")

    return {"wrong_confidence": mean(conf[~hit]), "right_confidence": mean(conf[hit]),
            "confident_wrong_rate": mean((~hit) & (conf >= threshold))}


# ============================================================================ text symptoms

# Phrases a model uses to revisit its own reasoning; ``check`` is the arith task's inverse-check
# step ("check: 17-5=12"), written by the gold solutions in half the styles.
SELF_CORRECTION_MARKERS: dict[str, re.Pattern] = {
    "wait": re.compile(r"\bwait\b", re.IGNORECASE),
    "let me check": re.compile(r"\blet me (?:double[- ]?|re-?)?check\b", re.IGNORECASE),
    "actually": re.compile(r"\bactually\b", re.IGNORECASE),
    "hmm": re.compile(r"\bhmm+\b", re.IGNORECASE),
    "check step": re.compile(r"^\s*check\s*:", re.IGNORECASE | re.MULTILINE),
}


def self_correction_markers(text: str) -> dict[str, int]:
    """How often each marker of :data:`SELF_CORRECTION_MARKERS` occurs in ``text``."""
    return {name: len(pattern.findall(text)) for name, pattern in SELF_CORRECTION_MARKERS.items()}


def words(text: str) -> list[str]:
    """Whitespace-separated words: a unit that does not depend on either model's tokenizer."""
    return text.split()


def repeated_ngram_rate(items: Sequence, n: int = 4) -> float:
    """Share of the n-grams of ``items`` that repeat an earlier one: ``1 - distinct / total``.

    0 for fewer than ``n`` items. A text that loops on one phrase tends to 1.
    """
    grams = [tuple(items[i:i + n]) for i in range(len(items) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def longest_repeat(items: Sequence, max_period: int = 8) -> tuple[int, int]:
    """The longest run of back-to-back copies of one unit: ``(period, copies)``.

    A unit is 1..``max_period`` consecutive items; ``copies`` counts the unit itself, so a text with
    no repetition gives ``(1, 1)`` (``(0, 0)`` when empty). Ties keep the shortest period.
    """
    best = (0, 0) if not items else (1, 1)
    for period in range(1, max_period + 1):
        for start in range(0, max(len(items) - 2 * period + 1, 0)):
            unit = items[start:start + period]
            copies = 1
            while items[start + copies * period:start + (copies + 1) * period] == unit:
                copies += 1
            if copies > best[1]:
                best = (period, copies)
    return best


def has_loop(text: str, max_period: int = 8, min_copies: int = 3) -> bool:
    """A loop: some unit of 1..``max_period`` words written ``min_copies`` or more times in a row."""
    return longest_repeat(words(text), max_period)[1] >= min_copies


def text_symptoms(texts: Sequence[str], finished_eos: Sequence[bool], *, ngram: int = 4, max_period: int = 8,
                  min_copies: int = 3) -> dict[str, float]:
    """Self-correction and local-degradation rates of a set of completions.

    Returns rates over completions: ``self_correction_rate`` (any marker), ``check_step_rate``
    (an arith check step), ``markers_per_completion``, one ``marker/<name>`` mean count per marker;
    ``repeated_ngram_rate`` (mean over completions, word n-grams), ``loop_rate`` (:func:`has_loop`),
    ``truncation_rate`` (stopped by the token budget, not by EOS), ``mean_words``.
    """
    if len(texts) != len(finished_eos):
        raise ValueError(f"{len(texts)} texts but {len(finished_eos)} finished flags")
    if not texts:
        raise ValueError("text_symptoms needs at least one completion")
    counts = [self_correction_markers(t) for t in texts]
    n = len(texts)
    result = {
        "self_correction_rate": sum(any(c.values()) for c in counts) / n,
        "check_step_rate": sum(c["check step"] > 0 for c in counts) / n,
        "markers_per_completion": sum(sum(c.values()) for c in counts) / n,
    }
    for name in SELF_CORRECTION_MARKERS:
        result[f"marker/{name}"] = sum(c[name] for c in counts) / n
    result["repeated_ngram_rate"] = float(np.mean([repeated_ngram_rate(words(t), ngram) for t in texts]))
    result["loop_rate"] = sum(has_loop(t, max_period, min_copies) for t in texts) / n
    result["truncation_rate"] = 1.0 - float(np.mean(np.asarray(finished_eos, bool)))
    result["mean_words"] = float(np.mean([len(words(t)) for t in texts]))
    return result


def answer_symptoms(confidences: Sequence[float], correct: Sequence[bool], *, n_bins: int = 10,
                    threshold: float = 0.9) -> dict[str, object]:
    """Accuracy, ECE (with its reliability bins) and overconfidence of a set of answers."""
    ece, bins = expected_calibration_error(confidences, correct, n_bins)
    conf = np.asarray(confidences, np.float64)
    return {"accuracy": float(np.mean(np.asarray(correct, bool))) if len(correct) else float("nan"),
            "answered_rate": float(np.mean(~np.isnan(conf))) if conf.size else float("nan"),
            "mean_confidence": float(np.nanmean(conf)) if np.isfinite(conf).any() else float("nan"),
            "ece": ece, "reliability": bins, **overconfidence(confidences, correct, threshold)}


def difference(after: Mapping[str, float], before: Mapping[str, float]) -> dict[str, float]:
    """``after - before`` for every numeric key both hold (e.g. student minus teacher rates)."""
    return {k: float(after[k]) - float(before[k]) for k in after
            if k in before and isinstance(after[k], (int, float)) and isinstance(before[k], (int, float))}


# ============================================================================ reductions of diagnose's per-token arrays

def _masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
    mask = np.broadcast_to(mask.reshape(mask.shape + (1,) * (values.ndim - mask.ndim)), values.shape)
    return float(np.sum(values * mask) / max(mask.sum(), 1))


def _per_k_mean(values: np.ndarray, mask: np.ndarray) -> list[float]:
    """[N, C, K] masked over [N, C] -> K means per token."""
    return [float(np.sum(values[..., j] * mask) / max(mask.sum(), 1)) for j in range(values.shape[-1])]


def token_level_report(stats: Mapping[str, np.ndarray], ks: Sequence[int], sampler_is_teacher: bool
                       ) -> dict[str, Any]:
    """Token-level numbers of one sample source (same tokenizer)."""
    mask = stats["mask"]
    forward_total = np.sum(stats["forward_kl"] * mask)
    reverse_total = np.sum(stats["reverse_kl"] * mask)

    def share(part: str, total: float) -> list[float | None]:
        sums = [float(np.sum(stats[part][..., j] * mask)) for j in range(len(ks))]
        return [s / total if total > 0 else None for s in sums]

    own = "teacher_logprob" if sampler_is_teacher else "student_logprob"
    other = "student_logprob" if sampler_is_teacher else "teacher_logprob"
    sampler_kl = stats["forward_kl"] if sampler_is_teacher else stats["reverse_kl"]
    log_ratio = np.asarray(sequence_log_ratio(stats[own], stats[other], mask))
    token_sum = np.sum(sampler_kl * mask, axis=-1)
    valid = mask.astype(bool)
    return {
        "forward_kl": _masked_mean(stats["forward_kl"], mask),
        "reverse_kl": _masked_mean(stats["reverse_kl"], mask),
        "teacher_entropy": _masked_mean(stats["teacher_entropy"], mask),
        "student_entropy": _masked_mean(stats["student_entropy"], mask),
        "split": {
            "k": list(ks),
            "forward_head": _per_k_mean(stats["forward_head"], mask),
            "forward_tail": _per_k_mean(stats["forward_tail"], mask),
            "forward_tail_share": share("forward_tail", forward_total),
            "reverse_head": _per_k_mean(stats["reverse_head"], mask),
            "reverse_tail": _per_k_mean(stats["reverse_tail"], mask),
            "reverse_tail_share": share("reverse_tail", reverse_total),
            "teacher_top_k_mass": _per_k_mean(stats["teacher_top_k_mass"], mask),
        },
        "sequence": {
            "direction": "KL(teacher || student)" if sampler_is_teacher else "KL(student || teacher)",
            "sequence_kl_estimate": float(np.mean(log_ratio)),
            "sequence_kl_estimate_std": float(np.std(log_ratio)),
            "token_kl_sum": float(np.mean(token_sum)),
            "token_kl_sum_std": float(np.std(token_sum)),
            "mean_tokens": float(np.mean(mask.sum(-1))),
        },
        "concentration": {"forward_kl": kl_concentration(stats["forward_kl"][valid]),
                          "reverse_kl": kl_concentration(stats["reverse_kl"][valid])},
    }


def likelihood_report(teacher_lp: np.ndarray, student_lp: np.ndarray, byte_lengths: np.ndarray, mask: np.ndarray,
                      ) -> dict[str, float]:
    """Per-byte log-likelihoods of both models and their gap (teacher - student), mean over sequences.

    Also the binarised chosen-event KLs (``distill.losses.binarised_divergence``) over the same events
    (tokens or spans) and the mean absolute log-prob gap per event."""
    teacher_pb = np.asarray(per_byte_loglik(teacher_lp, byte_lengths, mask))
    student_pb = np.asarray(per_byte_loglik(student_lp, byte_lengths, mask))
    events = mask.astype(bool)
    t, s = jnp.asarray(np.where(events, teacher_lp, -0.69)), jnp.asarray(np.where(events, student_lp, -0.69))
    return {
        "teacher_per_byte": float(np.mean(teacher_pb)),
        "student_per_byte": float(np.mean(student_pb)),
        "gap_per_byte": float(np.mean(teacher_pb - student_pb)),
        "event_forward_kl": float(np.asarray(binarised_divergence(s, t, "forward_kl"))[events].mean())
        if events.any() else None,
        "event_reverse_kl": float(np.asarray(binarised_divergence(s, t, "reverse_kl"))[events].mean())
        if events.any() else None,
        "event_abs_gap": float(np.abs(teacher_lp - student_lp)[events].mean()) if events.any() else None,
    }
