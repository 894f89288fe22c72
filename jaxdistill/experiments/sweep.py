"""``python -m jaxdistill.experiments.sweep`` (also ``python -m jaxdistill.sweep``): the knob curve, teacher and student accuracy against eta.

    python -m jaxdistill.sweep                        # the tiny world (built or reused), eta in -1..1
    python -m jaxdistill.sweep --quick                # a few steps per stage (for tests; numbers mean nothing)
    python -m jaxdistill.sweep teacher=T proxy=P students=[small=S1,other=S2] seeds=[0,1,2] recipe.objective=kd
    python -m jaxdistill.sweep --help                 # every field, documented

For every eta and seed, the same base teacher is calibrated (``jaxdistill.calibrate``), every student is
distilled from that teacher with one recipe (``jaxdistill.distill``), and all of them are evaluated with
identical greedy decoding (``jaxdistill.evaluate.evaluate_models``). With ``include_original`` the students
are also distilled from the uncalibrated teacher: the reference of "collapse" (DESIGN.md section 3).
No new training code lives here. A seed is one full replicate (calibration, distillation, evaluation);
the error bars are the standard deviation over seeds.

Outputs in ``output_dir``: ``knob.png`` (accuracy against eta), ``knob.md`` and ``knob.json`` (the table),
``teachers/eta=<eta>/seed<s>`` (calibration runs), ``students/<label>/<teacher>/seed<s>`` (distillation
runs) and ``evaluation/`` (the evaluator's results). Finished runs are reused, so an interrupted sweep
resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from jaxdistill.config import configure_logging, load_config, option, parse_args, to_dict
from jaxdistill.distill.trainer import DistillConfig, distill
from jaxdistill.evaluate import evaluate_models, parse_entries
from jaxdistill.rl.config import CalibrateConfig
from jaxdistill.rl.loop import calibrate

log = logging.getLogger("jaxdistill.sweep")

DEFAULT_ETAS = (-1.0, -0.5, 0.0, 0.5, 1.0)
ORIGINAL = "original"  # the label of the uncalibrated teacher in tables and run folders


@dataclasses.dataclass
class SweepConfig:
    """Every option of ``python -m jaxdistill.sweep`` (YAML keys, ``key=value``; nested with dots)."""

    teacher: str = option("", "HF folder of the base teacher calibrated at every eta; empty = the tiny world's")
    proxy: str = option("", "HF folder of the frozen proxy student of calibration; empty = the tiny world's")
    students: tuple[str, ...] = option((), "label=path entries: the starting students distilled from every "
                                           "teacher; empty = the tiny world's two students")
    world_dir: str = option("runs/world", "where the tiny world is built (or reused) when teacher is empty")
    world_profile: str = option("full", "full | quick: the sizes of the tiny world built when teacher is empty")
    task: str = option("arith", "task of calibration, distillation and evaluation")
    data_path: str = option("", "local data file or folder of the task; empty = generated (arith) or the HF hub")
    arith_data_size: int = option(0, "arith without data_path: write this many generated training problems "
                                     "(and eval_limit test ones) to output_dir/data and use them in every stage; "
                                     "0 = the task's own generated splits")
    etas: tuple[float, ...] = option(DEFAULT_ETAS, "calibration weights: > 0 distillable, < 0 undistillable")
    seeds: tuple[int, ...] = option((0,), "replicates; each one calibrates, distills and evaluates afresh")
    include_original: bool = option(True, "also distill from the uncalibrated teacher (the collapse reference)")
    collapse_ratio: float = option(0.2, "a student collapses when its accuracy <= this x that of the same "
                                        "student distilled from the original teacher")
    attack: str = option("seqkd", "distillation objective of every student: seqkd | kd | gkd (the "
                                  "recipe's objective)")
    calibration: CalibrateConfig = option(CalibrateConfig(), "calibration settings of every eta (teacher, proxy, "
                                                             "eta, seed, task and output_dir are set per run)")
    recipe: DistillConfig = option(DistillConfig(), "distillation recipe of every student (objective = attack; "
                                                    "student, teacher, seed, task and output_dir are set per run)")
    eval_limit: int = option(200, "held-out examples of every evaluation (greedy decoding)")
    eval_max_new_tokens: int = option(128, "completion budget of evaluation")
    eval_batch_size: int = option(64, "prompts per generation call in evaluation")
    output_dir: str = option("runs/sweep", "where runs, knob.png, knob.md and knob.json go")


# A few steps per stage, tiny batches: every code path runs, in seconds per stage. For tests.
QUICK_OVERRIDES = (
    "world_profile=quick", "arith_data_size=64",
    "calibration.max_steps=1", "calibration.prompts_per_step=2", "calibration.num_generations=2",
    "calibration.max_completion_length=16", "calibration.eval_every=0", "calibration.eval_prompts=2",
    "calibration.save_every=1", "calibration.lora_rank=4", "calibration.lora_alpha=8",
    "calibration.progress=false", "calibration.mesh.num_devices=1",
    "recipe.max_steps=1", "recipe.batch_size=2", "recipe.max_completion_length=16", "recipe.save_steps=0",
    "recipe.eval_size=0", "recipe.progress=false",
    "eval_limit=4", "eval_max_new_tokens=16", "eval_batch_size=8",
)


def quick_config(overrides: Sequence[str] = ()) -> SweepConfig:
    """The quick profile, then ``overrides`` (``key=value`` strings) on top."""
    return load_config(SweepConfig, None, [*QUICK_OVERRIDES, *overrides])


# ---- the pure part: table, collapse, plot ---------------------------------------------------------

def eta_label(eta: float) -> str:
    """``-0.5 -> "eta=-0.5"``, ``1.0 -> "eta=1"``: the name of a calibrated teacher."""
    return f"eta={eta:g}"


def knob_table(accuracy: Mapping[str, Mapping[str, Sequence[float]]], etas: Sequence[float],
               collapse_ratio: float = 0.2) -> list[dict[str, Any]]:
    """Rows of the knob curve from per-seed accuracies.

    Args:
      accuracy: ``{model: {teacher: [accuracy per seed]}}`` where ``model`` is "teacher" or a student
        label and ``teacher`` is :func:`eta_label` of an eta or ``"original"``.
      etas: the row order (the original teacher, when present, comes first with ``eta`` None).
      collapse_ratio: see :class:`SweepConfig`.

    Returns:
      one row per teacher: ``{"name", "eta", "accuracy": {model: {"mean", "std", "runs"}}}``; each
      student's entry also holds ``relative_to_original`` and ``collapse`` when the original teacher's
      students were evaluated. The std is the sample std over seeds (0 for one seed).
    """
    teachers = ([ORIGINAL] if any(ORIGINAL in runs for runs in accuracy.values()) else [])
    teachers += [eta_label(eta) for eta in etas]
    rows = []
    for teacher in teachers:
        row: dict[str, Any] = {"name": teacher, "accuracy": {},
                               "eta": None if teacher == ORIGINAL else float(teacher.split("=", 1)[1])}
        for model, per_teacher in accuracy.items():
            if teacher not in per_teacher:
                continue
            runs = [float(a) for a in per_teacher[teacher]]
            entry = {"mean": float(np.mean(runs)), "std": float(np.std(runs, ddof=1)) if len(runs) > 1 else 0.0,
                     "runs": runs}
            original = per_teacher.get(ORIGINAL)
            if model != "teacher" and original:  # undefined (None) when the reference student scores 0
                base = float(np.mean(original))
                entry["relative_to_original"] = entry["mean"] / base if base > 0 else None
                entry["collapse"] = bool(entry["mean"] <= collapse_ratio * base) if base > 0 else None
            row["accuracy"][model] = entry
        rows.append(row)
    return rows


def knob_markdown(rows: Sequence[Mapping[str, Any]], models: Sequence[str], *, title: str) -> str:
    """The table as markdown: one row per teacher, accuracy % (mean ± std over seeds) per model."""
    lines = [f"# {title}", "",
             "Accuracy % (mean ± std over seeds), greedy decoding. The teacher column is the calibrated teacher "
             "itself; each student is distilled from that row's teacher. **collapse**: accuracy at most "
             "collapse_ratio x that of the same student distilled from the original teacher.", "",
             "| teacher | eta | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for row in rows:
        cells = []
        for model in models:
            entry = row["accuracy"].get(model)
            if entry is None:
                cells.append("")
                continue
            cell = f"{100 * entry['mean']:.1f} ± {100 * entry['std']:.1f}"
            if entry.get("collapse"):
                cell += " **collapse**"
            cells.append(cell)
        eta = "" if row["eta"] is None else f"{row['eta']:g}"
        lines.append(f"| {row['name']} | {eta} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_knob(rows: Sequence[Mapping[str, Any]], models: Sequence[str], path: Path, *, title: str) -> Path:
    """Accuracy against eta with std-over-seeds error bars; the original teacher's models as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    calibrated = [r for r in rows if r["eta"] is not None]
    original = next((r for r in rows if r["eta"] is None), None)
    for i, model in enumerate(models):
        color = "black" if model == "teacher" else f"C{i}"
        points = [(r["eta"], r["accuracy"][model]["mean"], r["accuracy"][model]["std"])
                  for r in calibrated if model in r["accuracy"]]
        if points:
            x, mean, std = map(np.asarray, zip(*points))
            ax.errorbar(x, 100 * mean, yerr=100 * std, marker="o", capsize=4, color=color,
                        linewidth=2.5 if model == "teacher" else 1.8, label=model)
        if original is not None and model in original["accuracy"]:
            ax.axhline(100 * original["accuracy"][model]["mean"], color=color, linestyle="--", linewidth=1, alpha=0.7)
    ax.set_xlabel("eta (calibration weight: < 0 undistillable, > 0 distillable)")
    ax.set_ylabel("accuracy %")
    ax.set_ylim(-2, 102)
    ax.set_title(title + ("\n(dashed: from the original teacher)" if original is not None else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---- the run -----------------------------------------------------------------------------------------

def resolve_models(config: SweepConfig) -> tuple[str, str, dict[str, str]]:
    """(teacher, proxy, {student label: folder}): the given ones, else the tiny world's (built if needed)."""
    students = {label: paths[0] for label, paths in parse_entries(config.students, "students").items()}
    if config.teacher and config.proxy and students:
        return config.teacher, config.proxy, students
    if config.teacher or config.proxy or students:
        raise ValueError("give teacher, proxy and students together, or none of them (the tiny world is used)")
    from jaxdistill.experiments.world import FULL, QUICK, build_world

    if config.world_profile not in ("full", "quick"):
        raise ValueError(f"world_profile={config.world_profile!r}: choose full or quick")
    world = build_world(config.world_dir, QUICK if config.world_profile == "quick" else FULL)
    return str(world["teacher"]), str(world["proxy"]), {"student_proxy_like": str(world["student_proxy_like"]),
                                                        "student_other": str(world["student_other"])}


def write_arith_data(folder: Path, train_size: int, test_size: int) -> Path:
    """The first problems of the generated arith splits as GSM8K-format JSONL (``train.jsonl``,
    ``test.jsonl``): the same prompts and gold answers, but only as many as a short run reads."""
    from jaxdistill.tasks import get_task

    task = get_task("arith")
    folder.mkdir(parents=True, exist_ok=True)
    for split, size in (("train", train_size), ("test", test_size)):
        rows = [{"question": ex.prompt, "answer": ex.solution} for ex in task.load(split, limit=size)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return folder


def resolve_data(config: SweepConfig) -> SweepConfig:
    """``config`` with ``data_path`` pointing at the written arith data when ``arith_data_size`` asks for it."""
    if config.arith_data_size <= 0 or config.data_path:
        return config
    if config.task != "arith":
        raise ValueError(f"arith_data_size only applies to task=arith (got task={config.task!r}); use data_path")
    folder = write_arith_data(Path(config.output_dir) / "data", config.arith_data_size, config.eval_limit)
    return dataclasses.replace(config, data_path=str(folder))


def calibrated_teacher(config: SweepConfig, teacher: str, proxy: str, eta: float, seed: int) -> Path:
    """The teacher calibrated at ``eta`` with ``seed`` (reused when its export exists)."""
    out = Path(config.output_dir) / "teachers" / eta_label(eta) / f"seed{seed}"
    exported = out / "teacher"
    if (exported / "config.json").exists():
        return exported
    run = dataclasses.replace(config.calibration, teacher=teacher, proxy=proxy, eta=float(eta), seed=seed,
                              task=config.task, data_path=config.data_path or None, output_dir=str(out),
                              export=True, resume=(out / "checkpoints").exists())
    return Path(calibrate(run)["teacher"])


def distilled_student(config: SweepConfig, label: str, student: str, teacher: Path, teacher_name: str,
                      seed: int) -> Path:
    """``student`` distilled from ``teacher`` with the recipe and ``seed`` (reused when finished)."""
    out = Path(config.output_dir) / "students" / label / teacher_name / f"seed{seed}"
    if (out / "summary.json").exists():
        return out / "model"
    run = dataclasses.replace(config.recipe, objective=config.attack, student=student, teacher=str(teacher),
                              seed=seed, task=config.task,
                              data_path=config.data_path, output_dir=str(out), student_tokenizer="",
                              teacher_tokenizer="", resume=True)
    return Path(distill(run)) / "model"


def sweep(config: SweepConfig) -> dict[str, Any]:
    """Calibrate, distill, evaluate; write knob.png, knob.md and knob.json. Returns the JSON dict."""
    if not config.etas:
        raise ValueError("etas is empty: give at least one eta, e.g. etas=[-1,0,1]")
    if not config.seeds:
        raise ValueError("seeds is empty: give at least one seed, e.g. seeds=[0]")
    if config.attack not in ("seqkd", "kd", "gkd"):
        raise ValueError(f"attack={config.attack!r} is not valid; choose seqkd, kd or gkd (sft ignores the teacher)")
    started = time.perf_counter()
    teacher, proxy, students = resolve_models(config)
    config = resolve_data(config)
    teachers: dict[str, dict[int, Path]] = {}  # teacher name -> seed -> folder
    if config.include_original:
        teachers[ORIGINAL] = {seed: Path(teacher) for seed in config.seeds}
    for eta in config.etas:
        for seed in config.seeds:
            log.info("calibrating %s, seed %d", eta_label(eta), seed)
            teachers.setdefault(eta_label(eta), {})[seed] = calibrated_teacher(config, teacher, proxy, eta, seed)
    runs: dict[str, dict[str, dict[int, Path]]] = {}  # student label -> teacher name -> seed -> model
    for label, student in students.items():
        for name, per_seed in teachers.items():
            for seed, folder in per_seed.items():
                log.info("distilling %s from the %s teacher, seed %d", label, name, seed)
                runs.setdefault(label, {}).setdefault(name, {})[seed] = distilled_student(
                    config, label, student, folder, name, seed)

    to_evaluate = {f"teacher@{name}": [str(p) for p in per_seed.values()] for name, per_seed in teachers.items()
                   if name != ORIGINAL}
    to_evaluate[f"teacher@{ORIGINAL}"] = [teacher]
    for label, per_teacher in runs.items():
        for name, per_seed in per_teacher.items():
            to_evaluate[f"{label}@{name}"] = [str(p) for p in per_seed.values()]
    evaluation = evaluate_models(to_evaluate, (config.task,), task_options=config.recipe.task_options,
                                 data_paths={config.task: config.data_path} if config.data_path else None,
                                 limit=config.eval_limit, max_new_tokens=config.eval_max_new_tokens,
                                 batch_size=config.eval_batch_size, dtype=config.calibration.dtype,
                                 output_dir=Path(config.output_dir) / "evaluation")
    accuracy: dict[str, dict[str, list[float]]] = {}
    for key, entry in evaluation["models"].items():
        model, name = key.rsplit("@", 1)
        accuracy.setdefault(model, {})[name] = [run[config.task]["accuracy"] for run in entry["runs"]]
    models = ["teacher", *students]
    rows = knob_table(accuracy, config.etas, config.collapse_ratio)
    result = {"settings": {**to_dict(config), "teacher": teacher, "proxy": proxy, "students": students},
              "models": models, "rows": rows, "seconds": time.perf_counter() - started}
    write_knob(result, Path(config.output_dir))
    return result


def write_knob(result: Mapping[str, Any], out: Path) -> None:
    """knob.json, knob.md and knob.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    s = result["settings"]
    title = (f"Knob curve: {s['task']}, {s['attack']} students, "
             f"{len(s['seeds'])} seed{'s' if len(s['seeds']) > 1 else ''}")
    (out / "knob.json").write_text(json.dumps(result, indent=2))
    (out / "knob.md").write_text(knob_markdown(result["rows"], result["models"], title=title))
    plot_knob(result["rows"], result["models"], out / "knob.png", title=title)


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--quick" in argv:  # the quick profile goes before the user's overrides, so that theirs win
        rest = [a for a in argv if a != "--quick"]
        front = []
        for i, item in enumerate(rest):
            if item == "--config" or item.startswith("--config="):
                front = rest[i:i + (1 if "=" in item else 2)]
                del rest[i:i + len(front)]
                break
        argv = [*front, *QUICK_OVERRIDES, *rest]
    config, _ = parse_args(SweepConfig, argv, prog="python -m jaxdistill.experiments.sweep",
                           description="The knob curve: calibrate a teacher at several eta, distill the same "
                                       "students from each, evaluate, and plot accuracy against eta. With no "
                                       "teacher: the tiny world.",
                           extra_flags=[("--quick", "a few steps per stage and a quick tiny world (for tests)")])
    result = sweep(config)
    print((Path(config.output_dir) / "knob.md").read_text())
    print(f"knob curve: {Path(config.output_dir) / 'knob.png'} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
