"""Tokenizer loading and per-token byte lengths computed from the vocabulary."""

import importlib.util
import unicodedata

import numpy as np
import pytest

import jaxdistill.tokenizer as tokenizer_module
from helpers import FIXTURE_TEACHER
from jaxdistill.tokenizer import gpt2_unicode_to_byte, load_tokenizer

TEXTS = [
    "Natalia sold 48/2 = 24 clips in May.\n#### 72",
    "emoji 😀🎉👍🏽 and 🧑‍💻, CJK 日本語のテキスト 中文，한국어",
    "tabs\tand\t\tnewlines\n\n\r\n  two spaces, a decomposed cafe\u0301",
    " leading space",
    "  two leading spaces",
    "\nleading newline",
    "digits 31415926535897932384626433832795028841971",
    "",
]
HAS_SENTENCEPIECE = importlib.util.find_spec("sentencepiece") is not None
NAMES = ["qwen3", "llama3", "gpt2"] + (["mistral/v1"] if HAS_SENTENCEPIECE else [])


@pytest.fixture(scope="module", params=NAMES)
def named_tokenizer(request, shared_dir):
    return request.param, load_tokenizer(shared_dir / "tokenizers" / request.param)


def test_gpt2_byte_alphabet_is_a_bijection():
    table = gpt2_unicode_to_byte()
    assert sorted(table.values()) == list(range(256))
    assert table["Ġ"] == ord(" ") and table["Ċ"] == ord("\n") and table["A"] == ord("A")


def test_byte_lengths_cover_the_vocabulary_and_specials_hold_no_bytes(named_tokenizer):
    name, tok = named_tokenizer
    lengths = tok.token_byte_lengths
    assert lengths.dtype == np.int32 and lengths.shape == (len(tok.hf),) == (tok.vocab_size,)
    assert tok.eos_id is not None and lengths[tok.eos_id] == 0
    assert all(lengths[i] == 0 for i in tok.special_ids)
    non_special = np.setdiff1d(np.arange(tok.vocab_size), list(tok.special_ids))
    assert (lengths[non_special] > 0).all()  # every text token holds at least one byte
    assert lengths is tok.token_byte_lengths  # cached
    with pytest.raises(ValueError):
        lengths[0] = 5  # read-only: a shared table


@pytest.mark.parametrize(
    "name, piece, expected",
    [
        ("qwen3", "Ġworld", b" world"),
        ("qwen3", "<think>", b"<think>"),  # added but not special: literal text
        ("qwen3", "ĠðŁĺĢ", " 😀".encode()),
        ("llama3", "ĉĊ", b"\t\n"),
        ("gpt2", "ĠðŁĺ", b" \xf0\x9f\x98"),  # a partial UTF-8 sequence is still 4 bytes
        ("mistral/v1", "▁Hello", b" Hello"),
        ("mistral/v1", "<0x0A>", b"\n"),
        ("mistral/v1", "▁▁", b"  "),
    ],
)
def test_known_pieces_have_their_bytes(shared_dir, name, piece, expected):
    if name.startswith("mistral") and not HAS_SENTENCEPIECE:
        pytest.skip("the SentencePiece tokenizer.model needs the 'sentencepiece' package")
    tok = load_tokenizer(shared_dir / "tokenizers" / name)
    token_id = tok.hf.convert_tokens_to_ids(piece)
    assert tok.token_bytes[token_id] == expected
    assert tok.token_byte_lengths[token_id] == len(expected)


def test_encoded_bytes_reproduce_the_text(named_tokenizer):
    name, tok = named_tokenizer
    for text in TEXTS:
        ids, lengths = tok.encode_with_byte_lengths(text)
        held = b"".join(p[len(p) - n :] if n else b"" for p, n in zip(tok.bytes_of(ids), lengths))
        # Qwen normalises to NFC; the others keep the text's bytes exactly.
        expected = unicodedata.normalize("NFC", text) if name == "qwen3" else text
        assert held == expected.encode(), (name, text)
        assert int(lengths.sum()) == len(held)
    if name.startswith("mistral"):
        assert tok.adds_prefix_space
        ids, lengths = tok.encode_with_byte_lengths("\nleading newline")
        assert tok.token_bytes[ids[0]] == b" " and lengths[0] == 0  # the dummy prefix, removed


def test_special_ids_chat_template_and_padded_table(shared_dir):
    qwen = load_tokenizer(shared_dir / "tokenizers" / "qwen3")
    assert qwen.eos_id == qwen.hf.convert_tokens_to_ids("<|im_end|>") and qwen.bos_id is None
    assert qwen.pad_id == qwen.hf.convert_tokens_to_ids("<|endoftext|>")
    prompt = qwen.apply_chat_template([{"role": "user", "content": "2+2?"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\n2+2?<|im_end|>" in prompt and prompt.endswith("<|im_start|>assistant\n")
    assert qwen.decode(qwen.encode("Hi there")) == "Hi there"
    padded = qwen.byte_length_table(151936)  # Qwen's padded embedding rows
    assert padded.shape == (151936,) and (padded[qwen.vocab_size :] == 0).all()
    with pytest.raises(ValueError, match="smaller"):
        qwen.byte_length_table(10)
    llama = load_tokenizer(shared_dir / "tokenizers" / "llama3")
    assert llama.bos_id == 128000 and llama.encode("x")[0] != 128000  # this file adds no BOS itself
    gpt2 = load_tokenizer(shared_dir / "tokenizers" / "gpt2")
    with pytest.raises(ValueError, match="no chat template"):
        gpt2.apply_chat_template([{"role": "user", "content": "hi"}])
    assert load_tokenizer(shared_dir / "tokenizers" / "gpt2") is gpt2  # cached per folder


def test_clear_errors_for_missing_or_wrong_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        load_tokenizer(tmp_path)
    with pytest.raises(NotADirectoryError, match="folder"):
        load_tokenizer(FIXTURE_TEACHER / "tokenizer.json")


def test_sentencepiece_without_the_package_names_the_fix(tmp_path, monkeypatch):
    (tmp_path / "tokenizer.model").write_bytes(b"\x0a")  # the file's presence picks the converter; never read here
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        tokenizer_module.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "sentencepiece" else real_find_spec(name, *args),
    )
    with pytest.raises(ImportError, match="pip install sentencepiece"):
        load_tokenizer(tmp_path)
