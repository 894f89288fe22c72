"""The distillation scorecard (docs/design.md section 3): every student distilled from every teacher, evaluated.

    python -m jaxdistill.experiments.scorecard original_teacher=T \\
        teachers=[eta0=T0,distillable=Tplus,undistillable=Tminus] students=[proxy_like=S1,other=S2] \\
        attacks=[seqkd,gkd] seeds=[0,1,2] recipe.max_steps=200 num_prompts=200 output_dir=runs/scorecard

Arms: the student before distillation; SFT on gold; then for each attacker (``ATTACKERS``: an objective
and the recipe fields it sets; ``battery`` names the five of ``BATTERY``), distillation from the original
teacher and from every calibrated teacher (``teachers``, ``label=path`` entries, in the order given). All
arms share one recipe (same prompts, steps, batch, learning rate: the same compute) and one decoding.
An attacker that reads the teacher's logits token by token runs only for students that share the
teacher's tokenizer; the others are listed as not run, with the reason.
"collapse": accuracy <= ``collapse_ratio`` x that of the same student and attacker from the original
teacher. Outputs in ``output_dir``: ``scorecard.json``, ``scorecard.md``, ``scorecard.png`` and the student
runs under ``runs/``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from jaxdistill import run_folder
from jaxdistill.config import EvalConfig, option, run_cli
from jaxdistill.distill.data import TeacherSampleCache, same_tokenizer
from jaxdistill.distill.trainer import DistillConfig
from jaxdistill.evaluate import (aggregate, bar_chart, check_model_folder, compare_teachers, make_task, parse_entries,
                                 resolve_model_dir, teacher_table)
from jaxdistill.experiments import runner
from jaxdistill.experiments.jobs import JOB_OVERHEAD_SECONDS, Job, default_workers, run_jobs
from jaxdistill.experiments.knob import ORIGINAL
from jaxdistill.tokenizer import load_tokenizer


@dataclasses.dataclass(frozen=True)
class Attacker:
    """One way to distill a teacher: an objective of ``jaxdistill.distill`` and the ``DistillConfig`` fields
    it sets over the scorecard's recipe (``attacker_config``)."""

    objective: str
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    same_tokenizer_only: bool = False  # reads the teacher's logits per token: only students sharing its tokenizer


# Every attacker the scorecard knows, by name (the name is the arm's "<attacker>/<teacher>" and its folder);
# why each is there: docs/distill.md, "The attacker battery".
ATTACKERS = {
    "seqkd": Attacker("seqkd"),  # SFT on teacher samples at the recipe's temperature (1)
    "kd": Attacker("kd"),  # token-level KD on teacher samples, the recipe's divergence and top_k
    "gkd": Attacker("gkd"),  # on-policy GKD, the recipe's divergence (forward KL in the default run)
    "seqkd_t0.7": Attacker("seqkd", {"temperature": 0.7}),
    "seqkd_correct": Attacker("seqkd", {"seqkd_only_correct": True}),
    "kd_top20": Attacker("kd", {"divergence": "forward_kl", "top_k": 20}, same_tokenizer_only=True),
}
BATTERY = ("seqkd", "seqkd_t0.7", "seqkd_correct", "gkd", "kd_top20")  # attacks=[battery]


def attacker_names(attacks: Sequence[str]) -> tuple[str, ...]:
    """``attacks`` with ``battery`` replaced by ``BATTERY``, each name once, in the order given.

    Raises ValueError naming an unknown attacker and listing the valid names.
    """
    names: list[str] = []
    for attack in attacks:
        for name in BATTERY if attack == "battery" else (attack,):
            attacker(name)  # an unknown name raises here
            if name not in names:
                names.append(name)
    return tuple(names)


def attacker(name: str) -> Attacker:
    """The attacker called ``name``; ValueError listing the valid names when there is none."""
    if name not in ATTACKERS:
        raise ValueError(f"scorecard attack {name!r} is not valid; use one of {', '.join(ATTACKERS)} "
                         f"or battery (= {', '.join(BATTERY)})")
    return ATTACKERS[name]


