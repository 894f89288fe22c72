"""Host side of distillation: which prompts a step reads, where its completions come from, and how they
become a ``DistillBatch`` for one or two tokenizers.

A step is a pure function of ``(seed, step)``: the examples it reads (seeded shuffles, one per epoch),
the solution styles drawn for SFT, the sampling seeds of the teacher and of the student. Resuming from
a checkpoint at step ``s`` therefore replays exactly the batches an uninterrupted run would have seen.

Completions come from three places, each kept as token ids under the tokenizer that produced them:
gold solutions (encoded by the student's tokenizer), teacher samples, student samples. With one shared
tokenizer they are used as they are. With two tokenizers each completion is turned into text bytes and
re-tokenized by the other side (``jaxdistill.align.align_retokenized``), which also gives the byte
spans both tokenizations share; the end-of-sequence token holds no bytes, so a finished completion
gets one extra span, "stop here", made of the two EOS tokens.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Sequence

import jax.numpy as jnp
import numpy as np

from jaxdistill.align import align_retokenized
from jaxdistill.distill.objectives import DistillBatch, Sequences
from jaxdistill.generation.sampler import bucket_length, generate
from jaxdistill.generation.tokenized_model import TokenizedModel
from jaxdistill.models.qwen import Qwen
from jaxdistill.tasks.base import Example, Task
from jaxdistill.tokenizer import Tokenizer


# ---- tokenizers --------------------------------------------------------------------------------

# How one side (student or teacher) reads and writes text: its tokenizer, pad id, the id that ends a
# completion (appended to gold and re-tokenized completions; the stop id when it samples) and prompt
# rendering. ``Side.of(tokenizer, chat)``; the model is held apart (``model`` stays None).
Side = TokenizedModel


def same_tokenizer(a: Tokenizer, b: Tokenizer) -> bool:
    """True when both tokenizers are the same (identical ``tokenizer.json`` model and vocabulary)."""
    return a.path == b.path or a.hf.backend_tokenizer.to_str() == b.hf.backend_tokenizer.to_str()


# ---- which examples a step reads --------------------------------------------------------------

def batch_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Example indices read at ``step``: the data is read in order through one seeded shuffle per epoch.

    Returns int [batch_size]; a pure function of its arguments (what makes resuming exact).
    """
    positions = step * batch_size + np.arange(batch_size)
    epochs, offsets = np.divmod(positions, num_examples)
    out = np.empty(batch_size, np.int64)
    for epoch in np.unique(epochs):
        order = np.random.default_rng([seed, int(epoch)]).permutation(num_examples)
        out[epochs == epoch] = order[offsets[epochs == epoch]]
    return out


def step_seed(seed: int, step: int, stream: int) -> int:
    """A sampling seed for (run seed, step, stream): independent streams for teacher and student."""
    return int(np.random.SeedSequence([seed, step, stream]).generate_state(1)[0] & 0x7FFFFFFF)


# ---- completions -------------------------------------------------------------------------------

@dataclasses.dataclass
class Completions:
    """Completion token ids under the tokenizer of ``origin`` ("student" or "teacher"), EOS excluded.

    ids: one list per row; finished: the row ended on EOS (else it was cut at the length limit).
    """

    origin: str
    ids: list[list[int]]
    finished: list[bool]


def gold_completions(task: Task, examples: Sequence[Example], side: Side, rng: np.random.Generator,
                     resample: bool) -> Completions:
    """Reference solutions encoded by ``side`` (the student); arith draws a fresh style when ``resample``."""
    texts = [task.sample_solution(e, rng) if resample else e.solution for e in examples]
    return Completions("student", [side.tokenizer.encode(t) for t in texts], [True] * len(texts))


def sample_completions(model: Qwen, side: Side, prompts: Sequence[Sequence[int]], origin: str, *,
                       max_new_tokens: int, temperature: float, top_p: float, seed: int) -> Completions:
    """One completion per prompt sampled from ``model`` (never the pad id, never a padded vocab row)."""
    out = generate(model, prompts, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                   seed=seed, eos_ids=[side.eos_id], pad_id=side.pad_id, vocab_limit=side.vocab_size)
    finished = [bool(f) for f in np.asarray(out.finished_eos)]
    rows = [c[:-1] if f else c for c, f in zip(out.completions(), finished)]
    return Completions(origin, rows, finished)


