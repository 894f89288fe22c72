"""``python -m jaxdistill.calibrate``: calibrate a teacher's distillability with GRPO on LoRA adapters.

    python -m jaxdistill.calibrate                                   # the default run on the tiny world
    python -m jaxdistill.calibrate --config configs/tiny.yaml eta=-1 # one calibration from a config
    python -m jaxdistill.calibrate --help                            # every field, documented

One step (DESIGN.md §2):

    prompts (grain) -> G rollouts per prompt from pi_theta (teacher + LoRA)
      -> r_task: the task verifier;  r_cal: calibration reward against the proxy
         (frozen; or, with proxy_learning_rate > 0, taking an SFT step on the rollouts afterwards)
      -> A = groupnorm(r_task) + eta * groupnorm(r_cal)
      -> GRPO clipped surrogate + beta * KL(pi_theta || pi_ref)  (pi_ref = adapters off)
      -> optax update of the LoRA parameters only

Teacher, reference (the same weights) and proxy share one device mesh. Metrics go to
``<output_dir>/metrics.jsonl``; orbax checkpoints to ``<output_dir>/checkpoints``; at the end the
teacher is exported with LoRA merged to ``<output_dir>/teacher`` and the adapter to ``<output_dir>/adapter``
(a learning proxy: its checkpoints to ``<output_dir>/proxy_checkpoints``, its final weights to ``<output_dir>/proxy``).
"""

from __future__ import annotations

import json
import sys

import jax

from jaxdistill.config import configure_logging, parse_args
from jaxdistill.rl.config import CalibrateConfig


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    argv = sys.argv[1:] if argv is None else argv
    config, flags = parse_args(
        CalibrateConfig, argv, prog="python -m jaxdistill.calibrate",
        description="Calibrate a teacher's distillability with GRPO (eta > 0 distillable, eta < 0 "
                    "undistillable). With no --config and no teacher: the tiny-world default run "
                    "(builds teacher, proxy and students, calibrates eta = +1, -1, 0, distills, evaluates).",
        extra_flags=[("--quick", "tiny-world default run with few steps (for tests)")])
    if not config.teacher and not config.proxy:
        from jaxdistill.experiments.world import default_run

        default_run(quick=flags["quick"], output_dir=None if config.output_dir == "runs/calibrate"
                    else config.output_dir, seed=config.seed)
        return 0
    from jaxdistill.rl.loop import calibrate  # the training stack, loaded only when it runs

    try:
        result = calibrate(config)
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as err:  # bad input: the reason, no traceback
        sys.exit(f"error: {err}")
    if jax.process_index() == 0:
        print(json.dumps({k: v for k, v in result.items() if k != "history"}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
