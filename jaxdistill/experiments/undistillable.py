"""The undistillable arm under other calibration settings: does any of them make the students collapse?

    python -m jaxdistill.calibrate                                   # the default run (its world and references)
    python -m jaxdistill.experiments.undistillable [run_dir=runs/default] [output_dir=runs/undistillable_sweep]
                                                   [variants=[scope_all,eta-3,...]] [seeds=[0,1,2]]

For every variant (``VARIANTS``: calibration settings that replace the default run's), the default run's
base teacher is calibrated again against its proxy (eta = -1 unless the variant sets it), both students
are distilled from the result with seqkd and gkd exactly as in the default run's scorecard, and the
teacher is compared with the original (greedy accuracy, token KL, length). Runs on the default run's
job graph (one worker per core), reusing finished runs in ``output_dir``.

Prints one markdown table: per variant, the teacher's accuracy, KL to the original, completion length
and calibration reward (mean of the first and last five steps), then every student/attack as accuracy
(%) and its ratio to the same student distilled from the original teacher (the default run's mean over
its seeds). The issue-8 target for an undistillable teacher: accuracy within 5 points of the original
and every ratio <= 0.2.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from jaxdistill import run_folder
from jaxdistill.config import BaseConfig, option, run_cli
from jaxdistill.evaluate import compare_teachers, make_task
from jaxdistill.experiments import runner
from jaxdistill.experiments.jobs import Job, default_workers, run_jobs
from jaxdistill.experiments.knob import DEFAULT_RUN_ETAS
from jaxdistill.experiments.scorecard import run_arm
from jaxdistill.experiments.world import (ARITH_DIFFICULTY, FULL, STEP_SECONDS, calibration_config, scorecard_config,
                                          world_paths)

# name -> CalibrateConfig fields that replace the default run's (world.calibration_config): span mode,
# calibration_scope=correct, beta 0.04, 8 prompts x 4 rollouts, 60 steps, LoRA r8, lr 1e-3.
VARIANTS = {
    "default": {},                                                     # the default run's eta = -1
    "scope_all": {"calibration_scope": "all"},                         # wrong rollouts earn it too
    "scope_all_beta0.2": {"calibration_scope": "all", "beta": 0.2},    # ... held by a 5x KL anchor
    "sequence": {"calibration_mode": "sequence"},                      # proxy log-prob per byte
    "alm": {"calibration_mode": "alm"},                                # binary KL of span probabilities
    "eta-3": {"eta": -3.0},                                            # a stronger knob
    "group8": {"num_generations": 8, "prompts_per_step": 4},           # 8 rollouts to rank, same batch
    "steps80": {"max_steps": 80, "save_steps": 40},                    # the trajectory of a longer
    "steps120": {"max_steps": 120, "save_steps": 40},                  # calibration (constant lr: each
    "steps160": {"max_steps": 160, "save_steps": 80},                  # run is the start of the next)
    "steps240": {"max_steps": 240, "save_steps": 80},
    # another calibration seed (LoRA init, prompt order, rollouts): how much of a row is that seed's
    "calibration_seed1": {"seed": 1},
    "steps120_calibration_seed1": {"max_steps": 120, "save_steps": 40, "seed": 1},
    "eta0_calibration_seed1": {"eta": 0.0, "seed": 1},                 # ... and the other two arms of
    "distillable_calibration_seed1": {"eta": 1.0, "seed": 1},          # the default run with it
    # the proxy learns from the teacher's rollouts as it is measured, at the attacker's lr (FULL.student_lr)
    "learning_proxy": {"proxy_learning_rate": 3e-3},
    "learning_proxy_steps120": {"proxy_learning_rate": 3e-3, "max_steps": 120, "save_steps": 40},
}
# left out of the default sweep (run them with --variants ... --seeds 0 1 2, as the README does)
LONG = ("steps80", "steps160", "steps240", "calibration_seed1", "steps120_calibration_seed1",
        "eta0_calibration_seed1", "distillable_calibration_seed1", "learning_proxy_steps120")
ATTACKS = ("seqkd", "gkd")


def compare(original: str, calibrated: dict[str, str], eval_num_prompts: int, max_new_tokens: int) -> dict:
    """compare_teachers on the default run's held-out problems."""
    task = make_task("arith", [f"difficulty={ARITH_DIFFICULTY}"])
    examples = task.load("test", None, limit=eval_num_prompts)
    return compare_teachers(original, calibrated, task, examples, max_new_tokens=max_new_tokens)


