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

Then the pure measurements of ``jaxdistill.diagnose.metrics`` (divergences, teacher-student gap, answer
confidence and calibration, self-correction markers, loops, truncation) are written by
``jaxdistill.diagnose.report`` to ``<output_dir>/diagnostics.json``, ``diagnostics.md``,
``divergence.png`` and ``symptoms.png``; its :func:`load_diagnostics` and :func:`summary_numbers` give the
same numbers back to reports.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxdistill.align import align_retokenized, span_logprobs
from jaxdistill import run_folder
from jaxdistill.config import EvalConfig, option, run_cli, to_dict
import jaxdistill.diagnose.metrics as dx
from jaxdistill.diagnose.metrics import likelihood_report, token_level_report
from jaxdistill.diagnose.report import json_safe, summary_numbers, write_report
from jaxdistill.generation.batched import Samples, even_batches, logprobs_batched, right_pad, sample_batched
from jaxdistill.generation.sampler import bucket_length, left_pad
from jaxdistill.generation.scoring import completion_hidden
from jaxdistill.generation.tokenized_model import TokenizedModel
from jaxdistill.models import Qwen
from jaxdistill.tasks import Example, Task, get_task, list_tasks, parse_task_options
from jaxdistill.tokenizer import Tokenizer

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

def same_vocabulary(a: Tokenizer, b: Tokenizer) -> bool:
    """True when every token id means the same bytes on both sides (token-level KL is then defined)."""
    return a.path == b.path or (a.vocab_size == b.vocab_size and a.special_ids == b.special_ids
                                and a.token_bytes == b.token_bytes)


def load_side(role: str, model_dir: str, tokenizer_dir: str, dtype: str, chat: bool) -> TokenizedModel:
    """The ``role`` model (an HF folder or a distill run folder holding ``model/``) with its tokenizer."""
    folder = Path(model_dir)
    if not (folder / "config.json").exists() and (folder / "model" / "config.json").exists():
        folder = folder / "model"  # a distill run folder
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{role}={model_dir!r} is not an HF model folder (no config.json)")
    return TokenizedModel.load(folder, tokenizer_dir or None, role=role, dtype=dtype, chat=chat)[0]


