"""calibrate: the loop's mechanics on tiny random models (metrics, export, resume, meshes, bad steps, CLI)."""
import dataclasses

import numpy as np
import pytest
from flax import nnx

from jaxdistill.calibrate import main
from jaxdistill.models import Qwen, QwenConfig, load_model, save_model
from jaxdistill.rl.config import CalibrateConfig
from jaxdistill.rl.loop import calibrate
from jaxdistill.sharding import MeshConfig
from jaxdistill.tasks.tiny_tokenizers import train_tiny_tokenizers
from jaxdistill.tokenizer import load_tokenizer
from jaxdistill.training import TooManyBadSteps, read_metrics


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """Random tiny teacher (Qwen3) and proxy (Qwen2) with the two tiny tokenizers."""
    root = tmp_path_factory.mktemp("world")
    toks = train_tiny_tokenizers(root / "tokenizers", n_problems=400)
    folders = {}
    for name, model_type in (("teacher", "qwen3"), ("proxy", "qwen2")):
        tok = load_tokenizer(toks[name])
        config = QwenConfig(model_type=model_type, vocab_size=tok.vocab_size, hidden_size=32,
                            intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=8, qk_norm=model_type == "qwen3",
                            qkv_bias=model_type == "qwen2", tie_word_embeddings=True,
                            max_position_embeddings=512, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
        folders[name] = save_model(Qwen(config, rngs=nnx.Rngs(1)), root / name, tokenizer_dir=toks[name])
    return folders


def _config(world, out, **overrides):
    base = dict(teacher=str(world["teacher"]), proxy=str(world["proxy"]), task="arith", output_dir=str(out),
                num_generations=4, prompts_per_step=2, max_steps=2, max_completion_length=12,
                learning_rate=1e-2, lora_rank=4, lora_alpha=8.0, eval_every=0, eval_prompts=4,
                save_every=2, progress=False, eta=1.0, beta=0.04, mesh=MeshConfig(num_devices=1))
    base.update(overrides)
    return CalibrateConfig(**base)


METRIC_KEYS = ("reward", "rewards/task/mean", "rewards/calibration/mean", "kl", "entropy", "clip_ratio",
               "completions/mean_length", "completions/clipped_ratio", "calibration/span_gap",
               "calibration/aligned_byte_fraction", "step_time", "tokens_per_second", "loss", "grad_norm")


def test_run_logs_metrics_and_exports(tiny_world, tmp_path):
    result = calibrate(_config(tiny_world, tmp_path / "run", save_every=0))  # 0: checkpoint at the end only
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


def _comparable(record):
    return {k: v for k, v in record.items() if k not in ("step_time", "tokens_per_second")}


def test_kill_and_resume_matches_uninterrupted(tiny_world, tmp_path, monkeypatch):
    """With a learning proxy, whose weights and optimizer state must come back too (r_cal reads it)."""
    from jaxdistill.rl import loop

    full = _config(tiny_world, tmp_path / "full", max_steps=4, save_every=2, calibration_mode="sequence",
                   proxy_learning_rate=1e-2)
    result = calibrate(full)
    reference = {r["step"]: r for r in read_metrics(tmp_path / "full")}
    assert reference[4]["proxy/loss"] < reference[1]["proxy/loss"]  # it learns the teacher's rollouts
    learned, _ = load_model(result["proxy"])
    original, _ = load_model(tiny_world["proxy"])
    assert not np.allclose(learned.embed_tokens[...], original.embed_tokens[...])

    killed = dataclasses.replace(full, output_dir=str(tmp_path / "killed"))
    original = loop.CalibrationRun.train_step

    def dies_at_three(self, batch, step):
        if step == 3:
            raise KeyboardInterrupt("simulated kill")
        return original(self, batch, step)

    monkeypatch.setattr(loop.CalibrationRun, "train_step", dies_at_three)
    with pytest.raises(KeyboardInterrupt):
        calibrate(killed)
    monkeypatch.setattr(loop.CalibrationRun, "train_step", original)
    calibrate(dataclasses.replace(killed, resume=True))
    resumed = {r["step"]: r for r in read_metrics(tmp_path / "killed")}
    assert sorted(resumed) == [0, 1, 2, 3, 4]
    for step in (3, 4):
        got, want = _comparable(resumed[step]), _comparable(reference[step])
        assert got.keys() == want.keys()
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), (step, key)