class TeacherSampleCache:
    """Teacher completions memoised across distillation runs in one process (the scorecard's students).

    A step's teacher samples are a pure function of (teacher weights, prompts, sampling seed, sampling
    settings): two students distilled from the same teacher with the same seed read the same prompts and
    the same seeds at every step (seqkd always; gkd whenever their ``lmbda`` splits agree), so they receive
    identical teacher completions. The cache samples them once. Keys hold the teacher's folder, so a
    cache must not outlive a rewrite of that folder; entries are host lists of ids (a few MB per
    scorecard).
    """

    def __init__(self):
        self._entries: dict[tuple, Completions] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple, sample) -> Completions:
        """The completions stored under ``key``, or ``sample()``'s (then stored)."""
        if key in self._entries:
            self.hits += 1
        else:
            self.misses += 1
            self._entries[key] = sample()
        return self._entries[key]


@dataclasses.dataclass
class AlignedRow:
    """One completion under both tokenizers, with the byte spans they share.

    student_ids / teacher_ids: completion ids (EOS appended when finished);
    student_spans / teacher_spans: span id of each token (-1: in no span); exact: per span, whether it
    holds the same bytes on both sides (spans touching a byte mismatch are left out of the loss).
    """

    student_ids: list[int]
    teacher_ids: list[int]
    student_spans: list[int]
    teacher_spans: list[int]
    exact: list[bool]
    aligned_byte_fraction: float = 1.0


def align_completions(completions: Completions, sides: dict[str, Side]) -> list[AlignedRow]:
    """Re-tokenize completions with the other side's tokenizer and align the two into byte spans."""
    source = sides[completions.origin]
    target_name = "teacher" if completions.origin == "student" else "student"
    target = sides[target_name]
    alignment = align_retokenized(source.tokenizer, completions.ids, target.tokenizer)
    spans = alignment.spans
    rows = []
    for r, finished in enumerate(completions.finished):
        n_source, n_target = len(completions.ids[r]), int(alignment.mask_b[r].sum())
        source_ids = list(completions.ids[r])
        target_ids = alignment.ids_b[r, :n_target].tolist()
        source_spans = spans.span_ids_a[r, :n_source].tolist()
        target_spans = spans.span_ids_b[r, :n_target].tolist()
        num_spans = int(spans.num_spans[r])
        exact = alignment.exact_spans[r, :num_spans].tolist()
        if finished:  # the "stop here" span: both EOS tokens
            source_ids.append(source.eos_id)
            target_ids.append(target.eos_id)
            source_spans.append(num_spans)
            target_spans.append(num_spans)
            exact.append(True)
        ids = {completions.origin: (source_ids, source_spans), target_name: (target_ids, target_spans)}
        rows.append(AlignedRow(ids["student"][0], ids["teacher"][0], ids["student"][1], ids["teacher"][1], exact,
                               float(alignment.aligned_byte_fraction[r])))
    return rows


def with_eos(completions: Completions, side: Side) -> list[list[int]]:
    """Completion ids with the EOS token appended to finished rows."""
    return [ids + [side.eos_id] if done else list(ids) for ids, done in zip(completions.ids, completions.finished)]


# ---- padding into arrays -----------------------------------------------------------------------

class _WarnOnce:
    def __init__(self):
        self.seen = set()

    def __call__(self, message: str) -> None:
        if message not in self.seen:
            self.seen.add(message)
            warnings.warn(message, stacklevel=3)


warn_once = _WarnOnce()


def completion_width(longest: int, max_completion_length: int) -> int:
    """Columns for completions: ``max_completion_length``, or a bucket (``bucket_length``) for longer rows
    (re-tokenized text can take more tokens than the side that sampled it)."""
    return max_completion_length if longest <= max_completion_length else bucket_length(longest)


def pad_sequences(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int, *,
                  width: int, trained: Sequence[bool] | None = None) -> Sequences:
    """Left-pad prompts to a bucket (like the sampler) and right-pad completions to ``width``.

    trained: per row, whether its completion enters the loss (a False row gets an all-zero mask).
    Rows longer than ``width`` are cut (with a warning).
    """
    n = len(prompts)
    p_width = bucket_length(max(len(p) for p in prompts))
    prompt_ids = np.full((n, p_width), pad_id, np.int32)
    prompt_mask = np.zeros((n, p_width), np.int32)
    tokens = np.full((n, width), pad_id, np.int32)
    mask = np.zeros((n, width), np.int32)
    for r, (prompt, completion) in enumerate(zip(prompts, completions)):
        prompt_ids[r, p_width - len(prompt):] = prompt
        prompt_mask[r, p_width - len(prompt):] = 1
        if len(completion) > width:
            warn_once(f"completions longer than {width} tokens are cut; raise max_completion_length")
            completion = completion[:width]
        tokens[r, :len(completion)] = completion
        mask[r, :len(completion)] = 1 if trained is None or trained[r] else 0
    return Sequences(jnp.asarray(prompt_ids), jnp.asarray(prompt_mask), jnp.asarray(tokens), jnp.asarray(mask))


