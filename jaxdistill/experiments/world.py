"""The tiny world: the default run of ``python -m jaxdistill.calibrate`` on a CPU, with no downloads.

    build_world(folder)  -> two tiny tokenizers trained on the arith corpus; a tiny Qwen3-architecture
                            teacher and a tinier Qwen2-architecture proxy (also the first student),
                            and a second student, trained from scratch on gold chain-of-thought with
                            the sft objective; saved as HF folders (reused when already there)
    default_run()        -> build_world, then calibrate eta = +1 (distillable), -1 (undistillable) and 0
                            (control) from the same base teacher, distill students from every teacher
                            with two attacks (seqkd, gkd) -- the proxy itself, and a student that differs
                            from it in family and tokenizer -- evaluate every arm, and write
                            runs/<name>/report.md and knob.png

Every stage is a job of one graph (``jaxdistill.experiments.jobs``) run by ``experiments.runner`` on one
worker process per CPU core: the teacher's SFT trains next to the proxy's and the other student's, the
calibrations next to the scorecard arms of the original teacher, and so on (XLA keeps about one core
busy per tiny model).
Every stage runs the same code paths as a real Qwen run (HF folders in and out, the sampler, the
aligner, GRPO, the distillation objectives). ``quick=True`` shrinks every stage to a few steps (for
tests); the figures then mean nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Mapping

from flax import nnx

from jaxdistill import run_folder
from jaxdistill.distill.trainer import DistillConfig
from jaxdistill.experiments import runner
from jaxdistill.experiments.jobs import JOB_OVERHEAD_SECONDS, Job, available_cores, default_workers, run_jobs
from jaxdistill.experiments.knob import DEFAULT_RUN_ETAS, knob_table, plot_knob, scorecard_accuracy
from jaxdistill.experiments.scorecard import ScorecardConfig, assemble_scorecard, check_scorecard, scorecard_jobs
from jaxdistill.models import Qwen, QwenConfig, save_model
from jaxdistill.rl.config import CalibrateConfig
from jaxdistill.sharding import MeshConfig
from jaxdistill.tokenizer import load_tokenizer

log = logging.getLogger("jaxdistill.world")

ARITH_DIFFICULTY = 1  # two-step problems: learnable by a 0.3M-parameter model in minutes on a CPU
DEFAULT_ATTACKS = ("seqkd", "gkd")  # the default run's attackers (scorecard.ATTACKERS; "battery" for all five)


@dataclasses.dataclass(frozen=True)
class Profile:
    """Sizes and budgets of one default run (full or quick)."""

    teacher_sft_steps: int = 1500
    teacher_sft_lr: float = 3e-3
    # The proxy is also the proxy_like student's starting point (the student the calibration measures).
    # Its gold SFT and the other student's are the students' "pretraining", shared by all arms; the
    # fewest steps measured that put each above 30% held-out accuracy (jaxdistill.experiments.student_probe,
    # seed 2: proxy 16% / 38% / 54% after 800 / 1,100 / 1,500 steps, other 18% / 21% / 50%; the
    # world's own seeds: proxy 36% after 1,100, other 44% after 1,500).
    proxy_sft_steps: int = 1100
    student_warmup_steps: int = 1500
    student_sft_lr: float = 6e-3  # the small models' SFT: 16% after 400 steps at 6e-3 or 1e-2, 12% at 3e-3
    sft_batch: int = 32
    calibrate_steps: int = 60
    prompts_per_step: int = 8
    num_generations: int = 4
    student_steps: int = 100  # per arm, from the warmed-up student
    student_batch: int = 32
    student_lr: float = 3e-3
    eval_num_prompts: int = 100
    max_completion_length: int = 80  # gold solutions of difficulty 1 take up to 78 teacher tokens
    # The arith world (jaxdistill.tasks.arith.WORLD_VERSIONS): 1, plain gold solutions; 2, gold solutions
    # with detours (corrections, results before their derivation ...; docs/tasks.md), which run longer;
    # 3, results before their derivation alone, in 30% of the lines.
    world_version: int = 1
    # The gold the proxy and the students are pretrained on (0: the teacher's, world_version). With
    # world_version=2 (or 3) and 1 here, a mixed world (this project's extension): a teacher that learnt the
    # detours, students that never saw one (the teacher-student gap of docs/results/2026-12-06-ceiling.md).
    student_world_version: int = 0


FULL = Profile()
QUICK = Profile(teacher_sft_steps=4, proxy_sft_steps=2, student_warmup_steps=2, sft_batch=8, calibrate_steps=2,
                prompts_per_step=2, num_generations=2, student_steps=2, student_batch=4, eval_num_prompts=4,
                max_completion_length=24)



# The completion length of each world: its longest gold solution (difficulty 1) in teacher tokens, rounded
# up (v1 and v3: 78; v2, whose detours run longer: 131, a tail cut at 128).
COMPLETION_LENGTH = {1: 80, 2: 128, 3: 80}


def for_world(profile: Profile, world_version: int, student_world_version: int = 0) -> Profile:
    """``profile`` in world ``world_version`` (``COMPLETION_LENGTH``; a quick profile keeps its shorter
    one); ``student_world_version``: the students' gold (0: the same)."""
    if student_world_version == world_version:
        student_world_version = 0
    if (world_version, student_world_version) == (profile.world_version, profile.student_world_version):
        return profile
    length = profile.max_completion_length if profile.max_completion_length < 80 else COMPLETION_LENGTH[world_version]
    return dataclasses.replace(profile, world_version=world_version, max_completion_length=length,
                               student_world_version=student_world_version)