def attacker_config(recipe: DistillConfig, name: str) -> DistillConfig:
    """``recipe`` distilled by attacker ``name``: its objective and settings over the recipe's fields."""
    chosen = attacker(name)
    return dataclasses.replace(recipe, objective=chosen.objective, **chosen.settings)


def attacker_runs_for(name: str, student: str | Path, teacher: str | Path) -> bool:
    """Whether attacker ``name`` distills ``student`` from ``teacher`` (folders): always, but for an attacker
    that reads the teacher's logits per token, only when both carry the same tokenizer."""
    return not attacker(name).same_tokenizer_only or shares_tokenizer(student, teacher)


def shares_tokenizer(student: str | Path, teacher: str | Path) -> bool:
    """Whether the student and teacher folders (HF folders or run folders) carry the same tokenizer
    (``jaxdistill.distill.data.same_tokenizer``: identical ``tokenizer.json`` model and vocabulary)."""
    return same_tokenizer(load_tokenizer(resolve_model_dir(student)), load_tokenizer(resolve_model_dir(teacher)))


def not_run_reason(name: str) -> str:
    """Why attacker ``name`` was not run for a student whose tokenizer differs from the teacher's."""
    return (f"{name} reads the teacher's next-token distribution token by token; this student's tokenizer "
            "differs from the teacher's")


@dataclasses.dataclass
class ScorecardConfig(EvalConfig):
    """Every option of ``python -m jaxdistill.experiments.scorecard`` (YAML keys or ``key=value``)."""

    original_teacher: str = option("", "HF folder of the teacher before calibration (the collapse reference)")
    teachers: tuple[str, ...] = option((), "label=path entries: the calibrated teachers, e.g. "
                                           "[eta0=T0,distillable=Tplus,undistillable=Tminus]")
    students: tuple[str, ...] = option((), "label=path entries: each student's starting HF folder (its tokenizer "
                                           "inside); include one that differs from the proxy")
    attacks: tuple[str, ...] = option(("kd",), "attackers run against every teacher (an objective and the recipe "
                                             "fields it sets; battery = " + ", ".join(BATTERY) + ")",
                                      choices=(*ATTACKERS, "battery"))
    seeds: tuple[int, ...] = option((0, 1, 2), "training seeds of every arm (mean +- std over them)")
    workers: int = option(0, "processes running arms at once (0: one per CPU core on a CPU host, 1 on an "
                             "accelerator); the results do not depend on it", ge=0)
    collapse_ratio: float = option(0.2, "an arm collapses when its accuracy <= this x the accuracy of the same "
                                        "student and attack from the original teacher", ge=0)
    recipe: DistillConfig = option(DistillConfig(), "the shared distillation recipe (student, teacher, "
                                                    "objective, seed and output_dir are set per arm)")
    output_dir: str = option("runs/scorecard", "where scorecard.json/.md/.png and the student runs go")

    def validate(self) -> None:
        """Every setting and every model folder (with its tokenizer), before any arm runs."""
        super().validate()
        students = check_scorecard(self)
        check_model_folder(self.original_teacher, f"original_teacher={self.original_teacher}")
        for label, path in calibrated_teachers(self).items():
            check_model_folder(path, f"teachers entry {label}={path}")
        for label, paths in students.items():
            for path in paths:
                check_model_folder(path, f"students entry {label}={path}")
        make_task(self.recipe.task, self.recipe.task_options)


