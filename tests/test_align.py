"""Cross-tokenizer span alignment: random segmentations against a two-pointer loop, properties,
real tokenizers (Qwen3 vs Llama-3 / GPT-2 / Mistral), and the calibration reward built on it."""

import importlib.util
import unicodedata

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill.align import (
    align_retokenized,
    align_spans,
    align_spans_loop,
    align_texts,
    align_token_ids,
    span_logprobs,
    span_mask,
)
from jaxdistill.rl.calibration import (
    binary_kl_from_logprobs,
    calibration_metrics,
    sequence_calibration_reward,
    smooth_abs,
    span_calibration_reward,
)
from jaxdistill.tokenizer import load_tokenizer

align_jit = jax.jit(align_spans)
# jit once per shape: eager op-by-op gradients are slow on a shared 2-core machine
reward_jit = jax.jit(span_calibration_reward, static_argnames=("gap", "delta", "tau"))
WIDTH = 48  # tokens per side in the random batches


# ---------------------------------------------------------------------------------------------
# Random segmentations of the same byte string, with zero-length tokens, padding and truncation.
# ---------------------------------------------------------------------------------------------
def _random_side(rng, num_bytes, width, truncate):
    """One side's tokens of a num_bytes-long text: (lengths [width], mask [width])."""
    max_cuts = max(0, min(num_bytes - 1, width // 2))
    cuts = np.array([], int)
    if num_bytes > 1:
        cuts = np.sort(rng.choice(np.arange(1, num_bytes), size=rng.integers(0, max_cuts + 1), replace=False))
    lengths = list(np.diff(np.concatenate([[0], cuts, [num_bytes]]))) if num_bytes else []
    for _ in range(rng.integers(0, width // 6)):  # zero-length tokens (BOS, chat markers)
        lengths.insert(int(rng.integers(0, len(lengths) + 1)), 0)
    if truncate and lengths:
        lengths = lengths[: int(rng.integers(0, len(lengths)))]
    lengths = lengths[:width]
    row = rng.integers(1, 6, size=width)  # padding slots hold garbage: the mask must hide it
    mask = np.zeros(width, bool)
    left_pad = int(rng.integers(0, width - len(lengths) + 1)) if rng.random() < 0.3 else 0
    row[left_pad : left_pad + len(lengths)] = lengths
    mask[left_pad : left_pad + len(lengths)] = True
    return row.astype(np.int32), mask


def random_batch(seed, batch, width=WIDTH):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(batch):
        num_bytes = int(rng.integers(0, 3 * width))
        truncated_side = rng.integers(0, 4)  # 0: a truncated, 1: b truncated, else neither
        rows.append(
            _random_side(rng, num_bytes, width, truncated_side == 0)
            + _random_side(rng, num_bytes, width, truncated_side == 1)
        )
    lengths_a, mask_a, lengths_b, mask_b = (np.stack(x) for x in zip(*rows))
    return lengths_a, mask_a, lengths_b, mask_b


def two_pointer_spans(lengths_a, mask_a, lengths_b, mask_b):
    """Reference for one row: grow a span on both sides until their byte ends meet."""
    tokens_a = [t for t in range(len(lengths_a)) if mask_a[t] and lengths_a[t] > 0]
    tokens_b = [t for t in range(len(lengths_b)) if mask_b[t] and lengths_b[t] > 0]
    span_a = [-1] * len(lengths_a)
    span_b = [-1] * len(lengths_b)
    i = j = 0
    span = 0
    start = 0
    while i < len(tokens_a) and j < len(tokens_b):
        members_a, members_b = [tokens_a[i]], [tokens_b[j]]
        end_a, end_b = start + lengths_a[tokens_a[i]], start + lengths_b[tokens_b[j]]
        while end_a != end_b:
            if end_a < end_b:
                i += 1
                if i == len(tokens_a):
                    break
                members_a.append(tokens_a[i])
                end_a += lengths_a[tokens_a[i]]
            else:
                j += 1
                if j == len(tokens_b):
                    break
                members_b.append(tokens_b[j])
                end_b += lengths_b[tokens_b[j]]
        if end_a != end_b:
            break  # ran out of tokens on one side: the tail belongs to no span
        for t in members_a:
            span_a[t] = span
        for t in members_b:
            span_b[t] = span
        span, start, i, j = span + 1, end_a, i + 1, j + 1
    return span_a, span_b, span


@pytest.fixture(scope="module")
def random_rows():
    batch = random_batch(seed=0, batch=1200)
    return batch, jax.device_get(align_jit(*batch))


def test_vectorised_equals_two_pointer_loop_on_1200_random_segmentations(random_rows):
    (lengths_a, mask_a, lengths_b, mask_b), result = random_rows
    zero_length_tokens = truncated_rows = padded_rows = 0
    for row in range(lengths_a.shape[0]):
        span_a, span_b, count = two_pointer_spans(lengths_a[row], mask_a[row], lengths_b[row], mask_b[row])
        assert result.span_ids_a[row].tolist() == span_a, row
        assert result.span_ids_b[row].tolist() == span_b, row
        assert result.num_spans[row] == count, row
        zero_length_tokens += int((mask_a[row] & (lengths_a[row] == 0)).sum())
        truncated_rows += int(not result.bytes_match[row])
        padded_rows += int(not mask_a[row].all())
    # The batch really exercises the hard cases.
    assert zero_length_tokens > 500 and truncated_rows > 200 and padded_rows > 1000


def test_library_loop_matches_vectorised(random_rows):
    batch, result = random_rows
    span_a, span_b, num_spans = align_spans_loop(*(x[:300] for x in batch))
    np.testing.assert_array_equal(span_a, result.span_ids_a[:300])
    np.testing.assert_array_equal(span_b, result.span_ids_b[:300])
    np.testing.assert_array_equal(num_spans, result.num_spans[:300])


def _token_ranges(lengths, mask):
    ends = np.cumsum(np.where(mask, lengths, 0), axis=-1)
    return ends - np.where(mask, lengths, 0), ends


def test_spans_cover_identical_bytes_and_are_contiguous_and_minimal(random_rows):
    (lengths_a, mask_a, lengths_b, mask_b), result = random_rows
    starts_a, ends_a = _token_ranges(lengths_a, mask_a)
    starts_b, ends_b = _token_ranges(lengths_b, mask_b)
    for row in range(0, lengths_a.shape[0], 3):
        previous_end = 0
        for span in range(result.num_spans[row]):
            in_a = result.span_ids_a[row] == span
            in_b = result.span_ids_b[row] == span
            assert in_a.any() and in_b.any()
            # identical byte range on both sides, starting where the previous span ended
            assert starts_a[row][in_a].min() == starts_b[row][in_b].min() == previous_end
            assert ends_a[row][in_a].max() == ends_b[row][in_b].max()
            previous_end = ends_a[row][in_a].max()
            # minimal: no token end strictly inside the span is shared by both sides
            inner_a = set(ends_a[row][in_a].tolist()) - {previous_end}
            inner_b = set(ends_b[row][in_b].tolist()) - {previous_end}
            assert not inner_a & inner_b
        assert previous_end == result.aligned_bytes[row]
        # span ids of valid tokens never decrease along the row (contiguous spans)
        ids = result.span_ids_a[row][result.span_ids_a[row] >= 0]
        assert (np.diff(ids) >= 0).all()


def test_swapping_sides_swaps_the_spans(random_rows):
    (lengths_a, mask_a, lengths_b, mask_b), result = random_rows
    swapped = jax.device_get(align_jit(lengths_b, mask_b, lengths_a, mask_a))
    np.testing.assert_array_equal(swapped.span_ids_a, result.span_ids_b)
    np.testing.assert_array_equal(swapped.span_ids_b, result.span_ids_a)
    np.testing.assert_array_equal(swapped.num_spans, result.num_spans)


def test_span_sums_conserve_the_aligned_token_total(random_rows):
    (lengths_a, mask_a, lengths_b, mask_b), result = random_rows
    rng = np.random.default_rng(1)
    logprobs = rng.normal(-2.0, 1.0, size=lengths_a.shape).astype(np.float32)
    sums = jax.jit(span_logprobs, static_argnums=2)(logprobs, result.span_ids_a, WIDTH)
    aligned = np.where(result.span_ids_a >= 0, logprobs, 0.0).sum(axis=1)
    np.testing.assert_allclose(np.asarray(sums).sum(axis=1), aligned, rtol=1e-5, atol=1e-4)
    # empty span slots are exactly zero
    assert (np.asarray(sums)[~np.asarray(span_mask(result.num_spans, WIDTH))] == 0).all()


def test_identical_tokenizations_make_every_token_its_own_span():
    lengths, mask, _, _ = random_batch(seed=2, batch=64)
    result = align_jit(lengths, mask, lengths, mask)
    holds_bytes = mask & (lengths > 0)
    expected = np.where(holds_bytes, np.cumsum(holds_bytes, axis=1) - 1, -1)
    np.testing.assert_array_equal(result.span_ids_a, expected)
    np.testing.assert_array_equal(result.span_ids_b, expected)
    logprobs = np.random.default_rng(3).normal(size=lengths.shape).astype(np.float32)
    sums = np.asarray(span_logprobs(logprobs, result.span_ids_a, WIDTH))
    for row in range(lengths.shape[0]):
        np.testing.assert_allclose(sums[row, : holds_bytes[row].sum()], logprobs[row][holds_bytes[row]])


def test_a_refinement_gives_the_coarser_tokens_as_spans():
    coarse = np.array([[3, 1, 4, 2, 0, 0], [5, 1, 0, 0, 0, 0]], np.int32)
    coarse_mask = coarse > 0
    fine = np.zeros((2, 16), np.int32)  # byte-level: one token per byte
    fine_mask = np.zeros((2, 16), bool)
    for row in range(2):
        n = coarse[row].sum()
        fine[row, :n], fine_mask[row, :n] = 1, True
    result = align_jit(fine, fine_mask, coarse, coarse_mask)
    np.testing.assert_array_equal(result.span_ids_b, np.where(coarse_mask, np.arange(6), -1))
    expected_fine = [np.repeat(np.arange(4), [3, 1, 4, 2]), np.repeat(np.arange(2), [5, 1])]
    for row in range(2):
        np.testing.assert_array_equal(result.span_ids_a[row][fine_mask[row]], expected_fine[row])
    np.testing.assert_array_equal(result.num_spans, [4, 2])
    assert np.asarray(result.fully_aligned).all()


def test_truncated_side_leaves_tail_unaligned_and_is_flagged():
    a = np.array([[2, 2, 2, 2]], np.int32)
    b = np.array([[4, 3, 0, 0]], np.int32)  # b stops at byte 7 of 8
    result = align_jit(a, a > 0, b, b > 0)
    np.testing.assert_array_equal(result.span_ids_a, [[0, 0, -1, -1]])
    np.testing.assert_array_equal(result.span_ids_b, [[0, -1, -1, -1]])
    assert not result.bytes_match[0] and not result.fully_aligned[0]
    assert result.aligned_bytes[0] == 4 and result.total_bytes_b[0] == 7


# ---------------------------------------------------------------------------------------------
# Real tokenizers.
# ---------------------------------------------------------------------------------------------
PARAGRAPH = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May? Natalia sold 48/2 = 24 clips in "
    "May. Natalia sold 48+24 = 72 clips altogether in April and May. #### 72\n"
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. "
    "How much did she earn? Weng earns 12/60 = $0.2 per minute. Working 50 minutes, she earned "
    "0.2 x 50 = $10. #### 10\n"
)
FEATURES = {
    "emoji": "Great job! 😀🎉 The answer is 👍🏽 right, 🧑‍💻 coding. ",
    "cjk": "日本語のテキストと中文文本，还有한국어 문장도 있습니다。",
    "decomposed_accent": "The cafe\u0301 was open. ",  # Qwen's NFC normaliser composes it
    "tabs_newlines": "col1\tcol2\t\tcol3\n\n\n  indented\r\n\tline\n",
    "long_digits": "The number 31415926535897932384626433832795028841971 is long; so is 1000000000000. ",
}
TEXTS = [PARAGRAPH + snippet + PARAGRAPH + snippet for snippet in FEATURES.values()]
OTHER_TOKENIZERS = ["llama3", "gpt2", "mistral/v1"]


def _tokenizer(shared_dir, name):
    if name.startswith("mistral") and importlib.util.find_spec("sentencepiece") is None:
        pytest.skip("the SentencePiece tokenizer.model needs the 'sentencepiece' package")
    return load_tokenizer(shared_dir / "tokenizers" / name)


def _span_bytes(held, lengths, mask, span_ids, span):
    starts, ends = _token_ranges(lengths, mask)
    members = span_ids == span
    return held[starts[members].min() : ends[members].max()]


def _held(tokenizer, ids, lengths):
    return b"".join(p[len(p) - int(n) :] for p, n in zip(tokenizer.bytes_of(ids), lengths))


@pytest.mark.parametrize("other", OTHER_TOKENIZERS)
def test_real_tokenizers_align_99_percent_and_report_every_mismatch(shared_dir, other):
    qwen = _tokenizer(shared_dir, "qwen3")
    tokenizer_b = _tokenizer(shared_dir, other)
    # BOS on one side only: Mistral adds <s> itself; for the others prepend the BOS id by hand.
    alignment = align_texts(qwen, tokenizer_b, TEXTS, add_special_tokens_b=other.startswith("mistral"))
    if not other.startswith("mistral"):
        bos = tokenizer_b.bos_id
        ids_b = [[bos] + row[mask].tolist() for row, mask in zip(alignment.ids_b, alignment.mask_b)]
        alignment = align_token_ids(
            qwen, [row[mask].tolist() for row, mask in zip(alignment.ids_a, alignment.mask_a)], tokenizer_b, ids_b
        )
    assert (alignment.aligned_byte_fraction >= 0.99).all(), alignment.aligned_byte_fraction

    for row, text in enumerate(TEXTS):
        mask_a, mask_b = alignment.mask_a[row], alignment.mask_b[row]
        held_a = _held(qwen, alignment.ids_a[row][mask_a], alignment.byte_lengths_a[row][mask_a])
        held_b = _held(tokenizer_b, alignment.ids_b[row][mask_b], alignment.byte_lengths_b[row][mask_b])
        assert held_b == text.encode()  # the other tokenizers keep the text's bytes
        # Every difference is reported: patching the reported stretches turns b's bytes into a's.
        patched, cursor = b"", 0
        for mismatch in (m for m in alignment.mismatches if m.row == row):
            assert mismatch.bytes_a != mismatch.bytes_b
            patched += held_b[cursor : mismatch.start_b] + mismatch.bytes_a
            cursor = mismatch.end_b
        assert patched + held_b[cursor:] == held_a
        # Exact spans hold identical bytes on both sides.
        spans = alignment.spans
        for span in np.flatnonzero(alignment.exact_spans[row]):
            bytes_a = _span_bytes(held_a, alignment.byte_lengths_a[row], mask_a, spans.span_ids_a[row], span)
            bytes_b = _span_bytes(held_b, alignment.byte_lengths_b[row], mask_b, spans.span_ids_b[row], span)
            assert bytes_a == bytes_b
        # The BOS holds no bytes and belongs to no span.
        assert alignment.byte_lengths_b[row][0] == 0 and spans.span_ids_b[row][0] == -1

    # Qwen's NFC normaliser composes the decomposed accent: reported, not silently misaligned.
    accent_row = list(FEATURES).index("decomposed_accent")
    reported = [(m.bytes_a, m.bytes_b) for m in alignment.mismatches if m.row == accent_row]
    assert reported == [("é".encode(), "e\u0301".encode())] * 2
    assert not alignment.spans.bytes_match[accent_row]
    assert all(m.row == accent_row for m in alignment.mismatches)  # other texts: identical bytes
    assert alignment.spans.fully_aligned.sum() == len(TEXTS) - 1


def test_dense_normaliser_changes_are_reported_and_alignment_resumes_after_them(shared_dir):
    qwen = _tokenizer(shared_dir, "qwen3")
    llama = _tokenizer(shared_dir, "llama3")
    text = "Dessert: cre\u0300me bru\u0302le\u0301e for Zoe\u0308 and Rene\u0301e. " + PARAGRAPH
    alignment = align_texts(qwen, llama, [text])
    composed = text.encode()
    assert b"".join(m.bytes_b for m in alignment.mismatches) != b""
    for mismatch in alignment.mismatches:  # each reported stretch is where the bytes differ
        assert composed[mismatch.start_b : mismatch.end_b] == mismatch.bytes_b
        assert mismatch.bytes_a.decode() == unicodedata.normalize("NFC", mismatch.bytes_b.decode())
    last_mismatch_end = max(m.end_a for m in alignment.mismatches)
    # after the last difference every span is exact again, up to the end of the text
    spans = alignment.spans
    ends = np.cumsum(alignment.byte_lengths_a[0])
    first_span_after = spans.span_ids_a[0][np.argmax(ends - alignment.byte_lengths_a[0] >= last_mismatch_end + 8)]
    assert alignment.exact_spans[0][first_span_after : spans.num_spans[0]].all()
    assert spans.aligned_bytes[0] == spans.total_bytes_a[0]


def test_retokenized_completion_with_a_broken_character_is_reported(shared_dir):
    qwen = _tokenizer(shared_dir, "qwen3")
    llama = _tokenizer(shared_dir, "llama3")
    whole = qwen.encode("Answer: 42 🎉")
    cut = qwen.encode("Answer: 42 ") + [qwen.token_bytes.index(b"\xf0\x9f")]  # stops inside an emoji
    alignment = align_retokenized(qwen, [whole, cut], llama)
    assert alignment.spans.fully_aligned.tolist() == [True, False]
    assert [m.row for m in alignment.mismatches] == [1]
    assert alignment.mismatches[0].bytes_a == b"\xf0\x9f"
    assert alignment.mismatches[0].bytes_b == "\ufffd".encode()  # what the proxy was given


# ---------------------------------------------------------------------------------------------
# The calibration reward.
# ---------------------------------------------------------------------------------------------
def _equal_span_logprobs(alignment, seed, width=WIDTH):
    """Token log-probs on both sides whose span sums agree (random split inside each span)."""
    rng = np.random.default_rng(seed)
    span_values = rng.uniform(-20.0, 0.0, size=(alignment.span_ids_a.shape[0], width))

    def split(span_ids):
        weights = rng.uniform(0.1, 1.0, size=span_ids.shape)
        totals = np.zeros_like(span_values)
        rows = np.arange(span_ids.shape[0])[:, None]
        in_span = span_ids >= 0
        np.add.at(totals, (np.broadcast_to(rows, span_ids.shape)[in_span], span_ids[in_span]), weights[in_span])
        share = weights / np.maximum(np.take_along_axis(totals, np.maximum(span_ids, 0), axis=1), 1e-9)
        values = share * np.take_along_axis(span_values, np.maximum(span_ids, 0), axis=1)
        # tokens in no span get arbitrary log-probs: they must not matter
        return np.where(span_ids >= 0, values, rng.uniform(-30, 0, size=span_ids.shape)).astype(np.float32)

    return split(np.asarray(alignment.span_ids_a)), split(np.asarray(alignment.span_ids_b))


@pytest.mark.parametrize("gap", ["abs", "alm"])
def test_span_reward_is_zero_with_zero_gradient_when_span_probabilities_agree(random_rows, gap):
    _, result = random_rows
    alignment = jax.tree.map(lambda x: x[:256], result)
    teacher, proxy = _equal_span_logprobs(alignment, seed=4)

    def total_reward(teacher, proxy):
        return reward_jit(teacher, proxy, alignment, gap=gap).reward.sum()

    out = reward_jit(teacher, proxy, alignment, gap=gap)
    np.testing.assert_allclose(out.reward, 0.0, atol=1e-4)
    np.testing.assert_allclose(out.token_rewards, 0.0, atol=1e-4)
    grads = jax.grad(total_reward, argnums=(0, 1))(teacher, proxy)
    for grad in grads:
        assert np.isfinite(grad).all()
        np.testing.assert_allclose(grad, 0.0, atol=0.05)  # float32 span sums: tiny residual gaps
    # the same tokens on both sides: exactly zero, gradient included
    alignment = alignment._replace(span_ids_b=alignment.span_ids_a)
    assert float(jnp.abs(reward_jit(teacher, teacher, alignment, gap=gap).reward).max()) == 0.0
    for grad in jax.grad(total_reward, argnums=(0, 1))(teacher, teacher):
        # "abs": exactly 0; "alm": p - p from two terms, rounding leaves ~1e-7
        assert float(jnp.abs(grad).max()) <= (0.0 if gap == "abs" else 1e-6)


def test_smooth_abs_has_zero_gradient_at_zero_and_tracks_abs():
    value_and_grad = jax.jit(jax.value_and_grad(smooth_abs))
    assert [float(v) for v in value_and_grad(0.0)] == [0.0, 0.0]
    x = np.linspace(-50, 50, 101, dtype=np.float32)
    assert np.max(np.abs(np.asarray(jax.jit(smooth_abs)(x)) - np.abs(x))) <= 1.001e-3  # float32 rounding
    assert [float(v) for v in jax.jit(jax.value_and_grad(binary_kl_from_logprobs))(-3.0, -3.0)] == [0.0, 0.0]


@pytest.mark.parametrize("gap", ["abs", "alm"])
def test_span_reward_decreases_as_the_gap_grows(gap):
    one_span = align_jit(jnp.array([[2, 3]]), jnp.array([[True, True]]), jnp.array([[5]]), jnp.array([[True]]))
    teacher = jnp.array([[-1.0, -2.0]])  # span log-prob -3
    rewards = [
        float(reward_jit(teacher, jnp.array([[-3.0 - d]]), one_span, gap=gap).reward[0])
        for d in [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]
    ]
    assert rewards[0] == pytest.approx(0.0, abs=1e-6)
    assert all(later < earlier for earlier, later in zip(rewards, rewards[1:])), rewards
    if gap == "abs":
        assert rewards[-1] == pytest.approx(-8.0, abs=2e-3)


@pytest.mark.parametrize("gap", ["abs", "alm"])
def test_no_nan_or_inf_at_extreme_logprobs(gap):
    # teacher: three 1-byte tokens; proxy: a 1-byte and a 2-byte token -> spans {t0 | p0}, {t1 t2 | p1}
    alignment = align_jit(
        jnp.ones((4, 3), jnp.int32), jnp.ones((4, 3), bool), jnp.array([[1, 2]] * 4), jnp.ones((4, 2), bool)
    )
    extremes = [0.0, -1e4]
    teacher = jnp.array([[a, a, b] for a in extremes for b in extremes])
    proxy = jnp.array([[b, a] for a in extremes for b in extremes])[::-1]

    def total(teacher, proxy, tau=1.0):  # tau traced: one compilation for all temperatures
        out = span_calibration_reward(teacher, proxy, alignment, gap=gap, tau=tau)
        return out.reward.sum() + out.token_rewards.sum()

    value_and_grads = jax.jit(jax.value_and_grad(total, argnums=(0, 1)))
    for tau in (1.0, 0.1, 10.0):
        value, grads = value_and_grads(teacher, proxy, tau)
        assert np.isfinite(value) and all(np.isfinite(g).all() for g in grads)
    infinite = jnp.full_like(teacher, -jnp.inf)
    value, grads = value_and_grads(infinite, jnp.full_like(proxy, -jnp.inf), 1.0)
    assert np.isfinite(value) and all(np.isfinite(g).all() for g in grads)
    seq = sequence_calibration_reward(
        jnp.full((2, 3), -1e4), jnp.ones((2, 3), bool), jnp.array([3, 0]), jnp.zeros((2, 2)), jnp.ones((2, 2), bool)
    )
    assert np.isfinite(seq).all() and float(seq[1]) == 0.0


def test_dense_token_rewards_give_each_teacher_token_its_span_gap():
    # teacher tokens [2, 3 | 0-byte | 1], proxy [5 | 1]: spans {0: teacher 0-1, proxy 0}, {1: t 3, p 1}
    alignment = align_jit(
        jnp.array([[2, 3, 0, 1]]), jnp.ones((1, 4), bool), jnp.array([[5, 1]]), jnp.ones((1, 2), bool)
    )
    teacher = jnp.array([[-1.0, -1.0, -7.0, -0.5]])
    proxy = jnp.array([[-3.0, -0.5]])
    out = reward_jit(teacher, proxy, alignment, delta=1e-6)
    np.testing.assert_allclose(out.token_rewards, [[-1.0, -1.0, 0.0, 0.0]], atol=1e-5)
    np.testing.assert_allclose(out.reward, [-0.5], atol=1e-5)  # mean of gaps 1 and 0
    # leaving a span out through span_weights removes it from the mean and the dense reward
    out = reward_jit(teacher, proxy, alignment, span_weights=jnp.array([[False, True]]), delta=1e-6)
    np.testing.assert_allclose(out.reward, [0.0], atol=1e-5)
    np.testing.assert_allclose(out.token_rewards, 0.0, atol=1e-5)
    metrics = jax.jit(calibration_metrics)(alignment, out)
    assert float(metrics["calibration/aligned_byte_fraction"]) == 1.0
    assert float(metrics["calibration/mean_span_bytes"]) == 3.0
    assert float(metrics["calibration/span_gap"]) == pytest.approx(0.0, abs=1e-5)


def test_sequence_reward_is_proxy_logprob_per_byte_minus_reference():
    proxy = jnp.array([[-1.0, -2.0, -3.0, -100.0], [-4.0, 0.0, 0.0, 0.0]])
    proxy_mask = jnp.array([[True, True, True, False], [True, False, False, False]])
    num_bytes = jnp.array([12, 2])
    np.testing.assert_allclose(sequence_calibration_reward(proxy, proxy_mask, num_bytes), [-0.5, -2.0])
    reference = jnp.array([[-6.0, -6.0], [-1.0, -9.0]])
    reference_mask = jnp.array([[True, True], [True, False]])
    np.testing.assert_allclose(
        sequence_calibration_reward(proxy, proxy_mask, num_bytes, reference, reference_mask), [-0.5 + 1.0, -2.0 + 0.5]
    )
    with pytest.raises(ValueError, match="reference_mask"):
        sequence_calibration_reward(proxy, proxy_mask, num_bytes, reference)


def test_span_reward_on_real_tokenizers_is_jit_able_and_counts_only_exact_spans(shared_dir):
    qwen = _tokenizer(shared_dir, "qwen3")
    llama = _tokenizer(shared_dir, "llama3")
    alignment = align_texts(qwen, llama, TEXTS[1:3] + [FEATURES["decomposed_accent"]])
    rng = np.random.default_rng(5)
    teacher = rng.uniform(-5, 0, size=alignment.ids_a.shape).astype(np.float32)
    proxy = rng.uniform(-5, 0, size=alignment.ids_b.shape).astype(np.float32)
    out = reward_jit(teacher, proxy, jax.tree.map(jnp.asarray, alignment.spans), span_weights=alignment.exact_spans)
    assert np.isfinite(out.reward).all() and (np.asarray(out.reward) < 0).all()
    np.testing.assert_array_equal(out.counted, alignment.exact_spans)
    assert not alignment.exact_spans[2].all() and alignment.exact_spans[2].sum() > 0


def test_host_alignment_compiles_once_per_bucket_not_per_batch_shape(shared_dir):
    """align_texts pads to power-of-two rows and widths: batches of 3-7 texts of 20-60 tokens share
    one compiled aligner (one compile per new shape used to exhaust the process's memory maps)."""
    from jaxdistill import align

    qwen, llama = _tokenizer(shared_dir, "qwen3"), _tokenizer(shared_dir, "llama3")
    rng = np.random.default_rng(0)
    words = PARAGRAPH.split()
    batches = [[" ".join(rng.choice(words, size=rng.integers(12, 40))) for _ in range(rng.integers(3, 8))]
               for _ in range(6)]
    align.align_texts(qwen, llama, batches[0])
    before = align._align_spans_jit._cache_size()
    for texts in batches[1:]:
        result = align.align_texts(qwen, llama, texts)
        assert result.spans.span_ids_a.shape == result.ids_a.shape  # cut back to the batch's own shape
        assert result.spans.num_spans.shape == (len(texts),)
        assert (result.aligned_byte_fraction == 1.0).all()
    assert align._align_spans_jit._cache_size() - before <= 1
