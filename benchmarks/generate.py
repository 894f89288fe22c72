"""Generation speed, side by side: jaxdistill vs transformers on the same weights from the same HF folder.

    python benchmarks/generate.py                     # configs (a) and (b) on this machine
    python benchmarks/generate.py --shape qwen3-0.6b  # real shapes with random weights (accelerators)

For each config: batch 16, prompt 64, 128 new tokens, greedy. Prints tokens/s of both, their ratio,
compile time apart from run time, and the decode efficiency: the time of the bare matrix products of
one decode step (all layers plus the LM head, timed alone) divided by the measured time per decode
step. Both must produce the same greedy tokens (asserted when transformers runs).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxdistill.generation import generate
from jaxdistill.models import load_model
from timing import median_seconds  # benchmarks/timing.py (the script's folder is on sys.path)

SHAPES = {
    "a": dict(vocab_size=151936, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, head_dim=64),
    "b": dict(vocab_size=1024, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, head_dim=64),
    "qwen3-0.6b": dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "qwen3-8b": dict(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                     num_attention_heads=32, num_key_value_heads=8, head_dim=128, tie_word_embeddings=False),
    "qwen3-1.7b": dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                       num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
}


def build_checkpoint(folder: Path, shape: dict, seed: int = 0):
    import torch
    import transformers

    config = transformers.Qwen3Config(**shape, eos_token_id=None, pad_token_id=0, max_position_embeddings=4096)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    model.save_pretrained(folder)
    return model


def matmul_time(model, batch: int, repeats: int) -> float:
    """Median time of the bare matrix products of one decode step (all layers + LM head)."""
    kernels = []
    for layer in model.layers:
        for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                     layer.self_attn.o_proj, layer.mlp.gate_proj, layer.mlp.up_proj, layer.mlp.down_proj):
            kernels.append(proj.kernel[...])
    head = model.embed_tokens[...] if model.lm_head is None else model.lm_head[...]  # [vocab, hidden]
    xs = [jnp.ones((batch, k.shape[0]), k.dtype) for k in kernels] + [jnp.ones((batch, head.shape[1]), head.dtype)]
    kernels.append(head)

    @jax.jit
    def products(xs, kernels):
        return [x @ k for x, k in zip(xs[:-1], kernels[:-1])] + [xs[-1] @ kernels[-1].T]

    jax.block_until_ready(products(xs, kernels))
    return median_seconds(lambda: jax.block_until_ready(products(xs, kernels)), repeats)


def bench(name: str, shape: dict, batch: int, prompt_len: int, new_tokens: int, repeats: int,
          with_torch: bool, dtype: str) -> dict:
    folder = Path(tempfile.mkdtemp()) / name
    torch_model = build_checkpoint(folder, shape)
    model, _ = load_model(folder, dtype=dtype)
    rng = np.random.RandomState(0)
    prompts = rng.randint(1, min(shape["vocab_size"], 5000), size=(batch, prompt_len)).tolist()

    def run(n):
        out = generate(model, prompts, max_new_tokens=n, temperature=0.0, eos_ids=[], pad_id=0)
        return jax.block_until_ready(out.tokens)

    start = time.perf_counter()
    tokens = run(new_tokens)
    first_call = time.perf_counter() - start
    run_time = median_seconds(lambda: run(new_tokens), repeats)
    run(1)
    prefill_time = median_seconds(lambda: run(1), repeats)
    step_time = (run_time - prefill_time) / (new_tokens - 1)
    bare = matmul_time(model, batch, repeats * 3)
    result = dict(config=name, batch=batch, prompt=prompt_len, new_tokens=new_tokens, dtype=dtype,
                  jax_tokens_per_s=batch * new_tokens / run_time, jax_compile_s=first_call - run_time,
                  jax_run_s=run_time, decode_step_ms=step_time * 1e3, matmul_ms=bare * 1e3,
                  decode_efficiency=bare / step_time)
    if with_torch:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"  # transformers on the accelerator when torch sees one
        torch_model.to(device)
        ids = torch.tensor(prompts, device=device)
        with torch.no_grad():
            def torch_run():
                out = torch_model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                           min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
                if device == "cuda":
                    torch.cuda.synchronize()
                return out
            ref = torch_run()
            torch_time = median_seconds(torch_run, repeats)
        result["torch_device"] = device
        same = bool(np.array_equal(ref[:, prompt_len:].cpu().numpy(), np.asarray(tokens)))
        result.update(torch_tokens_per_s=batch * new_tokens / torch_time, torch_run_s=torch_time,
                      speedup=torch_time / run_time, same_greedy_tokens=same)
        assert same, f"{name}: jaxdistill and transformers greedy tokens differ"
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=sorted(SHAPES), action="append",
                        help="config(s) to run (default: a and b)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--no-torch", action="store_true", help="skip the transformers side (large shapes)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    shapes = args.shape or ["a", "b"]
    print(f"devices: {jax.devices()}")
    results = []
    for name in shapes:
        r = bench(name, SHAPES[name], args.batch, args.prompt, args.new_tokens, args.repeats,
                  with_torch=not args.no_torch, dtype=args.dtype)
        results.append(r)
        print(json.dumps(r, indent=None))
    print("\n| config | jaxdistill tok/s | transformers tok/s | ratio | compile s | step ms | matmul ms | decode eff. |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['config']} | {r['jax_tokens_per_s']:.0f} | {r.get('torch_tokens_per_s', float('nan')):.0f} | "
              f"{r.get('speedup', float('nan')):.2f}x | {r['jax_compile_s']:.1f} | {r['decode_step_ms']:.2f} | "
              f"{r['matmul_ms']:.2f} | {r['decode_efficiency']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
