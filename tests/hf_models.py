"""Tiny random transformers (torch) Qwen checkpoints for parity tests.

Every weight, norms and biases included, is drawn at random so no parameter can hide behind its
initial value (ones for norms, zeros for biases).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

# name -> transformers config kwargs
TINY_CONFIGS = {
    # Qwen2: q/k/v biases, tied embeddings
    "qwen2_tied": dict(model_type="qwen2", vocab_size=96, hidden_size=32, intermediate_size=64,
                       num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       tie_word_embeddings=True, rope_theta=10000.0),
    # Qwen2.5 style: untied head, GQA 2:1
    "qwen25_untied": dict(model_type="qwen2", vocab_size=96, hidden_size=48, intermediate_size=80,
                          num_hidden_layers=2, num_attention_heads=6, num_key_value_heads=3,
                          tie_word_embeddings=False, rope_theta=1000000.0),
    # Qwen3: q/k norm, head_dim (16) != hidden / heads (64 / 8 = 8), GQA 4:1
    "qwen3_gqa": dict(model_type="qwen3", vocab_size=96, hidden_size=64, intermediate_size=96,
                      num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2, head_dim=16,
                      tie_word_embeddings=False, rope_theta=1000000.0),
}


def make_hf_model(folder: Path, name: str, seed: int = 0):
    """Build, randomise and ``save_pretrained`` a tiny model; return the torch model."""
    import torch
    import transformers

    kwargs = dict(TINY_CONFIGS[name])
    model_type = kwargs.pop("model_type")
    cls = transformers.Qwen3Config if model_type == "qwen3" else transformers.Qwen2Config
    config = cls(**kwargs, eos_token_id=1, bos_token_id=2, pad_token_id=0)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif p.dim() == 1:
                p.normal_(0.0, 0.5)
            else:
                p.normal_(0.0, 0.15)
    model.save_pretrained(folder)
    return model


def left_padded_batch(vocab: int, lengths=(7, 4, 9), seed: int = 0):
    """Random ids [B, T] and a left-padding mask, with HF-style position ids."""
    rng = np.random.RandomState(seed)
    t = max(lengths)
    ids = rng.randint(3, vocab, size=(len(lengths), t))
    mask = np.zeros((len(lengths), t), np.int32)
    for i, n in enumerate(lengths):
        mask[i, t - n:] = 1
    ids = np.where(mask == 1, ids, 0)
    positions = np.maximum(mask.cumsum(1) - 1, 0)
    return ids, mask, positions


def torch_logits(model, ids, mask, positions):
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask),
                     position_ids=torch.tensor(positions)).logits.float().numpy()
