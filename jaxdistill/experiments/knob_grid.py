"""The knob grid: the calibration knob measured over calibration modes, eta and the KL anchor beta.

    python -m jaxdistill.calibrate output_dir=runs/default          # a finished default run (v1 or v2 world)
    python -m jaxdistill.experiments.knob_grid run_dir=runs/default [output_dir=runs/knob_grid]
        [modes=[span,sequence]] [etas=[1,0,-1]] [betas=[0.04,0.2]] [calibration_seeds=[0]]
        [attacks=[seqkd,gkd]] [seeds=[0,1,2]] [overrides=[max_steps=120,save_steps=40]]

Every cell of the grid (mode x beta x eta x calibration seed) calibrates the default run's base teacher
against its proxy exactly as the default run does (``world.calibration_config``, its profile and world
version read from ``run_dir``), with that mode, beta, eta and seed; distills both students from it with
every attack over the student seeds (``scorecard.run_arm``); and measures the teacher: greedy accuracy,
token KL to the original teacher, completion length (``evaluate.compare_teachers``) and the detours of
its held-out completions, greedy and at temperature 1 (``tasks.arith.detour_counts``: corrections, the
hollow ones among them, result-first lines, per sample). The denominators of the ratios, the original
teacher's students per attack and SFT on gold, are the default run's scorecard runs where it holds
them with the same recipe, decoding and seed, else run here; so are the cells that repeat one of the
default run's own calibrations (span, beta 0.04, eta 0 / +1 / -1, its seed, no overrides), and an eta = 0
cell of any mode but influence is the span cell's calibration (``trained_cell``: the reward is unused
at eta = 0). Everything
runs on one job graph (``jobs.run_jobs``, one worker per core); finished runs in ``output_dir`` are
reused (``runner.finished``), so an interrupted grid continues where it stopped.

Writes ``grid.md`` (one table per mode, the target checks per row and over calibration draws),
``grid.json`` (every number) and ``knob_<mode>.png`` (teacher and student accuracy against eta, one
line per beta) into ``output_dir``. The targets (issue 23):

- undistillable: teacher greedy accuracy within ``ACCURACY_TOLERANCE`` (5 points) of the original's,
  and every student and attack at most ``RATIO_TARGET`` (0.5) x the same student and attack distilled
  from the original teacher;
- distillable: for ``DISTILLABLE_ATTACKS`` (seqkd, gkd) and both students, the mean beats SFT on gold and
  the original teacher's students by more than one std (the larger of the two, over student seeds);
- either holds for a (mode, beta, eta) when it is met in every calibration draw, and there are at
  least ``MIN_DRAWS`` (2) of them.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from jaxdistill import run_folder
from jaxdistill.config import BaseConfig, ConfigError, apply_overrides, check_ranges, from_dict, option, run_cli
from jaxdistill.evaluate import model_and_tokenizer, make_task, parse_entries, score_model
from jaxdistill.experiments import runner
from jaxdistill.experiments.jobs import JOB_OVERHEAD_SECONDS, Job, default_workers, run_jobs
from jaxdistill.experiments.knob import DEFAULT_RUN_ETAS, ORIGINAL, draw_knob, knob_table
from jaxdistill.experiments.scorecard import (ScorecardConfig, compare_scorecard_teachers, decoding, scorecard_arms,
                                              scorecard_jobs)
from jaxdistill.experiments.world import (STEP_SECONDS, Profile, calibration_config, for_world, scorecard_config,
                                          world_name, world_paths)
from jaxdistill.rl.config import CalibrateConfig, check_config
from jaxdistill.tasks.arith import detour_counts

ACCURACY_TOLERANCE = 0.05  # the undistillable teacher's greedy accuracy: within 5 points of the original's
RATIO_TARGET = 0.5  # ... and its students at most 0.5 x the original teacher's, every student and attack
DISTILLABLE_ATTACKS = ("seqkd", "gkd")  # the distillable teacher's students beat SFT and the original's with these
MIN_DRAWS = 2  # a target holds when met in every calibration draw, of which there are at least this many
SFT = "sft"  # the arm of SFT on gold (a scorecard arm), the distillable target's other reference
CALIBRATED = "calibrated"  # the label of a cell's teacher in its scorecard config
# CalibrateConfig fields that the grid sets itself: an override of one of them would mislabel the cells
GRID_FIELDS = ("calibration_mode", "eta", "beta", "seed", "teacher", "proxy", "output_dir", "task", "task_options")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One calibration of the grid."""

    mode: str
    beta: float
    eta: float
    calibration_seed: int

    @property
    def name(self) -> str:
        """Its folder under ``output_dir`` and the prefix of its job names: ``span_beta0.04_eta-1_cal0``."""
        return f"{self.mode}_beta{self.beta:g}_eta{self.eta:g}_cal{self.calibration_seed}"


