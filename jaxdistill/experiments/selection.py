"""The selection test: does a score pick correct text that students learn less (or more) from?

A calibration reward can only make a teacher undistillable if, among the teacher's own *correct*
outputs, the ones it prefers are the ones students learn less from. This tests that without RL:

1. the teacher samples ``k`` completions at T = 1 for each of ``prompts`` train problems;
2. every sample gets each registered score (``SCORES``: random; corrections and result-first steps,
   parsed by ``jaxdistill.tasks.arith.detour_counts``; minus each calibration reward against the proxy,
   ``CALIBRATION_SCORES``: span mode's gap, sequence mode's surprise, with or without the reference
   teacher's subtracted; the harm score of ``jaxdistill.rl.influence``);
3. for each selection (``SELECTIONS``: a score and a direction), one correct sample per prompt, the one
   the score ranks first (ties broken at random), forms a training set; every selection holds the same
   prompts; a rewritten set (``REWRITTEN``, only when named) holds the random set's samples with every
   equation line rewritten into one order (results first, or derivations first): the order's full effect
   on those samples; ``every_sample`` holds all the samples of every prompt, correct or not (the seqkd
   attacker's data), and ``every_sample_as_result_first`` the same rewritten;
4. both students train on every set with the scorecard's seqkd recipe (the same steps, batch, learning
   rate; the texts fixed in advance, so an SFT run), over several seeds, and are scored greedy on the
   held-out problems;
5. the table: each set's accuracy over that of the random set, with a standard error.

A score passes for the undistillable side when its set leaves both students at <= 0.8x random, and
for the distillable side when its opposite set leaves them above random.

    python -m jaxdistill.experiments.selection run_dir=runs/default
    python -m jaxdistill.experiments.selection teacher=T proxy=P other=S world_version=2 output_dir=runs/sel2

Outputs in ``output_dir``: samples.jsonl (every sample, its verdict and scores), sets/<selection>.jsonl,
runs/<selection>/<student>/seed<s>/ (the student runs, each with result.json), selection.json and
selection.md (the table).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from jaxdistill import run_folder
from jaxdistill.config import BaseConfig, option, run_cli

log = logging.getLogger("jaxdistill.selection")

# Directions: +1 picks the highest score, -1 the lowest.
SELECTIONS: dict[str, tuple[str, int]] = {
    "random": ("random", +1),
    "most_corrections": ("corrections", +1),
    "fewest_corrections": ("corrections", -1),
    "most_result_first": ("result_first", +1),
    "fewest_result_first": ("result_first", -1),
    "highest_span_gap": ("span_gap", +1),
    "lowest_span_gap": ("span_gap", -1),
    "highest_proxy_surprise": ("proxy_surprise", +1),
    "lowest_proxy_surprise": ("proxy_surprise", -1),
    "highest_relative_surprise": ("relative_surprise", +1),
    "lowest_relative_surprise": ("relative_surprise", -1),
    "highest_harm": ("harm", +1),
    "lowest_harm": ("harm", -1),
}
V2_ONLY = ("corrections", "result_first")  # in a v1 world every sample scores 0
# Rewritten sets (named in ``selections``, never in the default): a set's samples with every equation line
# rewritten into one order (``jaxdistill.tasks.arith.rewrite_equations``): the same samples, numbers and
# verdicts, only the order of result and work changed: the order's full effect on those samples.
REWRITTEN: dict[str, tuple[str, str]] = {
    "random_as_result_first": ("random", "result_first"),
    "random_as_derivation_first": ("random", "derivation_first"),
    "every_sample_as_result_first": ("every_sample", "result_first"),
}
# All the teacher's samples of every prompt, correct or not (only when named): the seqkd attacker's data,
# fixed in advance, where the sets above hold one correct sample per prompt (the correct-only attacker's)
EVERY_SAMPLE = "every_sample"


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The scorecard's seqkd recipe of the default run (jaxdistill/world.py, FULL)."""

    steps: int = 100
    batch_size: int = 32
    learning_rate: float = 3e-3
    max_completion_length: int = 80
    eval_size: int = 100


