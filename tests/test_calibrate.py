"""calibrate: the loop's mechanics on tiny random models (metrics, export, resume, meshes, bad steps, CLI)."""
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from helpers import tiny_calibration, tiny_world as build_tiny_world
from jaxdistill.calibrate import main
from jaxdistill.models import load_model
from jaxdistill.rl.config import CalibrateConfig
from jaxdistill.rl.loop import calibrate
from jaxdistill.run_folder import SettingsChanged
from jaxdistill.sharding import MeshConfig
from jaxdistill.training import TooManyBadSteps, measures_the_machine, read_metrics


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """Random tiny teacher (Qwen3) and proxy (Qwen2) with the two tiny tokenizers."""
    return build_tiny_world(tmp_path_factory.mktemp("world"))


def _config(world, out, **overrides):
    return tiny_calibration(world, out, **overrides)


METRIC_KEYS = ("reward", "rewards/task/mean", "rewards/calibration/mean", "kl", "entropy", "clip_ratio",
               "completions/mean_length", "completions/clipped_ratio", "calibration/span_gap",
               "calibration/aligned_byte_fraction", "step_time", "tokens_per_second", "loss", "grad_norm")


def test_run_logs_metrics_and_exports(tiny_world, tmp_path):
    result = calibrate(_config(tiny_world, tmp_path / "run", save_steps=0))  # 0: checkpoint at the end only
    records = read_metrics(tmp_path / "run")
    assert [r["step"] for r in records] == [0, 1, 2]
    for key in METRIC_KEYS:
        assert key in records[1], key
    assert records[2]["calibration/aligned_byte_fraction"] > 0.99  # same text on both sides
    assert np.isfinite(records[2]["loss"]) and records[2]["kl"] >= 0
    teacher, config = load_model(result["teacher"])  # merged export loads back
    assert config.model_type == "qwen3"
    assert (tmp_path / "run" / "adapter" / "adapter.safetensors").exists()
    assert "eval/accuracy" in records[0] and "eval/accuracy" in records[2]
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir() if p.name.isdigit()) == ["2"]


def _kill_at(monkeypatch, step):
    """Make every calibration step ``step`` raise KeyboardInterrupt (a kill); returns the undo."""
    from jaxdistill.rl import loop

    original = loop.CalibrationRun.train_step

    def dies(self, batch, at):
        if at == step:
            raise KeyboardInterrupt("simulated kill")
        return original(self, batch, at)

    monkeypatch.setattr(loop.CalibrationRun, "train_step", dies)
    return lambda: monkeypatch.setattr(loop.CalibrationRun, "train_step", original)


def _comparable(record):
    return {k: v for k, v in record.items() if not measures_the_machine(k)}


def test_kill_and_resume_matches_uninterrupted(tiny_world, tmp_path, monkeypatch):
    """With a learning proxy, whose weights and optimizer state must come back too (r_cal reads it)."""
    full = _config(tiny_world, tmp_path / "full", max_steps=4, save_steps=2, calibration_mode="sequence",
                   proxy_learning_rate=1e-2)
    result = calibrate(full)
    reference = {r["step"]: r for r in read_metrics(tmp_path / "full")}
    assert reference[4]["proxy/loss"] < reference[1]["proxy/loss"]  # it learns the teacher's rollouts
    learned, _ = load_model(result["proxy"])
    original, _ = load_model(tiny_world["proxy"])
    assert not np.allclose(learned.embed_tokens[...], original.embed_tokens[...])

    killed = dataclasses.replace(full, output_dir=str(tmp_path / "killed"))
    undo = _kill_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        calibrate(killed)
    undo()
    calibrate(dataclasses.replace(killed, resume=True))
    resumed = {r["step"]: r for r in read_metrics(tmp_path / "killed")}
    assert sorted(resumed) == [0, 1, 2, 3, 4]
    for step in (3, 4):
        got, want = _comparable(resumed[step]), _comparable(reference[step])
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), (step, key)


