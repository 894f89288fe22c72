"""Knob grids pooled: do the students follow what their teacher gained or lost, or what it writes?

    python -m jaxdistill.experiments.knob_pool grids=[runs/v1_grid,runs/v2_grid] output_dir=runs/knob_pool

Reads ``grid.json`` from each folder (``knob_grid``), or a grid.json file given by its path. A cell found
in several grids (the same default run, cell name and overrides) is taken once, from the last grid that
holds it.
Per cell: the teacher's change in greedy accuracy, its change at temperature 1 (one sample per held-out
problem: the kind of text the seqkd attackers read), the detours of that text (result-first lines and
corrections per sample), and its students' ratios to the original teacher's students, mean and minimum
over both students and the attacks ``attacks`` (default: seqkd and gkd, which every grid has). Per
world (a mixed world apart from the plain world of its teacher's version): the Pearson correlation of
the mean ratio with either change and with the result-first lines, over cells. Writes ``pool.md`` (the
table) and ``pool.png`` (the mean ratio against the greedy change, top, and against the result-first
lines, bottom; one column per world, one colour per mode).
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from jaxdistill import run_folder
from jaxdistill.config import BaseConfig, ConfigError, option, run_cli
from jaxdistill.experiments.knob_grid import DISTILLABLE_ATTACKS
from jaxdistill.experiments.world import world_name


def pool_cells(grids: Sequence[Mapping[str, Any]], attacks: Sequence[str] = DISTILLABLE_ATTACKS
               ) -> list[dict[str, Any]]:
    """One row per distinct (default run, trained teacher, overrides) of ``grids`` (their grid.json contents; an eta = 0
    cell of sequence mode is span's teacher: ``knob_grid.trained_cell``), the last grid's copy winning:
    world (``world.world_name``), mode, beta, eta, calibration seed, greedy and temperature-1 accuracy
    change (teacher minus original) and the original's two accuracies, the result-first lines (result
    first or answer first) and corrections per temperature-1 sample, and the mean and minimum of its
    students' ratios under ``attacks``. A guarded cell (``keep_accuracy_within``) that exported its starting
    teacher (step 0) trained no teacher and is left out."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for grid in grids:
        settings, original = grid["settings"], grid["original"]["teacher"]
        for cell in grid["cells"]:
            ratios = [entry["ratio"] for per_attack in cell["students"].values()
                      for attack, entry in per_attack.items() if attack in attacks and entry.get("ratio") is not None]
            if not ratios or cell.get("exported_step") == 0:
                continue
            teacher, trained = cell["teacher"], cell.get("trained_as", cell["name"])  # eta 0: span's teacher
            sampled = teacher["detours"]["sampled"]
            overrides = ",".join(settings.get("overrides", []))  # e.g. longer calibrations of the same cell
            rows[(settings["run_dir"], trained, overrides)] = {
                "world": world_name(settings["world_version"], settings.get("student_world_version", 0)),
                "run_dir": settings["run_dir"], "cell": trained + (f" [{overrides}]" if overrides else ""),
                "mode": trained.split("_")[0],  # the trained cell's mode (``knob_grid.Cell.name``)
                "beta": cell["beta"], "eta": cell["eta"], "calibration_seed": cell["calibration_seed"],
                "greedy_change": teacher["accuracy"] - original["accuracy"],
                "sampled_change": teacher["detours"]["sampled"]["accuracy"] - original["detours"]["sampled"]["accuracy"],
                "original_greedy": original["accuracy"], "original_sampled": original["detours"]["sampled"]["accuracy"],
                "result_first": sampled.get("result_first", 0.0) + sampled.get("answer_first", 0.0),
                "corrections": sampled.get("corrections", 0.0),
                "mean_ratio": float(np.mean(ratios)), "min_ratio": float(np.min(ratios)), "ratios": len(ratios)}
    return sorted(rows.values(), key=lambda r: (r["world"], r["greedy_change"], r["cell"]))


