"""The ceiling test's pure parts: every style writes correct text with the detours it names."""
import json
from pathlib import Path

import pytest

from jaxdistill.experiments import ceiling


def test_every_style_writes_correct_text_with_the_detours_it_names():
    stats = {style: ceiling.set_statistics(ceiling.gold_set(style, 60)) for style in ceiling.STYLES}
    plain = stats["plain"]
    assert plain["corrections"] == plain["result_first"] == plain["answer_first"] == 0.0
    assert stats["corrections"]["corrections"] > 0.5 and stats["corrections"]["result_first"] == 0.0
    assert stats["late_corrections"]["corrections"] > 0.3 and stats["late_corrections"]["hollow"] == 0.0
    assert stats["result_first"]["result_first"] >= 1.0 and stats["result_first"]["corrections"] == 0.0
    assert stats["answer_first"]["answer_first"] == 1.0
    assert stats["distractors"]["mean_chars"] > plain["mean_chars"]
    assert stats["all_detours"]["answer_first"] == 1.0 and stats["all_detours"]["corrections"] > 0.5
    assert 0.0 < stats["world_v2"]["answer_first"] < 1.0  # the world's own mix (rate 0.2)
    # the same problems in every style: only the text differs
    questions = {style: [r["question"] for r in ceiling.gold_set(style, 10)] for style in ("plain", "all_detours")}
    assert questions["plain"] == questions["all_detours"]


def test_rates_and_bad_styles():
    assert ceiling.style_rates("plain") == {"correction": 0.0, "late_correction": 0.0, "result_first": 0.0,
                                            "distractor": 0.0, "answer_first": 0.0}
    assert ceiling.style_rates("result_first")["result_first"] == 1.0
    with pytest.raises(ValueError, match="unknown style 'wait'"):
        ceiling.style_rates("wait")


def test_the_table_is_each_style_over_plain(tmp_path, monkeypatch):
    """Student runs are mocked (their accuracy set per style): the test checks the sets written, the
    ratios and that plain is required."""
    accuracy = {"plain": 0.4, "corrections": 0.2}

    def fake_run_jobs(jobs, **kwargs):
        for job in jobs:
            out = Path(job.kwargs["output_dir"])
            out.mkdir(parents=True, exist_ok=True)
            (out / "result.json").write_text(json.dumps({"accuracy": accuracy[out.parent.parent.name]}))

    from jaxdistill.experiments import jobs
    monkeypatch.setattr(jobs, "run_jobs", fake_run_jobs)
    summary = ceiling.run_ceiling(students={"a": "A", "b": "B"}, out=tmp_path, prompts=20, seeds=(0, 1),
                                  styles=["plain", "corrections"])
    table = (tmp_path / "ceiling.md").read_text()
    assert "| corrections | 2 | 20.0 ± 0.0 | 0.50 ± 0.00 | 20.0 ± 0.0 | 0.50 ± 0.00 |" in table
    assert len((tmp_path / "sets" / "corrections.jsonl").read_text().splitlines()) == 20
    assert summary["sets"]["corrections"]["rates"]["correction"] == 0.6
    with pytest.raises(ValueError, match="plain included"):
        ceiling.run_ceiling(students={"a": "A"}, out=tmp_path, prompts=5, styles=["corrections"])