def test_eight_devices_match_one_device_on_the_first_step(tiny_world, tmp_path):
    one = calibrate(_config(tiny_world, tmp_path / "one", max_steps=1, save_steps=1, export=False))
    eight = calibrate(_config(tiny_world, tmp_path / "eight", max_steps=1, save_steps=1, export=False,
                              mesh=MeshConfig(data=2, fsdp=2, tensor=2)))
    a, b = one["history"][1], eight["history"][1]
    for key in ("rewards/task/mean", "rewards/calibration/mean", "kl", "loss", "entropy", "completions/mean_length",
                "grad_norm"):
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key


@pytest.fixture
def nan_after_first_step():
    """An advantage function, registered for one test, that turns NaN after its first call."""
    import jax.numpy as jnp

    from jaxdistill.rl.registry import ADVANTAGE_FUNCTIONS

    knob, calls = ADVANTAGE_FUNCTIONS.get("knob"), []

    @ADVANTAGE_FUNCTIONS.register("nan_after_first_step")
    def poisoned(*args, **kwargs):
        calls.append(1)
        out = knob(*args, **kwargs)
        return out if len(calls) == 1 else jnp.full_like(out, jnp.nan)

    yield "nan_after_first_step"
    ADVANTAGE_FUNCTIONS.unregister("nan_after_first_step")