def decoding(config: ScorecardConfig) -> dict[str, Any]:
    """The evaluation settings every arm and teacher is scored with (``score_model`` keywords)."""
    return dict(max_new_tokens=config.max_completion_length, temperature=config.temperature,
                samples_per_prompt=config.samples_per_prompt, top_p=config.top_p, seed=config.seed,
                batch_size=config.generation_batch_size, chat=config.chat_template)


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
    for attack in attacker_names(config.attacks):
        for key, path in teachers.items():
            arms.append({"arm": f"{attack}/{key}", "objective": ATTACKERS[attack].objective, "teacher": path,
                         "teacher_key": key, "attack": attack})
    return arms


def check_scorecard(config: ScorecardConfig) -> dict[str, list[str]]:
    """The scorecard's students ({label: [path]}); raises ValueError on bad settings."""
    students = parse_entries(config.students, "students")
    if not students:
        raise ValueError("students is empty: give students=[label=HF folder, ...]")
    if not config.original_teacher:
        raise ValueError("the scorecard needs original_teacher=<HF folder of the teacher before calibration>")
    calibrated_teachers(config)
    attacker_names(config.attacks)
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
    """Train (or reuse: ``runner.distilled_student``) and score every student of one arm and seed.

    The students read the same prompts and sampling seeds, so the teacher's completions are sampled once
    (``TeacherSampleCache``). Returns one row per student: {"student", "arm", "seed", **score_model(...)},
    or {"student", "arm", "seed", "not_run": reason} for a student the arm's attacker does not apply to.
    """
    recipe = config.recipe
    task = make_task(recipe.task, recipe.task_options)
    examples = task.load(config.split, recipe.data_path or None, limit=config.num_prompts or None)
    teacher_samples = TeacherSampleCache()
    rows = []
    attack = arm.get("attack")
    for label, paths in parse_entries(config.students, "students").items():
        if attack and not attacker_runs_for(attack, paths[0], arm["teacher"]):
            rows.append({"student": label, "arm": arm["arm"], "seed": seed, "not_run": not_run_reason(attack)})
            continue
        run_config = dataclasses.replace(
            attacker_config(recipe, attack) if attack else recipe, student=str(resolve_model_dir(paths[0])),
            teacher=arm["teacher"] and str(resolve_model_dir(arm["teacher"])), objective=arm["objective"], seed=seed,
            output_dir=str(arm_dir(config, label, arm, seed)), max_steps=arm.get("steps", recipe.max_steps),
            resume=True, student_tokenizer="", teacher_tokenizer="", eval_num_prompts=0, progress=False)
        reused = runner.finished(run_config)
        student = runner.distilled_student(run_config, teacher_samples=teacher_samples)
        result = runner.evaluated(student, task, examples, dtype=config.dtype, **decoding(config))
        rows.append({"student": label, "arm": arm["arm"], "seed": seed, **result, "reused": reused})
    return rows


def compare_scorecard_teachers(config: ScorecardConfig) -> dict[str, Any]:
    """``compare_teachers`` for the scorecard's original and calibrated teachers."""
    recipe = config.recipe
    task = make_task(recipe.task, recipe.task_options)
    examples = task.load(config.split, recipe.data_path or None, limit=config.num_prompts or None)
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
    problems = config.num_prompts or 500  # greedy decoding, ~0.05 s per problem and teacher; a whole split counts 500
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
    table, not_run = [], []
    for label in parse_entries(config.students, "students"):
        for arm in arms:
            runs = rows[(label, arm["arm"])]
            where = {"student": label, "arm": arm["arm"], "objective": arm["objective"],
                     "attack": arm.get("attack", ""), "teacher": arm.get("teacher_key", "")}
            if any("not_run" in run for run in runs):
                not_run.append({**where, "reason": runs[0]["not_run"]})
            else:
                table.append({**where, **aggregate(runs), "runs": runs})
    flag_collapse(table, config.collapse_ratio)
    recipe = config.recipe
    result = {"settings": {"task": recipe.task, "split": config.split, "num_prompts": config.num_prompts,
                           "seeds": list(config.seeds), "collapse_ratio": config.collapse_ratio,
                           "attacks": list(attacker_names(config.attacks)),
                           "decoding": decoding(config), "recipe": dataclasses.asdict(recipe)},
              "arms": table, "not_run": not_run, "seconds": seconds, "teachers": results[TEACHERS_JOB]}
    write_scorecard(result, Path(config.output_dir))
    return result


