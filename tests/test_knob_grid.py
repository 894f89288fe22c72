"""knob_grid: the cells and their calibration configs, the target checks, the report and the figure
(no training: seconds)."""
import dataclasses
import json

import pytest

from jaxdistill.config import ConfigError
from jaxdistill.experiments.knob_grid import (SFT, Cell, KnobGridConfig, beats, cell_calibration,
                                              check_guard_problems, default_run_students, detour_rates, draw_checks,
                                              grid_cells, paired_change_se, parse_overrides, read_default_run, summary,
                                              target_checks, trained_cell, write_grid)
from jaxdistill.experiments.scorecard import decoding
from jaxdistill.experiments.world import QUICK, scorecard_config, world_paths


def fake_run(root, world_version=None):
    """The files of a finished quick default run that the grid reads before anything is loaded."""
    (root / "world" / "teacher_sft" / "model").mkdir(parents=True)
    profile = dataclasses.asdict(QUICK) | {"seed": 0}
    if world_version is not None:
        profile["world_version"] = world_version
        (root / "world" / "world_version.json").write_text(json.dumps({"world_version": world_version}))
    else:
        del profile["world_version"]  # a run from before world versions
    (root / "profile.json").write_text(json.dumps(profile))
    (root / "scorecard").mkdir()
    (root / "scorecard" / "scorecard.json").write_text("{}")
    return root


def test_cells_enumerate_the_grid_in_table_order():
    cells = grid_cells(["span", "sequence"], [0.04, 0.2], [1, 0, -1], [0, 1])
    assert len(cells) == 2 * 2 * 3 * 2
    assert cells[0] == Cell("span", 0.04, 1.0, 0) and cells[1] == Cell("span", 0.04, 1.0, 1)
    assert cells[-1] == Cell("sequence", 0.2, -1.0, 1)
    assert cells[5].name == "span_beta0.04_eta-1_cal1"
    assert len({c.name for c in cells}) == len(cells)


def test_an_eta_zero_cell_trains_the_span_cells_teacher_except_in_influence_mode():
    cells = grid_cells(["span", "sequence", "influence"], [0.04], [1, 0], [0, 1])
    trained = {c.name: trained_cell(c).name for c in cells}
    assert trained["sequence_beta0.04_eta0_cal1"] == "span_beta0.04_eta0_cal1"
    assert trained["sequence_beta0.04_eta1_cal0"] == "sequence_beta0.04_eta1_cal0"
    assert trained["influence_beta0.04_eta0_cal0"] == "influence_beta0.04_eta0_cal0"  # its own prompts
    assert len(set(trained.values())) == len(cells) - 2  # the two sequence eta = 0 cells run as span


@pytest.mark.parametrize("version", [None, 1, 2])
def test_each_cell_calibrates_the_default_runs_teacher_in_its_world(tmp_path, version):
    run = fake_run(tmp_path / "run", version)
    profile, seed = read_default_run(run)
    assert seed == 0 and profile.world_version == (version or 1)
    world = world_paths(run / "world")
    cell = Cell("sequence", 0.2, -1.0, 3)
    config = cell_calibration(cell, world, tmp_path / "out", profile, parse_overrides(["max_steps=7"]))
    assert (config.calibration_mode, config.beta, config.eta, config.seed) == ("sequence", 0.2, -1.0, 3)
    assert config.teacher == str(world["teacher"]) and config.proxy == str(world["proxy"])
    assert config.max_steps == 7 and config.num_generations == QUICK.num_generations
    assert config.output_dir == str(tmp_path / "out")
    expected = ("difficulty=1",) + (("version=2",) if version == 2 else ())
    assert config.task_options == expected
    config.validate()


def test_a_mixed_worlds_grid_keeps_its_students_world(tmp_path):
    run = fake_run(tmp_path / "run", 2)
    profile = json.loads((run / "profile.json").read_text()) | {"student_world_version": 1}
    (run / "profile.json").write_text(json.dumps(profile))
    with pytest.raises(ValueError, match=r"says world v2 \(students: v1\) but .* says v2: the folder mixes"):
        read_default_run(run)
    (run / "world" / "world_version.json").write_text(json.dumps({"world_version": 2, "student_world_version": 1}))
    profile, _ = read_default_run(run)
    assert (profile.world_version, profile.student_world_version) == (2, 1)


