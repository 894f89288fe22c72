"""What the tests build: tiny random Qwen folders, the small worlds made of them, torch reference models.

One factory, :func:`tiny_qwen_folder`, saves a random jaxdistill Qwen as an HF folder carrying its
tokenizer; every tiny world below is made with it. :func:`make_hf_model` is the reference side of the
parity tests (a torch ``transformers`` model, every weight randomised). None of this needs ``../shared``.
"""
from __future__ import annotations

import dataclasses
import json
from importlib.metadata import version
from pathlib import Path

import numpy as np
from flax import nnx

from jaxdistill.models import Qwen, QwenConfig, save_model
from jaxdistill.tasks import train_tiny_tokenizers
from jaxdistill.tasks.tiny_tokenizers import TinyTokenizerSpec
from jaxdistill.tokenizer import load_tokenizer

FIXTURE_TEACHER = Path(__file__).resolve().parent / "fixtures" / "tiny_arith_teacher"  # trained, 75% greedy


def tiny_qwen_folder(folder: Path, tokenizer_dir: Path, *, model_type: str = "qwen3", hidden_size: int = 32,
                     intermediate_size: int | None = None, layers: int = 1, heads: int = 4, kv_heads: int = 2,
                     head_dim: int = 8, extra_rows: int = 0, tie: bool = True, max_positions: int = 512,
                     seed: int = 1) -> Path:
    """An HF folder holding a random Qwen of this shape, with the tokenizer copied in.

    The embedding has the tokenizer's vocabulary plus ``extra_rows`` padded rows (as real Qwen
    checkpoints have); Qwen3 gets q/k norms, Qwen2 q/k/v biases; the intermediate size defaults to
    twice the hidden size; EOS and pad ids are the tokenizer's.
    """
    tok = load_tokenizer(tokenizer_dir)
    config = QwenConfig(model_type=model_type, vocab_size=tok.vocab_size + extra_rows, hidden_size=hidden_size,
                        intermediate_size=intermediate_size or 2 * hidden_size, num_hidden_layers=layers,
                        num_attention_heads=heads, num_key_value_heads=kv_heads, head_dim=head_dim,
                        qk_norm=model_type == "qwen3", qkv_bias=model_type == "qwen2", tie_word_embeddings=tie,
                        max_position_embeddings=max_positions, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
    return save_model(Qwen(config, rngs=nnx.Rngs(seed)), folder, tokenizer_dir=tokenizer_dir)


def tiny_calibration(world, out, **overrides):
    """A CalibrateConfig of a few cheap GRPO steps on ``tiny_world``'s teacher and proxy into ``out``;
    ``overrides`` replace any field (each calibration test states what it changes)."""
    from jaxdistill.rl.config import CalibrateConfig
    from jaxdistill.sharding import MeshConfig

    base = dict(teacher=str(world["teacher"]), proxy=str(world["proxy"]), task="arith", output_dir=str(out),
                num_generations=4, prompts_per_step=2, max_steps=2, max_completion_length=12,
                learning_rate=1e-2, lora_rank=4, lora_alpha=8.0, eval_steps=0, eval_num_prompts=4,
                save_steps=2, progress=False, eta=1.0, beta=0.04, mesh=MeshConfig(num_devices=1))
    return CalibrateConfig(**{**base, **overrides})


def tiny_world(root: Path, n_problems: int = 400) -> dict[str, Path]:
    """A random teacher (Qwen3) and proxy (Qwen2) with the two tiny tokenizers: a calibration's inputs."""
    toks = train_tiny_tokenizers(root / "tokenizers", n_problems=n_problems)
    return {"teacher": tiny_qwen_folder(root / "teacher", toks["teacher"], model_type="qwen3"),
            "proxy": tiny_qwen_folder(root / "proxy", toks["proxy"], model_type="qwen2")}


# The distillation world: two tokenizers (one splits digits, one merges them, as the real tiny world's
# teacher and proxy do) and models of this shape.
SPLIT_VOCAB, MERGED_VOCAB = 300, 320
DISTILL_SHAPE = dict(heads=2, kv_heads=1, head_dim=16, max_positions=256)


@dataclasses.dataclass(frozen=True)
class World:
    split_tokenizer: Path  # digits split one by one (300 tokens)
    merged_tokenizer: Path  # digits left to BPE (320 tokens)
    teacher: Path  # qwen3, split tokenizer, 304 embedding rows (4 padded rows past the tokenizer)
    student: Path  # qwen2, split tokenizer, 302 rows (2 padded rows)
    cross_student: Path  # qwen2, merged tokenizer, 320 rows


_WORLD: World | None = None


def build_world(tmp_path_factory) -> World:
    """The distillation world, built once per test session so every file shares its folders and programs."""
    global _WORLD
    if _WORLD is None:
        root = tmp_path_factory.mktemp("distill_world")
        tokenizers = train_tiny_tokenizers(root / "tokenizers", n_problems=300, specs=[
            TinyTokenizerSpec("split", SPLIT_VOCAB, True), TinyTokenizerSpec("merged", MERGED_VOCAB, False)])
        split, merged = tokenizers["split"], tokenizers["merged"]
        _WORLD = World(
            split_tokenizer=split, merged_tokenizer=merged,
            teacher=tiny_qwen_folder(root / "teacher", split, model_type="qwen3", extra_rows=4, seed=1,
                                     **DISTILL_SHAPE),
            student=tiny_qwen_folder(root / "student", split, model_type="qwen2", extra_rows=2, seed=2,
                                     **DISTILL_SHAPE),
            cross_student=tiny_qwen_folder(root / "cross_student", merged, model_type="qwen2", seed=3,
                                           **DISTILL_SHAPE))
    return _WORLD


# Parity references: tiny torch `transformers` Qwen models, name -> config kwargs. Every weight, norms and
# biases included, is drawn at random so no parameter can hide behind its initial value.
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
    """Build, randomise and ``save_pretrained`` a tiny torch model; return it."""
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


# The default run's quick profile: every stage produces its artefacts and the report has every arm.
# The run itself happens once, in tests/test_notebooks.py (notebook 01, then the CLI's --quick on the
# same folder); this is the check.
ARMS = ["before", "sft"] + [f"{attack}/{teacher}" for attack in ("seqkd", "gkd")
                            for teacher in ("original", "eta0", "distillable", "undistillable")]


def assert_every_artefact(out: Path) -> None:
    world = json.loads((out / "world" / "world.json").read_text())
    assert set(world) == {"teacher", "proxy", "teacher_tokenizer", "proxy_tokenizer", "student_proxy_like",
                          "student_other"}
    assert all(Path(path).exists() for path in world.values())
    for name in ("distillable", "undistillable", "eta0"):
        assert (out / "calibrate" / name / "teacher" / "config.json").exists()
        assert (out / "calibrate" / name / "metrics.jsonl").exists()
    card = json.loads((out / "scorecard" / "scorecard.json").read_text())
    arms = {(row["student"], row["arm"]) for row in card["arms"]}
    for student in ("proxy_like", "other"):
        for arm in ARMS:
            assert (student, arm) in arms, (student, arm)
    report = (out / "report.md").read_text()
    for arm in ARMS:
        assert arm in report, arm
    assert f"jax {version('jax')}, jaxlib {version('jaxlib')}" in report  # what the figures' low bits depend on
    assert (out / "knob.png").stat().st_size > 1000
    assert set(card["teachers"]) >= {"distillable", "undistillable", "eta0"}
