"""Foundation: Qwen ports against transformers, HF round trips, LoRA, KV cache, sharding, bad input."""
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P
from safetensors.numpy import load_file, save_file

from helpers import TINY_CONFIGS, left_padded_batch, make_hf_model, torch_logits
from jaxdistill.models import LoraConfig, LoraParam, Qwen, QwenConfig, load_model, save_lora, save_model
from jaxdistill.sharding import MeshConfig, describe_sharding, make_mesh, shard_model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """name -> (folder, torch model) for every tiny config."""
    out = {}
    for name in TINY_CONFIGS:
        folder = tmp_path_factory.mktemp(name)
        out[name] = (folder, make_hf_model(folder, name))
    return out


def _valid_max_diff(a, b, mask):
    return float(np.abs(np.asarray(a) - np.asarray(b))[np.asarray(mask).astype(bool)].max())


@pytest.mark.parametrize("name", list(TINY_CONFIGS))
def test_logits_match_transformers_with_left_padding(checkpoints, name):
    folder, torch_model = checkpoints[name]
    model, config = load_model(folder)
    ids, mask, positions = left_padded_batch(config.vocab_size)
    ours = model(jnp.asarray(ids), jnp.asarray(mask))
    assert ours.shape == (3, ids.shape[1], config.vocab_size)
    assert _valid_max_diff(ours, torch_logits(torch_model, ids, mask, positions), mask) <= 1e-4


def test_config_flags_follow_model_family(checkpoints):
    _, c2 = load_model(checkpoints["qwen2_tied"][0])
    _, c3 = load_model(checkpoints["qwen3_gqa"][0])
    assert (c2.qkv_bias, c2.qk_norm, c2.tie_word_embeddings) == (True, False, True)
    assert (c3.qkv_bias, c3.qk_norm, c3.head_dim, c3.num_attention_heads // c3.num_key_value_heads) == \
        (False, True, 16, 4)


@pytest.mark.parametrize("name", ["qwen2_tied", "qwen3_gqa"])
def test_save_model_round_trips_through_transformers(checkpoints, name, tmp_path):
    import transformers

    folder, _ = checkpoints[name]
    model, config = load_model(folder)
    save_model(model, tmp_path / "out")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    ids, mask, positions = left_padded_batch(config.vocab_size, seed=1)
    assert _valid_max_diff(model(jnp.asarray(ids), jnp.asarray(mask)),
                           torch_logits(reloaded, ids, mask, positions), mask) <= 1e-4
    assert json.loads((tmp_path / "out" / "generation_config.json").read_text())["eos_token_id"] == 1


def _randomise_lora(model, seed=0):
    """Give every adapter non-zero B so LoRA really changes the function."""
    key = jax.random.PRNGKey(seed)
    state = nnx.state(model, LoraParam)
    leaves, tree = jax.tree.flatten(state)
    keys = jax.random.split(key, len(leaves))
    nnx.update(model, jax.tree.unflatten(tree, [0.1 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves)]))


def test_lora_merged_export_matches_lora_forward(checkpoints, tmp_path):
    import transformers

    folder, _ = checkpoints["qwen3_gqa"]
    lora = LoraConfig(rank=4, alpha=8.0, targets=("q", "k", "v", "o", "gate", "up", "down"))
    model, config = load_model(folder, lora=lora)
    ids, mask, positions = left_padded_batch(config.vocab_size, seed=2)
    ids, mask = jnp.asarray(ids), jnp.asarray(mask)
    base = model(ids, mask)
    assert _valid_max_diff(base, model(ids, mask, lora=False), mask) == 0.0  # fresh adapter: B = 0
    _randomise_lora(model)
    with_lora, without = model(ids, mask), model(ids, mask, lora=False)
    assert _valid_max_diff(without, base, mask) <= 1e-6  # lora=False is the untouched reference
    assert _valid_max_diff(with_lora, base, mask) > 1e-2  # the adapter really changes the function
    save_model(model, tmp_path / "merged")
    merged = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    assert _valid_max_diff(with_lora, torch_logits(merged, np.asarray(ids), np.asarray(mask), positions),
                           mask) <= 1e-4
    save_lora(model, tmp_path / "adapter")
    adapter = load_file(str(tmp_path / "adapter" / "adapter.safetensors"))
    assert len(adapter) == 2 * 7 * config.num_hidden_layers
    assert all("lora_" in k for k in adapter)


