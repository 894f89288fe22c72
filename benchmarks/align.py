"""Speed of cross-tokenizer span alignment: vectorised (jit) vs the plain loop, vs a forward pass.

    python benchmarks/align.py [--data PATH.jsonl] [--tokenizer-a DIR] [--tokenizer-b DIR]

Builds a batch of real text (default 32 rows x 2048 tokens of GSM8K question + answer pairs, Qwen3
vs Llama-3 tokenizers), then reports, as medians over repeated runs:

* the device-side alignment step of the span reward (``align_spans`` plus ``span_logprobs`` on both
  sides, jitted) in tokens/s, tokens counted on both sides;
* the same alignment by ``align_spans_loop``, the plain per-token loop;
* the host-side preparation (proxy re-tokenization, byte diff), for information;
* the forward pass of a tiny Qwen3-shaped ``jaxdistill.models`` model (4 layers, width 256, 4096
  vocabulary rows) on the same batch, and the alignment time as a fraction of it (skipped, with a
  note, where the model package is missing). On a 2-core CPU one forward pass takes ~35 s.

Defaults look for data and tokenizers in a ``shared/`` folder beside the checkout (or
``$JAXDISTILL_SHARED``); pass paths to use anything else.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxdistill.align import align_retokenized, align_spans, align_spans_loop, align_texts, span_logprobs
from jaxdistill.tokenizer import load_tokenizer
from timing import median_seconds  # benchmarks/timing.py (the script's folder is on sys.path)


def _default_shared() -> Path:
    return Path(os.environ.get("JAXDISTILL_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def _default(relative: str) -> str | None:
    path = _default_shared() / relative
    return str(path) if path.exists() else None


def load_rows(data: Path, tokenizer, batch: int, length: int) -> list[str]:
    """``batch`` texts of exactly ``length`` tokens of ``tokenizer`` (GSM8K records run together)."""
    records = [json.loads(line) for line in data.open()]
    texts, cursor = [], 0
    for _ in range(batch):
        ids: list[int] = []
        while len(ids) < length:
            record = records[cursor % len(records)]
            cursor += 1
            ids += tokenizer.encode(record["question"] + "\n" + record["answer"] + "\n\n")
        held = b"".join(tokenizer.bytes_of(ids[:length]))
        texts.append(held.decode("utf-8", errors="replace"))
    return texts


def tiny_forward_seconds(input_ids: np.ndarray, mask: np.ndarray, vocab: int, repeats: int) -> float | None:
    """Median forward time of a tiny Qwen3-shaped model on the batch, or None without the package.

    Uses the ``jaxdistill.models`` API (``QwenConfig``, ``Qwen(config, rngs=...)``, ``model(ids,
    attention_mask)``). The vocabulary is kept small (ids taken modulo it) so that the
    [32, 2048, vocab] float32 logits fit a 24 GiB machine.
    """
    try:
        from flax import nnx

        from jaxdistill.models import Qwen, QwenConfig
    except ImportError as error:
        print(f"forward pass: skipped ({error}); the aligner figures above stand alone")
        return None
    config = QwenConfig(
        model_type="qwen3",
        qk_norm=True,
        vocab_size=vocab,
        hidden_size=256,
        intermediate_size=768,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
    )
    model = Qwen(config, rngs=nnx.Rngs(0))
    forward = nnx.jit(lambda model, ids, mask: model(ids, attention_mask=mask))
    ids = jnp.asarray(input_ids % vocab)
    mask = jnp.asarray(mask)
    jax.block_until_ready(forward(model, ids, mask))
    return median_seconds(lambda: jax.block_until_ready(forward(model, ids, mask)), repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=_default("data/gsm8k/test.jsonl"), help="jsonl with question/answer")
    parser.add_argument("--tokenizer-a", default=_default("tokenizers/qwen3"), help="teacher tokenizer folder")
    parser.add_argument("--tokenizer-b", default=_default("tokenizers/llama3"), help="proxy tokenizer folder")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--length", type=int, default=2048, help="tokens per row on side a")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs of the jitted aligner")
    parser.add_argument("--loop-repeats", type=int, default=3, help="timed runs of the plain loop")
    parser.add_argument("--forward-vocab", type=int, default=4096, help="tiny model's vocabulary rows")
    parser.add_argument("--forward-repeats", type=int, default=1, help="timed forward passes (after one compile run)")
    args = parser.parse_args()
    for name in ("data", "tokenizer_a", "tokenizer_b"):
        if getattr(args, name) is None:
            parser.error(f"--{name.replace('_', '-')} is required (no shared/ folder found beside the checkout)")

    tokenizer_a = load_tokenizer(args.tokenizer_a)
    tokenizer_b = load_tokenizer(args.tokenizer_b)
    texts = load_rows(Path(args.data), tokenizer_a, args.batch, args.length)
    alignment = align_texts(
        tokenizer_a, tokenizer_b, texts, max_length_a=args.length, max_length_b=args.length
    )
    lengths_a, mask_a = alignment.byte_lengths_a, alignment.mask_a
    lengths_b, mask_b = alignment.byte_lengths_b, alignment.mask_b
    tokens = int(mask_a.sum() + mask_b.sum())
    print(
        f"batch {args.batch} x {args.length} tokens ({tokenizer_a.path.name} vs {tokenizer_b.path.name}): "
        f"{int(mask_a.sum())} + {int(mask_b.sum())} tokens, {int(alignment.spans.total_bytes_a.sum())} bytes, "
        f"{int(alignment.spans.num_spans.sum())} spans, aligned-byte fraction "
        f"{float(alignment.aligned_byte_fraction.mean()):.4f}, {len(alignment.mismatches)} byte mismatches"
    )
    print(f"devices: {jax.devices()}, cpu cores: {os.cpu_count()}")

    capacity = min(lengths_a.shape[1], lengths_b.shape[1])

    @jax.jit
    def alignment_step(lengths_a, mask_a, lengths_b, mask_b, logprobs_a, logprobs_b):
        spans = align_spans(lengths_a, mask_a, lengths_b, mask_b)
        return (
            spans,
            span_logprobs(logprobs_a, spans.span_ids_a, capacity),
            span_logprobs(logprobs_b, spans.span_ids_b, capacity),
        )

    rng = np.random.default_rng(0)
    inputs = [
        jnp.asarray(x)
        for x in (
            lengths_a,
            mask_a,
            lengths_b,
            mask_b,
            rng.uniform(-5, 0, lengths_a.shape).astype(np.float32),
            rng.uniform(-5, 0, lengths_b.shape).astype(np.float32),
        )
    ]
    spans, _, _ = jax.block_until_ready(alignment_step(*inputs))  # compile
    vector_seconds = median_seconds(lambda: jax.block_until_ready(alignment_step(*inputs)), args.repeats)
    spans_only = jax.jit(align_spans)
    jax.block_until_ready(spans_only(*inputs[:4]))
    spans_seconds = median_seconds(lambda: jax.block_until_ready(spans_only(*inputs[:4])), args.repeats)

    loop_result = None

    def run_loop():
        nonlocal loop_result
        loop_result = align_spans_loop(lengths_a, mask_a, lengths_b, mask_b)

    loop_seconds = median_seconds(run_loop, args.loop_repeats)
    assert (loop_result[0] == np.asarray(spans.span_ids_a)).all(), "loop and vectorised aligner disagree"
    assert (loop_result[1] == np.asarray(spans.span_ids_b)).all(), "loop and vectorised aligner disagree"

    ids_a = [row[mask].tolist() for row, mask in zip(alignment.ids_a, alignment.mask_a)]
    host_seconds = median_seconds(lambda: align_retokenized(tokenizer_a, ids_a, tokenizer_b), 3)

    for label, seconds in [
        ("vectorised align_spans + span_logprobs (jit)", vector_seconds),
        ("vectorised align_spans alone (jit)", spans_seconds),
        ("reference loop (align_spans_loop)", loop_seconds),
    ]:
        print(f"{label:46s} {seconds * 1e3:8.2f} ms  {tokens / seconds / 1e6:8.2f} M tokens/s")
    print(f"speed-up over the loop: {loop_seconds / vector_seconds:.0f}x (goal >= 10x)")
    print(f"host re-tokenize + byte diff + align (align_retokenized): {host_seconds * 1e3:.1f} ms (for information)")

    forward_seconds = tiny_forward_seconds(
        alignment.ids_a, alignment.mask_a, args.forward_vocab, args.forward_repeats
    )
    if forward_seconds is not None:
        print(
            f"tiny model forward: {forward_seconds * 1e3:.1f} ms; alignment = "
            f"{100 * vector_seconds / forward_seconds:.2f}% of it (goal < 5%)"
        )


if __name__ == "__main__":
    main()
