"""The distillation scorecard (DESIGN.md section 3): every student distilled from every teacher, evaluated.

    python -m jaxdistill.experiments.scorecard original_teacher=T \\
        teachers=[eta0=T0,distillable=Tplus,undistillable=Tminus] students=[proxy_like=S1,other=S2] \\
        attacks=[seqkd,gkd] seeds=[0,1,2] recipe.max_steps=200 limit=200 output_dir=runs/scorecard

Arms: the student before distillation; SFT on gold; then for each attack, distillation from the original
teacher and from every calibrated teacher (``teachers``, ``label=path`` entries, in the order given). All
arms share one recipe (same prompts, steps, batch, learning rate: the same compute) and one decoding.
"collapse": accuracy <= ``collapse_ratio`` x that of the same student and attack from the original teacher.
Outputs in ``output_dir``: ``scorecard.json``, ``scorecard.md``, ``scorecard.png`` and the student runs
under ``runs/``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from jaxdistill.config import configure_logging, option, parse_args
from jaxdistill.distill.data import TeacherSampleCache
from jaxdistill.distill.trainer import DistillConfig, distill
from jaxdistill.evaluate import (_model_and_tokenizer, aggregate, bar_chart, compare_teachers, make_task,
                                 parse_entries, resolve_model_dir, score_model, teacher_table)
from jaxdistill.experiments.jobs import JOB_OVERHEAD_SECONDS, Job, default_workers, run_jobs

ORIGINAL = "original"  # the label of the uncalibrated teacher in arms and tables
ATTACKS = ("seqkd", "kd", "gkd")


@dataclasses.dataclass
class ScorecardConfig:
    """Every option of ``python -m jaxdistill.experiments.scorecard`` (YAML keys or ``key=value``)."""

    original_teacher: str = option("", "HF folder of the teacher before calibration (the collapse reference)")
    teachers: tuple[str, ...] = option((), "label=path entries: the calibrated teachers, e.g. "
                                           "[eta0=T0,distillable=Tplus,undistillable=Tminus]")
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
    split: str = option("test", "split evaluated")
    limit: int = option(200, "held-out examples (0 = the whole split)")
    temperature: float = option(0.0, "0 = greedy; > 0 samples (accuracy is avg@k over samples_per_prompt)")
    samples_per_prompt: int = option(1, "k of avg@k when sampling (greedy always uses 1)")
    top_p: float = option(1.0, "nucleus mass when sampling")
    max_new_tokens: int = option(256, "completion budget of evaluation")
    batch_size: int = option(64, "prompts per generation call")
    seed: int = option(0, "sampling seed of evaluation")
    chat_template: bool = option(False, "render prompts with each tokenizer's chat template")
    dtype: str = option("float32", "float32 | bfloat16")
    output_dir: str = option("runs/scorecard", "where scorecard.json/.md/.png and the student runs go")


def decoding(config: ScorecardConfig) -> dict[str, Any]:
    """The evaluation settings every arm and teacher is scored with (``score_model`` keywords)."""
    return dict(max_new_tokens=config.max_new_tokens, temperature=config.temperature,
                samples_per_prompt=config.samples_per_prompt, top_p=config.top_p, seed=config.seed,
                batch_size=config.batch_size, chat=config.chat_template)


def calibrated_teachers(config: ScorecardConfig) -> dict[str, str]:
    """``{label: path}`` of ``config.teachers``; ValueError on a repeated or reserved label."""
    groups = parse_entries(config.teachers, "teachers")
    for label, paths in groups.items():
        if label == ORIGINAL:
            raise ValueError(f"teachers: the label {ORIGINAL!r} is the uncalibrated teacher (original_teacher=...); "
                             "give the calibrated teachers other labels")
        if len(paths) > 1:
            raise ValueError(f"teachers: label {label!r} is given {len(paths)} times; one path per teacher")
    return {label: paths[0] for label, paths in groups.items()}


def scorecard_arms(config: ScorecardConfig) -> list[dict[str, Any]]:
    """Every (arm, objective, teacher) of the scorecard, in the order they run."""
    teachers = {ORIGINAL: config.original_teacher, **calibrated_teachers(config)}
    arms = [{"arm": "before", "objective": "sft", "teacher": "", "steps": 0},
            {"arm": "sft", "objective": "sft", "teacher": ""}]
    for attack in config.attacks:
        for key, path in teachers.items():
            arms.append({"arm": f"{attack}/{key}", "objective": attack, "teacher": path, "teacher_key": key,
                         "attack": attack})
    return arms


def check_scorecard(config: ScorecardConfig) -> dict[str, list[str]]:
    """The scorecard's students ({label: [path]}); raises ValueError on bad settings."""
    students = parse_entries(config.students, "students")
    if not students:
        raise ValueError("students is empty: give students=[label=HF folder, ...]")
    if not config.original_teacher:
        raise ValueError("the scorecard needs original_teacher=<HF folder of the teacher before calibration>")
    calibrated_teachers(config)
    for attack in config.attacks:
        if attack not in ATTACKS:
            raise ValueError(f"scorecard attack {attack!r} is not valid; use {', '.join(ATTACKS)}")
    if config.workers < 0:
        raise ValueError(f"workers={config.workers}: give 0 (one per CPU core) or a positive count")
    return students