def student_profile(profile: Profile) -> Profile:
    """The profile the proxy and the other student are pretrained under: the students' world (the
    teacher's unless ``student_world_version`` says otherwise), so a mixed world's students are exactly
    those of a plain world of their version (the same runs, reused when copied in)."""
    return for_world(profile, profile.student_world_version or profile.world_version)


def world_task_options(profile: Profile) -> tuple[str, ...]:
    """The arith task options of every stage: the difficulty, and the world version unless it is 1."""
    version = () if profile.world_version == 1 else (f"version={profile.world_version}",)
    return (f"difficulty={ARITH_DIFFICULTY}",) + version


# Expected seconds per step on one core (measured on a 2-core x86 at batch 32): they order the jobs of
# the default run and drive its ETA, nothing else.
STEP_SECONDS = {"teacher": 0.33, "proxy": 0.15, "student_other": 0.2,
                "student": 0.15, "calibrate": 1.5}

# Architectures (docs/design.md §4): a tiny Qwen3 teacher, a tinier Qwen2 proxy, and two students: the proxy
# itself (proxy_like), and one that differs from the proxy in family and tokenizer (Qwen3 with the
# teacher's tokenizer) at the proxy's size. Sizes are set by the time budget on two CPU cores: a
# teacher SFT step costs ~0.3 s at batch 32, a proxy-sized one ~0.12 s.
TEACHER_SHAPE = dict(model_type="qwen3", hidden_size=64, intermediate_size=192, num_hidden_layers=3,
                     num_attention_heads=4, num_key_value_heads=2, head_dim=16, qk_norm=True)
PROXY_SHAPE = dict(model_type="qwen2", hidden_size=48, intermediate_size=128, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=2, head_dim=12, qkv_bias=True)
OTHER_STUDENT_SHAPE = dict(model_type="qwen3", hidden_size=48, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, head_dim=12, qk_norm=True)


def init_model_folder(folder: Path, shape: dict[str, Any], tokenizer_dir: Path, seed: int) -> Path:
    """A randomly initialised model of ``shape`` sized to the tokenizer, saved as an HF folder."""
    tok = load_tokenizer(tokenizer_dir)
    config = QwenConfig(vocab_size=tok.vocab_size, tie_word_embeddings=True, max_position_embeddings=512,
                        eos_token_id=tok.eos_id, pad_token_id=tok.pad_id, bos_token_id=None, **shape)
    return save_model(Qwen(config, rngs=nnx.Rngs(seed)), folder, tokenizer_dir=tokenizer_dir)