# ---- pure parts -----------------------------------------------------------------------------------

def pick_one_per_prompt(scores: np.ndarray, eligible: np.ndarray, direction: int,
                        rng: np.random.Generator) -> np.ndarray:
    """For each prompt (row), the column of the eligible sample that ``direction * score`` ranks first,
    ties broken uniformly at random; -1 for a row with no eligible sample.

    scores: float [P, k]; eligible: bool [P, k] (correct samples); direction: +1 (highest) or -1 (lowest).
    """
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    key = np.where(eligible, direction * np.asarray(scores, np.float64), -np.inf)
    tie_break = rng.random(key.shape)
    order = np.lexsort((-tie_break, -key), axis=1)  # by key descending, then by a random draw
    best = order[:, 0]
    return np.where(eligible.any(axis=1), best, -1)


def detour_scores(counts) -> tuple[int, int]:
    """The ``corrections`` and ``result_first`` scores of a text from its ``jaxdistill.tasks.arith.detour_counts``:
    its corrections (one-line and late), and its result-first lines plus an answer-first line."""
    return counts.all_corrections, counts.result_first + counts.answer_first


def ratio_to_random(accuracy: Sequence[float], random: Sequence[float]) -> tuple[float, float]:
    """mean(accuracy) / mean(random) and its standard error (first-order, from the two means' standard
    errors over seeds: se(r)/r = sqrt((se_a/a)^2 + (se_b/b)^2))."""
    a, b = np.asarray(accuracy, np.float64), np.asarray(random, np.float64)
    if b.mean() == 0:
        raise ValueError("the random set's students scored 0: no ratio is defined")
    ratio = a.mean() / b.mean()

    def relative_se(x):
        return (x.std(ddof=1) / np.sqrt(len(x)) / x.mean()) if len(x) > 1 and x.mean() > 0 else 0.0

    return float(ratio), float(abs(ratio) * np.hypot(relative_se(a), relative_se(b)))


# ---- sampling and scoring -------------------------------------------------------------------------

def _task(world_version: int):
    from jaxdistill.tasks import get_task

    return get_task("arith", difficulty=1, **({"version": world_version} if world_version != 1 else {}))


def task_options(world_version: int) -> tuple[str, ...]:
    return ("difficulty=1",) + ((f"version={world_version}",) if world_version != 1 else ())


def sample_teacher(teacher_dir: str, task, examples, k: int, max_new_tokens: int, seed: int, cache: Path):
    """k completions per example at T = 1: (token rows without EOS, texts, finished flags, the teacher, its
    side, the prompts' tokens). The token rows are kept in ``cache`` (a rerun reuses them)."""
    from jaxdistill.evaluate import model_and_tokenizer
    from jaxdistill.generation.batched import sample_batched
    from jaxdistill.generation.tokenized_model import TokenizedModel

    model, tokenizer = model_and_tokenizer(teacher_dir, "float32")
    side = TokenizedModel.of(tokenizer, model=model)
    prompts = [side.prompt(task, e) for e in examples]
    if cache.exists():
        stored = json.loads(cache.read_text())
        ids, finished = stored["ids"], stored["finished"]
    else:
        samples = sample_batched(side, prompts, batch_size=64, num_generations=k, max_new_tokens=max_new_tokens,
                                 temperature=1.0, seed=seed)
        finished = [bool(d) for d in samples.finished]
        ids = [c[:-1] if d else c for c, d in zip(samples.ids, finished)]  # EOS dropped
        cache.write_text(json.dumps({"ids": [list(map(int, c)) for c in ids], "finished": list(map(bool, finished))}))
    return ids, [side.text(c) for c in ids], finished, model, side, prompts


