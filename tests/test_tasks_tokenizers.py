"""The two tiny tokenizers: deterministic files, different vocabularies and digit handling, HF
folders that transformers loads with their special tokens and chat template."""
import hashlib

import pytest

from jaxdistill.tasks import train_tiny_tokenizers
from jaxdistill.tasks.tiny_tokenizers import CHAT_TEMPLATE, SPECIAL_TOKENS, TinyTokenizerSpec, \
    build_tokenizer


def _digest(folder):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    return train_tiny_tokenizers(tmp_path_factory.mktemp("tiny_tokenizers"))


def test_training_is_deterministic(folders, tmp_path):
    again = train_tiny_tokenizers(tmp_path)
    assert set(again) == set(folders) == {"teacher", "proxy"}
    for name in folders:
        assert _digest(again[name]) == _digest(folders[name])
        assert set(_digest(folders[name])) == {"tokenizer.json", "tokenizer_config.json",
                                                "special_tokens_map.json"}
    small = [TinyTokenizerSpec("small", 320, split_digits=False)]
    seed0 = train_tiny_tokenizers(tmp_path / "seed0", specs=small, seed=0, n_problems=300)
    seed1 = train_tiny_tokenizers(tmp_path / "seed1", specs=small, seed=1, n_problems=300)
    assert _digest(seed0["small"])["tokenizer.json"] != _digest(seed1["small"])["tokenizer.json"]


def test_vocabularies_and_digit_handling_differ(folders):
    from tokenizers import Tokenizer

    teacher = Tokenizer.from_file(str(folders["teacher"] / "tokenizer.json"))
    proxy = Tokenizer.from_file(str(folders["proxy"] / "tokenizer.json"))
    assert (teacher.get_vocab_size(), proxy.get_vocab_size()) == (384, 512)
    for tokenizer in (teacher, proxy):
        assert [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    text = "Ann has 128 apples, so 128+5=133.\n#### 133"
    teacher_tokens = teacher.encode(text).tokens
    assert all(len(t.lstrip("\u0120")) <= 1 for t in teacher_tokens if any(c.isdigit() for c in t))
    assert any(sum(c.isdigit() for c in t) >= 2 for t in proxy.encode(text).tokens)
    for tokenizer in (teacher, proxy):  # byte level: any text round-trips
        odd = "Zoë paid €5 — naïve 🙂\n\tend"
        assert tokenizer.decode(tokenizer.encode(odd).ids) == odd
        assert tokenizer.encode("<|im_start|>user<|im_end|>").ids[0] == 2


def test_folders_load_in_transformers_with_special_tokens_and_chat_template(folders):
    from transformers import AutoTokenizer

    for name, folder in folders.items():
        tokenizer = AutoTokenizer.from_pretrained(folder)
        assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|pad|>", 0)
        assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|endoftext|>", 1)
        assert tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"]) == [2, 3]
        assert tokenizer.chat_template == CHAT_TEMPLATE
        text = tokenizer.apply_chat_template([{"role": "user", "content": "Ann has 3 pens."}],
                                             tokenize=False, add_generation_prompt=True)
        assert text == "<|im_start|>user\nAnn has 3 pens.<|im_end|>\n<|im_start|>assistant\n"
        ids = tokenizer(text)["input_ids"]
        assert ids.count(2) == 2 and ids.count(3) == 1 and 0 not in ids
        assert tokenizer.decode(ids) == text


def test_too_large_a_vocabulary_is_a_clear_error():
    with pytest.raises(ValueError, match="only supports"):
        build_tokenizer(["tiny corpus 1 2 3"] * 3, vocab_size=400, split_digits=True)
    with pytest.raises(ValueError, match="must exceed"):
        build_tokenizer(["x"], vocab_size=100, split_digits=False)


def test_pipeline_with_a_transformers_tokenizer(folders):
    from transformers import AutoTokenizer

    from jaxdistill.tasks import get_task, make_pipeline

    tokenizer = AutoTokenizer.from_pretrained(folders["proxy"])
    task = get_task("arith")
    examples = task.load("test", limit=4)
    plain = next(iter(make_pipeline(task, examples, tokenizer, batch_size=4, shuffle=False)))
    chat = next(iter(make_pipeline(task, examples, tokenizer, batch_size=4, shuffle=False,
                                   chat=True)))
    n = plain["lengths"][0]
    assert plain["input_ids"][0, n - 1] == tokenizer.eos_token_id
    assert (plain["input_ids"][0, n:] == tokenizer.pad_token_id).all()
    assert tokenizer.decode(plain["input_ids"][0, :n]) == \
        task.format_prompt(examples[0]) + examples[0].solution + "<|endoftext|>"
    row = chat["input_ids"][0, :chat["lengths"][0]].tolist()
    assert tokenizer.decode(row) == tokenizer.apply_chat_template(
        task.chat_messages(examples[0]), tokenize=False, add_generation_prompt=True
    ) + examples[0].solution + "<|im_end|>"
