"""Accuracy of models on tasks, the teacher before/after comparison, and the distillation scorecard.

``python -m jaxdistill.evaluate models=[base=runs/tiny/teacher,kd=runs/kd/s0,kd=runs/kd/s1] tasks=[arith]``

- Models are HF folders or run folders (whose final model is in ``<run>/model``); entries that share a
  label are seeds of one arm and are reported as mean +- std.
- Decoding is greedy (``temperature=0``) or sampled with ``samples_per_prompt=k`` (accuracy = avg@k).
  Generation is batched through ``jaxdistill.generation.batched``; the unparseable-answer rate is
  reported apart from accuracy.
- With ``original_teacher`` and ``calibrated_teachers``, each calibrated teacher is compared with the
  original: accuracy under identical decoding, mean per-token KL(calibrated || original) on the
  calibrated teacher's own samples (temperature 1), and mean response length.
- ``--scorecard`` trains and evaluates every arm of DESIGN.md section 3 (see :func:`scorecard`).

Outputs (``output_dir``): ``results.json``, ``results.md`` and ``results.png`` (scorecard:
``scorecard.json``, ``scorecard.md``, ``scorecard.png`` and the student runs under ``runs/``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from flax import nnx

from jaxdistill.config import configure_logging, option, parse_args
from jaxdistill.distill.data import TeacherSampleCache, pad_sequences, same_tokenizer
from jaxdistill.distill.objectives import LossSettings, token_kd_per_token
from jaxdistill.distill.trainer import DistillConfig, distill
from jaxdistill.tasks import parse_task_options
from jaxdistill.generation import batched
from jaxdistill.generation.batched import sample_batched
from jaxdistill.generation.tokenized_model import TokenizedModel
from jaxdistill.jobs import JOB_OVERHEAD_SECONDS, Job, default_workers, run_jobs
from jaxdistill.models import Qwen, load_model
from jaxdistill.tasks import Example, Task, get_task, list_tasks
from jaxdistill.token_maths import masked_mean
from jaxdistill.tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)


# ---- configs ------------------------------------------------------------------------------------

@dataclasses.dataclass
class ScorecardConfig:
    """The arms of DESIGN.md section 3: which teachers, which students, which attacks, which seeds."""

    teacher_eta0: str = option("", "HF folder of the eta = 0 (plain RFT) teacher")
    teacher_distillable: str = option("", "HF folder of the eta > 0 (distillable) teacher")
    teacher_undistillable: str = option("", "HF folder of the eta < 0 (undistillable) teacher")
    students: tuple[str, ...] = option((), "label=path entries: each student's starting HF folder (its tokenizer "
                                           "inside); include one that differs from the proxy")
    attacks: tuple[str, ...] = option(("kd",), "objectives run against every teacher: kd | seqkd | gkd")
    seeds: tuple[int, ...] = option((0, 1, 2), "training seeds of every arm (mean +- std over them)")
    workers: int = option(0, "processes running arms at once (0: one per CPU core on a CPU host, 1 on an "
                             "accelerator); the results do not depend on it")
    collapse_ratio: float = option(0.2, "an arm collapses when its accuracy <= this x the accuracy of the same "
                                        "student and attack from the original teacher")
    recipe: DistillConfig = option(DistillConfig(), "the shared distillation recipe (student, teacher, "
                                                    "objective, seed and output_dir are set per arm)")


@dataclasses.dataclass
class EvaluateConfig:
    """Every option of ``python -m jaxdistill.evaluate`` (YAML keys or ``key=value`` overrides)."""

    models: tuple[str, ...] = option((), "label=path entries (HF or run folders); a repeated label = seeds "
                                         "of one arm; a bare path is labelled by its folder name")
    tasks: tuple[str, ...] = option(("arith",), "tasks to evaluate on: " + " | ".join(list_tasks()))
    task_options: tuple[str, ...] = option((), "key=value (every task) or task:key=value options for the task "
                                               "constructors, e.g. [arith:difficulty=1]")
    data_paths: tuple[str, ...] = option((), "task=path entries: local data per task (default: generated or hub)")
    split: str = option("test", "split evaluated")
    limit: int = option(200, "examples per task (0 = the whole split)")
    temperature: float = option(0.0, "0 = greedy; > 0 samples (accuracy is avg@k over samples_per_prompt)")
    samples_per_prompt: int = option(1, "k of avg@k when sampling (greedy always uses 1)")
    top_p: float = option(1.0, "nucleus mass when sampling")
    max_new_tokens: int = option(256, "completion budget")
    batch_size: int = option(64, "prompts per generation call")
    seed: int = option(0, "sampling seed")
    chat_template: bool = option(False, "render prompts with each tokenizer's chat template")
    dtype: str = option("float32", "float32 | bfloat16")
    original_teacher: str = option("", "HF folder of the original teacher (teacher comparison and scorecard)")
    calibrated_teachers: tuple[str, ...] = option((), "label=path entries compared with original_teacher: "
                                                      "accuracy, KL to the original, response length")
    output_dir: str = option("runs/evaluate", "where results (or the scorecard and its runs) are written")
    scorecard: ScorecardConfig = option(ScorecardConfig(), "scorecard mode (--scorecard)")


# ---- models and tasks ---------------------------------------------------------------------------

def resolve_model_dir(path: str | Path) -> Path:
    """An HF folder (``config.json`` inside) or a run folder whose final model is ``<run>/model``."""
    folder = Path(path).expanduser()
    for candidate in (folder, folder / "model"):
        if (candidate / "config.json").is_file():
            return candidate
    if not folder.exists():
        raise FileNotFoundError(f"model path {folder} does not exist; give an HF model folder (config.json + "
                                "*.safetensors) or a run folder holding model/")
    if (folder / "checkpoints").is_dir():
        raise FileNotFoundError(f"{folder} is a run folder without a final model/ (unfinished run?); resume it "
                                "with resume=true to export the model")
    raise FileNotFoundError(f"{folder} holds no config.json and no model/config.json; give an HF model folder "
                            "or a run folder")


def parse_entries(entries: Sequence[str], what: str) -> dict[str, list[str]]:
    """``["a=x", "a=y", "z"]`` -> ``{"a": ["x", "y"], "z": ["z"]}`` (a bare path is labelled by its name)."""
    groups: dict[str, list[str]] = {}
    for entry in entries:
        label, _, path = entry.partition("=") if "=" in entry else (Path(entry).name, "", entry)
        if not label.strip() or not path.strip():
            raise ValueError(f"{what} entry {entry!r} is not label=path")
        groups.setdefault(label.strip(), []).append(path.strip())
    return groups


def make_task(name: str, options: Sequence[str] = ()) -> Task:
    """``get_task`` with a clear error; options are ``key=value`` (all tasks) or ``task:key=value``."""
    if name not in list_tasks():
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(list_tasks())}")
    mine = []
    for item in options:
        if ":" in item.split("=", 1)[0]:  # "task:key=value" applies to that task only
            task_name, item = item.split(":", 1)
            if task_name != name:
                continue
        mine.append(item)
    return get_task(name, **parse_task_options(tuple(mine)))


def _model_and_tokenizer(path: str | Path, dtype: str) -> tuple[Qwen, Any]:
    folder = resolve_model_dir(path)
    if not (folder / "tokenizer.json").exists() and not (folder / "tokenizer_config.json").exists():
        raise FileNotFoundError(f"{folder} has no tokenizer files; export models with "
                                "save_model(..., tokenizer_dir=...) so each folder carries its tokenizer")
    model, _ = load_model(folder, dtype)
    return model, load_tokenizer(folder)


# ---- scoring one model ----------------------------------------------------------------------------

def score_model(model: Qwen, tokenizer: Tokenizer, task: Task, examples: Sequence[Example], *, chat: bool = False,
                **decoding) -> dict[str, Any]:
    """``jaxdistill.generation.batched.score_model`` of ``model`` read through ``tokenizer`` (``chat``: prompts
    rendered with its chat template, completions end on ``<|im_end|>``)."""
    return batched.score_model(TokenizedModel.of(tokenizer, chat, model), task, examples, **decoding)


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    values = np.asarray(values, np.float64)
    return float(values.mean()), float(values.std(ddof=1)) if len(values) > 1 else 0.0


def evaluate_models(models: Mapping[str, str | Sequence[str]], tasks: Sequence[str] = ("arith",), *,
                    task_options: Sequence[str] = (), data_paths: Mapping[str, str] | None = None,
                    split: str = "test", limit: int = 200, temperature: float = 0.0, samples_per_prompt: int = 1,
                    top_p: float = 1.0, max_new_tokens: int = 256, batch_size: int = 64, seed: int = 0,
                    chat: bool = False, dtype: str = "float32", output_dir: str | Path | None = None
                    ) -> dict[str, Any]:
    """Accuracy of every model on every task; groups of paths under one label are seeds (mean +- std).

    Returns ``{"settings": ..., "models": {label: {"runs": [{"path", task: metrics}], task: aggregate}}}``
    where ``aggregate`` holds ``accuracy_mean``, ``accuracy_std``, ``unparseable_rate_mean``,
    ``mean_length_mean`` and ``n_runs``. With ``output_dir``, writes results.json / .md / .png.
    """
    groups = {label: [paths] if isinstance(paths, (str, Path)) else list(paths) for label, paths in models.items()}
    if not groups:
        raise ValueError("no models to evaluate: give models=[label=path, ...]")
    task_objects = {name: make_task(name, task_options) for name in tasks}  # unknown task: error now
    for paths in groups.values():  # a wrong path: error before any model is loaded
        for path in paths:
            resolve_model_dir(path)
    data_paths = dict(data_paths or {})
    examples = {name: task.load(split, data_paths.get(name), limit=limit or None)
                for name, task in task_objects.items()}
    settings = dict(split=split, limit=limit, temperature=temperature, samples_per_prompt=samples_per_prompt,
                    top_p=top_p, max_new_tokens=max_new_tokens, seed=seed, chat=chat)
    results: dict[str, Any] = {"settings": settings, "models": {}}
    for label, paths in groups.items():
        runs = []
        for path in paths:
            model, tokenizer = _model_and_tokenizer(path, dtype)
            run = {"path": str(path)}
            for name, task in task_objects.items():
                run[name] = score_model(model, tokenizer, task, examples[name], max_new_tokens=max_new_tokens,
                                        temperature=temperature, samples_per_prompt=samples_per_prompt,
                                        top_p=top_p, seed=seed, batch_size=batch_size, chat=chat)
                log.info("%s (%s) on %s: accuracy %.3f", label, path, name, run[name]["accuracy"])
            runs.append(run)
            del model
        entry: dict[str, Any] = {"runs": runs}
        for name in task_objects:
            entry[name] = aggregate([run[name] for run in runs])
        results["models"][label] = entry
    if output_dir is not None:
        write_results(results, list(task_objects), Path(output_dir))
    return results


def aggregate(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Mean and std (over seeds) of accuracy; means of the unparseable rate and response length."""
    accuracy_mean, accuracy_std = _mean_std([r["accuracy"] for r in runs])
    return {"accuracy_mean": accuracy_mean, "accuracy_std": accuracy_std,
            "unparseable_rate_mean": float(np.mean([r["unparseable_rate"] for r in runs])),
            "mean_length_mean": float(np.mean([r["mean_length"] for r in runs])), "n_runs": len(runs)}


