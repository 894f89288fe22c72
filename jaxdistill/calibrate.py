"""``python -m jaxdistill.calibrate``: calibrate a teacher's distillability with GRPO on LoRA adapters.

    python -m jaxdistill.calibrate                                   # the default run on the tiny world
    python -m jaxdistill.calibrate --config configs/tiny.yaml eta=-1 # one calibration from a config
    python -m jaxdistill.calibrate --help                            # every field, documented

One step (docs/design.md §2):

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

import dataclasses
import json
import sys

from jaxdistill.config import ConfigError, option, run_cli, to_dict
from jaxdistill.rl.config import CalibrateConfig

QUICK = "calibrate_quick.yaml"  # --quick: the default run's quick profile
DEFAULT_RUN_FIELDS = ("output_dir", "seed", "world_profile", "world_version",  # what the default run takes
                      "student_world_version")


@dataclasses.dataclass
class CalibrateCommand(CalibrateConfig):
    """The command's fields: one calibration's (``CalibrateConfig``), and the default run's profile."""

    world_profile: str = option("full", "with no teacher and no proxy, the tiny-world default run: full, or quick "
                                        "(a few steps per stage; --quick)", choices=("full", "quick"))
    world_version: int = option(1, "with no teacher and no proxy, the arith world of the default run: 1 (plain gold "
                                   "solutions), 2 (gold solutions with detours) or 3 (results before their "
                                   "derivation in 30% of the lines: docs/tasks.md); a folder holding a world "
                                   "of another version is refused. One calibration: task_options=[version=2]",
                                choices=(1, 2, 3))
    student_world_version: int = option(0, "with no teacher and no proxy, the gold the proxy and students are "
                                           "pretrained on: 0 (the teacher's, world_version), or 1 with "
                                           "world_version=2 or 3: a mixed world (a teacher that learnt the "
                                           "detours, students that never saw one; this project's extension)",
                                        choices=(0, 1, 2, 3))

    def validate(self) -> None:
        if self.is_default_run():
            super(CalibrateConfig, self).validate()  # ranges and output_dir; there is no teacher to check
        else:
            super().validate()
            if self.world_version != 1 or self.student_world_version != 0:
                raise ConfigError(f"world_version={self.world_version} and student_world_version="
                                  f"{self.student_world_version} pick the world of the default run (no teacher, no "
                                  "proxy); one calibration reads its task's options: task_options=[version=2]")

    def is_default_run(self) -> bool:
        return not self.teacher and not self.proxy

    def calibration(self) -> CalibrateConfig:
        return CalibrateConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(CalibrateConfig)})


def check_default_run(command: CalibrateCommand, config_file: str | None) -> None:
    """The default run takes only ``DEFAULT_RUN_FIELDS``: a config file or a calibration setting without a
    teacher is a mistake (a missing teacher line), not a request for the tiny world."""
    if config_file is not None:
        raise ConfigError(f"--config {config_file} sets no teacher and no proxy: calibrate needs both (teacher=PATH "
                          "proxy=PATH). The tiny-world default run takes no config file: run with no arguments "
                          "(or only output_dir, seed, world_version, --quick)")
    defaults, given = to_dict(CalibrateCommand()), to_dict(command)
    ignored = [key for key in given if key not in DEFAULT_RUN_FIELDS and given[key] != defaults[key]]
    if ignored:
        raise ConfigError(f"{', '.join(ignored)} set without a teacher: calibrate needs teacher=PATH and proxy=PATH. "
                          f"The tiny-world default run (no teacher) takes only {', '.join(DEFAULT_RUN_FIELDS)} and "
                          "--quick")


def run(command: CalibrateCommand, config_file: str | None = None) -> None:
    import jax

    if command.is_default_run():
        from jaxdistill.experiments.world import default_run

        check_default_run(command, config_file)
        quick = command.world_profile == "quick"
        default_run(quick=quick, output_dir=None if command.output_dir == CalibrateConfig().output_dir
                    else command.output_dir, seed=command.seed, world_version=command.world_version,
                    student_world_version=command.student_world_version)
        return
    from jaxdistill.rl.loop import calibrate  # the training stack, loaded only when it runs

    result = calibrate(command.calibration())
    if jax.process_index() == 0:
        print(json.dumps({k: v for k, v in result.items() if k != "history"}, indent=2, default=str))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    config_file = next((argv[i + 1] if a == "--config" and i + 1 < len(argv) else a.split("=", 1)[1]
                        for i, a in enumerate(argv) if a == "--config" or a.startswith("--config=")), None)
    return run_cli(
        CalibrateCommand, lambda command: run(command, config_file), argv, prog="jaxdistill-calibrate",
        description="Calibrate a teacher's distillability with GRPO (eta > 0 distillable, eta < 0 "
                    "undistillable). With no arguments (no teacher and no proxy): the tiny-world default run "
                    "(builds teacher, proxy and students, calibrates eta = +1, -1, 0, distills, evaluates).",
        presets={"--quick": (QUICK, "the tiny-world default run with few steps (for tests)")})


if __name__ == "__main__":
    sys.exit(main())