def scorecard(config: ScorecardConfig) -> dict[str, Any]:
    """Run every arm for every student and seed, evaluate them, write the table (see the module docstring).

    A finished run is reused (``runner.finished``), so an interrupted scorecard resumes. The arms
    run on ``workers`` processes (``jaxdistill.experiments.jobs``); results do not depend on how many.
    Returns the JSON dict written to ``scorecard.json``.
    """
    config.validate()
    with run_folder.held(config.output_dir, "scorecard"):
        started = time.perf_counter()
        results = run_jobs(scorecard_jobs(config), workers=config.workers or default_workers(), label="scorecard",
                           compilation_cache=str(Path(config.output_dir) / "compilation_cache"))
        return assemble_scorecard(config, results, time.perf_counter() - started)


def flag_collapse(rows: Sequence[dict[str, Any]], ratio: float = 0.2) -> None:
    """Marks each teacher arm (in place) with ``relative_to_original`` = its mean accuracy over that of the
    same student and attacker distilled from the original teacher, and ``collapse`` = accuracy <= ratio x it
    (never when that reference accuracy is 0: the ratio is then undefined, reported as None).

    rows: dicts with ``student``, ``arm`` ("<attacker>/<teacher>" for teacher arms), ``objective``,
    ``attack`` (the attacker's name; the objective when absent), ``teacher`` ("" for the before / sft
    arms) and ``accuracy_mean``.
    """
    for row in rows:
        if not row["teacher"]:
            continue
        reference = f"{row.get('attack') or row['objective']}/{ORIGINAL}"
        base = next((r for r in rows if r["student"] == row["student"] and r["arm"] == reference), None)
        if base is None:
            raise ValueError(f"no {reference} arm for student {row['student']} to compare with")
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
    lines = [f"# Scorecard: {s['task']} ({s['split']}, {s['num_prompts'] or 'all'} examples, seeds {s['seeds']})", "",
             f"Student accuracy % (mean ± std over seeds). collapse = accuracy <= {s['collapse_ratio']:g} x "
             "the same student and attacker distilled from the original teacher.", "",
             "| student | arm | accuracy % | unparseable % | length | vs original | collapse |",
             "|---|---|---|---|---|---|---|"]
    for row in result["arms"]:
        relative = f"{row['relative_to_original']:.2f}" if row.get("relative_to_original") is not None else ""
        collapse = ("**collapse**" if row["collapse"] else "no") if "collapse" in row else ""
        accuracy = f"{100 * row['accuracy_mean']:.1f} ± {100 * row['accuracy_std']:.1f}"
        lines.append(f"| {row['student']} | {row['arm']} | {accuracy} | {100 * row['unparseable_rate_mean']:.1f} | "
                     f"{row['mean_length_mean']:.1f} | {relative} | {collapse} |")
    lines += ["", *attacker_table(result)]
    skipped: dict[tuple[str, str, str], list[str]] = {}
    for row in result.get("not_run", []):
        skipped.setdefault((row["student"], row["attack"], row["reason"]), []).append(row["teacher"])
    if skipped:
        lines += ["", "Arms not run:", "", "| student | attacker | teachers | why |", "|---|---|---|---|"]
        lines += [f"| {student} | {attack} | {', '.join(teachers)} | {reason} |"
                  for (student, attack, reason), teachers in skipped.items()]
    runs = [run for row in result["arms"] for run in row.get("runs", [])]
    reused = sum(bool(run.get("reused")) for run in runs)
    lines += ["", f"Student runs reused from this folder (finished earlier with the same settings and inputs): "
                  f"{reused} of {len(runs)}; the others were trained now."]
    text = "\n".join(lines) + "\n"
    if result.get("teachers"):
        text += "\n" + teacher_table(result["teachers"])
    (out / "scorecard.md").write_text(text)
    values: dict[str, dict[str, tuple[float, float]]] = {}
    for row in result["arms"]:
        values.setdefault(row["student"], {})[row["arm"]] = (row["accuracy_mean"], row["accuracy_std"])
    bar_chart(values, out / "scorecard.png", title=f"student accuracy per arm ({s['task']})")


