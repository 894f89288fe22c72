"""The calibration loop: rollouts -> rewards -> advantages -> GRPO update, with eval, logging,
checkpoints, exact resume and a bad-step guard. Configured by ``jaxdistill.rl.config.CalibrateConfig``;
``calibrate(config)`` runs one.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdistill import run_folder
from jaxdistill.compilation import CompileCounter
from jaxdistill.config import Interrupted, stop_at_step_boundaries, stop_requested, to_dict
from jaxdistill.flops import mfu, peak_flops, train_flops
from jaxdistill.distributed import initialize_from_config, to_host
from jaxdistill.generation import SamplingParams, generate
from jaxdistill.generation.batched import sample_batched, verify
from jaxdistill.generation.sampler import bucket_length
from jaxdistill.generation.tokenized_model import TokenizedModel
from jaxdistill.models import LoraConfig, save_lora, save_model
from jaxdistill.models.qwen import check_remat
from jaxdistill.rl.advantages import zero_variance_group_fraction
from jaxdistill.rl.cluster import Cluster
from jaxdistill.rl.config import INPUT_FIELDS, CalibrateConfig
from jaxdistill.rl.influence import ProxyBatch, validation_batches
from jaxdistill.sharding import batch_shards, mesh_devices
from jaxdistill.rl.learner import GRPOLearner, GRPOSettings, Rollouts
from jaxdistill.rl.proxy import ProxyLearner
from jaxdistill.rl.registry import ADVANTAGE_FUNCTIONS
from jaxdistill.rl.rewards import CalibrationScorer, score_completions, describe_verdicts, plain_scoring, task_rewards
from jaxdistill.tasks import get_task, parse_task_options, restyled_solutions
from jaxdistill.tasks.pipeline import make_pipeline, prompt_text
from jaxdistill.token_maths import padding_id
from jaxdistill.tokenizer import Tokenizer
from jaxdistill.training import (Checkpointer, MetricsLogger, PhaseClock, StepTimer, TooManyBadSteps,
                                 bad_step_counts, cached_optimizer, holds_checkpoints)

log = logging.getLogger("jaxdistill.calibrate")

ROLLOUT_WARN_FRACTION = 0.9  # warn when this many groups carry no learning signal
STABILITY_WARN = 0.5  # influence mode: warn when the two halves' directions agree less than this


def greedy_accuracy(model, tokenizer, task, examples, *, max_new_tokens: int, chat: bool, mesh=None,
                    batch_size: int = 64, lora: bool = True) -> dict[str, float]:
    """Greedy held-out accuracy (and mean completion length) of ``model`` on ``examples``."""
    # stops where the rollouts stop (the tokenizer's eos, also in chat mode)
    lm = TokenizedModel(tokenizer, padding_id(tokenizer), tokenizer.eos_id, chat, model)
    samples = sample_batched(lm, [lm.prompt(task, ex) for ex in examples], batch_size=batch_size,
                             max_new_tokens=max_new_tokens, temperature=0.0, mesh=mesh, lora=lora)
    verdicts = verify(lm, task, examples, samples)
    return {"accuracy": float(np.mean([v.reward for v in verdicts])),
            "unparseable": float(np.mean([v.status == "unparseable" for v in verdicts])),
            "mean_length": float(np.mean(samples.lengths))}


def latest_step_kept(accuracies: dict[int, float], tolerance: float) -> int:
    """The early-stopping rule of ``keep_accuracy_within``: the latest validated step whose validation
    accuracy is at most ``tolerance`` below step 0's, ``max{s : a_s >= a_0 - tolerance}``. Step 0 always
    qualifies, so there is one (then the calibration kept nothing and the starting teacher is exported)."""
    if 0 not in accuracies:
        raise ValueError(f"latest_step_kept needs step 0's accuracy, the reference; got steps {sorted(accuracies)}")
    floor = accuracies[0] - tolerance - 1e-9  # accuracies are k/n: 0.48 - 0.53 is not quite -0.05
    return max(step for step, accuracy in accuracies.items() if accuracy >= floor)


def validation_after_eval(task, config) -> list:
    """``keep_accuracy_within``'s validation problems: the ``validation_num_prompts`` problems of the eval
    split that follow the eval set's first ``eval_num_prompts``, so that the teacher is never selected by
    the problems its accuracy is reported on."""
    c = config
    examples = task.load(c.eval_split, c.eval_data_path or c.data_path,
                         limit=c.eval_num_prompts + c.validation_num_prompts)
    validation = examples[c.eval_num_prompts:]
    if not validation:
        raise ValueError(f"keep_accuracy_within selects the teacher on validation problems that follow the eval set, "
                         f"but eval_split={c.eval_split!r} holds {len(examples)} problems, all of them in the eval set "
                         f"(eval_num_prompts={c.eval_num_prompts}): lower eval_num_prompts or give a larger eval split")
    if len(validation) < c.validation_num_prompts:
        log.warning("keep_accuracy_within: eval_split=%r holds only %d problems after the eval set's %d; selecting "
                    "on those (validation_num_prompts=%d)", c.eval_split, len(validation), c.eval_num_prompts,
                    c.validation_num_prompts)
    return validation


def compile_metrics(counter: CompileCounter) -> dict[str, float]:
    """Programs built since the last call (``compile/programs``), the seconds spent tracing, lowering and
    compiling them (``compile/seconds``) and the XLA part alone (``compile/xla_seconds``: compiling, or
    loading from the persistent cache)."""
    programs, seconds, xla_seconds = counter.take()
    return {"compile/programs": programs, "compile/seconds": seconds, "compile/xla_seconds": xla_seconds}


def hold_out_validation(examples: list, size: int, split: str) -> tuple[list, list]:
    """Influence mode: (training examples, gold validation examples). The validation examples are the last
    ``size`` of the train split; the training examples are the others, less any whose prompt is also a
    validation prompt (the same problem twice in the data), so the two never share a problem."""
    if len(examples) <= size:
        raise ValueError(f"the train split {split!r} holds {len(examples)} examples; calibration_mode=influence "
                         f"holds out influence_validation_size={size} of them as gold validation text and needs "
                         "some left to train on: lower influence_validation_size or give a larger train split")
    validation = examples[len(examples) - size:]
    missing = [i for i, e in enumerate(validation) if not e.solution]
    if missing:
        raise ValueError(f"{split} example {len(examples) - size + missing[0]} has no gold solution: "
                         "calibration_mode=influence needs a task with solutions (its validation text)")
    held = {e.prompt for e in validation}
    train = [e for e in examples[:len(examples) - size] if e.prompt not in held]
    if not train:
        raise ValueError(f"every training example of {split!r} repeats a validation prompt: nothing is left to "
                         "train on; lower influence_validation_size")
    if len(train) < len(examples) - size:
        log.info("%d training examples repeat a validation prompt: left out of training",
                 len(examples) - size - len(train))
    return train, validation


MAX_BOUND_EXPANSION = 4  # pad the proxy's completions to at most this many tokens per teacher token


def retokenized_width(teacher: Tokenizer, proxy: Tokenizer, length: int, text_ratio: float) -> int:
    """Proxy tokens to pad a ``length``-token teacher completion to, once its text is re-tokenized.

    The bound ``length * e``, e = the most proxy tokens any single teacher token becomes (1 for one
    tokenizer), when e <= MAX_BOUND_EXPANSION; otherwise (a few long teacher tokens split into many)
    ``length * text_ratio``, the proxy/teacher token ratio of typical text. Bucketed."""
    if teacher.vocab_size == proxy.vocab_size and teacher.hf.get_vocab() == proxy.hf.get_vocab():
        expansion = 1.0
    else:
        pieces = [b.decode("utf-8", errors="replace") for b in teacher.bytes_of(list(range(teacher.vocab_size)))]
        expansion = float(max(len(ids) for ids in proxy.hf(pieces, add_special_tokens=False)["input_ids"]))
    factor = expansion if expansion <= MAX_BOUND_EXPANSION else max(text_ratio, 1.0)
    return bucket_length(math.ceil(length * factor))


class CalibrationRun:
    def __init__(self, config):
        self.config = c = config
        self.out = Path(c.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        lora = LoraConfig(rank=c.lora_rank, alpha=c.lora_alpha, dropout=c.lora_dropout, targets=tuple(c.lora_targets))
        self.cluster = Cluster.load(c.teacher, c.proxy, lora=lora, mesh=c.mesh, dtype=c.dtype,
                                    teacher_tokenizer=c.teacher_tokenizer, proxy_tokenizer=c.proxy_tokenizer,
                                    seed=c.seed)
        tok = self.cluster.teacher_tokenizer
        self.task = get_task(c.task, **parse_task_options(c.task_options))
        self.train_examples = self.task.load(c.train_split, c.data_path)
        self.train_split_size = len(self.train_examples)
        self.validation_examples = []  # influence mode: gold text held out of training
        if c.calibration_mode == "influence":
            self.train_examples, self.validation_examples = hold_out_validation(
                self.train_examples, c.influence_validation_size, c.train_split)
        self.eval_examples = self.task.load(c.eval_split, c.eval_data_path or c.data_path, limit=c.eval_num_prompts)
        # keep_accuracy_within: the problems that select the exported step (never the eval set's)
        self.validation_problems = validation_after_eval(self.task, c) if c.keep_accuracy_within is not None else []
        self.pad_id = padding_id(tok)
        self.pipeline = make_pipeline(self.task, self.train_examples, tok.hf, mode="prompt",
                                      batch_size=c.prompts_per_step, seed=c.seed, chat=c.chat_template,
                                      pad_id=self.pad_id, eos_id=tok.eos_id,
                                      buckets=(32, 64, 128, 256, 512, 1024, 2048, 4096))
        self.sampling = SamplingParams(max_new_tokens=c.max_completion_length, temperature=c.temperature,
                                       top_p=c.top_p, top_k=c.top_k, eos_ids=(tok.eos_id,), pad_id=self.pad_id,
                                       vocab_limit=tok.vocab_size)
        self.sampling.validate()
        if c.top_p < 1.0 or c.top_k > 0:
            warnings.warn("top_p/top_k filtering during calibration: log-probs are scored under the filtered "
                          "distribution, so the policy gradient ignores tokens outside the filter", stacklevel=2)
        self.cluster.teacher.remat = check_remat(c.remat)  # before the learner splits the model
        if c.calibration_mode == "influence" or c.proxy_learning_rate > 0:  # the proxy has a backward pass too
            self.cluster.proxy.remat = c.remat  # before the scorer and the proxy learner split it
        settings = GRPOSettings(sampling=self.sampling, epsilon=c.epsilon, epsilon_high=c.epsilon_high,
                                beta=c.beta, kl_estimator=c.kl_estimator, loss_type=c.loss_type)
        optimizer = cached_optimizer(c.learning_rate, c.max_steps, c.warmup_steps, c.lr_schedule, c.weight_decay,
                                     c.max_grad_norm)
        self.learner = GRPOLearner(self.cluster.teacher, optimizer, settings, num_generations=c.num_generations,
                                   gradient_accumulation_steps=c.gradient_accumulation_steps,
                                   num_iterations=c.num_iterations)
        self.proxy_learner = None
        if c.proxy_learning_rate < 0:
            raise ValueError(f"proxy_learning_rate must be >= 0 (0: frozen proxy), got {c.proxy_learning_rate}")
        if c.proxy_learning_rate > 0:
            self.proxy_learner = ProxyLearner(
                self.cluster.proxy, cached_optimizer(c.proxy_learning_rate, c.max_steps),
                plain_scoring(self.cluster.proxy_tokenizer.vocab_size))
        self.prompt_width, proxy_prompt_width, proxy_completion_width = self.fixed_widths()
        self.scorer = CalibrationScorer(self.cluster.proxy, self.cluster.proxy_tokenizer, tok,
                                        mode=c.calibration_mode, tau=c.calibration_tau,
                                        subtract_reference=c.calibration_subtract_reference,
                                        prompt_width=proxy_prompt_width,
                                        completion_width=proxy_completion_width,
                                        validation=self.gold_validation(), mesh=self.cluster.mesh)
        self.stability_warned = False
        self.peak_flops = peak_flops(list(self.cluster.mesh.devices.flat))  # None on a CPU
        # keep_accuracy_within: every validated step's checkpoint is kept until the end, when one may be exported
        self.checkpointer = Checkpointer(self.out / "checkpoints",
                                         max_to_keep=None if c.keep_accuracy_within is not None else 2)
        self.proxy_checkpointer = Checkpointer(self.out / "proxy_checkpoints") if self.proxy_learner else None

    def fixed_widths(self) -> tuple[int, int, int]:
        """(teacher prompt, proxy prompt, proxy completion) widths every training batch is padded to.

        Prompts: the length bucket of the longest training prompt under each tokenizer. Completions
        re-tokenized by the proxy: ``retokenized_width`` (a longer one widens the width for the rest
        of the run, compiling the proxy's programs once more). Fixed widths give every program of a
        step (rollout, scoring, reference, proxy, update) one shape, so all of them compile at step 1
        and never again."""
        c, tok, proxy_tok = self.config, self.cluster.teacher_tokenizer, self.cluster.proxy_tokenizer
        texts = [prompt_text(self.task, ex, tok.hf, c.chat_template) for ex in self.train_examples]
        if not texts:
            raise ValueError(f"the {c.task} split {c.train_split!r} holds no examples")
        lengths = np.array([len(ids) for ids in tok.hf(texts, add_special_tokens=False)["input_ids"]])
        proxy_lengths = np.array([len(ids) for ids in proxy_tok.hf(texts, add_special_tokens=False)["input_ids"]])
        if lengths.max() > c.max_prompt_length:
            raise ValueError(f"the longest {c.task} training prompt takes {lengths.max()} teacher tokens, more "
                             f"than max_prompt_length={c.max_prompt_length}: raise max_prompt_length")
        text_ratio = float(np.max(proxy_lengths / np.maximum(lengths, 1)))
        return (bucket_length(int(lengths.max()), c.max_prompt_length), bucket_length(int(proxy_lengths.max())),
                retokenized_width(tok, proxy_tok, c.max_completion_length, text_ratio))

    def gold_validation(self) -> list[ProxyBatch]:
        """Influence mode: the held-out gold solutions as the proxy reads them, after their prompts rendered as
        for the rollouts (``jaxdistill.rl.influence.validation_batches``); [] in the other modes."""
        c, tok = self.config, self.cluster.teacher_tokenizer
        if not self.validation_examples:
            return []
        first = self.train_split_size - len(self.validation_examples)  # the index of the first held-out example
        return validation_batches(
            self.cluster.proxy_tokenizer,
            [prompt_text(self.task, e, tok.hf, c.chat_template) for e in self.validation_examples],
            self.validation_solutions(), c.influence_batch_size,
            labels=[f"the gold solution of {c.train_split} example {first + i}"
                    for i in range(len(self.validation_examples))],
            row_multiple=batch_shards(self.cluster.mesh))  # each batch splits over data x fsdp

    def validation_solutions(self) -> list[str]:
        """The held-out examples' gold solutions: the task's own, or as the task of
        ``influence_validation_task_options`` writes them (``jaxdistill.tasks.restyled_solutions``)."""
        c = self.config
        if not c.influence_validation_task_options:
            return [e.solution for e in self.validation_examples]
        task = get_task(c.task, **parse_task_options(c.influence_validation_task_options))
        try:
            return restyled_solutions(self.validation_examples, task, c.train_split, c.data_path,
                                      first=self.train_split_size - len(self.validation_examples))
        except ValueError as err:
            raise ValueError(f"influence_validation_task_options={list(c.influence_validation_task_options)}: "
                             f"{err}") from err

    def refresh_direction(self, step: int) -> None:
        """Influence mode: the harm direction under the proxy as it is now (the proxy before this step's
        update), and a warning, once, when its stability is low."""
        c = self.config
        estimate = self.scorer.refresh_direction()
        if estimate.stability < STABILITY_WARN and not self.stability_warned:
            self.stability_warned = True
            log.warning("step %d: the harm direction is unstable: the directions of the two halves of the %d "
                        "validation texts have cosine %.2f (< %.1f), so much of r_cal is noise. Raise "
                        "influence_validation_size", step, c.influence_validation_size, estimate.stability,
                        STABILITY_WARN)

    # ---- one step -------------------------------------------------------------------------------
    def rollout_seed(self, step: int) -> int:
        return self.config.seed * 1_000_003 + step

    def train_step(self, batch: dict[str, np.ndarray], step: int) -> dict[str, Any]:
        c, cl = self.config, self.cluster
        tok = cl.teacher_tokenizer
        g = c.num_generations
        clock = PhaseClock()  # time/<phase> metrics; see PhaseClock for where it waits on the device
        prompts = [row[mask == 1].tolist() for row, mask in zip(batch["input_ids"], batch["attention_mask"])]
        examples = [self.train_examples[i] for i in batch["index"] for _ in range(g)]
        texts_in = [prompt_text(self.task, ex, tok.hf, c.chat_template) for ex in examples]
        out = generate(cl.teacher, prompts, max_new_tokens=c.max_completion_length, temperature=c.temperature,
                       top_p=c.top_p, top_k=c.top_k, seed=self.rollout_seed(step), eos_ids=[tok.eos_id],
                       num_generations=g, pad_id=self.pad_id, vocab_limit=tok.vocab_size, return_entropy=True,
                       mesh=cl.mesh, prompt_length=self.prompt_width)
        completions = out.completions()  # copied to the host: the rollout has finished
        clock.mark("rollout")
        texts = [tok.decode(ids, skip_special_tokens=True) for ids in completions]
        verdicts = task_rewards(self.task, texts, examples)
        r_task = np.array([v.reward for v in verdicts], np.float32)

        rollouts = Rollouts(prompt_ids=out.prompt_ids, prompt_mask=out.prompt_mask, tokens=out.tokens, mask=out.mask,
                            old_logp=out.logprobs, advantages=jnp.zeros(len(completions), jnp.float32))
        ref_logp = self.learner.reference_logprobs(rollouts)
        clock.mark("reference", ref_logp)
        plain = plain_scoring(tok.vocab_size)
        teacher_lp = score_completions(cl.teacher, out.prompt_ids, out.prompt_mask, out.tokens, out.mask, plain,
                                 lora=True, chunk_size=128)
        ref_plain = (score_completions(cl.teacher, out.prompt_ids, out.prompt_mask, out.tokens, out.mask, plain,
                                 lora=False, chunk_size=128) if self.scorer.subtract_reference else None)
        if c.calibration_mode == "influence" and (self.scorer.direction is None or (
                self.proxy_learner is not None and (step - 1) % c.influence_direction_steps == 0)):
            self.refresh_direction(step)  # frozen proxy: once; learning proxy: every influence_direction_steps
        r_cal, cal_metrics, proxy_batch = self.scorer(texts_in, completions, teacher_lp, ref_plain)
        clock.mark("rewards")  # task verdicts, teacher scoring, alignment, proxy scoring (r_cal on the host)
        if self.proxy_learner is not None:  # after scoring: the reward measured the proxy before this batch
            cal_metrics["proxy/loss"] = self.proxy_learner.step(*proxy_batch)
            clock.mark("proxy_update")
        advantages = ADVANTAGE_FUNCTIONS.get(c.advantage)(
            jnp.asarray(r_task), jnp.asarray(r_cal), g, eta=c.eta, scale_rewards=c.scale_rewards,
            calibration_scope=c.calibration_scope, seed=self.rollout_seed(step))
        rollouts = rollouts.replace(advantages=advantages, ref_logp=ref_logp)
        update = self.learner.update(rollouts)
        clock.mark("update", self.learner.lora_state)

        mask = to_host(out.mask)  # to_host: gathered from every process in multi-process runs
        lengths = to_host(out.lengths)
        n_tokens = int(mask.sum())
        entropy = float((to_host(out.entropy) * mask).sum() / max(n_tokens, 1))
        metrics = {
            "reward": float(np.mean(r_task + c.eta * r_cal)),
            **describe_verdicts(verdicts),
            "rewards/calibration/mean": float(np.mean(r_cal)),
            "rewards/calibration/std": float(np.std(r_cal)),
            "rewards/calibration/correct_mean": float(np.mean(r_cal[r_task >= 1])) if (r_task >= 1).any() else 0.0,
            "advantages/abs_mean": float(jnp.mean(jnp.abs(advantages))),
            "entropy": entropy,
            "completions/mean_length": float(lengths.mean()),
            "completions/clipped_ratio": float(1.0 - to_host(out.finished_eos).mean()),
            "groups/zero_task_variance": float(zero_variance_group_fraction(jnp.asarray(r_task), g)),
            **cal_metrics,
            **{k: float(v) for k, v in update.items()},
            "tokens": n_tokens,
            **clock.metrics(),
            "rollout/tokens_per_second": n_tokens / max(clock.seconds["rollout"], 1e-9),
            **self.update_utilisation(out.tokens.shape[0], out.prompt_ids.shape[1] + out.tokens.shape[1],
                                      clock.seconds["update"]),
        }
        if "kl" not in metrics:
            metrics["kl"] = 0.0
        return metrics

    def update_utilisation(self, rows: int, length: int, seconds: float) -> dict[str, float]:
        """Achieved TFLOP/s of the GRPO update (model FLOPs: forward + activation gradients of the frozen
        teacher over every row, per optimizer pass) and, on a known accelerator, its MFU."""
        flops = self.config.num_iterations * train_flops(self.cluster.teacher_config, rows, length, frozen_base=True)
        out = {"update/tflops_per_second": flops / max(seconds, 1e-9) / 1e12}
        utilisation = mfu(flops, seconds, self.peak_flops)
        if utilisation is not None:
            out["update/mfu"] = utilisation
        return out

    def evaluate(self) -> dict[str, float]:
        c, cl = self.config, self.cluster
        scores = greedy_accuracy(cl.teacher, cl.teacher_tokenizer, self.task, self.eval_examples,
                                 max_new_tokens=c.max_completion_length, chat=c.chat_template, mesh=cl.mesh)
        return {f"eval/{k}": v for k, v in scores.items()}

    def validation_accuracy(self) -> float:
        """keep_accuracy_within: greedy accuracy on the validation problems."""
        c, cl = self.config, self.cluster
        return greedy_accuracy(cl.teacher, cl.teacher_tokenizer, self.task, self.validation_problems,
                               max_new_tokens=c.max_completion_length, chat=c.chat_template,
                               mesh=cl.mesh)["accuracy"]

    def keep_accuracy(self, step: int, accuracies: dict[int, float], initial) -> dict[str, Any]:
        """Set the teacher to the step that ``latest_step_kept`` selects (``initial``: step 0's LoRA and
        optimizer state), drop the other steps' checkpoints but the last, and say which step it is."""
        c = self.config
        if step not in accuracies:  # resumed with max_steps lowered to a step that was never validated
            accuracies[step] = self.validation_accuracy()
        selected = latest_step_kept({s: a for s, a in accuracies.items() if s <= step}, c.keep_accuracy_within)
        if selected == 0:
            self.learner.set_state(*initial)
            log.warning("keep_accuracy_within=%g: no calibrated step kept the validation accuracy of step 0 (%.3f); "
                        "the exported teacher is the starting one", c.keep_accuracy_within, accuracies[0])
        elif selected != step:
            lora, opt_state, _ = self.checkpointer.restore(selected, self.learner.lora_state, self.learner.opt_state)
            self.learner.set_state(lora, opt_state)
        if selected != step:
            log.info("keep_accuracy_within=%g: exporting step %d (validation accuracy %.3f; step 0: %.3f, step %d: "
                     "%.3f)", c.keep_accuracy_within, selected, accuracies[selected], accuracies[0], step,
                     accuracies[step])
        for old in self.checkpointer.manager.all_steps():
            if old not in (selected, step):
                self.checkpointer.manager.delete(old)
        return {"selected_step": selected, "selected_validation_accuracy": accuracies[selected],
                "validation_accuracy": {str(k): v for k, v in sorted(accuracies.items())}}

    # ---- the loop -------------------------------------------------------------------------------
    @stop_at_step_boundaries()
    def run(self) -> dict[str, Any]:
        c = self.config
        iterator = iter(self.pipeline)
        start = 0
        guard = c.keep_accuracy_within is not None
        # step 0's LoRA and optimizer state (a copy: updates may reuse the buffers), for keep_accuracy_within
        initial = jax.tree.map(jnp.copy, (self.learner.lora_state, self.learner.opt_state)) if guard else None
        accuracies: dict[int, float] = {}  # keep_accuracy_within: validation accuracy of every validated step
        latest = self.checkpointer.latest_step() if c.resume else None
        if c.resume and latest is None:
            log.info("resume=true but %s holds no checkpoint: starting from step 0", self.out / "checkpoints")
        if latest is not None:
            lora, opt_state, extra = self.checkpointer.restore(latest, self.learner.lora_state, self.learner.opt_state)
            self.learner.set_state(lora, opt_state)
            if self.proxy_learner is not None:
                if latest not in self.proxy_checkpointer.manager.all_steps():
                    raise ValueError(
                        f"{self.out} holds a teacher checkpoint of step {latest} but no learning-proxy checkpoint "
                        f"of that step in {self.out / 'proxy_checkpoints'}: was it calibrated with "
                        "proxy_learning_rate=0? Resume with the settings it was started with")
                params, proxy_opt, _ = self.proxy_checkpointer.restore(latest, self.proxy_learner.params,
                                                                       self.proxy_learner.opt_state)
                self.proxy_learner.set_state(params, proxy_opt)
            iterator.set_state(extra["data_state"])
            start = int(extra["step"])
            accuracies = {int(k): v for k, v in extra.get("validation_accuracy", {}).items()}
            log.info("resumed from step %d", start)
        elif jax.process_index() == 0:
            (self.out / "config.json").write_text(json.dumps(to_dict(c), indent=2))
        logger = MetricsLogger(self.out, c.max_steps, description=f"calibrate eta={c.eta:+g}",
                               tensorboard=c.tensorboard, start_step=start, show_progress=c.progress,
                               append=latest is not None)
        history = []
        with CompileCounter() as compiles:  # programs built per step: 0 after step 1 (fixed shapes)
            try:
                if start == 0:
                    first = self.evaluate()
                    if guard:
                        accuracies[0] = first["validation/accuracy"] = self.validation_accuracy()
                    history.append(logger.log(0, {**first, **compile_metrics(compiles)}))
                timer = StepTimer()
                warned_at = -100
                for step in range(start + 1, c.max_steps + 1):
                    batch = next(iterator)
                    metrics = self.train_step(batch, step)
                    consecutive, total_bad, finite = bad_step_counts(self.learner.opt_state)
                    metrics["bad_steps"] = total_bad
                    if not finite:
                        log.warning("step %d: non-finite loss or gradients; update skipped (%d in a row)", step,
                                    consecutive)
                    if consecutive >= c.max_bad_steps:
                        logger.log(step, metrics)
                        raise TooManyBadSteps(
                            f"{consecutive} consecutive steps had NaN/Inf loss or gradients (last at step {step}); "
                            f"stopping. The last good checkpoint in {self.out / 'checkpoints'} is intact: lower "
                            "learning_rate or beta, or check the data, then resume=true")
                    if (metrics["groups/zero_task_variance"] >= ROLLOUT_WARN_FRACTION
                            or metrics["completions/clipped_ratio"] >= ROLLOUT_WARN_FRACTION) and step - warned_at >= 20:
                        warned_at = step
                        log.warning("step %d: %.0f%% of groups have zero reward variance and %.0f%% of rollouts hit "
                                    "max_completion_length: little learning signal (raise num_generations, "
                                    "max_completion_length or temperature)", step,
                                    100 * metrics["groups/zero_task_variance"], 100 * metrics["completions/clipped_ratio"])
                    if (c.eval_steps and step % c.eval_steps == 0) or step == c.max_steps:
                        eval_start = time.perf_counter()
                        metrics.update(self.evaluate())  # scores are on the host: nothing left to wait for
                        metrics["time/eval"] = time.perf_counter() - eval_start
                    validated = guard and (step % c.validation_steps == 0 or step == c.max_steps)
                    if validated:
                        accuracies[step] = metrics["validation/accuracy"] = self.validation_accuracy()
                    metrics["step_time"] = timer.lap()
                    metrics["tokens_per_second"] = metrics["tokens"] / max(metrics["step_time"], 1e-9)
                    metrics.update(compile_metrics(compiles))
                    history.append(logger.log(step, metrics, info_keys=(
                        "rewards/task/mean", "rewards/calibration/mean", "kl", "eval/accuracy", "step_time",
                        "time/rollout", "time/rewards", "time/reference", "time/update", "update/mfu")))
                    save = ((c.save_steps and step % c.save_steps == 0) or step == c.max_steps or stop_requested()
                            or validated)  # keep_accuracy_within may export any validated step
                    if save:  # stop_requested: Ctrl-C under the CLI asks for a checkpoint of this step, then a stop
                        if self.proxy_learner is not None:  # first: a teacher checkpoint always has its proxy's
                            self.proxy_checkpointer.save(step, self.proxy_learner.params, self.proxy_learner.opt_state,
                                                         {"step": step})
                        self.checkpointer.save(step, self.learner.lora_state, self.learner.opt_state,
                                               {"step": step, "data_state": iterator.get_state(),
                                                **({"validation_accuracy": {str(k): v for k, v in accuracies.items()}}
                                                   if guard else {})})
                    if save and stop_requested() and step < c.max_steps:  # (Ctrl-C during the save: stop now too)
                        raise Interrupted(f"checkpoint of step {step} saved in {self.out / 'checkpoints'}; "
                                          "resume=true continues the run")
                # the teacher is at max_steps, or at the checkpoint resumed from when max_steps was lowered
                kept = self.keep_accuracy(max(start, c.max_steps), accuracies, initial) if guard else {}
            finally:
                logger.close()
                self.checkpointer.close()
                if self.proxy_checkpointer is not None:
                    self.proxy_checkpointer.close()
        result: dict[str, Any] = {"output_dir": str(self.out), "history": history,
                                  "final": history[-1] if history else {}, **kept}
        if c.export:  # every process joins the gathers; process 0 writes the folders
            tok_dir = c.teacher_tokenizer or c.teacher
            result["teacher"] = str(save_model(self.cluster.teacher, self.out / "teacher", tokenizer_dir=tok_dir))
            result["adapter"] = str(save_lora(self.cluster.teacher, self.out / "adapter"))
            if self.proxy_learner is not None:
                result["proxy"] = str(save_model(self.cluster.proxy, self.out / "proxy",
                                                 tokenizer_dir=c.proxy_tokenizer or c.proxy))
        return result


def calibrate(config: CalibrateConfig) -> dict[str, Any]:
    """Run one calibration; returns the final metrics and the exported paths. A folder that already
    holds this calibration, finished, is reported (``reused``), not recomputed (``jaxdistill.run_folder``)."""
    config.validate()
    initialize_from_config(config.distributed)  # before any JAX computation; a no-op on one process
    mesh_devices(config.mesh)  # asks for more devices than present: refused before anything is written
    safe = run_folder.SAFE_RESUME_FIELDS  # more steps change a decaying schedule, not a constant one
    safe = safe if config.lr_schedule == "constant" else safe - {"max_steps"}
    with run_folder.open_run(config.output_dir, config, command="calibrate", resume=config.resume,
                             overwrite=getattr(config, "overwrite", False), safe_resume_fields=safe,
                             inputs=run_folder.inputs_of(config, INPUT_FIELDS), input_fields=INPUT_FIELDS,
                             can_continue=lambda: holds_checkpoints(Path(config.output_dir) / "checkpoints"),
                             primary=jax.process_index() == 0) as run:
        if run.finished:
            return {**run.manifest["summary"], "reused": True}
        result = CalibrationRun(config).run()
        exported = [name for name in ("teacher", "adapter", "proxy") if name in result]
        run.finish(results=["metrics.jsonl", *exported],
                   summary={k: v for k, v in result.items() if k != "history"})
    return result
