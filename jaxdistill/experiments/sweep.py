"""``python -m jaxdistill.experiments.sweep`` (also ``python -m jaxdistill.sweep``): the knob curve, teacher and student accuracy against eta.

    python -m jaxdistill.sweep                        # the tiny world (built or reused), eta in -1..1
    python -m jaxdistill.sweep --quick                # a few steps per stage (for tests; numbers mean nothing)
    python -m jaxdistill.sweep teacher=T proxy=P students=[small=S1,other=S2] seeds=[0,1,2] recipe.objective=kd
    python -m jaxdistill.sweep --help                 # every field, documented

For every eta and seed, the same base teacher is calibrated, every student is distilled from that teacher
with one recipe, and all of them are evaluated with identical greedy decoding
(``jaxdistill.evaluate.evaluate_models``): one job graph (``jaxdistill.experiments.jobs``) of the one
runner's calibrations and distillations (``jaxdistill.experiments.runner``) on ``workers`` processes.
With ``include_original`` the students are also distilled from the uncalibrated teacher: the reference of
"collapse" (docs/design.md section 3). No new training code lives here. A seed is one full replicate
(calibration, distillation, evaluation); the error bars are the standard deviation over seeds.

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

from jaxdistill import run_folder
from jaxdistill.config import BaseConfig, load_config, option, preset_path, run_cli, to_dict
from jaxdistill.distill.trainer import DistillConfig
from jaxdistill.evaluate import evaluate_models, parse_entries
from jaxdistill.experiments import runner
from jaxdistill.experiments.jobs import JOB_OVERHEAD_SECONDS, Job, default_workers, run_jobs
from jaxdistill.experiments.knob import ORIGINAL, SWEEP_ETAS, eta_label, knob_markdown, knob_table, plot_knob
from jaxdistill.rl.config import CalibrateConfig
from jaxdistill.tasks import list_tasks
from jaxdistill.tasks.loading import check_split_sources

log = logging.getLogger("jaxdistill.sweep")


@dataclasses.dataclass
class SweepConfig(BaseConfig):
    """Every option of ``python -m jaxdistill.sweep`` (YAML keys, ``key=value``; nested with dots)."""

    teacher: str = option("", "HF folder of the base teacher calibrated at every eta; empty = the tiny world's")
    proxy: str = option("", "HF folder of the frozen proxy student of calibration; empty = the tiny world's")
    students: tuple[str, ...] = option((), "label=path entries: the starting students distilled from every "
                                           "teacher; empty = the tiny world's two students")
    world_dir: str = option("runs/world", "where the tiny world is built (or reused) when teacher is empty")
    world_profile: str = option("full", "full | quick: the sizes of the tiny world built when teacher is empty",
                                choices=("full", "quick"))
    task: str = option("arith", "task of calibration, distillation and evaluation", choices=list_tasks())
    data_path: str = option("", "local data file or folder of the task; empty = generated (arith) or the HF hub")
    arith_data_size: int = option(0, "arith without data_path: write this many generated training problems "
                                     "(and eval_num_prompts test ones) to output_dir/data and use them in every stage; "
                                     "0 = the task's own generated splits")
    etas: tuple[float, ...] = option(SWEEP_ETAS, "calibration weights: > 0 distillable, < 0 undistillable")
    seeds: tuple[int, ...] = option((0,), "replicates; each one calibrates, distills and evaluates afresh")
    include_original: bool = option(True, "also distill from the uncalibrated teacher (the collapse reference)")
    collapse_ratio: float = option(0.2, "a student collapses when its accuracy <= this x that of the same "
                                        "student distilled from the original teacher")
    attack: str = option("seqkd", "distillation objective of every student: seqkd | kd | gkd (the "
                                  "recipe's objective)", choices=("seqkd", "kd", "gkd"))
    calibration: CalibrateConfig = option(CalibrateConfig(), "calibration settings of every eta (teacher, proxy, "
                                                             "eta, seed, task and output_dir are set per run)")
    recipe: DistillConfig = option(DistillConfig(), "distillation recipe of every student (objective = attack; "
                                                    "student, teacher, seed, task and output_dir are set per run)")
    eval_num_prompts: int = option(200, "held-out examples of every evaluation (greedy decoding)", ge=1)
    eval_max_completion_length: int = option(128, "completion budget of evaluation", ge=1)
    eval_generation_batch_size: int = option(64, "prompts per generation call in evaluation", ge=1)
    output_dir: str = option("runs/sweep", "where runs, knob.png, knob.md and knob.json go")
    workers: int = option(0, "processes running calibrations and distillations at once (0: one per CPU core "
                             "on a CPU host, 1 on an accelerator)", ge=0)


    def validate(self) -> None:
        super().validate()
        if not self.etas:
            raise ValueError("etas is empty: give at least one eta, e.g. etas=[-1,0,1]")
        if not self.seeds:
            raise ValueError("seeds is empty: give at least one seed, e.g. seeds=[0]")
        check_split_sources(self.data_path, None, self.calibration.train_split, self.calibration.eval_split)


QUICK = "sweep_quick.yaml"  # a few steps per stage, tiny batches: every code path runs, in seconds per stage


def quick_config(overrides: Sequence[str] = ()) -> SweepConfig:
    """The quick profile (``--quick``: the shipped preset), then ``overrides`` (``key=value`` strings) on top."""
    return load_config(SweepConfig, None, list(overrides), presets=[preset_path(QUICK)])


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
    world = build_world(config.world_dir, QUICK if config.world_profile == "quick" else FULL,
                        workers=config.workers or default_workers())
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
    folder = write_arith_data(Path(config.output_dir) / "data", config.arith_data_size, config.eval_num_prompts)
    return dataclasses.replace(config, data_path=str(folder))


def calibration_config(config: SweepConfig, teacher: str, proxy: str, eta: float, seed: int) -> CalibrateConfig:
    """The calibration of ``teacher`` at ``eta`` with ``seed``: ``config.calibration`` with the run's fields."""
    out = Path(config.output_dir) / "teachers" / eta_label(eta) / f"seed{seed}"
    return dataclasses.replace(config.calibration, teacher=teacher, proxy=proxy, eta=float(eta), seed=seed,
                               task=config.task, data_path=config.data_path or None, output_dir=str(out),
                               export=True, resume=True)


