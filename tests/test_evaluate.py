"""``jaxdistill.evaluate``: reproducible greedy results, JSON/markdown/PNG outputs, seeds as mean +- std,
the teacher comparison, clear errors and the CLI's --help; ``jaxdistill.experiments.scorecard``: its arms,
collapse flags and CLI (on the same tiny models)."""
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from distill_world import build_world
from jaxdistill.distill import DistillConfig, distill
from jaxdistill.evaluate import EvaluateConfig, aggregate, compare_teachers, evaluate_models, make_task
from jaxdistill.evaluate import main as evaluate_main
from jaxdistill.experiments.scorecard import ScorecardConfig, flag_collapse, scorecard
from jaxdistill.experiments.scorecard import main as scorecard_main
from jaxdistill.tasks import list_tasks

SMALL = dict(task_options=("difficulty=1",), limit=4, max_new_tokens=16, batch_size=4)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory)


def test_greedy_results_are_identical_across_runs_and_files_are_written(world, tmp_path):
    models = {"student": [str(world.student)], "teacher": str(world.teacher)}
    first = evaluate_models(models, ["arith"], output_dir=tmp_path / "a", **SMALL)
    second = evaluate_models(models, ["arith"], output_dir=tmp_path / "b", **SMALL)
    assert first == second
    assert (tmp_path / "a" / "results.json").read_text() == (tmp_path / "b" / "results.json").read_text()
    run = first["models"]["teacher"]["runs"][0]["arith"]
    assert run["n"] == 4 and 0.0 <= run["accuracy"] <= 1.0 and run["mean_length"] > 0
    table = (tmp_path / "a" / "results.md").read_text()
    assert "| student | 1 |" in table and "| teacher | 1 |" in table and "unparseable" in table
    png = (tmp_path / "a" / "results.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000


def test_seeds_are_reported_as_mean_and_std(world, tmp_path):
    summary = aggregate([{"accuracy": 0.2, "unparseable_rate": 0.1, "mean_length": 10},
                         {"accuracy": 0.4, "unparseable_rate": 0.3, "mean_length": 20}])
    assert summary["accuracy_mean"] == pytest.approx(0.3)
    assert summary["accuracy_std"] == pytest.approx(np.std([0.2, 0.4], ddof=1))
    assert summary["unparseable_rate_mean"] == pytest.approx(0.2) and summary["n_runs"] == 2
    run = distill(DistillConfig(student=str(world.student), max_steps=0, output_dir=str(tmp_path / "run"),
                                progress=False))
    results = evaluate_models({"arm": [str(world.student), str(run)]}, ["arith"], **SMALL)  # a run folder too
    arm = results["models"]["arm"]
    assert arm["arith"]["n_runs"] == 2 and arm["arith"]["accuracy_std"] == 0.0  # the same weights twice
    assert arm["runs"][0]["arith"] == arm["runs"][1]["arith"]


def test_clear_errors_for_unknown_task_and_wrong_paths(world, tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown task 'arithmetic'; valid tasks: gsm8k, math500"):
        evaluate_models({"s": str(world.student)}, ["arithmetic"])
    with pytest.raises(FileNotFoundError, match="nowhere.*does not exist"):
        evaluate_models({"s": str(tmp_path / "nowhere")}, ["arith"])
    (tmp_path / "unfinished" / "checkpoints").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="without a final model/"):
        evaluate_models({"s": str(tmp_path / "unfinished")}, ["arith"])
    with pytest.raises(SystemExit, match="does not exist"):
        evaluate_main([f"models=[s={tmp_path / 'nowhere'}]", f"output_dir={tmp_path / 'out'}"])
    with pytest.raises(ValueError, match="unknown task"):
        make_task("gsm9k")
    assert make_task("arith", ["arith:difficulty=3", "gsm8k:instruction=x"]).config.max_number == 50


def test_teacher_comparison_kl_accuracy_and_length(world):
    task = make_task("arith", ["difficulty=1"])
    examples = task.load("test", limit=4)
    out = compare_teachers(world.teacher, {"same": world.teacher, "other": world.student}, task, examples,
                           max_new_tokens=16, batch_size=4)
    assert out["same"]["kl_to_original"] == pytest.approx(0.0, abs=1e-5)
    assert out["same"]["accuracy_change"] == 0.0 and out["same"]["mean_length"] == out["original"]["mean_length"]
    assert out["other"]["kl_to_original"] > 1e-3  # another model, same tokenizer
    with pytest.raises(ValueError, match="another tokenizer"):
        compare_teachers(world.teacher, {"x": world.cross_student}, task, examples, max_new_tokens=16, batch_size=4)


def test_collapse_is_relative_to_the_same_student_and_attack_from_the_original():
    rows = [{"student": "s", "arm": "sft", "objective": "sft", "teacher": "", "accuracy_mean": 0.3},
            {"student": "s", "arm": "kd/original", "objective": "kd", "teacher": "original", "accuracy_mean": 0.5},
            {"student": "s", "arm": "kd/undistillable", "objective": "kd", "teacher": "undistillable",
             "accuracy_mean": 0.1},
            {"student": "s", "arm": "kd/distillable", "objective": "kd", "teacher": "distillable",
             "accuracy_mean": 0.6},
            {"student": "s", "arm": "gkd/original", "objective": "gkd", "teacher": "original", "accuracy_mean": 0.0},
            {"student": "s", "arm": "gkd/undistillable", "objective": "gkd", "teacher": "undistillable",
             "accuracy_mean": 0.0}]
    flag_collapse(rows, 0.2)
    assert "collapse" not in rows[0]
    assert rows[2]["collapse"] and rows[2]["relative_to_original"] == pytest.approx(0.2)  # 0.1 <= 0.2 x 0.5
    assert not rows[3]["collapse"] and not rows[1]["collapse"]
    assert rows[5]["collapse"] is False and rows[5]["relative_to_original"] is None  # nothing to collapse from


def test_scorecard_runs_every_arm_and_writes_the_table(world, tmp_path):
    recipe = DistillConfig(task="arith", task_options=("difficulty=1",), train_limit=16, batch_size=4, max_steps=1,
                           max_completion_length=16, learning_rate=1e-3, save_steps=0)
    teacher = str(world.teacher)
    config = ScorecardConfig(original_teacher=teacher, output_dir=str(tmp_path / "card"), limit=4, max_new_tokens=16,
                             batch_size=4, teachers=(f"eta0={teacher}", f"distillable={teacher}",
                                                     f"undistillable={teacher}"),
                             students=(f"small={world.student}",), attacks=("kd",), seeds=(0,), recipe=recipe,
                             workers=2)
    result = scorecard(config)  # the arms run on two worker processes
    arms = [row["arm"] for row in result["arms"]]
    assert arms == ["before", "sft", "kd/original", "kd/eta0", "kd/distillable", "kd/undistillable"]
    summaries = {arm: json.loads((tmp_path / "card" / "runs" / "small" / arm.replace("/", "_") / "seed0" /
                                  "summary.json").read_text()) for arm in arms}
    assert summaries["before"]["steps"] == 0 and summaries["sft"]["objective"] == "sft"
    assert summaries["kd/undistillable"]["objective"] == "kd" and summaries["kd/undistillable"]["steps"] == 1
    assert all("collapse" in row for row in result["arms"][2:])
    assert set(result["teachers"]) == {"original", "eta0", "distillable", "undistillable"}
    assert result["teachers"]["undistillable"]["kl_to_original"] == pytest.approx(0.0, abs=1e-5)
    table = (tmp_path / "card" / "scorecard.md").read_text()
    for arm in arms:
        assert f"| small | {arm} |" in table
    assert "## Teachers" in table and (tmp_path / "card" / "scorecard.png").read_bytes()[:4] == b"\x89PNG"
    again = scorecard(config)  # finished runs are reused, results unchanged
    assert [r["accuracy_mean"] for r in again["arms"]] == [r["accuracy_mean"] for r in result["arms"]]

    # The same scorecard in this process (workers=1) trains the same students: the workers were pinned to
    # one share of the cores each, so XLA used fewer threads and the low bits may differ, nothing more.
    alone = dataclasses.replace(config, output_dir=str(tmp_path / "alone"), workers=1)
    result_alone = scorecard(alone)
    assert [r["arm"] for r in result_alone["arms"]] == arms
    for arm in arms:
        folder = Path("runs") / "small" / arm.replace("/", "_") / "seed0" / "model" / "model.safetensors"
        here, there = load_file(tmp_path / "alone" / folder), load_file(tmp_path / "card" / folder)
        assert here.keys() == there.keys(), arm
        for name in here:
            np.testing.assert_allclose(here[name], there[name], rtol=1e-4, atol=1e-6, err_msg=f"{arm} {name}")


def test_cli_help_lists_every_task_and_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in [f.name for f in dataclasses.fields(EvaluateConfig)] + list_tasks():
        assert word in text, word
    with pytest.raises(SystemExit, match="python -m jaxdistill.experiments.scorecard"):
        evaluate_main(["--scorecard", "original_teacher=t"])  # the scorecard's own command now


def test_scorecard_cli_help_lists_every_field_and_objective(capsys):
    with pytest.raises(SystemExit) as exit_info:
        scorecard_main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    fields = ([f.name for f in dataclasses.fields(ScorecardConfig) if f.name != "recipe"] +
              [f"recipe.{f.name}" for f in dataclasses.fields(DistillConfig)])
    for word in fields + ["sft", "seqkd", "kd", "gkd"]:
        assert word in text, word
    with pytest.raises(SystemExit, match="label 'original' is the uncalibrated teacher"):
        scorecard_main(["original_teacher=t", "teachers=[original=t]", "students=[s=x]"])
