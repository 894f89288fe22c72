"""The tiny world: the default run of ``python -m jaxdistill.calibrate`` on a CPU, with no downloads.

    build_world(folder)  -> two tiny tokenizers trained on the arith corpus; a tiny Qwen3-architecture
                            teacher and a tinier Qwen2-architecture proxy, trained from scratch on gold
                            chain-of-thought with the sft objective; saved as HF folders (reused when
                            already there)
    default_run()        -> build_world, then calibrate eta = +1 (distillable), -1 (undistillable) and 0
                            (control) from the same base teacher, distill students from every teacher
                            with two attacks (seqkd, gkd) -- one student like the proxy, one that differs
                            from it in tokenizer and size -- evaluate every arm, and write
                            runs/<name>/report.md and knob.png

Every stage runs the same code paths as a real Qwen run (HF folders in and out, the sampler, the
aligner, GRPO, the distillation objectives). ``quick=True`` shrinks every stage to a few steps (for
tests); the figures then mean nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from flax import nnx

from jaxdistill.models import Qwen, QwenConfig, save_model
from jaxdistill.tokenizer import load_tokenizer

log = logging.getLogger("jaxdistill.world")

ARITH_DIFFICULTY = 2


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes and budgets of one default run (full or quick)."""

    teacher_sft_steps: int = 1500
    proxy_sft_steps: int = 600
    sft_batch: int = 32
    calibrate_steps: int = 60
    prompts_per_step: int = 8
    num_generations: int = 4
    student_steps: int = 300
    student_batch: int = 32
    eval_size: int = 200
    max_completion_length: int = 112


FULL = Profile()
QUICK = Profile(teacher_sft_steps=4, proxy_sft_steps=2, sft_batch=8, calibrate_steps=2, prompts_per_step=2,
                num_generations=2, student_steps=2, student_batch=4, eval_size=4, max_completion_length=24)

# Architectures (DESIGN.md §6): a tiny Qwen3 teacher, a tinier Qwen2 proxy, and two students: one with
# the proxy's shape and tokenizer, one that differs from the proxy (the teacher's tokenizer, wider).
TEACHER_SHAPE = dict(model_type="qwen3", hidden_size=128, intermediate_size=384, num_hidden_layers=4,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=32, qk_norm=True)
PROXY_SHAPE = dict(model_type="qwen2", hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=16, qkv_bias=True)
OTHER_STUDENT_SHAPE = dict(model_type="qwen2", hidden_size=96, intermediate_size=256, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=24, qkv_bias=True)


def init_model_folder(folder: Path, shape: dict[str, Any], tokenizer_dir: Path, seed: int) -> Path:
    """A randomly initialised model of ``shape`` sized to the tokenizer, saved as an HF folder."""
    tok = load_tokenizer(tokenizer_dir)
    config = QwenConfig(vocab_size=tok.vocab_size, tie_word_embeddings=True, max_position_embeddings=512,
                        eos_token_id=tok.eos_id, pad_token_id=tok.pad_id, bos_token_id=None, **shape)
    return save_model(Qwen(config, rngs=nnx.Rngs(seed)), folder, tokenizer_dir=tokenizer_dir)


def _sft(student: Path, out: Path, steps: int, batch: int, seed: int, *, eval_size: int, lr: float) -> Path:
    from jaxdistill.distill.trainer import DistillConfig, distill

    config = DistillConfig(student=str(student), objective="sft", task="arith",
                           task_options=(f"difficulty={ARITH_DIFFICULTY}",), max_steps=steps, batch_size=batch,
                           learning_rate=lr, lr_schedule="cosine", warmup_steps=min(50, steps // 10),
                           seed=seed, output_dir=str(out), eval_size=eval_size, save_steps=0,
                           max_completion_length=128)
    return Path(distill(config)) / "model"


def build_world(folder: str | Path, profile: Profile = FULL, seed: int = 0) -> dict[str, Path]:
    """Tokenizers, the SFT-trained teacher and proxy, and the untrained student folders (reused if present)."""
    from jaxdistill.tasks.tiny_tokenizers import train_tiny_tokenizers

    root = Path(folder)
    done = root / "world.json"
    if done.exists():
        paths = {k: Path(v) for k, v in json.loads(done.read_text()).items()}
        if all(p.exists() for p in paths.values()):
            log.info("reusing the tiny world in %s", root)
            return paths
    start = time.perf_counter()
    toks = train_tiny_tokenizers(root / "tokenizers", seed=seed)
    teacher_init = init_model_folder(root / "init" / "teacher", TEACHER_SHAPE, toks["teacher"], seed)
    proxy_init = init_model_folder(root / "init" / "proxy", PROXY_SHAPE, toks["proxy"], seed + 1)
    paths = {
        "teacher_tokenizer": toks["teacher"],
        "proxy_tokenizer": toks["proxy"],
        # students start untrained: one shaped like the proxy (its tokenizer), one that differs from it
        "student_proxy_like": init_model_folder(root / "init" / "student_proxy_like", PROXY_SHAPE, toks["proxy"],
                                                seed + 2),
        "student_other": init_model_folder(root / "init" / "student_other", OTHER_STUDENT_SHAPE, toks["teacher"],
                                           seed + 3),
    }
    log.info("training the tiny teacher (%d sft steps)", profile.teacher_sft_steps)
    paths["teacher"] = _sft(teacher_init, root / "teacher_sft", profile.teacher_sft_steps, profile.sft_batch, seed,
                            eval_size=profile.eval_size, lr=3e-3)
    log.info("training the tiny proxy (%d sft steps)", profile.proxy_sft_steps)
    paths["proxy"] = _sft(proxy_init, root / "proxy_sft", profile.proxy_sft_steps, profile.sft_batch, seed,
                          eval_size=profile.eval_size, lr=3e-3)
    done.write_text(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    log.info("tiny world built in %.0f s", time.perf_counter() - start)
    return paths