def distillation_config(config: SweepConfig, label: str, student: str, teacher: str, teacher_name: str,
                        seed: int) -> DistillConfig:
    """``student`` distilled from ``teacher`` (named ``teacher_name``) with the recipe and ``seed``."""
    out = Path(config.output_dir) / "students" / label / teacher_name / f"seed{seed}"
    return dataclasses.replace(config.recipe, objective=config.attack, student=student, teacher=teacher, seed=seed,
                               task=config.task, data_path=config.data_path, output_dir=str(out),
                               student_tokenizer="", teacher_tokenizer="", resume=True)


# Expected seconds per step on one core (tiny models): they order the jobs and drive the ETA, nothing else.
STEP_SECONDS = {"calibrate": 1.5, "distill": 0.3}
EVALUATE_JOB = "evaluate"


def sweep_jobs(config: SweepConfig, teacher: str, proxy: str, students: Mapping[str, str]) -> list[Job]:
    """The sweep as one graph: ``calibrate <eta> seed <s>`` per eta and seed, ``distill <student> from
    <teacher> seed <s>`` per student, teacher and seed (each waiting on its teacher's calibration), then
    ``evaluate`` (every teacher and student with one decoding: ``evaluate_models``)."""
    jobs, teachers = [], {}  # teacher name -> seed -> (folder, the job that writes it)
    if config.include_original:
        teachers[ORIGINAL] = {seed: (teacher, None) for seed in config.seeds}
    for eta in config.etas:
        for seed in config.seeds:
            run = calibration_config(config, teacher, proxy, eta, seed)
            name = f"calibrate {eta_label(eta)} seed {seed}"
            jobs.append(Job(name, runner.calibrated_teacher, {"config": run}, kind="calibrate",
                            cost=JOB_OVERHEAD_SECONDS + run.max_steps * STEP_SECONDS["calibrate"]))
            teachers.setdefault(eta_label(eta), {})[seed] = (str(Path(run.output_dir) / "teacher"), name)
    to_evaluate = {f"teacher@{name}": [folder for folder, _ in per_seed.values()]
                   for name, per_seed in teachers.items() if name != ORIGINAL}
    to_evaluate[f"teacher@{ORIGINAL}"] = [teacher]
    for label, start in students.items():
        for name, per_seed in teachers.items():
            for seed, (folder, producer) in per_seed.items():
                run = distillation_config(config, label, start, folder, name, seed)
                jobs.append(Job(f"distill {label} from {name} seed {seed}", runner.distilled_student,
                                {"config": run}, after=(producer,) if producer else (), kind=config.attack,
                                cost=JOB_OVERHEAD_SECONDS + run.max_steps * STEP_SECONDS["distill"]))
                to_evaluate.setdefault(f"{label}@{name}", []).append(str(Path(run.output_dir) / "model"))
    jobs.append(Job(EVALUATE_JOB, evaluate_models, dict(
        models=to_evaluate, tasks=(config.task,), task_options=config.recipe.task_options,
        data_paths={config.task: config.data_path} if config.data_path else None, limit=config.eval_num_prompts,
        max_new_tokens=config.eval_max_completion_length, batch_size=config.eval_generation_batch_size,
        dtype=config.calibration.dtype, output_dir=str(Path(config.output_dir) / "evaluation")),
        after=tuple(job.name for job in jobs),
        cost=JOB_OVERHEAD_SECONDS + 0.05 * config.eval_num_prompts * sum(map(len, to_evaluate.values()))))
    return jobs


def sweep(config: SweepConfig) -> dict[str, Any]:
    """Calibrate, distill, evaluate; write knob.png, knob.md and knob.json. Returns the JSON dict."""
    config.validate()
    with run_folder.held(config.output_dir, "sweep"):
        started = time.perf_counter()
        teacher, proxy, students = resolve_models(config)
        config = resolve_data(config)
        results = run_jobs(sweep_jobs(config, teacher, proxy, students), workers=config.workers or default_workers(),
                           label="sweep", compilation_cache=str(Path(config.output_dir) / "compilation_cache"))
        accuracy: dict[str, dict[str, list[float]]] = {}
        for key, entry in results[EVALUATE_JOB]["models"].items():
            model, name = key.rsplit("@", 1)
            accuracy.setdefault(model, {})[name] = [run[config.task]["accuracy"] for run in entry["runs"]]
        models = ["teacher", *students]
        rows = knob_table(accuracy, {eta_label(eta): eta for eta in config.etas}, config.collapse_ratio)
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


def run(config: SweepConfig) -> None:
    result = sweep(config)
    print((Path(config.output_dir) / "knob.md").read_text())
    print(f"knob curve: {Path(config.output_dir) / 'knob.png'} ({result['seconds']:.0f} s)")


def main(argv: list[str] | None = None) -> int:
    return run_cli(SweepConfig, run, argv, prog="jaxdistill-sweep",
                   description="The knob curve: calibrate a teacher at several eta, distill the same students from "
                               "each, evaluate, and plot accuracy against eta. With no teacher: the tiny world.",
                   presets={"--quick": (QUICK, "a few steps per stage and a quick tiny world (for tests)")})


if __name__ == "__main__":
    sys.exit(main())
