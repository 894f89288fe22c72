"""The calibration knob eta, in one place: its values in the experiments, the names of the calibrated
teachers, and the knob curve (table, markdown, plot) that the default run and the sweep both draw.

eta > 0 asks for a distillable teacher, eta < 0 for an undistillable one, eta = 0 is plain RFT (the
control). A teacher is named by its label: the default run's three are ``DEFAULT_RUN_ETAS``, a sweep's
are ``eta_label(eta)``; the uncalibrated teacher is ``ORIGINAL``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

ORIGINAL = "original"  # the uncalibrated teacher: the reference of "collapse"
# the default run's teachers (run folders calibrate/<name>, scorecard arms <attack>/<name>), in table order
DEFAULT_RUN_ETAS = {"eta0": 0.0, "distillable": 1.0, "undistillable": -1.0}
SWEEP_ETAS = (-1.0, -0.5, 0.0, 0.5, 1.0)  # the knob sweep's default


def eta_label(eta: float) -> str:
    """``-0.5 -> "eta=-0.5"``, ``1.0 -> "eta=1"``: the name of a teacher calibrated at ``eta`` in a sweep."""
    return f"eta={eta:g}"


def knob_table(accuracy: Mapping[str, Mapping[str, Sequence[float]]], teachers: Mapping[str, float],
               collapse_ratio: float = 0.2) -> list[dict[str, Any]]:
    """Rows of the knob curve from per-seed accuracies.

    Args:
      accuracy: ``{model: {teacher: [accuracy per seed]}}`` where ``model`` is "teacher" (the calibrated
        teacher itself) or a student, and ``teacher`` is a label of ``teachers`` or ``ORIGINAL``.
      teachers: ``{label: eta}`` of the calibrated teachers, in row order (the original teacher, when
        present, comes first with ``eta`` None).
      collapse_ratio: a student collapses when its mean accuracy <= this x that of the same student
        distilled from the original teacher.

    Returns:
      one row per teacher: ``{"name", "eta", "accuracy": {model: {"mean", "std", "runs"}}}``; each
      student's entry also holds ``relative_to_original`` and ``collapse`` when the original teacher's
      students were evaluated (None when that reference scores 0). The std is the sample std over seeds
      (0 for one seed).
    """
    etas: dict[str, float | None] = {ORIGINAL: None} if any(ORIGINAL in runs for runs in accuracy.values()) else {}
    etas.update({name: float(eta) for name, eta in teachers.items()})
    rows = []
    for teacher, eta in etas.items():
        row: dict[str, Any] = {"name": teacher, "eta": eta, "accuracy": {}}
        for model, per_teacher in accuracy.items():
            if teacher not in per_teacher:
                continue
            runs = [float(a) for a in per_teacher[teacher]]
            entry = {"mean": float(np.mean(runs)), "std": float(np.std(runs, ddof=1)) if len(runs) > 1 else 0.0,
                     "runs": runs}
            original = per_teacher.get(ORIGINAL)
            if model != "teacher" and original:
                base = float(np.mean(original))
                entry["relative_to_original"] = entry["mean"] / base if base > 0 else None
                entry["collapse"] = bool(entry["mean"] <= collapse_ratio * base) if base > 0 else None
            row["accuracy"][model] = entry
        rows.append(row)
    return rows


def scorecard_accuracy(card: Mapping[str, Any]) -> dict[str, dict[str, list[float]]]:
    """A scorecard (``jaxdistill.experiments.scorecard``) as ``knob_table``'s input: the teachers' own
    accuracy under "teacher", and per student and attacker ("<student> (<attacker>)") the accuracy of every
    seed distilled from each teacher (the objective names the attacker in scorecards that predate them)."""
    accuracy: dict[str, dict[str, list[float]]] = {
        "teacher": {name: [t["accuracy"]] for name, t in card.get("teachers", {}).items()}}
    for row in card["arms"]:
        if row.get("teacher"):
            model = f"{row['student']} ({row.get('attack') or row['objective']})"
            accuracy.setdefault(model, {})[row["teacher"]] = [run["accuracy"] for run in row["runs"]]
    return accuracy


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
    draw_knob(ax, rows, models, title=title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def draw_knob(ax: Any, rows: Sequence[Mapping[str, Any]], models: Sequence[str], *, title: str) -> None:
    """``plot_knob``'s curve drawn on the matplotlib axes ``ax`` (one panel of a larger figure)."""
    calibrated = sorted((r for r in rows if r["eta"] is not None), key=lambda r: r["eta"])
    original = next((r for r in rows if r["eta"] is None), None)
    for i, model in enumerate(models):
        # ten colours, then the same ten dash-dotted (an attacker battery draws more than ten students)
        color = "black" if model == "teacher" else f"C{i % 10}"
        style = "-" if i < 10 else "-."
        points = [(r["eta"], r["accuracy"][model]["mean"], r["accuracy"][model]["std"])
                  for r in calibrated if model in r["accuracy"]]
        if points:
            x, mean, std = map(np.asarray, zip(*points))
            ax.errorbar(x, 100 * mean, yerr=100 * std, marker="o", capsize=4, color=color, linestyle=style,
                        linewidth=2.5 if model == "teacher" else 1.8, label=model)
        if original is not None and model in original["accuracy"]:
            ax.axhline(100 * original["accuracy"][model]["mean"], color=color, linestyle="--", linewidth=1, alpha=0.7)
    ax.set_xlabel("eta (calibration weight: < 0 undistillable, > 0 distillable)")
    ax.set_ylabel("accuracy %")
    ax.set_ylim(-2, 102)
    ax.set_title(title + ("\n(dashed: from the original teacher)" if original is not None else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8 if len(models) <= 8 else 6, ncol=1 if len(models) <= 8 else 2)