def train_from_scratch(shape: dict[str, Any], tokenizer_dir: str, init_dir: str, output_dir: str, steps: int,
                       learning_rate: float, profile: Profile, seed: int, progress: bool = True) -> str:
    """Initialise a model of ``shape`` and train it on gold chain-of-thought (sft); returns its HF folder.
    A finished run is reused; an interrupted one continues from its checkpoint (``runner``)."""
    config = DistillConfig(student=init_dir, objective="sft", task="arith",
                           task_options=world_task_options(profile), max_steps=steps,
                           train_batch_size=profile.sft_batch, learning_rate=learning_rate, lr_schedule="cosine",
                           warmup_steps=min(50, steps // 10), seed=seed, output_dir=output_dir,
                           eval_num_prompts=profile.eval_num_prompts, save_steps=max(steps // 4, 1), resume=True,
                           max_completion_length=profile.max_completion_length, progress=progress)
    if not runner.finished(config) and not (Path(init_dir) / "config.json").exists():
        init_model_folder(Path(init_dir), shape, Path(tokenizer_dir), seed)
    return runner.distilled_student(config)


# The models of the world: name -> (shape, which tokenizer, seed offset, steps and learning rate from the
# profile). Students start from gold SFT (a stand-in for the pretrained LM a real student starts from),
# shared by every arm: the proxy itself (the scorecard's proxy_like student) and one that differs from it.
MODELS = {"teacher": (TEACHER_SHAPE, "teacher", 0, "teacher_sft_steps", "teacher_sft_lr"),
          "proxy": (PROXY_SHAPE, "proxy", 1, "proxy_sft_steps", "student_sft_lr"),
          "student_other": (OTHER_STUDENT_SHAPE, "teacher", 3, "student_warmup_steps", "student_sft_lr")}
RUN_FOLDER = {"teacher": "teacher_sft", "proxy": "proxy_sft", "student_other": "student_other_warmup"}


def world_paths(folder: str | Path) -> dict[str, Path]:
    """Where ``build_world`` puts the tokenizers and models (known before anything is built)."""
    root = Path(folder)
    paths = {"teacher_tokenizer": root / "tokenizers" / "teacher", "proxy_tokenizer": root / "tokenizers" / "proxy"}
    paths.update({name: root / RUN_FOLDER[name] / "model" for name in MODELS})
    paths["student_proxy_like"] = paths["proxy"]
    return paths


def world_name(world_version: int, student_world_version: int = 0) -> str:
    """``v2``, or ``v2 (students: v1)`` for a mixed world."""
    mixed = student_world_version and student_world_version != world_version
    return f"v{world_version}" + (f" (students: v{student_world_version})" if mixed else "")


def check_world_version(folder: str | Path, world_version: int, student_world_version: int = 0) -> None:
    """Record the world version (and a mixed world's student version) in ``<folder>/world_version.json``, or
    refuse a folder that holds a world of another version: its models were trained on other gold data and
    would be reused silently. A folder that holds a world but no version file is from before versions
    existed: v1."""
    root = Path(folder)
    path = root / "world_version.json"
    wanted = {"world_version": world_version}
    if student_world_version and student_world_version != world_version:
        wanted["student_world_version"] = student_world_version
    if path.exists():
        stored = json.loads(path.read_text())
    elif (root / "world.json").exists() or any((root / run).exists() for run in RUN_FOLDER.values()):
        stored = {"world_version": 1}
    else:
        root.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(wanted) + "\n")
        return
    if stored != wanted:
        raise ValueError(f"{root} holds a world {world_name(**stored)}, but this run asks for world "
                         f"{world_name(**wanted)}: its models were trained on other gold data. Choose another "
                         f"folder, or delete {root} to build it again")


def students_world(folder: str | Path) -> int:
    """The world whose gold the students in the world ``folder`` were pretrained on (its
    ``world_version.json``: the student version of a mixed world, else the world version; 1 without a file)."""
    path = Path(folder) / "world_version.json"
    stored = json.loads(path.read_text()) if path.exists() else {"world_version": 1}
    return stored.get("student_world_version", stored["world_version"])


def world_jobs(folder: str | Path, profile: Profile = FULL, seed: int = 0, *, progress: bool = True) -> list[Job]:
    """The tokenizers (trained here, in seconds) and one job per model: ``world <name>``. A folder that
    holds a world of another version is refused (``check_world_version``)."""
    from jaxdistill.tasks.tiny_tokenizers import train_tiny_tokenizers

    root = Path(folder)
    check_world_version(root, profile.world_version, profile.student_world_version)
    paths = world_paths(root)
    if not all((paths[f"{side}_tokenizer"] / "tokenizer.json").exists() for side in ("teacher", "proxy")):
        toks = train_tiny_tokenizers(root / "tokenizers", seed=seed)
        assert all(Path(toks[side]) == paths[f"{side}_tokenizer"] for side in ("teacher", "proxy")), toks
    jobs = []
    for name, (shape, tok, offset, steps_field, lr_field) in MODELS.items():
        steps = getattr(profile, steps_field)
        jobs.append(Job(f"world {name}", train_from_scratch, dict(
            shape=shape, tokenizer_dir=str(paths[f"{tok}_tokenizer"]), init_dir=str(root / "init" / name),
            output_dir=str(root / RUN_FOLDER[name]), steps=steps, learning_rate=getattr(profile, lr_field),
            profile=profile if name == "teacher" else student_profile(profile), seed=seed + offset,
            progress=progress), cost=JOB_OVERHEAD_SECONDS + steps * STEP_SECONDS[name], kind="sft"))
    return jobs


def build_world(folder: str | Path, profile: Profile = FULL, seed: int = 0, *, workers: int = 1) -> dict[str, Path]:
    """Tokenizers and the SFT-trained teacher, proxy and students (reused if present), as HF folders."""
    root = Path(folder)
    start = time.perf_counter()
    run_jobs(world_jobs(root, profile, seed, progress=workers == 1), workers=workers, label="world",
             compilation_cache=str(root / "compilation_cache"))
    paths = world_paths(root)
    (root / "world.json").write_text(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    log.info("tiny world ready in %s (%.0f s)", root, time.perf_counter() - start)
    return paths


def calibration_config(teacher: str, proxy: str, run: str, eta: float, profile: Profile, seed: int,
                       progress: bool = True, overrides: Mapping[str, Any] | None = None) -> CalibrateConfig:
    """The default run's calibration of ``teacher`` at ``eta`` (GRPO from the base teacher) into ``run``.
    ``overrides``: CalibrateConfig fields that replace the default run's settings
    (``jaxdistill.experiments.undistillable``); a misspelt one is a TypeError. In a mixed world, influence
    mode's validation text is the students' gold (``influence_validation_task_options``) unless given."""
    config = CalibrateConfig(
        teacher=teacher, proxy=proxy, task="arith", task_options=world_task_options(profile),
        output_dir=run, eta=eta, num_generations=profile.num_generations, prompts_per_step=profile.prompts_per_step,
        max_steps=profile.calibrate_steps, learning_rate=1e-3, lora_rank=8, lora_alpha=16.0,
        beta=0.04, max_completion_length=profile.max_completion_length, eval_steps=0,
        # only correct rollouts earn calibration reward: with "all", eta = -1 taught the teacher to
        # break its answers (accuracy 0.40 -> 0.10 in 30 steps of the first full run)
        calibration_scope="correct",
        eval_num_prompts=profile.eval_num_prompts, save_steps=max(profile.calibrate_steps // 3, 1), seed=seed,
        resume=True,  # an interrupted default run continues its calibrations exactly
        progress=progress, mesh=MeshConfig(num_devices=1))
    config = dataclasses.replace(config, **(overrides or {}))
    if profile.student_world_version and config.calibration_mode == "influence" \
            and not config.influence_validation_task_options:
        # harm to the students is measured on the text they learnt: the mixed world's students' gold
        config = dataclasses.replace(config, influence_validation_task_options=world_task_options(
            student_profile(profile)))
    return config


def calibration_jobs(world: Mapping[str, Path], out: Path, profile: Profile, seed: int, *,
                     progress: bool = True) -> list[Job]:
    """``calibrate <name>`` for eta = +1, -1, 0 (``runner.calibrated_teacher``), each waiting on the world's
    teacher and proxy."""
    return [Job(f"calibrate {name}", runner.calibrated_teacher, dict(config=calibration_config(
        str(world["teacher"]), str(world["proxy"]), str(out / "calibrate" / name), eta, profile, seed,
        progress=progress)), after=("world teacher", "world proxy"),
        cost=JOB_OVERHEAD_SECONDS + profile.calibrate_steps * STEP_SECONDS["calibrate"], kind="calibrate")
        for name, eta in DEFAULT_RUN_ETAS.items()]


def write_knob_plot(card: Mapping[str, Any], path: Path) -> Path:
    """The knob of the default run: the teachers' and every student's accuracy (per attack) against eta,
    the students of the original teacher dashed (``jaxdistill.experiments.knob``)."""
    accuracy = scorecard_accuracy(card)
    rows = knob_table(accuracy, dict(sorted(DEFAULT_RUN_ETAS.items(), key=lambda item: item[1])))
    return plot_knob(rows, list(accuracy), path, title="Teacher and distilled-student accuracy vs eta")


def scorecard_config(world: Mapping[str, Path], teachers: Mapping[str, Path | str], output_dir: Path,
                     profile: Profile, *, seeds: tuple[int, ...], workers: int,
                     attacks: tuple[str, ...] = DEFAULT_ATTACKS) -> ScorecardConfig:
    """The default run's scorecard (``jaxdistill.experiments.scorecard.ScorecardConfig``): both students,
    the profile's distillation recipe and held-out set. ``teachers``: label -> HF folder of each calibrated
    teacher; ``attacks``: attacker names of ``scorecard.ATTACKERS`` or "battery" (default: seqkd, gkd)."""
    recipe = DistillConfig(task="arith", task_options=world_task_options(profile),
                           max_steps=profile.student_steps, train_batch_size=profile.student_batch,
                           learning_rate=profile.student_lr, lr_schedule="cosine",
                           # gkd's JSD(0.5) does not learn from random weights; forward KL does (docs/distill.md)
                           divergence="forward_kl", max_completion_length=profile.max_completion_length,
                           save_steps=0, progress=False)
    return ScorecardConfig(original_teacher=str(world["teacher"]),
                           teachers=tuple(f"{label}={path}" for label, path in teachers.items()),
                           students=(f"proxy_like={world['student_proxy_like']}",
                                     f"other={world['student_other']}"),
                           attacks=tuple(attacks), seeds=seeds, recipe=recipe, workers=workers,
                           num_prompts=profile.eval_num_prompts, max_completion_length=profile.max_completion_length,
                           output_dir=str(output_dir))


def copied_world(out: Path) -> bool:
    """Whether ``out`` holds nothing but a world that records its version (``world/world_version.json``): a
    world copied in from another run to be reused (its every stage is checked by ``runner.finished``), not
    a default run of an earlier jaxdistill."""
    entries = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    return entries == ["world"] and (out / "world" / "world_version.json").exists()


def check_run_folder(out: Path, profile: Profile, seed: int) -> None:
    """Record the profile and seed of a default run in ``<out>/profile.json``, or check that a folder
    being rerun was made with the same ones: finished stages are reused by folder, so another profile
    would silently mix its models with the stored ones. Raises ValueError naming what differs. A folder
    that holds only a copied world (``copied_world``) is a new run."""
    wanted = {**dataclasses.asdict(profile), "seed": seed}
    path = out / "profile.json"
    if path.exists():
        # folders from before versions: v1; from before mixed worlds: the students' world is the teacher's
        stored = {"world_version": 1, "student_world_version": 0, **json.loads(path.read_text())}
        changed = sorted(k for k in wanted.keys() | stored.keys() if stored.get(k) != wanted.get(k))
        if not changed:
            return
        what = "; ".join(f"{k}: {stored.get(k)} there, {wanted.get(k)} now" for k in changed)
        raise ValueError(f"{out} holds a default run made with other settings ({what}); rerunning would reuse "
                         f"its finished stages. Choose another output_dir, or delete {out} to start over")
    if (out / "world").exists() and not copied_world(out):
        raise ValueError(f"{out} holds a default run from an earlier jaxdistill (no profile.json); rerunning "
                         f"would reuse its finished stages. Choose another output_dir, or delete {out} to start over")
    if (out / "world").exists():
        log.info("%s holds only a world (with its version): its stages are reused where their settings and "
                 "inputs match this run's (runner.finished), trained again where they do not", out / "world")
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(wanted, indent=2))


NUMERIC_PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy")


def environment() -> str:
    """The CPU and numerical libraries of this run, for its report: with the code, they fix the low bits
    of every figure, and another CPU or library build makes the default run another draw (README)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    versions = []
    for name in NUMERIC_PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            versions.append(f"{name} {version(name)}")
    return f"{cpu} ({available_cores()} cores), Python {platform.python_version()}, {', '.join(versions)}"


def default_run(*, quick: bool = False, output_dir: str | Path | None = None, seed: int = 0,
                seeds: tuple[int, ...] | None = None, workers: int = 0, world_version: int = 1,
                student_world_version: int = 0, attacks: tuple[str, ...] = DEFAULT_ATTACKS) -> dict[str, Any]:
    """The whole tiny-world pipeline; writes ``<output_dir>/report.md`` and ``knob.png``.

    Every stage is a job of one graph (``jaxdistill.experiments.jobs``): the world's four trainings, the three
    calibrations, the scorecard's arms (each waiting only on the models it reads) and the teacher
    comparison, run on ``workers`` processes (0: one per CPU core on a CPU host, 1 on an accelerator).
    On a CPU, each worker is pinned to an equal share of the cores, so the low bits of the figures depend
    on the cores per worker (not on which worker ran what); finished stages are reused on a rerun of the
    same profile and seed (another one in the same folder is refused: ``check_run_folder``).
    ``world_version``: the arith world (1, the default; 2, gold text with detours: docs/tasks.md).
    ``student_world_version``: the gold the proxy and students are pretrained on (0: the same; 1 with
    ``world_version=2``: the mixed world, this project's extension: ``Profile.student_world_version``).
    ``attacks``: the scorecard's attackers (``("battery",)``: the five of ``scorecard.BATTERY``).
    """
    profile = for_world(QUICK if quick else FULL, world_version, student_world_version)
    out = Path(output_dir or ("runs/quick" if quick else "runs/default"))
    with run_folder.held(out, "default run"):
        check_run_folder(out, profile, seed)
        workers = workers or default_workers()
        start = time.perf_counter()
        world = world_paths(out / "world")
        teachers = {name: out / "calibrate" / name / "teacher" for name in DEFAULT_RUN_ETAS}
        config = scorecard_config(world, teachers, out / "scorecard", profile,
                                  seeds=seeds or ((seed,) if quick else (seed, seed + 1, seed + 2)), workers=workers,
                                  attacks=attacks)
        check_scorecard(config)
        producers = {str(world[name]): f"world {name}" for name in MODELS}
        producers.update({str(path): f"calibrate {name}" for name, path in teachers.items()})
        progress = workers == 1  # several workers share one terminal: only the graph's progress lines
        jobs = (world_jobs(out / "world", profile, seed, progress=progress)
                + calibration_jobs(world, out, profile, seed, progress=progress)
                + scorecard_jobs(config, producers=producers, step_seconds=STEP_SECONDS["student"]))
        log.info("default run: %d jobs on %d worker(s)", len(jobs), workers)
        results = run_jobs(jobs, workers=workers, label="default run", compilation_cache=str(out / "compilation_cache"))
        (out / "world" / "world.json").write_text(json.dumps({k: str(v) for k, v in world.items()}, indent=2))
        result = assemble_scorecard(config, results, time.perf_counter() - start)
        write_knob_plot(result, out / "knob.png")
        report = out / "report.md"
        card_md = (out / "scorecard" / "scorecard.md").read_text()
        report.write_text(f"# jaxdistill default run ({'quick' if quick else 'full'} profile, world "
                          f"{world_name(profile.world_version, profile.student_world_version)})\n\n"
                          f"Total time: {(time.perf_counter() - start) / 60:.1f} min on {workers} worker(s) (stages "
                          f"already finished in this folder are reused, not re-timed). Teachers calibrated with "
                          f"eta = +1 (distillable), -1 (undistillable), 0 (control) from the same base.\n\n"
                          f"Environment: {environment()}.\n\n"
                          f"{card_md}\n\n![knob](knob.png)\n")
        log.info("report written to %s", report)
        return {"output_dir": str(out), "report": str(report), "knob": str(out / "knob.png"), "scorecard": result}
