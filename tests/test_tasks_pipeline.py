"""grain pipelines: exact resume from a saved iterator state, epochs, buckets, padding, masks."""
import json

import numpy as np
import pytest

from jaxdistill.tasks import get_task, make_pipeline
from jaxdistill.tasks.pipeline import bucket_length
from jaxdistill.tasks.tiny_tokenizers import arith_corpus, build_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(arith_corpus(300), vocab_size=320, split_digits=True)


@pytest.fixture(scope="module")
def arith():
    task = get_task("arith")
    return task, task.load("train", limit=10)


def _batches(iterator, n):
    return [next(iterator) for _ in range(n)]


def _assert_same(batches_a, batches_b):
    assert len(batches_a) == len(batches_b)
    for a, b in zip(batches_a, batches_b):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("resample", [False, True])
def test_restored_state_gives_the_same_next_batches(arith, tokenizer, resample):
    task, examples = arith

    def pipeline():
        return make_pipeline(task, examples, tokenizer, batch_size=4, seed=7,
                             resample_solutions=resample)

    iterator = iter(pipeline())
    _batches(iterator, 3)  # 12 rows: already past the first epoch of 10
    state = json.loads(json.dumps(iterator.get_state()))  # plain JSON, no pickle
    uninterrupted = _batches(iterator, 6)
    resumed = iter(pipeline())
    resumed.set_state(state)
    _assert_same(_batches(resumed, 6), uninterrupted)


def test_epochs_are_complete_and_reshuffled(arith, tokenizer):
    task, examples = arith
    ds = make_pipeline(task, examples, tokenizer, batch_size=3, seed=1, num_epochs=2,
                       drop_remainder=False)
    order = np.concatenate([batch["index"] for batch in ds]).tolist()
    assert len(order) == 20
    assert sorted(order[:10]) == sorted(order[10:]) == list(range(10))
    assert order[:10] != order[10:] and order[:10] != list(range(10))
    again = make_pipeline(task, examples, tokenizer, batch_size=3, seed=1, num_epochs=2,
                          drop_remainder=False)
    assert np.concatenate([batch["index"] for batch in again]).tolist() == order
    other = make_pipeline(task, examples, tokenizer, batch_size=3, seed=2, num_epochs=1,
                          drop_remainder=False)
    assert np.concatenate([b["index"] for b in other]).tolist() != order[:10]
    unshuffled = make_pipeline(task, examples, tokenizer, batch_size=5, shuffle=False,
                               num_epochs=1)
    assert np.concatenate([b["index"] for b in unshuffled]).tolist() == list(range(10))


def test_sft_batches_right_padded_to_a_bucket_with_a_solution_loss_mask(arith, tokenizer):
    task, examples = arith
    batch = next(iter(make_pipeline(task, examples, tokenizer, batch_size=4, shuffle=False,
                                    buckets=(16, 48, 96, 160, 256))))
    assert set(batch) == {"input_ids", "attention_mask", "positions", "loss_mask", "lengths",
                          "index"}
    assert all(v.dtype == np.int32 for v in batch.values())
    length = batch["input_ids"].shape[1]
    assert length == bucket_length(int(batch["lengths"].max()), (16, 48, 96, 160, 256))
    assert length in (48, 96, 160, 256)
    for row, index in enumerate(batch["index"]):
        example = examples[index]
        n = batch["lengths"][row]
        np.testing.assert_array_equal(batch["attention_mask"][row], np.arange(length) < n)
        assert (batch["input_ids"][row, n:] == 0).all() and batch["input_ids"][row, n - 1] == 1
        np.testing.assert_array_equal(batch["positions"][row, :n], np.arange(n))
        target = batch["input_ids"][row][batch["loss_mask"][row] == 1].tolist()
        assert target[-1] == 1  # eos is learned
        assert tokenizer.decode(target[:-1]) == example.solution
        prompt = batch["input_ids"][row][:n][batch["loss_mask"][row][:n] == 0].tolist()
        assert tokenizer.decode(prompt) == task.format_prompt(example)


def test_prompt_batches_are_left_padded_without_a_loss_mask(arith, tokenizer):
    task, examples = arith
    batch = next(iter(make_pipeline(task, examples, tokenizer, mode="prompt", batch_size=5,
                                    shuffle=False)))
    assert "loss_mask" not in batch
    length = batch["input_ids"].shape[1]
    for row, index in enumerate(batch["index"]):
        n = batch["lengths"][row]
        assert (batch["attention_mask"][row, length - n:] == 1).all()
        assert (batch["input_ids"][row, :length - n] == 0).all()
        assert batch["positions"][row, -1] == n - 1
        ids = batch["input_ids"][row, length - n:].tolist()
        assert tokenizer.decode(ids) == task.format_prompt(examples[index])
    right = next(iter(make_pipeline(task, examples, tokenizer, mode="prompt", batch_size=5,
                                    shuffle=False, padding_side="right")))
    assert (right["attention_mask"][:, 0] == 1).all()


def test_chat_rows_use_chatml_and_end_with_im_end(arith, tokenizer):
    task, examples = arith
    batch = next(iter(make_pipeline(task, examples, tokenizer, chat=True, batch_size=2,
                                    shuffle=False)))
    row = batch["input_ids"][0][: batch["lengths"][0]].tolist()
    assert row[0] == 2 and row[-1] == 3 and 1 not in row  # <|im_start|> ... <|im_end|>
    assert tokenizer.decode(row, skip_special_tokens=False).startswith("<|im_start|>user\n")


def test_overlong_rows_are_truncated_with_one_warning(arith, tokenizer):
    task, examples = arith
    with pytest.warns(UserWarning, match="truncated") as caught:
        batches = list(make_pipeline(task, examples, tokenizer, batch_size=5, buckets=(16,),
                                     num_epochs=1))
    assert len([w for w in caught if "truncated" in str(w.message)]) == 1
    assert all(b["input_ids"].shape == (5, 16) for b in batches)
    with pytest.warns(UserWarning, match="truncated"):
        prompts = next(iter(make_pipeline(task, examples, tokenizer, mode="prompt",
                                          batch_size=1, buckets=(8,), shuffle=False)))
    full = tokenizer.encode(task.format_prompt(examples[0])).ids
    assert prompts["input_ids"][0].tolist() == full[-8:]  # prompts keep their end


def test_bad_arguments_are_clear_errors(arith, tokenizer):
    task, examples = arith
    with pytest.raises(ValueError, match="mode"):
        make_pipeline(task, examples, tokenizer, mode="rl")
    with pytest.raises(ValueError, match="padding_side"):
        make_pipeline(task, examples, tokenizer, padding_side="middle")
    with pytest.raises(ValueError, match="no examples"):
        make_pipeline(task, [], tokenizer)
    ifeval = get_task("ifeval")
    no_solution = [ifeval.parse_row({"prompt": "Write.", "instruction_id_list": ["x:y"],
                                     "kwargs": [{}]})]
    with pytest.raises(ValueError, match="no solution"):
        make_pipeline(ifeval, no_solution, tokenizer)
    assert next(iter(make_pipeline(ifeval, no_solution, tokenizer, mode="prompt",
                                   batch_size=1)))["input_ids"].shape[0] == 1
    with pytest.raises(ValueError, match="pad_id"):
        make_pipeline(task, examples, lambda text: [5, 6])
