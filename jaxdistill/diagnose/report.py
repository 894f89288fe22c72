"""Diagnose's outputs: diagnostics.json, diagnostics.md, divergence.png and symptoms.png, and the numbers
read back from them (:func:`load_diagnostics`, :func:`summary_numbers`) for scorecards and sweeps."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import numpy as np


def json_safe(value: Any) -> Any:
    """NaN/inf -> None and numpy scalars -> Python, so the JSON is standard."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def load_diagnostics(path: str | Path) -> dict[str, Any]:
    """The full result of a diagnose run: ``path`` is its output folder or its diagnostics.json."""
    path = Path(path)
    file = path / "diagnostics.json" if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"no diagnostics.json at {path}: run python -m jaxdistill.diagnose first")
    return json.loads(file.read_text())


def summary_numbers(result: Mapping[str, Any] | str | Path) -> dict[str, float | None]:
    """The headline numbers of a diagnose run as a flat dict (for scorecards and sweeps).

    Keys: ``teacher_accuracy``, ``student_accuracy`` (on their own samples); ``gap_per_byte`` (teacher
    minus student log-likelihood per byte of teacher text); ``off_policy_forward_kl``,
    ``on_policy_reverse_kl``, ``drift_forward_kl``, ``tail_share@k`` (forward KL on teacher samples;
    None when the tokenizers differ); ``student_ece``, ``student_confident_wrong_rate``,
    ``self_correction_change``, ``student_loop_rate``, ``student_repeated_ngram_rate``,
    ``student_truncation_rate``.
    """
    if not isinstance(result, Mapping):
        result = load_diagnostics(result)
    off, on = result["teacher_samples"], result["student_samples"]
    numbers: dict[str, float | None] = {
        "teacher_accuracy": off["answers"]["accuracy"],
        "student_accuracy": on["answers"]["accuracy"],
        "gap_per_byte": off["likelihood"]["gap_per_byte"],
        "on_policy_gap_per_byte": on["likelihood"]["gap_per_byte"],
        "off_policy_forward_kl": off["token"]["forward_kl"] if off["token"] else None,
        "on_policy_reverse_kl": on["token"]["reverse_kl"] if on["token"] else None,
        "drift_forward_kl": result["drift"].get("forward_kl"),
        "student_ece": on["answers"]["ece"],
        "student_confident_wrong_rate": on["answers"]["confident_wrong_rate"],
        "self_correction_change": result["symptom_change"].get("self_correction_rate"),
        "student_loop_rate": on["text"]["loop_rate"],
        "student_repeated_ngram_rate": on["text"]["repeated_ngram_rate"],
        "student_truncation_rate": on["text"]["truncation_rate"],
    }
    if off["token"]:
        for k, share in zip(off["token"]["split"]["k"], off["token"]["split"]["forward_tail_share"]):
            numbers[f"tail_share@{k}"] = share
    return numbers


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_report(result: Mapping[str, Any]) -> str:
    """The markdown summary: settings, traps, symptoms, and a few completions."""
    s = result["settings"]
    off, on = result["teacher_samples"], result["student_samples"]
    lines = [f"# Distillation diagnostics: {s['task']}", "",
             f"- teacher: `{s['teacher']}`", f"- student: `{s['student']}`",
             f"- tokenizers: {'the same (token-level KL)' if s['same_tokenizer'] else 'different (span-aligned)'}",
             f"- {s['num_examples']} prompts x {s['samples_per_prompt']} samples per model, temperature "
             f"{s['temperature']}, at most {s.get('max_completion_length', s.get('max_new_tokens'))} new tokens", "",
             "Off-policy = sequences the teacher wrote (what KD trains on); on-policy = sequences the student "
             "wrote (what it meets when it generates).", "",
             "## Traps", "",
             "| measure | off-policy | on-policy |", "|---|---|---|"]

    def row(label: str, a: Any, b: Any) -> None:
        lines.append(f"| {label} | {_fmt(a)} | {_fmt(b)} |")

    row("teacher log-lik per byte", off["likelihood"]["teacher_per_byte"], on["likelihood"]["teacher_per_byte"])
    row("student log-lik per byte", off["likelihood"]["student_per_byte"], on["likelihood"]["student_per_byte"])
    row("gap per byte (teacher - student)", off["likelihood"]["gap_per_byte"], on["likelihood"]["gap_per_byte"])
    row("binarised KL per token/span", off["likelihood"]["event_forward_kl"], on["likelihood"]["event_forward_kl"])
    row("aligned byte fraction", off["likelihood"]["aligned_byte_fraction"],
        on["likelihood"]["aligned_byte_fraction"])
    if off["token"]:
        row("forward KL(T‖S) per token", off["token"]["forward_kl"], on["token"]["forward_kl"])
        row("reverse KL(S‖T) per token", off["token"]["reverse_kl"], on["token"]["reverse_kl"])
        row("teacher entropy per token", off["token"]["teacher_entropy"], on["token"]["teacher_entropy"])
        row("student entropy per token", off["token"]["student_entropy"], on["token"]["student_entropy"])
        row("sequence-level KL estimate (sampler‖other)", off["token"]["sequence"]["sequence_kl_estimate"],
            on["token"]["sequence"]["sequence_kl_estimate"])
        row("sum of token KLs per sequence", off["token"]["sequence"]["token_kl_sum"],
            on["token"]["sequence"]["token_kl_sum"])
        row("share of forward KL on the top 10% tokens", off["token"]["concentration"]["forward_kl"]["top_share"],
            on["token"]["concentration"]["forward_kl"]["top_share"])
        lines += ["", "Tail noise: the forward KL per token split over the teacher's top-k tokens (head) and "
                  "the rest (tail); head + tail = total.", "",
                  "| k | teacher top-k mass | head (off) | tail (off) | tail share (off) | tail share (on) |",
                  "|---|---|---|---|---|---|"]
        split_off, split_on = off["token"]["split"], on["token"]["split"]
        for j, k in enumerate(split_off["k"]):
            lines.append(f"| {k} | {_fmt(split_off['teacher_top_k_mass'][j])} | {_fmt(split_off['forward_head'][j])}"
                         f" | {_fmt(split_off['forward_tail'][j])} | {_fmt(split_off['forward_tail_share'][j])} | "
                         f"{_fmt(split_on['forward_tail_share'][j])} |")
    else:
        row("sequence-level log-ratio over aligned spans", off["span_sequence"]["sequence_kl_estimate"],
            on["span_sequence"]["sequence_kl_estimate"])
    drift = result["drift"]
    lines += ["", "Off-policy drift (on-policy minus off-policy): "
              + ", ".join(f"{k} {_fmt(v)}" for k, v in drift.items()), "",
              "## Symptoms", "", "| measure | teacher (own samples) | student (own samples) |", "|---|---|---|"]
    for key, label in (("accuracy", "accuracy"), ("answered_rate", "answered rate"),
                       ("mean_confidence", "mean answer confidence"), ("wrong_confidence", "confidence when wrong"),
                       ("confident_wrong_rate", "confident wrong rate"), ("ece", "expected calibration error")):
        row(label, off["answers"][key], on["answers"][key])
    for key, label in (("self_correction_rate", "self-correction rate"), ("check_step_rate", "arith check-step rate"),
                       ("markers_per_completion", "markers per completion"),
                       ("repeated_ngram_rate", f"repeated {s['ngram']}-gram rate"), ("loop_rate", "loop rate"),
                       ("truncation_rate", "truncation rate"), ("mean_words", "words per completion")):
        row(label, off["text"][key], on["text"][key])
    lines += ["", "## Sample completions", ""]
    for source, entry in (("teacher", off), ("student", on)):
        for ex in entry["examples"][:2]:
            lines += [f"**{source}** on: {ex['prompt'][:200]}", "", "```", ex["completion"][:600], "```", ""]
    return "\n".join(lines) + "\n"


