"""The selection test's pure parts: one sample per prompt by a score, and the ratio to random."""
import numpy as np
import pytest

from jaxdistill.experiments.selection import pick_one_per_prompt, ratio_to_random


def test_pick_takes_the_best_eligible_sample_and_breaks_ties_at_random():
    scores = np.array([[1.0, 5.0, 3.0], [2.0, 2.0, 0.0], [9.0, 9.0, 9.0]])
    eligible = np.array([[True, False, True], [True, True, True], [False, False, False]])
    rng = np.random.default_rng(0)
    assert pick_one_per_prompt(scores, eligible, +1, rng).tolist()[::2] == [2, -1]  # 5.0 is not eligible
    assert pick_one_per_prompt(scores, eligible, -1, rng).tolist()[:2] == [0, 2]
    ties = {int(pick_one_per_prompt(scores, eligible, +1, np.random.default_rng(s))[1]) for s in range(40)}
    assert ties == {0, 1}  # both maxima get picked, the lower score never
    with pytest.raises(ValueError, match="direction"):
        pick_one_per_prompt(scores, eligible, 0, rng)


def test_ratio_to_random_and_its_standard_error():
    ratio, se = ratio_to_random([0.2, 0.3, 0.4], [0.4, 0.4, 0.4])
    assert ratio == pytest.approx(0.75)
    assert se == pytest.approx(0.75 * (0.1 / np.sqrt(3)) / 0.3)  # the random set has no spread here
    assert ratio_to_random([0.5], [0.25]) == (2.0, 0.0)
    with pytest.raises(ValueError, match="scored 0"):
        ratio_to_random([0.1], [0.0])


def test_the_proxy_scores_read_prompts_as_the_proxy_was_trained(tmp_path, monkeypatch):
    """Span gap and harm condition the proxy on the task's formatted prompt (as calibrate does), not the
    bare question: a prompt format the proxy never saw shifts its log-probs and its gradient."""
    from jaxdistill.experiments import selection
    from jaxdistill.tasks.pipeline import prompt_text

    task = selection._task(1)
    seen = {}

    def fake_sample_teacher(teacher_dir, task, examples, k, max_new_tokens, seed, cache):
        ids = [[1, 2, 3]] * (len(examples) * k)
        return ids, ["#### 1"] * len(ids), [True] * len(ids), None, None, [[1]] * len(examples)

    def fake_span_gaps(teacher, side, prompts, prompt_texts, completions, proxy_dir):
        seen["span_gap"] = list(prompt_texts)
        return np.zeros(len(completions))

    def fake_harm(side, prompt_texts, completions, proxy_dir, validation):
        seen["harm"], seen["validation"] = list(prompt_texts), [p for p, _ in validation]
        return np.zeros(len(completions)), {}

    monkeypatch.setattr(selection, "sample_teacher", fake_sample_teacher)
    monkeypatch.setattr(selection, "span_gaps", fake_span_gaps)
    monkeypatch.setattr(selection, "harm", fake_harm)
    samples, _ = selection.scored_samples(teacher="t", proxy="p", out=tmp_path, prompts=3, k=2, validation_texts=2)
    train = task.load("train", limit=5)
    formatted = [prompt_text(task, e, None, False) for e in train]
    assert formatted[0] != train[0].prompt  # the test means something: the format adds to the question
    assert seen["span_gap"] == seen["harm"] == [formatted[i // 2] for i in range(6)]
    assert seen["validation"] == formatted[3:]
    assert [s["prompt"] for s in samples] == [train[i // 2].prompt for i in range(6)]  # the sets keep the question
    again, _ = selection.scored_samples(teacher="t", proxy="p", out=tmp_path, prompts=3, k=2, validation_texts=2)
    assert again == samples  # the same settings: reused
    with pytest.raises(ValueError, match=r"validation_world_version: 1 there, 2 now.*another output_dir"):
        selection.scored_samples(teacher="t", proxy="p", out=tmp_path, prompts=3, k=2, validation_texts=2,
                                 validation_world_version=2)


def test_a_student_run_is_reused_only_when_it_is_the_run_of_this_set(tmp_path, monkeypatch):
    """A stored result.json is read back only for the finished run of the same settings and set contents
    (``runner.finished``): a set whose contents changed is trained and scored again."""
    import json

    from jaxdistill import evaluate
    from jaxdistill.experiments import runner, selection

    out = tmp_path / "run"
    out.mkdir()
    (out / "result.json").write_text(json.dumps({"accuracy": 0.25}))
    trained = []
    monkeypatch.setattr(runner, "distilled_student", lambda config: trained.append(config.data_path))
    monkeypatch.setattr(evaluate, "model_and_tokenizer", lambda path, dtype: (None, None))
    monkeypatch.setattr(evaluate, "score_model", lambda *a, **k: {"accuracy": 0.5})
    args = dict(student="s", data_path=str(tmp_path / "set.jsonl"), options=("difficulty=1",), seed=0,
                output_dir=str(out), recipe=selection.Recipe())
    monkeypatch.setattr(runner, "finished", lambda config: True)
    assert selection.train_and_score(**args) == {"accuracy": 0.25} and trained == []
    monkeypatch.setattr(runner, "finished", lambda config: False)  # e.g. the set file holds other samples now
    assert selection.train_and_score(**args) == {"accuracy": 0.5} and trained == [args["data_path"]]
    assert json.loads((out / "result.json").read_text()) == {"accuracy": 0.5}
