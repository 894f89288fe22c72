"""``CalibrateConfig``: every setting of one calibration run (GRPO on LoRA against a proxy).

Read by ``jaxdistill.rl.loop.CalibrationRun``; parsed from YAML and ``key=value`` by ``jaxdistill.config``
(``python -m jaxdistill.calibrate --help`` lists the fields). ``check_config`` refuses settings that cannot
train before any model is loaded.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jaxdistill.config import option
from jaxdistill.distributed import DistributedConfig
from jaxdistill.sharding import MeshConfig
from jaxdistill.training import holds_checkpoints


@dataclasses.dataclass
class CalibrateConfig:
    """A calibration run. Field names follow TRL's GRPOConfig where one exists."""

    # -- models and data --
    teacher: str = option("", "HF folder of the teacher to calibrate (config.json + safetensors)")
    proxy: str = option("", "HF folder of the frozen proxy student that measures distillability")
    teacher_tokenizer: str | None = option(None, "tokenizer folder of the teacher (default: the teacher folder)")
    proxy_tokenizer: str | None = option(None, "tokenizer folder of the proxy (default: the proxy folder)")
    task: str = option("arith", "task name: gsm8k, math500, csqa, nq_open, ifeval or arith")
    task_options: tuple[str, ...] = option((), "key=value options for the task, e.g. [difficulty=2] for arith")
    data_path: str | None = option(None, "local JSONL/parquet file or folder for the task (default: the HF hub)")
    train_split: str = option("train", "split the prompts are drawn from")
    eval_split: str = option("test", "split held-out accuracy is measured on")
    chat_template: bool = option(False, "render prompts with the tokenizer's chat template (else plain text)")
    output_dir: str = option("runs/calibrate", "where metrics, checkpoints and the exported teacher go")
    dtype: str = option("float32", "parameter and compute dtype: float32 or bfloat16")
    mesh: MeshConfig = option(MeshConfig(), "device mesh: data x fsdp x tensor (-1 takes the remaining devices)")
    distributed: DistributedConfig = option(DistributedConfig(), "multi-process runs: how this process joins "
                                                                 "(TPU pod, SLURM, explicit coordinator)")

    # -- the knob --
    eta: float = option(0.0, "calibration weight: > 0 distillable, < 0 undistillable, 0 plain RFT")
    calibration_mode: str = option("span", "span (aligned span log-prob gap), sequence (proxy log-prob per "
                                           "byte, closest to the paper) or alm (binary KL of span probs)")
    calibration_scope: str = option("all", "all: every rollout earns calibration reward; correct: only "
                                           "rollouts with task reward 1 (wrong ones get 0 calibration advantage)")
    calibration_subtract_reference: bool = option(False, "sequence mode: minus the reference teacher's "
                                                         "log-prob per byte")
    calibration_tau: float = option(1.0, "alm mode: temperature of the span probabilities")
    proxy_learning_rate: float = option(0.0, "0: the frozen proxy of the method; > 0: the proxy also learns "
                                             "(one AdamW step at this rate on every batch of rollouts, after "
                                             "scoring it), so r_cal measures what a student that has been "
                                             "reading the teacher still cannot match (jaxdistill.rl.proxy)")

    # -- GRPO --
    num_generations: int = option(4, "rollouts per prompt (G); advantages are normalised within each group")
    prompts_per_step: int = option(16, "prompts per optimizer step (the batch is prompts_per_step x G rollouts)")
    gradient_accumulation_steps: int = option(1, "micro-batches per step; each holds whole groups")
    num_iterations: int = option(1, "optimizer passes over the same rollouts (> 1 uses real importance ratios)")
    max_steps: int = option(100, "optimizer steps")
    learning_rate: float = option(2e-5, "peak learning rate of AdamW on the LoRA parameters (paper: 2e-5)")
    lr_schedule: str = option("constant", "constant, linear or cosine decay after warmup")
    warmup_steps: int = option(0, "linear warmup steps")
    weight_decay: float = option(0.0, "AdamW weight decay")
    max_grad_norm: float = option(1.0, "global gradient-norm clip (0 disables)")
    beta: float = option(0.04, "weight of KL(pi_theta || pi_ref); 0 skips the reference pass")
    kl_estimator: str = option("k3", "KL estimator: k1, k2 or k3")
    epsilon: float = option(0.2, "lower clip of the importance ratio (1 - epsilon)")
    epsilon_high: float | None = option(None, "upper clip (1 + epsilon_high); default epsilon")
    loss_type: str = option("grpo", "token aggregation: grpo (per-sequence mean), dr_grpo or dapo")
    scale_rewards: str = option("group", "reward scaling: group (std within group), batch or none")
    temperature: float = option(1.0, "sampling temperature of rollouts (log-probs are scored at it)")
    top_p: float = option(1.0, "nucleus filter of rollouts")
    top_k: int = option(0, "top-k filter of rollouts (0 = off)")
    max_completion_length: int = option(128, "new tokens per rollout")
    max_prompt_length: int = option(512, "largest prompt (in tokens) the sampler accepts")

    # -- LoRA --
    lora_rank: int = option(16, "LoRA rank (paper: 128)")
    lora_alpha: float = option(32.0, "LoRA alpha (paper: 128); scale = alpha / rank")
    lora_dropout: float = option(0.0, "dropout on the LoRA input")
    lora_targets: tuple[str, ...] = option(("q", "k", "v", "o", "gate", "up", "down"), "projections with adapters")

    # -- run control --
    seed: int = option(0, "seed of LoRA init, data order and sampling")
    eval_every: int = option(25, "held-out greedy accuracy every N steps (0: only at start and end)")
    eval_prompts: int = option(64, "held-out prompts per evaluation")
    save_every: int = option(25, "orbax checkpoint every N steps and at the end (0: only at the end)")
    resume: bool = option(False, "continue from the latest checkpoint in output_dir")
    max_bad_steps: int = option(5, "stop after this many consecutive steps with a NaN/Inf loss or gradient")
    tensorboard: bool = option(False, "also write TensorBoard scalars (needs tensorboardX)")
    progress: bool = option(True, "show a progress bar with ETA")
    export: bool = option(True, "export the merged teacher and the adapter at the end")


def check_config(config: CalibrateConfig) -> None:
    """Refuse settings that cannot train (before anything is loaded), naming the field and the fix."""
    missing = [name for name in ("teacher", "proxy") if not getattr(config, name)]
    if missing:
        raise ValueError(f"calibrate needs {' and '.join(missing)}: set them in the YAML config or as "
                         f"{missing[0]}=PATH (or run with no arguments for the tiny-world default run)")
    if config.num_generations < 2:
        raise ValueError(f"num_generations={config.num_generations}: GRPO normalises rewards within each prompt's "
                         "group of rollouts, so a group of one has no advantage to learn from; use 2 or more")
    for name in ("prompts_per_step", "max_completion_length"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")
    for name in ("max_steps", "eval_every", "save_every"):
        if getattr(config, name) < 0:
            raise ValueError(f"{name} must be >= 0, got {getattr(config, name)}")
    checkpoints = Path(config.output_dir) / "checkpoints"
    if not config.resume and holds_checkpoints(checkpoints):
        raise FileExistsError(f"{config.output_dir} already holds checkpoints of a calibration: set resume=true to "
                              "continue it, or choose another output_dir (starting over would overwrite its metrics)")