def correlation(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson's r of two equally long series; None for fewer than 3 points or a constant series."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 3 or x.std() == 0 or y.std() == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def pool_markdown(rows: Sequence[Mapping[str, Any]], attacks: Sequence[str]) -> str:
    """Per world: the correlations, then one line per cell (sorted by the teacher's greedy change)."""
    def r_text(value: float | None) -> str:
        return "n/a" if value is None else f"{value:+.2f}"

    lines = [f"Students' ratio to the original teacher's: mean and minimum over both students and "
             f"{', '.join(attacks)}. Teacher change in points, greedy and at temperature 1.", ""]
    for world in sorted({r["world"] for r in rows}):
        mine = [r for r in rows if r["world"] == world]
        mean = [r["mean_ratio"] for r in mine]
        lines += [f"## World {world}: {len(mine)} cells", "",
                  f"Original teacher: {100 * mine[0]['original_greedy']:.0f}% greedy, "
                  f"{100 * mine[0]['original_sampled']:.0f}% at temperature 1. Mean |change| over cells: greedy "
                  f"{100 * np.mean([abs(r['greedy_change']) for r in mine]):.1f} points, temperature 1 "
                  f"{100 * np.mean([abs(r['sampled_change']) for r in mine]):.1f}.", "",
                  f"Pearson r of the mean ratio with the teacher's greedy change: "
                  f"{r_text(correlation(mean, [r['greedy_change'] for r in mine]))}; with its temperature-1 change: "
                  f"{r_text(correlation(mean, [r['sampled_change'] for r in mine]))}; with its result-first lines "
                  f"per temperature-1 sample: {r_text(correlation(mean, [r['result_first'] for r in mine]))}.", "",
                  "| cell | greedy change | T=1 change | T=1 result-first / sample | T=1 corrections / sample | "
                  "mean ratio | min ratio |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['cell']} | {100 * r['greedy_change']:+.0f} | {100 * r['sampled_change']:+.0f} | "
                  f"{r['result_first']:.2f} | {r['corrections']:.2f} | {r['mean_ratio']:.2f} | {r['min_ratio']:.2f} |"
                  for r in mine]
        lines.append("")
    return "\n".join(lines)


def plot_pool(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """pool.png: the students' mean ratio against the teacher's greedy change (top) and against its
    result-first lines per temperature-1 sample (bottom), one column per world, one colour per mode, the
    marker by the sign of eta (v: undistillable, ^: distillable, o: eta = 0); the dotted lines mark no
    change and the 0.5x target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    worlds = sorted({r["world"] for r in rows})
    axes_of = (("greedy_change", 100, "teacher's greedy accuracy change (points)"),
               ("result_first", 1, "teacher's result-first lines per temperature-1 sample"))
    fig, axes = plt.subplots(2, len(worlds), figsize=(5.5 * len(worlds), 8.4), squeeze=False)
    for column, world in enumerate(worlds):
        for ax, (key, scale, label) in zip(axes[:, column], axes_of):
            for colour, mode in enumerate(sorted({r["mode"] for r in rows})):
                for sign, marker in ((-1, "v"), (1, "^"), (0, "o")):
                    mine = [r for r in rows if r["world"] == world and r["mode"] == mode and np.sign(r["eta"]) == sign]
                    if mine:
                        ax.scatter([scale * r[key] for r in mine], [r["mean_ratio"] for r in mine],
                                   color=f"C{colour}", marker=marker,
                                   label=f"{mode}, eta {'<' if sign < 0 else '>' if sign > 0 else '='} 0")
            ax.axhline(1.0, color="grey", linestyle=":")
            ax.axhline(0.5, color="red", linestyle=":")
            if key == "greedy_change":
                ax.axvline(0.0, color="grey", linestyle=":")
            ax.set(title=f"world {world}", xlabel=label, ylabel="students x the original teacher's (mean)")
            ax.legend(fontsize="small")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def grid_file(path: str | Path) -> Path:
    """``path`` itself when it is a file, else ``path/grid.json``."""
    path = Path(path)
    return path if path.is_file() else path / "grid.json"


@dataclasses.dataclass
class KnobPoolConfig(BaseConfig):
    """The pooled knob grids' settings (``key=value`` or YAML)."""

    grids: tuple[str, ...] = option((), "knob-grid output folders (each holds grid.json), or grid.json files "
                                        "(a copy kept from an earlier grid in the same folder)")
    output_dir: str = option("runs/knob_pool", "where pool.md and pool.png go")
    attacks: tuple[str, ...] = option(DISTILLABLE_ATTACKS, "attacks whose ratios are pooled (every grid must "
                                                           "have run them to count a cell)")

    def validate(self) -> None:
        super().validate()
        if not self.grids:
            raise ConfigError("grids is empty: give knob-grid folders, e.g. grids=[runs/knob_grid]")
        missing = [g for g in self.grids if not grid_file(g).is_file()]
        if missing:
            raise ConfigError(f"no grid.json in {', '.join(missing)}: give folders a finished knob grid wrote "
                              "(python -m jaxdistill.experiments.knob_grid output_dir=...)")


def pool(args: KnobPoolConfig) -> None:
    rows = pool_cells([json.loads(grid_file(g).read_text()) for g in args.grids], args.attacks)
    out = Path(args.output_dir)
    with run_folder.held(out, "knob pool"):
        (out / "pool.md").write_text(pool_markdown(rows, args.attacks))
        plot_pool(rows, out / "pool.png")
    print((out / "pool.md").read_text())


def main(argv: list[str] | None = None) -> int:
    return run_cli(KnobPoolConfig, pool, argv, prog="python -m jaxdistill.experiments.knob_pool",
                   description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
