"""The GRPO learner: LoRA-only policy-gradient updates from scored rollouts.

One ``update`` call:

    for it in range(num_iterations):                  # reuse of the same rollouts (PPO-style)
        grads = mean over micro-batches (each holds whole groups) of
                d/d(lora) grpo_loss(logp_theta, old_logp, ref_logp, advantages, mask)
        lora, opt_state = optimizer(grads)            # skipped when the loss/grads are not finite

``old_logp`` comes from the sampler (scored at the sampling temperature, under the sampling filters);
``ref_logp`` from one forward pass with the adapters switched off (only when ``beta > 0``).
The frozen base weights are never differentiated and never copied.
"""

from __future__ import annotations

import dataclasses
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from jaxdistill.generation.sampler import SamplingParams
from jaxdistill.generation.scoring import completion_logprobs
from jaxdistill.models.lora import LoraParam
from jaxdistill.models.qwen import Qwen
from jaxdistill.rl.losses import grpo_loss
from jaxdistill.training import apply_updates, as_step_output, poison_if_nonfinite


@dataclasses.dataclass(frozen=True)
class GRPOSettings:
    """Static loss settings (hashable: part of the jit cache key)."""

    sampling: SamplingParams  # how rollouts were sampled (log-probs are re-scored the same way)
    epsilon: float = 0.2
    epsilon_high: float | None = None
    beta: float = 0.0
    kl_estimator: str = "k3"
    loss_type: str = "grpo"
    chunk_size: int = 128  # completion positions per logits chunk


@struct.dataclass
class Rollouts:
    """A batch of scored rollouts, rows grouped by prompt (G consecutive rows per prompt).

    prompt_ids, prompt_mask [N, P]; tokens, mask [N, C]; old_logp [N, C]; ref_logp [N, C] or None;
    advantages [N].
    """

    prompt_ids: jax.Array
    prompt_mask: jax.Array
    tokens: jax.Array
    mask: jax.Array
    old_logp: jax.Array
    advantages: jax.Array
    ref_logp: jax.Array | None = None

    def rows(self, start: int, stop: int) -> "Rollouts":
        return jax.tree.map(lambda x: x[start:stop], self)


def _policy_loss(lora_state, frozen_state, batch: Rollouts, graphdef, settings: GRPOSettings):
    model = nnx.merge(graphdef, lora_state, frozen_state)
    logp = completion_logprobs(model, batch.prompt_ids, batch.prompt_mask, batch.tokens, batch.mask,
                               settings.sampling, lora=True, chunk_size=settings.chunk_size)
    return grpo_loss(logp, batch.old_logp, batch.ref_logp, batch.advantages, batch.mask,
                     epsilon=settings.epsilon, epsilon_high=settings.epsilon_high, beta=settings.beta,
                     kl_estimator=settings.kl_estimator, loss_type=settings.loss_type,
                     max_completion_length=batch.tokens.shape[1])


@partial(jax.jit, static_argnames=("graphdef", "settings"))
def _loss_and_grads(lora_state, frozen_state, batch, graphdef, settings):
    (loss, metrics), grads = jax.value_and_grad(_policy_loss, has_aux=True)(
        lora_state, frozen_state, batch, graphdef, settings)
    return loss, metrics, poison_if_nonfinite(loss, grads)


@partial(jax.jit, static_argnames=("graphdef", "settings"))
def _reference_logprobs(lora_state, frozen_state, batch: Rollouts, graphdef, settings):
    model = nnx.merge(graphdef, lora_state, frozen_state)
    return jax.lax.stop_gradient(completion_logprobs(
        model, batch.prompt_ids, batch.prompt_mask, batch.tokens, batch.mask, settings.sampling,
        lora=False, chunk_size=settings.chunk_size))


class GRPOLearner:
    """Owns the LoRA parameters and optimizer state of ``model`` and updates them in place."""

    def __init__(self, model: Qwen, optimizer: optax.GradientTransformation, settings: GRPOSettings, *,
                 num_generations: int, gradient_accumulation_steps: int = 1, num_iterations: int = 1):
        if model.lora_config is None:
            raise ValueError("the GRPO learner trains LoRA adapters; load the teacher with a LoraConfig")
        self.model = model
        self.optimizer = optimizer
        self.settings = settings
        self.num_generations = num_generations
        self.accumulation = gradient_accumulation_steps
        self.num_iterations = num_iterations
        self.graphdef, self.lora_state, self.frozen_state = nnx.split(model, LoraParam, ...)
        self.set_state(self.lora_state, optimizer.init(self.lora_state))

    def set_state(self, lora_state, opt_state) -> None:
        """Install restored parameters and optimizer state (and push them into the model)."""
        self.lora_state, self.opt_state = as_step_output((lora_state, opt_state))
        nnx.update(self.model, self.lora_state)

    def reference_logprobs(self, batch: Rollouts) -> jax.Array | None:
        """log pi_ref of the completion tokens (adapters off), or None when beta = 0."""
        if self.settings.beta == 0:
            return None
        return _reference_logprobs(self.lora_state, self.frozen_state, batch, self.graphdef, self.settings)

    def micro_batches(self, batch: Rollouts) -> list[Rollouts]:
        """Split rows into ``gradient_accumulation_steps`` micro-batches of whole groups."""
        n = batch.tokens.shape[0]
        g = self.num_generations
        if n % g:
            raise ValueError(f"{n} rollouts do not divide into groups of num_generations={g}")
        groups = n // g
        if groups % self.accumulation:
            raise ValueError(f"{groups} groups do not split into gradient_accumulation_steps={self.accumulation} "
                             "micro-batches of whole groups; a micro-batch must hold whole groups")
        size = n // self.accumulation
        return [batch.rows(i * size, (i + 1) * size) for i in range(self.accumulation)]

    def update(self, batch: Rollouts) -> dict[str, Any]:
        """``num_iterations`` optimizer steps on the same rollouts; returns averaged metrics."""
        history = []
        for _ in range(self.num_iterations):
            grads_sum, metric_sum, loss_sum = None, None, 0.0
            for micro in self.micro_batches(batch):
                loss, metrics, grads = _loss_and_grads(self.lora_state, self.frozen_state, micro,
                                                       self.graphdef, self.settings)
                grads_sum = grads if grads_sum is None else jax.tree.map(jnp.add, grads_sum, grads)
                metric_sum = metrics if metric_sum is None else jax.tree.map(jnp.add, metric_sum, metrics)
                loss_sum = loss_sum + loss
            k = float(self.accumulation)
            grads = jax.tree.map(lambda g: g / k, grads_sum)
            self.lora_state, self.opt_state, grad_norm = apply_updates(self.lora_state, self.opt_state, grads,
                                                                       self.optimizer)
            history.append({"loss": loss_sum / k, "grad_norm": grad_norm,
                            **{key: v / k for key, v in metric_sum.items()}})
        nnx.update(self.model, self.lora_state)
        return {key: sum(h[key] for h in history) / len(history) for key in history[0]}
