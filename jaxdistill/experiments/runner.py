"""The one runner of every experiment: calibrate a teacher at eta, distill a student, evaluate a model;
reuse what is finished, resume what was interrupted.

    teacher = calibrated_teacher(CalibrateConfig(...))       # -> the exported teacher's HF folder
    student = distilled_student(DistillConfig(...))          # -> the student's HF folder
    scores = evaluated(student, task, examples, dtype="float32", max_new_tokens=80)

Each takes the complete config of its run (its ``output_dir`` is the run folder) and is a module-level
function, so it can be the ``fn`` of a job of ``jaxdistill.experiments.jobs`` (the default run, the
scorecard, the knob sweep and the undistillable sweep build their graphs from them). Whether a run is
finished, and so reused rather than run again, is decided in one place: :func:`finished`.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jaxdistill import run_folder
from jaxdistill.distill.data import TeacherSampleCache
from jaxdistill.distill.trainer import INPUT_FIELDS as DISTILLATION_INPUTS
from jaxdistill.distill.trainer import DistillConfig, distill
from jaxdistill.evaluate import model_and_tokenizer, score_model
from jaxdistill.rl.config import INPUT_FIELDS as CALIBRATION_INPUTS
from jaxdistill.rl.config import CalibrateConfig
from jaxdistill.tasks import Example, Task
from jaxdistill.training import read_metrics

log = logging.getLogger(__name__)


def finished(config: CalibrateConfig | DistillConfig) -> bool:
    """Whether ``config.output_dir`` holds the finished run of exactly ``config``, so that its result is
    reused: the same settings and the same inputs by content (the teacher a student reads, the data),
    recorded in the run folder's manifest (``jaxdistill.run_folder``), never because the folder's name
    or label matches. A folder holding another run is run again: the runners pass ``overwrite=true``,
    which moves the old run aside; an unfinished run of the same settings is resumed (``resume=true``).
    """
    fields = CALIBRATION_INPUTS if isinstance(config, CalibrateConfig) else DISTILLATION_INPUTS
    return run_folder.finished_as(config, fields)


def calibrated_teacher(config: CalibrateConfig) -> str:
    """The teacher calibrated by ``config`` (eta, proxy, GRPO settings): its exported HF folder, from the
    finished run in ``config.output_dir`` or from running it (resuming an interrupted one)."""
    from jaxdistill.rl.loop import calibrate

    if not config.export:
        raise ValueError(f"calibration into {config.output_dir} has export=false: a calibrated teacher is read "
                         "from its exported folder, so set export=true")
    if finished(config):
        log.info("reused %s: finished there with the same settings and inputs", config.output_dir)
    else:
        calibrate(dataclasses.replace(config, resume=True, overwrite=True))
    return str(Path(config.output_dir) / "teacher")


def distilled_student(config: DistillConfig, *, teacher_samples: TeacherSampleCache | None = None) -> str:
    """The student trained by ``config`` (objective, teacher, recipe): its HF folder, from the finished run
    in ``config.output_dir`` or from running it (resuming an interrupted one). ``teacher_samples``: a
    cache shared by students that read the same teacher completions (see ``distill``)."""
    if finished(config):
        log.info("reused %s: finished there with the same settings and inputs", config.output_dir)
    else:
        distill(dataclasses.replace(config, resume=True, overwrite=True), teacher_samples=teacher_samples)
    return str(Path(config.output_dir) / "model")


def evaluated(model_dir: str | Path, task: Task, examples: Sequence[Example], *, dtype: str = "float32",
              **decoding: Any) -> dict[str, Any]:
    """``score_model`` of the HF folder ``model_dir`` (accuracy, unparseable rate, length, EOS rate)."""
    model, tokenizer = model_and_tokenizer(model_dir, dtype)
    return score_model(model, tokenizer, task, examples, **decoding)


def exported_step(run: str | Path) -> int | None:
    """The step a finished calibration exported when ``keep_accuracy_within`` chose it (its manifest's
    ``selected_step``, which may be the last step); None for a run without the guard (the last step)."""
    return (run_folder.read_manifest(run) or {}).get("summary", {}).get("selected_step")


def calibration_reward(run: str | Path) -> tuple[float, float]:
    """Mean calibration reward of the first five and the last five steps of a calibration run."""
    values = [r["rewards/calibration/mean"] for r in read_metrics(run) if "rewards/calibration/mean" in r]
    return float(np.mean(values[:5])), float(np.mean(values[-5:]))
