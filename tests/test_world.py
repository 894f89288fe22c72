"""The default run's folder: it remembers its profile and refuses to mix another one into it."""
import dataclasses

import pytest

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
