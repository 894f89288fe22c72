"""Distilling a student: the config, the training loop, checkpoints and the final export.

    student (+ LoRA), teacher <- load_model(...)
    for step in range(start, max_steps):
        batch   = BatchMaker(step)          # prompts; gold / teacher / student completions; alignment
        metrics = learner.step(batch)       # one optimizer step (non-finite steps skipped and counted)
        log metrics; checkpoint every save_steps
    save_model(student, output_dir/model, tokenizer_dir=student tokenizer)

Objectives (``objective=``):

- ``sft``: the student learns the gold solutions (negative log-likelihood).
- ``seqkd``: the student learns teacher samples (negative log-likelihood); ``seqkd_only_correct`` keeps
  only samples the task verifier accepts.
- ``kd``: teacher-forced token-level KD on teacher samples: ``divergence`` (forward_kl, reverse_kl or
  jsd with ``jsd_beta``), ``kd_temperature``, ``top_k``. One tokenizer: per-token distributions on the shared
  real vocabulary. Two tokenizers: span-aligned likelihood matching.
- ``gkd``: on-policy distillation as TRL's GKD: a fraction ``lmbda`` of each step's sequences is sampled
  by the student, the rest are teacher samples (or gold, ``off_policy_data=gold``); the teacher scores
  them all with the same divergence (default generalized JSD, beta 0.5).

Run folder (``output_dir``): ``config.yaml``, ``metrics.jsonl`` (+ ``tensorboard/``), ``checkpoints/``,
``model/`` (the final student, LoRA merged, with its tokenizer files) and ``summary.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import yaml
from flax import nnx

from jaxdistill import run_folder
from jaxdistill.config import Interrupted, TrainingConfig, option, stop_at_step_boundaries, stop_requested, to_dict
from jaxdistill.distill.data import OBJECTIVES, BatchMaker, BatchRecipe, Side, TeacherSampleCache, same_tokenizer
from jaxdistill.distill.learner import StudentLearner
from jaxdistill.distill.objectives import LossSettings
from jaxdistill.models import LoraConfig, Qwen, load_model, save_model
from jaxdistill.models.hf_io import read_config
from jaxdistill.models.config import QwenConfig
from jaxdistill.models.qwen import check_remat
from jaxdistill.tasks import get_task, list_tasks, parse_task_options
from jaxdistill.tasks.loading import check_split_sources
from jaxdistill.tokenizer import load_tokenizer
from jaxdistill.flops import mfu, peak_flops, sequence_forward_flops, train_flops
from jaxdistill.training import (Checkpointer, MetricsLogger, PhaseClock, StepTimer, TooManyBadSteps,
                                 bad_step_counts, cached_optimizer, holds_checkpoints)

log = logging.getLogger(__name__)

DIVERGENCES = ("auto", "forward_kl", "reverse_kl", "jsd")
TOKEN_ALIGNMENTS = ("auto", "token", "span")


@dataclasses.dataclass
class DistillConfig(TrainingConfig):
    """Every option of ``python -m jaxdistill.distill`` (YAML keys or ``key=value`` overrides). Names follow
    TRL's ``GKDConfig`` except where TRL's would be ambiguous here: the loss's temperature is
    ``kd_temperature`` and the JSD interpolation ``jsd_beta`` (``temperature`` is the sampling temperature
    and ``beta`` a KL weight everywhere else)."""

    # models and tokenizers
    student: str = option("", "HF folder of the student (its architecture and starting weights)")
    teacher: str = option("", "HF folder of the teacher (needed by seqkd, kd, gkd; unused by sft)")
    student_tokenizer: str = option("", "tokenizer folder of the student; empty = the student folder")
    teacher_tokenizer: str = option("", "tokenizer folder of the teacher; empty = the teacher folder")
    student_init: str = option("weights", "weights = start from the student's weights; random = a fresh seeded "
                                          "initialisation of its architecture (a student trained from scratch)",
                               choices=("weights", "random"))
    # data
    task: str = option("arith", "task name", choices=list_tasks())
    task_options: tuple[str, ...] = option((), "key=value options for the task constructor, e.g. [difficulty=1]")
    data_path: str = option("", "local data file or folder for the task; empty = generated (arith) or the HF hub")
    train_split: str = option("train", "split whose prompts (and gold solutions) are trained on")
    train_num_prompts: int = option(0, "use only the first N examples of the split (0 = all)", ge=0)
    chat_template: bool = option(False, "render prompts with the tokenizer's chat template (completions end with "
                               "<|im_end|>)")
    resample_solutions: bool = option(True, "sft: draw a fresh valid solution style each time an example is read "
                                            "(arith); false = the example's own solution")
    # objective
    objective: str = option("sft", "sft (gold solutions) | seqkd (teacher samples) | kd (token-level KD on "
                                   "teacher samples) | gkd (on-policy, TRL GKD)", choices=OBJECTIVES)
    divergence: str = option("auto", "kd/gkd divergence: forward_kl = KL(teacher||student) | reverse_kl = "
                                     "KL(student||teacher) | jsd (generalized JSD with jsd_beta) | auto = "
                                     "forward_kl for kd, jsd for gkd", choices=DIVERGENCES)
    jsd_beta: float = option(0.5, "generalized JSD interpolation (TRL GKD's beta): 0 = forward KL, 1 = reverse KL, "
                                  "0.5 = symmetric JSD", ge=0, le=1)
    kd_temperature: float = option(1.0, "KD temperature: both models' logits are divided by it in the loss", gt=0)
    top_k: int = option(0, "kd/gkd: keep only the teacher's top-k tokens, renormalised (0 = full vocabulary)", ge=0)
    token_alignment: str = option("auto", "auto = per-token KD when both tokenizers are identical, else "
                                          "span-aligned likelihood matching | token | span (forced)",
                                  choices=TOKEN_ALIGNMENTS)
    lmbda: float = option(0.5, "gkd: fraction of each step's sequences sampled by the student (on-policy)",
                          ge=0, le=1)
    off_policy_data: str = option("teacher", "gkd: the other sequences are teacher samples (teacher) or gold "
                                             "solutions (gold)", choices=("teacher", "gold"))
    seqkd_only_correct: bool = option(False, "seqkd: train only on teacher samples the task verifier accepts")
    temperature: float = option(1.0, "sampling temperature of teacher and student samples", ge=0)
    top_p: float = option(1.0, "nucleus mass of teacher and student sampling", gt=0, le=1)
    max_completion_length: int = option(128, "most tokens per sampled completion (gold and re-tokenized "
                                             "completions are never cut: longer rows get a wider bucket)", ge=1)
    # optimisation
    train_batch_size: int = option(16, "sequences per optimizer step (over all devices)", ge=1)
    max_steps: int = option(200, "optimizer steps (0 = export the starting student unchanged)", ge=0)
    lora_rank: int = option(0, "0 = full fine-tuning; r > 0 = train only LoRA adapters of rank r", ge=0)
    lora_alpha: float = option(16.0, "LoRA scale numerator (scale = alpha / rank)", gt=0)
    lora_targets: tuple[str, ...] = option(("q", "k", "v", "o", "gate", "up", "down"), "projections given LoRA")
    chunk_size: int = option(128, "completion positions per logits chunk (memory vs speed)", ge=1)
    max_bad_steps: int = option(10, "stop after this many consecutive non-finite steps", ge=1)
    # output
    output_dir: str = option("runs/distill", "run folder: checkpoints, metrics, final model")
    eval_num_prompts: int = option(0, "after training, greedy accuracy on this many held-out examples (0 = skip)",
                                   ge=0)
    eval_split: str = option("test", "split of the held-out evaluation")
    eval_data_path: str = option("", "local file or folder of the held-out split; empty = data_path")

    def validate(self) -> None:
        check_config(self)
        super().validate()


# ---- checks and resolution ----------------------------------------------------------------------

def check_config(config: DistillConfig) -> None:
    """Clear errors for settings that cannot work, before anything is loaded."""
    def choice(name, value, valid):
        if value not in valid:
            raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(valid)}")

    choice("objective", config.objective, OBJECTIVES)
    choice("divergence", config.divergence, DIVERGENCES)
    choice("token_alignment", config.token_alignment, TOKEN_ALIGNMENTS)
    choice("off_policy_data", config.off_policy_data, ("teacher", "gold"))
    choice("student_init", config.student_init, ("weights", "random"))
    choice("task", config.task, list_tasks())
    if not config.student:
        raise ValueError("student is empty: set student=<HF model folder>")
    if config.objective != "sft" and not config.teacher:
        raise ValueError(f"objective={config.objective} needs a teacher: set teacher=<HF model folder>")
    if not 0.0 <= config.lmbda <= 1.0:
        raise ValueError(f"lmbda must be in [0, 1], got {config.lmbda}")
    if not 0.0 <= config.jsd_beta <= 1.0:
        raise ValueError(f"jsd_beta must be in [0, 1], got {config.jsd_beta}")
    if config.train_batch_size < 1 or config.max_steps < 0 or config.max_completion_length < 1:
        raise ValueError("train_batch_size and max_completion_length must be >= 1 and max_steps >= 0")
    if config.eval_num_prompts:
        check_split_sources(config.data_path, config.eval_data_path, config.train_split, config.eval_split)


def resolved_divergence(config: DistillConfig) -> str:
    if config.divergence != "auto":
        return config.divergence
    return "jsd" if config.objective == "gkd" else "forward_kl"


def load_student(config: DistillConfig) -> Qwen:
    """The student with optional fresh LoRA adapters; ``student_init=random`` re-initialises its weights."""
    lora = (LoraConfig(rank=config.lora_rank, alpha=config.lora_alpha, targets=tuple(config.lora_targets))
            if config.lora_rank > 0 else None)
    if config.student_init == "random":
        _, hf = read_config(config.student)
        model_config = QwenConfig.from_hf(hf, param_dtype=config.dtype, compute_dtype=config.dtype)
        return Qwen(model_config, rngs=nnx.Rngs(config.seed), lora=lora)
    student, _ = load_model(config.student, config.dtype, lora=lora, seed=config.seed)
    return student


def check_vocab(model: Qwen, side: Side, role: str) -> None:
    if model.config.vocab_size < side.vocab_size:
        raise ValueError(f"the {role} model has {model.config.vocab_size} embedding rows but its tokenizer "
                         f"({side.tokenizer.path}) has {side.vocab_size} tokens: set {role}_tokenizer= to the "
                         f"tokenizer the {role} was trained with")


# ---- the run ------------------------------------------------------------------------------------

def update_utilisation(student: Qwen, teacher: Qwen | None, batch, seconds: float,
                       frozen_base: bool) -> dict[str, float]:
    """Achieved TFLOP/s of a student update (model FLOPs: the student's forward and backward, plus the
    teacher's forward when the loss reads its logits) and, on a known accelerator, its MFU."""
    rows, length = batch.student.tokens.shape[0], batch.student.prompt_ids.shape[1] + batch.student.tokens.shape[1]
    flops = train_flops(student.config, rows, length, frozen_base=frozen_base)
    if teacher is not None and batch.teacher is not None:
        t = batch.teacher
        flops += t.tokens.shape[0] * sequence_forward_flops(teacher.config, t.prompt_ids.shape[1] + t.tokens.shape[1])
    out = {"update/tflops_per_second": flops / max(seconds, 1e-9) / 1e12}
    utilisation = mfu(flops, seconds, peak_flops())
    if utilisation is not None:
        out["update/mfu"] = utilisation
    return out


#: The config fields that name what a distillation reads: compared by content, not by path (``run_folder``).
INPUT_FIELDS = ("student", "teacher", "student_tokenizer", "teacher_tokenizer", "data_path", "eval_data_path")


@stop_at_step_boundaries()
def distill(config: DistillConfig, *, teacher_samples: TeacherSampleCache | None = None) -> Path:
    """Train a student as ``config`` says; returns the run folder (the final model is in ``<it>/model``).
    A folder that already holds this run, finished, is returned as it is (``jaxdistill.run_folder``).

    ``teacher_samples``: a cache shared by several runs of one process (the scorecard's students), so
    teacher completions that are identical across them are sampled once.

    Raises ``TooManyBadSteps`` after ``max_bad_steps`` consecutive non-finite steps.
    """
    config.validate()
    safe = run_folder.SAFE_RESUME_FIELDS if config.lr_schedule == "constant" else \
        run_folder.SAFE_RESUME_FIELDS - {"max_steps"}
    with run_folder.open_run(config.output_dir, config, command="distill", resume=config.resume,
                             overwrite=getattr(config, "overwrite", False), safe_resume_fields=safe,
                             inputs=run_folder.inputs_of(config, INPUT_FIELDS), input_fields=INPUT_FIELDS,
                             can_continue=lambda: holds_checkpoints(Path(config.output_dir) / "checkpoints")) as run:
        if not run.finished:
            summary = _train(config, teacher_samples)
            run.finish(results=["model", "summary.json"] + (["metrics.jsonl"] if config.max_steps else []),
                       summary=summary)
    return Path(config.output_dir)


def _train(config: DistillConfig, teacher_samples: TeacherSampleCache | None) -> dict[str, Any]:
    out = Path(config.output_dir)
    checkpoints_dir = out / "checkpoints"
    (out / "config.yaml").write_text(yaml.safe_dump(to_dict(config), sort_keys=False))

    task = get_task(config.task, **parse_task_options(config.task_options))
    examples = task.load(config.train_split, config.data_path or None, limit=config.train_num_prompts or None)
    student = load_student(config)
    student_tok_dir = config.student_tokenizer or config.student
    sides = {"student": Side.of(load_tokenizer(student_tok_dir), config.chat_template)}
    check_vocab(student, sides["student"], "student")
    teacher = None
    if config.objective != "sft":
        teacher, _ = load_model(config.teacher, config.dtype)
        sides["teacher"] = Side.of(load_tokenizer(config.teacher_tokenizer or config.teacher), config.chat_template)
        check_vocab(teacher, sides["teacher"], "teacher")

    loss_kind = "nll"
    if config.objective in ("kd", "gkd"):
        one_tokenizer = same_tokenizer(sides["student"].tokenizer, sides["teacher"].tokenizer)
        if config.token_alignment == "token" and not one_tokenizer:
            raise ValueError("token_alignment=token needs one shared tokenizer, but the student's and the "
                             "teacher's differ; use token_alignment=auto (span-aligned KD)")
        loss_kind = "span_kd" if config.token_alignment == "span" or not one_tokenizer else "token_kd"
    settings = LossSettings(kind=loss_kind, divergence=resolved_divergence(config), beta=config.jsd_beta,
                            temperature=config.kd_temperature, top_k=config.top_k,
                            student_vocab_size=sides["student"].vocab_size,
                            teacher_vocab_size=sides["teacher"].vocab_size if teacher is not None else None,
                            chunk_size=config.chunk_size)
    recipe = BatchRecipe(objective=config.objective, loss_kind=loss_kind, batch_size=config.train_batch_size,
                         max_completion_length=config.max_completion_length, seed=config.seed,
                         sampling_temperature=config.temperature, top_p=config.top_p,
                         lmbda=config.lmbda, off_policy_data=config.off_policy_data,
                         seqkd_only_correct=config.seqkd_only_correct,
                         resample_solutions=config.resample_solutions)
    make_batch = BatchMaker(recipe, task, examples, sides, student=student, teacher=teacher,
                            teacher_samples=teacher_samples if teacher is not None else None,
                            teacher_id=str(Path(config.teacher).resolve()) if teacher is not None else "")
    optimizer = cached_optimizer(config.learning_rate, config.max_steps, config.warmup_steps, config.lr_schedule,
                                 config.weight_decay, config.max_grad_norm)
    student.remat = check_remat(config.remat)  # before the learner splits the model (the graph holds it)
    learner = StudentLearner(student, optimizer, settings, teacher=teacher, lora_only=config.lora_rank > 0)

    checkpointer = Checkpointer(checkpoints_dir)
    start, counts = 0, {"sequences": 0, "student_sequences": 0}
    if config.resume and checkpointer.latest_step() is not None:
        start = checkpointer.latest_step()
        trainable, opt_state, extra = checkpointer.restore(start, learner.trainable, learner.opt_state)
        learner.set_state(trainable, opt_state)
        counts = extra["counts"]
        log.info("resumed %s at step %d", out, start)

    logger = MetricsLogger(out, config.max_steps, description=f"distill {config.objective}",
                           tensorboard=config.tensorboard, start_step=start, show_progress=config.progress,
                           append=config.resume)
    started = time.perf_counter()
    try:
        timer = StepTimer()
        for step in range(start, config.max_steps):
            clock = PhaseClock()  # time/batch (data, sampling, alignment), time/update; see PhaseClock
            batch, host_metrics = make_batch(step)
            clock.mark("batch", batch)
            metrics = learner.step(batch)
            clock.mark("update", learner.trainable)
            consecutive, total, _ = bad_step_counts(learner.opt_state)
            if consecutive >= config.max_bad_steps:
                raise TooManyBadSteps(
                    f"{consecutive} consecutive steps had a non-finite loss or gradient (last at step {step + 1}); "
                    f"the run stopped. Lower learning_rate, use float32, or check the data; checkpoints up to "
                    f"the last good save are in {checkpoints_dir}")
            counts["sequences"] += config.train_batch_size
            counts["student_sequences"] += int(host_metrics.get("gkd/student_sequences", 0))
            seconds = timer.lap()
            record = {"loss": metrics["loss"], "grad_norm": metrics["grad_norm"], "step_time": seconds,
                      "tokens_per_second": float(metrics["tokens"]) / max(seconds, 1e-9),
                      "bad_steps": total, **host_metrics, **clock.metrics(),
                      **update_utilisation(student, teacher, batch, clock.seconds["update"], config.lora_rank > 0)}
            if config.objective == "gkd":
                record["gkd/student_fraction"] = counts["student_sequences"] / counts["sequences"]
            logger.log(step + 1, record, info_keys=("loss", "gkd/student_fraction", "step_time", "time/batch",
                                                    "time/update", "update/mfu"))
            # stop_requested: Ctrl-C under the CLI asks for a checkpoint of this step, then a stop
            save = (config.save_steps and (step + 1) % config.save_steps == 0 or stop_requested()) \
                and step + 1 < config.max_steps
            if save:
                checkpointer.save(step + 1, learner.trainable, learner.opt_state, {"counts": counts})
            if save and stop_requested():  # (Ctrl-C during the save: stop now too)
                raise Interrupted(f"checkpoint of step {step + 1} saved in {checkpoints_dir}; resume=true "
                                  "continues the run")
        if config.max_steps > start:
            checkpointer.save(config.max_steps, learner.trainable, learner.opt_state, {"counts": counts})
    finally:
        logger.close()
        checkpointer.close()

    save_model(student, out / "model", tokenizer_dir=student_tok_dir)
    summary: dict[str, Any] = {
        "objective": config.objective, "loss": loss_kind, "divergence": settings.divergence,
        "steps": config.max_steps, "bad_steps": bad_step_counts(learner.opt_state)[1],
        "seconds": time.perf_counter() - started, **counts,
        "student_fraction": counts["student_sequences"] / counts["sequences"] if counts["sequences"] else 0.0,
    }
    if config.eval_num_prompts:
        from jaxdistill.evaluate import score_model

        held_out = task.load(config.eval_split, config.eval_data_path or config.data_path or None,
                             limit=config.eval_num_prompts)
        summary["eval"] = score_model(student, sides["student"].tokenizer, task, held_out,
                                      max_new_tokens=config.max_completion_length, chat=config.chat_template)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
