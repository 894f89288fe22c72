#!/usr/bin/env bash
# One command that measures an accelerator: calibrate steps (benchmarks/rft_step.py) and generation
# (benchmarks/generate.py, transformers on the same device) at the Qwen3-0.6B and Qwen3-8B shapes with
# random weights, in bf16; the tables go to stdout and to $OUT (default: accelerator_results.md).
#     bash benchmarks/accelerator.sh /path/to/Qwen3-tokenizer-folder
set -euo pipefail
cd "$(dirname "$0")"
TOKENIZER=${1:?usage: bash benchmarks/accelerator.sh QWEN3_TOKENIZER_FOLDER}
OUT=${OUT:-accelerator_results.md}
{
  python -c "import jax; print('devices:', jax.devices()); print('jax', jax.__version__)"
  python rft_step.py --shape qwen3-0.6b --tokenizer "$TOKENIZER" --dtype bfloat16 --steps 5 --new-tokens 256
  python rft_step.py --shape qwen3-8b --tokenizer "$TOKENIZER" --dtype bfloat16 --steps 5 --new-tokens 256 --remat dots
  python generate.py --shape qwen3-0.6b --batch 64 --prompt 128 --new-tokens 256 --dtype bfloat16
  python generate.py --shape qwen3-8b --batch 32 --prompt 128 --new-tokens 256 --dtype bfloat16
} 2>&1 | tee "$OUT"