def _pm(mean: float, std: float) -> str:
    return f"{100 * mean:.1f} ± {100 * std:.1f}"


def write_results(results: Mapping[str, Any], tasks: Sequence[str], out: Path) -> None:
    """results.json, results.md (accuracy % mean ± std; unparseable % and length apart) and results.png."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    header = "| model | runs | " + " | ".join(f"{t} accuracy % | {t} unparseable % | {t} length" for t in tasks) + " |"
    lines = [header, "|" + "---|" * (2 + 3 * len(tasks))]
    for label, entry in results["models"].items():
        cells = []
        for t in tasks:
            a = entry[t]
            cells += [_pm(a["accuracy_mean"], a["accuracy_std"]), f"{100 * a['unparseable_rate_mean']:.1f}",
                      f"{a['mean_length_mean']:.1f}"]
        lines.append(f"| {label} | {entry[tasks[0]]['n_runs']} | " + " | ".join(cells) + " |")
    s = results["settings"]
    decoding = "greedy" if s["temperature"] == 0 else f"T={s['temperature']}, avg@{s['samples_per_prompt']}"
    text = f"# Accuracy ({decoding}, {s['split']} split, {s['limit'] or 'all'} examples per task)\n\n"
    text += "\n".join(lines) + "\n"
    if "teachers" in results:
        text += "\n" + teacher_table(results["teachers"])
    (out / "results.md").write_text(text)
    bar_chart({label: {t: (e[t]["accuracy_mean"], e[t]["accuracy_std"]) for t in tasks}
               for label, e in results["models"].items()}, out / "results.png", title=f"accuracy ({decoding})")


def bar_chart(values: Mapping[str, Mapping[str, tuple[float, float]]], path: Path, *, title: str) -> Path:
    """Grouped bars: one group per inner key (task or arm), one bar per outer key, std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = list(values)
    groups = list(dict.fromkeys(g for v in values.values() for g in v))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(groups) * max(len(series), 1) * 0.5 + 2), 3.5))
    x = np.arange(len(groups))
    for i, name in enumerate(series):
        means = [100 * values[name].get(g, (np.nan, 0))[0] for g in groups]
        stds = [100 * values[name].get(g, (0, 0))[1] for g in groups]
        ax.bar(x + (i - (len(series) - 1) / 2) * width, means, width, yerr=stds, capsize=3, label=name)
    ax.set_xticks(x, groups, rotation=20 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=max(1, len(series) // 6 + 1))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- teachers before and after calibration ----------------------------------------------------------

@partial(jax.jit, static_argnames=("graphdef_a", "graphdef_b", "settings"))
def _token_kl(state_a, state_b, seqs, graphdef_a, graphdef_b, settings):
    """Per-token KL(p_a || p_b) of the next-token distributions along ``seqs``, masked mean."""
    model_a, model_b = nnx.merge(graphdef_a, state_a), nnx.merge(graphdef_b, state_b)
    per_token = token_kd_per_token(model_a, model_b, seqs, seqs, settings)  # reverse_kl: KL(p_a || p_b)
    return masked_mean(per_token, seqs.mask), seqs.mask.sum()


def mean_token_kl(lm: TokenizedModel, reference: Qwen, prompts: Sequence[Sequence[int]],
                  completions: Sequence[Sequence[int]], *, batch_size: int = 64) -> float:
    """Mean over completion tokens of ``KL(p_model(.|ctx) || p_reference(.|ctx))``, ``reference`` reading
    through ``lm``'s tokenizer."""
    settings = LossSettings(kind="token_kd", divergence="reverse_kl", student_vocab_size=lm.vocab_size,
                            teacher_vocab_size=lm.vocab_size)
    graphdef_a, state_a = nnx.split(lm.model)
    graphdef_b, state_b = nnx.split(reference)
    width = max(max(map(len, completions)), 1)
    total, count = 0.0, 0
    for start in range(0, len(prompts), batch_size):
        seqs = pad_sequences(prompts[start:start + batch_size], completions[start:start + batch_size],
                             lm.pad_id, width=width)
        kl, n = _token_kl(state_a, state_b, seqs, graphdef_a, graphdef_b, settings)
        total, count = total + float(kl) * float(n), count + float(n)
    return total / max(count, 1.0)


def compare_teachers(original: str | Path, calibrated: Mapping[str, str | Path], task: Task,
                     examples: Sequence[Example], *, max_new_tokens: int = 256, temperature: float = 0.0,
                     samples_per_prompt: int = 1, top_p: float = 1.0, seed: int = 0, batch_size: int = 64,
                     chat: bool = False, dtype: str = "float32") -> dict[str, Any]:
    """Each calibrated teacher next to the original: accuracy with identical decoding, mean token KL to the
    original on the calibrated teacher's own samples (temperature 1), mean response length."""
    decoding = dict(max_new_tokens=max_new_tokens, temperature=temperature, samples_per_prompt=samples_per_prompt,
                    top_p=top_p, seed=seed, batch_size=batch_size, chat=chat)
    base, base_tokenizer = _model_and_tokenizer(original, dtype)
    out = {"original": {"path": str(original), **score_model(base, base_tokenizer, task, examples, **decoding)}}
    prompts = [TokenizedModel.of(base_tokenizer, chat).prompt(task, e) for e in examples]
    for label, path in calibrated.items():
        model, tokenizer = _model_and_tokenizer(path, dtype)
        if not same_tokenizer(tokenizer, base_tokenizer):
            raise ValueError(f"calibrated teacher {label} ({path}) has another tokenizer than the original "
                             f"teacher ({original}); a KL between them needs one vocabulary")
        entry = {"path": str(path), **score_model(model, tokenizer, task, examples, **decoding)}
        lm = TokenizedModel.of(tokenizer, chat, model)
        samples = sample_batched(lm, prompts, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                 temperature=1.0, seed=seed)
        entry["kl_to_original"] = mean_token_kl(lm, base, prompts, samples.ids, batch_size=batch_size)
        entry["accuracy_change"] = entry["accuracy"] - out["original"]["accuracy"]
        out[label] = entry
    return out


def teacher_table(teachers: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown: accuracy (and change), KL to the original, unparseable rate and length of each teacher."""
    lines = ["## Teachers (identical decoding)", "",
             "| teacher | accuracy % | change (points) | KL to original (nats/token) | unparseable % | length |",
             "|---|---|---|---|---|---|"]
    for label, t in teachers.items():
        change = f"{100 * t['accuracy_change']:+.1f}" if "accuracy_change" in t else "-"
        kl = f"{t['kl_to_original']:.4f}" if "kl_to_original" in t else "0"
        lines.append(f"| {label} | {100 * t['accuracy']:.1f} | {change} | {kl} | "
                     f"{100 * t['unparseable_rate']:.1f} | {t['mean_length']:.1f} |")
    return "\n".join(lines) + "\n"


# ---- the scorecard ----------------------------------------------------------------------------------

TEACHER_ARMS = (("original", "original teacher"), ("eta0", "eta = 0 (RFT control)"),
                ("distillable", "eta > 0 (distillable)"), ("undistillable", "eta < 0 (undistillable)"))


def scorecard_arms(config: EvaluateConfig) -> list[dict[str, Any]]:
    """Every (arm, objective, teacher) of the scorecard, in the order they run."""
    card = config.scorecard
    teachers = {"original": config.original_teacher, "eta0": card.teacher_eta0,
                "distillable": card.teacher_distillable, "undistillable": card.teacher_undistillable}
    arms = [{"arm": "before", "objective": "sft", "teacher": "", "steps": 0},
            {"arm": "sft", "objective": "sft", "teacher": ""}]
    for attack in card.attacks:
        for key, _ in TEACHER_ARMS:
            if teachers[key]:
                arms.append({"arm": f"{attack}/{key}", "objective": attack, "teacher": teachers[key],
                             "teacher_key": key, "attack": attack})
    return arms


def check_scorecard(config: EvaluateConfig) -> dict[str, list[str]]:
    """The scorecard's students ({label: [path]}); raises ValueError / FileNotFoundError on bad settings."""
    card = config.scorecard
    students = parse_entries(card.students, "scorecard.students")
    if not students:
        raise ValueError("scorecard.students is empty: give scorecard.students=[label=HF folder, ...]")
    if not config.original_teacher:
        raise ValueError("the scorecard needs original_teacher=<HF folder of the teacher before calibration>")
    for attack in card.attacks:
        if attack not in ("seqkd", "kd", "gkd"):
            raise ValueError(f"scorecard attack {attack!r} is not valid; use seqkd, kd or gkd")
    if card.workers < 0:
        raise ValueError(f"scorecard.workers={card.workers}: give 0 (one per CPU core) or a positive count")
    return students


TEACHERS_JOB = "scorecard teachers"  # the job name of the teacher comparison


def arm_job(arm: Mapping[str, Any], seed: int) -> str:
    """The job name of one arm and seed (its result: ``run_arm``'s rows)."""
    return f"scorecard {arm['arm']} seed {seed}"


def arm_dir(config: EvaluateConfig, student: str, arm: Mapping[str, Any], seed: int) -> Path:
    """The run folder of one student, arm and seed."""
    return Path(config.output_dir) / "runs" / student / arm["arm"].replace("/", "_") / f"seed{seed}"


def run_arm(config: EvaluateConfig, arm: Mapping[str, Any], seed: int) -> list[dict[str, Any]]:
    """Train (or reuse: a run folder with ``summary.json``) and score every student of one arm and seed.

    The students read the same prompts and sampling seeds, so the teacher's completions are sampled once
    (``TeacherSampleCache``). Returns one row per student: {"student", "arm", "seed", **score_model(...)}.
    """
    recipe = config.scorecard.recipe
    task = make_task(recipe.task, recipe.task_options)
    examples = task.load(config.split, recipe.data_path or None, limit=config.limit or None)
    teacher_samples = TeacherSampleCache()
    rows = []
    for label, paths in parse_entries(config.scorecard.students, "scorecard.students").items():
        run_dir = arm_dir(config, label, arm, seed)
        if not (run_dir / "summary.json").exists():
            run_config = dataclasses.replace(
                recipe, student=str(resolve_model_dir(paths[0])), teacher=arm["teacher"] and
                str(resolve_model_dir(arm["teacher"])), objective=arm["objective"], seed=seed,
                output_dir=str(run_dir), max_steps=arm.get("steps", recipe.max_steps), resume=True,
                student_tokenizer="", teacher_tokenizer="", eval_size=0, progress=False)
            distill(run_config, teacher_samples=teacher_samples)
        model, tokenizer = _model_and_tokenizer(run_dir, config.dtype)
        result = score_model(model, tokenizer, task, examples, **_decoding(config))
        rows.append({"student": label, "arm": arm["arm"], "seed": seed, **result})
    return rows


def compare_scorecard_teachers(config: EvaluateConfig) -> dict[str, Any]:
    """``compare_teachers`` for the scorecard's original and calibrated teachers."""
    card, recipe = config.scorecard, config.scorecard.recipe
    task = make_task(recipe.task, recipe.task_options)
    examples = task.load(config.split, recipe.data_path or None, limit=config.limit or None)
    calibrated = {key: path for key, path in (("eta0", card.teacher_eta0), ("distillable", card.teacher_distillable),
                                              ("undistillable", card.teacher_undistillable)) if path}
    return compare_teachers(config.original_teacher, calibrated, task, examples, dtype=config.dtype,
                            **_decoding(config))


def _decoding(config: EvaluateConfig) -> dict[str, Any]:
    return dict(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                samples_per_prompt=config.samples_per_prompt, top_p=config.top_p, seed=config.seed,
                batch_size=config.batch_size, chat=config.chat_template)


# Relative cost of one training step per objective (sft = 1): seqkd samples the teacher, gkd samples the
# student and runs the teacher over the aligned spans. Only orders the jobs and drives the ETA.
STEP_COST = {"sft": 1.0, "seqkd": 1.3, "kd": 1.5, "gkd": 1.8}


def scorecard_jobs(config: EvaluateConfig, *, producers: Mapping[str, str] | None = None,
                   step_seconds: float = 0.15) -> list[Job]:
    """One job per (arm, seed) (``run_arm``: every student of it) and one for the teacher comparison.

    producers: {model path: name of the job that writes it}, when the students or teachers are made by
    jobs of the same graph (the default run); each arm job then waits on the jobs it reads from.
    step_seconds: a student's sft step on one core, for the jobs' expected cost.
    """
    producers = producers or {}
    card = config.scorecard
    students = parse_entries(card.students, "scorecard.students")
    student_jobs = tuple(producers[p[0]] for p in students.values() if p[0] in producers)
    jobs = []
    for arm in scorecard_arms(config):
        after = student_jobs + ((producers[arm["teacher"]],) if arm["teacher"] in producers else ())
        steps = arm.get("steps", card.recipe.max_steps)
        cost = len(students) * (JOB_OVERHEAD_SECONDS + steps * step_seconds * STEP_COST[arm["objective"]])
        for seed in card.seeds:
            jobs.append(Job(arm_job(arm, seed), run_arm, {"config": config, "arm": arm, "seed": seed},
                            after=after, cost=cost, kind="" if steps == 0 else arm["objective"]))
    teachers = (config.original_teacher, card.teacher_eta0, card.teacher_distillable, card.teacher_undistillable)
    problems = config.limit or 500  # greedy decoding, ~0.05 s per problem and teacher; a whole split counts 500
    jobs.append(Job(TEACHERS_JOB, compare_scorecard_teachers, {"config": config},
                    after=tuple(producers[t] for t in teachers if t in producers),
                    cost=JOB_OVERHEAD_SECONDS + 0.05 * problems * len(teachers)))
    return jobs


def assemble_scorecard(config: EvaluateConfig, results: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """The scorecard from the results of ``scorecard_jobs``: rows per (student, arm), collapse flags, the
    teacher table; writes scorecard.json, scorecard.md and scorecard.png in ``output_dir``."""
    card = config.scorecard
    arms = scorecard_arms(config)
    rows: dict[tuple[str, str], list[dict]] = {}
    for arm in arms:
        for seed in card.seeds:
            for row in results[arm_job(arm, seed)]:
                rows.setdefault((row["student"], row["arm"]), []).append(
                    {k: v for k, v in row.items() if k not in ("student", "arm")})
    table = []
    for label in parse_entries(card.students, "scorecard.students"):
        for arm in arms:
            runs = rows[(label, arm["arm"])]
            table.append({"student": label, "arm": arm["arm"], "objective": arm["objective"],
                          "teacher": arm.get("teacher_key", ""), **aggregate(runs), "runs": runs})
    flag_collapse(table, card.collapse_ratio)
    recipe = card.recipe
    result = {"settings": {"task": recipe.task, "split": config.split, "limit": config.limit,
                           "seeds": list(card.seeds), "collapse_ratio": card.collapse_ratio,
                           "decoding": _decoding(config), "recipe": dataclasses.asdict(recipe)},
              "arms": table, "seconds": seconds, "teachers": results[TEACHERS_JOB]}
    write_scorecard(result, Path(config.output_dir))
    return result


def scorecard(config: EvaluateConfig) -> dict[str, Any]:
    """Run every arm of DESIGN.md section 3 for every student and seed, evaluate them, write the table.

    Arms: the student before distillation; SFT on gold; then for each attack in ``scorecard.attacks``,
    distillation from the original, eta = 0, distillable and undistillable teachers (those given). All
    arms share ``scorecard.recipe`` (same prompts, steps, batch size, learning rate: same compute). A
    finished run (its ``summary.json`` exists) is reused, so an interrupted scorecard resumes. The arms
    run on ``scorecard.workers`` processes (``jaxdistill.jobs``); results do not depend on how many.
    "collapse": accuracy <= ``collapse_ratio`` x that of the same student and attack from the original.
    Writes scorecard.json, scorecard.md and scorecard.png in ``output_dir``; returns the JSON dict.
    """
    students = check_scorecard(config)
    card = config.scorecard
    for path in filter(None, [config.original_teacher, card.teacher_eta0, card.teacher_distillable,
                              card.teacher_undistillable] + [p for ps in students.values() for p in ps]):
        resolve_model_dir(path)
    make_task(card.recipe.task, card.recipe.task_options)
    started = time.perf_counter()
    results = run_jobs(scorecard_jobs(config), workers=card.workers or default_workers(), label="scorecard",
                       compilation_cache=str(Path(config.output_dir) / "compilation_cache"))
    return assemble_scorecard(config, results, time.perf_counter() - started)


def flag_collapse(rows: Sequence[dict[str, Any]], ratio: float = 0.2) -> None:
    """Marks each teacher arm (in place) with ``relative_to_original`` = its mean accuracy over that of the
    same student and attack distilled from the original teacher, and ``collapse`` = accuracy <= ratio x it
    (never when that reference accuracy is 0: the ratio is then undefined, reported as None).

    rows: dicts with ``student``, ``arm`` ("<attack>/<teacher>" for teacher arms), ``objective``,
    ``teacher`` ("" for the before / sft arms) and ``accuracy_mean``.
    """
    for row in rows:
        if not row["teacher"]:
            continue
        base = next((r for r in rows if r["student"] == row["student"] and r["arm"] == f"{row['objective']}/original"),
                    None)
        if base is None:
            raise ValueError(f"no {row['objective']}/original arm for student {row['student']} to compare with")
        if base["accuracy_mean"] > 0:
            row["relative_to_original"] = row["accuracy_mean"] / base["accuracy_mean"]
            row["collapse"] = bool(row["accuracy_mean"] <= ratio * base["accuracy_mean"])
        else:  # the original teacher taught nothing: there is nothing to collapse from
            row["relative_to_original"], row["collapse"] = None, False


def write_scorecard(result: Mapping[str, Any], out: Path) -> None:
    """scorecard.json, scorecard.md (students per arm, collapse flagged; the teachers) and scorecard.png."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "scorecard.json").write_text(json.dumps(result, indent=2))
    s = result["settings"]
    lines = [f"# Scorecard: {s['task']} ({s['split']}, {s['limit'] or 'all'} examples, seeds {s['seeds']})", "",
             f"Student accuracy % (mean ± std over seeds). collapse = accuracy <= {s['collapse_ratio']:g} x "
             "the same student and attack distilled from the original teacher.", "",
             "| student | arm | accuracy % | unparseable % | length | vs original | collapse |",
             "|---|---|---|---|---|---|---|"]
    for row in result["arms"]:
        relative = f"{row['relative_to_original']:.2f}" if row.get("relative_to_original") is not None else ""
        collapse = ("**collapse**" if row["collapse"] else "no") if "collapse" in row else ""
        lines.append(f"| {row['student']} | {row['arm']} | {_pm(row['accuracy_mean'], row['accuracy_std'])} | "
                     f"{100 * row['unparseable_rate_mean']:.1f} | {row['mean_length_mean']:.1f} | {relative} | "
                     f"{collapse} |")
    text = "\n".join(lines) + "\n"
    if result.get("teachers"):
        text += "\n" + teacher_table(result["teachers"])
    (out / "scorecard.md").write_text(text)
    values: dict[str, dict[str, tuple[float, float]]] = {}
    for row in result["arms"]:
        values.setdefault(row["student"], {})[row["arm"]] = (row["accuracy_mean"], row["accuracy_std"])
    bar_chart(values, out / "scorecard.png", title=f"student accuracy per arm ({s['task']})")


# ---- CLI --------------------------------------------------------------------------------------------

def evaluate(config: EvaluateConfig) -> dict[str, Any]:
    """The plain evaluation of ``config.models`` (plus the teacher comparison when teachers are given)."""
    results = evaluate_models(
        parse_entries(config.models, "models"), config.tasks, task_options=config.task_options,
        data_paths={k: v[0] for k, v in parse_entries(config.data_paths, "data_paths").items()},
        split=config.split, limit=config.limit, temperature=config.temperature,
        samples_per_prompt=config.samples_per_prompt, top_p=config.top_p, max_new_tokens=config.max_new_tokens,
        batch_size=config.batch_size, seed=config.seed, chat=config.chat_template, dtype=config.dtype)
    if config.original_teacher:
        task = make_task(config.tasks[0], config.task_options)
        data = parse_entries(config.data_paths, "data_paths").get(task.name, [None])[0]
        examples = task.load(config.split, data, limit=config.limit or None)
        calibrated = {k: v[0] for k, v in parse_entries(config.calibrated_teachers, "calibrated_teachers").items()}
        results["teachers"] = compare_teachers(
            config.original_teacher, calibrated, task, examples, max_new_tokens=config.max_new_tokens,
            temperature=config.temperature, samples_per_prompt=config.samples_per_prompt, top_p=config.top_p,
            seed=config.seed, batch_size=config.batch_size, chat=config.chat_template, dtype=config.dtype)
    write_results(results, list(config.tasks), Path(config.output_dir))
    return results


DESCRIPTION = f"""Evaluate models on tasks, compare calibrated teachers, or run the distillation scorecard.

tasks: {', '.join(list_tasks())}
distillation objectives (scorecard.attacks, scorecard.recipe.objective): sft, seqkd, kd, gkd

examples:
  python -m jaxdistill.evaluate models=[teacher=runs/tiny/teacher,kd=runs/kd/seed0,kd=runs/kd/seed1] \\
      tasks=[arith] limit=200
  python -m jaxdistill.evaluate original_teacher=runs/tiny/teacher \\
      calibrated_teachers=[plus=runs/cal/plus,minus=runs/cal/minus] models=[...]
  python -m jaxdistill.evaluate --scorecard original_teacher=T scorecard.teacher_eta0=T0 \\
      scorecard.teacher_distillable=Tp scorecard.teacher_undistillable=Tm \\
      scorecard.students=[proxy=runs/tiny/proxy] scorecard.attacks=[seqkd,gkd] scorecard.recipe.max_steps=200
Outputs: results.json/.md/.png (scorecard: scorecard.json/.md/.png and runs/) in output_dir."""


def main(argv: list[str] | None = None) -> None:
    configure_logging()
    config, flags = parse_args(EvaluateConfig, argv, prog="python -m jaxdistill.evaluate", description=DESCRIPTION,
                               extra_flags=[("--scorecard", "run every arm of the distillation scorecard")])
    try:
        if flags["scorecard"]:
            scorecard(config)
            print((Path(config.output_dir) / "scorecard.md").read_text())
        else:
            if not config.models:
                raise ValueError("no models to evaluate: give models=[label=path, ...] (or --scorecard)")
            evaluate(config)
            print((Path(config.output_dir) / "results.md").read_text())
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
