"""Named advantage functions, chosen by a config field (``CalibrateConfig.advantage``), as in Tunix's
function registry: a variant of the reward-to-advantage step (a control, a new estimator) is a function
registered here under a name, never a patch of the loop.

An advantage function maps one step's rewards to per-rollout advantages::

    fn(task_rewards [N], cal_rewards [N], num_generations, *, eta, scale_rewards, calibration_scope, seed) -> [N]

with ``N = P * G`` rollouts, groups contiguous; ``seed`` is the step's own seed (a pure function of the run
seed and the step, so a resumed run replays the same draws).

Registered here:

- ``knob`` (the default): ``A = groupnorm(r_task) + eta * groupnorm(r_cal)``
  (:func:`jaxdistill.rl.advantages.combined_advantages`);
- ``permuted_task_reward``: a placebo control for plain RFT. The same advantages after the task rewards
  are shuffled across the batch: the updates keep their size and the reward its distribution, but no
  longer say which completion earned it. Accuracy that rises with ``knob`` but not with this rises because
  of the reward (``jaxdistill.experiments.rft_control``).
"""

from __future__ import annotations

from typing import Callable

import jax.numpy as jnp
import numpy as np

from jaxdistill.rl.advantages import combined_advantages


class Registry:
    """Functions of one kind by name; ``field`` is the config field that selects one (for errors)."""

    def __init__(self, kind: str, field: str):
        self.kind, self.field = kind, field
        self._functions: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[Callable], Callable]:
        """Decorator: ``@ADVANTAGE_FUNCTIONS.register("name")``. A name is registered once."""

        def add(fn: Callable) -> Callable:
            if name in self._functions:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._functions[name] = fn
            return fn

        return add

    def unregister(self, name: str) -> None:
        self._functions.pop(name)

    def get(self, name: str) -> Callable:
        if name not in self._functions:
            raise ValueError(f"{self.field}={name!r} is not a registered {self.kind}; choose one of "
                             f"{', '.join(self.names())}")
        return self._functions[name]

    def names(self) -> list[str]:
        return list(self._functions)


ADVANTAGE_FUNCTIONS = Registry("advantage function", "advantage")


@ADVANTAGE_FUNCTIONS.register("knob")
def knob_advantages(task_rewards, cal_rewards, num_generations, *, eta, scale_rewards, calibration_scope, seed):
    """``groupnorm(r_task) + eta * groupnorm(r_cal)``; ``seed`` is unused."""
    return combined_advantages(task_rewards, cal_rewards, num_generations, eta=eta, scale_rewards=scale_rewards,
                               calibration_scope=calibration_scope)


@ADVANTAGE_FUNCTIONS.register("permuted_task_reward")
def permuted_task_reward_advantages(task_rewards, cal_rewards, num_generations, *, eta, scale_rewards,
                                    calibration_scope, seed):
    """``knob`` on ``r_task[pi]``, ``pi`` a permutation of the whole batch drawn from ``seed``."""
    order = np.random.default_rng(seed).permutation(len(task_rewards))
    return knob_advantages(jnp.asarray(task_rewards)[order], cal_rewards, num_generations, eta=eta,
                           scale_rewards=scale_rewards, calibration_scope=calibration_scope, seed=seed)
