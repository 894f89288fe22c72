"""Placebo control for plain RFT: the same run with the task rewards permuted across each batch.

    python -m jaxdistill.experiments.rft_control --config configs/tiny_rft.yaml [seeds=[0,1,2]] [key=value ...]

Runs the calibration of ``--config`` twice per seed, in this process: once as it is
(``advantage=knob``), once with every step's task rewards shuffled across the batch before the advantages
are formed (``advantage=permuted_task_reward``, ``jaxdistill.rl.registry``: the rollouts, the optimiser,
the learning rate and the number of updates are unchanged; only the information in the reward is
removed). Prints the held-out greedy accuracy of both at every
evaluation. If accuracy rises with the true reward but not with the permuted one, the rise comes from
the reward, not from the drift that any update of that size causes.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import tempfile

from jaxdistill.config import check_ranges, option, run_cli
from jaxdistill.rl.config import CalibrateConfig
from jaxdistill.rl.loop import CalibrationRun

ARMS = (("reward", "knob"), ("permuted", "permuted_task_reward"))  # (label, advantage function)


def accuracy_curve(config: CalibrateConfig) -> list[tuple[int, float]]:
    """Run ``config``; its held-out accuracy at every evaluation as (step, accuracy)."""
    history = CalibrationRun(config).run()["history"]
    return [(h["step"], h["eval/accuracy"]) for h in history if "eval/accuracy" in h]


@dataclasses.dataclass
class RftControlConfig(CalibrateConfig):
    """A calibration's settings (``--config``, e.g. configs/tiny_rft.yaml), the seeds and where the curves go."""

    seeds: tuple[int, ...] = option((0, 1, 2), "calibration seeds; each runs with the true and the permuted reward")
    curves_json: str = option("", "also write the accuracy curves to this JSON file")

    def validate(self) -> None:
        # the runs go to fresh folders of their own (output_dir is not used)
        check_ranges(self)


def main(argv: list[str] | None = None) -> int:
    return run_cli(RftControlConfig, control, argv, prog="python -m jaxdistill.experiments.rft_control",
                   description=__doc__.split("\n\n")[0])


def control(args: RftControlConfig) -> None:
    runs = tempfile.mkdtemp(prefix="rft_control_")  # a fresh folder per invocation: runs never collide
    calibration = CalibrateConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(CalibrateConfig)})
    results = {}
    for seed in args.seeds:
        for label, advantage in ARMS:
            config = dataclasses.replace(calibration, seed=seed, export=False, progress=False, advantage=advantage,
                                         output_dir=f"{runs}/{label}_seed{seed}")
            config.validate()
            curve = accuracy_curve(config)
            results[f"{label}/seed{seed}"] = curve
            print(f"seed {seed} {label:8s} " + "  ".join(f"{step}:{acc:.3f}" for step, acc in curve), flush=True)
    if args.curves_json:
        with open(args.curves_json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