def grid_cells(modes: Sequence[str], betas: Sequence[float], etas: Sequence[float],
               calibration_seeds: Sequence[int]) -> list[Cell]:
    """Every (mode, beta, eta, calibration seed), in table order: by mode, then beta, eta, seed."""
    return [Cell(m, float(b), float(e), int(s)) for m, b, e, s in itertools.product(modes, betas, etas,
                                                                                  calibration_seeds)]


def trained_cell(cell: Cell) -> Cell:
    """The cell whose calibration trains ``cell``'s teacher. At eta = 0 the calibration reward enters the
    advantages as 0 x r_cal, so every mode that trains on the same prompts trains the same teacher (a
    test checks span against sequence): it is the span cell's, run once. Influence mode holds its
    validation prompts out of training, so its eta = 0 teacher is its own."""
    return dataclasses.replace(cell, mode="span") if cell.eta == 0 and cell.mode != "influence" else cell


# ---- the default run that the grid starts from ------------------------------------------------------

def read_default_run(run_dir: str | Path) -> tuple[Profile, int]:
    """The profile (world version included) and seed of the finished default run in ``run_dir``.

    The profile is ``<run_dir>/profile.json``; the world version ``<run_dir>/world/world_version.json``
    (1 when absent: a world from before versions), so a v2 world's task options and completion length
    follow (``world.for_world``). Raises FileNotFoundError when the run is not finished, ValueError
    when the two files disagree."""
    run = Path(run_dir)
    world = world_paths(run / "world")
    if not (run / "profile.json").exists() or not world["teacher"].exists() or not \
            (run / "scorecard" / "scorecard.json").exists():
        raise FileNotFoundError(f"run_dir={run} is not a finished default run (it needs profile.json, the world's "
                                f"teacher and scorecard/scorecard.json): run `python -m jaxdistill.calibrate "
                                f"output_dir={run}` first")
    stored = json.loads((run / "profile.json").read_text())
    version_file = run / "world" / "world_version.json"
    versions = json.loads(version_file.read_text()) if version_file.exists() else {"world_version": 1}
    world_version, student_version = versions["world_version"], versions.get("student_world_version", 0)
    in_profile = (stored.get("world_version", world_version), stored.get("student_world_version", student_version))
    if in_profile != (world_version, student_version):
        raise ValueError(f"{run}/profile.json says world {world_name(*in_profile)} but {version_file} says "
                         f"{world_name(world_version, student_version)}: the folder mixes two runs; rerun the "
                         "default run into a new folder")
    fields = {f.name for f in dataclasses.fields(Profile)}
    profile = Profile(**{k: v for k, v in stored.items() if k in fields and k not in ("world_version",
                                                                                      "student_world_version")})
    return for_world(profile, world_version, student_version), int(stored.get("seed", 0))


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["max_steps=120", ...]`` as CalibrateConfig fields (``from_dict`` input); ConfigError on an unknown
    key or on one the grid sets itself (``GRID_FIELDS``)."""
    data = apply_overrides({}, list(overrides), CalibrateConfig)
    fixed = sorted(set(data) & set(GRID_FIELDS))
    if fixed:
        raise ConfigError(f"overrides: {', '.join(fixed)} are set by the grid (modes, etas, betas, "
                          "calibration_seeds, run_dir); give them there")
    return data


def check_guard_problems(overrides: Mapping[str, Any], profile: Profile, measured: int, split_size: int) -> None:
    """``keep_accuracy_within`` selects each teacher on the test problems after its calibration's eval set
    (``rl.loop.validation_after_eval``); refuse a grid in which those are among the ``measured`` problems
    its teachers are reported on, or in which the ``split_size`` problems of the split leave none."""
    if overrides.get("keep_accuracy_within") is None:
        return
    eval_prompts = overrides.get("eval_num_prompts", profile.eval_num_prompts)
    fix = (f"e.g. teacher_num_prompts=300 with eval_num_prompts=300 in overrides: the split's {split_size} problems "
           f"leave {max(split_size - 300, 0)} to validate on")
    if eval_prompts < measured:
        raise ConfigError(
            f"overrides: keep_accuracy_within selects each teacher on the test problems after its calibration's "
            f"eval set (from problem {eval_prompts} on), which are among the {measured} its accuracy is reported "
            f"on (teacher_num_prompts): give eval_num_prompts >= teacher_num_prompts, {fix}")
    if eval_prompts >= split_size:
        raise ConfigError(
            f"overrides: keep_accuracy_within validates on the test problems after the calibration's eval set, but "
            f"eval_num_prompts={eval_prompts} takes all {split_size} of them: {fix}")


def cell_calibration(cell: Cell, world: Mapping[str, Path], folder: Path, profile: Profile,
                     overrides: Mapping[str, Any] | None = None) -> CalibrateConfig:
    """The default run's calibration (``world.calibration_config``) at the cell's mode, beta, eta and seed,
    into ``folder``, with ``overrides`` (``parse_overrides``) on top."""
    config = calibration_config(str(world["teacher"]), str(world["proxy"]), str(folder), cell.eta, profile,
                                cell.calibration_seed, progress=False,
                                overrides={"calibration_mode": cell.mode, "beta": cell.beta})
    return from_dict(CalibrateConfig, dict(overrides or {}), base=config) if overrides else config


def default_run_calibration(config: CalibrateConfig, run_dir: Path) -> str | None:
    """The name of the default run's calibration (``DEFAULT_RUN_ETAS``) that is exactly ``config``,
    finished in ``run_dir/calibrate/<name>`` (``runner.finished``: same settings and inputs), or None."""
    for name, eta in DEFAULT_RUN_ETAS.items():
        if eta == config.eta and runner.finished(dataclasses.replace(config, output_dir=str(run_dir / "calibrate" /
                                                                                           name))):
            return name
    return None


def _plain(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


def default_run_students(card: Mapping[str, Any], config: ScorecardConfig) -> dict[tuple[str, str, int], float | None]:
    """``{(student, arm, seed): accuracy}`` of the default run's scorecard (``card``: its scorecard.json),
    when it was scored with ``config``'s recipe, decoding and held-out set; else empty (then every arm
    runs here). None: an attacker that does not apply to that student (the scorecard's ``not_run``)."""
    settings = card.get("settings", {})
    wanted = {"recipe": dataclasses.asdict(config.recipe), "decoding": decoding(config), "split": config.split,
              "num_prompts": config.num_prompts}
    if any(settings.get(k) != _plain(v) for k, v in wanted.items()):
        return {}
    runs: dict[tuple[str, str, int], float | None] = {
        (row["student"], row["arm"], seed): None for row in card.get("not_run", []) for seed in settings["seeds"]}
    runs.update({(row["student"], row["arm"], run["seed"]): run["accuracy"] for row in card.get("arms", [])
                 for run in row.get("runs", [])})
    return runs


# ---- the teachers --------------------------------------------------------------------------------

def detour_rates(texts: Sequence[str]) -> dict[str, float]:
    """Per sample (mean over ``texts``): corrections (inline and late; ``detour_counts``), the hollow ones
    among them, the real ones (corrections - hollow), result-first lines, answer-first solutions and false
    equations outside corrections."""
    if not texts:
        raise ValueError("detour_rates needs at least one completion")
    counts = [detour_counts(text) for text in texts]
    corrections = np.array([c.all_corrections for c in counts], float)
    hollow = np.array([c.hollow for c in counts], float)
    return {"corrections": float(corrections.mean()), "hollow": float(hollow.mean()),
            "real_corrections": float((corrections - hollow).mean()),
            "result_first": float(np.mean([c.result_first for c in counts])),
            "answer_first": float(np.mean([c.answer_first for c in counts])),
            "false_equations": float(np.mean([c.false_equations for c in counts]))}


def teacher_measures(config: ScorecardConfig, teacher: str | None = None) -> dict[str, Any]:
    """One teacher on the scorecard's held-out problems and decoding: ``compare_teachers`` against the
    original (accuracy, its change, KL to the original, length; ``teacher=None``: the original itself),
    and ``detour_rates`` of its greedy completions and of one temperature-1 sample per problem (with
    that sample's accuracy)."""
    compared = compare_scorecard_teachers(dataclasses.replace(config, teachers=(f"{CALIBRATED}={teacher}",)
                                                              if teacher else ()))
    entry = dict(compared[CALIBRATED if teacher else ORIGINAL])
    recipe = config.recipe
    task = make_task(recipe.task, recipe.task_options)
    examples = task.load(config.split, recipe.data_path or None, limit=config.num_prompts or None)
    model, tokenizer = model_and_tokenizer(teacher or config.original_teacher, config.dtype)
    greedy = score_model(model, tokenizer, task, examples, **decoding(config), keep_completions=True)
    entry["greedy_correct"] = [task.verify(text, example).reward for text, example in zip(greedy["completions"],
                                                                                          examples)]
    sampled = score_model(model, tokenizer, task, examples, **{**decoding(config), "temperature": 1.0,
                                                               "samples_per_prompt": 1}, keep_completions=True)
    entry["detours"] = {"greedy": detour_rates(greedy["completions"]),
                        "sampled": {**detour_rates(sampled["completions"]), "accuracy": sampled["accuracy"]}}
    return entry


# ---- the numbers and the targets --------------------------------------------------------------------

def summary(runs: Sequence[float]) -> dict[str, Any]:
    """``{"runs", "mean", "std"}``: the std is the sample std over seeds (0 for one seed)."""
    runs = [float(r) for r in runs]
    return {"runs": runs, "mean": float(np.mean(runs)), "std": float(np.std(runs, ddof=1)) if len(runs) > 1 else 0.0}


def paired_change_se(correct: Sequence[float], original: Sequence[float]) -> float:
    """Standard error of a teacher's accuracy change against the original's on the same problems,
    ``std(c_i - o_i) / sqrt(n)`` over the per-problem scores (paired, so what both get right or wrong
    cancels)."""
    if len(correct) != len(original) or len(correct) < 2:
        raise ValueError(f"paired_change_se needs two score lists of one length >= 2, got {len(correct)} and "
                         f"{len(original)}")
    diff = np.asarray(correct, float) - np.asarray(original, float)
    return float(diff.std(ddof=1) / np.sqrt(len(diff)))


def ratio(mean: float, reference: float) -> float | None:
    """``mean / reference``; None when the reference scores 0 (nothing to fall from)."""
    return mean / reference if reference > 0 else None


def beats(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """``a``'s mean exceeds ``b``'s by more than one std: the larger of the two (``summary`` dicts)."""
    return a["mean"] - b["mean"] > max(a["std"], b["std"])


def target_checks(accuracy_change: float, students: Mapping[str, Mapping[str, Mapping[str, Any]]],
                  original: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, bool | None]:
    """The targets of one cell.

    Args:
      accuracy_change: the teacher's greedy accuracy minus the original's.
      students: ``{student: {attack: summary with "ratio"}}`` of the cell's students.
      original: ``{student: {attack or SFT: summary}}`` of the original teacher's students and SFT on gold.

    Returns: ``within_tolerance`` (|change| <= ``ACCURACY_TOLERANCE``), ``ratios_at_most_target`` (every
    ratio <= ``RATIO_TARGET``; an undefined ratio fails), ``undistillable`` (both), ``distillable``
    (every student beats SFT and the original's students, ``beats``, with every ``DISTILLABLE_ATTACKS``;
    None when an attack of them or SFT was not run).
    """
    within = abs(accuracy_change) <= ACCURACY_TOLERANCE + 1e-9  # accuracies are k/n: 0.68 - 0.63 is 0.05
    ratios = [entry["ratio"] for per_attack in students.values() for entry in per_attack.values()]
    low = bool(ratios) and all(r is not None and r <= RATIO_TARGET for r in ratios)
    distillable: bool | None = True
    for student, per_attack in students.items():
        for attack in DISTILLABLE_ATTACKS:
            if attack not in per_attack or attack not in original[student] or SFT not in original[student]:
                distillable = None
                break
            if not (beats(per_attack[attack], original[student][SFT])
                    and beats(per_attack[attack], original[student][attack])):
                distillable = False
        if distillable is None:
            break
    return {"within_tolerance": within, "ratios_at_most_target": low, "undistillable": within and low,
            "distillable": distillable}


def draw_checks(cells: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The targets over calibration draws: per (mode, beta, eta), how many of its cells meet each, and
    whether it holds (met in every draw, at least ``MIN_DRAWS`` of them)."""
    groups: dict[tuple[str, float, float], list[Mapping[str, Any]]] = {}
    for cell in cells:
        groups.setdefault((cell["mode"], cell["beta"], cell["eta"]), []).append(cell)
    rows = []
    for (mode, beta, eta), group in groups.items():
        row: dict[str, Any] = {"mode": mode, "beta": beta, "eta": eta, "draws": len(group)}
        for target in ("undistillable", "distillable"):
            met = sum(bool(c["targets"][target]) for c in group)
            row[f"{target}_met"] = met
            row[f"{target}_holds"] = met == len(group) >= MIN_DRAWS
        rows.append(row)
    return rows


# ---- the report ---------------------------------------------------------------------------------

def _pct(entry: Mapping[str, Any]) -> str:
    return f"{100 * entry['mean']:.1f} ± {100 * entry['std']:.1f}"


def _yes(value: bool | None) -> str:
    return "-" if value is None else ("**yes**" if value else "no")


def _detours(d: Mapping[str, float]) -> str:
    return f"{d['corrections']:.2f} / {d['hollow']:.2f} / {d['result_first']:.2f}"


def student_columns(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(student, attacker) pairs of the grid, by student then attacker: those the original teacher's
    students were distilled with (an attacker that does not apply to a student has none)."""
    original = result["original"]["students"]
    return [(student, attack) for student in original for attack in result["settings"]["attacks"]
            if attack in original[student]]


def grid_markdown(result: Mapping[str, Any]) -> str:
    """grid.md: per mode, one row per (beta, eta, calibration seed) with the teacher's measures, every
    student and attack (accuracy %, mean ± std over seeds, and x the original teacher's), and the target
    checks; then the targets over calibration draws."""
    s = result["settings"]
    original = result["original"]
    students = list(original["students"])
    columns = student_columns(result)
    teacher = original["teacher"]
    lines = [f"# Knob grid on {s['run_dir']} (world {world_name(s['world_version'], s.get('student_world_version', 0))})",
             "",
             f"Each row: the default run's base teacher calibrated at that mode, beta, eta and calibration seed "
             f"(overrides: {', '.join(s['overrides']) or 'none'}); students over seeds {s['seeds']}, accuracy % "
             f"(mean ± std) and x the same student and attack from the original teacher. Detours per sample "
             f"(greedy; temperature 1 in grid.json): corrections / hollow among them / result-first lines. "
             f"Targets: teacher within {100 * s['accuracy_tolerance']:g} points of the original; every ratio <= "
             f"{s['ratio_target']:g}; distillable: {' and '.join(s['distillable_attacks'])} students beat SFT on "
             f"gold and the original's by more than one std (the larger).", "",
             f"Teachers measured on {s.get('teacher_num_prompts', 'the scorecard')} held-out problems (change: "
             f"± its paired standard error). Original teacher: {100 * teacher['accuracy']:.1f}% greedy, "
             f"{teacher['mean_length']:.1f} tokens, "
             f"detours {_detours(teacher['detours']['greedy'])}. Its students: "
             + ", ".join(f"{st} {a} {_pct(original['students'][st][a])}" for st, a in columns)
             + "; SFT on gold: " + ", ".join(f"{st} {_pct(original['students'][st][SFT])}" for st in students)
             + "."]
    if result.get("not_run"):
        lines += ["", "Not run: " + "; ".join(f"{row['student']} {row['attack']} ({row['reason']})"
                                              for row in result["not_run"]) + "."]
    for mode in s["modes"]:
        lines += ["", f"## {mode}", "",
                  "| beta | eta | cal seed | teacher % | change | KL | length | detours | calibration reward | "
                  + " | ".join(f"{st} {a}" for st, a in columns)
                  + f" | within {100 * s['accuracy_tolerance']:g} points | ratios <= {s['ratio_target']:g} "
                    "| distillable target |",
                  "|---" * (12 + len(columns)) + "|"]
        for cell in (c for c in result["cells"] if c["mode"] == mode):
            t = cell["teacher"]
            reward = cell["calibration_reward"]
            cells = []
            for student, attack in columns:
                entry = cell["students"][student].get(attack)
                r = "-" if entry is None or entry["ratio"] is None else f"{entry['ratio']:.2f}"
                cells.append("-" if entry is None else f"{_pct(entry)} ({r})")
            checks = cell["targets"]
            shared = " (span's teacher)" if cell.get("trained_as", cell.get("name")) != cell.get("name") else ""
            step = cell.get("exported_step")  # keep_accuracy_within chose it (None: the last step)
            draw = f"{cell['calibration_seed']}" + ("" if step is None else f" (step {step})")
            lines.append(f"| {cell['beta']:g} | {cell['eta']:g}{shared} | {draw} | "
                         f"{100 * t['accuracy']:.1f} | {_change(t)} | {t['kl_to_original']:.3f} | "
                         f"{t['mean_length']:.1f} | {_detours(t['detours']['greedy'])} | "
                         + ("- | " if shared else f"{reward['first']:.3f} -> {reward['last']:.3f} | ")  # r_cal: another mode's
                         + " | ".join(cells)
                         + f" | {_yes(checks['within_tolerance'])} | {_yes(checks['ratios_at_most_target'])} | "
                           f"{_yes(checks['distillable'])} |")
    lines += ["", f"## Targets over calibration draws (a target holds when met in every draw, >= {MIN_DRAWS} draws)",
              "", "| mode | beta | eta | draws | undistillable met | holds | distillable met | holds |",
              "|---|---|---|---|---|---|---|---|"]
    for row in result["draws"]:
        lines.append(f"| {row['mode']} | {row['beta']:g} | {row['eta']:g} | {row['draws']} | "
                     f"{row['undistillable_met']} | {_yes(row['undistillable_holds'])} | {row['distillable_met']} | "
                     f"{_yes(row['distillable_holds'])} |")
    return "\n".join(lines) + "\n"


def _change(teacher: Mapping[str, Any]) -> str:
    """The teacher's accuracy change in points, with its paired standard error when measured."""
    se = teacher.get("accuracy_change_se")
    return f"{100 * teacher['accuracy_change']:+.1f}" + ("" if se is None else f" ± {100 * se:.1f}")


def plot_grid_knob(result: Mapping[str, Any], mode: str, path: Path) -> Path:
    """knob_<mode>.png: one panel for the teacher and one per student and attack, accuracy against eta
    with one line per beta (mean ± std, pooled over calibration seeds and student seeds); dashed: the
    original teacher and its students (``knob.draw_knob``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    original = result["original"]
    cells = [c for c in result["cells"] if c["mode"] == mode]
    panels = ["teacher"] + [f"{st} {a}" for st, a in student_columns(result)]

    def runs(cell: Mapping[str, Any], panel: str) -> list[float]:
        if panel == "teacher":
            return [cell["teacher"]["accuracy"]]
        student, attack = panel.split(" ", 1)
        return cell["students"][student].get(attack, {}).get("runs", [])

    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3.8 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels):
        if panel == "teacher":
            reference = [original["teacher"]["accuracy"]]
        else:
            student, attack = panel.split(" ", 1)
            reference = original["students"][student][attack]["runs"]
        accuracy: dict[str, dict[str, list[float]]] = {}
        etas: dict[str, float] = {}
        for cell in cells:
            line, point = f"beta={cell['beta']:g}", f"beta={cell['beta']:g} eta={cell['eta']:g}"
            if runs(cell, panel):
                accuracy.setdefault(line, {ORIGINAL: reference}).setdefault(point, []).extend(runs(cell, panel))
            etas[point] = cell["eta"]
        draw_knob(ax, knob_table(accuracy, etas), list(accuracy), title=f"{mode}: {panel}")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---- the command --------------------------------------------------------------------------------

@dataclasses.dataclass
class KnobGridConfig(BaseConfig):
    """The knob grid's settings (``key=value`` or YAML)."""

    run_dir: str = option("runs/default", "a finished default run: its world, profile, world version and scorecard")
    output_dir: str = option("runs/knob_grid", "where every cell's runs, grid.md, grid.json and knob_<mode>.png go")
    modes: tuple[str, ...] = option(("span", "sequence"), "calibration modes (CalibrateConfig.calibration_mode)")
    etas: tuple[float, ...] = option((1.0, 0.0, -1.0), "calibration weights: > 0 distillable, < 0 undistillable")
    betas: tuple[float, ...] = option((0.04, 0.2), "KL anchor strengths (CalibrateConfig.beta; the default run's: "
                                                   "0.04)", ge=0)
    calibration_seeds: tuple[int, ...] = option((0,), "calibration draws of every cell (LoRA init, prompt order, "
                                                      f"rollouts); a target holds over >= {MIN_DRAWS} of them")
    attacks: tuple[str, ...] = option(("seqkd", "gkd"), "distillation attacks run against every teacher "
                                                        "(scorecard attacks)")
    seeds: tuple[int, ...] = option((0, 1, 2), "student seeds of every cell and attack")
    overrides: tuple[str, ...] = option((), "CalibrateConfig key=value applied to every cell, e.g. "
                                            "[max_steps=120,save_steps=40]")
    teacher_num_prompts: int = option(500, "held-out problems every teacher's greedy accuracy, change (with its "
                                           "paired standard error) and detours are measured on; 0: the "
                                           "scorecard's (its students' problems, 100 in the default run), "
                                           "too few for a 5-point check", ge=0)
    workers: int = option(0, "processes running jobs at once (0: one per CPU core, 1 on an accelerator)", ge=0)

    def validate(self) -> None:
        super().validate()
        if self.teacher_num_prompts == 1:
            raise ConfigError("teacher_num_prompts=1: the change's standard error needs at least 2 problems; "
                              "give 0 (the scorecard's) or >= 2 (default 500)")
        for name in ("modes", "etas", "betas", "calibration_seeds", "attacks", "seeds"):
            values = getattr(self, name)
            if not values:
                raise ConfigError(f"{name} is empty: give at least one, e.g. {name}=[{getattr(type(self)(), name)[0]}]")
            if len(set(values)) != len(values):
                raise ConfigError(f"{name}={list(values)} repeats a value; give each once")
        check_ranges(dataclasses.replace(ScorecardConfig(), attacks=tuple(self.attacks)))
        data = parse_overrides(self.overrides)
        # every mode that trains a teacher (an eta = 0 cell of sequence mode trains span's: ``trained_cell``);
        # an unknown mode: CalibrateConfig's error
        trained_modes = dict.fromkeys(trained_cell(Cell(m, 0.0, eta, 0)).mode for m in self.modes for eta in self.etas)
        for mode, beta in itertools.product(trained_modes, self.betas):
            try:
                from_dict(CalibrateConfig, data, base=CalibrateConfig(teacher="t", proxy="p", calibration_mode=mode,
                                                                      beta=beta)).validate()
            except ValueError as err:
                raise ConfigError(f"a cell's calibration (modes, betas, overrides): {err}") from err


def main(argv: list[str] | None = None) -> int:
    return run_cli(KnobGridConfig, run, argv, prog="python -m jaxdistill.experiments.knob_grid",
                   description=__doc__.split("\n\n")[0])


def run(args: KnobGridConfig) -> None:
    knob_grid(args)
    print((Path(args.output_dir) / "grid.md").read_text())


def knob_grid(args: KnobGridConfig) -> dict[str, Any]:
    """Run the grid (see the module docstring); returns what grid.json holds."""
    started = time.perf_counter()
    with run_folder.held(args.output_dir, "knob grid"):
        run, out = Path(args.run_dir), Path(args.output_dir)
        profile, _ = read_default_run(run)
        world = world_paths(run / "world")
        card = json.loads((run / "scorecard" / "scorecard.json").read_text())
        overrides = parse_overrides(args.overrides)
        seeds = tuple(args.seeds)

        def students_config(teachers: Mapping[str, str], folder: Path) -> ScorecardConfig:
            return scorecard_config(world, teachers, folder, profile, seeds=seeds, workers=1, attacks=tuple(args.attacks))

        # the original teacher's students and SFT on gold: the default run's runs, else run here
        reference = students_config({}, out / "original")
        measured_on = dataclasses.replace(reference, num_prompts=args.teacher_num_prompts or reference.num_prompts)
        recipe = reference.recipe
        split_size = len(make_task(recipe.task, recipe.task_options).load(reference.split, recipe.data_path or None))
        check_guard_problems(overrides, profile, measured_on.num_prompts, split_size)
        stored = default_run_students(card, reference)
        reference_arms = [a for a in scorecard_arms(reference) if a["arm"] == SFT or a.get("teacher_key") == ORIGINAL]
        attacks = [a["attack"] for a in reference_arms if a["arm"] != SFT]  # the scorecard's names, in its order
        student_labels = list(parse_entries(reference.students, "students"))
        # (teacher or SFT, student, attack, seed) -> accuracy; None: the attacker does not apply to the student
        known: dict[tuple[str, str, str, int], float | None] = {}
        not_run = {(row["student"], row["attack"]): row["reason"]  # (student, attack) -> why (the scorecard's reason)
                   for row in card.get("not_run", []) if row.get("attack") in attacks}
        jobs: list[Job] = []
        plan: dict[str, tuple[str, str]] = {}  # student job -> (teacher key, attack)

        def add_arms(config: ScorecardConfig, arms: Sequence[Mapping[str, Any]], key: str, stored_arm,
                     producers: Mapping[str, str], prefix: str) -> None:
            names = {a["arm"] for a in arms}
            for job in scorecard_jobs(config, producers=producers, step_seconds=STEP_SECONDS["student"]):
                arm, seed = job.kwargs.get("arm"), job.kwargs.get("seed")
                if arm is None or arm["arm"] not in names:
                    continue
                attack = arm.get("attack", arm["arm"])
                name = stored_arm(arm)
                if name and all((s, name, seed) in stored for s in student_labels):
                    known.update({(key if arm["arm"] != SFT else SFT, s, attack, seed): stored[(s, name, seed)]
                                  for s in student_labels})
                    continue
                job = dataclasses.replace(job, name=f"{prefix}{job.name}")
                plan[job.name] = (key if arm["arm"] != SFT else SFT, attack)
                jobs.append(job)

        add_arms(reference, reference_arms, ORIGINAL, lambda arm: arm["arm"], {}, "")
        teacher_jobs = {ORIGINAL: Job(f"teacher {ORIGINAL}", teacher_measures, dict(config=measured_on),
                                      cost=JOB_OVERHEAD_SECONDS + 0.15 * measured_on.num_prompts)}
        cells = grid_cells(args.modes, args.betas, args.etas, args.calibration_seeds)
        calibrations: dict[str, tuple[CalibrateConfig, str | None]] = {}  # trained cell -> its calibration
        for cell in dict.fromkeys(trained_cell(c) for c in cells):
            config = cell_calibration(cell, world, out / cell.name / "calibrate", profile, overrides)
            reused = default_run_calibration(config, run)
            if reused:
                config = dataclasses.replace(config, output_dir=str(run / "calibrate" / reused))
            try:  # the settings every job would refuse, before any runs (the grid's base differs from the default)
                check_config(config)
            except ValueError as err:
                raise ConfigError(f"the calibration of {cell.name} (the default run's, with overrides): {err}") from err
            calibrations[cell.name] = (config, reused)
            teacher = str(Path(config.output_dir) / "teacher")
            jobs.append(Job(f"calibrate {cell.name}", runner.calibrated_teacher, dict(config=config), kind="calibrate",
                            cost=JOB_OVERHEAD_SECONDS + (0 if reused else config.max_steps * STEP_SECONDS["calibrate"])))
            students = students_config({CALIBRATED: teacher}, out / cell.name / "students")
            add_arms(students, [a for a in scorecard_arms(students) if a.get("teacher_key") == CALIBRATED], cell.name,
                     lambda arm: f"{arm['attack']}/{reused}" if reused else None, {teacher: f"calibrate {cell.name}"},
                     f"{cell.name} ")
            teacher_jobs[cell.name] = Job(f"teacher {cell.name}", teacher_measures,
                                          dict(config=measured_on, teacher=teacher), after=(f"calibrate {cell.name}",),
                                          cost=JOB_OVERHEAD_SECONDS + 0.2 * measured_on.num_prompts)
        jobs += teacher_jobs.values()
        stored_runs = sum(value is not None for value in known.values())
        results = run_jobs(jobs, workers=args.workers or default_workers(), label="knob grid",
                           compilation_cache=str(out / "compilation_cache"))
        for name, (key, attack) in plan.items():
            for row in results[name]:
                known[(key, row["student"], attack, row["seed"])] = row.get("accuracy")
                if "not_run" in row:
                    not_run[(row["student"], attack)] = row["not_run"]

        def accuracy(key: str, student: str, attack: str) -> dict[str, Any] | None:
            """The runs of one student and attacker over the seeds; None when the attacker does not apply."""
            runs = [known[(key, student, attack, seed)] for seed in seeds]
            return None if None in runs else summary(runs)

        original_students = {s: {a: entry for a in (*attacks, SFT)
                                 if (entry := accuracy(SFT if a == SFT else ORIGINAL, s, a)) is not None}
                             for s in student_labels}
        original_teacher = results[f"teacher {ORIGINAL}"]
        rows = []
        for cell in cells:
            trained = trained_cell(cell).name
            config, reused = calibrations[trained]
            teacher = dict(results[f"teacher {trained}"])
            teacher["accuracy_change_se"] = paired_change_se(teacher["greedy_correct"], original_teacher["greedy_correct"])
            per_student = {}
            for s in student_labels:
                per_student[s] = {}
                for a in attacks:
                    entry = accuracy(trained, s, a)
                    if entry is not None and a in original_students[s]:
                        per_student[s][a] = {**entry, "ratio": ratio(entry["mean"], original_students[s][a]["mean"])}
            first, last = runner.calibration_reward(Path(config.output_dir))
            rows.append({**dataclasses.asdict(cell), "name": cell.name, "trained_as": trained,
                         "calibration_dir": config.output_dir,
                         "reused_default_run_calibration": reused, "teacher": teacher,
                         "calibration_reward": {"first": first, "last": last},
                         "exported_step": runner.exported_step(config.output_dir), "students": per_student,
                         "targets": target_checks(teacher["accuracy_change"], per_student, original_students)})
        grid_runs = sum("not_run" not in row for name in plan for row in results[name])  # trained now or reused
        result = {"settings": {"run_dir": str(run), "world_version": profile.world_version,
                               "student_world_version": profile.student_world_version,
                               "profile": dataclasses.asdict(profile), "modes": list(args.modes),
                               "etas": list(args.etas), "betas": list(args.betas),
                               "calibration_seeds": list(args.calibration_seeds), "attacks": attacks,
                               "seeds": list(seeds), "overrides": list(args.overrides),
                               "teacher_num_prompts": measured_on.num_prompts,
                               "accuracy_tolerance": ACCURACY_TOLERANCE, "ratio_target": RATIO_TARGET,
                               "distillable_attacks": list(DISTILLABLE_ATTACKS), "min_draws": MIN_DRAWS,
                               "student_runs": {"reused_from_default_run": stored_runs, "in_output_dir": grid_runs}},
                  "original": {"teacher": original_teacher, "students": original_students},
                  "not_run": [{"student": st, "attack": a, "reason": why} for (st, a), why in not_run.items()],
                  "cells": rows, "draws": draw_checks(rows), "seconds": time.perf_counter() - started}
        write_grid(result, out)
        return result


def write_grid(result: Mapping[str, Any], out: Path) -> None:
    """grid.json, grid.md and knob_<mode>.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "grid.json").write_text(json.dumps(result, indent=2))
    (out / "grid.md").write_text(grid_markdown(result))
    for mode in result["settings"]["modes"]:
        plot_grid_knob(result, mode, out / f"knob_{mode}.png")


if __name__ == "__main__":
    sys.exit(main())
