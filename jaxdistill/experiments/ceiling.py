"""The ceiling test: can correct text of any style hurt a student at all?

The undistillable target asks for students at <= 0.5x of the original teacher's while the teacher keeps
its accuracy. A calibration reward can only move the teacher's *style*; if no style of *correct* text
hurts a student much, no reward can reach that target in this world. This measures the most any style
can do, without a teacher and without RL:

1. for the first ``prompts`` train problems, one gold solution per problem in each style of ``STYLES``:
   world v2's detours (a wrong result then its redo, the wrong value carried into the next line first,
   the result before its derivation, the final answer first, a computation that feeds nothing) each
   alone at a high rate, all at once, the world's own mix, and none (``plain``); every text verifies;
2. both students (the world's, pretrained on its gold) train on each set with the selection test's seqkd
   recipe (``selection.train_and_score``), over several seeds, and are scored greedy on the held-out
   problems;
3. the table: each set's accuracy over that of ``plain``, with a standard error.

A style at <= 0.5x of plain for both students is text that could meet the undistillable target; one at
<= 0.8x passes the selection test's gate. A teacher that writes correct text can hurt its students at
most as much as the worst style here (its own errors aside, which the target's accuracy bound limits).

    python -m jaxdistill.experiments.ceiling run_dir=runs/v2 world_version=2
    python -m jaxdistill.experiments.ceiling run_dir=runs/default    # v1 students, never shown a detour

Outputs in ``output_dir``: sets/<style>.jsonl, runs/<style>/<student>/seed<s>/ (each with result.json),
ceiling.json and ceiling.md.
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

from jaxdistill import run_folder
from jaxdistill.config import BaseConfig, option, run_cli
from jaxdistill.experiments.selection import Recipe, ratio_table, task_options, train_on_sets

log = logging.getLogger("jaxdistill.ceiling")

# Detour rates of each style (``jaxdistill.tasks.arith.DetourRates``); a rate not named is 0, except in
# ``world_v2``, the world's own mix (the DetourRates defaults).
STYLES: dict[str, dict[str, float] | None] = {
    "plain": {},
    "world_v2": None,
    "corrections": {"correction": 0.6},
    "late_corrections": {"late_correction": 0.6},
    "result_first": {"result_first": 1.0},
    "answer_first": {"answer_first": 1.0},
    "distractors": {"distractor": 0.6},
    "all_detours": {"correction": 0.3, "late_correction": 0.3, "result_first": 0.4, "distractor": 0.6,
                    "answer_first": 1.0},
    # the dose-response of result-first lines (world v3's rate), asked for by name
    "result_first_0.15": {"result_first": 0.15},
    "result_first_0.3": {"result_first": 0.3},
    "result_first_0.5": {"result_first": 0.5},
}
DEFAULT_STYLES = ("plain", "world_v2", "corrections", "late_corrections", "result_first", "answer_first",
                  "distractors", "all_detours")


# ---- pure parts -----------------------------------------------------------------------------------

def style_rates(style: str) -> dict[str, float]:
    """The detour rates of ``style`` as ``ArithTask(version=2, **rates)`` takes them."""
    from jaxdistill.tasks.arith import DetourRates

    if style not in STYLES:
        raise ValueError(f"unknown style {style!r}; choose among {list(STYLES)}")
    named = STYLES[style]
    if named is None:
        return dataclasses.asdict(DetourRates())
    return {**{f.name: 0.0 for f in dataclasses.fields(DetourRates)}, **named}


def gold_set(style: str, prompts: int) -> list[dict[str, str]]:
    """The gold solutions of the first ``prompts`` train problems in ``style`` (question/answer rows, the
    selection test's set format). The problems and their answers are the world's; only the text differs.
    Raises if a text does not verify (a style must write correct text)."""
    from jaxdistill.tasks.arith import ArithTask

    task = ArithTask(difficulty=1, version=2, **style_rates(style))
    examples = task.load("train", limit=prompts)
    wrong = [i for i, e in enumerate(examples) if task.verify(e.solution, e).reward != 1.0]
    if wrong:
        raise ValueError(f"style {style}: the gold text of train problem {wrong[0]} does not verify")
    return [{"question": e.prompt, "answer": e.solution} for e in examples]


def set_statistics(rows: Sequence[Mapping[str, str]]) -> dict[str, float]:
    """Per text: characters, corrections (real and hollow), result-first lines and answer-first openings."""
    from jaxdistill.tasks.arith import detour_counts

    counts = [detour_counts(r["answer"]) for r in rows]
    return {"mean_chars": float(np.mean([len(r["answer"]) for r in rows])),
            "corrections": float(np.mean([c.all_corrections for c in counts])),
            "hollow": float(np.mean([c.hollow for c in counts])),
            "result_first": float(np.mean([c.result_first for c in counts])),
            "answer_first": float(np.mean([c.answer_first for c in counts]))}


# ---- the experiment ---------------------------------------------------------------------------------

def run_ceiling(*, students: Mapping[str, str], out: Path, world_version: int = 2, prompts: int = 1000,
                seeds: Sequence[int] = (0, 1, 2), styles: Sequence[str] | None = None,
                recipe: Recipe = Recipe(max_completion_length=128), workers: int = 2,
                train: bool = True) -> dict[str, Any]:
    """The whole test (module docstring); returns what it writes to ``out/ceiling.json``. Reruns reuse every
    finished student run; ``train=False`` only tabulates the runs already finished. ``world_version`` is the
    students' world: it sets the task options they are trained and scored under (the problems are the same
    in both worlds)."""
    styles = list(styles or DEFAULT_STYLES)
    unknown = [s for s in styles if s not in STYLES]
    if unknown or "plain" not in styles:
        raise ValueError(f"styles {unknown or styles}: choose among {list(STYLES)}, plain included")
    with run_folder.held(out, "ceiling test"):
        started = time.perf_counter()
        sets_dir = out / "sets"
        sets_dir.mkdir(parents=True, exist_ok=True)
        set_stats = {}
        for style in styles:
            rows = gold_set(style, prompts)
            (sets_dir / f"{style}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            set_stats[style] = {"rates": style_rates(style), **set_statistics(rows)}
        accuracy = train_on_sets(styles, students, out, options=task_options(world_version), seeds=seeds,
                                 recipe=recipe, workers=workers, label="ceiling", train=train)
        if not all(accuracy["plain"].values()):
            raise ValueError(f"no finished student run of the plain set in {out / 'runs'}: nothing to compare with")
        summary = {"students": dict(students), "world_version": world_version, "prompts": prompts,
                   "seeds": list(seeds), "recipe": dataclasses.asdict(recipe), "sets": set_stats,
                   "accuracy": accuracy, "seconds": time.perf_counter() - started}
        (out / "ceiling.json").write_text(json.dumps(summary, indent=2))
        (out / "ceiling.md").write_text(ceiling_table(summary))
        return summary


def ceiling_table(summary: Mapping[str, Any]) -> str:
    """Markdown: per style, each student's accuracy and ratio to plain (± standard error), and what the
    texts hold."""
    def holds(st: Mapping[str, Any]) -> list[str]:
        return [f"{st['corrections']:.2f} ({st['hollow']:.2f})", f"{st['result_first']:.2f}",
                f"{st['answer_first']:.2f}", f"{st['mean_chars']:.0f}"]

    return ratio_table(summary, reference="plain", label="style", extra_cells=holds, extra_headers=(
        "corrections / text (hollow)", "result-first lines / text", "answer first", "chars"))


@dataclasses.dataclass
class CeilingConfig(BaseConfig):
    """The ceiling test's settings (``key=value`` or YAML)."""

    run_dir: str = option("", "a default-run folder: its world's students")
    proxy: str = option("", "HF folder of the proxy_like student (overrides run_dir's)")
    other: str = option("", "HF folder of the other student (overrides run_dir's)")
    world_version: int = option(1, "the students' world: the task options they train and are scored under",
                                choices=(1, 2, 3))
    output_dir: str = option("", "output folder (default: <run_dir>/ceiling_v<world_version>)")
    num_prompts: int = option(1000, "train problems in every set", ge=1)
    seeds: tuple[int, ...] = option((0, 1, 2), "student seeds of every set")
    styles: tuple[str, ...] = option((), "sets to train (default: all but the result_first_<rate> ones; plain "
                                         "is always needed)", choices=tuple(STYLES))
    max_completion_length: int = option(128, "student training and scoring length (the detour styles are "
                                        "longer than v1's 80 tokens)", ge=1)
    workers: int = option(2, "processes training students at once", ge=1)
    table_only: bool = option(False, "only tabulate the student runs already finished")

    def validate(self) -> None:
        super().validate()
        if not (self.run_dir or (self.proxy and self.other)):
            raise ValueError("give run_dir=<default-run folder>, or proxy= and other=")
        if self.styles and "plain" not in self.styles:
            raise ValueError("styles must include plain: every ratio is to the plain set")


