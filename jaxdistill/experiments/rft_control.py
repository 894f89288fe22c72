"""Placebo control for plain RFT: the same run with the task rewards permuted across each batch.

    python -m jaxdistill.experiments.rft_control [--config configs/tiny_rft.yaml] [--seeds 0 1 2] [key=value ...]

Runs ``python -m jaxdistill.calibrate --config CONFIG`` twice per seed, in this process: once as it is
(``advantage=knob``), once with every step's task rewards shuffled across the batch before the advantages
are formed (``advantage=permuted_task_reward``, ``jaxdistill.rl.registry``: the rollouts, the optimiser,
the learning rate and the number of updates are unchanged; only the information in the reward is
removed). Prints the held-out greedy accuracy of both at every
evaluation. If accuracy rises with the true reward but not with the permuted one, the rise comes from
the reward, not from the drift that any update of that size causes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

from jaxdistill.config import load_config
from jaxdistill.rl.config import CalibrateConfig
from jaxdistill.rl.loop import CalibrationRun

ARMS = (("reward", "knob"), ("permuted", "permuted_task_reward"))  # (label, advantage function)


def accuracy_curve(config: CalibrateConfig) -> list[tuple[int, float]]:
    """Run ``config``; its held-out accuracy at every evaluation as (step, accuracy)."""
    history = CalibrationRun(config).run()["history"]
    return [(h["step"], h["eval/accuracy"]) for h in history if "eval/accuracy" in h]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="configs/tiny_rft.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--json", help="also write the curves to this file")
    args, overrides = parser.parse_known_args(argv)
    runs = tempfile.mkdtemp(prefix="rft_control_")  # a fresh folder per invocation: runs never collide
    results = {}
    for seed in args.seeds:
        for label, advantage in ARMS:
            config = load_config(CalibrateConfig, args.config, [*overrides, f"seed={seed}", "export=false",
                                                                "progress=false", f"advantage={advantage}",
                                                                f"output_dir={runs}/{label}_seed{seed}"])
            curve = accuracy_curve(config)
            results[f"{label}/seed{seed}"] = curve
            print(f"seed {seed} {label:8s} " + "  ".join(f"{step}:{acc:.3f}" for step, acc in curve), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
