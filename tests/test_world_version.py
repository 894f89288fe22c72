"""World versions of the tiny world: v1's stages are unchanged, and a cached world of another version is
refused, never reused."""
import json

import pytest

from jaxdistill.experiments.world import FULL, QUICK, check_world_version, for_world, world_task_options


def test_v1_keeps_its_task_options_and_v2_asks_for_its_world():
    assert world_task_options(FULL) == ("difficulty=1",)  # the default run's stages, as before versions
    v2 = for_world(FULL, 2)
    assert world_task_options(v2) == ("difficulty=1", "version=2") and v2.max_completion_length == 128
    assert for_world(QUICK, 2).max_completion_length == QUICK.max_completion_length
    assert for_world(FULL, 1) is FULL


def test_a_world_of_another_version_is_refused(tmp_path):
    check_world_version(tmp_path / "w", 2)  # a new folder records its version
    assert json.loads((tmp_path / "w" / "world_version.json").read_text())["world_version"] == 2
    check_world_version(tmp_path / "w", 2)
    with pytest.raises(ValueError, match="holds a world v2, but this run asks for world v1"):
        check_world_version(tmp_path / "w", 1)
    old = tmp_path / "old"
    old.mkdir()
    (old / "world.json").write_text(json.dumps({"teacher": "x"}))  # built before versions existed: v1
    check_world_version(old, 1)
    with pytest.raises(ValueError, match="holds a world v1"):
        check_world_version(old, 2)


def test_the_mixed_world_pretrains_the_students_on_their_own_worlds_gold(tmp_path):
    """world_version=2, student_world_version=1: the teacher's stage is v2's, the proxy's and the other
    student's are exactly v1's (so a v1 world's runs are the same runs); the folder records both."""
    from jaxdistill.experiments.world import student_profile, students_world, world_jobs

    mixed = for_world(FULL, 2, 1)
    assert (mixed.world_version, mixed.student_world_version, mixed.max_completion_length) == (2, 1, 128)
    assert student_profile(mixed) == FULL  # v1's profile, field for field
    assert student_profile(for_world(FULL, 2)) == for_world(FULL, 2)  # a plain world: its own
    assert for_world(FULL, 2, 2) == for_world(FULL, 2)  # students of the teacher's world: not mixed
    (tmp_path / "w" / "tokenizers").mkdir(parents=True)
    jobs = {job.name: job.kwargs["profile"] for job in world_jobs(tmp_path / "w", for_world(QUICK, 2, 1))}
    assert world_task_options(jobs["world teacher"]) == ("difficulty=1", "version=2")
    assert world_task_options(jobs["world proxy"]) == world_task_options(jobs["world student_other"]) == \
        ("difficulty=1",)
    assert json.loads((tmp_path / "w" / "world_version.json").read_text()) == {"world_version": 2,
                                                                              "student_world_version": 1}
    with pytest.raises(ValueError, match=r"holds a world v2 \(students: v1\), but this run asks for world v2:"):
        check_world_version(tmp_path / "w", 2)
    assert students_world(tmp_path / "w") == 1  # what the ceiling test checks its world_version against
    check_world_version(tmp_path / "plain", 2)
    assert students_world(tmp_path / "plain") == 2 and students_world(tmp_path / "none") == 1


def test_influence_mode_in_the_mixed_world_measures_harm_on_the_students_gold():
    """The mixed world's influence calibrations read the validation text as the students learnt it (v1's gold);
    other modes and plain worlds keep the task's own gold, and an explicit setting wins."""
    from jaxdistill.experiments.world import calibration_config

    def validation_options(profile, **overrides):
        config = calibration_config("t", "p", "out", -1.0, profile, 0, overrides=overrides)
        return config.task_options, config.influence_validation_task_options

    mixed = for_world(FULL, 2, 1)
    assert validation_options(mixed, calibration_mode="influence") == (("difficulty=1", "version=2"), ("difficulty=1",))
    assert validation_options(mixed, calibration_mode="span")[1] == ()  # unused: the span runs' settings unchanged
    assert validation_options(for_world(FULL, 2), calibration_mode="influence")[1] == ()
    mine = ("difficulty=1", "version=2")
    assert validation_options(mixed, calibration_mode="influence", influence_validation_task_options=mine)[1] == mine