def test_a_run_folder_that_mixes_world_versions_or_is_unfinished_is_refused(tmp_path):
    run = fake_run(tmp_path / "run", 2)
    (run / "world" / "world_version.json").write_text(json.dumps({"world_version": 1}))
    with pytest.raises(ValueError, match="mixes two runs"):
        read_default_run(run)
    with pytest.raises(FileNotFoundError, match="python -m jaxdistill.calibrate output_dir="):
        read_default_run(tmp_path / "nothing")


def test_bad_grid_settings_are_refused_with_the_field_named():
    KnobGridConfig(overrides=("max_steps=5",), attacks=("battery", "kd")).validate()
    with pytest.raises(ConfigError, match="calibration_mode='spam'"):
        KnobGridConfig(modes=("spam",)).validate()
    with pytest.raises(ConfigError, match="set by the grid"):
        KnobGridConfig(overrides=("eta=2",)).validate()
    with pytest.raises(ConfigError, match="unknown config key 'max_stepz'"):
        KnobGridConfig(overrides=("max_stepz=5",)).validate()
    with pytest.raises(ConfigError, match="etas is empty"):
        KnobGridConfig(etas=()).validate()
    with pytest.raises(ConfigError, match="repeats"):
        KnobGridConfig(seeds=(0, 0)).validate()
    with pytest.raises(ConfigError, match="attacks='sft'"):
        KnobGridConfig(attacks=("sft",)).validate()


def test_the_accuracy_guard_may_not_select_on_the_problems_the_teacher_is_reported_on():
    profile = dataclasses.replace(QUICK, eval_num_prompts=100)
    check_guard_problems({}, profile, 500, 500)  # no guard: nothing to check
    check_guard_problems({"keep_accuracy_within": 0.05, "eval_num_prompts": 300}, profile, 300, 500)  # 300-499
    check_guard_problems({"keep_accuracy_within": 0.05}, profile, 100, 500)  # after the scorecard's 100
    with pytest.raises(ConfigError, match="give eval_num_prompts >= teacher_num_prompts, e.g. teacher_num_prompts=300"):
        check_guard_problems({"keep_accuracy_within": 0.05}, profile, 500, 500)
    with pytest.raises(ConfigError, match="takes all 500 of them"):  # no problem left to validate on
        check_guard_problems({"keep_accuracy_within": 0.05, "eval_num_prompts": 500}, profile, 500, 500)
    with pytest.raises(ConfigError, match="teacher_num_prompts=1"):
        KnobGridConfig(teacher_num_prompts=1).validate()


def test_the_change_has_a_paired_standard_error():
    # differences 0, 1, 0, -1: sample std sqrt(2/3), over sqrt(4)
    assert paired_change_se([1, 1, 0, 0], [1, 0, 0, 1]) == pytest.approx((2 / 3) ** 0.5 / 2)
    assert paired_change_se([1, 0, 1], [1, 0, 1]) == 0.0  # the same answers: no uncertainty in the change
    with pytest.raises(ValueError, match="one length"):
        paired_change_se([1, 0], [1])


def test_validation_covers_the_modes_that_train_a_teacher(monkeypatch):
    """A sequence-mode grid with eta = 0 trains span's teacher (``trained_cell``): its span calibration is
    checked too."""
    from jaxdistill.rl.config import CalibrateConfig

    checked = []
    original = CalibrateConfig.validate
    monkeypatch.setattr(CalibrateConfig, "validate",
                        lambda self: (checked.append(self.calibration_mode), original(self))[1])
    KnobGridConfig(modes=("sequence",), etas=(1.0, 0.0), betas=(0.04,)).validate()
    assert set(checked) == {"sequence", "span"}
    checked.clear()
    KnobGridConfig(modes=("influence",), etas=(0.0,), betas=(0.04,)).validate()
    assert set(checked) == {"influence"}