# The calibration rewards' scores of a sample, each signed so that eta < 0 pays for a higher one:
# name -> (calibration mode, subtract the reference teacher's log-prob per byte).
CALIBRATION_SCORES: dict[str, tuple[str, bool]] = {
    "span_gap": ("span", False),            # mean |log p_T(span) - log p_P(span)| over aligned spans
    "proxy_surprise": ("sequence", False),  # -(the proxy's mean log-prob per byte)
    "relative_surprise": ("sequence", True),  # -(proxy's minus the reference teacher's, per byte)
}


def calibration_scores(teacher, side, prompts: Sequence[Sequence[int]], prompt_texts: Sequence[str],
                       completions: Sequence[Sequence[int]], proxy_dir: str, names: Sequence[str] = ("span_gap",),
                       batch: int = 64) -> dict[str, np.ndarray]:
    """Minus the calibration reward r_cal of every sample, for each of ``names`` (``CALIBRATION_SCORES``),
    measured as ``CalibrationScorer`` measures it in calibrate, the teacher (here also the reference) at T = 1:
    a high score is what eta < 0 pays for."""
    import jax.numpy as jnp

    from jaxdistill.evaluate import model_and_tokenizer
    from jaxdistill.generation.sampler import bucket_length, left_pad
    from jaxdistill.rl.rewards import CalibrationScorer, plain_scoring, score_completions

    proxy, proxy_tokenizer = model_and_tokenizer(proxy_dir, "float32")
    scorers = {name: CalibrationScorer(proxy, proxy_tokenizer, side.tokenizer, mode=CALIBRATION_SCORES[name][0],
                                       subtract_reference=CALIBRATION_SCORES[name][1]) for name in names}
    scoring = plain_scoring(side.vocab_size)
    p_width = bucket_length(max(map(len, prompts)))
    c_width = bucket_length(max(max(map(len, completions)), 1))
    out: dict[str, list[float]] = {name: [] for name in names}
    for start in range(0, len(completions), batch):
        rows = [list(c) for c in completions[start:start + batch]]
        real = len(rows)
        rows += [rows[-1]] * (batch - real)
        chunk_prompts = list(prompts[start:start + batch]) + [prompts[start + real - 1]] * (batch - real)
        prompt_ids, prompt_mask = left_pad(chunk_prompts, p_width, side.pad_id)
        tokens = np.full((batch, c_width), side.pad_id, np.int32)
        mask = np.zeros((batch, c_width), np.int32)
        for i, row in enumerate(rows):
            tokens[i, :len(row)], mask[i, :len(row)] = row, 1
        teacher_lp = score_completions(teacher, jnp.asarray(prompt_ids), jnp.asarray(prompt_mask),
                                       jnp.asarray(tokens), jnp.asarray(mask), scoring, lora=False, chunk_size=128)
        texts = list(prompt_texts[start:start + batch]) + [prompt_texts[start + real - 1]] * (batch - real)
        for name, scorer in scorers.items():
            reward, _, _ = scorer(texts, rows, teacher_lp, teacher_lp)  # the teacher is its own reference
            out[name] += (-np.asarray(reward[:real])).tolist()
    return {name: np.asarray(v, np.float64) for name, v in out.items()}


