"""Accuracy of models on tasks and the teacher before/after comparison.

``python -m jaxdistill.evaluate models=[base=runs/tiny/teacher,kd=runs/kd/s0,kd=runs/kd/s1] tasks=[arith]``

- Models are HF folders or run folders (whose final model is in ``<run>/model``); entries that share a
  label are seeds of one arm and are reported as mean +- std.
- Decoding is greedy (``temperature=0``) or sampled with ``samples_per_prompt=k`` (accuracy = avg@k).
  Generation is batched through ``jaxdistill.generation.batched``; the unparseable-answer rate is
  reported apart from accuracy.
- With ``original_teacher`` and ``calibrated_teachers``, each calibrated teacher is compared with the
  original: accuracy under identical decoding, mean per-token KL(calibrated || original) on the
  calibrated teacher's own samples (temperature 1), and mean response length.

Outputs (``output_dir``): ``results.json``, ``results.md`` and ``results.png``. The distillation scorecard
(students trained from every teacher, then evaluated here) is ``jaxdistill.experiments.scorecard``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from functools import partial
from pathlib import Path
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from flax import nnx

from jaxdistill import run_folder
from jaxdistill.config import ConfigError, EvalConfig, error_line, option, run_cli
from jaxdistill.distill.data import pad_sequences, same_tokenizer
from jaxdistill.distill.objectives import LossSettings, token_kd_per_token
from jaxdistill.tasks import parse_task_options
from jaxdistill.generation import batched
from jaxdistill.generation.batched import sample_batched
from jaxdistill.generation.tokenized_model import TokenizedModel
from jaxdistill.models import Qwen, load_model
from jaxdistill.models.hf_io import read_config
from jaxdistill.tasks import Example, Task, get_task, list_tasks
from jaxdistill.token_maths import masked_mean
from jaxdistill.tokenizer import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)


# ---- configs ------------------------------------------------------------------------------------

@dataclasses.dataclass
class EvaluateConfig(EvalConfig):
    """Every option of ``python -m jaxdistill.evaluate`` (YAML keys or ``key=value`` overrides)."""

    models: tuple[str, ...] = option((), "label=path entries (HF or run folders); a repeated label = seeds "
                                         "of one arm; a bare path is labelled by its folder name")
    tasks: tuple[str, ...] = option(("arith",), "tasks to evaluate on: " + " | ".join(list_tasks()),
                                    choices=list_tasks())
    task_options: tuple[str, ...] = option((), "key=value (every task) or task:key=value options for the task "
                                               "constructors, e.g. [arith:difficulty=1]")
    data_paths: tuple[str, ...] = option((), "task=path entries: local data per task (default: generated or hub)")
    original_teacher: str = option("", "HF folder of the original teacher (the teacher comparison)")
    calibrated_teachers: tuple[str, ...] = option((), "label=path entries compared with original_teacher: "
                                                      "accuracy, KL to the original, response length")
    output_dir: str = option("runs/evaluate", "where results are written")

    def validate(self) -> None:
        if not self.models:
            raise ConfigError("no models to evaluate: give models=[label=path, ...]")
        super().validate()
        for entries, field in ((self.models, "models"), (self.calibrated_teachers, "calibrated_teachers")):
            for label, paths in parse_entries(entries, field).items():
                for path in paths:
                    check_model_folder(path, f"{field} entry {label}={path}")
        if self.original_teacher:
            check_model_folder(self.original_teacher, f"original_teacher={self.original_teacher}")


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


def _tokenizer_of(folder: Path):
    if not (folder / "tokenizer.json").exists() and not (folder / "tokenizer_config.json").exists():
        raise FileNotFoundError(f"{folder} has no tokenizer files; export models with "
                                "save_model(..., tokenizer_dir=...) so each folder carries its tokenizer")
    return load_tokenizer(folder)


def check_vocab_fits(tokenizer, embedding_rows: int, folder: Path) -> None:
    """Every id the tokenizer can produce has an embedding row (else that id indexes nothing)."""
    if tokenizer.vocab_size > embedding_rows:
        raise ValueError(f"{folder}: its tokenizer has {tokenizer.vocab_size} ids but the model only "
                         f"{embedding_rows} embedding rows (vocab_size in config.json), so the tokenizer does not "
                         "belong to this model; put the tokenizer the model was trained with in the folder")


def check_model_folder(path: str | Path, what: str) -> None:
    """Before anything is loaded: ``path`` holds a model, its tokenizer, and an embedding row for every id."""
    try:
        folder = resolve_model_dir(path)
        _, hf = read_config(folder)
        check_vocab_fits(_tokenizer_of(folder), int(hf.get("vocab_size", 0)), folder)
    except (FileNotFoundError, ValueError) as err:
        raise type(err)(f"{what}: {err}") from None


def model_and_tokenizer(path: str | Path, dtype: str) -> tuple[Qwen, Any]:
    """The model of an HF folder (or a run folder that exported one: ``resolve_model_dir``) in ``dtype``, and
    its tokenizer, checked to fit the model's vocabulary."""
    folder = resolve_model_dir(path)
    tokenizer = _tokenizer_of(folder)
    model, _ = load_model(folder, dtype)
    check_vocab_fits(tokenizer, model.config.vocab_size, folder)
    return model, tokenizer


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
            model, tokenizer = model_and_tokenizer(path, dtype)
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
    base, base_tokenizer = model_and_tokenizer(original, dtype)
    out = {"original": {"path": str(original), **score_model(base, base_tokenizer, task, examples, **decoding)}}
    prompts = [TokenizedModel.of(base_tokenizer, chat).prompt(task, e) for e in examples]
    for label, path in calibrated.items():
        model, tokenizer = model_and_tokenizer(path, dtype)
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


