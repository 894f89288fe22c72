"""Unit tests of the GRPO maths: advantages, KL estimators, surrogate, aggregation.

Everything runs eagerly on tiny arrays with a handful of fixed shapes, so the suite stays fast.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxdistill.rl import advantages as adv
from jaxdistill.rl import losses as rl
from jaxdistill.token_maths import masked_mean

# ----------------------------------------------------------------------------- helpers


def np_groupnorm(rewards, eps=1e-4, ddof=1):
    """Reference: rows are groups."""
    r = np.asarray(rewards, np.float64)
    mean = r.mean(axis=1, keepdims=True)
    std = r.std(axis=1, ddof=ddof, keepdims=True)
    return (r - mean) / (std + eps)


TASK = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0]], np.float32)
CAL = np.array([[-0.3, -1.2, -0.5, -0.9], [-2.0, -0.1, -0.4, -0.7], [-1.0, -0.2, -0.6, -0.8]], np.float32)


# ----------------------------------------------------------------------------- advantages


def test_to_groups_requires_whole_groups():
    assert adv.to_groups(jnp.arange(6.0), 3).shape == (2, 3)
    with pytest.raises(ValueError, match="whole groups"):
        adv.to_groups(jnp.arange(7.0), 3)
    with pytest.raises(ValueError, match="num_generations"):
        adv.to_groups(jnp.arange(6.0))
    with pytest.raises(ValueError, match="num_generations=4"):
        adv.to_groups(jnp.zeros((2, 3)), 4)


def test_group_normalisation_matches_reference_flat_and_grouped():
    expected = np_groupnorm(CAL)
    grouped = adv.normalize_rewards(jnp.asarray(CAL), scale_rewards="group")
    flat = adv.normalize_rewards(jnp.asarray(CAL).reshape(-1), 4, scale_rewards="group")
    np.testing.assert_allclose(grouped, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(flat, expected.reshape(-1), rtol=1e-5, atol=1e-6)
    assert flat.shape == (12,)
    # population std on request
    np.testing.assert_allclose(
        adv.normalize_rewards(jnp.asarray(CAL), ddof=0), np_groupnorm(CAL, ddof=0), rtol=1e-5
    )


def test_batch_and_none_scaling():
    centred = CAL - CAL.mean(axis=1, keepdims=True)
    batch = adv.normalize_rewards(jnp.asarray(CAL), scale_rewards="batch")
    np.testing.assert_allclose(batch, centred / (CAL.std(ddof=1) + 1e-4), rtol=1e-5, atol=1e-6)
    none = adv.normalize_rewards(jnp.asarray(CAL), scale_rewards="none")
    np.testing.assert_allclose(none, centred, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="scale_rewards"):
        adv.normalize_rewards(jnp.asarray(CAL), scale_rewards="std")


def test_groups_do_not_mix():
    """Changing one prompt's rewards leaves the other prompts' advantages untouched."""
    base = adv.normalize_rewards(jnp.asarray(CAL))
    other = CAL.copy()
    other[1] = [5.0, 7.0, -3.0, 0.0]
    moved = adv.normalize_rewards(jnp.asarray(other))
    np.testing.assert_array_equal(base[0], moved[0])
    np.testing.assert_array_equal(base[2], moved[2])
    assert not np.allclose(base[1], moved[1])


def test_combined_terms_are_normalised_separately():
    """A = groupnorm(task) + eta * groupnorm(cal), each term invariant to its own affine rescaling."""
    eta = 0.7
    a = adv.combined_advantages(jnp.asarray(TASK), jnp.asarray(CAL), eta=eta)
    expected = np_groupnorm(TASK) + eta * np_groupnorm(CAL)
    np.testing.assert_allclose(a, expected, rtol=1e-5, atol=1e-5)
    # rescaling each reward by its own factor changes nothing (only eps sees the scale)
    rescaled = adv.combined_advantages(
        jnp.asarray(10.0 * TASK), jnp.asarray(100.0 * CAL + 3.0), eta=eta
    )
    np.testing.assert_allclose(rescaled, a, rtol=1e-3, atol=1e-3)
    # a single joint normalisation would differ: this test can tell the two apart
    joint = np_groupnorm(TASK + eta * CAL)
    assert not np.allclose(a, joint, atol=1e-2)


@pytest.mark.parametrize("eta", [1.0, -1.0])
def test_sign_of_eta(eta):
    """Between two equally correct rollouts, +eta favours the better-calibrated one, -eta the worse."""
    task = jnp.array([1.0, 1.0, 0.0, 0.0])
    cal = jnp.array([-0.2, -1.5, -0.7, -0.9])  # rollout 0 is the best calibrated correct answer
    a = adv.combined_advantages(task, cal, 4, eta=eta)
    a0 = adv.combined_advantages(task, cal, 4, eta=0.0)
    assert a0[0] == pytest.approx(a0[1])
    assert np.sign(a[0] - a[1]) == np.sign(eta)
    np.testing.assert_allclose(a - a0, eta * adv.normalize_rewards(cal, 4), rtol=1e-5, atol=1e-6)
    # eta = 0 and cal_rewards None are the same plain-RFT advantages, whatever r_cal holds
    np.testing.assert_array_equal(a0, adv.combined_advantages(task, None, 4))
    np.testing.assert_array_equal(a0, adv.combined_advantages(task, jnp.full(4, jnp.nan), 4, eta=0.0))


def test_eta_may_be_traced_under_jit():
    fn = jax.jit(lambda t, c, e: adv.combined_advantages(t, c, eta=e))
    out = fn(jnp.asarray(TASK), jnp.asarray(CAL), -1.0)
    np.testing.assert_allclose(out, np_groupnorm(TASK) - np_groupnorm(CAL), rtol=1e-5, atol=1e-5)


def test_calibration_scope_correct():
    task = jnp.array([1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 0.0])
    cal = jnp.array([-0.5, -0.1, -0.9, -3.0, -0.4, -0.2, -0.6, -5.0])
    a_cal = adv.calibration_advantages(cal, task, 4, calibration_scope="correct")
    correct = np.asarray(task) == 1.0
    # wrong answers earn exactly nothing from calibration
    np.testing.assert_array_equal(np.asarray(a_cal)[~correct], 0.0)
    # correct ones are normalised among the correct ones of their group only
    g0 = np_groupnorm(np.array([[-0.5, -0.9]]))[0]
    g1 = np_groupnorm(np.array([[-0.4, -0.2, -0.6]]))[0]
    np.testing.assert_allclose(np.asarray(a_cal)[[0, 2]], g0, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(a_cal)[[4, 5, 6]], g1, rtol=1e-5, atol=1e-6)
    # a wrong rollout's calibration reward cannot move any advantage
    cal_moved = cal.at[1].set(100.0).at[7].set(-100.0)
    for eta in (1.0, -1.0):
        np.testing.assert_array_equal(
            adv.combined_advantages(task, cal, 4, eta=eta, calibration_scope="correct"),
            adv.combined_advantages(task, cal_moved, 4, eta=eta, calibration_scope="correct"),
        )
    # ... while with scope "all" it does
    assert not np.allclose(
        adv.combined_advantages(task, cal, 4, eta=1.0),
        adv.combined_advantages(task, cal_moved, 4, eta=1.0),
    )


def test_calibration_scope_correct_threshold_and_lone_correct():
    task = jnp.array([0.9, 0.5, 0.2, 0.95])
    cal = jnp.array([-1.0, -0.1, -0.2, -2.0])
    a_cal = adv.calibration_advantages(
        cal, task, 4, calibration_scope="correct", correct_threshold=0.9
    )
    assert a_cal[1] == 0 and a_cal[2] == 0
    assert a_cal[0] > 0 > a_cal[3]
    # a single correct rollout in its group has nothing to be compared with: 0, not NaN
    lone = adv.calibration_advantages(
        cal, jnp.array([1.0, 0.0, 0.0, 0.0]), 4, calibration_scope="correct"
    )
    np.testing.assert_array_equal(lone, 0.0)
    with pytest.raises(ValueError, match="task_rewards"):
        adv.calibration_advantages(cal, None, 4, calibration_scope="correct")
    with pytest.raises(ValueError, match="calibration_scope"):
        adv.calibration_advantages(cal, task, 4, calibration_scope="wrong")


def test_masked_rollouts_are_ignored():
    rewards = jnp.asarray(CAL)
    mask = jnp.array([[1, 1, 1, 0], [1, 1, 1, 1], [0, 1, 1, 1]], bool)
    for scale in ("group", "batch", "none"):
        a = adv.normalize_rewards(rewards, mask=mask, scale_rewards=scale)
        garbage = jnp.where(mask, rewards, 1e6)
        np.testing.assert_array_equal(a, adv.normalize_rewards(garbage, mask=mask, scale_rewards=scale))
        np.testing.assert_array_equal(np.asarray(a)[~np.asarray(mask)], 0.0)
    a = adv.normalize_rewards(rewards, mask=mask)
    np.testing.assert_allclose(a[0, :3], np_groupnorm(CAL[:1, :3])[0], rtol=1e-5)
    np.testing.assert_allclose(a[2, 1:], np_groupnorm(CAL[2:, 1:])[0], rtol=1e-5)
    batch = adv.normalize_rewards(rewards, mask=mask, scale_rewards="batch")
    valid = CAL[np.asarray(mask)]
    np.testing.assert_allclose(
        batch[1], (CAL[1] - CAL[1].mean()) / (valid.std(ddof=1) + 1e-4), rtol=1e-5
    )


def test_zero_variance_group_fraction():
    rewards = jnp.array([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.5, 0.2, 0.5]])
    assert float(adv.zero_variance_group_fraction(rewards)) == pytest.approx(0.5)
    assert float(adv.zero_variance_group_fraction(rewards.reshape(-1), 3)) == pytest.approx(0.5)
    # masking the odd one out makes group 1 flat; a group with no valid rollout is not counted
    mask = jnp.array([[1, 1, 1], [1, 0, 1], [0, 0, 0], [1, 1, 1]], bool)
    assert float(adv.zero_variance_group_fraction(rewards, mask=mask)) == pytest.approx(2 / 3)


@settings(max_examples=25, deadline=None)
@given(
    st.lists(st.floats(-5, 5, allow_nan=False, width=32), min_size=8, max_size=8),
    st.lists(st.booleans(), min_size=8, max_size=8),
)
def test_group_advantages_are_centred(values, valid):
    rewards = jnp.asarray(values, jnp.float32).reshape(2, 4)
    mask = jnp.asarray(valid).reshape(2, 4)
    a = np.asarray(adv.normalize_rewards(rewards, mask=mask, scale_rewards="none"))
    for g in range(2):
        m = np.asarray(mask[g])
        assert abs(a[g][m].sum()) < 1e-4
        assert np.all(a[g][~m] == 0)


# ----------------------------------------------------------------------------- KL estimators

PI = np.array([0.7, 0.15, 0.1, 0.04, 0.01])
PI_REF = np.array([0.2, 0.2, 0.2, 0.2, 0.2])


def exact_expectation(estimator, pi, pi_ref):
    """E_{y ~ pi}[k(y)] by enumerating the support."""
    values = rl.kl_estimate(jnp.log(jnp.asarray(pi)), jnp.log(jnp.asarray(pi_ref)), estimator)
    return float(jnp.sum(jnp.asarray(pi) * values))


def test_k1_and_k3_are_unbiased_for_kl_pi_ref():
    kl = float(np.sum(PI * np.log(PI / PI_REF)))
    reverse = float(np.sum(PI_REF * np.log(PI_REF / PI)))
    assert abs(kl - reverse) > 1e-2  # the direction is distinguishable
    assert exact_expectation("k1", PI, PI_REF) == pytest.approx(kl, rel=1e-5)
    assert exact_expectation("k3", PI, PI_REF) == pytest.approx(kl, rel=1e-5)


def test_k2_is_second_order_and_nonnegative():
    log_ratio = np.log(PI_REF / PI)
    assert exact_expectation("k2", PI, PI_REF) == pytest.approx(
        0.5 * np.sum(PI * log_ratio**2), rel=1e-5
    )
    # for a nearby reference it agrees with KL to second order
    near = PI * np.exp(0.02 * np.array([1.0, -1.0, 0.5, -0.5, 0.3]))
    near /= near.sum()
    kl_near = float(np.sum(PI * np.log(PI / near)))
    assert exact_expectation("k2", PI, near) == pytest.approx(kl_near, rel=5e-2)


def test_k2_k3_pointwise_nonnegative_and_zero_at_equality():
    logp = jnp.log(jnp.asarray(PI))
    ref = jnp.log(jnp.asarray(PI_REF))
    assert (rl.kl_k2(logp, ref) >= 0).all() and (rl.kl_k3(logp, ref) >= 0).all()
    assert (rl.kl_k1(logp, ref) < 0).any()  # k1 is signed per sample
    for k in ("k1", "k2", "k3"):
        np.testing.assert_array_equal(rl.kl_estimate(logp, logp, k), 0.0)
    with pytest.raises(ValueError, match="kl_estimator"):
        rl.kl_estimate(logp, ref, "k4")


# ----------------------------------------------------------------------------- surrogate


def surrogate_grad(logp, old_logp, advantages, **kw):
    return jax.grad(lambda lp: rl.clipped_surrogate(lp, old_logp, advantages, **kw).sum())(logp)


def test_surrogate_gradient_signs_inside_region():
    logp = jnp.log(jnp.array([[0.5, 0.5]]))
    old = logp  # ratio 1
    g_pos = surrogate_grad(logp, old, jnp.array([1.0]))
    g_neg = surrogate_grad(logp, old, jnp.array([-1.0]))
    assert (g_pos < 0).all()  # descent raises logp of tokens with positive advantage
    assert (g_neg > 0).all()  # and lowers it for negative advantage
    np.testing.assert_allclose(g_pos, -1.0)  # d/dlogp of -rho*A at rho = 1


def test_surrogate_clipping_zeroes_gradient_outside_region():
    old = jnp.zeros((1, 4))
    ratios = jnp.array([[1.5, 0.5, 1.5, 0.5]])
    logp = jnp.log(ratios)
    a = jnp.array([[1.0, -1.0, -1.0, 1.0]])
    g = surrogate_grad(logp, old, a, epsilon=0.2)
    # clipped: rho above 1+eps with A>0, rho below 1-eps with A<0
    assert g[0, 0] == 0 and g[0, 1] == 0
    # not clipped (the pessimistic min keeps the unclipped branch): gradient -rho*A
    np.testing.assert_allclose(g[0, 2:], [1.5, -0.5], rtol=1e-6)
    loss = rl.clipped_surrogate(logp, old, a, epsilon=0.2)
    np.testing.assert_allclose(loss, [[-1.2, 0.8, 1.5, -0.5]], rtol=1e-6)


def test_epsilon_high_widens_upper_clip():
    logp = jnp.log(jnp.array([[1.25]]))
    old = jnp.zeros((1, 1))
    a = jnp.array([1.0])
    assert surrogate_grad(logp, old, a, epsilon=0.2)[0, 0] == 0
    assert surrogate_grad(logp, old, a, epsilon=0.2, epsilon_high=0.28)[0, 0] < 0
    # the lower side still uses epsilon
    low = jnp.log(jnp.array([[0.75]]))
    assert surrogate_grad(low, old, -a, epsilon=0.2, epsilon_high=0.28)[0, 0] == 0


def test_old_logp_is_constant():
    logp = jnp.log(jnp.array([[0.4, 0.6]]))
    g = jax.grad(lambda lp: rl.clipped_surrogate(lp, lp, jnp.array([1.0])).sum())(logp)
    np.testing.assert_allclose(g, -1.0)  # not 0: old_logp carries no gradient


# ----------------------------------------------------------------------------- aggregation

PER_TOKEN = jnp.array([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0], [9.0, 9.0, 9.0, 9.0]])
MASK = jnp.array([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], bool)


def test_loss_type_aggregation_numbers():
    assert float(rl.aggregate_token_losses(PER_TOKEN, MASK, "grpo")) == pytest.approx((2 + 4) / 2)
    assert float(rl.aggregate_token_losses(PER_TOKEN, MASK, "dapo")) == pytest.approx(10 / 4)
    assert float(rl.aggregate_token_losses(PER_TOKEN, MASK, "dr_grpo")) == pytest.approx(10 / (2 * 4))
    assert float(
        rl.aggregate_token_losses(PER_TOKEN, MASK, "dr_grpo", max_completion_length=5)
    ) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="loss_type"):
        rl.aggregate_token_losses(PER_TOKEN, MASK, "bnpo")


def test_aggregation_ignores_nan_in_padding():
    poisoned = jnp.where(MASK, PER_TOKEN, jnp.nan)
    for loss_type in ("grpo", "dr_grpo", "dapo"):
        assert rl.aggregate_token_losses(poisoned, MASK, loss_type) == rl.aggregate_token_losses(
            PER_TOKEN, MASK, loss_type
        )
    assert float(masked_mean(poisoned, MASK)) == pytest.approx(2.5)


# ----------------------------------------------------------------------------- grpo_loss

RNG = np.random.default_rng(1)
LOGP = jnp.asarray(np.log(RNG.uniform(0.05, 0.9, size=(3, 4))), jnp.float32)
# ratios exp(logp - old): both clip sides and both unclipped tails occur under GMASK below
OLD = LOGP + jnp.array([[0.5, -0.4, 0.1, 0.0], [0.5, -0.5, 0.0, 0.0], [-0.4, 0.3, 0.05, 0.0]])
REF = LOGP + jnp.asarray(RNG.normal(scale=0.5, size=(3, 4)), jnp.float32)
ADV = jnp.array([1.0, -0.5, 2.0])
GMASK = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], bool)
KW = dict(epsilon=0.2, epsilon_high=0.28, beta=0.04, kl_estimator="k3")


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_grpo_loss_padding_masked_everywhere(loss_type):
    """Garbage (NaN, inf) in padded log-probs changes neither the loss, the metrics nor gradients."""

    def run(logp, old, ref):
        fn = lambda lp: rl.grpo_loss(lp, old, ref, ADV, GMASK, loss_type=loss_type, **KW)
        (loss, metrics), grad = jax.value_and_grad(fn, has_aux=True)(logp)
        return loss, metrics, grad

    clean = run(LOGP, OLD, REF)
    pad = ~GMASK
    dirty = run(jnp.where(pad, jnp.nan, LOGP), jnp.where(pad, -jnp.inf, OLD), jnp.where(pad, 1e30, REF))
    assert np.isfinite(clean[0])
    assert dirty[0] == clean[0]
    for key in clean[1]:
        assert dirty[1][key] == clean[1][key], key
    np.testing.assert_array_equal(dirty[2], clean[2])
    np.testing.assert_array_equal(np.asarray(clean[2])[np.asarray(pad)], 0.0)


def test_grpo_loss_matches_manual_composition():
    loss, metrics = rl.grpo_loss(LOGP, OLD, REF, ADV, GMASK, loss_type="dapo", **KW)
    m = np.asarray(GMASK)
    ratio = np.exp(np.asarray(LOGP) - np.asarray(OLD))
    a = np.asarray(ADV)[:, None]
    surrogate = -np.minimum(ratio * a, np.clip(ratio, 0.8, 1.28) * a)
    d = np.asarray(REF) - np.asarray(LOGP)
    k3 = np.exp(d) - d - 1
    expected = ((surrogate + 0.04 * k3) * m).sum() / m.sum()
    assert float(loss) == pytest.approx(expected, rel=1e-5)
    assert float(metrics["kl"]) == pytest.approx((k3 * m).sum() / m.sum(), rel=1e-5)
    assert float(metrics["ratio_mean"]) == pytest.approx((ratio * m).sum() / m.sum(), rel=1e-5)
    low = (ratio < 0.8) & (a < 0)
    high = (ratio > 1.28) & (a > 0)
    assert float(metrics["clip_ratio/low_mean"]) == pytest.approx((low * m).sum() / m.sum())
    assert float(metrics["clip_ratio/high_mean"]) == pytest.approx((high * m).sum() / m.sum())
    assert float(metrics["clip_ratio/region_mean"]) == pytest.approx(((low | high) * m).sum() / m.sum())
    assert low[m].any() and high[m].any()  # the example exercises both clip sides
    assert metrics["clip_ratio"] == metrics["clip_ratio/region_mean"]


def test_grpo_loss_beta_and_reference():
    no_kl, metrics = rl.grpo_loss(LOGP, OLD, None, ADV, GMASK, beta=0.0)
    assert "kl" not in metrics
    with_ref, _ = rl.grpo_loss(LOGP, OLD, REF, ADV, GMASK, beta=0.0)
    assert with_ref == no_kl  # beta = 0: the reference only feeds the metric
    beta = 0.1
    with_kl, m = rl.grpo_loss(LOGP, OLD, REF, ADV, GMASK, beta=beta, kl_estimator="k1")
    kl_term = rl.aggregate_token_losses(rl.kl_k1(LOGP, REF), GMASK, "grpo")
    assert float(with_kl - no_kl) == pytest.approx(beta * float(kl_term), rel=1e-4)
    with pytest.raises(ValueError, match="ref_logp"):
        rl.grpo_loss(LOGP, OLD, None, ADV, GMASK, beta=0.1)


def test_grpo_loss_on_policy_is_plain_policy_gradient():
    """old_logp None: ratio 1, loss = -mean A, gradient -A / n_i per valid token (grpo)."""
    (loss, metrics), grad = jax.value_and_grad(
        lambda lp: rl.grpo_loss(lp, None, None, ADV, GMASK), has_aux=True
    )(LOGP)
    assert float(loss) == pytest.approx(-float(ADV.mean()), rel=1e-6)
    assert float(metrics["ratio_mean"]) == 1.0 and float(metrics["clip_ratio"]) == 0.0
    n = np.asarray(GMASK).sum(1, keepdims=True)
    expected = np.where(GMASK, -np.asarray(ADV)[:, None] / n / 3, 0.0)
    np.testing.assert_allclose(grad, expected, rtol=1e-6)


def test_grpo_loss_under_jit_with_dense_advantages():
    dense = jnp.broadcast_to(ADV[:, None], LOGP.shape)
    fn = jax.jit(lambda lp, o, r, a, m: rl.grpo_loss(lp, o, r, a, m, **KW)[0])
    assert float(fn(LOGP, OLD, REF, dense, GMASK)) == pytest.approx(
        float(rl.grpo_loss(LOGP, OLD, REF, ADV, GMASK, **KW)[0]), rel=1e-6
    )


# ----------------------------------------------------------------------------- the learning proxy


def test_completion_nll_is_the_masked_mean_negative_logprob():
    from jaxdistill.rl.proxy import completion_nll

    logprobs = jnp.array([[-1.0, -2.0, -50.0], [-0.5, -9.0, -9.0]])
    mask = jnp.array([[1, 1, 0], [1, 0, 0]])
    assert float(completion_nll(logprobs, mask)) == pytest.approx((1.0 + 2.0 + 0.5) / 3)
    assert float(completion_nll(logprobs, jnp.zeros_like(mask))) == 0.0  # no tokens: 0, not NaN


def test_proxy_learner_fits_repeated_completions_and_leaves_the_model_in_sync():
    from flax import nnx

    from jaxdistill.models import Qwen, QwenConfig
    from jaxdistill.rl.proxy import ProxyLearner
    from jaxdistill.rl.rewards import plain_scoring, score_completions
    from jaxdistill.training import make_optimizer

    config = QwenConfig(model_type="qwen2", vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1, head_dim=8, qkv_bias=True,
                        tie_word_embeddings=True, max_position_embeddings=64, eos_token_id=1, pad_token_id=0)
    model = Qwen(config, rngs=nnx.Rngs(0))
    scoring = plain_scoring(40)
    learner = ProxyLearner(model, make_optimizer(3e-2, 20), scoring)
    rng = np.random.default_rng(0)
    prompt_ids = jnp.asarray(rng.integers(2, 40, (4, 6)), jnp.int32)
    prompt_mask = jnp.ones((4, 6), jnp.int32).at[0, :2].set(0)  # left padding in one row
    tokens = jnp.asarray(rng.integers(2, 40, (4, 8)), jnp.int32)
    mask = jnp.ones((4, 8), jnp.int32).at[1, 5:].set(0)
    losses = [learner.step(prompt_ids, prompt_mask, tokens, mask) for _ in range(15)]
    assert losses[-1] < 0.5 * losses[0], losses  # random tokens: ~log(40) = 3.7 at the start
    # the model object holds the learned weights: scoring it reproduces the learner's loss
    logp = score_completions(model, prompt_ids, prompt_mask, tokens, mask, scoring, lora=False, chunk_size=128)
    after = learner.step(prompt_ids, prompt_mask, tokens, mask)
    assert -float((logp * mask).sum() / mask.sum()) == pytest.approx(after, rel=1e-5)
