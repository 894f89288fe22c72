"""``CalibrateConfig``: every setting of one calibration run (GRPO on LoRA against a proxy).

Read by ``jaxdistill.rl.loop.CalibrationRun``; parsed from YAML and ``key=value`` by ``jaxdistill.config``
(``python -m jaxdistill.calibrate --help`` lists the fields). ``check_config`` refuses settings that cannot
train before any model is loaded.
"""

from __future__ import annotations

import dataclasses

from jaxdistill.config import TrainingConfig, option
from jaxdistill.distributed import DistributedConfig
from jaxdistill.rl.registry import ADVANTAGE_FUNCTIONS
from jaxdistill.sharding import MeshConfig
from jaxdistill.tasks import list_tasks
from jaxdistill.tasks.loading import check_split_sources


@dataclasses.dataclass
class CalibrateConfig(TrainingConfig):
    """A calibration run. Field names follow TRL's GRPOConfig where one exists (``beta``: the KL weight;
    ``temperature``: the sampling temperature)."""

    # -- models and data --
    teacher: str = option("", "HF folder of the teacher to calibrate (config.json + safetensors)")
    proxy: str = option("", "HF folder of the frozen proxy student that measures distillability")
    teacher_tokenizer: str | None = option(None, "tokenizer folder of the teacher (default: the teacher folder)")
    proxy_tokenizer: str | None = option(None, "tokenizer folder of the proxy (default: the proxy folder)")
    task: str = option("arith", "task name", choices=list_tasks())
    task_options: tuple[str, ...] = option((), "key=value options for the task, e.g. [difficulty=2] for arith; "
                                               "[version=2] selects arith world v2 (gold text with detours)")
    data_path: str | None = option(None, "local data folder for the task, holding a file per split (default: the "
                                         "HF hub); one file only with eval_data_path, so that the held-out "
                                         "split is never the training data")
    eval_data_path: str | None = option(None, "local file or folder of the held-out split (default: data_path)")
    train_split: str = option("train", "split the prompts are drawn from")
    eval_split: str = option("test", "split held-out accuracy is measured on")
    chat_template: bool = option(False, "render prompts with the tokenizer's chat template (else plain text)")
    output_dir: str = option("runs/calibrate", "where metrics, checkpoints and the exported teacher go")
    mesh: MeshConfig = option(MeshConfig(), "device mesh: data x fsdp x tensor (-1 takes the remaining devices)")
    distributed: DistributedConfig = option(DistributedConfig(), "multi-process runs: how this process joins "
                                                                 "(TPU pod, SLURM, explicit coordinator)")

    # -- the knob --
    eta: float = option(0.0, "calibration weight: > 0 distillable, < 0 undistillable, 0 plain RFT")
    calibration_mode: str = option("span", "span (aligned span log-prob gap), sequence (proxy log-prob per "
                                           "byte, closest to the paper), alm (binary KL of span probs) or "
                                           "influence (this project's extension: minus the harm score, how "
                                           "much an SFT step on the text would raise the proxy's loss on "
                                           "held-out gold text; its selection test did not pass, so not "
                                           "the default; docs/align.md)",
                                   choices=("span", "sequence", "alm", "influence"))
    calibration_scope: str = option("all", "all: every rollout earns calibration reward; correct: only "
                                           "rollouts with task reward 1 (wrong ones get 0 calibration advantage)",
                                    choices=("all", "correct"))
    calibration_subtract_reference: bool = option(False, "sequence mode: minus the reference teacher's "
                                                         "log-prob per byte")
    calibration_tau: float = option(1.0, "alm mode: temperature of the span probabilities", gt=0)
    influence_validation_size: int = option(1024, "influence mode: gold solutions behind the harm direction, "
                                                  "held out from the end of train_split (never trained on)", ge=0)
    influence_validation_task_options: tuple[str, ...] = option(
        (), "influence mode: the task options whose gold solutions are the validation text, in place of "
            "task_options (the same problems, another style of solution: e.g. [difficulty=1] with "
            "task_options=[difficulty=1,version=2] measures harm on world v1's gold, the text the mixed "
            "world's students learnt; empty: the task's own gold)")
    influence_batch_size: int = option(64, "influence mode: validation texts per gradient pass (memory)", ge=1)
    influence_direction_steps: int = option(1, "influence mode with proxy_learning_rate > 0: recompute the harm "
                                               "direction every N steps (a frozen proxy's is computed once)", ge=1)
    advantage: str = option("knob", "advantage function (jaxdistill.rl.registry): knob = groupnorm(r_task) + eta "
                                    "groupnorm(r_cal); permuted_task_reward = the same after shuffling the task "
                                    "rewards across the batch (a placebo control)")
    proxy_learning_rate: float = option(0.0, "0: the frozen proxy of the method; > 0: the proxy also learns "
                                             "(one AdamW step at this rate on every batch of rollouts, after "
                                             "scoring it), so r_cal measures what a student that has been "
                                             "reading the teacher still cannot match (jaxdistill.rl.proxy)", ge=0)

    # -- GRPO --
    num_generations: int = option(4, "rollouts per prompt (G); advantages are normalised within each group", ge=2)
    prompts_per_step: int = option(16, "prompts per optimizer step (the batch is prompts_per_step x G rollouts)",
                                   ge=1)
    gradient_accumulation_steps: int = option(1, "micro-batches per step; each holds whole groups", ge=1)
    num_iterations: int = option(1, "optimizer passes over the same rollouts (> 1 uses real importance ratios)",
                                 ge=1)
    max_steps: int = option(100, "optimizer steps", ge=0)
    learning_rate: float = option(2e-5, "peak learning rate of AdamW on the LoRA parameters (paper: 2e-5)", gt=0)
    beta: float = option(0.04, "weight of KL(pi_theta || pi_ref); 0 skips the reference pass", ge=0)
    kl_estimator: str = option("k3", "KL estimator: k1, k2 or k3", choices=("k1", "k2", "k3"))
    epsilon: float = option(0.2, "lower clip of the importance ratio (1 - epsilon)", ge=0, le=1)
    epsilon_high: float | None = option(None, "upper clip (1 + epsilon_high); default epsilon", ge=0)
    loss_type: str = option("grpo", "token aggregation: grpo (per-sequence mean), dr_grpo or dapo",
                            choices=("grpo", "dr_grpo", "dapo"))
    scale_rewards: str = option("group", "reward scaling: group (std within group), batch or none",
                                choices=("group", "batch", "none"))
    temperature: float = option(1.0, "sampling temperature of rollouts (log-probs are scored at it)", gt=0)
    top_p: float = option(1.0, "nucleus filter of rollouts", gt=0, le=1)
    top_k: int = option(0, "top-k filter of rollouts (0 = off)", ge=0)
    max_completion_length: int = option(128, "new tokens per rollout", ge=1)
    max_prompt_length: int = option(512, "largest prompt (in tokens) the sampler accepts", ge=1)

    # -- LoRA --
    lora_rank: int = option(16, "LoRA rank (paper: 128)", ge=1)
    lora_alpha: float = option(32.0, "LoRA alpha (paper: 128); scale = alpha / rank", gt=0)
    lora_dropout: float = option(0.0, "dropout on the LoRA input", ge=0, le=1)
    lora_targets: tuple[str, ...] = option(("q", "k", "v", "o", "gate", "up", "down"), "projections with adapters")

    # -- run control --
    seed: int = option(0, "seed of LoRA init, data order and sampling")
    eval_steps: int = option(25, "held-out greedy accuracy every N steps (0: only at start and end)", ge=0)
    eval_num_prompts: int = option(64, "held-out prompts per evaluation", ge=1)
    keep_accuracy_within: float | None = option(
        None, "early stopping by accuracy (this project's extension, off by default): at step 0, every "
              "validation_steps and at the end, greedy accuracy on validation_num_prompts validation problems; "
              "the exported teacher is the latest validated step at most this far below step 0's (a fraction: "
              "0.05 = 5 points), not the last step (a learning proxy is exported as at the last step). None: "
              "the last step, as the method has it", ge=0)
    validation_num_prompts: int = option(200, "keep_accuracy_within: validation problems, those of eval_split that "
                                              "follow the eval set (from prompt eval_num_prompts on), so the "
                                              "eval set's accuracy never selects the teacher it reports", ge=1)
    validation_steps: int = option(10, "keep_accuracy_within: validate every N steps (a setting of the run, not "
                                       "of how it is watched: it decides which step is exported)", ge=1)
    save_steps: int = option(25, "orbax checkpoint every N steps and at the end (0: only at the end)", ge=0)
    resume: bool = option(False, "continue from the latest checkpoint in output_dir")
    export: bool = option(True, "export the merged teacher and the adapter at the end")

    def validate(self) -> None:
        check_config(self)
        super().validate()


