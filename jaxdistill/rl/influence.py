"""The harm score of a text: how much one SFT step on it would raise a proxy's loss on gold text.

For a proxy with parameters phi, a rollout y_i of prompt x_i, and gold validation texts V in the
proxy's own tokenization:

    L_V(phi) = mean over V's completion tokens of -log p_phi(token | context)
    u        = grad L_V / ||grad L_V||                      (the validation direction, unit norm)
    harm_i   = <u, grad_phi log p_phi(y_i | x_i)> / bytes_i

An SFT step of size lr on y_i moves phi by lr * grad log p(y_i | x_i), so to first order it changes
L_V by lr * ||grad L_V|| * bytes_i * harm_i: harm_i > 0 is text whose imitation makes the proxy worse
on gold text. Per byte, so that tokenizers and lengths are comparable. Every rollout's directional
derivative comes from one forward-mode ``jax.jvp`` of the batch's sequence log-probs along u (one
forward pass with tangents, no per-rollout gradient). This is Antidistillation Sampling's quantity
(Savani et al. 2025, arXiv 2504.13146) measured on a frozen proxy.

u is estimated from a finite validation set and can be mostly noise: ``direction_stability`` is the
cosine between the directions of two disjoint halves of V (1: the same direction; near 0: noise).

Cross-tokenizer: a teacher's completion tokens are re-tokenized by the proxy
(``jaxdistill.align.align_retokenized``, the calibration reward's path), so the score is that of the
proxy reading the same bytes (``retokenized_batch``).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxdistill.align import align_retokenized
from jaxdistill.generation.sampler import SamplingParams, bucket_length, left_pad
from jaxdistill.generation.scoring import completion_logprobs
from jaxdistill.token_maths import masked_mean
from jaxdistill.tokenizer import Tokenizer

__all__ = ["ProxyBatch", "split_proxy", "sequence_logprobs", "validation_loss", "validation_direction",
           "harm_scores", "tree_cosine", "direction_stability", "DirectionEstimate", "estimate_direction",
           "text_batch", "validation_shape", "validation_batches", "retokenized_batch"]


class ProxyBatch(NamedTuple):
    """Prompts and completions in the proxy's tokens (a pytree of arrays).

    prompt_ids/prompt_mask: int [N, P] left-padded; tokens/mask: int [N, C] right-padded completions;
    num_bytes: int [N] bytes of each completion's text.
    """

    prompt_ids: jax.Array
    prompt_mask: jax.Array
    tokens: jax.Array
    mask: jax.Array
    num_bytes: jax.Array


def split_proxy(model) -> tuple[Any, Any, Any]:
    """(graphdef, params, rest) of an NNX model: the score differentiates ``params`` (nnx.Param) only."""
    return nnx.split(model, nnx.Param, ...)


def _scoring(vocab_limit: int) -> SamplingParams:  # the proxy's own softmax: T = 1, nothing filtered
    return SamplingParams(max_new_tokens=1, temperature=1.0, pad_id=-1, vocab_limit=vocab_limit)


def sequence_logprobs(params, graphdef, rest, batch: ProxyBatch, vocab_limit: int) -> jax.Array:
    """log p_phi(y_i | x_i) of every completion: float [N], the sum over its tokens."""
    model = nnx.merge(graphdef, params, rest)
    logp = completion_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.tokens, batch.mask,
                               _scoring(vocab_limit), lora=False, chunk_size=128)
    return jnp.where(batch.mask.astype(bool), logp, 0.0).sum(axis=1)


def validation_loss(params, graphdef, rest, batch: ProxyBatch, vocab_limit: int) -> jax.Array:
    """L_V: the mean over the batch's completion tokens of -log p_phi(token | context) (scalar)."""
    model = nnx.merge(graphdef, params, rest)
    logp = completion_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.tokens, batch.mask,
                               _scoring(vocab_limit), lora=False, chunk_size=128)
    return -masked_mean(logp, batch.mask.astype(bool))


_loss_grad = jax.jit(jax.value_and_grad(validation_loss), static_argnames=("graphdef", "vocab_limit"))


