"""Sharded generation: prefill + KV-cache decoding, sampling transforms, per-token log-probs."""

from jaxdistill.generation.sampler import GenerationOutput, SamplingParams, generate, trace_count

__all__ = ["GenerationOutput", "SamplingParams", "generate", "trace_count"]
