"""How strong can a tiny-world model get from gold SFT alone? One model of the world, trained from scratch.

    python -m jaxdistill.calibrate                  # the default run (its tokenizers)
    python -m jaxdistill.experiments.student_probe shape=proxy max_steps=1100 seed=1
    python -m jaxdistill.experiments.student_probe shape=proxy max_steps=400 \
        shape_overrides=[hidden_size=64,intermediate_size=192,head_dim=16]
    python -m jaxdistill.experiments.student_probe shape=teacher max_steps=900

Trains the named shape of ``jaxdistill/experiments/world.py`` (teacher, proxy or other: the proxy's shape is the
``proxy_like`` student's), with shape fields replaced by ``shape_overrides``, on gold chain-of-thought
with the default run's SFT recipe (``world.train_from_scratch``: batch 32, cosine schedule, 50 warm-up
steps, by default the small models' learning rate 6e-3) and the default run's tokenizers; prints greedy accuracy on the 100 held-out problems, the mean
completion length and the wall time. Used to size the students (the issue-8 feasibility notes ask that
students of the base teacher reach 30%); README, "The default run", has the figures.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from jaxdistill.config import BaseConfig, ConfigError, option, run_cli
from jaxdistill.experiments import world

SHAPES = {"teacher": (world.TEACHER_SHAPE, "teacher"), "proxy": (world.PROXY_SHAPE, "proxy"),
          "other": (world.OTHER_STUDENT_SHAPE, "teacher")}


@dataclasses.dataclass
class StudentProbeConfig(BaseConfig):
    """One model of the tiny world trained from scratch on gold SFT (``key=value`` or YAML)."""

    shape: str = option("proxy", "the world's shape to train", choices=tuple(SHAPES))
    shape_overrides: tuple[str, ...] = option((), "shape fields replaced, e.g. [hidden_size=64,rope_theta=1e4]")
    max_steps: int = option(400, "SFT steps", ge=1)
    learning_rate: float = option(world.FULL.student_sft_lr, "peak learning rate", gt=0)
    seed: int = option(2, "initialisation seed (the world's: teacher 0, proxy 1, other 3)")
    run_dir: str = option("runs/default", "the default run whose tokenizers are used")
    output_dir: str = option("runs/student_probe", "where the probe's runs go (one folder per setting)")


def main(argv: list[str] | None = None) -> int:
    return run_cli(StudentProbeConfig, probe, argv, prog="python -m jaxdistill.experiments.student_probe",
                   description=__doc__.split("\n\n")[0])


def probe(args: StudentProbeConfig) -> None:
    shape, tokenizer = SHAPES[args.shape]
    shape = dict(shape)
    for item in args.shape_overrides:
        key, _, value = item.partition("=")
        if key not in shape and key != "rope_theta":
            raise ConfigError(f"shape_overrides: unknown shape field {key!r}; valid: {sorted(shape)} and rope_theta")
        shape[key] = float(value) if key == "rope_theta" else int(value)
    tokenizer_dir = Path(args.run_dir) / "world" / "tokenizers" / tokenizer
    if not (tokenizer_dir / "tokenizer.json").exists():
        raise FileNotFoundError(f"no tokenizer in {tokenizer_dir}: run `python -m jaxdistill.calibrate` first")
    name = "_".join([args.shape, f"{args.max_steps}steps", f"lr{args.learning_rate:g}", f"seed{args.seed}",
                     *args.shape_overrides])
    out = Path(args.output_dir) / name
    start = time.perf_counter()
    world.train_from_scratch(shape, str(tokenizer_dir), str(out / "init"), str(out / "run"), args.max_steps,
                             args.learning_rate, world.FULL, seed=args.seed, progress=True)
    result = json.loads((out / "run" / "summary.json").read_text())["eval"]
    print(f"{name}: accuracy {100 * result['accuracy']:.0f}% on {result['n']} held-out problems, "
          f"{result['mean_length']:.1f} tokens, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
