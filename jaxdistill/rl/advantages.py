"""Group-relative advantages for GRPO with a calibration knob.

Rollouts come in groups: ``G = num_generations`` completions of the same prompt. Rewards are given
either flat, shaped ``[P * G]`` with groups contiguous (rows ``i*G .. i*G + G - 1`` belong to prompt
``i``, the order TRL and the sampler produce), or already grouped, shaped ``[P, G]``. Every function
returns arrays in the shape it was given.

Notation for one group ``g`` with valid rollouts ``V_g`` (``mask`` true) and ``n_g = |V_g|``::

    mean_g = sum_{i in V_g} r_i / n_g
    std_g  = sqrt( sum_{i in V_g} (r_i - mean_g)^2 / max(n_g - ddof, 1) )

``scale_rewards`` picks the normaliser (names and the batch variant as in TRL's ``GRPOConfig``)::

    "group":  A_i = (r_i - mean_g) / (std_g     + eps)
    "batch":  A_i = (r_i - mean_g) / (std_batch + eps)   std_batch over all valid rollouts of the batch
    "none":   A_i =  r_i - mean_g

Invalid rollouts (``mask`` false) are left out of every statistic and get advantage 0. A micro-batch
must hold whole groups (docs/design.md §5): the reshape to ``[P, G]`` fails loudly otherwise.

Defaults follow TRL: ``eps = 1e-4`` and the unbiased standard deviation (``ddof = 1``, as
``torch.std``). With ``ddof = 1`` a group with a single valid rollout has ``std_g = 0`` and its
advantage is 0 (its deviation from its own mean is 0), never NaN.
"""
from __future__ import annotations

from typing import Literal, Optional

import jax.numpy as jnp

Array = jnp.ndarray
ScaleRewards = Literal["group", "batch", "none"]
CalibrationScope = Literal["all", "correct"]

_SCALE_REWARDS = ("group", "batch", "none")
_CALIBRATION_SCOPES = ("all", "correct")


def to_groups(values: Array, num_generations: Optional[int] = None) -> Array:
    """Reshapes per-rollout values into one row per prompt.

    Args:
      values: ``[P * G]`` (groups contiguous) or ``[P, G]``.
      num_generations: ``G``; required for flat input, checked against ``values.shape[1]`` otherwise.

    Returns:
      ``[P, G]``.

    Raises:
      ValueError: flat length not a multiple of ``G`` (a micro-batch that splits a group), or a
        ``[P, G]`` input whose ``G`` disagrees with ``num_generations``.
    """
    values = jnp.asarray(values)
    if values.ndim == 2:
        if num_generations is not None and values.shape[1] != num_generations:
            raise ValueError(
                f"rewards shaped {values.shape} but num_generations={num_generations}"
            )
        return values
    if values.ndim != 1:
        raise ValueError(f"rewards must be [P * G] or [P, G], got shape {values.shape}")
    if num_generations is None:
        raise ValueError("flat rewards [P * G] need num_generations")
    if num_generations < 1 or values.shape[0] % num_generations != 0:
        raise ValueError(
            f"{values.shape[0]} rollouts do not split into whole groups of "
            f"num_generations={num_generations}: a micro-batch must hold whole groups"
        )
    return values.reshape(-1, num_generations)


def _grouped_mask(mask: Optional[Array], grouped: Array) -> Array:
    """``[P, G]`` boolean validity mask, all true when ``mask`` is None."""
    if mask is None:
        return jnp.ones(grouped.shape, dtype=bool)
    return jnp.asarray(mask, dtype=bool).reshape(grouped.shape)


def group_mean(rewards: Array, mask: Array) -> Array:
    """Masked mean within each group.

    ``mean_g = sum_i m_i r_i / max(sum_i m_i, 1)``.

    Args:
      rewards: ``[P, G]``.
      mask: ``[P, G]`` bool, true for valid rollouts.

    Returns:
      ``[P, 1]`` (0 for a group with no valid rollout).
    """
    count = jnp.sum(mask, axis=1, keepdims=True)
    total = jnp.sum(jnp.where(mask, rewards, 0.0), axis=1, keepdims=True)
    return total / jnp.maximum(count, 1)


def group_std(rewards: Array, mask: Array, ddof: int = 1) -> Array:
    """Masked standard deviation within each group.

    ``std_g = sqrt( sum_i m_i (r_i - mean_g)^2 / max(n_g - ddof, 1) )`` with ``n_g = sum_i m_i``.

    Args:
      rewards: ``[P, G]``.
      mask: ``[P, G]`` bool.
      ddof: 1 for the unbiased estimate (TRL, ``torch.std``), 0 for the population one.

    Returns:
      ``[P, 1]``.
    """
    count = jnp.sum(mask, axis=1, keepdims=True)
    centred = jnp.where(mask, rewards - group_mean(rewards, mask), 0.0)
    return jnp.sqrt(jnp.sum(centred**2, axis=1, keepdims=True) / jnp.maximum(count - ddof, 1))