def harm(side, prompt_texts: Sequence[str], completions: Sequence[Sequence[int]], proxy_dir: str,
         validation: Sequence[tuple[str, str]], batch: int = 64) -> tuple[np.ndarray, dict[str, float]]:
    """The harm score of every sample against the proxy (``jaxdistill.rl.influence``), its direction from
    the gold ``validation`` (prompt, solution) pairs; and the direction's stability (cosine of halves)."""
    from jaxdistill.evaluate import model_and_tokenizer
    from jaxdistill.rl.influence import (harm_scores, retokenized_batch, split_proxy, text_batch, tree_cosine,
                                         validation_direction)

    import jax

    proxy, proxy_tokenizer = model_and_tokenizer(proxy_dir, "float32")
    graphdef, params, rest = split_proxy(proxy)
    vocab = proxy_tokenizer.vocab_size
    batches = [text_batch(proxy_tokenizer, [p for p, _ in validation[i:i + batch]],
                          [s for _, s in validation[i:i + batch]]) for i in range(0, len(validation), batch)]
    half = len(batches) // 2
    if half == 0:
        raise ValueError(f"{len(validation)} validation texts make fewer than two batches of {batch}")
    u_a, _, _ = validation_direction(params, graphdef, rest, batches[:half], vocab)
    u_b, _, _ = validation_direction(params, graphdef, rest, batches[half:2 * half], vocab)
    u, norm, loss = validation_direction(params, graphdef, rest, batches[:2 * half], vocab)
    stats = {"stability_cosine": tree_cosine(u_a, u_b), "validation_texts": 2 * half * batch,
             "validation_loss": loss, "gradient_norm": norm}
    scores = []
    eos = side.eos_id
    for start in range(0, len(completions), batch):
        rows = [list(c) + [eos] for c in completions[start:start + batch]]
        real = len(rows)
        rows += [rows[-1]] * (batch - real)
        texts = list(prompt_texts[start:start + batch]) + [prompt_texts[start + real - 1]] * (batch - real)
        proxy_batch = retokenized_batch(side.tokenizer, rows, proxy_tokenizer, texts, strict=False)  # as r_cal
        scored = harm_scores(params, graphdef, rest, u, proxy_batch, vocab)
        scores += np.asarray(jax.device_get(scored))[:real].tolist()
    return np.asarray(scores, np.float64), stats


# ---- the student runs -------------------------------------------------------------------------------

def train_and_score(student: str, data_path: str, options: tuple[str, ...], seed: int, output_dir: str,
                    recipe: Recipe) -> dict[str, Any]:
    """One student trained on one set (the scorecard's seqkd recipe on fixed text) and scored greedy on the
    held-out problems; the result is kept in ``<output_dir>/result.json``. A rerun reuses it only when the run
    in ``output_dir`` is the finished run of these settings and this set's contents (``runner.finished``): a
    set that changed (a fixed score picks other samples) is trained again, the old run moved aside."""
    from jaxdistill.distill.trainer import DistillConfig
    from jaxdistill.evaluate import model_and_tokenizer, make_task, score_model
    from jaxdistill.experiments import runner

    config = DistillConfig(student=student, objective="sft", task="arith", task_options=options, data_path=data_path,
                           max_steps=recipe.steps, train_batch_size=recipe.batch_size, learning_rate=recipe.learning_rate,
                           lr_schedule="cosine", max_completion_length=recipe.max_completion_length, seed=seed,
                           output_dir=output_dir, save_steps=0, eval_num_prompts=0, resume=True, progress=False)
    result_file = Path(output_dir) / "result.json"
    if runner.finished(config) and result_file.exists():
        return json.loads(result_file.read_text())
    runner.distilled_student(config)
    task = make_task("arith", options)
    examples = task.load("test", limit=recipe.eval_size)
    model, tokenizer = model_and_tokenizer(output_dir, "float32")
    result = score_model(model, tokenizer, task, examples, max_new_tokens=recipe.max_completion_length,
                         batch_size=64)
    result_file.write_text(json.dumps(result, indent=2))
    return result


