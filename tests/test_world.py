"""The default run: its folder remembers its profile and refuses to mix another one into it; its calibration
settings take overrides."""
import dataclasses

import pytest

from jaxdistill.experiments import world
from jaxdistill.experiments.world import FULL, QUICK, check_run_folder


def test_a_rerun_with_the_same_profile_is_accepted(tmp_path):
    out = tmp_path / "run"
    check_run_folder(out, QUICK, 0)
    recorded = (out / "profile.json").read_text()
    (out / "world").mkdir()  # stages written by the first run
    check_run_folder(out, QUICK, 0)
    assert (out / "profile.json").read_text() == recorded


def test_another_profile_or_seed_is_refused_and_nothing_is_touched(tmp_path):
    out = tmp_path / "run"
    check_run_folder(out, QUICK, 0)
    recorded = (out / "profile.json").read_text()
    with pytest.raises(ValueError, match=r"teacher_sft_steps: 4 there, 1500 now.*another output_dir"):
        check_run_folder(out, FULL, 0)
    with pytest.raises(ValueError, match=r"seed: 0 there, 1 now"):
        check_run_folder(out, QUICK, 1)
    with pytest.raises(ValueError, match=r"student_sft_lr: 0.006 there, 0.001 now"):
        check_run_folder(out, dataclasses.replace(QUICK, student_sft_lr=1e-3), 0)
    assert (out / "profile.json").read_text() == recorded


def test_a_folder_from_before_profiles_were_recorded_is_refused(tmp_path):
    (tmp_path / "world" / "proxy_sft").mkdir(parents=True)
    with pytest.raises(ValueError, match="earlier jaxdistill"):
        check_run_folder(tmp_path, FULL, 0)
    assert not (tmp_path / "profile.json").exists()


def test_a_folder_holding_only_a_copied_world_is_a_new_run(tmp_path):
    """A world copied in from another run (with its world_version.json) is accepted and the profile recorded;
    the world's version is still checked (build_world), and anything else beside it keeps the refusal."""
    from jaxdistill.experiments.world import check_world_version

    out = tmp_path / "run"
    check_world_version(out / "world", 2, 1)
    (out / "world" / "proxy_sft").mkdir()
    (out / ".lock").touch()  # a run folder's lock files do not count
    mixed = world.for_world(FULL, 2, 1)
    check_run_folder(out, mixed, 0)
    assert '"student_world_version": 1' in (out / "profile.json").read_text()
    with pytest.raises(ValueError, match=r"holds a world v2 \(students: v1\), but this run asks for world v1"):
        check_world_version(out / "world", 1)
    other = tmp_path / "other"
    (other / "world").mkdir(parents=True)
    check_world_version(other / "world", 1)
    (other / "calibrate").mkdir()
    with pytest.raises(ValueError, match="earlier jaxdistill"):
        check_run_folder(other, FULL, 0)


def test_default_run_calibration_takes_overrides(tmp_path):
    """world.calibration_config is the default run's calibration; ``overrides`` replaces named fields
    (jaxdistill.experiments.undistillable) and a misspelt field is an error, not silently ignored."""
    run = str(tmp_path / "run")
    default = world.calibration_config("t", "p", run, -1.0, world.FULL, 0, progress=False)
    changed = world.calibration_config("t", "p", run, -1.0, world.FULL, 0, progress=False,
                                       overrides={"calibration_scope": "all", "beta": 0.2})
    assert (default.calibration_scope, default.beta, default.eta, default.resume) == ("correct", 0.04, -1.0, True)
    assert (changed.calibration_scope, changed.beta) == ("all", 0.2)
    assert dataclasses.replace(changed, calibration_scope="correct", beta=0.04) == default
    with pytest.raises(TypeError, match="betta"):
        world.calibration_config("t", "p", run, -1.0, world.FULL, 0, progress=False, overrides={"betta": 0.2})
