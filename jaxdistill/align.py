"""Cross-tokenizer span alignment in byte space.

Two tokenizers cut the same text at different places. A *shared boundary* is a byte offset where a
token ends on both sides; the *spans* are the pieces of text between consecutive shared boundaries.
They are the minimal units whose probability both models assign: log p(span) is the sum of the
log-probs of the tokens inside it, on either side.

Example: "unbelievable" cut as [un|believ|able] and [unbel|iev|able]; token ends (in bytes) are
{2, 8, 12} and {5, 8, 12}; shared boundaries {8, 12}; spans "unbeliev" (tokens 0-1 vs 0-1) and
"able" (token 2 vs token 2).

Everything works on per-token byte lengths (``Tokenizer.token_byte_lengths``), never on decoded
strings. The device functions (:func:`align_spans`, :func:`span_logprobs`) are pure, vectorised and
jit-able; the host functions (:func:`align_texts`, :func:`align_token_ids`,
:func:`align_retokenized`) tokenize, check that both sides hold the same bytes, and report where
they do not (normalisers such as Qwen's NFC, unknown tokens, truncation) instead of misaligning
silently.

Span ids are ``-1`` for tokens that belong to no span: padding, zero-byte tokens (BOS, EOS, chat
markers: they hold no text) and tokens after the last shared boundary (a truncated tail).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from jaxdistill.tokenizer import Tokenizer

__all__ = [
    "SpanAlignment",
    "align_spans",
    "span_logprobs",
    "span_mask",
    "align_spans_loop",
    "ByteMismatch",
    "TextAlignment",
    "align_texts",
    "align_token_ids",
    "align_retokenized",
]


# ---------------------------------------------------------------------------------------------
# Device side: pure, vectorised, jit-able.
# ---------------------------------------------------------------------------------------------
class SpanAlignment(NamedTuple):
    """Span ids of two tokenizations of the same bytes (a pytree of arrays).

    span_ids_a:    int32 [B, T_a]  span of each side-a token, -1 for none.
    span_ids_b:    int32 [B, T_b]  span of each side-b token, -1 for none.
    num_spans:     int32 [B]       spans per row; span ids run over 0 .. num_spans - 1.
    aligned_bytes: int32 [B]       bytes covered by spans (offset of the last shared boundary).
    total_bytes_a: int32 [B]       bytes held by the valid side-a tokens.
    total_bytes_b: int32 [B]       bytes held by the valid side-b tokens.
    bytes_match:   bool  [B]       total_bytes_a == total_bytes_b (False: truncated or changed text).
    fully_aligned: bool  [B]       bytes_match and every byte lies in a span.
    """

    span_ids_a: jax.Array
    span_ids_b: jax.Array
    num_spans: jax.Array
    aligned_bytes: jax.Array
    total_bytes_a: jax.Array
    total_bytes_b: jax.Array
    bytes_match: jax.Array
    fully_aligned: jax.Array


def _ends_on_shared_boundary(ends: jax.Array, lengths: jax.Array, other_ends: jax.Array) -> jax.Array:
    """Which tokens end where a token of the other side also ends.

    ends [T] int32 (non-decreasing), lengths [T] int32, other_ends [T_o] int32 (non-decreasing)
    -> bool [T]. Zero-length tokens never end a span (they hold no bytes). A zero-length or masked
    token of the other side repeats the previous end offset (or 0), so it adds no false match.
    """
    position = jnp.searchsorted(other_ends, ends, side="left", method="scan")
    found = jnp.take(other_ends, jnp.clip(position, 0, other_ends.shape[0] - 1))
    return (found == ends) & (lengths > 0)


def align_spans(
    byte_lengths_a: jax.Array,
    mask_a: jax.Array,
    byte_lengths_b: jax.Array,
    mask_b: jax.Array,
) -> SpanAlignment:
    """Align two batches of tokenizations of the same texts into byte spans.

    byte_lengths_a: int [B, T_a]  bytes of text each side-a token covers (0 for special tokens).
    mask_a:         bool [B, T_a] valid side-a tokens (False: padding, anywhere in the row).
    byte_lengths_b: int [B, T_b]; mask_b: bool [B, T_b]  the same for side b.

    Returns a :class:`SpanAlignment`. Method: cumulative byte offsets give every token's end; a
    shared boundary is an end offset present on both sides (binary search of one side's ends in the
    other's); a token's span id is the number of shared boundaries before its end (an exclusive
    cumsum). Spans are minimal (no shared boundary inside one), contiguous, and numbered in text
    order on both sides, so the same id names the same bytes on both sides. The function only sees
    lengths: that both sides hold the *same bytes* is the caller's promise (the host functions below
    check it). Swapping the two sides swaps the outputs.
    """
    lengths_a = jnp.where(mask_a, byte_lengths_a, 0).astype(jnp.int32)
    lengths_b = jnp.where(mask_b, byte_lengths_b, 0).astype(jnp.int32)
    ends_a = jnp.cumsum(lengths_a, axis=1)  # [B, T_a] non-decreasing
    ends_b = jnp.cumsum(lengths_b, axis=1)  # [B, T_b]

    boundary_a = jax.vmap(_ends_on_shared_boundary)(ends_a, lengths_a, ends_b)  # [B, T_a]
    boundary_b = jax.vmap(_ends_on_shared_boundary)(ends_b, lengths_b, ends_a)  # [B, T_b]
    num_spans = boundary_a.sum(axis=1, dtype=jnp.int32)  # == boundary_b.sum(axis=1)

    def span_ids(boundary: jax.Array, lengths: jax.Array) -> jax.Array:
        before = jnp.cumsum(boundary, axis=1, dtype=jnp.int32) - boundary.astype(jnp.int32)
        in_a_span = (lengths > 0) & (before < num_spans[:, None])
        return jnp.where(in_a_span, before, -1)

    total_a = ends_a[:, -1] if ends_a.shape[1] else jnp.zeros(ends_a.shape[0], jnp.int32)
    total_b = ends_b[:, -1] if ends_b.shape[1] else jnp.zeros(ends_b.shape[0], jnp.int32)
    aligned = jnp.max(jnp.where(boundary_a, ends_a, 0), axis=1, initial=0)
    bytes_match = total_a == total_b
    return SpanAlignment(
        span_ids_a=span_ids(boundary_a, lengths_a),
        span_ids_b=span_ids(boundary_b, lengths_b),
        num_spans=num_spans,
        aligned_bytes=aligned.astype(jnp.int32),
        total_bytes_a=total_a,
        total_bytes_b=total_b,
        bytes_match=bytes_match,
        fully_aligned=bytes_match & (aligned == total_a),
    )


def span_logprobs(token_logprobs: jax.Array, span_ids: jax.Array, num_spans: int) -> jax.Array:
    """Sum per-token values into their spans: log p(span) = sum of its tokens' log-probs.

    token_logprobs: float [B, T]  (any per-token value: byte lengths give span byte counts)
    span_ids:       int   [B, T]  from :func:`align_spans`; -1 (and ids >= num_spans) are dropped.
    num_spans:      static int S, the span capacity (min(T_a, T_b) always suffices).
    Returns float [B, S]; spans past a row's ``num_spans`` are 0 (see :func:`span_mask`).
    One ``segment_sum`` over the flattened batch (row b's spans occupy segments b*S .. b*S+S-1).
    """
    batch, _ = span_ids.shape
    in_range = (span_ids >= 0) & (span_ids < num_spans)
    row_offset = jnp.arange(batch, dtype=jnp.int32)[:, None] * num_spans
    segment = jnp.where(in_range, span_ids + row_offset, batch * num_spans)  # out of range: dropped
    sums = jax.ops.segment_sum(
        token_logprobs.reshape(-1), segment.reshape(-1), num_segments=batch * num_spans
    )
    return sums.reshape(batch, num_spans)


def span_mask(num_spans: jax.Array, capacity: int) -> jax.Array:
    """bool [B, capacity]: which span slots hold a real span (num_spans: int [B])."""
    return jnp.arange(capacity)[None, :] < num_spans[:, None]


# ---------------------------------------------------------------------------------------------
# Host side: the plain loop (specification and speed baseline) and tokenizer-level helpers.
# ---------------------------------------------------------------------------------------------
def align_spans_loop(
    byte_lengths_a: np.ndarray, mask_a: np.ndarray, byte_lengths_b: np.ndarray, mask_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same alignment as :func:`align_spans`, as a plain per-token loop (one row at a time).

    Walks both sides' tokens in text order, always advancing the side that has consumed fewer
    bytes; when both have consumed the same number of bytes, the tokens taken since the last such
    point form a span. Kept as the readable specification and the benchmark baseline.
    Returns span_ids_a int32 [B, T_a], span_ids_b int32 [B, T_b], num_spans int32 [B].
    """
    lengths_a = np.where(mask_a, byte_lengths_a, 0)
    lengths_b = np.where(mask_b, byte_lengths_b, 0)
    span_a = np.full(lengths_a.shape, -1, np.int32)
    span_b = np.full(lengths_b.shape, -1, np.int32)
    num_spans = np.zeros(lengths_a.shape[0], np.int32)
    for row in range(lengths_a.shape[0]):
        tokens_a = [int(t) for t in np.flatnonzero(lengths_a[row] > 0)]
        tokens_b = [int(t) for t in np.flatnonzero(lengths_b[row] > 0)]
        i = j = used_a = used_b = 0
        pending_a: list[int] = []
        pending_b: list[int] = []
        span = 0
        while i < len(tokens_a) or j < len(tokens_b):
            take_a = j == len(tokens_b) or (i < len(tokens_a) and used_a <= used_b)
            if take_a:
                used_a += int(lengths_a[row, tokens_a[i]])
                pending_a.append(tokens_a[i])
                i += 1
            else:
                used_b += int(lengths_b[row, tokens_b[j]])
                pending_b.append(tokens_b[j])
                j += 1
            if used_a == used_b and pending_a and pending_b:
                span_a[row, pending_a] = span
                span_b[row, pending_b] = span
                span += 1
                pending_a, pending_b = [], []
        num_spans[row] = span
    return span_a, span_b, num_spans


@dataclass(frozen=True)
class ByteMismatch:
    """A stretch where the two sides hold different bytes (row, byte offsets on each side)."""

    row: int
    start_a: int
    end_a: int
    start_b: int
    end_b: int
    bytes_a: bytes
    bytes_b: bytes

    def __str__(self) -> str:
        return (
            f"row {self.row}: side a bytes {self.start_a}:{self.end_a} {self.bytes_a!r} "
            f"!= side b bytes {self.start_b}:{self.end_b} {self.bytes_b!r}"
        )


@dataclass
class TextAlignment:
    """Host-side alignment of a batch, with the tokens, their bytes and every byte mismatch.

    ids_*, mask_*, byte_lengths_* : [B, T_*] numpy (int32, bool, int32): the padded tokens and the
        bytes of text each one covers (dummy-prefix spaces removed).
    spans: a :class:`SpanAlignment` of numpy arrays. Where the sides hold different bytes the
        alignment runs in a merged byte coordinate (see ``_merge_coordinates``); every span that
        contains differing bytes is marked in ``exact_spans``. Its byte counts are real side-a
        bytes; ``bytes_match`` is False for a row whose two sides hold different bytes.
    exact_spans: bool [B, S] with S = min(T_a, T_b): span holds identical bytes on both sides.
    mismatches: every stretch of differing bytes, all rows.
    equal_bytes: int [B] bytes both sides hold identically; exact_bytes: int [B] bytes in exact spans.
    """

    ids_a: np.ndarray
    mask_a: np.ndarray
    byte_lengths_a: np.ndarray
    ids_b: np.ndarray
    mask_b: np.ndarray
    byte_lengths_b: np.ndarray
    spans: SpanAlignment
    exact_spans: np.ndarray
    equal_bytes: np.ndarray
    exact_bytes: np.ndarray
    mismatches: list[ByteMismatch] = field(default_factory=list)

    @property
    def aligned_byte_fraction(self) -> np.ndarray:
        """float [B]: of the bytes both sides hold identically, the fraction inside exact spans
        (1.0 for a row with no such bytes: nothing was left unaligned)."""
        return np.where(self.equal_bytes > 0, self.exact_bytes / np.maximum(self.equal_bytes, 1), 1.0)

    @property
    def num_span_slots(self) -> int:
        return self.exact_spans.shape[1]

    def report(self) -> str:
        """One line per mismatch ('' when both sides hold the same bytes everywhere)."""
        return "\n".join(str(m) for m in self.mismatches)


def _common_prefix_length(a: bytes, b: bytes, start_a: int, start_b: int) -> int:
    """Length of the longest common prefix of a[start_a:] and b[start_b:] (binary search)."""
    low, high = 0, min(len(a) - start_a, len(b) - start_b)
    while low < high:
        middle = (low + high + 1) // 2
        if a[start_a : start_a + middle] == b[start_b : start_b + middle]:
            low = middle
        else:
            high = middle - 1
    return low


def _byte_diff(
    a: bytes, b: bytes, resync_bytes: int = 8, max_skip: int = 256
) -> list[tuple[bool, int, int, int, int]]:
    """Cut a and b into alternating equal / differing stretches: (equal, i1, i2, j1, j2).

    Local normaliser changes (NFC), unknown tokens and truncation give short differing stretches
    between long equal ones, so after each difference we look for the nearest point (smallest
    skip on both sides together, at most ``max_skip``) where ``resync_bytes`` bytes agree again (or
    both remainders agree). Without one, everything left is one differing stretch. Linear time in
    practice, unlike a general diff on a 256-letter alphabet.
    """
    pieces: list[tuple[bool, int, int, int, int]] = []
    i = j = 0
    while i < len(a) or j < len(b):
        same = _common_prefix_length(a, b, i, j)
        if same:
            pieces.append((True, i, i + same, j, j + same))
            i, j = i + same, j + same
            continue
        # The nearest resync point: for each skip on side a, the first place on side b where the
        # next `resync_bytes` bytes agree; near the end, both remainders must agree.
        best = (len(a), len(b))
        for ri in range(i, min(i + max_skip, len(a)) + 1):
            if ri - i >= best[0] - i + best[1] - j:
                break
            window = a[ri : ri + resync_bytes]
            if len(window) == resync_bytes:
                rj = b.find(window, j, j + max_skip + resync_bytes)
            else:
                rj = len(b) - len(window) if b.endswith(window) else -1
            if rj >= j and (ri - i) + (rj - j) < (best[0] - i) + (best[1] - j):
                best = (ri, rj)
        pieces.append((False, i, best[0], j, best[1]))
        i, j = best
    return pieces


def _merge_coordinates(
    pieces: list[tuple[bool, int, int, int, int]], ends: np.ndarray, side: int
) -> np.ndarray:
    """Map byte end offsets of one side into a merged coordinate both sides share.

    Equal stretches keep their length; a differing stretch (La bytes on side a, Lb on side b)
    takes La + Lb merged units: side a's offsets inside it map into its first La units and side b's
    into the last Lb, so no end *inside* a difference can coincide with one on the other side,
    while the stretch's two ends map to the same point on both sides. Tokens touching a difference
    therefore merge into one (inexact) span and alignment resumes right after it.
    ends: int [T] non-decreasing offsets on this side; side: 0 for a, 1 for b. Returns int64 [T].
    """
    starts_here = np.array([p[1 + 2 * side] for p in pieces], np.int64)
    ends_here = np.array([p[2 + 2 * side] for p in pieces], np.int64)
    sizes = np.array([(p[2] - p[1]) if p[0] else (p[2] - p[1]) + (p[4] - p[3]) for p in pieces], np.int64)
    merged_start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    equal = np.array([p[0] for p in pieces], bool)
    size_a = np.array([p[2] - p[1] for p in pieces], np.int64)
    # The earliest stretch that contains the offset (first one whose end is >= offset).
    k = np.minimum(np.searchsorted(ends_here, ends, side="left"), len(pieces) - 1)
    inside = ends - starts_here[k]
    at_end = ends == ends_here[k]
    shift_into_b = size_a[k] if side == 1 else 0
    differing = np.where(
        ends == starts_here[k], 0, np.where(at_end, sizes[k], inside + shift_into_b)
    )
    return merged_start[k] + np.where(equal[k], inside, differing)


def _pad(rows: Sequence[np.ndarray], width: int, dtype) -> np.ndarray:
    out = np.zeros((len(rows), width), dtype)
    for r, row in enumerate(rows):
        out[r, : len(row)] = row[:width]
    return out


def _align_rows(
    ids_a: Sequence[Sequence[int]],
    lengths_a: Sequence[np.ndarray],
    held_a: Sequence[bytes],
    ids_b: Sequence[Sequence[int]],
    lengths_b: Sequence[np.ndarray],
    held_b: Sequence[bytes],
    width_a: int | None,
    width_b: int | None,
) -> TextAlignment:
    """Pad both sides, diff their bytes per row, and align (merged coordinates where they differ)."""
    width_a = width_a or max([len(r) for r in ids_a] + [1])
    width_b = width_b or max([len(r) for r in ids_b] + [1])
    batch = len(ids_a)
    mask_a = _pad([np.ones(len(r), bool) for r in ids_a], width_a, bool)
    mask_b = _pad([np.ones(len(r), bool) for r in ids_b], width_b, bool)
    real_a = _pad(lengths_a, width_a, np.int32)
    real_b = _pad(lengths_b, width_b, np.int32)
    merged_a, merged_b = real_a.astype(np.int64), real_b.astype(np.int64)
    mismatches: list[ByteMismatch] = []
    differing_regions: list[list[tuple[int, int]]] = []  # per row: merged [start, end) of differences
    equal_bytes = np.zeros(batch, np.int64)
    for row in range(batch):
        a, b = held_a[row], held_b[row]
        if a == b:
            equal_bytes[row] = len(a)
            differing_regions.append([])
            continue
        pieces = _byte_diff(a, b)
        equal_bytes[row] = sum(p[2] - p[1] for p in pieces if p[0])
        ends_a = np.cumsum(real_a[row] * mask_a[row])
        ends_b = np.cumsum(real_b[row] * mask_b[row])
        merged_ends_a = _merge_coordinates(pieces, ends_a, side=0)
        merged_ends_b = _merge_coordinates(pieces, ends_b, side=1)
        merged_a[row] = np.diff(merged_ends_a, prepend=0)
        merged_b[row] = np.diff(merged_ends_b, prepend=0)
        offset, regions = 0, []
        for equal, i1, i2, j1, j2 in pieces:
            size = (i2 - i1) if equal else (i2 - i1) + (j2 - j1)
            if not equal:
                regions.append((offset, offset + size))
                mismatches.append(ByteMismatch(row, i1, i2, j1, j2, a[i1:i2], b[j1:j2]))
            offset += size
        differing_regions.append(regions)

    spans = _align_spans_bucketed(merged_a.astype(np.int32), mask_a, merged_b.astype(np.int32), mask_b)
    # Span bookkeeping on the host, in numpy (eager jnp ops would compile one kernel each).
    capacity = max(1, min(width_a, width_b))
    in_span = spans.span_ids_a >= 0
    flat_span = (spans.span_ids_a + np.arange(batch)[:, None] * capacity)[in_span]
    span_ends = np.zeros(batch * capacity, np.int64)
    np.maximum.at(span_ends, flat_span, np.cumsum(merged_a * mask_a, axis=1)[in_span])
    span_ends = span_ends.reshape(batch, capacity)  # merged offset where each span ends
    span_starts = np.concatenate([np.zeros((batch, 1), np.int64), span_ends[:, :-1]], axis=1)
    span_bytes = np.bincount(flat_span, (real_a * mask_a)[in_span], minlength=batch * capacity)
    span_bytes = span_bytes.reshape(batch, capacity).astype(np.int64)  # real side-a bytes per span
    real_span = np.arange(capacity)[None, :] < spans.num_spans[:, None]
    exact = real_span.copy()
    for row, regions in enumerate(differing_regions):
        for start, end in regions:
            exact[row] &= ~((span_starts[row] < end) & (span_ends[row] > start))
    exact_bytes = (span_bytes * exact).sum(axis=1)
    # Report totals in real bytes (the merged coordinate only served to find the boundaries).
    total_a = (real_a * mask_a).sum(axis=1).astype(np.int32)
    total_b = (real_b * mask_b).sum(axis=1).astype(np.int32)
    same_bytes = np.array([held_a[r] == held_b[r] for r in range(batch)], bool)
    aligned = (span_bytes * real_span).sum(axis=1).astype(np.int32)
    spans = spans._replace(
        aligned_bytes=aligned,
        total_bytes_a=total_a,
        total_bytes_b=total_b,
        bytes_match=same_bytes,
        fully_aligned=same_bytes & (aligned == total_a),
    )
    return TextAlignment(
        ids_a=_pad([np.asarray(r, np.int32) for r in ids_a], width_a, np.int32),
        mask_a=mask_a,
        byte_lengths_a=real_a,
        ids_b=_pad([np.asarray(r, np.int32) for r in ids_b], width_b, np.int32),
        mask_b=mask_b,
        byte_lengths_b=real_b,
        spans=spans,
        exact_spans=exact,
        equal_bytes=equal_bytes,
        exact_bytes=exact_bytes,
        mismatches=mismatches,
    )


_align_spans_jit = jax.jit(align_spans)


def _bucket(n: int, smallest: int) -> int:
    """Smallest power of two >= n (at least ``smallest``)."""
    return max(smallest, 1 << (max(n, 1) - 1).bit_length())


def _align_spans_bucketed(lengths_a: np.ndarray, mask_a: np.ndarray, lengths_b: np.ndarray,
                          mask_b: np.ndarray) -> SpanAlignment:
    """:func:`align_spans` on host arrays, padded to power-of-two rows and widths so the jitted
    program is compiled once per bucket, not once per batch shape (every compiled program keeps its
    code mapped: thousands of shapes exhaust the process's memory maps). Padding is masked, so it
    holds no bytes and ends no span; the result is cut back to the input's shape."""
    batch, width_a = lengths_a.shape
    width_b = lengths_b.shape[1]
    rows = _bucket(batch, 8)

    def pad(x, width):
        return np.pad(x, ((0, rows - x.shape[0]), (0, width - x.shape[1])))

    wa, wb = _bucket(width_a, 16), _bucket(width_b, 16)
    spans = jax.device_get(_align_spans_jit(pad(lengths_a, wa), pad(mask_a, wa), pad(lengths_b, wb), pad(mask_b, wb)))
    return SpanAlignment(*(x[:batch] for x in spans))._replace(
        span_ids_a=spans.span_ids_a[:batch, :width_a], span_ids_b=spans.span_ids_b[:batch, :width_b])


def _held_bytes(tokenizer: "Tokenizer", ids: Sequence[int], lengths: np.ndarray) -> bytes:
    """The bytes a row of tokens holds: each token's last ``length`` vocabulary bytes."""
    pieces = tokenizer.bytes_of(ids)
    return b"".join(p[len(p) - int(n) :] for p, n in zip(pieces, lengths))


def _encode_side(
    tokenizer: "Tokenizer", texts: Sequence[str], add_special_tokens: bool, max_length: int | None
) -> tuple[list[list[int]], list[np.ndarray], list[bytes]]:
    ids, lengths, held = [], [], []
    for text in texts:
        row_ids, row_lengths = tokenizer.encode_with_byte_lengths(text, add_special_tokens)
        row_ids, row_lengths = row_ids[:max_length], row_lengths[:max_length]
        ids.append(row_ids)
        lengths.append(row_lengths)
        held.append(_held_bytes(tokenizer, row_ids, row_lengths))
    return ids, lengths, held


def align_texts(
    tokenizer_a: "Tokenizer",
    tokenizer_b: "Tokenizer",
    texts: Sequence[str],
    *,
    add_special_tokens_a: bool = False,
    add_special_tokens_b: bool = False,
    max_length_a: int | None = None,
    max_length_b: int | None = None,
) -> TextAlignment:
    """Tokenize each text with both tokenizers and align the two tokenizations.

    ``max_length_*`` truncates that side to at most that many tokens and pads it to exactly that
    width (stable shapes for jit); otherwise rows are padded to the longest. Check
    ``result.mismatches`` (or ``result.report()``): normalisers change bytes (Qwen: NFC).
    """
    ids_a, lengths_a, held_a = _encode_side(tokenizer_a, texts, add_special_tokens_a, max_length_a)
    ids_b, lengths_b, held_b = _encode_side(tokenizer_b, texts, add_special_tokens_b, max_length_b)
    return _align_rows(ids_a, lengths_a, held_a, ids_b, lengths_b, held_b, max_length_a, max_length_b)


def align_token_ids(
    tokenizer_a: "Tokenizer",
    ids_a: Sequence[Sequence[int]],
    tokenizer_b: "Tokenizer",
    ids_b: Sequence[Sequence[int]],
) -> TextAlignment:
    """Align given token-id rows (e.g. sampled completions); bytes come from each vocabulary."""
    if len(ids_a) != len(ids_b):
        raise ValueError(f"batch sizes differ: {len(ids_a)} rows on side a, {len(ids_b)} on side b")
    lengths_a = [tokenizer_a.token_byte_lengths[np.asarray(r, np.int64)] for r in ids_a]
    lengths_b = [tokenizer_b.token_byte_lengths[np.asarray(r, np.int64)] for r in ids_b]
    held_a = [_held_bytes(tokenizer_a, r, n) for r, n in zip(ids_a, lengths_a)]
    held_b = [_held_bytes(tokenizer_b, r, n) for r, n in zip(ids_b, lengths_b)]
    return _align_rows(ids_a, lengths_a, held_a, ids_b, lengths_b, held_b, None, None)


def align_retokenized(
    tokenizer_a: "Tokenizer",
    ids_a: Sequence[Sequence[int]],
    tokenizer_b: "Tokenizer",
    *,
    max_length_b: int | None = None,
    min_widths: tuple[int, int] | None = None,
) -> TextAlignment:
    """Re-tokenize side-a token rows with tokenizer b and align: the calibration reward's path.

    The teacher's sampled completion ``ids_a`` becomes text (its vocabulary bytes, decoded as UTF-8
    with U+FFFD for broken sequences, e.g. a truncated emoji), which the proxy tokenizer encodes.
    Any byte change on the way (replacement characters, the proxy's normaliser) is reported.
    ``min_widths``: pad sides a and b to at least these many tokens (fixed shapes, one compile).
    """
    lengths_a = [tokenizer_a.token_byte_lengths[np.asarray(r, np.int64)] for r in ids_a]
    held_a = [_held_bytes(tokenizer_a, r, n) for r, n in zip(ids_a, lengths_a)]
    texts = [h.decode("utf-8", errors="replace") for h in held_a]
    ids_b, lengths_b, held_b = _encode_side(tokenizer_b, texts, False, max_length_b)
    width_a, width_b = None, max_length_b
    if min_widths is not None:
        width_a = max([min_widths[0]] + [len(r) for r in ids_a])
        width_b = max([min_widths[1], max_length_b or 0] + [len(r) for r in ids_b])
    return _align_rows(ids_a, lengths_a, held_a, ids_b, lengths_b, held_b, width_a, width_b)
