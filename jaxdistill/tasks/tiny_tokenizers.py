"""Two tiny byte-level BPE tokenizers trained on the arith corpus (docs/design.md section 4).

The teacher's and the proxy's tokenizers differ the way real model families do: another
vocabulary size, and another digit handling.

- ``teacher``: 384 tokens, digits split one by one before BPE (as Qwen does), so "128" is always
  three tokens;
- ``proxy``: 512 tokens, digits left to BPE (as GPT-2 does), so frequent numbers become one token.

(The digit-splitting one gets the smaller vocabulary because the arith corpus only has ~410
useful merges once digits cannot merge; the other reaches any size through number tokens.)

Both are byte-level (any text encodes; nothing is unknown) and carry the same special tokens:
``<|pad|>`` (id 0, padding only: samplers must never emit it), ``<|endoftext|>`` (eos),
``<|im_start|>`` and ``<|im_end|>`` (ChatML turns, with a ChatML ``chat_template``). Each is saved
as an HF tokenizer folder (``tokenizer.json``, ``tokenizer_config.json``,
``special_tokens_map.json``) that ``transformers.AutoTokenizer`` and ``tokenizers.Tokenizer``
load. Training is deterministic: the same arguments give byte-identical files.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PAD, EOS, IM_START, IM_END = "<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = (PAD, EOS, IM_START, IM_END)  # ids 0..3 in this order
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclasses.dataclass(frozen=True)
class TinyTokenizerSpec:
    name: str
    vocab_size: int
    split_digits: bool


DEFAULT_SPECS = (TinyTokenizerSpec("teacher", 384, split_digits=True),
                 TinyTokenizerSpec("proxy", 512, split_digits=False))


def arith_corpus(n_problems: int = 2000, *, seed: int = 0, difficulty: int = 2,
                 styles_per_problem: int = 4) -> list[str]:
    """Problem + solution texts of arith *train* problems, several random styles each (so every
    style's words are in the corpus); the test split stays unseen."""
    from jaxdistill.tasks.arith import generate_problems, render_solution, sample_style

    rng = np.random.default_rng([seed, 11])
    problems = generate_problems(n_problems, split="train", seed=seed, difficulty=difficulty)
    return [f"{problem.text}\n{render_solution(problem, sample_style(rng))}"
            for problem in problems for _ in range(styles_per_problem)]


def build_tokenizer(corpus: Sequence[str], vocab_size: int, split_digits: bool):
    """A byte-level BPE ``tokenizers.Tokenizer`` trained on ``corpus``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if split_digits:
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    minimum = len(SPECIAL_TOKENS) + len(pre_tokenizers.ByteLevel.alphabet())
    if vocab_size <= minimum:
        raise ValueError(f"vocab_size must exceed {minimum} (256 bytes + special tokens)")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  min_frequency=2, show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    if tokenizer.get_vocab_size() != vocab_size:
        raise ValueError(
            f"the corpus only supports {tokenizer.get_vocab_size()} tokens, not vocab_size="
            f"{vocab_size} (split_digits={split_digits}). Fix: a smaller vocab_size or a larger "
            f"corpus (n_problems).")
    return tokenizer


def save_hf_folder(tokenizer, out_dir: str | Path, model_max_length: int = 256) -> Path:
    """``tokenizer`` as an HF tokenizer folder with our special tokens and chat template."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": None,
        "additional_special_tokens": [IM_START, IM_END],
        "model_max_length": model_max_length,
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    special = {"eos_token": EOS, "pad_token": PAD, "additional_special_tokens": [IM_START, IM_END]}
    for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", special)):
        (out / name).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n")
    return out


def train_tiny_tokenizers(out_dir: str | Path, *,
                          specs: Sequence[TinyTokenizerSpec] = DEFAULT_SPECS, seed: int = 0,
                          n_problems: int = 2000, difficulty: int = 2,
                          model_max_length: int = 256) -> dict[str, Path]:
    """Train one tokenizer per spec on the arith corpus; return {spec name: folder}.

    The folders are ``out_dir/<name>``. Deterministic in (specs, seed, n_problems, difficulty).
    """
    corpus = arith_corpus(n_problems, seed=seed, difficulty=difficulty)
    folders = {}
    for spec in specs:
        tokenizer = build_tokenizer(corpus, spec.vocab_size, spec.split_digits)
        folders[spec.name] = save_hf_folder(tokenizer, Path(out_dir) / spec.name, model_max_length)
    return folders
