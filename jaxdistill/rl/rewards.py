"""Rewards of a batch of rollouts: the task verifier and the calibration reward against a proxy.

``task_rewards``: decode each completion and ask the task's verifier (reward in [0, 1] + status).

``CalibrationScorer``: the proxy student (frozen, or learning: ``jaxdistill.rl.proxy``) reads the
teacher's completions with its own tokenizer. The teacher's completion tokens are turned into bytes,
re-tokenized by the proxy (``jaxdistill.align.align_retokenized``), scored by one proxy forward pass,
and compared:

- ``span`` mode: per aligned span, the gap between log p_teacher(span) and log p_proxy(span);
  r_cal = -(mean gap) (``jaxdistill.rl.calibration.span_calibration_reward``);
- ``sequence`` mode: the proxy's log-prob per byte of the completion, optionally minus the reference
  teacher's (``sequence_calibration_reward``);
- ``alm`` mode: as ``span``, with the binary KL of the span probabilities as the gap;
- ``influence`` mode (this project's extension, not the paper's): r_cal = -harm, the harm score of
  ``jaxdistill.rl.influence`` on the same re-tokenized batch, along the direction of gold validation
  text (``refresh_direction``).

Higher r_cal always means "easier for the proxy to match"; eta applies the sign upstream.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxdistill.align import SpanAlignment, align_retokenized
from jaxdistill.distributed import to_host
from jaxdistill.generation.batched import plain_scoring, score_completions
from jaxdistill.generation.sampler import bucket_length, left_pad
from jaxdistill.generation.tokenized_model import TokenizedModel, check_pair
from jaxdistill.models.qwen import Qwen
from jaxdistill.rl.calibration import calibration_metrics, sequence_calibration_reward, span_calibration_reward
from jaxdistill.rl.influence import DirectionEstimate, ProxyBatch, estimate_direction, harm_scores, split_proxy
from jaxdistill.sharding import shard_rows
from jaxdistill.tasks.base import Example, Task, Verdict
from jaxdistill.tokenizer import Tokenizer

log = logging.getLogger(__name__)

CALIBRATION_MODES = ("span", "sequence", "alm", "influence")


def task_rewards(task: Task, completions: Sequence[str], examples: Sequence[Example]) -> list[Verdict]:
    """The verifier's verdict on each completion (examples aligned with completions)."""
    if len(completions) != len(examples):
        raise ValueError(f"{len(completions)} completions but {len(examples)} examples")
    return [task.verify(c, e) for c, e in zip(completions, examples)]


def _pad_to(array: np.ndarray, width: int, value) -> np.ndarray:
    if array.shape[1] >= width:
        return array[:, :width]
    pad = np.full((array.shape[0], width - array.shape[1]), value, array.dtype)
    return np.concatenate([array, pad], axis=1)