def check_config(config: CalibrateConfig) -> None:
    """Refuse settings that cannot train (before anything is loaded), naming the field and the fix.
    The ranges of single fields are declared with them and checked by ``config.validate()``."""
    missing = [name for name in ("teacher", "proxy") if not getattr(config, name)]
    if missing:
        why = (" (the calibration reward of eta != 0 is measured against the proxy; eta = 0, plain RFT, "
               "still loads one)" if "proxy" in missing else "")
        raise ValueError(f"calibrate needs {' and '.join(missing)}{why}: set them in the YAML config or as "
                         f"{missing[0]}=PATH (or run with no arguments for the tiny-world default run)")
    if config.calibration_mode == "influence" and config.influence_validation_size < 2:
        raise ValueError(f"influence_validation_size={config.influence_validation_size}: calibration_mode=influence "
                         "takes the direction of harm and its stability (two disjoint halves) from gold "
                         "validation text, so it needs at least 2 texts (1024 by default)")
    if config.num_generations < 2:
        raise ValueError(f"num_generations={config.num_generations}: GRPO normalises rewards within each prompt's "
                         "group of rollouts, so a group of one has no advantage to learn from; use 2 or more")
    ADVANTAGE_FUNCTIONS.get(config.advantage)  # an unknown name: an error listing the registered ones
    check_split_sources(config.data_path, config.eval_data_path, config.train_split, config.eval_split)


#: The config fields that name what a calibration reads: compared by content, not by path (``run_folder``).
INPUT_FIELDS = ("teacher", "proxy", "teacher_tokenizer", "proxy_tokenizer", "data_path", "eval_data_path")
