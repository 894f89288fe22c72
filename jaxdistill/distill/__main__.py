"""``python -m jaxdistill.distill [--config FILE] key=value ...``: train a student (see ``--help``)."""

from __future__ import annotations

import sys

from jaxdistill.config import run_cli
from jaxdistill.distill.trainer import DistillConfig, distill

DESCRIPTION = """Distill a student from a teacher (or train it on gold solutions).

objectives:
  sft    the student learns the task's gold solutions (the SFT baseline; no teacher needed)
  seqkd  the student learns teacher samples (seqkd_only_correct=true keeps verified ones)
  kd     token-level KD on teacher-forced teacher samples: divergence, beta, temperature, top_k;
         one tokenizer: per token on the shared real vocabulary; two: span-aligned likelihoods
  gkd    on-policy distillation (TRL GKD): a fraction lmbda of sequences sampled by the student,
         all scored by the teacher (default divergence: generalized JSD, beta 0.5)

example:
  python -m jaxdistill.distill student=runs/tiny/proxy teacher=runs/tiny/teacher objective=gkd \\
      lmbda=0.5 max_steps=200 output_dir=runs/students/gkd
The run folder gets metrics.jsonl, checkpoints/ (resume=true continues exactly), model/ (the final
student as an HF folder with its tokenizer) and summary.json."""


def run(config: DistillConfig) -> None:
    out = distill(config)
    print(f"student written to {out / 'model'}")


def main(argv: list[str] | None = None) -> int:
    return run_cli(DistillConfig, run, argv, prog="python -m jaxdistill.distill", description=DESCRIPTION)


if __name__ == "__main__":
    sys.exit(main())