def pad_spans(rows: Sequence[AlignedRow], student_width: int, teacher_width: int,
              trained: Sequence[bool]) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Span ids [N, C_s] and [N, C_t] (-1 padded) and the span mask [N, S] with S = C_s (a span holds
    at least one student token). Inexact spans and untrained rows are masked out."""
    n = len(rows)
    student_spans = np.full((n, student_width), -1, np.int32)
    teacher_spans = np.full((n, teacher_width), -1, np.int32)
    span_mask = np.zeros((n, student_width), bool)
    for r, row in enumerate(rows):
        student_spans[r, :len(row.student_spans)] = row.student_spans[:student_width]
        teacher_spans[r, :len(row.teacher_spans)] = row.teacher_spans[:teacher_width]
        exact = np.asarray(row.exact[:student_width], bool)
        span_mask[r, :len(exact)] = exact & trained[r]
    return jnp.asarray(student_spans), jnp.asarray(teacher_spans), jnp.asarray(span_mask)


# ---- one step's batch --------------------------------------------------------------------------

OBJECTIVES = ("sft", "seqkd", "kd", "gkd")


@dataclasses.dataclass(frozen=True)
class BatchRecipe:
    """Where a step's completions come from and how they are scored (see ``DistillConfig``)."""

    objective: str  # sft | seqkd | kd | gkd
    loss_kind: str  # nll | token_kd | span_kd
    batch_size: int
    max_completion_length: int
    seed: int = 0
    sampling_temperature: float = 1.0
    top_p: float = 1.0
    lmbda: float = 0.5  # gkd: fraction of sequences sampled from the student
    off_policy_data: str = "teacher"  # gkd: the other sequences are teacher samples or gold solutions
    seqkd_only_correct: bool = False
    resample_solutions: bool = True


def student_rows_at(step: int, batch_size: int, lmbda: float) -> int:
    """How many of step ``step``'s sequences the student samples (gkd).

    ``floor(lmbda B (s + 1)) - floor(lmbda B s)``: over any run of steps starting at 0 the total is
    ``floor(lmbda B S)``, so the counted fraction equals lambda up to one sequence. (TRL flips one coin
    per batch instead; this spreads the same expected fraction evenly and deterministically.)
    """
    eps = 1e-9  # lmbda * B * s is often an integer up to float rounding
    return int(np.floor(lmbda * batch_size * (step + 1) + eps) - np.floor(lmbda * batch_size * step + eps))