def test_lora_state_is_the_only_trainable_set(checkpoints):
    model, config = load_model(checkpoints["qwen2_tied"][0], lora=LoraConfig(rank=2, targets=("q", "v")))
    trainable = nnx.state(model, LoraParam)
    paths = ["/".join(map(str, p)) for p, _ in nnx.to_flat_state(trainable)]
    assert len(paths) == 2 * 2 * config.num_hidden_layers
    assert all(p.split("/")[-2] in ("q_proj", "v_proj") for p in paths)


@pytest.mark.parametrize("name", ["qwen25_untied", "qwen3_gqa"])
def test_cached_decoding_equals_full_forward(checkpoints, name):
    folder, _ = checkpoints[name]
    model, config = load_model(folder)
    ids, mask, _ = left_padded_batch(config.vocab_size, lengths=(5, 3, 6), seed=3)
    rng = np.random.RandomState(4)
    steps = 5
    new = rng.randint(3, config.vocab_size, size=(3, steps))
    full_ids = np.concatenate([ids, new], axis=1)
    full_mask = np.concatenate([mask, np.ones_like(new)], axis=1)
    full = np.asarray(model(jnp.asarray(full_ids), jnp.asarray(full_mask)))

    decode = nnx.jit(lambda m, i, a, c: m.decode(i, a, c))
    cache = model.init_cache(batch_size=3, max_len=full_ids.shape[1] + 2)
    logits, cache = decode(model, jnp.asarray(ids), jnp.asarray(mask), cache)
    assert _valid_max_diff(logits, full[:, :ids.shape[1]], mask) <= 1e-4
    for t in range(steps):
        step_logits, cache = decode(model, jnp.asarray(new[:, t:t + 1]), jnp.ones((3, 1), jnp.int32), cache)
        np.testing.assert_allclose(np.asarray(step_logits[:, 0]), full[:, ids.shape[1] + t], atol=1e-4)
    assert int(cache.index) == full_ids.shape[1]
    np.testing.assert_array_equal(np.asarray(cache.positions), full_mask.sum(1))


@pytest.mark.parametrize("mesh_shape", [dict(data=1, fsdp=2, tensor=4), dict(data=8, fsdp=1, tensor=1)])
def test_sharded_forward_equals_single_device(checkpoints, mesh_shape):
    assert jax.device_count() == 8, "conftest forces 8 host devices"
    folder, _ = checkpoints["qwen3_gqa"]
    single, config = load_model(folder)
    mesh = make_mesh(MeshConfig(**mesh_shape))
    sharded, _ = load_model(folder, mesh=mesh, lora=LoraConfig(rank=4))
    ids, mask, _ = left_padded_batch(config.vocab_size, lengths=(8, 5, 8, 2, 7, 8, 6, 3), seed=5)
    expected = single(jnp.asarray(ids), jnp.asarray(mask))
    got = nnx.jit(lambda m, i, a: m(i, a))(sharded, jnp.asarray(ids), jnp.asarray(mask))
    assert _valid_max_diff(got, expected, mask) <= 1e-5
    specs = describe_sharding(sharded)
    if mesh_shape["tensor"] == 4:
        # q_proj [64, 8 * 16] splits embed over fsdp and heads over tensor; MLP width over tensor.
        assert specs["layers/0/self_attn/q_proj/kernel"] == P("fsdp", "tensor")
        assert specs["layers/0/mlp/down_proj/kernel"] == P("tensor", "fsdp")
        assert specs["embed_tokens"] == P("tensor", "fsdp")
        assert specs["layers/0/self_attn/q_proj/lora_a"][0] == "fsdp"  # rank stays whole
        kernel = sharded.layers[0].self_attn.q_proj.kernel[...]
        assert kernel.addressable_shards[0].data.shape == (32, 32)
    else:
        assert all(axis is None for spec in specs.values() for axis in spec)
        assert len(sharded.embed_tokens[...].sharding.device_set) == 8  # replicated on all 8


def test_shard_model_moves_an_existing_model(checkpoints):
    model, _ = load_model(checkpoints["qwen2_tied"][0])
    mesh = make_mesh(MeshConfig(fsdp=2, tensor=4))
    shard_model(model, mesh)
    assert len(model.embed_tokens[...].sharding.device_set) == 8


