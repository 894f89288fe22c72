"""Unit tests of the shared token maths (``jaxdistill.token_maths``) against float64 numpy references."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill import token_maths as tm
from jaxdistill.distill.losses import binarised_divergence
from jaxdistill.rl.calibration import binary_kl_from_logprobs

# ----------------------------------------------------------------------------- log-probs, entropy

LOGITS = np.random.default_rng(0).normal(size=(2, 3, 5)).astype(np.float32) * 3
TOKENS = np.array([[0, 4, 2], [1, 1, 3]])


def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_token_logprobs(temperature):
    out = tm.token_logprobs(jnp.asarray(LOGITS), jnp.asarray(TOKENS), temperature)
    expected = np.take_along_axis(np_log_softmax(LOGITS / temperature), TOKENS[..., None], -1)[..., 0]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_token_logprobs_stable_for_huge_logits_and_bf16():
    logits = jnp.array([[[1e4, 0.0, -1e4]]])
    out = tm.token_logprobs(logits, jnp.array([[0]]))
    assert np.isfinite(out).all() and float(out[0, 0]) == pytest.approx(0.0, abs=1e-6)
    out_bf16 = tm.token_logprobs(jnp.asarray(LOGITS, jnp.bfloat16), jnp.asarray(TOKENS))
    assert out_bf16.dtype == jnp.float32


def test_token_entropy():
    ent = tm.token_entropy(jnp.asarray(LOGITS))
    lp = np_log_softmax(LOGITS)
    np.testing.assert_allclose(ent, -(np.exp(lp) * lp).sum(-1), rtol=1e-5)
    # uniform = log V; a -inf logit contributes 0 and keeps the gradient finite
    np.testing.assert_allclose(tm.token_entropy(jnp.zeros((1, 4))), np.log(4), rtol=1e-6)
    z = jnp.array([[0.3, -jnp.inf, 1.0]])
    np.testing.assert_allclose(tm.token_entropy(z), tm.token_entropy(jnp.array([[0.3, 1.0]])))
    assert np.isfinite(jax.grad(lambda x: tm.token_entropy(x).sum())(z)).all()


def test_kl_with_zero_probabilities_is_finite_in_value_and_gradient():
    lp = jnp.array([0.0, -jnp.inf, -jnp.inf])  # a point mass
    lq = jnp.log(jnp.array([0.5, 0.5, 0.0]))
    assert float(tm.kl_divergence(lp, lq)) == pytest.approx(np.log(2), rel=1e-6)
    g = jax.grad(lambda q: tm.kl_divergence(lp, q))(lq)
    assert np.isfinite(g).all()


def test_masked_mean_ignores_garbage_under_the_mask():
    values = jnp.array([[1.0, jnp.nan, 3.0], [jnp.inf, 5.0, 7.0]])
    mask = jnp.array([[True, False, True], [False, True, False]])
    assert float(tm.masked_mean(values, mask)) == pytest.approx(3.0)
    np.testing.assert_allclose(tm.masked_mean(values, mask, axis=-1), [2.0, 5.0])
    assert float(tm.masked_mean(values, jnp.zeros_like(mask))) == 0.0  # nothing to average: 0, not NaN


# ----------------------------------------------------------------------------- binarised likelihoods


def test_log1mexp_accuracy():
    x = np.array([-1e-6, -1e-3, -0.5, -0.7, -2.0, -30.0, -np.inf])
    np.testing.assert_allclose(tm.log1mexp(jnp.asarray(x, jnp.float32)), np.log1p(-np.exp(x)), rtol=1e-5)


def test_binarising_clips_into_the_documented_range():
    out = np.asarray(tm.bernoulli_log_probs(jnp.array([0.0, -jnp.inf, -0.5])))
    assert np.isfinite(out).all()
    assert out[0, 0] == np.float32(tm.BINARY_LOGPROB_CEILING)  # a certain event keeps log(1 - p) finite
    assert out[1, 0] == np.float32(tm.LOGPROB_FLOOR) and out[1, 1] == 0.0
    np.testing.assert_allclose(out[2], [-0.5, np.log1p(-np.exp(-0.5))], rtol=1e-6)  # in range: unchanged


def test_binary_kl_closed_form_and_the_generic_kl_of_two_bernoullis_agree():
    p, q = np.array([0.2, 0.9, 0.5, 0.999]), np.array([0.6, 0.3, 0.5, 0.01])
    expected = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
    lp, lq = jnp.log(jnp.asarray(p, jnp.float32)), jnp.log(jnp.asarray(q, jnp.float32))
    np.testing.assert_allclose(tm.binary_kl(lp, lq), expected, rtol=1e-4, atol=1e-6)
    generic = tm.kl_divergence(tm.bernoulli_log_probs(lp), tm.bernoulli_log_probs(lq))
    np.testing.assert_allclose(tm.binary_kl(lp, lq), generic, rtol=1e-5, atol=1e-6)
    # distillation's binarised forward KL (teacher first) and the calibration reward's are this one
    np.testing.assert_allclose(binarised_divergence(lq, lp, "forward_kl"), tm.binary_kl(lp, lq), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(binary_kl_from_logprobs(lp, lq), tm.binary_kl(lp, lq), rtol=0, atol=0)
    # equal sides: exactly 0, gradient included; -inf and 0 stay finite
    assert [float(v) for v in jax.value_and_grad(tm.binary_kl)(-3.0, -3.0)] == [0.0, 0.0]
    assert np.isfinite(tm.binary_kl(jnp.array([0.0, -jnp.inf]), jnp.array([-jnp.inf, 0.0]))).all()


# ----------------------------------------------------------------------------- token ids


class _Ids:
    def __init__(self, pad_id, eos_id):
        self.pad_id, self.eos_id, self.path = pad_id, eos_id, "tok"


def test_padding_id_prefers_pad_then_eos_else_says_what_to_set():
    assert tm.padding_id(_Ids(0, 7)) == 0
    assert tm.padding_id(_Ids(None, 7)) == 7
    with pytest.raises(ValueError, match="pad_token or eos_token"):
        tm.padding_id(_Ids(None, None))
