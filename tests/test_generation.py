"""The sampler: greedy parity with transformers, exact log-probs, filters, sharding, buckets, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from helpers import make_hf_model
from jaxdistill.generation import SamplingParams, generate, trace_count
from jaxdistill.generation.sampler import bucket_length, sample_step
from jaxdistill.models import LoraConfig, load_model
from jaxdistill.sharding import MeshConfig, make_mesh

PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15, 16, 17, 18, 19], [20, 21, 22]]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = {}
    for name in ("qwen2_tied", "qwen3_gqa"):
        folder = tmp_path_factory.mktemp(name)
        out[name] = (folder, make_hf_model(folder, name, seed=1))
    return out


@pytest.mark.parametrize("name", ["qwen2_tied", "qwen3_gqa"])
def test_greedy_is_token_identical_to_transformers(tiny, name):
    folder, torch_model = tiny[name]
    model, _ = load_model(folder)
    # pad = EOS (as in Qwen), so the pad ban does not apply and the argmax is unconstrained
    out = generate(model, PROMPTS, max_new_tokens=10, temperature=0.0, eos_ids=[1], pad_id=1)
    ours = out.completions()
    for prompt, completion in zip(PROMPTS, ours):
        ref = torch_model.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False,
                                   eos_token_id=1, pad_token_id=0)[0, len(prompt):].tolist()
        assert completion == ref[:len(completion)] and len(completion) == len(ref)
    # the padded batch in transformers agrees as well
    width = max(map(len, PROMPTS))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in PROMPTS])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in PROMPTS])
    batch_ref = torch_model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False,
                                     eos_token_id=1, pad_token_id=0)[:, width:]
    for row, completion in zip(batch_ref.tolist(), ours):
        assert row[:len(completion)] == completion


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_equal_a_full_forward(tiny, temperature):
    model, config = load_model(tiny["qwen3_gqa"][0])
    out = generate(model, PROMPTS, max_new_tokens=8, temperature=temperature, seed=3, eos_ids=[1],
                   return_entropy=True)
    ids = jnp.concatenate([out.prompt_ids, out.tokens], axis=1)
    mask = jnp.concatenate([out.prompt_mask, out.mask], axis=1)
    logits = model(ids, mask)[:, out.prompt_ids.shape[1] - 1:-1] / temperature
    logits = logits.at[..., 0].set(-jnp.inf)  # the pad id (0) is never sampled
    logp = jax.nn.log_softmax(logits, axis=-1)
    expected = jnp.where(out.mask == 1, jnp.take_along_axis(logp, out.tokens[..., None], axis=-1)[..., 0], 0.0)
    np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(expected), atol=1e-4)
    assert float(jnp.min(out.entropy * out.mask)) >= 0.0 and float(jnp.max(out.entropy)) > 0.1
    assert not bool(jnp.any((out.tokens == 0) & (out.mask == 1)))


def test_greedy_logprobs_are_the_full_softmax_of_a_forward(tiny):
    """Greedy decoding never picks the pad id, yet reports log-probs under the model's whole softmax
    (untempered, unfiltered: the pad ban does not renormalise them), and scoring reproduces them."""
    from jaxdistill.generation.scoring import completion_logprobs

    model, config = load_model(tiny["qwen3_gqa"][0])
    out = generate(model, PROMPTS, max_new_tokens=8, temperature=0.0, eos_ids=[1], pad_id=0,
                   vocab_limit=config.vocab_size - 3)
    ids = jnp.concatenate([out.prompt_ids, out.tokens], axis=1)
    mask = jnp.concatenate([out.prompt_mask, out.mask], axis=1)
    logp = jax.nn.log_softmax(model(ids, mask)[:, out.prompt_ids.shape[1] - 1:-1], axis=-1)
    expected = jnp.where(out.mask == 1, jnp.take_along_axis(logp, out.tokens[..., None], axis=-1)[..., 0], 0.0)
    np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(expected), atol=1e-5)
    assert float(jnp.max(jnp.exp(logp[..., 0]))) > 1e-3  # the banned pad id holds real mass here
    assert not bool(jnp.any((out.tokens == 0) & (out.mask == 1)))
    params = SamplingParams(max_new_tokens=8, temperature=0.0, eos_ids=(1,), pad_id=0,
                            vocab_limit=config.vocab_size - 3)
    scored = completion_logprobs(model, out.prompt_ids, out.prompt_mask, out.tokens, out.mask, params)
    np.testing.assert_allclose(np.asarray(scored), np.asarray(out.logprobs), atol=1e-5)


def _draws(logits_row, params, n=2000, seed=0):
    logits = jnp.tile(jnp.asarray(logits_row, jnp.float32)[None], (n, 1))
    keys = jax.random.split(jax.random.key(seed), n)
    tokens, logprobs, _ = sample_step(logits, keys, params)
    return np.asarray(tokens), np.asarray(logprobs)


@pytest.mark.parametrize("top_k,top_p", [(3, 1.0), (0, 0.8), (4, 0.9)])
def test_top_k_top_p_sample_only_the_allowed_set(top_k, top_p):
    rng = np.random.RandomState(0)
    logits = rng.normal(size=12) * 1.5
    params = SamplingParams(max_new_tokens=1, temperature=0.8, top_k=top_k, top_p=top_p, pad_id=11)
    tokens, logprobs = _draws(logits, params)
    # the allowed set and its renormalised distribution, computed independently in numpy
    scaled = logits / 0.8
    scaled[11] = -np.inf  # pad
    order = np.argsort(-scaled)
    allowed = list(order[:top_k]) if top_k else list(order)
    probs = np.exp(scaled[allowed] - scaled[allowed].max())
    probs /= probs.sum()
    if top_p < 1:
        cum = np.cumsum(probs) - probs
        allowed = [a for a, c in zip(allowed, cum) if c < top_p]
    p = np.exp(scaled[allowed] - scaled[allowed].max())
    p /= p.sum()
    assert set(np.unique(tokens)) <= set(allowed)
    freq = np.array([(tokens == a).mean() for a in allowed])
    tolerance = 4 * np.sqrt(p * (1 - p) / len(tokens)) + 0.005  # ~4 standard errors
    assert np.all(np.abs(freq - p) <= tolerance), (freq, p)
    np.testing.assert_allclose(np.exp(logprobs), p[[allowed.index(t) for t in tokens]], rtol=1e-5)


def test_vocab_limit_and_pad_are_never_sampled():
    logits = np.zeros(10, np.float32)
    logits[8:] = 5.0  # padding rows of a larger embedding would dominate
    tokens, _ = _draws(logits, SamplingParams(max_new_tokens=1, vocab_limit=8, pad_id=0))
    assert tokens.max() < 8 and 0 not in tokens


def test_negative_pad_id_bans_nothing():
    """pad_id < 0 means "no pad ban" (plain scoring); no id, not even the last one, is removed."""
    from jaxdistill.generation.sampler import filter_logits

    logits = jnp.arange(12, dtype=jnp.float32).reshape(2, 6)
    for temperature in (0.0, 1.0):
        out = filter_logits(logits, SamplingParams(max_new_tokens=1, temperature=temperature, pad_id=-1))
        np.testing.assert_array_equal(out, logits)
    banned = filter_logits(logits, SamplingParams(max_new_tokens=1, temperature=0.0, pad_id=5, vocab_limit=4))
    assert np.isneginf(np.asarray(banned)[:, 4:]).all() and np.isfinite(np.asarray(banned)[:, :4]).all()


def test_sharded_generation_equals_single_device(tiny):
    folder = tiny["qwen3_gqa"][0]
    single, _ = load_model(folder)
    expected = generate(single, PROMPTS, max_new_tokens=6, temperature=1.0, seed=7, num_generations=3)
    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    sharded, _ = load_model(folder, mesh=mesh)
    got = generate(sharded, PROMPTS, max_new_tokens=6, temperature=1.0, seed=7, num_generations=3, mesh=mesh)
    np.testing.assert_array_equal(np.asarray(got.tokens), np.asarray(expected.tokens))
    np.testing.assert_allclose(np.asarray(got.logprobs), np.asarray(expected.logprobs), atol=1e-5)
    assert got.tokens.shape == (12, 6)


def test_generations_are_independent_and_deterministic(tiny):
    model, _ = load_model(tiny["qwen3_gqa"][0])
    a = generate(model, PROMPTS[:2], max_new_tokens=6, seed=11, num_generations=4)
    b = generate(model, PROMPTS[:2], max_new_tokens=6, seed=11, num_generations=4)
    np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
    rows = {tuple(r) for r in np.asarray(a.tokens)[:4].tolist()}
    assert len(rows) > 1  # four samples of the same prompt are not copies
    np.testing.assert_array_equal(np.asarray(a.prompt_ids)[0], np.asarray(a.prompt_ids)[3])


def test_lora_switch_changes_samples_only_when_adapters_are_nonzero(tiny):
    model, _ = load_model(tiny["qwen3_gqa"][0], lora=LoraConfig(rank=2))
    on = generate(model, PROMPTS, max_new_tokens=5, temperature=0.0)
    off = generate(model, PROMPTS, max_new_tokens=5, temperature=0.0, lora=False)
    np.testing.assert_array_equal(np.asarray(on.tokens), np.asarray(off.tokens))
    for layer in model.layers:
        proj = layer.self_attn.q_proj
        proj.lora_b[...] = jnp.full(proj.lora_b[...].shape, 0.5)
    changed = generate(model, PROMPTS, max_new_tokens=5, temperature=0.0)
    assert not np.array_equal(np.asarray(changed.logprobs), np.asarray(off.logprobs))


def test_prompt_lengths_compile_once_per_bucket(tiny):
    model, _ = load_model(tiny["qwen2_tied"][0])
    lengths = [3, 9, 17, 5, 20]  # buckets 16, 16, 32, 16, 32
    before = trace_count()
    for n in lengths:
        generate(model, [list(range(3, 3 + n)), [4, 5]], max_new_tokens=4, temperature=0.0)
    assert trace_count() - before == len({bucket_length(n) for n in lengths}) == 2


def test_eos_stops_rows_and_reports_reason(tiny):
    model, _ = load_model(tiny["qwen3_gqa"][0])
    greedy = generate(model, PROMPTS, max_new_tokens=6, temperature=0.0)
    first = int(greedy.tokens[0, 2])  # make the 3rd greedy token of row 0 an EOS
    out = generate(model, PROMPTS, max_new_tokens=6, temperature=0.0, eos_ids=[first])
    assert out.finish_reasons[0] == "eos" and int(out.lengths[0]) <= 3
    assert np.asarray(out.mask)[0].sum() == int(out.lengths[0])


@pytest.mark.parametrize("kwargs,match", [
    (dict(prompts=[[1, 2], []]), "empty"),
    (dict(prompts=[]), "no prompts"),
    (dict(max_new_tokens=0), "max_new_tokens must be positive"),
    (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
    (dict(temperature=-0.1), "temperature must be >= 0"),
    (dict(prompts=[list(range(3, 40))], max_prompt_length=32), "max_prompt_length is 32; raise max_prompt_length"),
])
def test_bad_input_is_clear(tiny, kwargs, match):
    model, _ = load_model(tiny["qwen2_tied"][0])
    args = dict(prompts=[[3, 4]], max_new_tokens=4)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        generate(model, args.pop("prompts"), **args)


@pytest.mark.parametrize("temperature,top_k", [(1.0, 0), (0.7, 5)])
def test_scoring_reproduces_sampler_logprobs_in_chunks(tiny, temperature, top_k):
    from jaxdistill.generation.scoring import completion_logprobs

    model, _ = load_model(tiny["qwen3_gqa"][0])
    out = generate(model, PROMPTS, max_new_tokens=7, temperature=temperature, top_k=top_k, seed=5)
    params = SamplingParams(max_new_tokens=7, temperature=temperature, top_k=top_k, pad_id=0)
    scored = completion_logprobs(model, out.prompt_ids, out.prompt_mask, out.tokens, out.mask, params,
                                 chunk_size=3)  # 7 positions in chunks of 3: padding inside the last chunk
    np.testing.assert_allclose(np.asarray(scored), np.asarray(out.logprobs), atol=1e-4)
