"""How strong can a tiny-world model get from gold SFT alone? One model of the world, trained from scratch.

    python -m jaxdistill.calibrate                  # the default run (its tokenizers)
    python -m jaxdistill.experiments.student_probe proxy --steps 1100 --seed 1
    python -m jaxdistill.experiments.student_probe proxy --steps 400 hidden_size=64 intermediate_size=192 head_dim=16
    python -m jaxdistill.experiments.student_probe teacher --steps 900

Trains the named shape of ``jaxdistill/experiments/world.py`` (teacher, proxy or other: the proxy's shape is the
``proxy_like`` student's), with shape fields replaced by ``key=value`` arguments, on gold chain-of-thought
with the default run's SFT recipe (``world.train_from_scratch``: batch 32, cosine schedule, 50 warm-up
steps, by default the small models' learning rate 6e-3) and the default run's tokenizers; prints greedy accuracy on the 100 held-out problems, the mean
completion length and the wall time. Used to size the students (the issue-8 feasibility notes ask that
students of the base teacher reach 30%); README, "The default run", has the figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from jaxdistill.experiments import world

SHAPES = {"teacher": (world.TEACHER_SHAPE, "teacher"), "proxy": (world.PROXY_SHAPE, "proxy"),
          "other": (world.OTHER_STUDENT_SHAPE, "teacher")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shape", choices=list(SHAPES))
    parser.add_argument("fields", nargs="*", help="shape overrides, e.g. hidden_size=64 rope_theta=1e4")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--lr", type=float, default=world.FULL.student_sft_lr)
    parser.add_argument("--seed", type=int, default=2, help="the world's seeds: teacher 0, proxy 1, other 3")
    parser.add_argument("--run", default="runs/default", help="the default run whose tokenizers are used")
    parser.add_argument("--out", default="runs/student_probe")
    args = parser.parse_args()

    shape, tokenizer = SHAPES[args.shape]
    shape = dict(shape)
    for item in args.fields:
        key, _, value = item.partition("=")
        if key not in shape and key != "rope_theta":
            raise SystemExit(f"unknown shape field {key!r}; valid: {sorted(shape)} and rope_theta")
        shape[key] = float(value) if key == "rope_theta" else int(value)
    tokenizer_dir = Path(args.run) / "world" / "tokenizers" / tokenizer
    if not (tokenizer_dir / "tokenizer.json").exists():
        raise SystemExit(f"no tokenizer in {tokenizer_dir}: run `python -m jaxdistill.calibrate` first")
    name = "_".join([args.shape, f"{args.steps}steps", f"lr{args.lr:g}", f"seed{args.seed}", *args.fields])
    out = Path(args.out) / name
    start = time.perf_counter()
    world.train_from_scratch(shape, str(tokenizer_dir), str(out / "init"), str(out / "run"), args.steps, args.lr,
                             world.FULL, seed=args.seed, progress=True)
    result = json.loads((out / "run" / "summary.json").read_text())["eval"]
    print(f"{name}: accuracy {100 * result['accuracy']:.0f}% on {result['n']} held-out problems, "
          f"{result['mean_length']:.1f} tokens, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