class BatchMaker:
    """Builds the ``DistillBatch`` of any step (a pure function of the step and the current student)."""

    def __init__(self, recipe: BatchRecipe, task: Task, examples: Sequence[Example], sides: dict[str, Side], *,
                 student: Qwen, teacher: Qwen | None = None, teacher_samples: TeacherSampleCache | None = None,
                 teacher_id: str = ""):
        """``teacher_samples`` (with ``teacher_id``, e.g. the teacher's resolved folder) shares teacher
        completions with other runs of the same process; None samples every step afresh."""
        if recipe.objective != "sft" and (teacher is None or "teacher" not in sides):
            raise ValueError(f"objective {recipe.objective!r} needs a teacher model and tokenizer")
        if teacher_samples is not None and not teacher_id:
            raise ValueError("a teacher sample cache needs teacher_id (e.g. the teacher's folder)")
        self.recipe, self.task, self.examples = recipe, task, list(examples)
        self.sides, self.student, self.teacher = sides, student, teacher
        self.teacher_samples, self.teacher_id = teacher_samples, teacher_id

    def student_rows(self, step: int) -> int:
        if self.recipe.objective != "gkd":
            return 0
        return student_rows_at(step, self.recipe.batch_size, self.recipe.lmbda)

    def __call__(self, step: int) -> tuple[DistillBatch, dict[str, float]]:
        """The batch of ``step`` and host-side metrics (sample accuracies, counts, lengths)."""
        recipe, student_side = self.recipe, self.sides["student"]
        index = batch_indices(len(self.examples), recipe.batch_size, recipe.seed, step)
        examples = [self.examples[i] for i in index]
        student_prompts = [student_side.prompt(self.task, e) for e in examples]
        metrics: dict[str, float] = {}
        groups: list[tuple[slice, Completions]] = []  # (rows, completions), rows in batch order

        n_student = self.student_rows(step)
        sampling = dict(max_new_tokens=recipe.max_completion_length, temperature=recipe.sampling_temperature,
                        top_p=recipe.top_p)
        if n_student:
            own = sample_completions(self.student, student_side, student_prompts[:n_student], "student",
                                     seed=step_seed(recipe.seed, step, 2), **sampling)
            groups.append((slice(0, n_student), own))
            metrics["samples/student_accuracy"] = self._accuracy(own, examples[:n_student])
        if recipe.objective == "gkd":
            metrics["gkd/student_sequences"] = n_student
        rest = slice(n_student, recipe.batch_size)
        if n_student < recipe.batch_size:
            if recipe.objective == "sft" or (recipe.objective == "gkd" and recipe.off_policy_data == "gold"):
                rng = np.random.default_rng([recipe.seed, step, 3])
                groups.append((rest, gold_completions(self.task, examples[rest], student_side, rng,
                                                      recipe.resample_solutions)))
            else:
                teacher_side = self.sides["teacher"]
                prompts = [teacher_side.prompt(self.task, e) for e in examples[rest]]
                seed = step_seed(recipe.seed, step, 1)

                def sample():
                    return sample_completions(self.teacher, teacher_side, prompts, "teacher", seed=seed, **sampling)

                if self.teacher_samples is None:
                    samples = sample()
                else:
                    key = (self.teacher_id, teacher_side.eos_id, teacher_side.pad_id, teacher_side.vocab_size,
                           tuple(map(tuple, prompts)), seed, tuple(sorted(sampling.items())))
                    samples = self.teacher_samples.get(key, sample)
                groups.append((rest, samples))
                metrics["samples/teacher_accuracy"] = self._accuracy(samples, examples[rest])

        trained = [True] * recipe.batch_size
        if recipe.objective == "seqkd" and recipe.seqkd_only_correct:
            rows, samples = groups[-1]
            verdicts = [self.task.verify(self.sides["teacher"].text(ids), e)
                        for ids, e in zip(samples.ids, examples[rows])]
            trained = [v.reward >= 1.0 for v in verdicts]
            metrics["seqkd/kept_fraction"] = float(np.mean(trained))

        batch = self._assemble(groups, examples, student_prompts, trained)
        student_tokens = np.asarray(batch.student.mask).sum(1)
        metrics["completions/mean_length"] = float(student_tokens.mean())
        return batch, metrics

    def _accuracy(self, completions: Completions, examples: Sequence[Example]) -> float:
        side = self.sides[completions.origin]
        return float(np.mean([self.task.verify(side.text(ids), e).reward
                              for ids, e in zip(completions.ids, examples)]))

    def _assemble(self, groups, examples, student_prompts, trained) -> DistillBatch:
        recipe, student_side = self.recipe, self.sides["student"]
        if recipe.loss_kind == "span_kd" or (
                recipe.loss_kind == "nll" and any(c.origin == "teacher" for _, c in groups)
                and not same_tokenizer(student_side.tokenizer, self.sides["teacher"].tokenizer)):
            rows = [row for _, completions in groups for row in align_completions(completions, self.sides)]
            student_ids = [row.student_ids for row in rows]
        else:  # one tokenizer: every completion is already in the student's ids
            rows = None
            student_ids = [ids for _, c in groups for ids in with_eos(c, self.sides[c.origin])]
        width = completion_width(max(map(len, student_ids)), recipe.max_completion_length)
        student = pad_sequences(student_prompts, student_ids, student_side.pad_id, width=width, trained=trained)
        if recipe.loss_kind == "nll":
            return DistillBatch(student=student)
        if recipe.loss_kind == "token_kd":
            return DistillBatch(student=student, teacher=student)
        teacher_side = self.sides["teacher"]
        teacher_ids = [row.teacher_ids for row in rows]
        teacher_width = completion_width(max(map(len, teacher_ids)), recipe.max_completion_length)
        teacher = pad_sequences([teacher_side.prompt(self.task, e) for e in examples], teacher_ids,
                                teacher_side.pad_id, width=teacher_width, trained=trained)
        student_spans, teacher_spans, span_mask = pad_spans(rows, width, teacher_width, trained)
        return DistillBatch(student=student, teacher=teacher, student_span_ids=student_spans,
                            teacher_span_ids=teacher_spans, span_mask=span_mask)
