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