def test_nan_steps_are_skipped_then_stop_with_checkpoint_intact(tiny_world, tmp_path, nan_after_first_step):
    config = _config(tiny_world, tmp_path / "nan", max_steps=6, save_steps=1, max_bad_steps=2,
                     advantage=nan_after_first_step)
    with pytest.raises(TooManyBadSteps, match="last good checkpoint"):
        calibrate(config)
    records = read_metrics(tmp_path / "nan")
    assert [r["bad_steps"] for r in records if r["step"] > 0] == [0, 1, 2]
    steps = sorted(int(p.name) for p in (tmp_path / "nan" / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and max(steps) <= 2  # the stop at step 3 saved nothing


def test_at_eta_zero_span_and_sequence_mode_train_the_same_teacher(tiny_world, tmp_path):
    """The knob grid trains an eta = 0 cell once for both modes (knob_grid.trained_cell): the reward is
    computed but enters the advantages as 0 x r_cal."""
    from safetensors.numpy import load_file

    adapters = {}
    for mode in ("span", "sequence"):
        calibrate(_config(tiny_world, tmp_path / mode, eta=0.0, calibration_mode=mode, save_steps=0))
        adapters[mode] = load_file(str(tmp_path / mode / "adapter" / "adapter.safetensors"))
        assert read_metrics(tmp_path / mode)[-1]["rewards/calibration/std"] > 0  # a reward was computed
    assert adapters["span"].keys() == adapters["sequence"].keys()
    for name, value in adapters["span"].items():
        np.testing.assert_array_equal(value, adapters["sequence"][name], err_msg=name)
    calibrate(_config(tiny_world, tmp_path / "eta1", eta=1.0, calibration_mode="sequence", save_steps=0))
    moved = load_file(str(tmp_path / "eta1" / "adapter" / "adapter.safetensors"))
    assert any(not np.array_equal(v, moved[k]) for k, v in adapters["span"].items())  # eta != 0 differs


def test_latest_step_kept_is_the_last_step_within_tolerance_of_step_zero():
    from jaxdistill.rl.loop import latest_step_kept

    assert latest_step_kept({0: 0.53, 10: 0.50, 20: 0.47, 30: 0.49, 40: 0.41}, 0.05) == 30  # 0.48 is the floor
    assert latest_step_kept({0: 0.53, 10: 0.48, 20: 0.40}, 0.05) == 10  # exactly 5 points below still counts
    assert latest_step_kept({0: 0.53, 10: 0.60, 20: 0.70}, 0.0) == 20  # a rise is kept
    assert latest_step_kept({0: 0.53, 10: 0.40, 20: 0.30}, 0.05) == 0  # nothing kept: the starting teacher
    with pytest.raises(ValueError, match="step 0"):
        latest_step_kept({10: 0.5}, 0.05)


def _adapter(folder):
    from safetensors.numpy import load_file

    return load_file(str(folder / "adapter" / "adapter.safetensors"))


@pytest.fixture
def validation_accuracies(monkeypatch):
    """Replace the validation evaluation by a scripted sequence of accuracies (a real drop is slow to make)."""
    from jaxdistill.rl import loop

    def script(values):
        queue = list(values)
        monkeypatch.setattr(loop.CalibrationRun, "validation_accuracy", lambda self: queue.pop(0))
        return queue
    return script


def test_keep_accuracy_within_exports_the_latest_step_that_kept_it(tiny_world, tmp_path, validation_accuracies):
    """Steps 0, 2, 4, 6 score 0.50, 0.46, 0.30, 0.20 on validation: step 2 is exported, the same adapter as a run
    stopped at step 2, and only its checkpoint and the last one are kept."""
    guarded = _config(tiny_world, tmp_path / "guarded", max_steps=6, validation_steps=2, save_steps=0,
                      lr_schedule="constant", keep_accuracy_within=0.05, validation_num_prompts=3)
    left = validation_accuracies([0.50, 0.46, 0.30, 0.20])
    result = calibrate(guarded)
    assert not left
    assert result["selected_step"] == 2 and result["selected_validation_accuracy"] == 0.46
    assert result["validation_accuracy"] == {"0": 0.50, "2": 0.46, "4": 0.30, "6": 0.20}
    records = {r["step"]: r for r in read_metrics(tmp_path / "guarded")}
    assert [s for s in records if "validation/accuracy" in records[s]] == [0, 2, 4, 6]
    assert sorted(int(p.name) for p in (tmp_path / "guarded" / "checkpoints").iterdir() if p.name.isdigit()) == [2, 6]

    calibrate(dataclasses.replace(guarded, output_dir=str(tmp_path / "two"), max_steps=2, keep_accuracy_within=None))
    exported, stopped = _adapter(tmp_path / "guarded"), _adapter(tmp_path / "two")
    assert exported.keys() == stopped.keys()
    for name, value in exported.items():
        np.testing.assert_array_equal(value, stopped[name], err_msg=name)
    # the guard's cadence decides what is exported: a rerun with another one is another run, never "finished"
    with pytest.raises(SettingsChanged, match="validation_steps: 2 there, 3 now"):
        calibrate(dataclasses.replace(guarded, validation_steps=3))


def test_keep_accuracy_within_survives_a_kill_and_may_export_the_start(tiny_world, tmp_path, validation_accuracies,
                                                                      monkeypatch):
    """Killed after step 2's checkpoint, resumed: step 0's accuracy comes back from the checkpoint; no
    calibrated step kept it, so the starting teacher (LoRA B = 0: the merged teacher unchanged) is exported."""
    config = _config(tiny_world, tmp_path / "run", max_steps=4, validation_steps=2, save_steps=0,
                     lr_schedule="constant", keep_accuracy_within=0.05, validation_num_prompts=3)
    validation_accuracies([0.50, 0.40])
    undo = _kill_at(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        calibrate(config)
    undo()
    validation_accuracies([0.30])  # step 4 only: step 0's 0.50 and step 2's 0.40 are in the checkpoint
    result = calibrate(dataclasses.replace(config, resume=True))
    assert result["selected_step"] == 0 and result["validation_accuracy"] == {"0": 0.50, "2": 0.40, "4": 0.30}
    assert all(not value.any() for name, value in _adapter(tmp_path / "run").items() if "lora_b" in name.lower())
    from safetensors.numpy import load_file

    merged = {k: v for f in Path(result["teacher"]).glob("*.safetensors") for k, v in load_file(str(f)).items()}
    start = {k: v for f in Path(tiny_world["teacher"]).glob("*.safetensors") for k, v in load_file(str(f)).items()}
    assert merged.keys() == start.keys()
    for name, value in merged.items():
        np.testing.assert_allclose(value, start[name], rtol=0, atol=1e-6, err_msg=name)


def test_keep_accuracy_within_validates_a_resumed_run_whose_max_steps_was_lowered(tiny_world, tmp_path,
                                                                                   validation_accuracies, monkeypatch):
    """Killed at step 4 after step 3's checkpoint (save_steps=3), resumed with max_steps=3: step 3 was never
    validated, so it is validated then (0.30), and step 2 (0.48) is exported, as a run stopped at step 2."""
    config = _config(tiny_world, tmp_path / "run", max_steps=6, validation_steps=2, save_steps=3,
                     lr_schedule="constant", keep_accuracy_within=0.05, validation_num_prompts=3)
    validation_accuracies([0.50, 0.48])
    undo = _kill_at(monkeypatch, 4)
    with pytest.raises(KeyboardInterrupt):
        calibrate(config)
    undo()
    left = validation_accuracies([0.30])
    result = calibrate(dataclasses.replace(config, resume=True, max_steps=3))
    assert not left and result["selected_step"] == 2
    assert result["validation_accuracy"] == {"0": 0.50, "2": 0.48, "3": 0.30}
    calibrate(dataclasses.replace(config, output_dir=str(tmp_path / "two"), max_steps=2, keep_accuracy_within=None))
    exported, stopped = _adapter(tmp_path / "run"), _adapter(tmp_path / "two")
    for name, value in exported.items():
        np.testing.assert_array_equal(value, stopped[name], err_msg=name)


def test_missing_models_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="calibrate needs teacher and proxy"):
        calibrate(CalibrateConfig(output_dir=str(tmp_path)))


def test_help_lists_every_field(capsys):
    from jaxdistill.config import field_docs

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for key, doc, _ in field_docs(CalibrateConfig):
        assert key in out
    assert "calibration_mode" in out and "mesh.tensor" in out
    assert "influence" in out and "world_version" in out and "[version=2] selects arith world v2" in out


@pytest.mark.parametrize("argv, version, students", [(["--quick"], 1, 0), (["--quick", "world_version=2"], 2, 0),
                                                     (["--quick", "world_version=2", "student_world_version=1"], 2, 1)])
def test_the_default_run_takes_the_world_version(argv, version, students, tmp_path, monkeypatch):
    from jaxdistill.experiments import world

    calls = []
    monkeypatch.setattr(world, "default_run", lambda **kwargs: calls.append(kwargs))
    assert main([*argv, f"output_dir={tmp_path / 'run'}"]) == 0
    assert calls == [dict(quick=True, output_dir=str(tmp_path / "run"), seed=0, world_version=version,
                          student_world_version=students)]


def test_bad_command_lines_are_clear_errors(capsys, tmp_path):
    """A misspelt key names the nearest field; a bad value or a missing folder says what is wrong, no traceback."""
    assert main(["num_generation=8"]) == 1
    assert "did you mean 'num_generations'" in capsys.readouterr().err
    assert main(["eta=high"]) == 1
    assert "eta: expected float" in capsys.readouterr().err
    assert main([f"teacher={tmp_path / 'missing-teacher'}", "proxy=p", f"output_dir={tmp_path / 'run'}"]) == 1
    assert re.search("error: model folder .*missing-teacher does not exist", capsys.readouterr().err)


def test_existing_checkpoints_without_resume_is_a_clear_error(tmp_path):
    """Starting over in a folder that holds a calibration would overwrite its metrics: refuse, say how."""
    (tmp_path / "checkpoints" / "4").mkdir(parents=True)
    (tmp_path / "metrics.jsonl").write_text('{"step": 4}\n')
    with pytest.raises(FileExistsError, match="resume=true"):
        calibrate(CalibrateConfig(teacher="t", proxy="p", output_dir=str(tmp_path)))
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 4}\n'


@pytest.mark.parametrize("override, message", [
    ({"num_generations": 1}, "group of one"), ({"prompts_per_step": 0}, "prompts_per_step=0: must be >= 1"),
    ({"save_steps": -1}, "save_steps=-1: must be >= 0"), ({"max_steps": -5}, "max_steps=-5: must be >= 0"),
    ({"learning_rate": -1e-5}, "learning_rate=-1e-05: must be > 0"), ({"eta": float("nan")}, "eta=nan: must be a finite number"),
    ({"keep_accuracy_within": 0.05, "validation_steps": 0}, "validation_steps=0: must be >= 1"),
    ({"keep_accuracy_within": -0.1}, "keep_accuracy_within=-0.1: must be >= 0")])
def test_settings_that_cannot_train_are_refused_before_loading(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):  # "t" and "p" do not exist: nothing was loaded
        calibrate(CalibrateConfig(teacher="t", proxy="p", output_dir=str(tmp_path), **override))