def train_on_sets(sets: Sequence[str], students: Mapping[str, str], out: Path, *, options: tuple[str, ...],
                  seeds: Sequence[int], recipe: Recipe, workers: int, label: str, train: bool = True
                  ) -> dict[str, dict[str, list[float]]]:
    """Every student trained on every set ``out/sets/<set>.jsonl`` (``train_and_score``, into
    ``out/runs/<set>/<student>/seed<s>``), seed by seed so that a stopped run holds every set at its first
    seeds; ``train=False`` trains nothing. Returns ``{set: {student: [accuracy of each finished seed]}}``."""
    from jaxdistill.experiments.jobs import Job, run_jobs

    for s in seeds if train else ():
        jobs = [Job(f"{name} {student} seed {s}", train_and_score, dict(
            student=students[student], data_path=str(out / "sets" / f"{name}.jsonl"), options=options, seed=s,
            output_dir=str(out / "runs" / name / student / f"seed{s}"), recipe=recipe), cost=60.0, kind="sft")
            for name in sets for student in students]
        run_jobs(jobs, workers=workers, label=f"{label} seed {s}", compilation_cache=str(out / "compilation_cache"))
    accuracy: dict[str, dict[str, list[float]]] = {}
    for name in sets:
        for student in students:
            files = [out / "runs" / name / student / f"seed{s}" / "result.json" for s in seeds]
            accuracy.setdefault(name, {})[student] = [json.loads(f.read_text())["accuracy"] for f in files
                                                      if f.exists()]
    return accuracy


def accuracy_and_ratio(runs: Sequence[float], reference: Sequence[float]) -> list[str]:
    """Two table cells: accuracy % (mean ± std over seeds) and its ratio to ``reference``'s (± se)."""
    acc = np.asarray(runs) * 100
    ratio, se = ratio_to_random(runs, reference)
    std = acc.std(ddof=1) if len(acc) > 1 else 0.0
    return [f"{acc.mean():.1f} ± {std:.1f}", f"{ratio:.2f} ± {se:.2f}"]


# ---- the experiment ---------------------------------------------------------------------------------