@dataclasses.dataclass
class UndistillableConfig(BaseConfig):
    """The undistillable sweep's settings (``key=value`` or YAML)."""

    run_dir: str = option("runs/default", "a finished default run (its world and scorecard)")
    output_dir: str = option("runs/undistillable_sweep", "where every variant's runs and table.md go")
    variants: tuple[str, ...] = option(tuple(v for v in VARIANTS if v not in LONG),
                                       f"calibration variants (default: all but {', '.join(LONG)}; ~3 worker-minutes "
                                       "each: the first eight took 13.6 min on 2 cores)", choices=tuple(VARIANTS))
    seeds: tuple[int, ...] = option((0,), "student seeds of every variant")
    workers: int = option(0, "processes running jobs at once (0 = one per CPU core)", ge=0)


def main(argv: list[str] | None = None) -> int:
    return run_cli(UndistillableConfig, sweep_variants, argv, prog="python -m jaxdistill.experiments.undistillable",
                   description=__doc__.split("\n\n")[0])


def sweep_variants(args: UndistillableConfig) -> None:
    run, out = Path(args.run_dir), Path(args.output_dir)
    world = world_paths(run / "world")
    reference = json.loads((run / "scorecard" / "scorecard.json").read_text())
    if not world["teacher"].exists() or not reference.get("arms"):
        raise FileNotFoundError(f"run_dir={run} is not a finished default run: run `python -m jaxdistill.calibrate` "
                                "first")
    with run_folder.held(out, "undistillable sweep"):
        jobs, teachers = [], {}
        for name in args.variants:
            teachers[name] = out / name / "calibrate" / "teacher"
            overrides = dict(VARIANTS[name])
            eta = overrides.pop("eta", DEFAULT_RUN_ETAS["undistillable"])
            calibration = calibration_config(str(world["teacher"]), str(world["proxy"]), str(out / name / "calibrate"),
                                             eta, FULL, 0, progress=False, overrides=overrides)
            jobs.append(Job(f"calibrate {name}", runner.calibrated_teacher, dict(config=calibration),
                            cost=calibration.max_steps * STEP_SECONDS["calibrate"], kind="calibrate"))
            config = scorecard_config(world, {"undistillable": teachers[name]}, out / name / "students", FULL,
                                      seeds=tuple(args.seeds), workers=1)
            for attack in ATTACKS:
                arm = {"arm": f"{attack}/undistillable", "objective": attack, "teacher": str(teachers[name])}
                for seed in args.seeds:
                    jobs.append(Job(f"{attack} {name} seed {seed}", run_arm, dict(config=config, arm=arm, seed=seed),
                                    after=(f"calibrate {name}",), cost=2 * FULL.student_steps * STEP_SECONDS["student"],
                                    kind=attack))
        jobs.append(Job("teachers", compare, dict(original=str(world["teacher"]),
                                                  calibrated={k: str(v) for k, v in teachers.items()},
                                                  eval_num_prompts=FULL.eval_num_prompts, max_new_tokens=FULL.max_completion_length),
                        after=tuple(f"calibrate {name}" for name in args.variants), cost=30))
        results = run_jobs(jobs, workers=args.workers or default_workers(), label="undistillable sweep",
                           compilation_cache=str(run / "compilation_cache"))

        base = {(r["student"], r.get("attack") or r["objective"]): r["accuracy_mean"] for r in reference["arms"]
                if r["teacher"] == "original"}  # by attacker: a battery's seqkd_t0.7 is not seqkd
        students = sorted({r["student"] for r in reference["arms"]}, reverse=True)
        columns = [(s, a) for s in students for a in ATTACKS]
        original = results["teachers"]["original"]
        lines = [f"original teacher: {100 * original['accuracy']:.0f}%, {original['mean_length']:.1f} tokens; students "
                 "of the original (default run, mean over its seeds): "
                 + ", ".join(f"{s}/{a} {100 * base[(s, a)]:.1f}" for s, a in columns), "",
                 "| variant | teacher % | KL | length | calibration reward | "
                 + " | ".join(f"{s} {a}: % (x original)" for s, a in columns) + " |",
                 "|---" * (5 + len(columns)) + "|"]
        for name in args.variants:
            teacher = results["teachers"][name]
            first, last = runner.calibration_reward(out / name / "calibrate")
            cells = []
            for student, attack in columns:
                accs = [row["accuracy"] for seed in args.seeds for row in results[f"{attack} {name} seed {seed}"]
                        if row["student"] == student]
                mean = float(np.mean(accs))
                spread = f" ± {100 * np.std(accs, ddof=1):.1f}" if len(accs) > 1 else ""
                cells.append(f"{100 * mean:.1f}{spread} ({mean / base[(student, attack)]:.2f})")
            lines.append(f"| {name} | {100 * teacher['accuracy']:.0f} | {teacher['kl_to_original']:.3f} | "
                         f"{teacher['mean_length']:.1f} | {first:.3f} -> {last:.3f} | " + " | ".join(cells) + " |")
        table = "\n".join(lines)
        (out / "table.md").write_text(table + "\n")
        print(table)


if __name__ == "__main__":
    sys.exit(main())
