"""Rematerialisation changes memory, not results: loss and LoRA gradients equal the plain forward's."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxdistill.models import LoraConfig, Qwen, QwenConfig
from jaxdistill.models.lora import LoraParam
from jaxdistill.models.qwen import check_remat


def _loss_and_grads(model, ids, mask, remat):
    model.remat = remat
    graphdef, lora, rest = nnx.split(model, LoraParam, ...)

    def loss(lora):
        logp = jax.nn.log_softmax(nnx.merge(graphdef, lora, rest)(ids, mask))
        return jnp.sum(jnp.take_along_axis(logp[:, :-1], ids[:, 1:, None], axis=-1)[..., 0] * mask[:, 1:])

    return jax.jit(jax.value_and_grad(loss))(lora)


def test_remat_keeps_loss_and_gradients():
    config = QwenConfig(model_type="qwen3", vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=8, qk_norm=True,
                        max_position_embeddings=64)
    model = Qwen(config, rngs=nnx.Rngs(0), lora=LoraConfig(rank=4, alpha=8.0))
    ids = jax.random.randint(jax.random.key(1), (2, 12), 0, 64)
    mask = jnp.ones_like(ids).at[0, :3].set(0)
    base_loss, base_grads = _loss_and_grads(model, ids, mask, "none")
    for remat in ("dots", "full"):
        loss, grads = _loss_and_grads(model, ids, mask, remat)
        np.testing.assert_allclose(float(loss), float(base_loss), rtol=1e-6)
        for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(base_grads)):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)
    assert any(float(jnp.max(jnp.abs(g))) > 0 for g in jax.tree.leaves(base_grads))
    with pytest.raises(ValueError, match="remat='some'"):
        check_remat("some")
