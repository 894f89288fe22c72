"""The registry and the loaders: local files and folders, parquet, malformed rows, clear errors."""
import json
import warnings

import pytest

from jaxdistill.tasks import loading
from jaxdistill.tasks import TASKS, Example, MalformedRowsWarning, Task, Verdict, get_task, \
    list_tasks, strip_thinking, summarize


def test_registry_names_every_task():
    assert list_tasks() == ["gsm8k", "math500", "csqa", "nq_open", "ifeval", "arith"]
    for name in TASKS:
        task = get_task(name)
        assert isinstance(task, Task) and task.name == name
    with pytest.raises(KeyError, match="gsm8k, math500, csqa, nq_open, ifeval, arith"):
        get_task("gsm9k")
    assert get_task("gsm8k", instruction="Be brief.").instruction == "Be brief."
    assert get_task("arith", difficulty=3).config.max_steps == 4


@pytest.mark.parametrize("name, folder, split, n", [
    ("gsm8k", "gsm8k", "train", 7473),
    ("csqa", "commonsenseqa", "train", 9741),
    ("nq_open", "nq_open", "validation", 3610),
    ("ifeval", "ifeval", "test", 541),
    ("math500", "math500", "test", 500),
])
def test_local_data_folders_load(shared_dir, name, folder, split, n):
    with warnings.catch_warnings():
        warnings.simplefilter("error", MalformedRowsWarning)  # the shared data is clean
        examples = get_task(name).load(split, shared_dir / "data" / folder)
    assert len(examples) == n and all(isinstance(e, Example) and e.prompt for e in examples)
    assert len(get_task(name).load(split, shared_dir / "data" / folder, limit=7)) == 7


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


GOOD = {"question": "What is 1+1?", "answer": "1+1=2\n#### 2"}


def test_malformed_rows_are_skipped_counted_and_warned_once(tmp_path):
    file = _write_jsonl(tmp_path / "rows.jsonl", [
        GOOD,
        {"question": "No answer field"},
        {"question": 7, "answer": "#### 7"},             # wrong type
        {"question": "No final answer", "answer": "it is 3"},
        "{not json",
        "[1, 2]",                                       # not an object
        {"question": "What is 2+2?", "answer": "#### 4"},
        "",                                             # blank lines are not rows
    ])
    with pytest.warns(MalformedRowsWarning) as caught:
        examples = get_task("gsm8k").load("test", file)
    assert [e.answer for e in examples] == ["2", "4"]
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "skipped 5 of 7 rows" in message and str(file) in message and "row 1" in message


def test_empty_or_unusable_files_are_clear_errors(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(ValueError, match=f"no usable rows in {empty}.*Fix"):
        get_task("gsm8k").load("test", empty)
    junk = _write_jsonl(tmp_path / "junk.jsonl", [{"q": 1}, {"q": 2}])
    with pytest.warns(MalformedRowsWarning), pytest.raises(ValueError, match="no usable rows"):
        get_task("gsm8k").load("test", junk)


def test_wrong_paths_and_splits_are_clear_errors(tmp_path):
    missing = tmp_path / "nowhere" / "test.jsonl"
    with pytest.raises(FileNotFoundError, match=f"no file or folder at {missing}.*Fix"):
        get_task("gsm8k").load("test", missing)
    with pytest.raises(FileNotFoundError, match="expects .*test.jsonl.*Fix"):
        get_task("gsm8k").load("test", tmp_path)
    with pytest.raises(ValueError, match="unknown split 'dev'.*'test', 'train'"):
        get_task("gsm8k").load("dev", tmp_path)
    text = tmp_path / "rows.txt"
    text.write_text("x")
    with pytest.raises(ValueError, match=".jsonl, .json or .parquet"):
        get_task("gsm8k").load("test", text)


def test_parquet_and_json_list_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [GOOD, {"question": "What is 3+3?", "answer": "#### 6"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    assert [e.answer for e in get_task("gsm8k").load("test", tmp_path / "rows.parquet")] == \
        ["2", "6"]
    (tmp_path / "rows.json").write_text(json.dumps(rows))
    assert len(get_task("gsm8k").load("test", tmp_path / "rows.json")) == 2


def test_hub_failure_explains_the_offline_fix(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    # the hub cannot be reached: refused before datasets' half-minute of retries, naming the fixes
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=5.0: False)
    with pytest.raises(ConnectionError, match="cannot be reached to load 'openai/gsm8k'.*Fix: set data_path.*"
                                              "HF_DATASETS_OFFLINE=1"):
        get_task("gsm8k").load("test")
    # reachable, but the load fails: the library's reason and the local-data fix
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=5.0: True)
    with pytest.raises(RuntimeError, match="openai/gsm8k.*no network.*Fix: .*data_path"):
        get_task("gsm8k").load("test")
    with pytest.raises(ValueError, match="unknown split"):
        get_task("math500").load("train")


def test_strip_thinking():
    assert strip_thinking("<think>a</think>b<think>c</think>d") == " b d"
    assert strip_thinking("pre</think>post") == "post"
    assert strip_thinking("answer <think>never closed") == "answer "
    assert strip_thinking("plain") == "plain"


def test_summarize_reports_unparseable_apart():
    verdicts = [Verdict(1.0, "ok"), Verdict(0.0, "ok"), Verdict(0.0, "unparseable"),
                Verdict(0.0, "unsupported", details={"x": 5.0}),
                Verdict(1.0, "ok", details={"x": 1.0})]
    summary = summarize(verdicts)
    assert summary["n"] == 5 and summary["n_scored"] == 4
    assert summary["accuracy"] == 0.5
    assert summary["unparseable_rate"] == 0.2 and summary["unsupported_rate"] == 0.2
    assert summary["x"] == 1.0  # unsupported verdicts do not count
    assert summarize([]) == {"n": 0}