def batch_std(rewards: Array, mask: Array, ddof: int = 1) -> Array:
    """Masked standard deviation of all valid rewards of the batch (TRL's ``scale_rewards="batch"``).

    ``std_batch = sqrt( sum_{p,i} m (r - mean_batch)^2 / max(n - ddof, 1) )`` over the raw rewards
    (not the group-centred ones), as TRL computes it.

    Args:
      rewards: ``[P, G]``.
      mask: ``[P, G]`` bool.
      ddof: degrees-of-freedom correction.

    Returns:
      a scalar ``[]``.
    """
    count = jnp.sum(mask)
    mean = jnp.sum(jnp.where(mask, rewards, 0.0)) / jnp.maximum(count, 1)
    centred = jnp.where(mask, rewards - mean, 0.0)
    return jnp.sqrt(jnp.sum(centred**2) / jnp.maximum(count - ddof, 1))


def normalize_rewards(
    rewards: Array,
    num_generations: Optional[int] = None,
    *,
    mask: Optional[Array] = None,
    scale_rewards: ScaleRewards = "group",
    eps: float = 1e-4,
    ddof: int = 1,
) -> Array:
    """Group-relative advantages of one reward: ``groupnorm(r)``.

    ``A_i = (r_i - mean_g) / (s + eps)`` with ``s = std_g`` ("group"), ``std_batch`` ("batch"), or
    no division at all ("none": ``A_i = r_i - mean_g``). Invalid rollouts get ``A_i = 0``.

    Args:
      rewards: ``[P * G]`` (groups contiguous) or ``[P, G]``.
      num_generations: ``G``, needed for flat rewards.
      mask: same shape as ``rewards``, true for valid rollouts; None means all valid.
      scale_rewards: "group", "batch" or "none".
      eps: added to the standard deviation.
      ddof: standard-deviation correction (1: unbiased, as TRL).

    Returns:
      advantages, same shape as ``rewards``, float32.
    """
    if scale_rewards not in _SCALE_REWARDS:
        raise ValueError(f"scale_rewards must be one of {_SCALE_REWARDS}, got {scale_rewards!r}")
    shape = jnp.shape(rewards)
    grouped = to_groups(jnp.asarray(rewards, dtype=jnp.float32), num_generations)
    valid = _grouped_mask(mask, grouped)
    centred = grouped - group_mean(grouped, valid)
    if scale_rewards == "group":
        centred = centred / (group_std(grouped, valid, ddof) + eps)
    elif scale_rewards == "batch":
        centred = centred / (batch_std(grouped, valid, ddof) + eps)
    return jnp.where(valid, centred, 0.0).reshape(shape)


def correct_rollout_mask(
    task_rewards: Array, *, threshold: float = 1.0, mask: Optional[Array] = None
) -> Array:
    """Rollouts that count as correct: ``r_task >= threshold`` (and valid).

    Args:
      task_rewards: any shape, e.g. ``[P * G]``.
      threshold: 1.0 for a binary verifier; lower for partial-credit rewards.
      mask: same shape, validity; None means all valid.

    Returns:
      bool, same shape as ``task_rewards``.
    """
    correct = jnp.asarray(task_rewards) >= threshold
    if mask is not None:
        correct = correct & jnp.asarray(mask, dtype=bool)
    return correct