def test_eight_devices_match_one_device_on_the_first_step(tiny_world, tmp_path):
    one = calibrate(_config(tiny_world, tmp_path / "one", max_steps=1, save_every=1, export=False))
    eight = calibrate(_config(tiny_world, tmp_path / "eight", max_steps=1, save_every=1, export=False,
                              mesh=MeshConfig(data=2, fsdp=2, tensor=2)))
    a, b = one["history"][1], eight["history"][1]
    for key in ("rewards/task/mean", "rewards/calibration/mean", "kl", "loss", "entropy", "completions/mean_length",
                "grad_norm"):
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key


def test_nan_steps_are_skipped_then_stop_with_checkpoint_intact(tiny_world, tmp_path, monkeypatch):
    import jax.numpy as jnp

    from jaxdistill.rl import loop

    real = loop.combined_advantages

    def poisoned(r_task, r_cal, g, **kw):
        out = real(r_task, r_cal, g, **kw)
        return jnp.full_like(out, jnp.nan) if poisoned.calls.append(1) or len(poisoned.calls) > 1 else out

    poisoned.calls = []
    monkeypatch.setattr(loop, "combined_advantages", poisoned)
    config = _config(tiny_world, tmp_path / "nan", max_steps=6, save_every=1, max_bad_steps=2)
    with pytest.raises(TooManyBadSteps, match="last good checkpoint"):
        calibrate(config)
    records = read_metrics(tmp_path / "nan")
    assert [r["bad_steps"] for r in records if r["step"] > 0] == [0, 1, 2]
    steps = sorted(int(p.name) for p in (tmp_path / "nan" / "checkpoints").iterdir() if p.name.isdigit())
    assert steps and max(steps) <= 2  # the stop at step 3 saved nothing


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


def test_bad_command_lines_are_clear_errors(capsys, tmp_path):
    """A misspelt key names the nearest field; a bad value or a missing folder says what is wrong, no traceback."""
    with pytest.raises(SystemExit):
        main(["num_generation=8"])
    assert "did you mean 'num_generations'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eta=high"])
    assert "eta: expected float" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="error: model folder .*missing-teacher does not exist"):
        main([f"teacher={tmp_path / 'missing-teacher'}", "proxy=p", f"output_dir={tmp_path / 'run'}"])


def test_existing_checkpoints_without_resume_is_a_clear_error(tmp_path):
    """Starting over in a folder that holds a calibration would overwrite its metrics: refuse, say how."""
    (tmp_path / "checkpoints" / "4").mkdir(parents=True)
    (tmp_path / "metrics.jsonl").write_text('{"step": 4}\n')
    with pytest.raises(FileExistsError, match="resume=true"):
        calibrate(CalibrateConfig(teacher="t", proxy="p", output_dir=str(tmp_path)))
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 4}\n'


@pytest.mark.parametrize("override, message", [
    ({"num_generations": 1}, "group of one"), ({"prompts_per_step": 0}, "prompts_per_step must be >= 1"),
    ({"save_every": -1}, "save_every must be >= 0"), ({"max_steps": -5}, "max_steps must be >= 0")])
def test_settings_that_cannot_train_are_refused_before_loading(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):  # "t" and "p" do not exist: nothing was loaded
        calibrate(CalibrateConfig(teacher="t", proxy="p", output_dir=str(tmp_path), **override))


def test_default_run_calibration_takes_overrides(tmp_path, monkeypatch):
    """world.calibrate_teacher is the default run's calibration; ``overrides`` replaces named fields
    (jaxdistill.experiments.undistillable) and a misspelt field is an error, not silently ignored."""
    from jaxdistill.experiments import world

    seen = []
    monkeypatch.setattr("jaxdistill.rl.loop.calibrate", seen.append)
    run = str(tmp_path / "run")
    world.calibrate_teacher("t", "p", run, -1.0, world.FULL, 0, progress=False)
    world.calibrate_teacher("t", "p", run, -1.0, world.FULL, 0, progress=False,
                            overrides={"calibration_scope": "all", "beta": 0.2})
    default, changed = seen
    assert (default.calibration_scope, default.beta) == ("correct", 0.04)
    assert (changed.calibration_scope, changed.beta) == ("all", 0.2)
    assert dataclasses.replace(changed, calibration_scope="correct", beta=0.04) == default
    with pytest.raises(TypeError, match="betta"):
        world.calibrate_teacher("t", "p", run, -1.0, world.FULL, 0, progress=False, overrides={"betta": 0.2})