def test_the_default_runs_student_runs_are_reused_only_with_the_same_recipe_and_decoding(tmp_path):
    world = world_paths(tmp_path / "world")
    config = scorecard_config(world, {}, tmp_path / "grid", QUICK, seeds=(0, 1), workers=1)
    runs = [{"seed": 0, "accuracy": 0.25}, {"seed": 1, "accuracy": 0.5}]
    card = {"settings": {"recipe": json.loads(json.dumps(dataclasses.asdict(config.recipe))),
                         "decoding": decoding(config), "split": config.split, "num_prompts": config.num_prompts,
                         "seeds": [0, 1]},
            "arms": [{"student": "other", "arm": "seqkd/original", "runs": runs}],
            "not_run": [{"student": "proxy_like", "arm": "kd_top20/original", "attack": "kd_top20", "reason": "r"}]}
    assert default_run_students(card, config) == {("other", "seqkd/original", 0): 0.25,
                                                  ("other", "seqkd/original", 1): 0.5,
                                                  ("proxy_like", "kd_top20/original", 0): None,
                                                  ("proxy_like", "kd_top20/original", 1): None}
    card["settings"]["recipe"]["learning_rate"] = 1.0
    assert default_run_students(card, config) == {}


def test_detour_rates_are_per_sample():
    rates = detour_rates(["3*8=25, wait: 3*8=24\n24+5=29\n#### 29",  # a real correction
                          "3*8=25, wait: 3*8=25\n#### 25",            # a hollow one
                          "24=3*8\n#### 24"])                          # a result-first line
    assert rates["corrections"] == pytest.approx(2 / 3) and rates["hollow"] == pytest.approx(1 / 3)
    assert rates["real_corrections"] == pytest.approx(1 / 3) and rates["result_first"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError):
        detour_rates([])


def _students(acc, std=0.01):
    return {s: {a: {**summary([acc - std, acc + std]), "ratio": None} for a in ("seqkd", "gkd")}
            for s in ("proxy_like", "other")}


def test_the_undistillable_target_needs_accuracy_within_5_points_and_every_ratio_at_most_half():
    original = {s: {a: summary([0.4, 0.4]) for a in ("seqkd", "gkd", SFT)} for s in ("proxy_like", "other")}
    students = _students(0.18)
    for per_attack in students.values():
        for entry in per_attack.values():
            entry["ratio"] = entry["mean"] / 0.4  # 0.45
    checks = target_checks(0.68 - 0.63, students, original)  # 5 points exactly (as k/n accuracies give it)
    assert checks == {"within_tolerance": True, "ratios_at_most_target": True, "undistillable": True,
                      "distillable": False}
    students["other"]["gkd"]["ratio"] = 0.6
    assert target_checks(0.0, students, original)["undistillable"] is False
    students["other"]["gkd"]["ratio"] = None  # the original's students scored 0: no ratio, no target
    assert target_checks(0.0, students, original)["ratios_at_most_target"] is False
    students["other"]["gkd"]["ratio"] = 0.5
    assert target_checks(0.0, students, original)["undistillable"] is True
    assert target_checks(-0.06, students, original)["undistillable"] is False


def test_the_distillable_target_needs_both_students_beating_sft_and_the_original_by_one_std():
    original = {s: {a: summary([0.38, 0.40, 0.42]) for a in ("seqkd", "gkd", SFT)} for s in ("proxy_like", "other")}
    assert target_checks(0.1, _students(0.5), original)["distillable"] is True
    assert beats(summary([0.5, 0.5]), summary([0.38, 0.40, 0.42])) and not beats(summary([0.41]), summary([0.4, 0.42]))
    close = _students(0.5)
    close["proxy_like"]["gkd"] = {**summary([0.40, 0.44]), "ratio": 1.0}  # 2 points up, std 2.8 points
    assert target_checks(0.1, close, original)["distillable"] is False
    no_gkd = {s: {"seqkd": e["seqkd"]} for s, e in _students(0.5).items()}
    assert target_checks(0.1, no_gkd, original)["distillable"] is None


def test_a_target_holds_when_met_in_every_draw_of_at_least_two():
    def cell(seed, undistillable):
        return {"mode": "span", "beta": 0.04, "eta": -1.0, "calibration_seed": seed,
                "targets": {"undistillable": undistillable, "distillable": None}}

    assert draw_checks([cell(0, True)])[0]["undistillable_holds"] is False  # one draw is not enough
    both = draw_checks([cell(0, True), cell(1, True)])[0]
    assert both["draws"] == 2 and both["undistillable_met"] == 2 and both["undistillable_holds"] is True
    assert both["distillable_met"] == 0 and both["distillable_holds"] is False
    assert draw_checks([cell(0, True), cell(1, False)])[0]["undistillable_holds"] is False


