"""The default run's quick profile: every stage produces its artefacts and the report has every arm.

The run itself happens once, in tests/test_notebooks.py (notebook 01, then the CLI's --quick on the
same folder); this module holds the checks.
"""
import json
from importlib.metadata import version
from pathlib import Path

ARMS = ["before", "sft"] + [f"{attack}/{teacher}" for attack in ("seqkd", "gkd")
                            for teacher in ("original", "eta0", "distillable", "undistillable")]


def assert_every_artefact(out: Path) -> None:
    world = json.loads((out / "world" / "world.json").read_text())
    assert set(world) == {"teacher", "proxy", "teacher_tokenizer", "proxy_tokenizer", "student_proxy_like",
                          "student_other"}
    assert all(Path(path).exists() for path in world.values())
    for name in ("distillable", "undistillable", "eta0"):
        assert (out / "calibrate" / name / "teacher" / "config.json").exists()
        assert (out / "calibrate" / name / "metrics.jsonl").exists()
    card = json.loads((out / "scorecard" / "scorecard.json").read_text())
    arms = {(row["student"], row["arm"]) for row in card["arms"]}
    for student in ("proxy_like", "other"):
        for arm in ARMS:
            assert (student, arm) in arms, (student, arm)
    report = (out / "report.md").read_text()
    for arm in ARMS:
        assert arm in report, arm
    assert f"jax {version('jax')}, jaxlib {version('jaxlib')}" in report  # what the figures' low bits depend on
    assert (out / "knob.png").stat().st_size > 1000
    assert set(card["teachers"]) >= {"distillable", "undistillable", "eta0"}