def attacker_table(result: Mapping[str, Any]) -> list[str]:
    """Markdown lines: one row per student and attacker, one column per teacher; each cell the accuracy %,
    its ratio to the original teacher's column and the collapse flag, or "not run"."""
    cells: dict[tuple[str, str], dict[str, str]] = {}
    teachers: list[str] = []
    for row in result["arms"]:
        if not row["teacher"]:
            continue
        teachers += [row["teacher"]] if row["teacher"] not in teachers else []
        cell = f"{100 * row['accuracy_mean']:.1f}"
        if row["teacher"] != ORIGINAL and row.get("relative_to_original") is not None:
            cell += f" ({row['relative_to_original']:.2f})"
        cell += " **collapse**" if row.get("collapse") else ""
        cells.setdefault((row["student"], row.get("attack") or row["objective"]), {})[row["teacher"]] = cell
    for row in result.get("not_run", []):
        teachers += [row["teacher"]] if row["teacher"] not in teachers else []
        cells.setdefault((row["student"], row["attack"]), {})[row["teacher"]] = "not run"
    if not cells:
        return []
    students = list(dict.fromkeys(row["student"] for row in result["arms"]))
    attackers = result["settings"].get("attacks") or list(dict.fromkeys(attack for _, attack in cells))
    lines = ["Per attacker: accuracy % (ratio to the same student and attacker from the original teacher).", "",
             "| student | attacker | " + " | ".join(teachers) + " |", "|---|---|" + "---|" * len(teachers)]
    for student, attack in sorted(cells, key=lambda key: (students.index(key[0]), attackers.index(key[1]))):
        by_teacher = cells[(student, attack)]
        lines.append(f"| {student} | {attack} | " + " | ".join(by_teacher.get(t, "") for t in teachers) + " |")
    return lines


def describe_attackers() -> str:
    """One line per attacker (the command's --help): its name, objective, settings and students."""
    lines = []
    for name, spec in ATTACKERS.items():
        settings = "".join(f" {key}={value}" for key, value in spec.settings.items())
        only = " (students sharing the teacher's tokenizer only)" if spec.same_tokenizer_only else ""
        lines.append(f"  {name}: {spec.objective}{settings}{only}")
    return "\n".join(lines + [f"  battery: {', '.join(BATTERY)}"])


DESCRIPTION = f"""The distillation scorecard: every student distilled from the original and every calibrated
teacher by every attacker, over seeds, evaluated with one decoding; collapse flagged.

distillation objectives (recipe.objective): sft, seqkd, kd, gkd
attackers (attacks=[...]): an objective and the recipe fields it sets
{describe_attackers()}

example:
  python -m jaxdistill.experiments.scorecard original_teacher=T teachers=[eta0=T0,distillable=Tp,undistillable=Tm] \\
      students=[proxy=runs/tiny/proxy] attacks=[seqkd,gkd] recipe.max_steps=200
  the same with attacks=[battery] recipe.divergence=forward_kl: the five attackers of the battery
Outputs: scorecard.json/.md/.png and runs/ in output_dir."""


def run(config: ScorecardConfig) -> None:
    scorecard(config)
    print((Path(config.output_dir) / "scorecard.md").read_text())


def main(argv: list[str] | None = None) -> int:
    return run_cli(ScorecardConfig, run, argv, prog="jaxdistill-scorecard", description=DESCRIPTION)


if __name__ == "__main__":
    sys.exit(main())
