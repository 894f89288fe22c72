"""What every training loop here shares: the optimizer, metric sinks, orbax checkpoints, a bad-step guard.

- ``make_optimizer``: ``clip_by_global_norm -> adamw(schedule)`` wrapped in ``optax.apply_if_finite``,
  so a step whose loss or gradients are NaN/Inf changes nothing and is counted in the optimizer state.
- ``MetricsLogger``: one JSON line per step (process 0 only), optional TensorBoard, a rich progress
  bar with ETA.
- ``Checkpointer``: orbax ``CheckpointManager`` holding trainable params, optimizer state and a JSON
  blob (step, data-iterator state, anything else needed to resume exactly).
"""

from __future__ import annotations

import json
import logging
import math
import time
import functools
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp
from flax import nnx

log = logging.getLogger(__name__)


# ---- optimizer --------------------------------------------------------------------------------

def make_schedule(learning_rate: float, max_steps: int, warmup_steps: int = 0,
                  schedule: str = "constant") -> optax.Schedule:
    """constant | linear | cosine decay after a linear warmup from 0."""
    decay_steps = max(max_steps - warmup_steps, 1)
    if schedule == "constant":
        main = optax.constant_schedule(learning_rate)
    elif schedule == "linear":
        main = optax.linear_schedule(learning_rate, 0.0, decay_steps)
    elif schedule == "cosine":
        main = optax.cosine_decay_schedule(learning_rate, decay_steps)
    else:
        raise ValueError(f"unknown lr_schedule {schedule!r}: use constant, linear or cosine")
    if warmup_steps <= 0:
        return main
    return optax.join_schedules([optax.linear_schedule(0.0, learning_rate, warmup_steps), main], [warmup_steps])


def make_optimizer(learning_rate: float, max_steps: int, *, warmup_steps: int = 0, schedule: str = "constant",
                   weight_decay: float = 0.0, max_grad_norm: float | None = 1.0,
                   adam_b1: float = 0.9, adam_b2: float = 0.999) -> optax.GradientTransformation:
    """AdamW with clipping; non-finite updates are skipped (counted in ``ApplyIfFiniteState``)."""
    parts = [optax.clip_by_global_norm(max_grad_norm)] if max_grad_norm else []
    parts.append(optax.adamw(make_schedule(learning_rate, max_steps, warmup_steps, schedule),
                             b1=adam_b1, b2=adam_b2, weight_decay=weight_decay))
    # We stop the run ourselves after too many bad steps, so the wrapper never gives up on its own.
    return optax.apply_if_finite(optax.chain(*parts), max_consecutive_errors=2**30)


def cached_optimizer(learning_rate: float, max_steps: int, warmup_steps: int = 0, schedule: str = "constant",
                     weight_decay: float = 0.0, max_grad_norm: float | None = 1.0) -> optax.GradientTransformation:
    """``make_optimizer``, one object per setting: the optimizer is a static argument of the jitted steps,
    so runs in one process with the same recipe (a worker's successive jobs, a resumed run) reuse the
    compiled programs. A constant schedule without warmup does not depend on ``max_steps``."""
    if schedule == "constant" and warmup_steps == 0:
        max_steps = 1
    return _optimizer(learning_rate, max(max_steps, 1), warmup_steps, schedule, weight_decay, max_grad_norm or None)


@functools.lru_cache(maxsize=32)
def _optimizer(learning_rate, max_steps, warmup_steps, schedule, weight_decay, max_grad_norm):
    return make_optimizer(learning_rate, max_steps, warmup_steps=warmup_steps, schedule=schedule,
                          weight_decay=weight_decay, max_grad_norm=max_grad_norm)


@partial(jax.jit, static_argnames=("optimizer",), donate_argnames=("params", "opt_state"))
def apply_updates(params: Any, opt_state: Any, grads: Any, optimizer: optax.GradientTransformation):
    """One optimizer step: (new params, new optimizer state, global gradient norm). Every learner
    updates through it: the student learner inside its jitted step, the GRPO learner (which sums
    gradients over micro-batches first) and the learning proxy after their loss-and-gradient program;
    pass a ``cached_optimizer`` so that runs with the same settings share the compiled step."""
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, optax.tree.norm(grads)


@jax.jit
def as_step_output(tree: Any) -> Any:
    """``tree`` copied by a compiled program, so its arrays carry the layout a jitted step returns
    (committed, shardings in XLA's canonical form). A learner passes its initial parameters and
    optimizer state through it: the first update then compiles the same program as every later one,
    instead of one for the fresh state and another for the updated state."""
    return jax.tree.map(jnp.copy, tree)


def poison_if_nonfinite(loss: jax.Array, grads: Any) -> Any:
    """Gradients made NaN when the loss is not finite, so ``apply_if_finite`` skips the step."""
    ok = jnp.isfinite(loss)
    return jax.tree.map(lambda g: jnp.where(ok, g, jnp.nan), grads)


def bad_step_counts(opt_state) -> tuple[int, int, bool]:
    """(consecutive bad steps, total bad steps, last step was finite) from the optimizer state."""
    return int(opt_state.notfinite_count), int(opt_state.total_notfinite), bool(opt_state.last_finite)