TEACHERS_JOB = "scorecard teachers"  # the job name of the teacher comparison


def arm_job(arm: Mapping[str, Any], seed: int) -> str:
    """The job name of one arm and seed (its result: ``run_arm``'s rows)."""
    return f"scorecard {arm['arm']} seed {seed}"


def arm_dir(config: ScorecardConfig, student: str, arm: Mapping[str, Any], seed: int) -> Path:
    """The run folder of one student, arm and seed."""
    return Path(config.output_dir) / "runs" / student / arm["arm"].replace("/", "_") / f"seed{seed}"


def run_arm(config: ScorecardConfig, arm: Mapping[str, Any], seed: int) -> list[dict[str, Any]]:
    """Train (or reuse: a run folder with ``summary.json``) and score every student of one arm and seed.

    The students read the same prompts and sampling seeds, so the teacher's completions are sampled once
    (``TeacherSampleCache``). Returns one row per student: {"student", "arm", "seed", **score_model(...)}.
    """
    recipe = config.recipe
    task = make_task(recipe.task, recipe.task_options)
    examples = task.load(config.split, recipe.data_path or None, limit=config.limit or None)
    teacher_samples = TeacherSampleCache()
    rows = []
    for label, paths in parse_entries(config.students, "students").items():
        run_dir = arm_dir(config, label, arm, seed)
        if not (run_dir / "summary.json").exists():
            run_config = dataclasses.replace(
                recipe, student=str(resolve_model_dir(paths[0])), teacher=arm["teacher"] and
                str(resolve_model_dir(arm["teacher"])), objective=arm["objective"], seed=seed,
                output_dir=str(run_dir), max_steps=arm.get("steps", recipe.max_steps), resume=True,
                student_tokenizer="", teacher_tokenizer="", eval_size=0, progress=False)
            distill(run_config, teacher_samples=teacher_samples)
        model, tokenizer = _model_and_tokenizer(run_dir, config.dtype)
        result = score_model(model, tokenizer, task, examples, **decoding(config))
        rows.append({"student": label, "arm": arm["arm"], "seed": seed, **result})
    return rows


def compare_scorecard_teachers(config: ScorecardConfig) -> dict[str, Any]:
    """``compare_teachers`` for the scorecard's original and calibrated teachers."""
    recipe = config.recipe
    task = make_task(recipe.task, recipe.task_options)
    examples = task.load(config.split, recipe.data_path or None, limit=config.limit or None)
    return compare_teachers(config.original_teacher, calibrated_teachers(config), task, examples,
                            dtype=config.dtype, **decoding(config))


# Relative cost of one training step per objective (sft = 1): seqkd samples the teacher, gkd samples the
# student and runs the teacher over the aligned spans. Only orders the jobs and drives the ETA.
STEP_COST = {"sft": 1.0, "seqkd": 1.3, "kd": 1.5, "gkd": 1.8}


def scorecard_jobs(config: ScorecardConfig, *, producers: Mapping[str, str] | None = None,
                   step_seconds: float = 0.15) -> list[Job]:
    """One job per (arm, seed) (``run_arm``: every student of it) and one for the teacher comparison.

    producers: {model path: name of the job that writes it}, when the students or teachers are made by
    jobs of the same graph (the default run); each arm job then waits on the jobs it reads from.
    step_seconds: a student's sft step on one core, for the jobs' expected cost.
    """
    producers = producers or {}
    students = parse_entries(config.students, "students")
    student_jobs = tuple(producers[p[0]] for p in students.values() if p[0] in producers)
    jobs = []
    for arm in scorecard_arms(config):
        after = student_jobs + ((producers[arm["teacher"]],) if arm["teacher"] in producers else ())
        steps = arm.get("steps", config.recipe.max_steps)
        cost = len(students) * (JOB_OVERHEAD_SECONDS + steps * step_seconds * STEP_COST[arm["objective"]])
        for seed in config.seeds:
            jobs.append(Job(arm_job(arm, seed), run_arm, {"config": config, "arm": arm, "seed": seed},
                            after=after, cost=cost, kind="" if steps == 0 else arm["objective"]))
    teachers = (config.original_teacher, *calibrated_teachers(config).values())
    problems = config.limit or 500  # greedy decoding, ~0.05 s per problem and teacher; a whole split counts 500
    jobs.append(Job(TEACHERS_JOB, compare_scorecard_teachers, {"config": config},
                    after=tuple(producers[t] for t in teachers if t in producers),
                    cost=JOB_OVERHEAD_SECONDS + 0.05 * problems * len(teachers)))
    return jobs


