"""Pooled knob grids: one row per trained teacher, its students' ratios, the correlations."""
import json

import pytest

from jaxdistill.config import ConfigError
from jaxdistill.experiments import knob_pool


def _grid(run_dir, world, cells, original=(0.6, 0.5), students_world=None):
    settings = {"run_dir": run_dir, "world_version": world}
    if students_world is not None:  # a mixed world's grid (older grids lack the key)
        settings["student_world_version"] = students_world
    return {"settings": settings,
            "original": {"teacher": {"accuracy": original[0], "detours": {"sampled": {"accuracy": original[1]}}}},
            "cells": cells}


def _cell(name, accuracy, sampled, ratios, trained_as=None, mode="span", result_first=0.0):
    students = {"a": {"seqkd": {"ratio": ratios[0]}, "gkd": {"ratio": ratios[1]}, "kd_top20": {"ratio": 0.1}},
                "b": {"seqkd": {"ratio": ratios[2]}, "gkd": {"ratio": None}}}
    return {"name": name, "trained_as": trained_as or name, "mode": mode, "beta": 0.04, "eta": -1.0,
            "calibration_seed": 0, "students": students,
            "teacher": {"accuracy": accuracy, "detours": {"sampled": {"accuracy": sampled, "result_first": result_first,
                                                                      "answer_first": 0.1, "corrections": 0.2}}}}


def test_one_row_per_trained_teacher_with_its_ratios_under_the_named_attacks():
    first = _grid("runs/v1", 1, [_cell("span_eta-1", 0.7, 0.5, (1.0, 0.8, 0.6)),
                                 _cell("span_eta0", 0.65, 0.55, (1.0, 1.0, 1.0)),
                                 _cell("sequence_eta0", 0.65, 0.55, (1.0, 1.0, 1.0), trained_as="span_eta0",
                                       mode="sequence")])
    again = _grid("runs/v1", 1, [_cell("span_eta-1", 0.7, 0.5, (0.9, 0.9, 0.9))])  # a later grid, same teacher
    other_world = _grid("runs/v2", 2, [_cell("span_eta-1", 0.3, 0.2, (0.5, 0.5, 0.5), result_first=0.4)],
                        original=(0.4, 0.25))
    mixed = _grid("runs/mixed", 2, [_cell("span_eta-1", 0.3, 0.2, (0.7, 0.7, 0.7))], students_world=1)
    longer = _grid("runs/v2", 2, [_cell("span_eta-1", 0.3, 0.2, (0.4, 0.4, 0.4))], original=(0.4, 0.25))
    longer["settings"]["overrides"] = ["max_steps=180"]  # the same cell trained longer: another teacher
    rows = knob_pool.pool_cells([first, again, other_world, mixed, longer])
    assert [(r["world"], r["cell"]) for r in rows] == [
        ("v1", "span_eta0"), ("v1", "span_eta-1"), ("v2", "span_eta-1"), ("v2", "span_eta-1 [max_steps=180]"),
        ("v2 (students: v1)", "span_eta-1")]  # a mixed world is its own
    assert rows[0]["mode"] == "span"  # sequence's eta = 0 cell is span's teacher
    assert rows[2]["result_first"] == pytest.approx(0.5) and rows[2]["corrections"] == 0.2  # result or answer first
    v1 = {r["cell"]: r for r in rows if r["world"] == "v1"}
    assert v1["span_eta-1"]["mean_ratio"] == pytest.approx(0.9) and v1["span_eta-1"]["ratios"] == 3  # last wins
    assert v1["span_eta-1"]["greedy_change"] == pytest.approx(0.1)
    assert v1["span_eta-1"]["sampled_change"] == pytest.approx(0.0)
    assert rows[2]["greedy_change"] == pytest.approx(-0.1) and rows[2]["min_ratio"] == 0.5
    with_kd = knob_pool.pool_cells([first], attacks=("kd_top20",))  # kd ran for student a only
    assert {r["min_ratio"] for r in with_kd} == {0.1}
    guarded = _grid("runs/v1", 1, [{**_cell("span_eta-1", 0.6, 0.5, (1.0, 1.0, 1.0)), "exported_step": 0},
                                   {**_cell("span_eta1", 0.6, 0.5, (1.2, 1.0, 1.0)), "exported_step": 40}])
    guarded["settings"]["overrides"] = ["keep_accuracy_within=0.05"]
    assert [r["cell"] for r in knob_pool.pool_cells([guarded])] == ["span_eta1 [keep_accuracy_within=0.05]"]  # step 0: the original


def test_correlation():
    assert knob_pool.correlation([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert knob_pool.correlation([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert knob_pool.correlation([1, 2], [1, 2]) is None
    assert knob_pool.correlation([1, 2, 3], [5, 5, 5]) is None


def test_the_cli_writes_the_table_and_the_figure(tmp_path, capsys):
    folder = tmp_path / "grid"
    folder.mkdir()
    cells = [_cell(f"c{i}", 0.6 + i / 10, 0.5, (1 + i / 10, 1.0, 1.0)) for i in range(3)]
    (folder / "grid.json").write_text(json.dumps(_grid("runs/v1", 1, cells)))
    assert knob_pool.main([f"grids=[{folder}]", f"output_dir={tmp_path / 'pool'}"]) == 0
    table = (tmp_path / "pool" / "pool.md").read_text()
    assert "greedy change: +1.00" in table and "| c2 | +20 | +0 | 0.10 | 0.20 | 1.07 | 1.00 |" in table
    assert "## World v1: 3 cells" in table
    assert (tmp_path / "pool" / "pool.png").stat().st_size > 0
    with pytest.raises(ConfigError, match="no grid.json"):
        knob_pool.KnobPoolConfig(grids=(str(tmp_path),)).validate()
    knob_pool.KnobPoolConfig(grids=(str(folder / "grid.json"),)).validate()  # a file by its path