@jax.jit
def _tree_dot(a, b) -> jax.Array:
    """<a, b> summed over the leaves: one program (on a multi-process mesh, eager reductions leaf by leaf
    hang the processes' collectives)."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def tree_cosine(a, b) -> float:
    """<a, b> / (||a|| ||b||) of two pytrees of the same structure."""
    return float(_tree_dot(a, b) / jnp.sqrt(_tree_dot(a, a) * _tree_dot(b, b)))


def validation_direction(params, graphdef, rest, batches: Sequence[ProxyBatch], vocab_limit: int
                         ) -> tuple[Any, float, float]:
    """(u, ||g||, L_V): g = the mean over ``batches`` of grad L_V (several batches: a larger V at the
    memory of one), u = g / ||g||. Raises ValueError for an empty validation set."""
    if not batches or any(int(jnp.sum(b.mask)) == 0 for b in batches):  # a scalar every process can read
        raise ValueError("the validation set is empty (or a batch holds no completion tokens): give gold "
                         "validation texts for the harm score's direction")
    total, loss = None, 0.0
    for batch in batches:
        value, grad = _loss_grad(params, graphdef, rest, batch, vocab_limit)
        total = grad if total is None else jax.tree.map(jnp.add, total, grad)
        loss += float(value)
    g = jax.tree.map(lambda x: x / len(batches), total)
    norm = float(jnp.sqrt(_tree_dot(g, g)))
    if not norm > 0:
        raise ValueError("the validation gradient is zero: the proxy fits the validation text exactly, so "
                         "no direction of harm is defined")
    return jax.tree.map(lambda x: x / norm, g), norm, loss / len(batches)


@partial(jax.jit, static_argnames=("graphdef", "vocab_limit"))
def harm_scores(params, graphdef, rest, direction, batch: ProxyBatch, vocab_limit: int) -> jax.Array:
    """harm_i = <u, grad_phi log p_phi(y_i | x_i)> / bytes_i for every row (float [N]; 0 without bytes):
    one ``jax.jvp`` of the batch's sequence log-probs along ``direction`` (u, a pytree like ``params``)."""
    _, tangent = jax.jvp(lambda p: sequence_logprobs(p, graphdef, rest, batch, vocab_limit),
                         (params,), (direction,))
    return jnp.where(batch.num_bytes > 0, tangent / jnp.maximum(batch.num_bytes, 1), 0.0)


def direction_stability(params, graphdef, rest, half_a: Sequence[ProxyBatch], half_b: Sequence[ProxyBatch],
                        vocab_limit: int) -> float:
    """The cosine between the validation directions of two disjoint halves of the validation set."""
    u_a, _, _ = validation_direction(params, graphdef, rest, half_a, vocab_limit)
    u_b, _, _ = validation_direction(params, graphdef, rest, half_b, vocab_limit)
    return tree_cosine(u_a, u_b)


class DirectionEstimate(NamedTuple):
    """The validation direction and what it rests on (``estimate_direction``).

    direction: u, a unit-norm pytree like the proxy's params; grad_norm: ||grad L_V||; loss: L_V;
    stability: the cosine between the directions of V's two halves (in [-1, 1])."""

    direction: Any
    grad_norm: float
    loss: float
    stability: float


def estimate_direction(params, graphdef, rest, batches: Sequence[ProxyBatch], vocab_limit: int
                       ) -> DirectionEstimate:
    """u from all of ``batches`` and its stability from their two halves, in one pass over V.

    With g_a, g_b the mean gradients of the first and second half (the same number of batches each),
    the mean over all batches is g = (g_a + g_b) / 2, so u = g / ||g|| and stability = cos(g_a, g_b)."""
    if len(batches) < 2 or len(batches) % 2:
        raise ValueError(f"{len(batches)} validation batches: the stability needs an even number, at least 2 "
                         "(``validation_batches`` makes such a list)")
    half = len(batches) // 2
    u_a, norm_a, loss_a = validation_direction(params, graphdef, rest, batches[:half], vocab_limit)
    u_b, norm_b, loss_b = validation_direction(params, graphdef, rest, batches[half:], vocab_limit)
    g = jax.tree.map(lambda a, b: (norm_a * a + norm_b * b) / 2, u_a, u_b)
    norm = float(jnp.sqrt(_tree_dot(g, g)))
    if not norm > 0:
        raise ValueError("the validation gradient is zero: the two halves of the validation set pull in "
                         "exactly opposite directions, so no direction of harm is defined")
    return DirectionEstimate(jax.tree.map(lambda x: x / norm, g), norm, (loss_a + loss_b) / 2,
                             tree_cosine(u_a, u_b))


# ---- host side: texts and teacher tokens into the proxy's batches ------------------------------------

def _pad_id(tokenizer: Tokenizer) -> int:
    return tokenizer.pad_id if tokenizer.pad_id is not None else 0


def _batch(tokenizer: Tokenizer, prompts: Sequence[str], completions: Sequence[Sequence[int]],
           num_bytes: Sequence[int], widths: tuple[int, int] | None = None) -> ProxyBatch:
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    pad = _pad_id(tokenizer)
    encoded = [tokenizer.encode(p) for p in prompts]
    prompt_width, width = widths or (bucket_length(max(map(len, encoded))),
                                     bucket_length(max(max(map(len, completions)), 1)))
    prompt_ids, prompt_mask = left_pad(encoded, prompt_width, pad)
    tokens = np.full((len(completions), width), pad, np.int32)
    mask = np.zeros((len(completions), width), np.int32)
    for row, ids in enumerate(completions):
        tokens[row, :len(ids)] = ids
        mask[row, :len(ids)] = 1
    return ProxyBatch(jnp.asarray(prompt_ids), jnp.asarray(prompt_mask), jnp.asarray(tokens), jnp.asarray(mask),
                      jnp.asarray(np.asarray(num_bytes, np.int32)))


