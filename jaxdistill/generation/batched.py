"""Sampling and scoring many prompts in batches: the one layer calibration's eval, evaluation and diagnosis
share.

- :func:`sample_batched`: completions of a list of prompts, ``batch_size`` prompts per ``generate`` call;
- :func:`logprobs_batched`: each completion token's log-prob under a model (teacher forcing);
- :func:`verify` / :func:`score_model`: the task verifier on sampled completions, and accuracy,
  unparseable rate, length and EOS rate of a model on examples.

Batches: ``n`` prompts are split evenly into ``ceil(n / batch_size)`` calls of one size, the last padded
with copies of its last prompt, so one program is compiled and little is padded (100 prompts at
``batch_size=64``: two calls of 50, not 64 + 64). The call that starts at prompt ``s`` samples with seed
``seed * 1_000_003 + s`` (calibration's step seeds are made the same way), so no two calls draw the same
random stream and a prompt's completions do not depend on how many prompts come after it in its call.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from jaxdistill.generation.sampler import SamplingParams, bucket_length, generate, left_pad
from jaxdistill.generation.scoring import completion_logprobs
from jaxdistill.generation.tokenized_model import TokenizedModel
from jaxdistill.tasks.base import Example, Task, Verdict, summarize


@dataclasses.dataclass
class Samples:
    """Completions of a list of prompts, prompt-major: ``num_generations`` rows per prompt."""

    ids: list[list[int]]  # completion ids, EOS included when the row finished
    finished: np.ndarray  # bool [N]: ended on EOS (else cut at max_new_tokens)
    prompt_index: np.ndarray  # int [N]: which prompt each row completes

    @property
    def lengths(self) -> np.ndarray:
        """int [N]: generated tokens per row, EOS included."""
        return np.array([len(row) for row in self.ids], np.int64)

    def without_eos(self) -> list[list[int]]:
        """Completion ids with the final EOS of finished rows dropped."""
        return [row[:-1] if done else row for row, done in zip(self.ids, self.finished)]


def even_batches(n: int, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
    """``(indices, real)`` per call: ``ceil(n / batch_size)`` calls of one size ``ceil(n / calls)``; the last
    call's indices are padded by repeating its last index, ``real`` counts the indices that are not."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if n == 0:
        return
    calls = -(-n // batch_size)
    size = -(-n // calls)
    for start in range(0, n, size):
        rows = list(range(start, min(start + size, n)))
        yield np.array(rows + [rows[-1]] * (size - len(rows))), len(rows)


def call_seed(seed: int, start: int) -> int:
    """Sampling seed of the call whose first prompt is number ``start``."""
    return seed * 1_000_003 + start


def sample_batched(lm: TokenizedModel, prompts: Sequence[Sequence[int]], *, batch_size: int, max_new_tokens: int,
                   temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, num_generations: int = 1,
                   seed: int = 0, mesh: Mesh | None = None, lora: bool = True) -> Samples:
    """``num_generations`` completions of every prompt (token ids), ``batch_size`` prompts per call at most.

    Stops on ``lm.eos_id``, pads with ``lm.pad_id``, never samples past ``lm.vocab_size``; ``lora=False``
    samples the base weights of a model with adapters.
    """
    ids, finished, index = [], [], []
    for rows, real in even_batches(len(prompts), batch_size):
        start = int(rows[0])
        out = generate(lm.model, [prompts[i] for i in rows], max_new_tokens=max_new_tokens, temperature=temperature,
                       top_p=top_p, top_k=top_k, seed=call_seed(seed, start), eos_ids=[lm.eos_id],
                       num_generations=num_generations, pad_id=lm.pad_id, vocab_limit=lm.vocab_size, mesh=mesh,
                       lora=lora)
        kept = real * num_generations
        ids += out.completions()[:kept]
        finished += np.asarray(out.finished_eos)[:kept].tolist()
        index += [start + i // num_generations for i in range(kept)]
    return Samples(ids, np.asarray(finished, bool), np.asarray(index, np.int64))


# completion_logprobs compiled once per (shape, scoring settings, adapters on/off)
score_completions = jax.jit(completion_logprobs, static_argnames=("params", "lora", "chunk_size"))


def plain_scoring(vocab_limit: int | None) -> SamplingParams:
    """Score under the model's own softmax (temperature 1, no filter, nothing banned)."""
    return SamplingParams(max_new_tokens=1, temperature=1.0, pad_id=-1, vocab_limit=vocab_limit)


def right_pad(rows: Sequence[Sequence[int]], width: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ids int32 [N, width] and mask bool [N, width] (rows longer than ``width`` are cut)."""
    ids = np.full((len(rows), width), pad_id, np.int32)
    mask = np.zeros((len(rows), width), bool)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row[:width]
        mask[i, :min(len(row), width)] = True
    return ids, mask


def logprobs_batched(lm: TokenizedModel, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
                     width: int, *, batch_size: int, lora: bool = True) -> np.ndarray:
    """``log p(y_t | prompt, y_<t)`` of every completion token under ``lm``'s plain softmax: float [N, width]
    (0 past each row's end). ``prompts[i]`` conditions ``completions[i]``; rows are scored ``batch_size`` at a
    time (the last batch padded with repeats)."""
    prompt_ids, prompt_mask = left_pad(prompts, bucket_length(max(len(p) for p in prompts)), lm.pad_id)
    tokens, mask = right_pad(completions, width, lm.pad_id)
    params = plain_scoring(lm.vocab_size)
    parts = []
    for rows, real in even_batches(len(completions), batch_size):
        lp = score_completions(lm.model, jnp.asarray(prompt_ids[rows]), jnp.asarray(prompt_mask[rows]),
                               jnp.asarray(tokens[rows]), jnp.asarray(mask[rows].astype(np.int32)), params,
                               lora=lora, chunk_size=128)
        parts.append(np.asarray(lp)[:real])
    return np.concatenate(parts)


def verify(lm: TokenizedModel, task: Task, examples: Sequence[Example], samples: Samples) -> list[Verdict]:
    """The task verifier's verdict on each sampled completion (its text, special tokens dropped)."""
    return [task.verify(lm.text(row), examples[i]) for row, i in zip(samples.ids, samples.prompt_index)]


def score_model(lm: TokenizedModel, task: Task, examples: Sequence[Example], *, max_new_tokens: int = 256,
                temperature: float = 0.0, samples_per_prompt: int = 1, top_p: float = 1.0, seed: int = 0,
                batch_size: int = 64, mesh: Mesh | None = None, lora: bool = True,
                keep_completions: bool = False) -> dict[str, Any]:
    """Accuracy (avg@k when sampling, k = ``samples_per_prompt``; greedy uses 1), unparseable rate, mean
    response length in tokens (EOS included) and the rate of completions that ended on EOS."""
    k = samples_per_prompt if temperature > 0 else 1
    samples = sample_batched(lm, [lm.prompt(task, e) for e in examples], batch_size=batch_size,
                             max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                             num_generations=k, seed=seed, mesh=mesh, lora=lora)
    verdicts = verify(lm, task, examples, samples)
    summary = summarize(verdicts)
    result = {"accuracy": summary["accuracy"], "unparseable_rate": summary["unparseable_rate"],
              "mean_length": float(np.mean(samples.lengths)), "finished_rate": float(np.mean(samples.finished)),
              "n": len(examples), "samples_per_prompt": k}
    if keep_completions:
        result["completions"] = [lm.text(row) for row in samples.ids]
    return result