def calibration_advantages(
    cal_rewards: Array,
    task_rewards: Optional[Array] = None,
    num_generations: Optional[int] = None,
    *,
    calibration_scope: CalibrationScope = "all",
    correct_threshold: float = 1.0,
    mask: Optional[Array] = None,
    scale_rewards: ScaleRewards = "group",
    eps: float = 1e-4,
    ddof: int = 1,
) -> Array:
    """Group-normalised calibration reward, over all rollouts or over the correct ones only.

    "all":     ``A^cal = groupnorm(r_cal)`` over the valid rollouts.
    "correct": ``C = {i : r_task_i >= correct_threshold}``;
               ``A^cal_i = groupnorm_C(r_cal)_i`` for ``i in C`` (mean and std over ``C`` within the
               group) and ``A^cal_i = 0`` otherwise, so a wrong answer can neither earn nor lose
               calibration reward, and wrong rollouts do not shift the baseline of the right ones.

    Args:
      cal_rewards: ``[P * G]`` or ``[P, G]``.
      task_rewards: same shape; required for ``calibration_scope="correct"``.
      num_generations: ``G`` for flat input.
      calibration_scope: "all" or "correct".
      correct_threshold: task reward at or above which a rollout is correct.
      mask: rollout validity, same shape; None means all valid.
      scale_rewards, eps, ddof: as in :func:`normalize_rewards`.

    Returns:
      same shape as ``cal_rewards``.
    """
    if calibration_scope not in _CALIBRATION_SCOPES:
        raise ValueError(
            f"calibration_scope must be one of {_CALIBRATION_SCOPES}, got {calibration_scope!r}"
        )
    if calibration_scope == "correct":
        if task_rewards is None:
            raise ValueError('calibration_scope="correct" needs task_rewards')
        mask = correct_rollout_mask(task_rewards, threshold=correct_threshold, mask=mask)
    return normalize_rewards(
        cal_rewards, num_generations, mask=mask, scale_rewards=scale_rewards, eps=eps, ddof=ddof
    )


def combined_advantages(
    task_rewards: Array,
    cal_rewards: Optional[Array] = None,
    num_generations: Optional[int] = None,
    *,
    eta: float | Array = 0.0,
    scale_rewards: ScaleRewards = "group",
    calibration_scope: CalibrationScope = "all",
    correct_threshold: float = 1.0,
    mask: Optional[Array] = None,
    eps: float = 1e-4,
    ddof: int = 1,
) -> Array:
    """The calibration knob: ``A = groupnorm(r_task) + eta * groupnorm(r_cal)``.

    Each term is normalised within its group separately (docs/design.md §2), so ``eta`` sets the weight of
    calibration against task utility in units of within-group standard deviations, whatever the
    reward scales. ``eta > 0``: distillable; ``eta < 0``: undistillable; ``eta = 0`` (or
    ``cal_rewards=None``): plain RFT.

    Args:
      task_rewards: ``[P * G]`` or ``[P, G]``, the verifier reward in [0, 1].
      cal_rewards: same shape, the calibration reward; None for task-only advantages.
      num_generations: ``G`` for flat input.
      eta: the knob; a Python float or a traced scalar.
      scale_rewards: "group", "batch" or "none", applied to both terms.
      calibration_scope: "all" or "correct" (see :func:`calibration_advantages`).
      correct_threshold: task reward at or above which a rollout is correct.
      mask: rollout validity, same shape; None means all valid.
      eps, ddof: as in :func:`normalize_rewards`.

    Returns:
      ``A``, same shape as ``task_rewards``.
    """
    task_term = normalize_rewards(
        task_rewards, num_generations, mask=mask, scale_rewards=scale_rewards, eps=eps, ddof=ddof
    )
    if cal_rewards is None or (isinstance(eta, (int, float)) and eta == 0):
        return task_term  # plain RFT, whatever r_cal holds (0 x NaN would be NaN)
    cal_term = calibration_advantages(
        cal_rewards,
        task_rewards,
        num_generations,
        calibration_scope=calibration_scope,
        correct_threshold=correct_threshold,
        mask=mask,
        scale_rewards=scale_rewards,
        eps=eps,
        ddof=ddof,
    )
    return task_term + eta * cal_term


def zero_variance_group_fraction(
    rewards: Array,
    num_generations: Optional[int] = None,
    *,
    mask: Optional[Array] = None,
    atol: float = 1e-6,
) -> Array:
    """Fraction of groups whose valid rewards are all equal: they give no learning signal.

    A group counts when ``max_i r_i - min_i r_i <= atol`` over its valid rollouts; groups with no valid
    rollout are left out of numerator and denominator. Returns 0 when no group has a valid rollout.

    Args:
      rewards: ``[P * G]`` or ``[P, G]``.
      num_generations: ``G`` for flat input.
      mask: rollout validity, same shape; None means all valid.
      atol: tolerance on the within-group range.

    Returns:
      a scalar ``[]`` in [0, 1].
    """
    grouped = to_groups(jnp.asarray(rewards, dtype=jnp.float32), num_generations)
    valid = _grouped_mask(mask, grouped)
    high = jnp.max(jnp.where(valid, grouped, -jnp.inf), axis=1)
    low = jnp.min(jnp.where(valid, grouped, jnp.inf), axis=1)
    has_valid = jnp.any(valid, axis=1)
    flat = has_valid & (jnp.where(has_valid, high - low, 0.0) <= atol)
    return jnp.sum(flat) / jnp.maximum(jnp.sum(has_valid), 1)
