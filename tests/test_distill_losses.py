"""Unit tests of the student objectives: KD divergences, temperature, top-k, vocab slicing, padding,
SFT, and the cross-tokenizer span loss against its same-tokenizer counterpart.

Reference values are computed in float64 numpy from the textbook formulas.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill.distill import losses as kd
from jaxdistill.token_maths import token_logprobs

RNG = np.random.default_rng(7)
B, T, V = 2, 3, 6
STUDENT = (RNG.normal(size=(B, T, V)) * 2).astype(np.float32)
TEACHER = (RNG.normal(size=(B, T, V)) * 2).astype(np.float32)
MASK = np.array([[1, 1, 0], [1, 0, 0]], bool)
TOKENS = np.array([[3, 0, 5], [1, 2, 4]])


def np_softmax(z, temperature=1.0):
    z = np.asarray(z, np.float64) / temperature
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_kl(p, q):
    return np.sum(np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - np.log(q)), 0.0), axis=-1)


def np_jsd(p_s, p_t, beta):
    m = beta * p_t + (1 - beta) * p_s
    return beta * np_kl(p_t, m) + (1 - beta) * np_kl(p_s, m)


def logprobs(z, temperature=1.0):
    return kd.tempered_log_softmax(jnp.asarray(z), temperature)


# ----------------------------------------------------------------------------- divergences


def test_forward_and_reverse_kl_closed_form():
    p_s, p_t = np_softmax(STUDENT), np_softmax(TEACHER)
    ls, lt = logprobs(STUDENT), logprobs(TEACHER)
    np.testing.assert_allclose(kd.forward_kl(ls, lt), np_kl(p_t, p_s), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(kd.reverse_kl(ls, lt), np_kl(p_s, p_t), rtol=1e-5, atol=1e-6)
    assert not np.allclose(np_kl(p_t, p_s), np_kl(p_s, p_t), rtol=1e-2)  # directions differ
    np.testing.assert_allclose(kd.forward_kl(ls, ls), 0.0, atol=1e-6)


@pytest.mark.parametrize("beta", [0.1, 0.5, 0.9])
def test_generalized_jsd_closed_form(beta):
    p_s, p_t = np_softmax(STUDENT), np_softmax(TEACHER)
    out = kd.generalized_jsd(logprobs(STUDENT), logprobs(TEACHER), beta)
    np.testing.assert_allclose(out, np_jsd(p_s, p_t, beta), rtol=1e-4, atol=1e-6)
    # bounded by the entropy of the mixing weights
    assert (np.asarray(out) <= -beta * np.log(beta) - (1 - beta) * np.log(1 - beta) + 1e-6).all()


def test_jsd_half_is_symmetric():
    ls, lt = logprobs(STUDENT), logprobs(TEACHER)
    np.testing.assert_allclose(
        kd.generalized_jsd(ls, lt, 0.5), kd.generalized_jsd(lt, ls, 0.5), rtol=1e-5
    )
    assert not np.allclose(kd.generalized_jsd(ls, lt, 0.2), kd.generalized_jsd(lt, ls, 0.2), rtol=1e-3)


def test_jsd_beta_endpoints_follow_trl_convention():
    """beta = 0 is forward KL, beta = 1 reverse KL, although the mixture formula -> 0 there."""
    ls, lt = logprobs(STUDENT), logprobs(TEACHER)
    fwd, rev = kd.forward_kl(ls, lt), kd.reverse_kl(ls, lt)
    np.testing.assert_array_equal(kd.generalized_jsd(ls, lt, 0.0), fwd)
    np.testing.assert_array_equal(kd.generalized_jsd(ls, lt, 1.0), rev)
    near0 = kd.generalized_jsd(ls, lt, 1e-3)
    near1 = kd.generalized_jsd(ls, lt, 1 - 1e-3)
    assert (np.asarray(near0) < 0.01 * np.asarray(fwd)).all()
    assert (np.asarray(near1) < 0.01 * np.asarray(rev)).all()
    # the documented first-order behaviour: JSD_beta ~ beta * KL(p_T || p_S) near 0
    np.testing.assert_allclose(near0 / 1e-3, fwd, rtol=5e-2)
    with pytest.raises(ValueError, match="beta"):
        kd.generalized_jsd(ls, lt, 1.5)


# ----------------------------------------------------------------------------- kd_loss options


def test_kd_loss_is_masked_token_mean():
    m = MASK
    for kind, ref in (
        ("forward_kl", np_kl(np_softmax(TEACHER), np_softmax(STUDENT))),
        ("reverse_kl", np_kl(np_softmax(STUDENT), np_softmax(TEACHER))),
        ("jsd", np_jsd(np_softmax(STUDENT), np_softmax(TEACHER), 0.3)),
    ):
        loss = kd.kd_loss(
            jnp.asarray(STUDENT), jnp.asarray(TEACHER), jnp.asarray(m), divergence_kind=kind, beta=0.3
        )
        assert float(loss) == pytest.approx(ref[m].mean(), rel=1e-5), kind
    with pytest.raises(ValueError, match="divergence"):
        kd.kd_loss(jnp.asarray(STUDENT), jnp.asarray(TEACHER), jnp.asarray(m), divergence_kind="tvd")


def test_temperature_scaling():
    tau = 2.5
    s, t, m = jnp.asarray(STUDENT), jnp.asarray(TEACHER), jnp.asarray(MASK)
    expected = np_kl(np_softmax(TEACHER, tau), np_softmax(STUDENT, tau))[MASK].mean()
    loss = kd.kd_loss(s, t, m, temperature=tau)
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(kd.kd_loss(s, t, m)) != pytest.approx(expected, rel=1e-2)  # tau matters
    scaled = kd.kd_loss(s, t, m, temperature=tau, scale_by_temperature_squared=True)
    assert float(scaled) == pytest.approx(tau**2 * expected, rel=1e-5)


def test_top_k_renormalises_both_on_teacher_support():
    k = 3
    loss = kd.kd_loss(jnp.asarray(STUDENT), jnp.asarray(TEACHER), jnp.asarray(MASK), top_k=k)
    keep = np.argsort(-TEACHER, axis=-1)[..., :k]
    p_t = np_softmax(np.take_along_axis(TEACHER, keep, -1))
    p_s = np_softmax(np.take_along_axis(STUDENT, keep, -1))
    expected = np_kl(p_t, p_s)[MASK].mean()
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    # renormalised, not merely truncated: each kept distribution sums to one
    ls, lt = kd.kd_log_probs(jnp.asarray(STUDENT), jnp.asarray(TEACHER), top_k=k)
    np.testing.assert_allclose(jnp.exp(ls).sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(jnp.exp(lt).sum(-1), 1.0, rtol=1e-6)
    full = kd.kd_loss(jnp.asarray(STUDENT), jnp.asarray(TEACHER), jnp.asarray(MASK))
    assert float(full) != pytest.approx(float(loss), rel=1e-2)
    # top_k = V keeps everything
    assert float(
        kd.kd_loss(jnp.asarray(STUDENT), jnp.asarray(TEACHER), jnp.asarray(MASK), top_k=V)
    ) == pytest.approx(float(full), rel=1e-5)


def test_vocab_slicing_drops_padded_rows():
    """Student head 8 rows, teacher head 9 rows, real tokenizer sizes 6 and 7: keep ids [0, 6)."""
    student = np.concatenate([STUDENT, np.full((B, T, 2), 9.0, np.float32)], -1)
    teacher = np.concatenate([TEACHER, RNG.normal(size=(B, T, 3)).astype(np.float32) + 5], -1)
    args = (jnp.asarray(student), jnp.asarray(teacher), jnp.asarray(MASK))
    sliced = kd.kd_loss(*args, divergence_kind="jsd", student_vocab_size=6, teacher_vocab_size=7)
    clean = kd.kd_loss(
        jnp.asarray(STUDENT), jnp.asarray(TEACHER), jnp.asarray(MASK), divergence_kind="jsd"
    )
    assert float(sliced) == pytest.approx(float(clean), rel=1e-6)
    # without the sizes, the 8-vs-9 mismatch is sliced to 8 and padded rows leak into the loss
    assert float(kd.kd_loss(*args, divergence_kind="jsd")) != pytest.approx(float(clean), rel=1e-2)
    s, t = kd.slice_to_shared_vocab(args[0], args[1], 6, 7)
    assert s.shape[-1] == t.shape[-1] == 6


def test_kd_padding_masked_in_value_and_gradient():
    pad = ~MASK[..., None]
    dirty_s = np.where(pad, np.nan, STUDENT).astype(np.float32)
    dirty_t = np.where(pad, np.inf, TEACHER).astype(np.float32)

    def value_and_grad(s, t, **kw):
        return jax.value_and_grad(lambda x: kd.kd_loss(x, jnp.asarray(t), jnp.asarray(MASK), **kw))(
            jnp.asarray(s)
        )

    for kw in (dict(divergence_kind="forward_kl", top_k=2), dict(divergence_kind="jsd", beta=0.4)):
        clean_v, clean_g = value_and_grad(STUDENT, TEACHER, **kw)
        dirty_v, dirty_g = value_and_grad(dirty_s, dirty_t, **kw)
        assert np.isfinite(clean_v) and dirty_v == clean_v
        np.testing.assert_array_equal(dirty_g, clean_g)
        np.testing.assert_array_equal(np.asarray(clean_g)[~MASK], 0.0)
        assert np.abs(np.asarray(clean_g)[MASK]).sum() > 0


def test_kd_loss_bf16_inputs_compute_in_fp32():
    loss = kd.kd_loss(
        jnp.asarray(STUDENT, jnp.bfloat16), jnp.asarray(TEACHER, jnp.bfloat16), jnp.asarray(MASK)
    )
    assert loss.dtype == jnp.float32


# ----------------------------------------------------------------------------- SFT


def test_sft_loss_masked_nll():
    loss = kd.sft_loss(jnp.asarray(STUDENT), jnp.asarray(TOKENS), jnp.asarray(MASK))
    logp = np.log(np.take_along_axis(np_softmax(STUDENT), TOKENS[..., None], -1)[..., 0])
    assert float(loss) == pytest.approx(-logp[MASK].mean(), rel=1e-5)
    # padding may hold garbage logits and out-of-range ids
    dirty = kd.sft_loss(
        jnp.asarray(np.where(~MASK[..., None], np.nan, STUDENT)),
        jnp.asarray(np.where(MASK, TOKENS, 10_000)),
        jnp.asarray(MASK),
    )
    assert dirty == loss
    # padded vocab rows are dropped with vocab_size
    padded = np.concatenate([STUDENT, np.full((B, T, 2), 20.0, np.float32)], -1)
    assert float(
        kd.sft_loss(jnp.asarray(padded), jnp.asarray(TOKENS), jnp.asarray(MASK), vocab_size=V)
    ) == pytest.approx(float(loss), rel=1e-6)


# ----------------------------------------------------------------------------- span-level KD


def test_binarised_forward_kl_closed_form():
    p_s, p_t = np.array([0.2, 0.9, 0.5]), np.array([0.6, 0.3, 0.5])
    expected = p_t * np.log(p_t / p_s) + (1 - p_t) * np.log((1 - p_t) / (1 - p_s))
    out = kd.binarised_divergence(jnp.log(jnp.asarray(p_s)), jnp.log(jnp.asarray(p_t)), "forward_kl")
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-7)
    gap = kd.binarised_divergence(jnp.log(jnp.asarray(p_s)), jnp.log(jnp.asarray(p_t)), "abs_logprob_gap")
    np.testing.assert_allclose(gap, np.abs(np.log(p_s) - np.log(p_t)), rtol=1e-6)
    # a certain span (p = 1) stays finite thanks to the clip
    assert np.isfinite(kd.binarised_divergence(jnp.array([0.0]), jnp.array([-2.0]), "reverse_kl")).all()


def identical_tokenizer_spans(token_logprobs_, byte_lengths):
    """What the aligner yields when both sides use the same tokenizer, done the byte-space way.

    Span boundaries are the cumulative byte offsets both sides share; span ids come from
    searchsorted on them and span log-probs from segment sums.
    """
    ends = np.cumsum(byte_lengths, axis=-1)
    spans = []
    for b in range(ends.shape[0]):
        shared = np.intersect1d(ends[b], ends[b])  # identical tokenizers: every boundary shared
        span_id = np.searchsorted(shared, ends[b])
        spans.append(jax.ops.segment_sum(token_logprobs_[b], span_id, num_segments=len(shared)))
    return jnp.stack(spans)


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd", "abs_logprob_gap"])
def test_cross_tokenizer_loss_equals_same_tokenizer_loss(kind):
    tau = 1.3
    student = np.concatenate([STUDENT, np.full((B, T, 1), 4.0, np.float32)], -1)  # one padded row
    same = kd.chosen_token_kd_loss(
        jnp.asarray(student), jnp.asarray(TEACHER), jnp.asarray(TOKENS), jnp.asarray(MASK),
        divergence_kind=kind, beta=0.3, temperature=tau, student_vocab_size=V,
    )
    byte_lengths = RNG.integers(1, 4, size=(B, T))
    tokens = jnp.asarray(TOKENS)
    span_s = identical_tokenizer_spans(token_logprobs(jnp.asarray(STUDENT), tokens, tau), byte_lengths)
    span_t = identical_tokenizer_spans(token_logprobs(jnp.asarray(TEACHER), tokens, tau), byte_lengths)
    assert span_s.shape == (B, T)
    cross = kd.span_kd_loss(span_s, span_t, jnp.asarray(MASK), divergence_kind=kind, beta=0.3)
    assert float(cross) == pytest.approx(float(same), rel=1e-6)
    # and the value is the textbook binarised divergence on chosen tokens (not trivially zero)
    ps = np.take_along_axis(np_softmax(STUDENT, tau), TOKENS[..., None], -1)[..., 0]
    pt = np.take_along_axis(np_softmax(TEACHER, tau), TOKENS[..., None], -1)[..., 0]
    bern = lambda p: np.stack([p, 1 - p], -1)  # noqa: E731
    expected = {
        "forward_kl": np_kl(bern(pt), bern(ps)),
        "reverse_kl": np_kl(bern(ps), bern(pt)),
        "jsd": np_jsd(bern(ps), bern(pt), 0.3),
        "abs_logprob_gap": np.abs(np.log(ps) - np.log(pt)),
    }[kind][MASK].mean()
    assert expected > 1e-3
    assert float(cross) == pytest.approx(expected, rel=1e-4)


def test_span_loss_padding_masked():
    s = jnp.log(jnp.array([[0.2, 0.5, 0.1], [0.7, 0.3, 0.9]]))
    t = jnp.log(jnp.array([[0.4, 0.1, 0.2], [0.6, 0.3, 0.5]]))
    m = jnp.asarray(MASK)
    ref_v, ref_g = jax.value_and_grad(lambda x: kd.span_kd_loss(x, t, m, divergence_kind="jsd"))(s)
    dirty_s = jnp.where(m, s, jnp.nan)
    dirty_t = jnp.where(m, t, jnp.inf)
    v, g = jax.value_and_grad(lambda x: kd.span_kd_loss(x, dirty_t, m, divergence_kind="jsd"))(dirty_s)
    assert v == ref_v and np.isfinite(ref_v)
    np.testing.assert_array_equal(g, ref_g)
    np.testing.assert_array_equal(np.asarray(g)[~MASK], 0.0)
    # student span likelihood below the teacher's: descent raises it (forward KL, p_S < p_T)
    g_fwd = jax.grad(lambda x: kd.span_kd_loss(x, t, m))(s)
    assert g_fwd[0, 0] < 0 and g_fwd[0, 1] > 0
