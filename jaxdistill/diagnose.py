"""``python -m jaxdistill.diagnose``: why does a student fail to learn from a teacher?

    python -m jaxdistill.diagnose --teacher runs/tiny/teacher --student runs/kd/model --task arith
    python -m jaxdistill.diagnose teacher=T student=S task=gsm8k data_path=data/gsm8k num_prompts=128
    python -m jaxdistill.diagnose --help          # every field, documented

Both models sample completions of the same prompts: the teacher's are the *off-policy* sequences (what
KD trains on), the student's the *on-policy* ones (what the student will meet). Every completion is
scored under both models at temperature 1:

- same tokenizer (identical vocabularies): full next-token distributions, on the vocabulary sliced to
  the real tokenizer size: forward/reverse KL per token, their split over the teacher's top-k (tail
  noise), entropies, and the chosen tokens' log-probs;
- different tokenizers: the other model reads the completion re-tokenized with its own tokenizer,
  and the two are compared on aligned byte spans (``jaxdistill.align``): span log-probs, per-byte
  likelihoods, binarised span KL. Full-distribution KLs need a shared vocabulary and are left out.

Then the pure measurements of ``jaxdistill.diagnostics`` (divergences, teacher-student gap, answer
confidence and calibration, self-correction markers, loops, truncation) are written to
``<output_dir>/diagnostics.json``, ``diagnostics.md``, ``divergence.png`` and ``symptoms.png``.
:func:`load_diagnostics` and :func:`summary_numbers` give the same numbers back to reports.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sys
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdistill import diagnostics as dx
from jaxdistill.align import span_logprobs, align_retokenized
from jaxdistill import run_folder
from jaxdistill.config import EvalConfig, option, run_cli, to_dict
from jaxdistill.distill.losses import binarised_divergence
from jaxdistill.tasks import parse_task_options
from jaxdistill.generation import generate
from jaxdistill.generation.sampler import bucket_length, left_pad
from jaxdistill.generation.scoring import completion_hidden, completion_logprobs
from jaxdistill.models import Qwen, load_model
from jaxdistill.rl.rewards import plain_scoring
from jaxdistill.tasks import Example, Task, get_task, list_tasks
from jaxdistill.tasks.pipeline import prompt_text
from jaxdistill.tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger("jaxdistill.diagnose")

SOURCES = ("teacher_samples", "student_samples")  # off-policy, on-policy


@dataclasses.dataclass
class DiagnoseConfig(EvalConfig):
    """Every option of ``python -m jaxdistill.diagnose`` (YAML keys or ``key=value``)."""

    teacher: str = option("", "HF folder of the teacher")
    student: str = option("", "HF folder of the student")
    teacher_tokenizer: str = option("", "tokenizer folder of the teacher; empty = the teacher folder")
    student_tokenizer: str = option("", "tokenizer folder of the student; empty = the student folder")
    task: str = option("arith", "task name: " + " | ".join(list_tasks()), choices=list_tasks())
    task_options: tuple[str, ...] = option((), "key=value options for the task constructor, e.g. [difficulty=1]")
    data_path: str = option("", "local data file or folder of the task; empty = generated (arith) or the HF hub")
    num_prompts: int = option(64, "prompts (the first N of the split)", ge=1)
    temperature: float = option(1.0, "sampling temperature of both models (scoring is always at temperature 1)",
                                ge=0)
    max_completion_length: int = option(128, "token budget of each completion (hitting it counts as truncation)",
                                        ge=1)
    generation_batch_size: int = option(16, "sequences per sampling or scoring pass", ge=1)
    top_ks: tuple[int, ...] = option((1, 5, 20), "k values of the head/tail split of the KL (teacher's top-k)",
                                     ge=1)
    ngram: int = option(4, "n of the repeated word n-gram rate", ge=1)
    loop_period: int = option(8, "longest repeated unit (in words) that can form a loop", ge=1)
    loop_copies: int = option(3, "back-to-back copies of a unit that make a loop", ge=2)
    ece_bins: int = option(10, "bins of the expected calibration error of answer confidence", ge=1)
    confident_threshold: float = option(0.9, "answer confidence at or above which a wrong answer is 'confident'",
                                        ge=0, le=1)
    output_dir: str = option("runs/diagnose", "where diagnostics.json/.md and the plots go")
    plots: bool = option(True, "write divergence.png and symptoms.png")

    def validate(self) -> None:
        _check(self)
        super().validate()


# ---- models and data ----------------------------------------------------------------------------

@dataclasses.dataclass
class Party:
    """One model with its tokenizer and its rendering of the prompts."""

    name: str
    model: Qwen
    tokenizer: Tokenizer
    prompt_ids: list[list[int]]

    @property
    def pad_id(self) -> int:
        return self.tokenizer.pad_id if self.tokenizer.pad_id is not None else self.tokenizer.eos_id


@dataclasses.dataclass
class Samples:
    """Completions sampled by one party, one row per (prompt, sample)."""

    ids: list[list[int]]  # completion ids (EOS included)
    texts: list[str]  # decoded without special tokens (what the verifier reads)
    finished_eos: np.ndarray  # bool [N]
    example_index: np.ndarray  # int [N]: which prompt


def same_vocabulary(a: Tokenizer, b: Tokenizer) -> bool:
    """True when every token id means the same bytes on both sides (token-level KL is then defined)."""
    return a.path == b.path or (a.vocab_size == b.vocab_size and a.special_ids == b.special_ids
                                and a.token_bytes == b.token_bytes)


def load_party(name: str, model_dir: str, tokenizer_dir: str, dtype: str) -> tuple[Qwen, Tokenizer]:
    folder = Path(model_dir)
    if not (folder / "config.json").exists() and (folder / "model" / "config.json").exists():
        folder = folder / "model"  # a distill run folder
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{name}={model_dir!r} is not an HF model folder (no config.json)")
    model, config = load_model(folder, dtype=dtype)
    tokenizer = load_tokenizer(tokenizer_dir or folder)
    if tokenizer.vocab_size > config.vocab_size:
        raise ValueError(f"the {name} tokenizer has {tokenizer.vocab_size} tokens but the {name} model only "
                         f"{config.vocab_size} embedding rows: set {name}_tokenizer to the right folder")
    if tokenizer.eos_id is None:
        raise ValueError(f"the {name} tokenizer at {tokenizer.path} has no eos token")
    return model, tokenizer


def sample(party: Party, config: DiagnoseConfig) -> Samples:
    """``samples_per_prompt`` completions of every prompt, ``generation_batch_size // samples_per_prompt`` prompts
    at a time (the last batch is padded with repeats so every call has the same shape)."""
    tok = party.tokenizer
    per_call = max(1, config.generation_batch_size // config.samples_per_prompt)
    ids, finished, index = [], [], []
    for start in range(0, len(party.prompt_ids), per_call):
        chunk = party.prompt_ids[start:start + per_call]
        real = len(chunk)
        chunk = chunk + [chunk[-1]] * (per_call - real)
        out = generate(party.model, chunk, max_new_tokens=config.max_completion_length, temperature=config.temperature,
                       top_p=config.top_p, seed=config.seed * 1_000_003 + start, eos_ids=[tok.eos_id],
                       num_generations=config.samples_per_prompt, pad_id=party.pad_id, vocab_limit=tok.vocab_size)
        rows = real * config.samples_per_prompt
        ids += out.completions()[:rows]
        finished += np.asarray(out.finished_eos)[:rows].tolist()
        index += [start + i // config.samples_per_prompt for i in range(rows)]
    texts = [tok.decode(row, skip_special_tokens=True) for row in ids]
    return Samples(ids, texts, np.asarray(finished, bool), np.asarray(index, np.int64))


def _pad_rows(rows: Sequence[Sequence[int]], width: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded ids [N, width] and mask [N, width]."""
    ids = np.full((len(rows), width), pad_id, np.int32)
    mask = np.zeros((len(rows), width), bool)
    for i, row in enumerate(rows):
        ids[i, :len(row)] = row[:width]
        mask[i, :min(len(row), width)] = True
    return ids, mask


