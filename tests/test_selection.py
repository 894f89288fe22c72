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

    def fake_calibration_scores(teacher, side, prompts, prompt_texts, completions, proxy_dir, names):
        seen["span_gap"] = list(prompt_texts)
        return {name: np.zeros(len(completions)) for name in names}

    def fake_harm(side, prompt_texts, completions, proxy_dir, validation):
        seen["harm"], seen["validation"] = list(prompt_texts), [p for p, _ in validation]
        return np.zeros(len(completions)), {}

    monkeypatch.setattr(selection, "sample_teacher", fake_sample_teacher)
    monkeypatch.setattr(selection, "calibration_scores", fake_calibration_scores)
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


def test_calibration_scores_are_minus_calibrates_rewards(tmp_path):
    """Each score is minus the reward calibrate pays (``CalibrationScorer``): a proxy that is the teacher
    itself finds no text relatively surprising (0 to float precision) and its surprise is minus the
    teacher's own mean log-prob per byte; another proxy's relative surprise is its surprise minus the
    teacher's."""
    import jax.numpy as jnp

    from helpers import tiny_world
    from jaxdistill.experiments import selection
    from jaxdistill.generation.sampler import bucket_length, left_pad
    from jaxdistill.generation.tokenized_model import TokenizedModel
    from jaxdistill.models import load_model
    from jaxdistill.rl.rewards import plain_scoring, score_completions
    from jaxdistill.tokenizer import load_tokenizer

    world = tiny_world(tmp_path, n_problems=100)
    teacher, _ = load_model(world["teacher"], "float32")
    side = TokenizedModel.of(load_tokenizer(world["teacher"]), model=teacher)
    examples = selection._task(1).load("train", limit=3)
    prompts = [side.tokenizer.encode(e.prompt) for e in examples]
    completions = [side.tokenizer.encode(e.solution[:12 + 9 * i]) for i, e in enumerate(examples)]
    texts = [e.prompt for e in examples]
    names = list(selection.CALIBRATION_SCORES)

    own = selection.calibration_scores(teacher, side, prompts, texts, completions, str(world["teacher"]), names, batch=2)
    np.testing.assert_allclose(own["relative_surprise"], 0.0, atol=1e-6)
    prompt_ids, prompt_mask = left_pad(prompts, bucket_length(max(map(len, prompts))), side.pad_id)
    width = bucket_length(max(map(len, completions)))
    tokens = np.array([c + [side.pad_id] * (width - len(c)) for c in completions], np.int32)
    mask = np.array([[1] * len(c) + [0] * (width - len(c)) for c in completions], np.int32)
    lp = np.asarray(score_completions(teacher, jnp.asarray(prompt_ids), jnp.asarray(prompt_mask), jnp.asarray(tokens),
                                      jnp.asarray(mask), plain_scoring(side.vocab_size), lora=False, chunk_size=128))
    teacher_surprise = -(lp * mask).sum(1) / np.array([len(side.text(c).encode()) for c in completions])
    np.testing.assert_allclose(own["proxy_surprise"], teacher_surprise, rtol=1e-5)
    assert np.all(own["span_gap"] < 1e-2)  # the same model on both sides: every span's gap is ~0

    other = selection.calibration_scores(teacher, side, prompts, texts, completions, str(world["proxy"]), names, batch=2)
    np.testing.assert_allclose(other["relative_surprise"], other["proxy_surprise"] - teacher_surprise, rtol=1e-5)
    assert np.all(np.abs(other["relative_surprise"]) > 1e-3) and np.all(other["span_gap"] > 1e-3)


def test_rewritten_sets_hold_the_random_picks_in_one_order(tmp_path, monkeypatch):
    """``random_as_result_first`` / ``random_as_derivation_first``: the random set's samples, every equation
    line rewritten into that order (``rewrite_equations``), counted again; samples scored with more scores
    than a rerun asks for are reused, with fewer refused by name."""
    import json

    from jaxdistill.experiments import selection
    from jaxdistill.tasks.arith import detour_counts, rewrite_equations

    def fake_sample_teacher(teacher_dir, task, examples, k, max_new_tokens, seed, cache):
        # per prompt: its v3 gold (correct, some lines result-first), then the same ending in a wrong answer
        texts = [e.solution if i == 0 else e.solution.rsplit("#### ", 1)[0] + "#### 100000"
                 for e in examples for i in range(k)]
        return [[1, 2]] * len(texts), texts, [True] * len(texts), None, None, [[1]] * len(examples)

    def fake_calibration_scores(teacher, side, prompts, prompt_texts, completions, proxy_dir, names):
        return {name: np.arange(len(completions), dtype=float) for name in names}

    trained = {}

    def fake_train_on_sets(sets, students, out, **kwargs):
        trained["sets"] = list(sets)
        return {name: {student: [0.3] for student in students} for name in sets}

    monkeypatch.setattr(selection, "sample_teacher", fake_sample_teacher)
    monkeypatch.setattr(selection, "calibration_scores", fake_calibration_scores)
    monkeypatch.setattr(selection, "train_on_sets", fake_train_on_sets)
    common = dict(teacher="t", proxy="p", students={"s": "s"}, out=tmp_path, world_version=3, prompts=40, k=2,
                  validation_texts=2)
    selection.run_selection(**common, selections=["random", "highest_proxy_surprise"])
    names = ["random", "random_as_result_first", "random_as_derivation_first", "every_sample",
             "every_sample_as_result_first"]
    summary = selection.run_selection(**common, selections=names)
    assert trained["sets"] == names

    def answers(name):
        return [json.loads(line)["answer"] for line in (tmp_path / "sets" / f"{name}.jsonl").read_text().splitlines()]

    random = answers("random")
    assert answers("random_as_result_first") == [rewrite_equations(t, "result_first") for t in random]
    assert answers("random_as_derivation_first") == [rewrite_equations(t, "derivation_first") for t in random]
    sets = summary["sets"]
    assert 0 < sets["random"]["mean_result_first"] < sets["random_as_result_first"]["mean_result_first"]
    assert sets["random_as_derivation_first"]["mean_result_first"] == 0
    assert sets["random_as_result_first"]["mean_result_first"] == np.mean(
        [detour_counts(t).result_first for t in answers("random_as_result_first")])
    every = [json.loads(line)["completion"] for line in (tmp_path / "samples.jsonl").read_text().splitlines()]
    assert answers("every_sample") == every and len(every) == 80  # all k samples of every prompt
    assert sets["every_sample"]["share_correct"] == 0.5 and sets["random"]["share_correct"] == 1.0
    assert answers("every_sample_as_result_first") == [rewrite_equations(t, "result_first") for t in every]
    with pytest.raises(ValueError, match=r"without the scores \['relative_surprise'\].*another output_dir"):
        selection.run_selection(**common, selections=["random", "highest_relative_surprise"])