def plot_divergence(result: Mapping[str, Any], path: Path) -> Path:
    """Per-byte log-likelihoods (both sources), tail share of the KL against k, reliability diagrams."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    off, on = result["teacher_samples"], result["student_samples"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    x = np.arange(2)
    for j, (who, color) in enumerate((("teacher", "tab:blue"), ("student", "tab:orange"))):
        values = [off["likelihood"][f"{who}_per_byte"], on["likelihood"][f"{who}_per_byte"]]
        ax.bar(x + (j - 0.5) * 0.38, values, 0.38, label=who, color=color)
    ax.set_xticks(x, ["teacher samples\n(off-policy)", "student samples\n(on-policy)"])
    ax.set_ylabel("log-likelihood per byte (nats)")
    ax.set_title("teacher-student gap")
    ax.legend()
    ax = axes[1]
    if off["token"]:
        for entry, label in ((off, "off-policy"), (on, "on-policy")):
            split = entry["token"]["split"]
            shares = [np.nan if v is None else v for v in split["forward_tail_share"]]
            ax.plot(split["k"], shares, marker="o", label=label)
        ax.set_xscale("log")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel("k (teacher's top-k tokens)")
        ax.set_ylabel("tail share of KL(T||S)")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "token-level KL needs\nthe same tokenizer", ha="center", va="center")
        ax.set_axis_off()
    ax.set_title("tail noise")
    ax = axes[2]
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":")
    for entry, label in ((off, "teacher"), (on, "student")):
        bins = entry["answers"]["reliability"]
        if bins:
            ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o",
                    label=f"{label} (ECE {_fmt(entry['answers']['ece'], 2)})")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("answer confidence")
    ax.set_ylabel("accuracy")
    ax.set_title("calibration of answers")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


SYMPTOM_BARS = (("answers", "confident_wrong_rate", "confident\nwrong"), ("answers", "ece", "ECE"),
                ("text", "self_correction_rate", "self-\ncorrection"), ("text", "check_step_rate", "check\nsteps"),
                ("text", "repeated_ngram_rate", "repeated\nn-grams"), ("text", "loop_rate", "loops"),
                ("text", "truncation_rate", "truncated"))


def plot_symptoms(result: Mapping[str, Any], path: Path) -> Path:
    """Grouped bars: each symptom rate for the teacher's and the student's own completions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    x = np.arange(len(SYMPTOM_BARS))
    for j, (source, label) in enumerate((("teacher_samples", "teacher"), ("student_samples", "student"))):
        values = [result[source][group][key] for group, key, _ in SYMPTOM_BARS]
        ax.bar(x + (j - 0.5) * 0.38, [np.nan if v is None else v for v in values], 0.38, label=label)
    ax.set_xticks(x, [name for _, _, name in SYMPTOM_BARS])
    ax.set_ylabel("rate")
    ax.set_ylim(0, 1.05)
    ax.set_title("symptoms in generated text")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(result: Mapping[str, Any], out: Path, *, plots: bool = True) -> None:
    """diagnostics.json, diagnostics.md and (with ``plots``) divergence.png and symptoms.png in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "diagnostics.json").write_text(json.dumps(result, indent=2, allow_nan=False))
    (out / "diagnostics.md").write_text(markdown_report(result))
    if plots:
        plot_divergence(result, out / "divergence.png")
        plot_symptoms(result, out / "symptoms.png")