def sample(lm: TokenizedModel, prompts: Sequence[Sequence[int]], config: DiagnoseConfig) -> Samples:
    """``samples_per_prompt`` completions of every prompt, ``generation_batch_size // samples_per_prompt`` prompts
    at a time at most (``jaxdistill.generation.batched.sample_batched``)."""
    return sample_batched(lm, prompts, batch_size=max(1, config.generation_batch_size // config.samples_per_prompt),
                          max_new_tokens=config.max_completion_length, temperature=config.temperature, top_p=config.top_p,
                          num_generations=config.samples_per_prompt, seed=config.seed)


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
    Returns a dict of [N, C] and [N, C, K] arrays (see ``metrics.token_divergences``) plus
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


def _chunk_for(width: int, preferred: int = 64) -> int:
    """Largest divisor of ``width`` that is at most ``preferred``."""
    return max(d for d in range(1, min(width, preferred) + 1) if width % d == 0)


def score_same_tokenizer(teacher: TokenizedModel, student: TokenizedModel, prompts: Sequence[Sequence[int]],
                         samples: Samples, config: DiagnoseConfig) -> dict[str, np.ndarray]:
    """Per-token statistics [N, C] / [N, C, K] of both models on ``samples`` of ``prompts`` (one shared
    tokenizer)."""
    tok = teacher.tokenizer
    width = config.max_completion_length
    prompts = [prompts[i] for i in samples.prompt_index]
    prompt_width = bucket_length(max(len(p) for p in prompts))
    tokens, mask = right_pad(samples.ids, width, teacher.pad_id)
    prompt_ids, prompt_mask = left_pad(prompts, prompt_width, teacher.pad_id)
    parts = []
    for rows, real in even_batches(len(samples.ids), config.generation_batch_size):
        stats = _pair_token_stats(teacher.model, student.model, jnp.asarray(prompt_ids[rows]),
                                  jnp.asarray(prompt_mask[rows]), jnp.asarray(tokens[rows]),
                                  jnp.asarray(mask[rows].astype(np.int32)), ks=tuple(config.top_ks),
                                  vocab=min(tok.vocab_size, student.tokenizer.vocab_size), chunk=_chunk_for(width))
        parts.append({k: np.asarray(v)[:real] for k, v in stats.items()})
    out = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out["mask"] = mask
    out["byte_lengths"] = np.where(mask, tok.token_byte_lengths[np.where(mask, tokens, 0)], 0)
    return out


def score_cross_tokenizer(names: tuple[str, str], sides: Sequence[TokenizedModel],
                          prompts: Sequence[Sequence[Sequence[int]]], samples: Samples, config: DiagnoseConfig
                          ) -> dict[str, np.ndarray]:
    """Span-level scores of ``samples`` (written by the first of ``sides``, the sampler) under both models.

    ``names``: the two roles (for messages); ``prompts``: each side's rendering of the prompts.

    The other model reads the completion bytes re-tokenized with its own tokenizer, conditioned on its
    own rendering of the prompt. Returns span log-probs of both [N, S], span bytes [N, S], the exact
    span mask [N, S], the sampler's own token log-probs [N, C] and byte lengths [N, C], and the
    aligned byte fraction [N].
    """
    (sampler, other), (sampler_prompts, other_prompts) = sides, prompts
    width = config.max_completion_length
    alignment = align_retokenized(sampler.tokenizer, samples.ids, other.tokenizer)
    if alignment.mismatches:
        first = "\n".join(str(m) for m in alignment.mismatches[:3])
        log.warning("%d byte mismatches between the two tokenizations of %s's samples (spans around them are "
                    "left out), e.g.\n%s", len(alignment.mismatches), names[0], first)
    sampler_lp = logprobs_batched(sampler, [sampler_prompts[i] for i in samples.prompt_index], samples.ids, width,
                                  batch_size=config.generation_batch_size)
    other_rows = [row[m].tolist() for row, m in zip(alignment.ids_b, alignment.mask_b)]
    other_width = bucket_length(max(len(r) for r in other_rows))
    other_lp = logprobs_batched(other, [other_prompts[i] for i in samples.prompt_index], other_rows, other_width,
                                batch_size=config.generation_batch_size)
    width_a = alignment.ids_a.shape[1]
    capacity = alignment.num_span_slots
    spans = alignment.spans
    span_ids_b = np.full((len(other_rows), other_width), -1, np.int32)
    span_ids_b[:, :spans.span_ids_b.shape[1]] = spans.span_ids_b[:, :other_width]
    sampler_spans = span_logprobs(jnp.asarray(sampler_lp[:, :width_a]), jnp.asarray(spans.span_ids_a), capacity)
    other_spans = span_logprobs(jnp.asarray(other_lp), jnp.asarray(span_ids_b), capacity)
    span_bytes = span_logprobs(jnp.asarray(alignment.byte_lengths_a * alignment.mask_a, jnp.float32),
                               jnp.asarray(spans.span_ids_a), capacity)
    tokens, mask = right_pad(samples.ids, width, 0)
    return {"sampler_span_logprob": np.asarray(sampler_spans), "other_span_logprob": np.asarray(other_spans),
            "span_bytes": np.asarray(span_bytes), "span_mask": np.asarray(alignment.exact_spans),
            "sampler_logprob": sampler_lp, "mask": mask,
            "byte_lengths": np.where(mask, sampler.tokenizer.token_byte_lengths[tokens], 0),
            "aligned_byte_fraction": np.asarray(alignment.aligned_byte_fraction)}


def answer_report(samples: Samples, texts: Sequence[str], own_logprobs: np.ndarray, byte_lengths: np.ndarray,
                  sampler: TokenizedModel, task: Task, examples: Sequence[Example], config: DiagnoseConfig
                  ) -> dict[str, Any]:
    """Accuracy, answer confidence (the sampler's probability of its answer tokens), ECE, overconfidence."""
    table = sampler.tokenizer.token_bytes
    confidences, correct = [], []
    for row, (ids, text) in enumerate(zip(samples.ids, texts)):
        verdict = task.verify(text, examples[samples.prompt_index[row]])
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
    sides = {name: load_side(name, getattr(config, name), getattr(config, f"{name}_tokenizer"), config.dtype,
                             config.chat_template) for name in ("teacher", "student")}
    prompts = {name: [lm.prompt(task, ex) for ex in examples] for name, lm in sides.items()}
    teacher, student = sides["teacher"], sides["student"]
    same = same_vocabulary(teacher.tokenizer, student.tokenizer)
    if same and max(config.top_ks) > teacher.tokenizer.vocab_size:
        raise ValueError(f"top_ks {config.top_ks} exceed the vocabulary ({teacher.tokenizer.vocab_size} tokens)")
    log.info("%s tokenizers; sampling %d prompts x %d from each model", "same" if same else "different",
             len(examples), config.samples_per_prompt)

    result: dict[str, Any] = {"settings": {**to_dict(config), "same_tokenizer": same,
                                           "num_examples": len(examples)}}
    for source, names in (("teacher_samples", ("teacher", "student")), ("student_samples", ("student", "teacher"))):
        sampler, other = sides[names[0]], sides[names[1]]
        samples = sample(sampler, prompts[names[0]], config)
        texts = [sampler.text(row) for row in samples.ids]
        if same:
            stats = score_same_tokenizer(teacher, student, prompts["teacher"], samples, config)
            own_lp = stats["teacher_logprob" if sampler is teacher else "student_logprob"]
            entry: dict[str, Any] = {"token": token_level_report(stats, config.top_ks, sampler is teacher)}
            entry["likelihood"] = likelihood_report(stats["teacher_logprob"], stats["student_logprob"],
                                                    stats["byte_lengths"], stats["mask"])
            entry["likelihood"]["aligned_byte_fraction"] = 1.0
        else:
            scores = score_cross_tokenizer(names, (sampler, other), (prompts[names[0]], prompts[names[1]]), samples,
                                           config)
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
        entry["answers"] = answer_report(samples, texts, own_lp, stats["byte_lengths"], sampler, task, examples,
                                         config)
        entry["text"] = dx.text_symptoms(texts, samples.finished, ngram=config.ngram,
                                         max_period=config.loop_period, min_copies=config.loop_copies)
        entry["examples"] = [{"prompt": examples[samples.prompt_index[i]].prompt, "completion": texts[i]}
                             for i in range(min(3, len(texts)))]
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
    result = json_safe(result)
    write_report(result, Path(config.output_dir), plots=config.plots)
    return result


def _subtract(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


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
