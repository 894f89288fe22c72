"""Calibration step time at a model shape: random teacher and proxy HF folders, N calibrate steps on
the arith task, and per step the compile and phase times (``time/*`` of metrics.jsonl) as a table.

    python benchmarks/rft_step.py --shape tiny                  # a CPU, a minute (runs in the test suite)
    python benchmarks/rft_step.py --shape qwen3-0.6b --tokenizer /path/to/Qwen3 --dtype bfloat16
    python benchmarks/rft_step.py --shape qwen3-8b --tokenizer /path/to/Qwen3 --dtype bfloat16 --remat dots

Teacher and proxy share the shape and the tokenizer: the real Qwen3 tokenizer when ``--tokenizer`` names
its folder, else the tiny tokenizers of the tiny world (teacher and proxy differ then, as in the paper's
cross-tokenizer setting). Step 1 holds the compiles; later steps are the steady state.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

from flax import nnx

from jaxdistill.models import Qwen, QwenConfig, save_model
from jaxdistill.plan import PUBLISHED_CONFIGS
from jaxdistill.rl.config import CalibrateConfig
from jaxdistill.rl.loop import calibrate
from jaxdistill.sharding import MeshConfig
from jaxdistill.tokenizer import load_tokenizer
from jaxdistill.training import read_metrics

SHAPES = {
    "tiny": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=8, tie_word_embeddings=True),
    "qwen3-0.6b": PUBLISHED_CONFIGS["Qwen/Qwen3-0.6B"],
    "qwen3-8b": PUBLISHED_CONFIGS["Qwen/Qwen3-8B"],
}
COLUMNS = (("step", "step"), ("compile/programs", "programs"), ("compile/seconds", "compile s"),
           ("time/rollout", "rollout s"), ("time/rewards", "rewards s"), ("time/reference", "reference s"),
           ("time/update", "update s"), ("step_time", "step s"), ("rollout/tokens_per_second", "rollout tok/s"),
           ("update/tflops_per_second", "update TFLOP/s"), ("update/mfu", "MFU"))


def random_folder(folder: Path, shape: str, tokenizer_dir: Path, dtype: str, seed: int) -> Path:
    """An HF folder with a random Qwen3 of ``shape`` and the tokenizer's vocabulary (at least)."""
    tok = load_tokenizer(tokenizer_dir)
    fields = {k: v for k, v in SHAPES[shape].items() if k in {f.name for f in dataclasses.fields(QwenConfig)}}
    fields["vocab_size"] = max(fields.get("vocab_size", 0), tok.vocab_size)
    config = QwenConfig(**{**fields, "model_type": "qwen3", "qk_norm": True, "max_position_embeddings": 4096,
                           "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id, "param_dtype": dtype,
                           "compute_dtype": dtype})
    return save_model(Qwen(config, rngs=nnx.Rngs(seed)), folder, tokenizer_dir=tokenizer_dir)


def table(records: list[dict]) -> str:
    """Markdown table of the step records (``-`` where a figure is absent, e.g. MFU on a CPU)."""
    def cell(record, key):
        value = record.get(key)
        if value is None:
            return "-"
        return f"{value:.3g}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(name for _, name in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(r, key) for key, _ in COLUMNS) + " |" for r in records if r["step"] > 0]
    return "\n".join(lines)


def run(shape: str, *, steps: int, tokenizer: str | None, dtype: str, remat: str, prompts: int, generations: int,
        new_tokens: int, work: Path) -> list[dict]:
    if tokenizer:
        teacher_tok = proxy_tok = Path(tokenizer)
    else:
        from jaxdistill.tasks.tiny_tokenizers import train_tiny_tokenizers

        toks = train_tiny_tokenizers(work / "tokenizers", n_problems=400)
        teacher_tok, proxy_tok = toks["teacher"], toks["proxy"]
    teacher = random_folder(work / "teacher", shape, teacher_tok, dtype, seed=1)
    proxy = random_folder(work / "proxy", shape, proxy_tok, dtype, seed=2)
    config = CalibrateConfig(teacher=str(teacher), proxy=str(proxy), task="arith", output_dir=str(work / "run"),
                             dtype=dtype, num_generations=generations, prompts_per_step=prompts, max_steps=steps,
                             max_completion_length=new_tokens, eval_steps=0, eval_num_prompts=prompts, save_steps=0,
                             export=False, progress=False, remat=remat, beta=0.04, eta=1.0,
                             mesh=MeshConfig(num_devices=1) if shape == "tiny" else MeshConfig())
    calibrate(config)
    return read_metrics(work / "run")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--tokenizer", help="folder of the real Qwen3 tokenizer (default: the tiny tokenizers)")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--remat", default="none", choices=("none", "dots", "full"))
    parser.add_argument("--prompts", type=int, default=8, help="prompts per step")
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--json", type=Path, help="also write the step records here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work:
        records = run(args.shape, steps=args.steps, tokenizer=args.tokenizer, dtype=args.dtype, remat=args.remat,
                      prompts=args.prompts, generations=args.generations, new_tokens=args.new_tokens, work=Path(work))
    print(f"calibrate steps, shape {args.shape}, {args.prompts} prompts x {args.generations}, "
          f"{args.new_tokens} new tokens, {args.dtype}, remat={args.remat}")
    print(table(records))
    if args.json:
        args.json.write_text(json.dumps(records, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
