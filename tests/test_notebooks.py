"""The notebooks execute (nbclient) on CPU: 02 with a tiny random stand-in for Qwen3-0.6B, 01 on the quick profile."""
from __future__ import annotations

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from jaxdistill.training import read_metrics
from tiny_models import random_qwen_folder

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT_S = 600


def with_parameters(notebook, **values) -> None:
    """Replace the assignments of the cell tagged ``parameters`` (papermill style) with ``values``."""
    cells = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, "a notebook needs exactly one cell tagged 'parameters'"
    cell = cells[0]
    names = {line.split("=")[0].strip() for line in cell.source.splitlines() if "=" in line}
    unknown = set(values) - names
    assert not unknown, f"{sorted(unknown)} are not parameters of this notebook ({sorted(names)})"
    lines = [line for line in cell.source.splitlines() if line.split("=")[0].strip() not in values]
    cell.source = "\n".join(lines + [f"{k} = {v!r}" for k, v in values.items()])


def execute(name: str, workdir: Path, monkeypatch, **parameters):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    with_parameters(notebook, **parameters)
    # the kernel inherits this environment: CPU, one device, this checkout on the path
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    monkeypatch.setenv("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")  # faster compiles; CI checks plumbing, not speed
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                   resources={"metadata": {"path": str(workdir)}}).execute()
    return notebook


def outputs_text(notebook) -> str:
    parts = []
    for cell in notebook.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") or json.dumps(out.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


@pytest.mark.parametrize("name", ["01_quickstart_tiny.ipynb", "02_qwen3_small.ipynb"])
def test_notebooks_are_small_and_saved_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    assert all(not c.get("outputs") and not c.get("execution_count") for c in notebook.cells if c.cell_type == "code")
    assert (NOTEBOOKS / name).stat().st_size < 20_000


def test_qwen3_notebook_runs_on_a_tiny_stand_in(tmp_path, monkeypatch, shared_dir):
    stand_in = random_qwen_folder(tmp_path / "stand_in_qwen3", shared_dir / "tokenizers" / "qwen3",
                                  model_type="qwen3", hidden_size=32, layers=1, heads=4, kv_heads=2, head_dim=8)
    output_dir = tmp_path / "run"
    notebook = execute("02_qwen3_small.ipynb", tmp_path, monkeypatch, TEACHER=str(stand_in), PROXY=str(stand_in),
                       DOWNLOAD=False, DATA_PATH=str(shared_dir / "data" / "gsm8k"), OUTPUT_DIR=str(output_dir),
                       DTYPE="float32", MAX_STEPS=2, PROMPTS_PER_STEP=2, MAX_PROMPT_LENGTH=256,
                       MAX_COMPLETION_LENGTH=8, EVAL_PROMPTS=2)
    assert [r["step"] for r in read_metrics(output_dir)] == [0, 1, 2]
    assert (output_dir / "teacher" / "config.json").exists()
    text = outputs_text(notebook)
    assert "memory plan per device" in text and "teacher KV cache" in text
    assert "held-out accuracy:" in text and "verdict:" in text


def test_quickstart_notebook_runs_the_quick_tiny_world(tmp_path, monkeypatch):
    """Notebook 01 runs the default run's quick profile; the CLI's --quick then reuses its stages.

    One quick run serves both checks (issue 8's artefact test and the notebook), to keep the suite short.
    """
    from default_run_checks import assert_every_artefact

    from jaxdistill.calibrate import main

    output_dir = tmp_path / "tiny_world"
    # One worker (in-process): the suite's own workers already keep the cores busy; worker processes
    # are tested in tests/test_jobs.py and by the scorecard in tests/test_evaluate.py.
    notebook = execute("01_quickstart_tiny.ipynb", tmp_path, monkeypatch, QUICK=True, OUTPUT_DIR=str(output_dir),
                       WORKERS=1)
    runs = sorted(output_dir.rglob("metrics.jsonl"))
    assert runs, f"default_run wrote no metrics.jsonl under {output_dir}"
    assert all(read_metrics(p.parent) for p in runs)
    assert f"{len(runs)} runs with metrics under {output_dir}" in outputs_text(notebook)
    assert_every_artefact(output_dir)
    (output_dir / "report.md").unlink()
    monkeypatch.setattr("jaxdistill.experiments.world.default_workers", lambda: 1)
    assert main(["--quick", f"output_dir={output_dir}"]) == 0  # the README's CLI, finished stages reused
    assert_every_artefact(output_dir)
