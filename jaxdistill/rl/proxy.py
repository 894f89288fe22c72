"""A proxy that keeps learning from the teacher during calibration (``proxy_learning_rate > 0``).

The method's proxy is frozen: r_cal compares the teacher with a student that has never read it. Then
any consistent new habit of the teacher (a fixed marker, a reworded line) stays "surprising" for the
whole run, although a real student learns it in a few distillation steps. With a learning proxy, the
proxy takes one SFT step on every batch of the teacher's rollouts right after scoring them, as a
sequence-level KD student would, so r_cal measures what a student that has been reading the teacher
still cannot match:

    r_cal(t)  = calibration reward of the rollouts of step t under proxy_{t-1}
    proxy_t   = AdamW step on  L(phi) = mean over completion tokens of  -log p_phi(token | prefix)

All rollouts are learned from (a student sees wrong samples too). The update reuses the token ids the
scorer built for the reward, so it costs one proxy forward and backward pass per step.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxdistill.generation.sampler import SamplingParams
from jaxdistill.generation.scoring import completion_logprobs
from jaxdistill.models.qwen import Qwen
from jaxdistill.training import apply_updates, poison_if_nonfinite, as_step_output


def completion_nll(logprobs: jax.Array, mask: jax.Array) -> jax.Array:
    """Mean negative log-likelihood over completion tokens (scalar).

    logprobs: float [N, C]  log p of each completion token (any value where ``mask`` is 0).
    mask:     int/bool [N, C]  1 on completion tokens.
    """
    weights = mask.astype(jnp.float32)
    return -(jnp.where(mask.astype(bool), logprobs, 0.0) * weights).sum() / jnp.maximum(weights.sum(), 1.0)


def _nll(params, rest, graphdef, prompt_ids, prompt_mask, tokens, mask, scoring):
    model = nnx.merge(graphdef, params, rest)
    logp = completion_logprobs(model, prompt_ids, prompt_mask, tokens, mask, scoring, lora=False)
    return completion_nll(logp, mask)


@partial(jax.jit, static_argnames=("graphdef", "scoring"))
def _nll_and_grads(params, rest, prompt_ids, prompt_mask, tokens, mask, graphdef, scoring):
    loss, grads = jax.value_and_grad(_nll)(params, rest, graphdef, prompt_ids, prompt_mask, tokens, mask, scoring)
    return loss, poison_if_nonfinite(loss, grads)


class ProxyLearner:
    """Owns the proxy's parameters and optimizer state and updates them (and the model) in place."""

    def __init__(self, model: Qwen, optimizer: optax.GradientTransformation, scoring: SamplingParams):
        self.model = model
        self.optimizer = optimizer
        self.scoring = scoring
        self.graphdef, self.params, self.rest = nnx.split(model, nnx.Param, ...)
        self.set_state(self.params, optimizer.init(self.params))

    def set_state(self, params, opt_state) -> None:
        """Install restored parameters and optimizer state (and push them into the model)."""
        self.params, self.opt_state = as_step_output((params, opt_state))
        nnx.update(self.model, self.params)

    def step(self, prompt_ids, prompt_mask, tokens, mask) -> float:
        """One SFT step on completions ``tokens`` [N, C] (``mask`` [N, C]) after prompts [N, P]; returns the
        loss before the step (mean NLL per completion token)."""
        loss, grads = _nll_and_grads(self.params, self.rest, prompt_ids, prompt_mask, tokens, mask,
                                     self.graphdef, self.scoring)
        self.params, self.opt_state, _ = apply_updates(self.params, self.opt_state, grads, self.optimizer)
        nnx.update(self.model, self.params)
        return float(loss)
