"""The student learner: one jitted optimizer step on a ``DistillBatch``, full fine-tuning or LoRA only.

    trainable, frozen = split(student)            # all nnx.Param, or only LoraParam adapters
    loss, grads = value_and_grad(distill_loss)(trainable; frozen, teacher, batch)
    trainable, opt_state = optimizer(grads)       # skipped when the loss or a gradient is not finite

The teacher is frozen: its state enters the program as an input and is never differentiated.
"""

from __future__ import annotations

from functools import partial
from typing import Any, Optional

import jax
import optax
from flax import nnx

from jaxdistill.distill.objectives import DistillBatch, LossSettings, distill_loss
from jaxdistill.models.lora import LoraParam
from jaxdistill.models.qwen import Qwen
from jaxdistill.training import apply_updates, poison_if_nonfinite, as_step_output


def _loss(trainable, frozen, teacher_state, batch, graphdef, teacher_graphdef, settings):
    student = nnx.merge(graphdef, trainable, frozen)
    teacher = None if teacher_graphdef is None else nnx.merge(teacher_graphdef, teacher_state)
    return distill_loss(student, teacher, batch, settings)


@partial(jax.jit, static_argnames=("graphdef", "teacher_graphdef", "settings", "optimizer"),
         donate_argnames=("trainable", "opt_state"))
def _train_step(trainable, opt_state, frozen, teacher_state, batch, graphdef, teacher_graphdef, settings,
                optimizer):
    (loss, metrics), grads = jax.value_and_grad(_loss, has_aux=True)(
        trainable, frozen, teacher_state, batch, graphdef, teacher_graphdef, settings)
    grads = poison_if_nonfinite(loss, grads)
    trainable, opt_state, grad_norm = apply_updates(trainable, opt_state, grads, optimizer)
    return trainable, opt_state, {**metrics, "loss": loss, "grad_norm": grad_norm}


@partial(jax.jit, static_argnames=("graphdef", "teacher_graphdef", "settings"))
def _eval_loss(trainable, frozen, teacher_state, batch, graphdef, teacher_graphdef, settings):
    return _loss(trainable, frozen, teacher_state, batch, graphdef, teacher_graphdef, settings)


class StudentLearner:
    """Owns the student's trainable parameters and optimizer state; ``step`` updates them in place.

    Args:
      student: the model to train. With ``lora_only`` it must carry LoRA adapters (only they train).
      optimizer: e.g. ``jaxdistill.training.make_optimizer(...)`` (skips non-finite steps).
      settings: the loss (static).
      teacher: the frozen teacher for token_kd / span_kd (None for nll).
    """

    def __init__(self, student: Qwen, optimizer: optax.GradientTransformation, settings: LossSettings, *,
                 teacher: Optional[Qwen] = None, lora_only: bool = False):
        if lora_only and student.lora_config is None:
            raise ValueError("lora_only=True but the student has no LoRA adapters; load it with a LoraConfig")
        if settings.kind != "nll" and teacher is None:
            raise ValueError(f"the {settings.kind} loss needs a teacher")
        self.student = student
        self.optimizer = optimizer
        self.settings = settings
        self.graphdef, self.trainable, self.frozen = nnx.split(student, LoraParam if lora_only else nnx.Param, ...)
        if teacher is None:
            self.teacher_graphdef, self.teacher_state = None, None
        else:
            self.teacher_graphdef, self.teacher_state = nnx.split(teacher)
        self.set_state(self.trainable, optimizer.init(self.trainable))

    def set_state(self, trainable: nnx.State, opt_state: Any) -> None:
        """Install restored parameters and optimizer state (and push them into the model)."""
        self.trainable, self.opt_state = as_step_output((trainable, opt_state))
        nnx.update(self.student, self.trainable)

    def step(self, batch: DistillBatch) -> dict[str, jax.Array]:
        """One optimizer step; returns ``loss``, ``grad_norm``, ``tokens`` (and ``spans``) as device scalars."""
        self.trainable, self.opt_state, metrics = _train_step(
            self.trainable, self.opt_state, self.frozen, self.teacher_state, batch, self.graphdef,
            self.teacher_graphdef, self.settings, self.optimizer)
        nnx.update(self.student, self.trainable)
        return metrics

    def loss(self, batch: DistillBatch) -> float:
        """The objective's loss on ``batch`` without updating anything."""
        loss, _ = _eval_loss(self.trainable, self.frozen, self.teacher_state, batch, self.graphdef,
                             self.teacher_graphdef, self.settings)
        return float(loss)
