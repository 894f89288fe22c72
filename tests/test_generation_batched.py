"""The batched sampling-and-scoring layer and the model-with-tokenizer type, on one tiny random model."""
import dataclasses

import numpy as np
import pytest

from jaxdistill.generation import generate
from jaxdistill.generation.batched import even_batches, logprobs_batched, sample_batched, score_model
from jaxdistill.generation.tokenized_model import TokenizedModel, check_pair
from jaxdistill.tasks import get_task
from jaxdistill.tasks.tiny_tokenizers import train_tiny_tokenizers
from helpers import tiny_qwen_folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("batched")
    toks = train_tiny_tokenizers(root / "tokenizers", n_problems=400)
    folder = tiny_qwen_folder(root / "model", toks["teacher"])
    return {"folder": folder, "tokenizers": toks}


@pytest.fixture(scope="module")
def lm(world):
    return TokenizedModel.load(world["folder"])[0]


def test_even_batches_split_evenly_and_pad_the_last_with_repeats():
    calls = list(even_batches(100, 64))
    assert [len(rows) for rows, _ in calls] == [50, 50] and [real for _, real in calls] == [50, 50]
    calls = list(even_batches(7, 3))  # 3 calls of 3, the last holding 1 real row
    assert [rows.tolist() for rows, _ in calls] == [[0, 1, 2], [3, 4, 5], [6, 6, 6]]
    assert [real for _, real in calls] == [3, 3, 1]
    assert list(even_batches(0, 4)) == []
    with pytest.raises(ValueError, match="batch_size"):
        list(even_batches(3, 0))


def test_greedy_samples_do_not_depend_on_the_batch_size(lm):
    task = get_task("arith")
    examples = task.load("test", None, limit=5)
    prompts = [lm.prompt(task, e) for e in examples]
    one_call = sample_batched(lm, prompts, batch_size=64, max_new_tokens=12, temperature=0.0)
    three_calls = sample_batched(lm, prompts, batch_size=2, max_new_tokens=12, temperature=0.0)
    assert one_call.ids == three_calls.ids
    assert one_call.prompt_index.tolist() == [0, 1, 2, 3, 4]
    # the same rows as one plain generate call
    out = generate(lm.model, prompts, max_new_tokens=12, temperature=0.0, eos_ids=[lm.eos_id], pad_id=lm.pad_id,
                   vocab_limit=lm.vocab_size)
    assert one_call.ids == out.completions()
    assert one_call.finished.tolist() == np.asarray(out.finished_eos).tolist()
    assert all(row[-1] == lm.eos_id for row, done in zip(one_call.ids, one_call.finished) if done)
    assert [len(r) for r in one_call.without_eos()] == (one_call.lengths - one_call.finished).tolist()


def test_sampled_rows_are_prompt_major_and_calls_draw_different_streams(lm):
    prompts = [[5, 6, 7]] * 4  # one prompt four times: only the random stream tells the rows apart
    samples = sample_batched(lm, prompts, batch_size=2, num_generations=2, max_new_tokens=8, seed=3)
    assert samples.prompt_index.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # the second call (prompts 2-3) does not repeat the first call's draws
    assert samples.ids[:4] != samples.ids[4:]
    again = sample_batched(lm, prompts, batch_size=2, num_generations=2, max_new_tokens=8, seed=3)
    assert again.ids == samples.ids


def test_logprobs_batched_do_not_depend_on_the_batch_size_and_are_zero_past_the_end(lm):
    prompts = [[5, 6, 7], [8, 9], [10, 11, 12, 13], [14]]
    completions = [[20, 21, 22], [23], [24, 25, 26, 27, 28], [29, 30]]
    whole = logprobs_batched(lm, prompts, completions, 6, batch_size=8)
    pieces = logprobs_batched(lm, prompts, completions, 6, batch_size=3)
    np.testing.assert_allclose(whole, pieces, rtol=1e-5, atol=1e-6)
    for row, completion in zip(whole, completions):
        assert (row[:len(completion)] < 0).all() and (row[len(completion):] == 0).all()


def test_score_model_reports_accuracy_length_and_eos_rate(lm):
    task = get_task("arith")
    examples = task.load("test", None, limit=4)
    result = score_model(lm, task, examples, max_new_tokens=10, batch_size=3, keep_completions=True)
    assert result["n"] == 4 and result["samples_per_prompt"] == 1 and len(result["completions"]) == 4
    assert 0.0 <= result["accuracy"] <= 1.0 and 0.0 <= result["finished_rate"] <= 1.0
    assert 1.0 <= result["mean_length"] <= 10.0
    sampled = score_model(lm, task, examples, max_new_tokens=10, temperature=1.0, samples_per_prompt=3)
    assert sampled["samples_per_prompt"] == 3


def test_tokenized_model_ids_and_load_errors(world, lm):
    assert lm.pad_id == lm.tokenizer.pad_id and lm.eos_id == lm.tokenizer.eos_id and not lm.chat
    chat = TokenizedModel.of(lm.tokenizer, chat=True)
    assert chat.eos_id == lm.tokenizer.hf.convert_tokens_to_ids("<|im_end|>")  # a chat turn ends there
    assert lm.text(lm.tokenizer.encode("12+3") + [lm.eos_id]) == "12+3"
    # a tokenizer larger than the embedding cannot belong to the model; the error names the field to set
    small = dataclasses.replace(lm.model.config, vocab_size=lm.vocab_size - 1)
    with pytest.raises(ValueError, match="set teacher_tokenizer"):
        check_pair(small, lm.tokenizer, "teacher")