def ceiling(args: CeilingConfig) -> None:
    paths: dict[str, Any] = {}
    if args.run_dir:
        from jaxdistill.experiments.world import students_world, world_paths

        world = Path(args.run_dir) / "world"
        if not (world / "world.json").exists():
            raise ValueError(f"{args.run_dir} holds no built world ({world / 'world.json'} is missing): give a "
                             "finished default-run folder, or proxy= and other=")
        if students_world(world) != args.world_version:  # students of another world: refused, named
            raise ValueError(f"the students of {args.run_dir} were pretrained on world v{students_world(world)} gold, "
                             f"not v{args.world_version}: give world_version={students_world(world)}")
        paths = world_paths(world)
    proxy, other = args.proxy or paths.get("proxy"), args.other or paths.get("student_other")
    out = Path(args.output_dir or Path(args.run_dir) / f"ceiling_v{args.world_version}")
    summary = run_ceiling(students={"proxy_like": str(proxy), "other": str(other)}, out=out,
                          world_version=args.world_version, prompts=args.num_prompts, seeds=list(args.seeds),
                          styles=list(args.styles) or None,
                          recipe=Recipe(max_completion_length=args.max_completion_length), workers=args.workers,
                          train=not args.table_only)
    print(ceiling_table(summary))


def main(argv: list[str] | None = None) -> int:
    return run_cli(CeilingConfig, ceiling, argv, prog="python -m jaxdistill.experiments.ceiling",
                   description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
