"""diagnostics: closed-form checks on hand-built distributions and detectors on hand-written texts."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill.diagnose import metrics as dx
from jaxdistill.distill.losses import forward_kl, reverse_kl

P_TEACHER = np.array([0.5, 0.3, 0.15, 0.05])
P_STUDENT = np.array([0.25, 0.25, 0.25, 0.25])


def closed_form_kl(p, q, support):
    return float(sum(p[v] * math.log(p[v] / q[v]) for v in support))


def test_forward_and_reverse_kl_match_closed_form():
    lt, ls = jnp.log(jnp.asarray(P_TEACHER)), jnp.log(jnp.asarray(P_STUDENT))
    out = dx.token_divergences(ls, lt, ks=(1, 4))
    assert float(out["forward_kl"]) == pytest.approx(closed_form_kl(P_TEACHER, P_STUDENT, range(4)), rel=1e-5)
    assert float(out["reverse_kl"]) == pytest.approx(closed_form_kl(P_STUDENT, P_TEACHER, range(4)), rel=1e-5)
    assert float(out["teacher_entropy"]) == pytest.approx(-np.sum(P_TEACHER * np.log(P_TEACHER)), rel=1e-5)
    assert float(out["student_entropy"]) == pytest.approx(math.log(4), rel=1e-5)


def test_head_plus_tail_is_the_total_and_each_part_matches_closed_form():
    # The teacher's top-2 tokens are ids 0 and 1 (shuffled positions to make the ranking matter).
    order = np.array([2, 0, 3, 1])
    p, q = P_TEACHER[order], P_STUDENT[order]
    lp, lq = jnp.log(jnp.asarray(p)), jnp.log(jnp.asarray(q))
    head, tail, total = dx.kl_head_tail(lp, lq, lp, ks=(1, 2, 4))
    top1, top2 = [1], [1, 3]  # positions of teacher ids 0 and 1 after the shuffle
    assert float(head[0]) == pytest.approx(closed_form_kl(p, q, top1), rel=1e-5)
    assert float(head[1]) == pytest.approx(closed_form_kl(p, q, top2), rel=1e-5)
    assert float(tail[1]) == pytest.approx(closed_form_kl(p, q, [0, 2]), rel=1e-5, abs=1e-7)
    assert float(tail[2]) == pytest.approx(0.0, abs=1e-6)  # k = V: everything is head
    np.testing.assert_array_equal(np.asarray(head + tail), np.full(3, float(total)))
    assert float(total) == pytest.approx(float(forward_kl(lq, lp)), rel=1e-6)


def test_head_tail_on_random_batches_and_reverse_direction():
    key_t, key_s = jax.random.split(jax.random.key(0))
    lt = jax.nn.log_softmax(3 * jax.random.normal(key_t, (2, 5, 50)))
    ls = jax.nn.log_softmax(3 * jax.random.normal(key_s, (2, 5, 50)))
    out = jax.jit(dx.token_divergences, static_argnames="ks")(ls, lt, ks=(1, 5, 50))  # one compile, not one per op
    assert out["forward_head"].shape == (2, 5, 3)
    np.testing.assert_allclose(out["forward_head"] + out["forward_tail"],
                               np.broadcast_to(out["forward_kl"][..., None], (2, 5, 3)), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out["reverse_kl"], reverse_kl(ls, lt), rtol=1e-6)
    np.testing.assert_allclose(out["forward_head"][..., 2], out["forward_kl"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["teacher_top_k_mass"][..., 2], 1.0, rtol=1e-5)
    # Reverse-KL head over the teacher's top-5, by hand with numpy.
    top5 = np.argsort(-np.asarray(lt), axis=-1)[..., :5]
    ps, lsn, ltn = np.exp(np.asarray(ls)), np.asarray(ls), np.asarray(lt)
    want = np.take_along_axis(ps * (lsn - ltn), top5, axis=-1).sum(-1)
    np.testing.assert_allclose(out["reverse_head"][..., 1], want, rtol=1e-4, atol=1e-6)


def test_top_k_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match="top-k must be in"):
        dx.kl_head_tail(jnp.zeros(4), jnp.zeros(4), jnp.zeros(4), ks=(5,))


def test_per_byte_loglik_and_span_version():
    lp = jnp.array([[-1.0, -2.0, -0.5, 0.0]])
    nbytes = jnp.array([[2, 1, 0, 7]])  # the third is a zero-byte EOS, the fourth is padding
    mask = jnp.array([[True, True, True, False]])
    assert float(dx.per_byte_loglik(lp, nbytes, mask)[0]) == pytest.approx(-3.5 / 3)
    assert float(dx.per_byte_loglik(lp, nbytes, jnp.zeros_like(mask))[0]) == 0.0
    teacher, student = dx.span_per_byte_logliks(jnp.array([[-1.0, -3.0]]), jnp.array([[-2.0, -9.0]]),
                                                jnp.array([[4, 2]]), jnp.array([[True, False]]))
    assert float(teacher[0]) == pytest.approx(-0.25) and float(student[0]) == pytest.approx(-0.5)


def test_sequence_log_ratio_and_concentration():
    a, b = jnp.array([[-1.0, -1.0, -9.0]]), jnp.array([[-2.0, -1.5, 0.0]])
    assert float(dx.sequence_log_ratio(a, b, jnp.array([[1, 1, 0]]))[0]) == pytest.approx(1.5)
    sparse = dx.kl_concentration(np.array([10.0] + [0.0] * 19))
    assert sparse == {"top_share": 1.0, "half_mass_fraction": 0.05}
    flat = dx.kl_concentration(np.ones(10))
    assert flat["top_share"] == pytest.approx(0.1) and flat["half_mass_fraction"] == pytest.approx(0.5)
    assert dx.kl_concentration(np.zeros(3)) == {"top_share": 0.0, "half_mass_fraction": 0.0}


# ---- answers and confidence ------------------------------------------------------------------

def test_confident_wrong_answer():
    completion = b"12+5=17\n17*2=34\n#### 34"
    span = dx.answer_byte_span(completion, "34")
    assert completion[span[0]:span[1]] == b"34" and span[0] == len(completion) - 2
    # tokens: "12+5=17\n" (8 bytes), "17*2=34\n" (8), "#### " (5), "3" (1), "4" (1), EOS (0)
    byte_lengths = np.array([8, 8, 5, 1, 1, 0])
    np.testing.assert_array_equal(dx.tokens_covering(byte_lengths, *span), [0, 0, 0, 1, 1, 0])
    logprobs = np.log([0.5, 0.5, 0.9, 0.99, 0.98, 0.9])
    confidence = dx.answer_confidence(logprobs, byte_lengths, span)
    assert confidence == pytest.approx(0.99 * 0.98)
    report = dx.answer_symptoms([confidence], [False], n_bins=10, threshold=0.9)
    assert report["wrong_confidence"] == pytest.approx(0.9702)
    assert report["confident_wrong_rate"] == 1.0 and report["accuracy"] == 0.0
    assert report["ece"] == pytest.approx(0.9702)
    assert math.isnan(report["right_confidence"])


def test_answer_span_variants():
    assert dx.answer_byte_span(b"so 1,200 apples. The answer is 1,200.", "1200") == (31, 36)
    assert dx.answer_byte_span(b"7 and 8", "9") is None
    assert dx.answer_byte_span(b"the answer is (B) beta", "b") == (15, 16)
    assert dx.answer_byte_span(b"anything", None) is None
    assert math.isnan(dx.answer_confidence(np.zeros(2), np.ones(2), None))


def test_expected_calibration_error_by_hand():
    conf = [0.95, 0.95, 0.15, 0.15, float("nan")]
    correct = [True, False, False, False, True]
    ece, bins = dx.expected_calibration_error(conf, correct, n_bins=10)
    # bin [0.9, 1): confidence 0.95, accuracy 0.5; bin [0.1, 0.2): confidence 0.15, accuracy 0
    assert ece == pytest.approx(0.5 * 0.45 + 0.5 * 0.15)
    assert [(b["low"], b["count"]) for b in bins] == [(pytest.approx(0.1), 2), (pytest.approx(0.9), 2)]
    assert dx.expected_calibration_error([1.0], [True])[0] == 0.0  # confidence 1 falls in the last bin
    assert math.isnan(dx.expected_calibration_error([float("nan")], [True])[0])


# ---- text symptoms -----------------------------------------------------------------------------

LOOPING = "Tom has 3 apples. He buys 2 more, so 3+2=5. so 3+2=5. so 3+2=5. so 3+2=5."
SELF_CORRECTING = ("Tom has 3 apples. 3+2=6. Wait, let me check: 3+2=5. Actually the total is 5.\n"
                   "check: 5-2=3\n#### 5")
CLEAN = "Tom has 3 apples and buys 2 more.\n3+2=5\n#### 5"


def test_self_correction_markers():
    counts = dx.self_correction_markers(SELF_CORRECTING)
    assert counts == {"wait": 1, "let me check": 1, "actually": 1, "hmm": 0, "check step": 1}
    assert sum(dx.self_correction_markers(CLEAN).values()) == 0
    # "check:" only counts as a step at the start of a line; "checked" is no marker
    assert dx.self_correction_markers("I checked. Let me double-check this.")["let me check"] == 1
    assert dx.self_correction_markers("x\n  Check: 1+1=2")["check step"] == 1


def test_loops_and_repeated_ngrams():
    assert dx.longest_repeat(dx.words(LOOPING)) == (2, 4)  # "so 3+2=5." four times
    assert dx.has_loop(LOOPING) and not dx.has_loop(CLEAN) and not dx.has_loop(SELF_CORRECTING)
    assert dx.longest_repeat([]) == (0, 0) and dx.longest_repeat(["a"]) == (1, 1)
    assert dx.repeated_ngram_rate(list("abcabc"), n=3) == pytest.approx(1 - 3 / 4)
    assert dx.repeated_ngram_rate(list("ab"), n=3) == 0.0
    assert dx.repeated_ngram_rate(dx.words(CLEAN), 4) == 0.0


def test_text_symptoms_rates():
    rates = dx.text_symptoms([LOOPING, SELF_CORRECTING, CLEAN, CLEAN], [False, True, True, True], ngram=2)
    assert rates["loop_rate"] == 0.25
    assert rates["truncation_rate"] == 0.25
    assert rates["self_correction_rate"] == 0.25 and rates["check_step_rate"] == 0.25
    assert rates["markers_per_completion"] == 1.0 and rates["marker/wait"] == 0.25
    # LOOPING has 15 word bigrams of which 10 are distinct; the other texts repeat none
    assert dx.repeated_ngram_rate(dx.words(LOOPING), 2) == pytest.approx(1 / 3)
    assert rates["repeated_ngram_rate"] == pytest.approx(1 / 3 / 4)
    with pytest.raises(ValueError, match="finished flags"):
        dx.text_symptoms(["a"], [])
    assert dx.difference({"a": 3.0, "b": "x"}, {"a": 1.0}) == {"a": 2.0}