class TooManyBadSteps(RuntimeError):
    """Raised after ``max_bad_steps`` consecutive non-finite steps."""


# ---- metrics ----------------------------------------------------------------------------------

def _scalar(value: Any) -> float | int | str:
    if isinstance(value, (str, int)):
        return value
    value = float(jax.device_get(value))
    return value if math.isfinite(value) else str(value)


class MetricsLogger:
    """Per-step metrics to ``metrics.jsonl`` (+ TensorBoard), and a rich progress bar with ETA."""

    def __init__(self, output_dir: str | Path, total_steps: int, *, description: str = "training",
                 tensorboard: bool = False, start_step: int = 0, show_progress: bool = True,
                 append: bool = False):
        self.is_main = jax.process_index() == 0
        self.path = Path(output_dir) / "metrics.jsonl"
        self.writer = None
        self.progress = None
        if not self.is_main:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not append and self.path.exists():
            self.path.unlink()
        if append and self.path.exists():  # drop lines past the resumed step (they will be redone)
            kept = [line for line in self.path.read_text().splitlines()
                    if line and json.loads(line).get("step", 0) <= start_step]
            self.path.write_text("".join(line + "\n" for line in kept))
        if tensorboard:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(Path(output_dir) / "tensorboard"))
        if show_progress:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                                     TextColumn("{task.fields[info]}"), transient=False)
            self.task = self.progress.add_task(description, total=total_steps, completed=start_step, info="")
            self.progress.start()

    def log(self, step: int, metrics: dict[str, Any], info_keys: tuple[str, ...] = ()) -> dict[str, Any]:
        record = {"step": step, **{k: _scalar(v) for k, v in metrics.items()}}
        if not self.is_main:
            return record
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k != "step":
                    self.writer.add_scalar(k, v, step)
        if self.progress is not None:
            info = "  ".join(f"{k.split('/')[-1]}={record[k]:.3g}" for k in info_keys
                             if isinstance(record.get(k), (int, float)))
            self.progress.update(self.task, completed=step, info=info)
        return record

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self.writer is not None:
            self.writer.close()


def measures_the_machine(key: str) -> bool:
    """Whether a metric measures this machine and process (wall-clock times, speeds, compiles) rather than
    the run: such figures differ between identical runs, a resumed one included."""
    return (key in ("step_time", "tokens_per_second", "update/mfu", "update/tflops_per_second")
            or key.startswith(("time/", "compile/")) or key.endswith("/tokens_per_second"))


def read_metrics(output_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` in a run folder."""
    path = Path(output_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line]


# ---- checkpoints ------------------------------------------------------------------------------

def holds_checkpoints(directory: str | Path) -> bool:
    """Whether ``directory`` exists and is not empty (a run that ``resume=true`` would continue)."""
    directory = Path(directory)
    return directory.is_dir() and any(directory.iterdir())


class Checkpointer:
    """orbax checkpoints of (trainable params, optimizer state, JSON extras) every ``save_steps`` steps."""

    def __init__(self, directory: str | Path, *, max_to_keep: int = 2):
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, params: nnx.State, opt_state: Any, extra: dict[str, Any]) -> None:
        self.manager.save(step, args=ocp.args.Composite(
            params=ocp.args.StandardSave(params), opt_state=ocp.args.StandardSave(opt_state),
            extra=ocp.args.JsonSave(extra)))
        self.manager.wait_until_finished()

    def restore(self, step: int, params_like: nnx.State, opt_state_like: Any) -> tuple[nnx.State, Any, dict]:
        """Restore onto the structure (and shardings) of ``params_like`` / ``opt_state_like``."""
        abstract = lambda tree: jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)  # noqa: E731
        restored = self.manager.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract(params_like)),
            opt_state=ocp.args.StandardRestore(abstract(opt_state_like)),
            extra=ocp.args.JsonRestore()))
        return restored["params"], restored["opt_state"], dict(restored["extra"])

    def close(self) -> None:
        self.manager.close()


class StepTimer:
    """Wall time of the last step (seconds)."""

    def __init__(self):
        self.start = time.perf_counter()

    def lap(self) -> float:
        now = time.perf_counter()
        elapsed, self.start = now - self.start, now
        return elapsed


class PhaseClock:
    """Seconds per phase of a step: ``clock.mark("update", state)`` charges the time since the previous
    mark (or the clock's start) to "update", once ``state``'s arrays are computed.

    JAX runs device work asynchronously, so a phase's time is only its own after waiting for its
    results (``jax.block_until_ready``). That wait removes the overlap of one phase's device work with
    the next one's dispatch, so pass results only for phases whose outputs stay on the device; a phase
    that copied its results to the host has waited for them already and passes none."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.last = time.perf_counter()

    def mark(self, phase: str, *results: Any) -> None:
        if results:
            jax.block_until_ready(results)
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self.last
        self.last = now

    def metrics(self) -> dict[str, float]:
        return {f"time/{phase}": seconds for phase, seconds in self.seconds.items()}

