"""Tiny random Qwen folders for the scale tests (multi-process run, memory plan, notebooks)."""
from __future__ import annotations

from pathlib import Path

from flax import nnx

from jaxdistill.models import Qwen, QwenConfig, save_model
from jaxdistill.tokenizer import load_tokenizer


def random_qwen_folder(folder: Path, tokenizer_dir: Path, *, model_type: str = "qwen3", hidden_size: int = 32,
                       layers: int = 1, heads: int = 4, kv_heads: int = 2, head_dim: int = 8,
                       intermediate_size: int = 64, tie: bool = True, seed: int = 1) -> Path:
    """An HF folder holding a random Qwen of the given shape, with the tokenizer copied in."""
    tok = load_tokenizer(tokenizer_dir)
    config = QwenConfig(model_type=model_type, vocab_size=tok.vocab_size, hidden_size=hidden_size,
                        intermediate_size=intermediate_size, num_hidden_layers=layers, num_attention_heads=heads,
                        num_key_value_heads=kv_heads, head_dim=head_dim, qk_norm=model_type == "qwen3",
                        qkv_bias=model_type == "qwen2", tie_word_embeddings=tie, max_position_embeddings=1024,
                        eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    return save_model(Qwen(config, rngs=nnx.Rngs(seed)), folder, tokenizer_dir=tokenizer_dir)


def tiny_world(root: Path) -> dict[str, Path]:
    """Teacher (Qwen3) and proxy (Qwen2) with the two tiny tokenizers, as in tests/test_calibrate.py."""
    from jaxdistill.tasks.tiny_tokenizers import train_tiny_tokenizers

    toks = train_tiny_tokenizers(root / "tokenizers", n_problems=400)
    return {"teacher": random_qwen_folder(root / "teacher", toks["teacher"], model_type="qwen3"),
            "proxy": random_qwen_folder(root / "proxy", toks["proxy"], model_type="qwen2")}
