"""The experiments' one runner reuses finished runs (and only those), and the knob curve built from a
scorecard: pure checks on folders and dicts, no training."""
import dataclasses
import json
from pathlib import Path

import pytest

from jaxdistill.distill import DistillConfig
from jaxdistill.experiments import runner
from jaxdistill.experiments.knob import DEFAULT_RUN_ETAS, ORIGINAL, knob_table, scorecard_accuracy
from jaxdistill.rl.config import CalibrateConfig


def _finish(config, command, results, input_fields):
    """Record ``config``'s run in its folder as finished, as the command does at its end."""
    from jaxdistill import run_folder

    with run_folder.open_run(config.output_dir, config, command=command, resume=False, input_fields=input_fields,
                             inputs=run_folder.inputs_of(config, input_fields)) as run:
        for name in results:
            (Path(config.output_dir) / name).mkdir(parents=True, exist_ok=True)
        run.finish(results=list(results))


def test_a_finished_run_is_reused_without_loading_anything(tmp_path):
    # teacher, proxy and student paths do not exist: running would fail, reusing must not touch them
    calibration = CalibrateConfig(teacher="nowhere", proxy="nowhere", output_dir=str(tmp_path / "cal"))
    distillation = DistillConfig(student="nowhere", teacher="nowhere", objective="kd",
                                 output_dir=str(tmp_path / "kd"))
    assert not runner.finished(calibration) and not runner.finished(distillation)
    _finish(calibration, "calibrate", ["teacher"], runner.CALIBRATION_INPUTS)
    _finish(distillation, "distill", ["model"], runner.DISTILLATION_INPUTS)
    assert runner.finished(calibration) and runner.finished(distillation)
    assert runner.calibrated_teacher(calibration) == str(tmp_path / "cal" / "teacher")
    assert runner.distilled_student(distillation) == str(tmp_path / "kd" / "model")
    # the same folder, another setting: not this run, so not reused
    assert not runner.finished(dataclasses.replace(calibration, eta=-1.0))


def test_an_unfinished_run_is_run(tmp_path):
    (tmp_path / "cal" / "checkpoints").mkdir(parents=True)  # unfinished: run (here the teacher fails to load)
    with pytest.raises(FileNotFoundError):
        runner.calibrated_teacher(CalibrateConfig(teacher=str(tmp_path / "missing"), proxy=str(tmp_path / "missing"),
                                                  output_dir=str(tmp_path / "cal")))
    with pytest.raises(ValueError, match="export=false"):
        runner.calibrated_teacher(CalibrateConfig(teacher="t", proxy="p", export=False, output_dir=str(tmp_path)))


def test_the_default_runs_knob_from_its_scorecard():
    runs = lambda *accs: [{"accuracy": a} for a in accs]  # noqa: E731
    card = {"teachers": {ORIGINAL: {"accuracy": 0.5}, "eta0": {"accuracy": 0.45}, "distillable": {"accuracy": 0.5},
                         "undistillable": {"accuracy": 0.4}},
            "arms": [{"student": "s", "objective": "sft", "teacher": "", "runs": runs(0.1)},
                     {"student": "s", "objective": "gkd", "teacher": ORIGINAL, "runs": runs(0.3, 0.5)},
                     {"student": "s", "objective": "gkd", "teacher": "undistillable", "runs": runs(0.05, 0.07)},
                     {"student": "s", "objective": "gkd", "teacher": "distillable", "runs": runs(0.4, 0.4)}]}
    accuracy = scorecard_accuracy(card)
    assert list(accuracy) == ["teacher", "s (gkd)"]
    assert accuracy["s (gkd)"] == {ORIGINAL: [0.3, 0.5], "undistillable": [0.05, 0.07], "distillable": [0.4, 0.4]}
    rows = knob_table(accuracy, DEFAULT_RUN_ETAS)
    assert [(r["name"], r["eta"]) for r in rows] == [(ORIGINAL, None), ("eta0", 0.0), ("distillable", 1.0),
                                                     ("undistillable", -1.0)]
    minus = rows[3]["accuracy"]["s (gkd)"]
    assert minus["collapse"] is True and minus["relative_to_original"] == pytest.approx(0.15)
    assert "s (gkd)" not in rows[1]["accuracy"] and rows[1]["accuracy"]["teacher"]["runs"] == [0.45]
    json.dumps(rows)  # written to knob.json / shown in the report as it is


def test_exported_step_reads_the_guard_s_choice_from_the_manifest(tmp_path):
    assert runner.exported_step(tmp_path / "missing") is None  # nothing there
    (tmp_path / "manifest.json").write_text(json.dumps({"status": "finished", "summary": {"final": {}}}))
    assert runner.exported_step(tmp_path) is None  # a run without keep_accuracy_within
    (tmp_path / "manifest.json").write_text(json.dumps({"status": "finished", "summary": {"selected_step": 40}}))
    assert runner.exported_step(tmp_path) == 40