# ---- CLI --------------------------------------------------------------------------------------------

INPUT_FIELDS = ("models", "calibrated_teachers", "data_paths", "original_teacher")


def evaluate(config: EvaluateConfig) -> dict[str, Any]:
    """The plain evaluation of ``config.models`` (plus the teacher comparison when teachers are given).
    A folder that holds this evaluation, finished, is read back, not recomputed; one that holds another
    evaluation is refused unless ``overwrite=true`` (``jaxdistill.run_folder``: earlier results are kept)."""
    inputs = {f"{field} {label} #{i}": path for field in INPUT_FIELDS[:3]
              for label, paths in parse_entries(getattr(config, field), field).items() for i, path in enumerate(paths)}
    with run_folder.open_run(config.output_dir, config, command="evaluate", resumable=False,
                             overwrite=getattr(config, "overwrite", False), input_fields=INPUT_FIELDS,
                             inputs={**inputs, "original_teacher": config.original_teacher}) as run:
        if run.finished:
            return json.loads((Path(config.output_dir) / "results.json").read_text())
        results = _evaluate(config)
        run.finish(results=["results.json", "results.md"])
    return results


def _evaluate(config: EvaluateConfig) -> dict[str, Any]:
    results = evaluate_models(
        parse_entries(config.models, "models"), config.tasks, task_options=config.task_options,
        data_paths={k: v[0] for k, v in parse_entries(config.data_paths, "data_paths").items()},
        split=config.split, limit=config.num_prompts, temperature=config.temperature,
        samples_per_prompt=config.samples_per_prompt, top_p=config.top_p,
        max_new_tokens=config.max_completion_length, batch_size=config.generation_batch_size, seed=config.seed,
        chat=config.chat_template, dtype=config.dtype)
    if config.original_teacher:
        task = make_task(config.tasks[0], config.task_options)
        data = parse_entries(config.data_paths, "data_paths").get(task.name, [None])[0]
        examples = task.load(config.split, data, limit=config.num_prompts or None)
        calibrated = {k: v[0] for k, v in parse_entries(config.calibrated_teachers, "calibrated_teachers").items()}
        results["teachers"] = compare_teachers(
            config.original_teacher, calibrated, task, examples, max_new_tokens=config.max_completion_length,
            temperature=config.temperature, samples_per_prompt=config.samples_per_prompt, top_p=config.top_p,
            seed=config.seed, batch_size=config.generation_batch_size, chat=config.chat_template, dtype=config.dtype)
    write_results(results, list(config.tasks), Path(config.output_dir))
    return results


DESCRIPTION = f"""Evaluate models on tasks, or compare calibrated teachers with the original.

tasks: {', '.join(list_tasks())}

examples:
  python -m jaxdistill.evaluate models=[teacher=runs/tiny/teacher,kd=runs/kd/seed0,kd=runs/kd/seed1] \\
      tasks=[arith] num_prompts=200
  python -m jaxdistill.evaluate original_teacher=runs/tiny/teacher \\
      calibrated_teachers=[plus=runs/cal/plus,minus=runs/cal/minus] models=[...]
Outputs: results.json/.md/.png in output_dir.
The distillation scorecard: python -m jaxdistill.experiments.scorecard --help"""


def run(config: EvaluateConfig) -> None:
    evaluate(config)
    print((Path(config.output_dir) / "results.md").read_text())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--scorecard" in argv:  # the flag of an earlier version
        print(error_line(ConfigError("the scorecard is its own command now: jaxdistill-scorecard (python -m "
                                     "jaxdistill.experiments.scorecard) original_teacher=T teachers=[eta0=T0,"
                                     "distillable=Tp,undistillable=Tm] students=[...]; --help lists its fields")),
              file=sys.stderr)
        return 1
    return run_cli(EvaluateConfig, run, argv, prog="jaxdistill-evaluate", description=DESCRIPTION)


if __name__ == "__main__":
    sys.exit(main())
