"""The harm score (jaxdistill.rl.influence): its jvp against finite differences, the cross-tokenizer path
against the proxy's own tokenization, and the stability measure."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill.models import load_model
from jaxdistill.rl.influence import (direction_stability, harm_scores, retokenized_batch, sequence_logprobs,
                                     split_proxy, text_batch, tree_cosine, validation_direction)
from jaxdistill.tasks import get_task, train_tiny_tokenizers
from jaxdistill.tokenizer import load_tokenizer
from helpers import tiny_qwen_folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("influence")
    toks = train_tiny_tokenizers(root / "tokenizers", n_problems=200)
    proxy, _ = load_model(tiny_qwen_folder(root / "proxy", toks["proxy"], model_type="qwen2"), "float32")
    examples = get_task("arith", difficulty=1).load("train", limit=12)
    out = dict(proxy=proxy, proxy_tok=load_tokenizer(toks["proxy"]), teacher_tok=load_tokenizer(toks["teacher"]),
               prompts=[e.prompt for e in examples], texts=[e.solution for e in examples])
    graphdef, params, rest = split_proxy(proxy)  # every batch below has 6 rows: one compiled program each
    validation = text_batch(out["proxy_tok"], out["prompts"][:6], out["texts"][:6])
    u, _, _ = validation_direction(params, graphdef, rest, [validation], out["proxy_tok"].vocab_size)
    return dict(out, graphdef=graphdef, params=params, rest=rest, validation=validation, u=u)


def test_harm_is_the_directional_derivative_of_the_per_byte_logprob(world):
    graphdef, params, rest, u = world["graphdef"], world["params"], world["rest"], world["u"]
    vocab = world["proxy_tok"].vocab_size
    rollouts = text_batch(world["proxy_tok"], world["prompts"][6:], world["texts"][6:])
    harm = np.asarray(harm_scores(params, graphdef, rest, u, rollouts, vocab))

    @jax.jit
    def per_byte(p):
        return sequence_logprobs(p, graphdef, rest, rollouts, vocab) / rollouts.num_bytes

    eps = 1e-2  # u has unit norm: every parameter moves by about eps / sqrt(#parameters)
    plus = per_byte(jax.tree.map(lambda p, d: p + eps * d, params, u))
    minus = per_byte(jax.tree.map(lambda p, d: p - eps * d, params, u))
    finite = np.asarray((plus - minus) / (2 * eps))
    assert np.all(np.abs(harm) > 1e-4)  # a test of something: the scores are not zero
    np.testing.assert_allclose(harm, finite, rtol=2e-2, atol=2e-5)  # fp32: truncation O(eps^2) + rounding


def test_learning_the_validation_text_itself_is_the_least_harmful_step(world):
    """With one validation text v (here 6 copies of it: the same L_V): u = -grad log p(v) / ||.||, so
    harm(v) = -||grad log p(v)|| / bytes(v) = -||grad L_V|| * tokens(v) / bytes(v)."""
    graphdef, params, rest = world["graphdef"], world["params"], world["rest"]
    vocab = world["proxy_tok"].vocab_size
    v = text_batch(world["proxy_tok"], world["prompts"][:1] * 6, world["texts"][:1] * 6)
    u, norm, _ = validation_direction(params, graphdef, rest, [v], vocab)
    tokens = int(v.mask[0].sum())
    harm = float(harm_scores(params, graphdef, rest, u, v, vocab)[0])
    assert harm == pytest.approx(-norm * tokens / int(v.num_bytes[0]), rel=1e-4)


def test_cross_tokenizer_path_scores_what_the_proxy_reads(world):
    graphdef, params, rest, u = world["graphdef"], world["params"], world["rest"], world["u"]
    vocab = world["proxy_tok"].vocab_size
    prompts, texts = world["prompts"][6:], world["texts"][6:]
    teacher_ids = [world["teacher_tok"].encode(t) + [world["teacher_tok"].eos_id] for t in texts]
    crossed = retokenized_batch(world["teacher_tok"], teacher_ids, world["proxy_tok"], prompts)
    own = text_batch(world["proxy_tok"], prompts, texts)
    assert [len(r) for r in teacher_ids] != [int(n) for n in np.asarray(own.mask).sum(1)]  # other tokens
    np.testing.assert_array_equal(crossed.num_bytes, own.num_bytes)
    np.testing.assert_allclose(harm_scores(params, graphdef, rest, u, crossed, vocab),
                               harm_scores(params, graphdef, rest, u, own, vocab), rtol=1e-5, atol=1e-7)


def test_stability_is_the_cosine_of_two_halves(world):
    graphdef, params, rest = world["graphdef"], world["params"], world["rest"]
    vocab = world["proxy_tok"].vocab_size
    a = [world["validation"]]
    b = [text_batch(world["proxy_tok"], world["prompts"][6:], world["texts"][6:])]
    assert direction_stability(params, graphdef, rest, a, a, vocab) == pytest.approx(1.0, abs=1e-5)
    u_a = world["u"]
    u_b, _, _ = validation_direction(params, graphdef, rest, b, vocab)
    cosine = direction_stability(params, graphdef, rest, a, b, vocab)
    assert cosine == pytest.approx(tree_cosine(u_a, u_b)) and -1.0 <= cosine < 0.9999
    assert tree_cosine({"x": jnp.array([1.0, 0.0])}, {"x": jnp.array([1.0, 1.0])}) == pytest.approx(2 ** -0.5)
    with pytest.raises(ValueError, match="validation set is empty"):
        validation_direction(params, graphdef, rest, [], vocab)


def test_a_rematerialised_proxy_gives_the_same_direction_and_harm(world):
    """calibrate sets the proxy's ``remat`` to the config's in influence mode (its backward is the
    direction phase's memory peak): recomputing layers changes memory, not u or harm."""
    vocab = world["proxy_tok"].vocab_size
    rollouts = text_batch(world["proxy_tok"], world["prompts"][6:], world["texts"][6:])
    proxy = world["proxy"]
    try:
        proxy.remat = "full"
        graphdef, params, rest = split_proxy(proxy)
        u, norm, loss = validation_direction(params, graphdef, rest, [world["validation"]], vocab)
        harm = np.asarray(harm_scores(params, graphdef, rest, u, rollouts, vocab))
    finally:
        proxy.remat = "none"
    assert graphdef != world["graphdef"]  # a test of something: the program is another (remat in the graph)
    want = np.asarray(harm_scores(world["params"], world["graphdef"], world["rest"], world["u"], rollouts, vocab))
    np.testing.assert_allclose(harm, want, rtol=1e-5, atol=1e-7)
    assert tree_cosine(u, world["u"]) == pytest.approx(1.0, abs=1e-6)
