"""The calibration loop: rollouts -> rewards -> advantages -> GRPO update, with eval, logging,
checkpoints, exact resume and a bad-step guard. Configured by ``jaxdistill.rl.config.CalibrateConfig``;
``calibrate(config)`` runs one.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxdistill.config import to_dict
from jaxdistill.distributed import initialize_from_config, to_host
from jaxdistill.generation import SamplingParams, generate
from jaxdistill.models import LoraConfig, save_lora, save_model
from jaxdistill.rl.advantages import combined_advantages, zero_variance_group_fraction
from jaxdistill.rl.cluster import Cluster
from jaxdistill.rl.config import CalibrateConfig, check_config
from jaxdistill.rl.learner import GRPOLearner, GRPOSettings, Rollouts
from jaxdistill.rl.proxy import ProxyLearner
from jaxdistill.rl.rewards import CalibrationScorer, score_completions, describe_verdicts, plain_scoring, task_rewards
from jaxdistill.tasks import get_task, parse_task_options
from jaxdistill.tasks.pipeline import make_pipeline, prompt_text
from jaxdistill.training import (Checkpointer, MetricsLogger, StepTimer, TooManyBadSteps, bad_step_counts,
                                 cached_optimizer)

log = logging.getLogger("jaxdistill.calibrate")

ROLLOUT_WARN_FRACTION = 0.9  # warn when this many groups carry no learning signal


def greedy_accuracy(model, tokenizer, task, examples, *, max_new_tokens: int, chat: bool, mesh=None,
                    batch_size: int = 64, lora: bool = True) -> dict[str, float]:
    """Greedy held-out accuracy (and mean completion length) of ``model`` on ``examples``."""
    rewards, lengths, unparseable = [], [], []
    for start in range(0, len(examples), batch_size):
        chunk = examples[start:start + batch_size]
        prompts = [tokenizer.encode(prompt_text(task, ex, tokenizer.hf, chat)) for ex in chunk]
        out = generate(model, prompts, max_new_tokens=max_new_tokens, temperature=0.0, eos_ids=[tokenizer.eos_id],
                       pad_id=tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id,
                       vocab_limit=tokenizer.vocab_size, mesh=mesh, lora=lora)
        texts = [tokenizer.decode(c, skip_special_tokens=True) for c in out.completions()]
        verdicts = task_rewards(task, texts, chunk)
        rewards += [v.reward for v in verdicts]
        unparseable += [v.status == "unparseable" for v in verdicts]
        lengths += to_host(out.lengths).tolist()
    return {"accuracy": float(np.mean(rewards)), "unparseable": float(np.mean(unparseable)),
            "mean_length": float(np.mean(lengths))}


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
        self.eval_examples = self.task.load(c.eval_split, c.data_path, limit=c.eval_prompts)
        self.pad_id = tok.pad_id if tok.pad_id is not None else tok.eos_id
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
        self.scorer = CalibrationScorer(self.cluster.proxy, self.cluster.proxy_tokenizer, tok,
                                        mode=c.calibration_mode, tau=c.calibration_tau,
                                        subtract_reference=c.calibration_subtract_reference)
        self.checkpointer = Checkpointer(self.out / "checkpoints")
        self.proxy_checkpointer = Checkpointer(self.out / "proxy_checkpoints") if self.proxy_learner else None

    # ---- one step -------------------------------------------------------------------------------
    def rollout_seed(self, step: int) -> int:
        return self.config.seed * 1_000_003 + step

    def train_step(self, batch: dict[str, np.ndarray], step: int) -> dict[str, Any]:
        c, cl = self.config, self.cluster
        tok = cl.teacher_tokenizer
        g = c.num_generations
        prompts = [row[mask == 1].tolist() for row, mask in zip(batch["input_ids"], batch["attention_mask"])]
        examples = [self.train_examples[i] for i in batch["index"] for _ in range(g)]
        texts_in = [prompt_text(self.task, ex, tok.hf, c.chat_template) for ex in examples]
        out = generate(cl.teacher, prompts, max_new_tokens=c.max_completion_length, temperature=c.temperature,
                       top_p=c.top_p, top_k=c.top_k, seed=self.rollout_seed(step), eos_ids=[tok.eos_id],
                       num_generations=g, pad_id=self.pad_id, vocab_limit=tok.vocab_size, return_entropy=True,
                       mesh=cl.mesh, max_prompt_length=c.max_prompt_length)
        completions = out.completions()
        texts = [tok.decode(ids, skip_special_tokens=True) for ids in completions]
        verdicts = task_rewards(self.task, texts, examples)
        r_task = np.array([v.reward for v in verdicts], np.float32)

        rollouts = Rollouts(prompt_ids=out.prompt_ids, prompt_mask=out.prompt_mask, tokens=out.tokens, mask=out.mask,
                            old_logp=out.logprobs, advantages=jnp.zeros(len(completions), jnp.float32))
        ref_logp = self.learner.reference_logprobs(rollouts)
        plain = plain_scoring(tok.vocab_size)
        teacher_lp = score_completions(cl.teacher, out.prompt_ids, out.prompt_mask, out.tokens, out.mask, plain,
                                 lora=True, chunk_size=128)
        ref_plain = (score_completions(cl.teacher, out.prompt_ids, out.prompt_mask, out.tokens, out.mask, plain,
                                 lora=False, chunk_size=128) if self.scorer.subtract_reference else None)
        r_cal, cal_metrics, proxy_batch = self.scorer(texts_in, completions, teacher_lp, ref_plain)
        if self.proxy_learner is not None:  # after scoring: the reward measured the proxy before this batch
            cal_metrics["proxy/loss"] = self.proxy_learner.step(*proxy_batch)
        advantages = combined_advantages(jnp.asarray(r_task), jnp.asarray(r_cal), g, eta=c.eta,
                                         scale_rewards=c.scale_rewards, calibration_scope=c.calibration_scope)
        rollouts = rollouts.replace(advantages=advantages, ref_logp=ref_logp)
        update = self.learner.update(rollouts)

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
        }
        if "kl" not in metrics:
            metrics["kl"] = 0.0
        return metrics

    def evaluate(self) -> dict[str, float]:
        c, cl = self.config, self.cluster
        scores = greedy_accuracy(cl.teacher, cl.teacher_tokenizer, self.task, self.eval_examples,
                                 max_new_tokens=c.max_completion_length, chat=c.chat_template, mesh=cl.mesh)
        return {f"eval/{k}": v for k, v in scores.items()}

    # ---- the loop -------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        c = self.config
        iterator = iter(self.pipeline)
        start = 0
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
            log.info("resumed from step %d", start)
        elif jax.process_index() == 0:
            (self.out / "config.json").write_text(json.dumps(to_dict(c), indent=2))
        logger = MetricsLogger(self.out, c.max_steps, description=f"calibrate eta={c.eta:+g}",
                               tensorboard=c.tensorboard, start_step=start, show_progress=c.progress,
                               append=latest is not None)
        history = []
        try:
            if start == 0:
                history.append(logger.log(0, self.evaluate()))
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
                if (c.eval_every and step % c.eval_every == 0) or step == c.max_steps:
                    metrics.update(self.evaluate())
                metrics["step_time"] = timer.lap()
                metrics["tokens_per_second"] = metrics["tokens"] / max(metrics["step_time"], 1e-9)
                history.append(logger.log(step, metrics, info_keys=("rewards/task/mean", "rewards/calibration/mean",
                                                                    "kl", "eval/accuracy")))
                if (c.save_every and step % c.save_every == 0) or step == c.max_steps:
                    if self.proxy_learner is not None:  # first: a teacher checkpoint always has its proxy's
                        self.proxy_checkpointer.save(step, self.proxy_learner.params, self.proxy_learner.opt_state,
                                                     {"step": step})
                    self.checkpointer.save(step, self.learner.lora_state, self.learner.opt_state,
                                           {"step": step, "data_state": iterator.get_state()})
        finally:
            logger.close()
            self.checkpointer.close()
            if self.proxy_checkpointer is not None:
                self.proxy_checkpointer.close()
        result: dict[str, Any] = {"output_dir": str(self.out), "history": history,
                                  "final": history[-1] if history else {}}
        if c.export:  # every process joins the gathers; process 0 writes the folders
            tok_dir = c.teacher_tokenizer or c.teacher
            result["teacher"] = str(save_model(self.cluster.teacher, self.out / "teacher", tokenizer_dir=tok_dir))
            result["adapter"] = str(save_lora(self.cluster.teacher, self.out / "adapter"))
            if self.proxy_learner is not None:
                result["proxy"] = str(save_model(self.cluster.proxy, self.out / "proxy",
                                                 tokenizer_dir=c.proxy_tokenizer or c.proxy))
        return result


def calibrate(config: CalibrateConfig) -> dict[str, Any]:
    """Run one calibration; returns the final metrics and the exported paths."""
    check_config(config)
    initialize_from_config(config.distributed)  # before any JAX computation; a no-op on one process
    return CalibrationRun(config).run()