def test_shard_rows_splits_rows_over_the_batch_axes_when_they_divide():
    from jaxdistill.sharding import shard_rows

    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
    rows8, rows6 = shard_rows((np.zeros((8, 3)), np.arange(8)), mesh), shard_rows(np.zeros((6, 3)), mesh)
    assert rows8[0].sharding.spec == P(("data", "fsdp"), None) and rows8[1].sharding.spec == P(("data", "fsdp"))
    assert rows8[0].addressable_shards[0].data.shape == (2, 3)  # 8 rows over data x fsdp = 4
    assert rows6.sharding.is_fully_replicated or len(rows6.devices()) == 1  # 6 rows do not divide by 4
    assert isinstance(shard_rows(np.zeros(3), None), jax.Array)


def test_new_model_saves_and_loads(tmp_path):
    config = QwenConfig(model_type="qwen3", vocab_size=40, hidden_size=16, intermediate_size=24,
                        num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1, head_dim=8,
                        qk_norm=True, eos_token_id=1)
    model = Qwen(config, rngs=nnx.Rngs(0))
    save_model(model, tmp_path / "m")
    loaded, _ = load_model(tmp_path / "m")
    ids = jnp.arange(6)[None] % 40
    np.testing.assert_allclose(np.asarray(loaded(ids)), np.asarray(model(ids)), atol=1e-6)


def test_bfloat16_load_runs(checkpoints):
    model, config = load_model(checkpoints["qwen3_gqa"][0], dtype="bfloat16")
    assert model.embed_tokens[...].dtype == jnp.bfloat16
    logits = model(jnp.ones((1, 4), jnp.int32))
    assert logits.dtype == jnp.float32 and bool(jnp.isfinite(logits).all())


# ---- bad input ----------------------------------------------------------------------------------

def _copy(checkpoints, tmp_path, name="qwen2_tied"):
    dst = tmp_path / "ckpt"
    shutil.copytree(checkpoints[name][0], dst)
    return dst


def test_missing_folder_and_config_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_model(tmp_path / "empty")


def test_unsupported_model_type_is_refused(checkpoints, tmp_path):
    folder = _copy(checkpoints, tmp_path)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "llama"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="model_type 'llama'"):
        load_model(folder)


def _edit_weights(folder, edit):
    tensors = load_file(str(folder / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})


def test_missing_tensor_is_named(checkpoints, tmp_path):
    folder = _copy(checkpoints, tmp_path)
    _edit_weights(folder, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"missing tensor\(s\) \['model.layers.1.mlp.up_proj.weight'\]"):
        load_model(folder)


def test_extra_tensor_is_named(checkpoints, tmp_path):
    folder = _copy(checkpoints, tmp_path)
    _edit_weights(folder, lambda t: t.update({"model.layers.0.extra.weight": np.zeros(3, np.float32)}))
    with pytest.raises(ValueError, match="unexpected tensor 'model.layers.0.extra.weight'"):
        load_model(folder)


def test_misshaped_tensor_is_named(checkpoints, tmp_path):
    folder = _copy(checkpoints, tmp_path)
    _edit_weights(folder, lambda t: t.update({"model.norm.weight": np.ones(5, np.float32)}))
    with pytest.raises(ValueError, match=r"'model.norm.weight' has shape \(5,\), expected \(32,\)"):
        load_model(folder)


def test_pickle_checkpoint_is_refused(checkpoints, tmp_path):
    folder = _copy(checkpoints, tmp_path)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ValueError, match="safetensors only"):
        load_model(folder)


def test_sharded_checkpoint_index_loads(checkpoints, tmp_path):
    folder, _ = checkpoints["qwen25_untied"]
    model, config = load_model(folder)
    save_model(model, tmp_path / "sharded", max_shard_size=20_000)
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    assert len(list((tmp_path / "sharded").glob("*.safetensors"))) > 1
    again, _ = load_model(tmp_path / "sharded")
    ids = jnp.arange(10)[None] % config.vocab_size
    np.testing.assert_array_equal(np.asarray(again(ids)), np.asarray(model(ids)))


def test_bad_mesh_is_clear():
    with pytest.raises(ValueError, match="needs 6 devices"):
        make_mesh(MeshConfig(data=2, fsdp=3, tensor=1))