def assemble_scorecard(config: ScorecardConfig, results: Mapping[str, Any], seconds: float) -> dict[str, Any]:
    """The scorecard from the results of ``scorecard_jobs``: rows per (student, arm), collapse flags, the
    teacher table; writes scorecard.json, scorecard.md and scorecard.png in ``output_dir``."""
    arms = scorecard_arms(config)
    rows: dict[tuple[str, str], list[dict]] = {}
    for arm in arms:
        for seed in config.seeds:
            for row in results[arm_job(arm, seed)]:
                rows.setdefault((row["student"], row["arm"]), []).append(
                    {k: v for k, v in row.items() if k not in ("student", "arm")})
    table = []
    for label in parse_entries(config.students, "students"):
        for arm in arms:
            runs = rows[(label, arm["arm"])]
            table.append({"student": label, "arm": arm["arm"], "objective": arm["objective"],
                          "teacher": arm.get("teacher_key", ""), **aggregate(runs), "runs": runs})
    flag_collapse(table, config.collapse_ratio)
    recipe = config.recipe
    result = {"settings": {"task": recipe.task, "split": config.split, "limit": config.limit,
                           "seeds": list(config.seeds), "collapse_ratio": config.collapse_ratio,
                           "decoding": decoding(config), "recipe": dataclasses.asdict(recipe)},
              "arms": table, "seconds": seconds, "teachers": results[TEACHERS_JOB]}
    write_scorecard(result, Path(config.output_dir))
    return result


def scorecard(config: ScorecardConfig) -> dict[str, Any]:
    """Run every arm for every student and seed, evaluate them, write the table (see the module docstring).

    A finished run (its ``summary.json`` exists) is reused, so an interrupted scorecard resumes. The arms
    run on ``workers`` processes (``jaxdistill.experiments.jobs``); results do not depend on how many.
    Returns the JSON dict written to ``scorecard.json``.
    """
    students = check_scorecard(config)
    for path in filter(None, [config.original_teacher, *calibrated_teachers(config).values()]
                       + [p for ps in students.values() for p in ps]):
        resolve_model_dir(path)
    make_task(config.recipe.task, config.recipe.task_options)
    started = time.perf_counter()
    results = run_jobs(scorecard_jobs(config), workers=config.workers or default_workers(), label="scorecard",
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
        accuracy = f"{100 * row['accuracy_mean']:.1f} ± {100 * row['accuracy_std']:.1f}"
        lines.append(f"| {row['student']} | {row['arm']} | {accuracy} | {100 * row['unparseable_rate_mean']:.1f} | "
                     f"{row['mean_length_mean']:.1f} | {relative} | {collapse} |")
    text = "\n".join(lines) + "\n"
    if result.get("teachers"):
        text += "\n" + teacher_table(result["teachers"])
    (out / "scorecard.md").write_text(text)
    values: dict[str, dict[str, tuple[float, float]]] = {}
    for row in result["arms"]:
        values.setdefault(row["student"], {})[row["arm"]] = (row["accuracy_mean"], row["accuracy_std"])
    bar_chart(values, out / "scorecard.png", title=f"student accuracy per arm ({s['task']})")


DESCRIPTION = """The distillation scorecard: every student distilled from the original and every calibrated
teacher with every attack, over seeds, evaluated with one decoding; collapse flagged.

distillation objectives (attacks, recipe.objective): sft, seqkd, kd, gkd

example:
  python -m jaxdistill.experiments.scorecard original_teacher=T teachers=[eta0=T0,distillable=Tp,undistillable=Tm] \\
      students=[proxy=runs/tiny/proxy] attacks=[seqkd,gkd] recipe.max_steps=200
Outputs: scorecard.json/.md/.png and runs/ in output_dir."""


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    config, _ = parse_args(ScorecardConfig, argv, prog="python -m jaxdistill.experiments.scorecard",
                           description=DESCRIPTION)
    try:
        scorecard(config)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        sys.exit(f"error: {err}")
    print((Path(config.output_dir) / "scorecard.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