def _faithful_ids(tokenizer: Tokenizer, texts: Sequence[str], labels: Sequence[str]) -> list[list[int]]:
    """Each text's tokens, refusing an empty text or one whose bytes the tokenizer changes (a normaliser,
    an unknown character), naming the first such text by its label."""
    rows = []
    for label, text in zip(labels, texts):
        ids = tokenizer.encode(text)
        if not ids:
            raise ValueError(f"{label} is empty: the proxy has nothing to score")
        if b"".join(tokenizer.bytes_of(ids)) != text.encode("utf-8"):
            raise ValueError(f"the proxy's tokenizer ({tokenizer.path}) changes the bytes of {label} "
                             f"({ascii(text[:80])}), so it cannot read it faithfully: fix or drop that text")
        rows.append(ids)
    return rows


def text_batch(tokenizer: Tokenizer, prompts: Sequence[str], completions: Sequence[str]) -> ProxyBatch:
    """Prompts and completion texts in the proxy's own tokenization (gold validation text, for one).
    A completion whose bytes the tokenizer changes is an error naming it."""
    ids = _faithful_ids(tokenizer, completions, [f"completion {i}" for i in range(len(completions))])
    if any(not p for p in prompts):
        raise ValueError("an empty prompt: the proxy has nothing to condition on")
    return _batch(tokenizer, prompts, ids, [len(c.encode("utf-8")) for c in completions])


def validation_shape(num_texts: int, batch_size: int, row_multiple: int = 1) -> tuple[int, int]:
    """(batches, rows per batch) of ``validation_batches``: an even number n of batches, each of at most
    ``batch_size`` texts (n <= num_texts, so every batch holds one), rows rounded up to a multiple of
    ``row_multiple`` (the mesh's data x fsdp, so that each batch splits over it)."""
    n = min(2 * math.ceil(num_texts / (2 * batch_size)), num_texts - num_texts % 2)
    return n, math.ceil(math.ceil(num_texts / n) / row_multiple) * row_multiple


def validation_batches(tokenizer: Tokenizer, prompts: Sequence[str], completions: Sequence[str],
                       batch_size: int, labels: Sequence[str] | None = None, *,
                       row_multiple: int = 1) -> list[ProxyBatch]:
    """Gold validation texts as an even number of batches of one shape (one compiled gradient program),
    at most ``batch_size`` texts each (``validation_shape``); the first half of the list and the second
    are V's two disjoint halves (``estimate_direction``). Text i goes to batch i mod n; a batch short of
    a row (or rounded up to ``row_multiple`` rows) repeats its first row with no completion tokens (mask
    0, 0 bytes: it adds nothing to L_V).
    Raises ValueError for fewer than 2 texts or a text the proxy cannot tokenize faithfully (named by
    ``labels``, default ``validation text <i>``)."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} validation texts")
    if len(completions) < 2:
        raise ValueError(f"{len(completions)} validation text(s): the harm direction and its stability (two "
                         "disjoint halves) need at least 2 gold texts")
    ids = _faithful_ids(tokenizer, completions, labels or [f"validation text {i}" for i in range(len(completions))])
    if any(not p for p in prompts):
        raise ValueError("an empty validation prompt: the proxy has nothing to condition on")
    n, rows = validation_shape(len(ids), batch_size, row_multiple)
    widths = (bucket_length(max(len(tokenizer.encode(p)) for p in prompts)), bucket_length(max(map(len, ids))))
    batches = []
    for b in range(n):
        members = list(range(b, len(ids), n))
        filler = [members[0]] * (rows - len(members))
        batches.append(_batch(tokenizer, [prompts[i] for i in members + filler],
                              [ids[i] for i in members] + [[] for _ in filler],
                              [len(completions[i].encode("utf-8")) for i in members] + [0] * len(filler), widths))
    return batches


def retokenized_batch(teacher_tokenizer: Tokenizer, completion_ids: Sequence[Sequence[int]],
                      proxy_tokenizer: Tokenizer, prompts: Sequence[str], *, strict: bool = True) -> ProxyBatch:
    """A teacher's completion tokens as the proxy reads them: their bytes re-tokenized by the proxy
    (``align_retokenized``, as the calibration reward does); special tokens (EOS) hold no bytes.

    ``strict``: text whose bytes change on the way (a sampled broken UTF-8 sequence becomes U+FFFD) is an
    error; with ``strict=False`` the proxy scores the text as it reads it, per byte of the teacher's text."""
    aligned = align_retokenized(teacher_tokenizer, completion_ids, proxy_tokenizer)
    if aligned.mismatches and strict:
        raise ValueError("the proxy's tokenizer changes the bytes of some completions (it cannot tokenize "
                         f"them faithfully): {aligned.report()[:500]}")
    rows = [ids[mask.astype(bool)].tolist() for ids, mask in zip(aligned.ids_b, aligned.mask_b)]
    return _batch(proxy_tokenizer, prompts, rows, np.asarray(aligned.spans.total_bytes_a).tolist())