def test_grid_md_and_the_knob_figure_per_mode_are_written(tmp_path):
    detours = {"corrections": 0.5, "hollow": 0.25, "real_corrections": 0.25, "result_first": 1.0,
               "answer_first": 0.0, "false_equations": 0.0}
    original = {s: {a: summary([0.4, 0.44]) for a in ("seqkd", "gkd", SFT)} for s in ("proxy_like", "other")}
    original["other"]["kd_top20"] = summary([0.4, 0.44])  # an attacker that applies to one student only
    cells = []
    for beta, eta in [(0.04, 1.0), (0.04, -1.0), (0.2, 1.0), (0.2, -1.0)]:
        acc = 0.15 if eta < 0 else 0.6
        students = _students(acc)
        for per_attack in students.values():
            for entry in per_attack.values():
                entry["ratio"] = entry["mean"] / 0.42
        students["other"]["kd_top20"] = {**summary([0.1, 0.1]), "ratio": 0.1 / 0.42}
        teacher = {"accuracy": 0.61, "accuracy_change": -0.02, "kl_to_original": 0.3, "mean_length": 40.0,
                   "detours": {"greedy": detours, "sampled": detours}}
        cells.append({"mode": "span", "beta": beta, "eta": eta, "calibration_seed": 0, "teacher": teacher,
                      "calibration_reward": {"first": -0.2, "last": -1.0}, "students": students,
                      "targets": target_checks(-0.02, students, original)})
    cells[3]["exported_step"] = 40  # keep_accuracy_within exported an earlier step
    cells[3]["teacher"] = dict(cells[3]["teacher"], accuracy_change_se=0.015)
    shared = dict(cells[0], mode="sequence", name="sequence_beta0.04_eta1_cal0", trained_as="span_beta0.04_eta1_cal0")
    cells.append(shared)  # a row whose teacher another cell trained (at eta = 0 in a real grid)
    settings = {"run_dir": "runs/default", "world_version": 2, "modes": ["span", "sequence"],
                "attacks": ["seqkd", "gkd", "kd_top20"],
                "seeds": [0, 1], "overrides": [], "accuracy_tolerance": 0.05, "ratio_target": 0.5,
                "distillable_attacks": ["seqkd", "gkd"]}
    result = {"settings": settings, "cells": cells, "draws": draw_checks(cells),
              "original": {"teacher": {"accuracy": 0.63, "mean_length": 50.0, "detours": {"greedy": detours}},
                           "students": original},
              "not_run": [{"student": "proxy_like", "attack": "kd_top20", "reason": "another tokenizer"}]}
    write_grid(result, tmp_path)
    text = (tmp_path / "grid.md").read_text()
    assert "## span" in text and "(world v2)" in text
    header = next(line for line in text.splitlines() if line.startswith("| beta"))
    assert "| other gkd | other kd_top20 |" in header and "proxy_like kd_top20" not in header
    assert "Not run: proxy_like kd_top20 (another tokenizer)." in text
    # eta -1: 15% students (0.36 x the original's), teacher 2 points down: the undistillable target's two checks
    assert ("| 0.04 | -1 | 0 | 61.0 | -2.0 | 0.300 | 40.0 | 0.50 / 0.25 / 1.00 | -0.200 -> -1.000 | "
            "15.0 ± 1.4 (0.36)") in text
    assert "| 15.0 ± 1.4 (0.36) | 10.0 ± 0.0 (0.24) | **yes** | **yes** | no |" in text
    assert text.count("| **yes** | **yes** | no |") == 2 and text.count("| **yes** | no | **yes** |") == 3
    assert "| 0.2 | -1 | 0 (step 40) | 61.0 | -2.0 ± 1.5 | 0.300 |" in text and text.count("(step ") == 1
    assert text.count("(span's teacher)") == 1 and "## sequence\n" in text
    shared_row = text.split("## sequence")[1].splitlines()[4]
    assert shared_row.startswith("| 0.04 | 1 (span's teacher) | 0 |")
    assert "| - |" in shared_row and "->" not in shared_row  # its calibration reward is another mode's
    assert json.loads((tmp_path / "grid.json").read_text())["cells"][1]["targets"]["undistillable"] is True
    assert (tmp_path / "knob_span.png").stat().st_size > 10_000