def scored_samples(*, teacher: str, proxy: str, out: Path, world_version: int = 1, prompts: int = 1000, k: int = 4,
                   scores: Sequence[str] = ("span_gap", "harm"), validation_texts: int = 1024,
                   validation_world_version: int = 0, max_new_tokens: int = 80, seed: int = 0
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The teacher's samples of the first ``prompts`` train problems, each with its verdict and every score
    (``random``, ``corrections``, ``result_first`` always; ``CALIBRATION_SCORES`` and ``harm`` when asked), and the
    scoring's statistics; kept in ``out/samples.jsonl`` and ``out/scores.json`` (a rerun with the same
    settings reuses them; one with other settings is refused). The harm direction comes from the gold
    solutions of the ``validation_texts`` train problems after them, as world ``validation_world_version``
    writes them (0: ``world_version``)."""
    from jaxdistill.tasks.arith import detour_counts
    from jaxdistill.tasks.pipeline import prompt_text

    settings = {"teacher": str(teacher), "proxy": str(proxy), "world_version": world_version, "prompts": prompts,
                "k": k, "scores": sorted(scores), "validation_texts": validation_texts,
                "validation_world_version": validation_world_version or world_version,
                "max_new_tokens": max_new_tokens, "seed": seed}
    samples_file = out / "samples.jsonl"
    if samples_file.exists():
        stats = json.loads((out / "scores.json").read_text())
        # folders from before settings were recorded: taken as asked; samples that hold more scores than
        # asked serve as they are
        changed = run_folder.changes(stats.get("settings", settings), settings, ignore=("scores",))
        samples = [json.loads(line) for line in samples_file.read_text().splitlines()]
        missing = [name for name in settings["scores"] if name not in samples[0]]
        if changed or missing:
            what = run_folder.describe(changed) if changed else f"without the scores {missing}"
            raise ValueError(f"{out} holds samples scored with other settings ({what}): "
                             "give another output_dir, or delete its samples.jsonl to score again")
        return samples, stats
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    task = _task(world_version)
    train = task.load("train", limit=prompts + validation_texts)
    examples, validation = train[:prompts], train[prompts:]
    ids, texts, finished, teacher_model, side, prompt_ids = sample_teacher(
        teacher, task, examples, k, max_new_tokens, seed, out / "teacher_samples.json")
    correct = [task.verify(t, examples[i // k]).reward == 1.0 and "####" in t for i, t in enumerate(texts)]
    prompt_texts = [examples[i // k].prompt for i in range(len(texts))]
    # the proxy reads each prompt as it was trained and as calibrate renders it (the task's format), not
    # the bare question: a prompt it never saw shifts its log-probs and its gradient
    proxy_prompts = [prompt_text(task, examples[i // k], None, False) for i in range(len(texts))]
    values = {"random": np.random.default_rng([seed, 1]).random(len(texts))}
    counts = [detour_counts(t) for t in texts]
    for name, column in zip(("corrections", "result_first"), zip(*map(detour_scores, counts))):
        values[name] = np.array(column, np.float64)
    stats: dict[str, Any] = {"settings": settings, "sampling_seconds": time.perf_counter() - started}
    asked = [name for name in CALIBRATION_SCORES if name in scores]
    if asked:
        values.update(calibration_scores(teacher_model, side, [prompt_ids[i // k] for i in range(len(texts))],
                                         proxy_prompts, ids, proxy, asked))
    if "harm" in scores:
        from jaxdistill.tasks import restyled_solutions

        gold = restyled_solutions(validation, _task(validation_world_version or world_version), "train",
                                  first=prompts)  # the same problems, as that world writes them
        values["harm"], stats["harm"] = harm(side, proxy_prompts, ids, proxy, [
            (prompt_text(task, e, None, False), solution) for e, solution in zip(validation, gold)])
        stats["harm"]["validation_world_version"] = validation_world_version or world_version
    samples = [{"prompt": prompt_texts[i], "completion": texts[i], "correct": bool(correct[i]),
                "finished": bool(finished[i]), "hollow": counts[i].hollow,
                **{name: float(v[i]) for name, v in values.items()}} for i in range(len(texts))]
    samples_file.write_text("".join(json.dumps(row) + "\n" for row in samples))
    stats["scoring_seconds"] = time.perf_counter() - started
    (out / "scores.json").write_text(json.dumps(stats, indent=2))
    return samples, stats


def run_selection(*, teacher: str, proxy: str, students: Mapping[str, str], out: Path, world_version: int = 1,
                  prompts: int = 1000, k: int = 4, seeds: Sequence[int] = (0, 1, 2),
                  selections: Sequence[str] | None = None, validation_texts: int = 1024,
                  validation_world_version: int = 0, recipe: Recipe = Recipe(), workers: int = 2, seed: int = 0,
                  train: bool = True) -> dict[str, Any]:
    """The whole test (module docstring); returns what it writes to ``out/selection.json``. Reruns reuse
    the scored samples and every finished student run in ``out``; ``train=False`` only tabulates the
    student runs already finished (each set over the seeds it has)."""
    from jaxdistill.tasks.arith import detour_counts, rewrite_equations

    selections = list(selections or [s for s, (score, _) in SELECTIONS.items()
                                     if world_version != 1 or score not in V2_ONLY])
    named = list(SELECTIONS) + [EVERY_SAMPLE] + list(REWRITTEN)
    unknown = [s for s in selections if s not in named]
    if unknown or "random" not in selections:
        raise ValueError(f"selections {unknown or selections}: choose among {named}, random included")
    picks = [s for s in selections if s in SELECTIONS]  # every rewritten set's base is random or every_sample
    with run_folder.held(out, "selection test"):
        started = time.perf_counter()
        samples, stats = scored_samples(teacher=teacher, proxy=proxy, out=out, world_version=world_version,
                                        prompts=prompts, k=k, scores={SELECTIONS[s][0] for s in picks},
                                        validation_texts=validation_texts,
                                        validation_world_version=validation_world_version,
                                        max_new_tokens=recipe.max_completion_length, seed=seed)
        correct = np.array([s["correct"] for s in samples]).reshape(prompts, k)
        keep = correct.any(axis=1)  # the same prompts in every set
        sets_dir = out / "sets"
        sets_dir.mkdir(exist_ok=True)
        set_stats, picked_rows = {}, {}
        for name in picks:
            score, direction = SELECTIONS[name]
            values = np.array([s[score] for s in samples]).reshape(prompts, k)
            picked = pick_one_per_prompt(values, correct, direction, np.random.default_rng([seed, 2, len(name)]))
            picked_rows[name] = [samples[p * k + picked[p]] for p in np.flatnonzero(keep)]
        picked_rows[EVERY_SAMPLE] = samples
        for name in selections:
            if name in REWRITTEN:  # the picks' text in one order; the scores measured on the old text are dropped
                base, order = REWRITTEN[name]
                rows = [{"prompt": r["prompt"], "completion": rewrite_equations(r["completion"], order),
                         "correct": r["correct"]} for r in picked_rows[base]]
                for r in rows:
                    r["corrections"], r["result_first"] = detour_scores(detour_counts(r["completion"]))
            else:
                rows = picked_rows[name]
            (sets_dir / f"{name}.jsonl").write_text("".join(
                json.dumps({"question": r["prompt"], "answer": r["completion"]}) + "\n" for r in rows))
            set_stats[name] = {"rows": len(rows), "mean_chars": float(np.mean([len(r["completion"]) for r in rows])),
                               "share_correct": float(np.mean([r["correct"] for r in rows])),
                               **{f"mean_{s}": float(np.mean([r[s] for r in rows]))
                                  for s in ("corrections", "result_first", *CALIBRATION_SCORES, "harm") if s in rows[0]}}
        accuracy = train_on_sets(selections, students, out, options=task_options(world_version), seeds=seeds,
                                 recipe=recipe, workers=workers, label="selection", train=train)
        if not all(accuracy["random"].values()):
            raise ValueError(f"no finished student run of the random set in {out / 'runs'}: nothing to compare with")
        summary = {"teacher": teacher, "proxy": proxy, "students": dict(students), "world_version": world_version,
                   "prompts": prompts, "samples_per_prompt": k, "seeds": list(seeds), "recipe": dataclasses.asdict(recipe),
                   "teacher_accuracy_t1": float(correct.mean()), "prompts_kept": int(keep.sum()), "scoring": stats,
                   "sets": set_stats, "accuracy": accuracy, "seconds": time.perf_counter() - started}
        (out / "selection.json").write_text(json.dumps(summary, indent=2))
        (out / "selection.md").write_text(selection_table(summary))
        return summary


def ratio_table(summary: Mapping[str, Any], *, reference: str, label: str, extra_headers: Sequence[str],
                extra_cells: Callable[[Mapping[str, Any]], list[str]]) -> str:
    """Markdown: one row per set of ``summary["accuracy"]`` that every student has trained on: its seeds,
    each student's accuracy and ratio to the ``reference`` set's (± standard error), then
    ``extra_cells(summary["sets"][set])`` under ``extra_headers``. ``label`` heads the first column."""
    students = list(summary["students"])
    accuracy = summary["accuracy"]
    head = f"| {label} | seeds | " + " | ".join(f"{s} accuracy % | {s} x {reference}" for s in students) + \
           " | " + " | ".join(extra_headers) + " |"
    lines = [head, "|" + "---|" * (2 + 2 * len(students) + len(extra_headers))]
    for name, by_student in accuracy.items():
        if not all(by_student.values()):
            continue  # not trained yet
        cells = [cell for student in students
                 for cell in accuracy_and_ratio(by_student[student], accuracy[reference][student])]
        seeds = min(len(v) for v in by_student.values())
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells + extra_cells(summary["sets"][name])) + " |")
    return "\n".join(lines) + "\n"


def selection_table(summary: Mapping[str, Any]) -> str:
    """Markdown: per set, each student's accuracy and ratio to random (± standard error), and what it holds."""
    def holds(st: Mapping[str, Any]) -> list[str]:
        return [f"{st.get('mean_corrections', 0):.2f}", f"{st.get('mean_result_first', 0):.2f}",
                f"{st['mean_span_gap']:.3f}" if "mean_span_gap" in st else "",
                f"{1e3 * st['mean_harm']:.2f}" if "mean_harm" in st else "",
                *(f"{st[f'mean_{s}']:.3f}" if f"mean_{s}" in st else "" for s in ("proxy_surprise", "relative_surprise")),
                f"{st['mean_chars']:.0f}"]

    return ratio_table(summary, reference="random", label="set", extra_cells=holds, extra_headers=(
        "corrections / sample", "result-first / sample", "span gap", "harm (x1e3)", "proxy surprise / byte",
        "relative surprise / byte", "chars"))