class CalibrationScorer:
    """r_cal of teacher completions measured against a proxy with its own tokenizer. It only measures:
    a learning proxy (``jaxdistill.rl.proxy.ProxyLearner``) is stepped by the loop on the proxy batch
    each call returns, after scoring, so the reward measures the proxy before that batch."""

    def __init__(self, proxy: Qwen, proxy_tokenizer: Tokenizer, teacher_tokenizer: Tokenizer, *,
                 mode: str = "span", tau: float = 1.0, subtract_reference: bool = False,
                 prompt_width: int | None = None, completion_width: int | None = None,
                 validation: Sequence[ProxyBatch] = (), mesh: Mesh | None = None):
        if mode not in CALIBRATION_MODES:
            raise ValueError(f"calibration_mode must be one of {CALIBRATION_MODES}, got {mode!r}")
        if mode == "influence" and not validation:
            raise ValueError("calibration_mode=influence needs gold validation text (``validation``: "
                             "jaxdistill.rl.influence.validation_batches) for the direction of harm")
        check_pair(proxy.config, proxy_tokenizer, "proxy")
        self.proxy = TokenizedModel.of(proxy_tokenizer, model=proxy)  # it reads with its own tokenizer
        self.teacher_tokenizer = teacher_tokenizer
        self.mode, self.tau, self.subtract_reference = mode, tau, subtract_reference
        self.proxy_scoring = plain_scoring(proxy_tokenizer.vocab_size)
        # Fixed proxy shapes (None: a bucket per batch). The completion width only ever grows (to the
        # bucket of a longer re-tokenization than seen so far), so each growth compiles once.
        self.prompt_width = prompt_width
        self.completion_width = completion_width
        self.mesh = mesh  # the proxy's inputs are split over its batch axes, as the rollouts are
        self.validation = [shard_rows(batch, mesh) for batch in validation]
        self.direction: DirectionEstimate | None = None  # influence mode: set by refresh_direction

    def refresh_direction(self) -> DirectionEstimate:
        """Influence mode: the direction u of gold validation text under the proxy as it is now (call again
        after the proxy learns), and its stability (``jaxdistill.rl.influence.estimate_direction``)."""
        graphdef, params, rest = split_proxy(self.proxy.model)
        self.direction = estimate_direction(params, graphdef, rest, self.validation, self.proxy.vocab_size)
        return self.direction

    def harm(self, proxy_batch: ProxyBatch) -> jax.Array:
        """harm_i of every row of ``proxy_batch`` along the current direction (float [N])."""
        if self.direction is None:
            self.refresh_direction()
        graphdef, params, rest = split_proxy(self.proxy.model)
        return harm_scores(params, graphdef, rest, self.direction.direction, proxy_batch, self.proxy.vocab_size)

    def proxy_inputs(self, prompt_texts: Sequence[str], proxy_ids: np.ndarray, proxy_mask: np.ndarray
                     ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
        """(prompt_ids [N, P], prompt_mask [N, P], tokens [N, T_b], mask [N, T_b]) for the proxy: its own
        tokenization of the prompts, left-padded, and the completion tokens padded with its pad id."""
        pad = self.proxy.pad_id
        prompts = [self.proxy.tokenizer.encode(t) for t in prompt_texts]
        longest = max(map(len, prompts))
        if self.prompt_width is not None and longest > self.prompt_width:
            raise ValueError(f"a prompt takes {longest} proxy tokens but the proxy's prompt width is "
                             f"{self.prompt_width}")
        prompt_ids, prompt_mask = left_pad(prompts, self.prompt_width or bucket_length(longest), pad)
        tokens = np.where(proxy_mask, proxy_ids, pad).astype(np.int32)
        return shard_rows((prompt_ids, prompt_mask, tokens, proxy_mask.astype(np.int32)), self.mesh)

    def __call__(self, prompt_texts: Sequence[str], completion_ids: Sequence[Sequence[int]],
                 teacher_logprobs: jax.Array, reference_logprobs: jax.Array | None = None
                 ) -> tuple[np.ndarray, dict[str, float], tuple[jax.Array, ...]]:
        """Calibration rewards [N], batch metrics, and the proxy's inputs (``proxy_inputs``: what a
        learning proxy trains on).

        prompt_texts: N prompt strings (repeated per generation); completion_ids: N teacher token rows
        (EOS allowed: special tokens hold no bytes); teacher_logprobs [N, C] log p_teacher of those
        tokens (C >= every row's length); reference_logprobs [N, C] (sequence mode with
        ``subtract_reference``).
        """
        width = teacher_logprobs.shape[1]
        fixed = self.completion_width is not None
        alignment = align_retokenized(self.teacher_tokenizer, completion_ids, self.proxy.tokenizer,
                                      min_widths=(width, self.completion_width) if fixed else None)
        longest = max(int(alignment.mask_b.sum(1).max(initial=0)), 1)
        if fixed and longest > self.completion_width:
            self.completion_width = bucket_length(longest)
            log.info("proxy completion width grows to %d tokens (a completion re-tokenized into %d): the proxy's "
                     "programs compile once more", self.completion_width, longest)
        proxy_width = self.completion_width if fixed else bucket_length(longest)
        proxy_ids = _pad_to(alignment.ids_b, proxy_width, 0)
        proxy_mask = _pad_to(alignment.mask_b, proxy_width, False)
        proxy_batch = self.proxy_inputs(prompt_texts, proxy_ids, proxy_mask)
        proxy_lp = score_completions(self.proxy.model, *proxy_batch, self.proxy_scoring, lora=False, chunk_size=128)
        spans = alignment.spans
        capacity = min(width, proxy_width)
        aligned = SpanAlignment(
            span_ids_a=jnp.asarray(_pad_to(spans.span_ids_a, width, -1)),
            span_ids_b=jnp.asarray(_pad_to(spans.span_ids_b, proxy_width, -1)),
            num_spans=jnp.asarray(spans.num_spans), aligned_bytes=jnp.asarray(spans.aligned_bytes),
            total_bytes_a=jnp.asarray(spans.total_bytes_a), total_bytes_b=jnp.asarray(spans.total_bytes_b),
            bytes_match=jnp.asarray(spans.bytes_match), fully_aligned=jnp.asarray(spans.fully_aligned))
        exact = _pad_to(alignment.exact_spans, capacity, False)
        harm = None
        if self.mode == "influence":  # the same proxy tokens as the other modes, per byte of the teacher's text
            num_bytes = shard_rows(np.asarray(spans.total_bytes_a, np.int32), self.mesh)
            harm = self.harm(ProxyBatch(*proxy_batch, num_bytes=num_bytes))
            reward = -harm
            calibration = span_calibration_reward(teacher_logprobs, proxy_lp, aligned, span_weights=exact)
        elif self.mode == "sequence":
            mask_a = _pad_to(alignment.mask_a, width, False)
            reward = sequence_calibration_reward(
                proxy_lp, jnp.asarray(proxy_mask), jnp.asarray(spans.total_bytes_a),
                reference_logprobs if self.subtract_reference else None,
                jnp.asarray(mask_a) if self.subtract_reference else None)
            calibration = span_calibration_reward(teacher_logprobs, proxy_lp, aligned, span_weights=exact)
        else:
            calibration = span_calibration_reward(teacher_logprobs, proxy_lp, aligned, span_weights=exact,
                                                  gap="alm" if self.mode == "alm" else "abs", tau=self.tau)
            reward = calibration.reward
        metrics = {k: float(v) for k, v in calibration_metrics(aligned, calibration).items()}
        proxy_count = np.maximum(proxy_mask.sum(1), 1)
        proxy_sums = to_host(proxy_lp).sum(1)  # gathered from every process in multi-process runs
        metrics["calibration/proxy_logprob_per_token"] = float(np.mean(proxy_sums / proxy_count))
        metrics["calibration/proxy_logprob_per_byte"] = float(np.mean(proxy_sums / np.maximum(spans.total_bytes_a, 1)))
        metrics["calibration/byte_mismatches"] = float(len(alignment.mismatches))
        if harm is not None:
            harm_host = to_host(harm)
            metrics.update({"calibration/harm_mean": float(np.mean(harm_host)),
                            "calibration/harm_std": float(np.std(harm_host)),
                            "calibration/direction_stability": self.direction.stability,
                            "calibration/validation_loss": self.direction.loss,
                            "calibration/validation_grad_norm": self.direction.grad_norm})
        return to_host(reward).astype(np.float32), metrics, proxy_batch


def describe_verdicts(verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """Batch accuracy and unparseable rate of a list of verdicts."""
    rewards = np.array([v.reward for v in verdicts], np.float32)
    return {"rewards/task/mean": float(rewards.mean()) if len(rewards) else 0.0,
            "rewards/task/unparseable": float(np.mean([v.status == "unparseable" for v in verdicts]))}
