"""A tiny random world for distillation and evaluation tests: two small tokenizers, random tiny models.

``build_world(tmp_path_factory)`` trains two byte-level BPE tokenizers on 300 arith problems (one splits
digits, one merges them, as the real tiny world's teacher and proxy do) and saves random Qwen models as
HF folders carrying their tokenizer. It is built once per test session (cached here), so every test file
shares the folders and the compiled programs.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from flax import nnx

from jaxdistill.models import Qwen, QwenConfig, save_model
from jaxdistill.tasks import train_tiny_tokenizers
from jaxdistill.tasks.tiny_tokenizers import TinyTokenizerSpec

SPLIT_VOCAB, MERGED_VOCAB = 300, 320
FIXTURE_TEACHER = Path(__file__).resolve().parent / "fixtures" / "tiny_arith_teacher"


def tiny_config(vocab_rows: int, model_type: str = "qwen2", hidden: int = 32, layers: int = 1) -> QwenConfig:
    qwen3 = model_type == "qwen3"
    return QwenConfig(model_type=model_type, vocab_size=vocab_rows, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1, head_dim=16,
                      qkv_bias=not qwen3, qk_norm=qwen3, tie_word_embeddings=True, eos_token_id=1, pad_token_id=0,
                      max_position_embeddings=256)


def save_tiny(folder: Path, tokenizer: Path, vocab_rows: int, model_type: str = "qwen2", seed: int = 0) -> Path:
    return save_model(Qwen(tiny_config(vocab_rows, model_type), rngs=nnx.Rngs(seed)), folder, tokenizer_dir=tokenizer)


@dataclasses.dataclass(frozen=True)
class World:
    split_tokenizer: Path  # digits split one by one (300 tokens)
    merged_tokenizer: Path  # digits left to BPE (320 tokens)
    teacher: Path  # qwen3, split tokenizer, 304 embedding rows (4 padded rows past the tokenizer)
    student: Path  # qwen2, split tokenizer, 302 rows (2 padded rows)
    cross_student: Path  # qwen2, merged tokenizer, 320 rows


_WORLD: World | None = None


def build_world(tmp_path_factory) -> World:
    global _WORLD
    if _WORLD is None:
        root = tmp_path_factory.mktemp("distill_world")
        tokenizers = train_tiny_tokenizers(root / "tokenizers", n_problems=300, specs=[
            TinyTokenizerSpec("split", SPLIT_VOCAB, True), TinyTokenizerSpec("merged", MERGED_VOCAB, False)])
        _WORLD = World(
            split_tokenizer=tokenizers["split"], merged_tokenizer=tokenizers["merged"],
            teacher=save_tiny(root / "teacher", tokenizers["split"], SPLIT_VOCAB + 4, "qwen3", seed=1),
            student=save_tiny(root / "student", tokenizers["split"], SPLIT_VOCAB + 2, seed=2),
            cross_student=save_tiny(root / "cross_student", tokenizers["merged"], MERGED_VOCAB, seed=3))
    return _WORLD
