"""The registry of advantage functions: the knob by default, the permuted-reward placebo by name."""
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdistill.rl.advantages import combined_advantages
from jaxdistill.rl.registry import ADVANTAGE_FUNCTIONS, Registry

TASK = jnp.array([1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0])
CAL = jnp.array([-0.3, -1.2, -0.5, -0.9, -2.0, -0.1, -0.4, -0.7])
SETTINGS = dict(eta=0.5, scale_rewards="group", calibration_scope="all")


def test_knob_is_combined_advantages():
    out = ADVANTAGE_FUNCTIONS.get("knob")(TASK, CAL, 4, seed=7, **SETTINGS)
    np.testing.assert_array_equal(out, combined_advantages(TASK, CAL, 4, **SETTINGS))


def test_permuted_task_reward_shuffles_the_task_rewards_only_and_replays_from_its_seed():
    permuted = ADVANTAGE_FUNCTIONS.get("permuted_task_reward")
    out = permuted(TASK, CAL, 4, seed=7, **SETTINGS)
    np.testing.assert_array_equal(out, permuted(TASK, CAL, 4, seed=7, **SETTINGS))  # a pure function of seed
    order = np.random.default_rng(7).permutation(len(TASK))
    np.testing.assert_array_equal(out, combined_advantages(TASK[order], CAL, 4, **SETTINGS))
    assert not np.array_equal(out, combined_advantages(TASK, CAL, 4, **SETTINGS))  # the information is gone
    others = {tuple(np.asarray(permuted(TASK, CAL, 4, seed=s, **SETTINGS))) for s in range(5)}
    assert len(others) > 1  # each step draws its own permutation


def test_unknown_names_and_double_registration_are_clear_errors():
    with pytest.raises(ValueError, match="advantage='grpo' is not a registered advantage function; choose one of "
                                         "knob, permuted_task_reward"):
        ADVANTAGE_FUNCTIONS.get("grpo")
    registry = Registry("advantage function", "advantage")
    registry.register("mine")(lambda *a, **k: None)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("mine")(lambda *a, **k: None)
    registry.unregister("mine")
    assert registry.names() == []


def test_the_config_field_selects_a_registered_function(tmp_path):
    from jaxdistill.rl.config import CalibrateConfig, check_config

    config = CalibrateConfig(teacher="t", proxy="p", output_dir=str(tmp_path))
    assert config.advantage == "knob"
    check_config(config)
    with pytest.raises(ValueError, match="advantage='grpo' is not a registered"):
        check_config(CalibrateConfig(teacher="t", proxy="p", output_dir=str(tmp_path), advantage="grpo"))
