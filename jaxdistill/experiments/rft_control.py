"""Placebo control for plain RFT: the same run with the task rewards permuted across each batch.

    python -m jaxdistill.experiments.rft_control [--config configs/tiny_rft.yaml] [--seeds 0 1 2] [key=value ...]

Runs ``python -m jaxdistill.calibrate --config CONFIG`` twice per seed, in this process: once as it is,
once with every step's task rewards shuffled across the batch before the advantages are formed (the
rollouts, the optimiser, the learning rate and the number of updates are unchanged; only the
information in the reward is removed). Prints the held-out greedy accuracy of both at every
evaluation. If accuracy rises with the true reward but not with the permuted one, the rise comes from
the reward, not from the drift that any update of that size causes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile

import numpy as np

import jaxdistill.rl.loop as loop
from jaxdistill.config import load_config
from jaxdistill.rl.config import CalibrateConfig


def accuracy_curve(config: CalibrateConfig, *, permute_seed: int | None) -> list[tuple[int, float]]:
    """Run ``config``; with ``permute_seed``, shuffle each step's task rewards across the batch."""
    original = loop.combined_advantages
    if permute_seed is not None:
        rng = np.random.default_rng(permute_seed)

        def permuted(task_rewards, cal_rewards, num_generations, **kwargs):
            shuffled = np.asarray(task_rewards)[rng.permutation(len(task_rewards))]
            return original(shuffled, cal_rewards, num_generations, **kwargs)

        loop.combined_advantages = permuted
    try:
        history = loop.CalibrationRun(config).run()["history"]
    finally:
        loop.combined_advantages = original
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
        for label, permute in (("reward", None), ("permuted", 1000 + seed)):
            config = load_config(CalibrateConfig, args.config, [*overrides, f"seed={seed}", "export=false",
                                                                "progress=false",
                                                                f"output_dir={runs}/{label}_seed{seed}"])
            curve = accuracy_curve(config, permute_seed=permute)
            results[f"{label}/seed{seed}"] = curve
            print(f"seed {seed} {label:8s} " + "  ".join(f"{step}:{acc:.3f}" for step, acc in curve), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    sys.exit(main())
