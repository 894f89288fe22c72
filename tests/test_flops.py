"""Model FLOPs for MFU: the count agrees with XLA's own for a forward, and device kinds map to peaks."""
import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from jaxdistill.flops import PEAK_FLOPS, accelerator_name, mfu, peak_flops, sequence_forward_flops, train_flops
from jaxdistill.models import Qwen, QwenConfig


def test_forward_flops_match_xla_cost_analysis():
    config = QwenConfig(model_type="qwen3", vocab_size=512, hidden_size=128, intermediate_size=384,
                        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                        qk_norm=True, max_position_embeddings=256)
    model = Qwen(config, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    rows, length = 2, 64
    ids = jnp.ones((rows, length), jnp.int32)

    def forward(state, ids):
        return nnx.merge(graphdef, state)(ids, jnp.ones_like(ids))

    xla = jax.jit(forward).lower(state, ids).compile().cost_analysis()
    xla = xla[0] if isinstance(xla, list) else xla
    ours = rows * sequence_forward_flops(config, length)
    # XLA also counts the elementwise work (norms, softmax, SwiGLU) and the full (masked) attention square
    assert 0.8 * xla["flops"] <= ours <= 1.05 * xla["flops"], (ours, xla["flops"])
    assert train_flops(config, rows, length, frozen_base=False) == pytest.approx(3 * ours)
    assert train_flops(config, rows, length, frozen_base=True) == pytest.approx(2 * ours)


@pytest.mark.parametrize("kind,name", [("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA H200", "H200"),
                                       ("NVIDIA A100-SXM4-80GB", "A100"), ("TPU v4", "TPU v4"),
                                       ("TPU v5 lite", "TPU v5e"), ("TPU v5p", "TPU v5p"),
                                       ("TPU v6 lite", "TPU v6e"), ("cpu", None)])
def test_device_kinds_map_to_peak_flops(kind, name):
    assert accelerator_name(kind) == name
    assert name is None or PEAK_FLOPS[name] > 1e14


def test_no_mfu_on_a_cpu():
    assert peak_flops(jax.devices("cpu")) is None
    assert mfu(1e12, 1.0, None) is None and mfu(1e12, 2.0, 1e12) == 0.5