def _batches(n: int, batch_size: int):
    """(row indices padded to batch_size by repeating the last, number of real rows) per batch."""
    for start in range(0, n, batch_size):
        rows = list(range(start, min(start + batch_size, n)))
        yield np.array(rows + [rows[-1]] * (batch_size - len(rows))), len(rows)


# ---- scoring -------------------------------------------------------------------------------------

def _position_chunks(x: jax.Array, chunk: int) -> jax.Array:
    """[N, C, ...] -> [C // chunk, N, chunk, ...] (C a multiple of chunk)."""
    n, c = x.shape[:2]
    return jnp.moveaxis(x.reshape(n, c // chunk, chunk, *x.shape[2:]), 1, 0)


@partial(jax.jit, static_argnames=("ks", "vocab", "chunk"))
def _pair_token_stats(teacher: Qwen, student: Qwen, prompt_ids, prompt_mask, tokens, mask, *, ks, vocab, chunk):
    """Both models' next-token distributions at every completion position, reduced to per-token numbers.

    prompt_ids/prompt_mask [N, P] (left-padded, shared tokenizer), tokens/mask [N, C] (C a multiple of
    ``chunk``). Logits are formed ``chunk`` positions at a time and sliced to the ``vocab`` real ids.
    Returns a dict of [N, C] and [N, C, K] arrays (see ``diagnostics.token_divergences``) plus
    ``teacher_logprob``/``student_logprob`` of the chosen tokens.
    """
    hidden_t = completion_hidden(teacher, prompt_ids, prompt_mask, tokens, mask)
    hidden_s = completion_hidden(student, prompt_ids, prompt_mask, tokens, mask)

    def one_chunk(args):
        h_t, h_s, y = args
        logp_t = jax.nn.log_softmax(teacher.logits(h_t)[..., :vocab], axis=-1)
        logp_s = jax.nn.log_softmax(student.logits(h_s)[..., :vocab], axis=-1)
        stats = dx.token_divergences(logp_s, logp_t, ks)
        stats["teacher_logprob"] = jnp.take_along_axis(logp_t, y[..., None], axis=-1)[..., 0]
        stats["student_logprob"] = jnp.take_along_axis(logp_s, y[..., None], axis=-1)[..., 0]
        return stats

    per_chunk = jax.lax.map(one_chunk, (_position_chunks(hidden_t, chunk), _position_chunks(hidden_s, chunk),
                                        _position_chunks(tokens, chunk)))
    n, c = tokens.shape
    return jax.tree.map(lambda x: jnp.moveaxis(x, 0, 1).reshape(n, c, *x.shape[3:]), per_chunk)


_score = jax.jit(completion_logprobs, static_argnames=("params", "lora", "chunk_size"))


def _chunk_for(width: int, preferred: int = 64) -> int:
    """Largest divisor of ``width`` that is at most ``preferred``."""
    return max(d for d in range(1, min(width, preferred) + 1) if width % d == 0)


def score_same_tokenizer(teacher: Party, student: Party, samples: Samples, config: DiagnoseConfig
                         ) -> dict[str, np.ndarray]:
    """Per-token statistics [N, C] / [N, C, K] of both models on ``samples`` (one shared tokenizer)."""
    tok = teacher.tokenizer
    width = config.max_completion_length
    prompts = [teacher.prompt_ids[i] for i in samples.example_index]
    prompt_width = bucket_length(max(len(p) for p in prompts))
    tokens, mask = _pad_rows(samples.ids, width, teacher.pad_id)
    prompt_ids, prompt_mask = left_pad(prompts, prompt_width, teacher.pad_id)
    parts = []
    for rows, real in _batches(len(samples.ids), config.generation_batch_size):
        stats = _pair_token_stats(teacher.model, student.model, jnp.asarray(prompt_ids[rows]),
                                  jnp.asarray(prompt_mask[rows]), jnp.asarray(tokens[rows]),
                                  jnp.asarray(mask[rows].astype(np.int32)), ks=tuple(config.top_ks),
                                  vocab=min(tok.vocab_size, student.tokenizer.vocab_size), chunk=_chunk_for(width))
        parts.append({k: np.asarray(v)[:real] for k, v in stats.items()})
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out["mask"] = mask
    out["byte_lengths"] = np.where(mask, tok.token_byte_lengths[np.where(mask, tokens, 0)], 0)
    return out


def _own_logprobs(party: Party, prompts: Sequence[Sequence[int]], rows: Sequence[Sequence[int]], width: int,
                  batch_size: int) -> np.ndarray:
    """log p of each party's own completion tokens [N, width] under its plain softmax (0 on padding)."""
    prompt_ids, prompt_mask = left_pad(prompts, bucket_length(max(len(p) for p in prompts)), party.pad_id)
    tokens, mask = _pad_rows(rows, width, party.pad_id)
    params = plain_scoring(party.tokenizer.vocab_size)
    parts = []
    for batch, real in _batches(len(rows), batch_size):
        lp = _score(party.model, jnp.asarray(prompt_ids[batch]), jnp.asarray(prompt_mask[batch]),
                    jnp.asarray(tokens[batch]), jnp.asarray(mask[batch].astype(np.int32)), params, lora=True,
                    chunk_size=128)
        parts.append(np.asarray(lp)[:real])
    return np.concatenate(parts)


def score_cross_tokenizer(sampler: Party, other: Party, samples: Samples, config: DiagnoseConfig
                          ) -> dict[str, np.ndarray]:
    """Span-level scores of ``samples`` (written by ``sampler``) under both models.

    The other model reads the completion bytes re-tokenized with its own tokenizer, conditioned on its
    own rendering of the prompt. Returns span log-probs of both [N, S], span bytes [N, S], the exact
    span mask [N, S], the sampler's own token log-probs [N, C] and byte lengths [N, C], and the
    aligned byte fraction [N].
    """
    width = config.max_completion_length
    alignment = align_retokenized(sampler.tokenizer, samples.ids, other.tokenizer)
    if alignment.mismatches:
        first = "\n".join(str(m) for m in alignment.mismatches[:3])
        log.warning("%d byte mismatches between the two tokenizations of %s's samples (spans around them are "
                    "left out), e.g.\n%s", len(alignment.mismatches), sampler.name, first)
    sampler_lp = _own_logprobs(sampler, [sampler.prompt_ids[i] for i in samples.example_index], samples.ids, width,
                               config.generation_batch_size)
    other_rows = [row[m].tolist() for row, m in zip(alignment.ids_b, alignment.mask_b)]
    other_width = bucket_length(max(len(r) for r in other_rows))
    other_lp = _own_logprobs(other, [other.prompt_ids[i] for i in samples.example_index], other_rows, other_width,
                             config.generation_batch_size)
    width_a = alignment.ids_a.shape[1]
    capacity = alignment.num_span_slots
    spans = alignment.spans
    span_ids_b = np.full((len(other_rows), other_width), -1, np.int32)
    span_ids_b[:, :spans.span_ids_b.shape[1]] = spans.span_ids_b[:, :other_width]
    sampler_spans = span_logprobs(jnp.asarray(sampler_lp[:, :width_a]), jnp.asarray(spans.span_ids_a), capacity)
    other_spans = span_logprobs(jnp.asarray(other_lp), jnp.asarray(span_ids_b), capacity)
    span_bytes = span_logprobs(jnp.asarray(alignment.byte_lengths_a * alignment.mask_a, jnp.float32),
                               jnp.asarray(spans.span_ids_a), capacity)
    mask = _pad_rows(samples.ids, width, 0)[1]
    tokens = _pad_rows(samples.ids, width, 0)[0]
    return {"sampler_span_logprob": np.asarray(sampler_spans), "other_span_logprob": np.asarray(other_spans),
            "span_bytes": np.asarray(span_bytes), "span_mask": np.asarray(alignment.exact_spans),
            "sampler_logprob": sampler_lp, "mask": mask,
            "byte_lengths": np.where(mask, sampler.tokenizer.token_byte_lengths[tokens], 0),
            "aligned_byte_fraction": np.asarray(alignment.aligned_byte_fraction)}


# ---- reductions ------------------------------------------------------------------------------------

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
    log_ratio = np.asarray(dx.sequence_log_ratio(stats[own], stats[other], mask))
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
        "concentration": {"forward_kl": dx.kl_concentration(stats["forward_kl"][valid]),
                          "reverse_kl": dx.kl_concentration(stats["reverse_kl"][valid])},
    }


def likelihood_report(teacher_lp: np.ndarray, student_lp: np.ndarray, byte_lengths: np.ndarray, mask: np.ndarray,
                      ) -> dict[str, float]:
    """Per-byte log-likelihoods of both models and their gap (teacher - student), mean over sequences.

    Also the binarised chosen-event KLs (``distill.losses.binarised_divergence``) over the same events
    (tokens or spans) and the mean absolute log-prob gap per event."""
    teacher_pb = np.asarray(dx.per_byte_loglik(teacher_lp, byte_lengths, mask))
    student_pb = np.asarray(dx.per_byte_loglik(student_lp, byte_lengths, mask))
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


def answer_report(samples: Samples, own_logprobs: np.ndarray, byte_lengths: np.ndarray, sampler: Party, task: Task,
                  examples: Sequence[Example], config: DiagnoseConfig) -> dict[str, Any]:
    """Accuracy, answer confidence (the sampler's probability of its answer tokens), ECE, overconfidence."""
    table = sampler.tokenizer.token_bytes
    confidences, correct = [], []
    for row, (ids, text) in enumerate(zip(samples.ids, samples.texts)):
        verdict = task.verify(text, examples[samples.example_index[row]])
        correct.append(verdict.reward >= 1.0 - 1e-9)
        completion = b"".join(table[i] for i in ids)
        span = dx.answer_byte_span(completion, verdict.prediction)
        confidences.append(dx.answer_confidence(own_logprobs[row, :len(ids)], byte_lengths[row, :len(ids)], span))
    return dx.answer_symptoms(confidences, correct, n_bins=config.ece_bins, threshold=config.confident_threshold)


# ---- the run ---------------------------------------------------------------------------------------

def _check(config: DiagnoseConfig) -> None:
    missing = [name for name in ("teacher", "student") if not getattr(config, name)]
    if missing:
        raise ValueError(f"diagnose needs {' and '.join(missing)}: teacher=HF_FOLDER student=HF_FOLDER")
    if config.task not in list_tasks():
        raise ValueError(f"task={config.task!r} is not valid; choose one of {', '.join(list_tasks())}")
    for name in ("num_prompts", "samples_per_prompt", "max_completion_length", "generation_batch_size", "ngram",
                 "ece_bins"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    if not config.top_ks or min(config.top_ks) < 1:
        raise ValueError(f"top_ks must be positive integers, got {config.top_ks}")


INPUT_FIELDS = ("teacher", "student", "teacher_tokenizer", "student_tokenizer", "data_path")


def diagnose(config: DiagnoseConfig) -> dict[str, Any]:
    """Sample, score, measure and write the report; returns the JSON dict (also in diagnostics.json).
    A folder that holds this diagnosis, finished, is read back; another one there is refused unless
    ``overwrite=true`` (``jaxdistill.run_folder``)."""
    config.validate()
    with run_folder.open_run(config.output_dir, config, command="diagnose", resumable=False,
                             overwrite=getattr(config, "overwrite", False), input_fields=INPUT_FIELDS,
                             inputs=run_folder.inputs_of(config, INPUT_FIELDS)) as run:
        if run.finished:
            return json.loads((Path(config.output_dir) / "diagnostics.json").read_text())
        result = _diagnose(config)
        run.finish(results=["diagnostics.json", "diagnostics.md"])
    return result


def _diagnose(config: DiagnoseConfig) -> dict[str, Any]:
    task = get_task(config.task, **parse_task_options(config.task_options))
    examples = task.load(config.split, config.data_path or None, limit=config.num_prompts)
    parties = {}
    for name in ("teacher", "student"):
        model, tok = load_party(name, getattr(config, name), getattr(config, f"{name}_tokenizer"), config.dtype)
        prompts = [tok.encode(prompt_text(task, ex, tok.hf, config.chat_template)) for ex in examples]
        parties[name] = Party(name, model, tok, prompts)
    teacher, student = parties["teacher"], parties["student"]
    same = same_vocabulary(teacher.tokenizer, student.tokenizer)
    if same and max(config.top_ks) > teacher.tokenizer.vocab_size:
        raise ValueError(f"top_ks {config.top_ks} exceed the vocabulary ({teacher.tokenizer.vocab_size} tokens)")
    log.info("%s tokenizers; sampling %d prompts x %d from each model", "same" if same else "different",
             len(examples), config.samples_per_prompt)

    result: dict[str, Any] = {"settings": {**to_dict(config), "same_tokenizer": same,
                                           "num_examples": len(examples)}}
    for source, sampler, other in (("teacher_samples", teacher, student), ("student_samples", student, teacher)):
        samples = sample(sampler, config)
        if same:
            stats = score_same_tokenizer(teacher, student, samples, config)
            own_lp = stats["teacher_logprob" if sampler is teacher else "student_logprob"]
            entry: dict[str, Any] = {"token": token_level_report(stats, config.top_ks, sampler is teacher)}
            entry["likelihood"] = likelihood_report(stats["teacher_logprob"], stats["student_logprob"],
                                                    stats["byte_lengths"], stats["mask"])
            entry["likelihood"]["aligned_byte_fraction"] = 1.0
        else:
            scores = score_cross_tokenizer(sampler, other, samples, config)
            own_lp = scores["sampler_logprob"]
            pair = (scores["sampler_span_logprob"], scores["other_span_logprob"])
            teacher_spans, student_spans = pair if sampler is teacher else pair[::-1]
            entry = {"token": None}
            entry["likelihood"] = likelihood_report(teacher_spans, student_spans, scores["span_bytes"],
                                                    scores["span_mask"])
            entry["likelihood"]["aligned_byte_fraction"] = float(np.mean(scores["aligned_byte_fraction"]))
            log_ratio = np.asarray(dx.sequence_log_ratio(*pair, scores["span_mask"]))
            entry["span_sequence"] = {"sequence_kl_estimate": float(np.mean(log_ratio)),
                                      "sequence_kl_estimate_std": float(np.std(log_ratio))}
            stats = scores
        entry["answers"] = answer_report(samples, own_lp, stats["byte_lengths"], sampler, task, examples, config)
        entry["text"] = dx.text_symptoms(samples.texts, samples.finished_eos, ngram=config.ngram,
                                         max_period=config.loop_period, min_copies=config.loop_copies)
        entry["examples"] = [{"prompt": examples[samples.example_index[i]].prompt, "completion": samples.texts[i]}
                             for i in range(min(3, len(samples.texts)))]
        result[source] = entry
        log.info("%s: accuracy %.3f, gap per byte %.3f", source, entry["answers"]["accuracy"],
                 entry["likelihood"]["gap_per_byte"])

    off, on = result["teacher_samples"], result["student_samples"]
    drift = {"gap_per_byte": on["likelihood"]["gap_per_byte"] - off["likelihood"]["gap_per_byte"],
             "event_forward_kl": _subtract(on["likelihood"]["event_forward_kl"], off["likelihood"]["event_forward_kl"])}
    if same:
        drift["forward_kl"] = on["token"]["forward_kl"] - off["token"]["forward_kl"]
        drift["reverse_kl"] = on["token"]["reverse_kl"] - off["token"]["reverse_kl"]
    result["drift"] = drift
    change = dx.difference(on["text"], off["text"])
    change.update({f"answers/{k}": v for k, v in dx.difference(on["answers"], off["answers"]).items()})
    result["symptom_change"] = change
    result = _json_safe(result)
    write_report(result, Path(config.output_dir), plots=config.plots)
    return result


def _subtract(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _json_safe(value: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, so the JSON is standard."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


# ---- outputs -----------------------------------------------------------------------------------------

def load_diagnostics(path: str | Path) -> dict[str, Any]:
    """The full result of a diagnose run: ``path`` is its output folder or its diagnostics.json."""
    path = Path(path)
    file = path / "diagnostics.json" if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"no diagnostics.json at {path}: run python -m jaxdistill.diagnose first")
    return json.loads(file.read_text())


def summary_numbers(result: Mapping[str, Any] | str | Path) -> dict[str, float | None]:
    """The headline numbers of a diagnose run as a flat dict (for scorecards and sweeps).

    Keys: ``teacher_accuracy``, ``student_accuracy`` (on their own samples); ``gap_per_byte`` (teacher
    minus student log-likelihood per byte of teacher text); ``off_policy_forward_kl``,
    ``on_policy_reverse_kl``, ``drift_forward_kl``, ``tail_share@k`` (forward KL on teacher samples;
    None when the tokenizers differ); ``student_ece``, ``student_confident_wrong_rate``,
    ``self_correction_change``, ``student_loop_rate``, ``student_repeated_ngram_rate``,
    ``student_truncation_rate``.
    """
    if not isinstance(result, Mapping):
        result = load_diagnostics(result)
    off, on = result["teacher_samples"], result["student_samples"]
    numbers: dict[str, float | None] = {
        "teacher_accuracy": off["answers"]["accuracy"],
        "student_accuracy": on["answers"]["accuracy"],
        "gap_per_byte": off["likelihood"]["gap_per_byte"],
        "on_policy_gap_per_byte": on["likelihood"]["gap_per_byte"],
        "off_policy_forward_kl": off["token"]["forward_kl"] if off["token"] else None,
        "on_policy_reverse_kl": on["token"]["reverse_kl"] if on["token"] else None,
        "drift_forward_kl": result["drift"].get("forward_kl"),
        "student_ece": on["answers"]["ece"],
        "student_confident_wrong_rate": on["answers"]["confident_wrong_rate"],
        "self_correction_change": result["symptom_change"].get("self_correction_rate"),
        "student_loop_rate": on["text"]["loop_rate"],
        "student_repeated_ngram_rate": on["text"]["repeated_ngram_rate"],
        "student_truncation_rate": on["text"]["truncation_rate"],
    }
    if off["token"]:
        for k, share in zip(off["token"]["split"]["k"], off["token"]["split"]["forward_tail_share"]):
            numbers[f"tail_share@{k}"] = share
    return numbers


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_report(result: Mapping[str, Any]) -> str:
    """The markdown summary: settings, traps, symptoms, and a few completions."""
    s = result["settings"]
    off, on = result["teacher_samples"], result["student_samples"]
    lines = [f"# Distillation diagnostics: {s['task']}", "",
             f"- teacher: `{s['teacher']}`", f"- student: `{s['student']}`",
             f"- tokenizers: {'the same (token-level KL)' if s['same_tokenizer'] else 'different (span-aligned)'}",
             f"- {s['num_examples']} prompts x {s['samples_per_prompt']} samples per model, temperature "
             f"{s['temperature']}, at most {s.get('max_completion_length', s.get('max_new_tokens'))} new tokens", "",
             "Off-policy = sequences the teacher wrote (what KD trains on); on-policy = sequences the student "
             "wrote (what it meets when it generates).", "",
             "## Traps", "",
             "| measure | off-policy | on-policy |", "|---|---|---|"]

    def row(label: str, a: Any, b: Any) -> None:
        lines.append(f"| {label} | {_fmt(a)} | {_fmt(b)} |")

    row("teacher log-lik per byte", off["likelihood"]["teacher_per_byte"], on["likelihood"]["teacher_per_byte"])
    row("student log-lik per byte", off["likelihood"]["student_per_byte"], on["likelihood"]["student_per_byte"])
    row("gap per byte (teacher - student)", off["likelihood"]["gap_per_byte"], on["likelihood"]["gap_per_byte"])
    row("binarised KL per token/span", off["likelihood"]["event_forward_kl"], on["likelihood"]["event_forward_kl"])
    row("aligned byte fraction", off["likelihood"]["aligned_byte_fraction"],
        on["likelihood"]["aligned_byte_fraction"])
    if off["token"]:
        row("forward KL(T‖S) per token", off["token"]["forward_kl"], on["token"]["forward_kl"])
        row("reverse KL(S‖T) per token", off["token"]["reverse_kl"], on["token"]["reverse_kl"])
        row("teacher entropy per token", off["token"]["teacher_entropy"], on["token"]["teacher_entropy"])
        row("student entropy per token", off["token"]["student_entropy"], on["token"]["student_entropy"])
        row("sequence-level KL estimate (sampler‖other)", off["token"]["sequence"]["sequence_kl_estimate"],
            on["token"]["sequence"]["sequence_kl_estimate"])
        row("sum of token KLs per sequence", off["token"]["sequence"]["token_kl_sum"],
            on["token"]["sequence"]["token_kl_sum"])
        row("share of forward KL on the top 10% tokens", off["token"]["concentration"]["forward_kl"]["top_share"],
            on["token"]["concentration"]["forward_kl"]["top_share"])
        lines += ["", "Tail noise: the forward KL per token split over the teacher's top-k tokens (head) and "
                  "the rest (tail); head + tail = total.", "",
                  "| k | teacher top-k mass | head (off) | tail (off) | tail share (off) | tail share (on) |",
                  "|---|---|---|---|---|---|"]
        split_off, split_on = off["token"]["split"], on["token"]["split"]
        for j, k in enumerate(split_off["k"]):
            lines.append(f"| {k} | {_fmt(split_off['teacher_top_k_mass'][j])} | {_fmt(split_off['forward_head'][j])}"
                         f" | {_fmt(split_off['forward_tail'][j])} | {_fmt(split_off['forward_tail_share'][j])} | "
                         f"{_fmt(split_on['forward_tail_share'][j])} |")
    else:
        row("sequence-level log-ratio over aligned spans", off["span_sequence"]["sequence_kl_estimate"],
            on["span_sequence"]["sequence_kl_estimate"])
    drift = result["drift"]
    lines += ["", "Off-policy drift (on-policy minus off-policy): "
              + ", ".join(f"{k} {_fmt(v)}" for k, v in drift.items()), "",
              "## Symptoms", "", "| measure | teacher (own samples) | student (own samples) |", "|---|---|---|"]
    for key, label in (("accuracy", "accuracy"), ("answered_rate", "answered rate"),
                       ("mean_confidence", "mean answer confidence"), ("wrong_confidence", "confidence when wrong"),
                       ("confident_wrong_rate", "confident wrong rate"), ("ece", "expected calibration error")):
        row(label, off["answers"][key], on["answers"][key])
    for key, label in (("self_correction_rate", "self-correction rate"), ("check_step_rate", "arith check-step rate"),
                       ("markers_per_completion", "markers per completion"),
                       ("repeated_ngram_rate", f"repeated {s['ngram']}-gram rate"), ("loop_rate", "loop rate"),
                       ("truncation_rate", "truncation rate"), ("mean_words", "words per completion")):
        row(label, off["text"][key], on["text"][key])
    lines += ["", "## Sample completions", ""]
    for source, entry in (("teacher", off), ("student", on)):
        for ex in entry["examples"][:2]:
            lines += [f"**{source}** on: {ex['prompt'][:200]}", "", "```", ex["completion"][:600], "```", ""]
    return "\n".join(lines) + "\n"


def plot_divergence(result: Mapping[str, Any], path: Path) -> Path:
    """Per-byte log-likelihoods (both sources), tail share of the KL against k, reliability diagrams."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    off, on = result["teacher_samples"], result["student_samples"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    x = np.arange(2)
    for j, (who, color) in enumerate((("teacher", "tab:blue"), ("student", "tab:orange"))):
        values = [off["likelihood"][f"{who}_per_byte"], on["likelihood"][f"{who}_per_byte"]]
        ax.bar(x + (j - 0.5) * 0.38, values, 0.38, label=who, color=color)
    ax.set_xticks(x, ["teacher samples\n(off-policy)", "student samples\n(on-policy)"])
    ax.set_ylabel("log-likelihood per byte (nats)")
    ax.set_title("teacher-student gap")
    ax.legend()
    ax = axes[1]
    if off["token"]:
        for entry, label in ((off, "off-policy"), (on, "on-policy")):
            split = entry["token"]["split"]
            shares = [np.nan if v is None else v for v in split["forward_tail_share"]]
            ax.plot(split["k"], shares, marker="o", label=label)
        ax.set_xscale("log")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("k (teacher's top-k tokens)")
        ax.set_ylabel("tail share of KL(T||S)")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "token-level KL needs\nthe same tokenizer", ha="center", va="center")
        ax.set_axis_off()
    ax.set_title("tail noise")
    ax = axes[2]
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":")
    for entry, label in ((off, "teacher"), (on, "student")):
        bins = entry["answers"]["reliability"]
        if bins:
            ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o",
                    label=f"{label} (ECE {_fmt(entry['answers']['ece'], 2)})")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("answer confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("calibration of answers")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


SYMPTOM_BARS = (("answers", "confident_wrong_rate", "confident\nwrong"), ("answers", "ece", "ECE"),
                ("text", "self_correction_rate", "self-\ncorrection"), ("text", "check_step_rate", "check\nsteps"),
                ("text", "repeated_ngram_rate", "repeated\nn-grams"), ("text", "loop_rate", "loops"),
                ("text", "truncation_rate", "truncated"))


def plot_symptoms(result: Mapping[str, Any], path: Path) -> Path:
    """Grouped bars: each symptom rate for the teacher's and the student's own completions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    x = np.arange(len(SYMPTOM_BARS))
    for j, (source, label) in enumerate((("teacher_samples", "teacher"), ("student_samples", "student"))):
        values = [result[source][group][key] for group, key, _ in SYMPTOM_BARS]
        ax.bar(x + (j - 0.5) * 0.38, [np.nan if v is None else v for v in values], 0.38, label=label)
    ax.set_xticks(x, [name for _, _, name in SYMPTOM_BARS])
    ax.set_ylabel("rate")
    ax.set_ylim(0, 1.05)
    ax.set_title("symptoms in generated text")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(result: Mapping[str, Any], out: Path, *, plots: bool = True) -> None:
    """diagnostics.json, diagnostics.md and (with ``plots``) divergence.png and symptoms.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "diagnostics.json").write_text(json.dumps(result, indent=2, allow_nan=False))
    (out / "diagnostics.md").write_text(markdown_report(result))
    if plots:
        plot_divergence(result, out / "divergence.png")
        plot_symptoms(result, out / "symptoms.png")


# ---- CLI ---------------------------------------------------------------------------------------------

def run(config: DiagnoseConfig) -> None:
    result = diagnose(config)
    print(json.dumps(summary_numbers(result), indent=2))
    print(f"report: {Path(config.output_dir) / 'diagnostics.md'}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(DiagnoseConfig, run, argv, prog="jaxdistill-diagnose",
                   description="Trap diagnostics of a teacher/student pair: KL split into head and tail, off-policy "
                               "drift, teacher-student gap per byte, overconfidence, self-correction and local "
                               "degradation.")


if __name__ == "__main__":
    sys.exit(main())
