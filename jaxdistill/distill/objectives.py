"""What each student objective minimises, computed from the models on a batch (pure JAX, jit-able).

A batch holds prompts (left-padded) and completions (right-padded), once under the student's
tokenizer and, for the teacher-scored objectives, once under the teacher's (``DistillBatch``). Only
completion tokens are trained: the prompt conditions both models and never enters a loss.

Three losses cover the four objectives (the maths is in :mod:`jaxdistill.distill.losses`):

- ``nll`` (sft, seqkd): ``mean_t -log p_S(y_t)`` over completion tokens (:func:`losses.token_nll`);
- ``token_kd`` (kd, gkd with one tokenizer): ``mean_t D(p_S(.|y_<t), p_T(.|y_<t))`` over completion
  tokens, full next-token distributions cut to the shared real vocabulary, with temperature and
  optional teacher top-k (:func:`losses.kd_token_divergence`);
- ``span_kd`` (kd, gkd across tokenizers): completions aligned into byte spans; per span both models'
  log p(span) = sum of their token log-probs, compared by :func:`losses.span_kd_loss`.

Logits are formed ``chunk_size`` completion positions at a time, each chunk rematerialised in the
backward pass, so no ``[N, C, V]`` tensor exists at once (as in ``generation.scoring``). The teacher
runs inside the same program under ``stop_gradient``.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp
from flax import struct

from jaxdistill.align import span_logprobs
from jaxdistill.distill import losses
from jaxdistill.generation.scoring import completion_hidden, map_completion_chunks
from jaxdistill.models.qwen import Qwen
from jaxdistill.token_maths import masked_mean, token_logprobs

LOSS_KINDS = ("nll", "token_kd", "span_kd")


@struct.dataclass
class Sequences:
    """Prompts and completions under one tokenizer.

    prompt_ids, prompt_mask: [N, P] int32, left-padded; tokens, mask: [N, C] int32, right-padded
    (mask is 1 on the completion tokens that are trained, EOS included).
    """

    prompt_ids: jax.Array
    prompt_mask: jax.Array
    tokens: jax.Array
    mask: jax.Array


@struct.dataclass
class DistillBatch:
    """One training batch.

    student: what the student reads and is trained on.
    teacher: the same completions under the teacher's tokenizer (None for sft / seqkd). With one
      shared tokenizer it holds the same ids as ``student``.
    student_span_ids [N, C_s], teacher_span_ids [N, C_t]: span of each completion token, -1 for none
      (span_kd only); span_mask [N, S] bool: spans that enter the loss.
    """

    student: Sequences
    teacher: Optional[Sequences] = None
    student_span_ids: Optional[jax.Array] = None
    teacher_span_ids: Optional[jax.Array] = None
    span_mask: Optional[jax.Array] = None


@dataclasses.dataclass(frozen=True)
class LossSettings:
    """Static settings of a loss (hashable: part of the jit cache key).

    kind: "nll" | "token_kd" | "span_kd".
    divergence: "forward_kl" | "reverse_kl" | "jsd" (token_kd and span_kd).
    beta: generalized-JSD interpolation, TRL convention (0 = forward KL, 1 = reverse KL).
    temperature: both models' logits are divided by it before the divergence.
    top_k: 0 = full shared vocabulary; k keeps the teacher's k most likely tokens (token_kd).
    student_vocab_size / teacher_vocab_size: real tokenizer sizes; padded logit rows are dropped.
    chunk_size: completion positions per logits chunk.
    """

    kind: str = "nll"
    divergence: str = "forward_kl"
    beta: float = 0.5
    temperature: float = 1.0
    top_k: int = 0
    student_vocab_size: Optional[int] = None
    teacher_vocab_size: Optional[int] = None
    chunk_size: int = 128

    def __post_init__(self):
        if self.kind not in LOSS_KINDS:
            raise ValueError(f"loss kind must be one of {LOSS_KINDS}, got {self.kind!r}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


def _hidden(model: Qwen, seqs: Sequences) -> jax.Array:
    """Final hidden states predicting each completion token: [N, C, D]."""
    return completion_hidden(model, seqs.prompt_ids, seqs.prompt_mask, seqs.tokens, seqs.mask)


def nll_per_token(student: Qwen, seqs: Sequences, settings: LossSettings) -> jax.Array:
    """``-log p_S(y_t)`` of every completion token, [N, C] (values on padding are meaningless)."""
    return map_completion_chunks(
        lambda h, y: losses.token_nll(student.logits(h), y, vocab_size=settings.student_vocab_size),
        settings.chunk_size, _hidden(student, seqs), seqs.tokens)


def token_kd_per_token(student: Qwen, teacher: Qwen, student_seqs: Sequences, teacher_seqs: Sequences,
                       settings: LossSettings) -> jax.Array:
    """Per-token ``D(p_S, p_T)`` along the completions, [N, C] (0 on padding).

    Both sequences hold the same ids (one tokenizer; the teacher's may be a copy with another prompt
    rendering); the logits are cut to the shared real vocabulary.
    """
    student_hidden = _hidden(student, student_seqs)
    teacher_hidden = jax.lax.stop_gradient(_hidden(teacher, teacher_seqs))

    def chunk(hs, ht, m):
        return losses.kd_token_divergence(
            student.logits(hs), jax.lax.stop_gradient(teacher.logits(ht)), m,
            divergence_kind=settings.divergence, beta=settings.beta, temperature=settings.temperature,
            top_k=settings.top_k or None, student_vocab_size=settings.student_vocab_size,
            teacher_vocab_size=settings.teacher_vocab_size)

    return map_completion_chunks(chunk, settings.chunk_size, student_hidden, teacher_hidden, student_seqs.mask)


def completion_token_logprobs(model: Qwen, seqs: Sequences, *, vocab_size: Optional[int], temperature: float,
                              chunk_size: int) -> jax.Array:
    """``log softmax(z[..., :vocab_size] / temperature)[y_t]`` of every completion token, [N, C]; 0 on padding."""
    logp = map_completion_chunks(
        lambda h, y: token_logprobs(model.logits(h)[..., :vocab_size], y, temperature),
        chunk_size, _hidden(model, seqs), seqs.tokens)
    return jnp.where(seqs.mask.astype(bool), logp, 0.0)


def span_log_likelihoods(student: Qwen, teacher: Qwen, batch: DistillBatch, settings: LossSettings
                         ) -> tuple[jax.Array, jax.Array]:
    """``(log p_S(span), log p_T(span))``, each [N, S]: token log-probs summed into aligned spans."""
    num_spans = batch.span_mask.shape[1]
    student_logp = completion_token_logprobs(student, batch.student, vocab_size=settings.student_vocab_size,
                                             temperature=settings.temperature, chunk_size=settings.chunk_size)
    teacher_logp = jax.lax.stop_gradient(completion_token_logprobs(
        teacher, batch.teacher, vocab_size=settings.teacher_vocab_size, temperature=settings.temperature,
        chunk_size=settings.chunk_size))
    return (span_logprobs(student_logp, batch.student_span_ids, num_spans),
            span_logprobs(teacher_logp, batch.teacher_span_ids, num_spans))


def distill_loss(student: Qwen, teacher: Optional[Qwen], batch: DistillBatch, settings: LossSettings
                 ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The objective's scalar loss and metrics (``tokens``: trained completion tokens; ``spans``)."""
    mask = batch.student.mask
    metrics = {"tokens": mask.sum().astype(jnp.float32)}
    if settings.kind == "nll":
        loss = masked_mean(nll_per_token(student, batch.student, settings), mask)
    elif settings.kind == "token_kd":
        loss = masked_mean(token_kd_per_token(student, teacher, batch.student, batch.teacher, settings), mask)
    else:
        student_spans, teacher_spans = span_log_likelihoods(student, teacher, batch, settings)
        loss = losses.span_kd_loss(student_spans, teacher_spans, batch.span_mask,
                                   divergence_kind=settings.divergence, beta=settings.beta)
        metrics["spans"] = batch.span_mask.sum().astype(jnp.float32)
    return loss, metrics