@dataclasses.dataclass
class SelectionConfig(BaseConfig):
    """The selection test's settings (``key=value`` or YAML)."""

    run_dir: str = option("", "a default-run folder: its world's teacher, proxy and students")
    teacher: str = option("", "HF folder of the teacher (overrides run_dir's)")
    proxy: str = option("", "HF folder of the proxy; also the proxy_like student (overrides run_dir's)")
    other: str = option("", "HF folder of the other student (overrides run_dir's)")
    world_version: int = option(1, "arith world the prompts and gold text come from", choices=(1, 2, 3))
    output_dir: str = option("", "output folder (default: <run_dir>/selection_v<world_version>)")
    num_prompts: int = option(1000, "train prompts the teacher samples", ge=1)
    samples_per_prompt: int = option(4, "teacher samples per prompt (T = 1)", ge=2)
    seeds: tuple[int, ...] = option((0, 1, 2), "student seeds of every set")
    selections: tuple[str, ...] = option((), "sets to train (default: every selection that applies; "
                                             "every_sample and the rewritten sets only when named)",
                                         choices=tuple(SELECTIONS) + (EVERY_SAMPLE,) + tuple(REWRITTEN))
    validation_texts: int = option(1024, "gold texts behind the harm direction", ge=2)
    validation_world_version: int = option(0, "the world whose gold solutions the harm direction reads (0: "
                                              "world_version; 1 with world_version=2 and v1 students: the "
                                              "mixed world's students' own gold)", choices=(0, 1, 2, 3))
    max_completion_length: int = option(0, "teacher samples and student training (0: the world's, 80 in v1 and "
                                           "v3, 128 in v2)", ge=0)
    workers: int = option(2, "processes training students at once", ge=1)
    table_only: bool = option(False, "only tabulate the student runs already finished")

    def validate(self) -> None:
        super().validate()
        if not (self.run_dir or (self.teacher and self.proxy and self.other)):
            raise ValueError("give run_dir=<default-run folder>, or teacher=, proxy= and other=")


def select(args: SelectionConfig) -> None:
    from jaxdistill.experiments.world import COMPLETION_LENGTH, world_paths

    paths = world_paths(Path(args.run_dir) / "world") if args.run_dir else {}
    teacher, proxy = args.teacher or paths.get("teacher"), args.proxy or paths.get("proxy")
    other = args.other or paths.get("student_other")
    length = args.max_completion_length or COMPLETION_LENGTH[args.world_version]
    out = Path(args.output_dir or Path(args.run_dir) / f"selection_v{args.world_version}")
    summary = run_selection(teacher=str(teacher), proxy=str(proxy), students={"proxy_like": str(proxy),
                            "other": str(other)}, out=out, world_version=args.world_version,
                            prompts=args.num_prompts, k=args.samples_per_prompt, seeds=list(args.seeds),
                            selections=list(args.selections) or None, validation_texts=args.validation_texts,
                            validation_world_version=args.validation_world_version,
                            recipe=Recipe(max_completion_length=length), workers=args.workers,
                            train=not args.table_only)
    print(selection_table(summary))


def main(argv: list[str] | None = None) -> int:
    return run_cli(SelectionConfig, select, argv, prog="python -m jaxdistill.experiments.selection",
                   description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
