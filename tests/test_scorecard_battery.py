"""The scorecard's attackers (``jaxdistill.experiments.scorecard.ATTACKERS``): the ``battery`` alias, each
attacker's recipe, the same-tokenizer rule, the default run's arms, and the tables and knob plot that name
every attacker (from made-up results: no training), then one tiny arm of the logit attacker."""
import dataclasses
import json

import pytest

from helpers import ARMS, build_world
from jaxdistill.distill import DistillConfig
from jaxdistill.experiments.knob import DEFAULT_RUN_ETAS, ORIGINAL
from jaxdistill.experiments.scorecard import (ATTACKERS, BATTERY, TEACHERS_JOB, ScorecardConfig, arm_job,
                                              assemble_scorecard, attacker_config, attacker_names,
                                              attacker_runs_for, check_scorecard, not_run_reason, run_arm,
                                              scorecard_arms)
from jaxdistill.experiments.world import QUICK, scorecard_config, world_paths, write_knob_plot


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory)


def test_battery_expands_to_its_five_attackers_once_each_in_order():
    assert BATTERY == ("seqkd", "seqkd_t0.7", "seqkd_correct", "gkd", "kd_top20")
    assert attacker_names(("battery",)) == BATTERY
    assert attacker_names(("kd", "battery", "seqkd")) == ("kd",) + BATTERY  # seqkd is already in
    assert attacker_names(("seqkd", "gkd")) == ("seqkd", "gkd")


def test_an_unknown_attacker_is_an_error_listing_the_valid_names():
    with pytest.raises(ValueError, match=r"'distil' is not valid; use one of seqkd, kd, gkd, seqkd_t0.7, "
                                         r"seqkd_correct, kd_top20 or battery \(= seqkd, seqkd_t0.7"):
        attacker_names(("seqkd", "distil"))
    with pytest.raises(ValueError, match="'kd_top10' is not valid"):
        attacker_config(DistillConfig(), "kd_top10")
    with pytest.raises(ValueError, match="'distil' is not valid"):
        check_scorecard(ScorecardConfig(original_teacher="t", students=("s=x",), attacks=("distil",)))


def test_each_attacker_sets_its_fields_over_the_recipe_and_nothing_else():
    recipe = DistillConfig(task="arith", divergence="forward_kl", temperature=1.0, max_steps=7, learning_rate=3e-3)
    configs = {name: attacker_config(recipe, name) for name in ATTACKERS}
    assert configs["seqkd_t0.7"] == dataclasses.replace(recipe, objective="seqkd", temperature=0.7)
    assert configs["seqkd_correct"] == dataclasses.replace(recipe, objective="seqkd", seqkd_only_correct=True)
    assert configs["kd_top20"] == dataclasses.replace(recipe, objective="kd", top_k=20, divergence="forward_kl")
    # today's names run the recipe as it is: the default run's arms keep their configs
    for name in ("seqkd", "kd", "gkd"):
        assert configs[name] == dataclasses.replace(recipe, objective=name)
    assert attacker_config(dataclasses.replace(recipe, divergence="jsd"), "kd_top20").divergence == "forward_kl"


def test_the_logit_attacker_runs_only_for_a_student_that_shares_the_teachers_tokenizer(world):
    same = [name for name in attacker_names(("battery",)) if attacker_runs_for(name, world.student, world.teacher)]
    other = [name for name in BATTERY if attacker_runs_for(name, world.cross_student, world.teacher)]
    assert same == list(BATTERY)
    assert other == ["seqkd", "seqkd_t0.7", "seqkd_correct", "gkd"]


def test_the_default_runs_arms_are_unchanged_and_the_battery_adds_its_own(tmp_path):
    world = world_paths(tmp_path / "world")
    teachers = {name: tmp_path / "calibrate" / name / "teacher" for name in DEFAULT_RUN_ETAS}
    default = scorecard_config(world, teachers, tmp_path / "card", QUICK, seeds=(0,), workers=1)
    arms = scorecard_arms(default)
    assert default.attacks == ("seqkd", "gkd") and [arm["arm"] for arm in arms] == ARMS
    assert all(arm["objective"] == arm["attack"] for arm in arms[2:])  # the same objectives as before
    battery = scorecard_config(world, teachers, tmp_path / "card", QUICK, seeds=(0,), workers=1,
                               attacks=("battery",))
    names = [arm["arm"] for arm in scorecard_arms(battery)]
    assert names[:2] == ["before", "sft"] and len(names) == 2 + 5 * 4
    assert set(ARMS) <= set(names) and "seqkd_correct/undistillable" in names and "kd_top20/original" in names
    assert battery.recipe == default.recipe


def made_up_results(config: ScorecardConfig, accuracy) -> dict:
    """What the scorecard's jobs return, with ``accuracy(student, arm)``; ``other`` gets no kd_top20."""
    results = {TEACHERS_JOB: {}}
    for arm in scorecard_arms(config):
        for seed in config.seeds:
            rows = []
            for student in ("proxy_like", "other"):
                row = {"student": student, "arm": arm["arm"], "seed": seed}
                if student == "other" and arm.get("attack") == "kd_top20":
                    rows.append({**row, "not_run": not_run_reason("kd_top20")})
                else:
                    rows.append({**row, "accuracy": accuracy(student, arm), "unparseable_rate": 0.0,
                                 "mean_length": 10.0, "n": 4})
            results[arm_job(arm, seed)] = rows
    return results


def test_the_tables_and_the_knob_plot_name_every_attacker(tmp_path):
    config = ScorecardConfig(original_teacher="T", teachers=("eta0=T0", "distillable=Tp", "undistillable=Tm"),
                             students=("proxy_like=S1", "other=S2"), attacks=("battery",), seeds=(0, 1),
                             output_dir=str(tmp_path / "card"))

    def accuracy(student, arm):  # only seqkd_correct collapses, measured against its own original arm
        if arm.get("attack") == "seqkd_correct":
            return {ORIGINAL: 0.5}.get(arm["teacher_key"], 0.05)
        return 0.4 if arm.get("attack") == "seqkd" else 0.3

    card = assemble_scorecard(config, made_up_results(config, accuracy), seconds=1.0)
    assert card["settings"]["attacks"] == list(BATTERY)
    rows = {(row["student"], row["arm"]): row for row in card["arms"]}
    assert rows[("other", "seqkd_correct/undistillable")]["relative_to_original"] == pytest.approx(0.1)
    assert rows[("other", "seqkd_correct/undistillable")]["collapse"]
    assert rows[("other", "seqkd/undistillable")]["relative_to_original"] == pytest.approx(1.0)
    assert not any(row["collapse"] for row in card["arms"] if row["teacher"] and row["attack"] != "seqkd_correct")
    assert ("other", "kd_top20/original") not in rows and ("proxy_like", "kd_top20/original") in rows
    assert {(r["student"], r["arm"]) for r in card["not_run"]} == {
        ("other", f"kd_top20/{t}") for t in (ORIGINAL, "eta0", "distillable", "undistillable")}

    text = (tmp_path / "card" / "scorecard.md").read_text()
    for student in ("proxy_like", "other"):
        for name in BATTERY:
            assert f"| {student} | {name} |" in text, (student, name)  # a row of the per-attacker table
    assert "| other | kd_top20 | not run | not run | not run | not run |" in text
    assert "| proxy_like | seqkd_correct | 50.0 | 5.0 (0.10) **collapse** |" in text
    assert (f"| other | kd_top20 | original, eta0, distillable, undistillable | {not_run_reason('kd_top20')} |"
            in text)
    assert "tokenizer differs" in not_run_reason("kd_top20")

    png = write_knob_plot(card, tmp_path / "knob.png")  # 10 student lines and the teachers'
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_a_tiny_logit_attack_runs_for_the_same_tokenizer_student_only(world, tmp_path):
    recipe = DistillConfig(task="arith", task_options=("difficulty=1",), train_num_prompts=8, train_batch_size=2,
                           max_steps=1, max_completion_length=8, save_steps=0)
    config = ScorecardConfig(original_teacher=str(world.teacher), students=(f"same={world.student}",
                                                                            f"cross={world.cross_student}"),
                             attacks=("kd_top20",), seeds=(0,), recipe=recipe, num_prompts=2,
                             max_completion_length=8, generation_batch_size=2, workers=1,
                             output_dir=str(tmp_path / "card"))
    arm = scorecard_arms(config)[2]
    assert arm["arm"] == "kd_top20/original"
    same, cross = run_arm(config, arm, seed=0)  # the arm's job: every student of it
    assert same["student"] == "same" and 0.0 <= same["accuracy"] <= 1.0 and "not_run" not in same
    assert cross == {"student": "cross", "arm": "kd_top20/original", "seed": 0,
                     "not_run": not_run_reason("kd_top20")}
    run = tmp_path / "card" / "runs" / "same" / "kd_top20_original" / "seed0"
    settings = json.loads((run / "manifest.json").read_text())["config"]
    assert (settings["objective"], settings["top_k"], settings["divergence"]) == ("kd", 20, "forward_kl")
    assert json.loads((run / "summary.json").read_text())["loss"] == "token_kd"
    assert not (tmp_path / "card" / "runs" / "cross").exists()
