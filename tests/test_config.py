"""Config loading (YAML + key=value overrides, nested keys, type and range checks, nearest-field and
renamed-field errors) and the command-line runner (one error line, exit codes, Ctrl-C)."""
import dataclasses
import os
import signal

import pytest

from jaxdistill import config as config_module
from jaxdistill.config import (BaseConfig, ConfigError, Interrupted, TrainingConfig, field_docs, load_config, option,
                               parse_command_line, run_cli, stop_at_step_boundaries, stop_requested)


@dataclasses.dataclass
class Inner:
    fsdp: int = option(-1, "fsdp axis")
    tensor: int = option(1, "tensor axis")


@dataclasses.dataclass
class Outer:
    eta: float = option(0.0, "calibration weight")
    num_generations: int = option(4, "rollouts per prompt")
    name: str = option("run", "run name")
    resume: bool = option(False, "continue a run")
    targets: tuple[str, ...] = option(("q", "v"), "LoRA targets")
    teacher: str | None = option(None, "teacher folder")
    mesh: Inner = option(Inner(), "mesh")


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("eta: 0.5\nmesh:\n  tensor: 2\nteacher: /x\n")
    cfg = load_config(Outer, path, ["eta=-1", "mesh.fsdp=4", "targets=q,k,v", "resume=true", "teacher=none",
                                    "num_generations=8"])
    assert (cfg.eta, cfg.mesh.fsdp, cfg.mesh.tensor) == (-1.0, 4, 2)
    assert cfg.targets == ("q", "k", "v") and cfg.resume is True and cfg.teacher is None
    assert cfg.num_generations == 8 and isinstance(cfg.eta, float)


def test_float_accepts_exponent_without_dot():
    assert load_config(Outer, None, ["eta=1e-4"]).eta == pytest.approx(1e-4)


def test_unknown_key_names_the_nearest_field(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'num_generations'"):
        load_config(Outer, None, ["num_generation=3"])
    path = tmp_path / "c.yaml"
    path.write_text("mesh:\n  tensr: 2\n")
    with pytest.raises(ConfigError, match="did you mean 'mesh.tensor'"):
        load_config(Outer, path)


def test_wrong_type_is_an_error():
    with pytest.raises(ConfigError, match="num_generations: expected int"):
        load_config(Outer, None, ["num_generations=abc"])
    with pytest.raises(ConfigError, match="resume: expected true/false"):
        load_config(Outer, None, ["resume=maybe"])
    with pytest.raises(ConfigError, match="num_generations: expected int"):
        load_config(Outer, None, ["num_generations=2.5"])


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "missing.yaml")


def test_help_lists_every_field(capsys):
    with pytest.raises(SystemExit):
        parse_command_line(Outer, ["--help"], prog="x", description="d")
    out = capsys.readouterr().out
    for key, doc, _ in field_docs(Outer):
        assert key in out and doc in out
    assert "mesh.tensor" in out


def test_cli_error_names_the_nearest_field():
    with pytest.raises(ConfigError, match="did you mean 'eta'"):
        parse_command_line(Outer, ["etaa=1"], prog="x", description="d")


@dataclasses.dataclass
class Parent:
    mesh: Inner = option(Inner(fsdp=2, tensor=4), "a nested default that differs from Inner()")


def test_nested_override_keeps_the_parents_nested_defaults():
    cfg = load_config(Parent, None, ["mesh.tensor=8"])
    assert (cfg.mesh.fsdp, cfg.mesh.tensor) == (2, 8)


# ---- ranges, renamed fields, YAML errors ---------------------------------------------------------------

@dataclasses.dataclass
class Ranged(TrainingConfig):
    eta: float = option(0.0, "calibration weight")
    num_generations: int = option(4, "rollouts per prompt", ge=2)
    top_ks: tuple[int, ...] = option((1, 5), "k values", ge=1)
    mode: str = option("span", "calibration mode", choices=("span", "sequence"))
    mesh: Inner = option(Inner(), "mesh")


@pytest.mark.parametrize("override, message", [
    ("learning_rate=-1e-5", "learning_rate=-1e-05: must be > 0"),
    ("learning_rate=0", "learning_rate=0.0: must be > 0"),
    ("eta=nan", "eta=nan: must be a finite number"),
    ("eta=inf", "eta=inf: must be a finite number"),
    ("num_generations=1", "num_generations=1: must be >= 2"),
    ("top_ks=[1,0]", "top_ks=0: must be >= 1"),
    ("mode=spam", "mode='spam': choose one of span | sequence (did you mean 'span'?)"),
    ("dtype=float16", "dtype='float16': choose one of float32 | bfloat16"),
    ("max_steps=-3", "max_steps=-3: must be >= 0"),
])
def test_values_out_of_range_name_the_field_and_the_range(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(Ranged, None, [override])
    assert message in str(err.value)


def test_help_shows_ranges():
    docs = dict((key, doc) for key, doc, _ in field_docs(Ranged))
    assert docs["learning_rate"].endswith("[> 0]") and docs["mode"].endswith("[one of span | sequence]")


def test_a_renamed_field_names_its_new_name(monkeypatch, tmp_path):
    monkeypatch.setitem(config_module.RENAMED, "TrainingConfig", {"save_every": "save_steps"})
    monkeypatch.setitem(config_module.RENAMED, "Inner", {"tp": "tensor"})
    with pytest.raises(ConfigError, match="'save_every' was renamed: use 'save_steps'"):
        load_config(Ranged, None, ["save_every=5"])  # found along the base classes
    path = tmp_path / "old.yaml"
    path.write_text("mesh:\n  tp: 2\n")
    with pytest.raises(ConfigError, match=f"{path}: config key 'mesh.tp' was renamed: use 'mesh.tensor'"):
        load_config(Ranged, path)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("eta: 1\nmesh:\n  tensor: [2\n")
    with pytest.raises(ConfigError) as err:
        load_config(Outer, path)
    assert str(err.value).startswith(f"{path}:") and "invalid YAML" in str(err.value)
    line = int(str(err.value)[len(str(path)) + 1:].split(":")[0])
    assert line in (3, 4)  # the unclosed list (PyYAML reports where it noticed: the end of the file)
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(Outer, path)


def test_output_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    for out in (tmp_path / "f", tmp_path / "f" / "run"):
        with pytest.raises(ConfigError, match=f"{tmp_path / 'f'} is a file"):
            BaseConfig(output_dir=str(out)).validate()
    BaseConfig(output_dir=str(tmp_path / "new" / "run")).validate()


# ---- the runner ------------------------------------------------------------------------------------------

def _cli(run, argv, **kwargs):
    return run_cli(Ranged, run, argv, prog="x", description="d", **kwargs)


def test_runner_passes_config_and_flags_and_returns_the_status(tmp_path):
    seen = {}

    def run(config, fast):
        seen.update(config=config, fast=fast)
        return 3

    assert _cli(run, [f"output_dir={tmp_path}", "eta=-1", "--fast"], flags=[("--fast", "f")]) == 3
    assert seen["config"].eta == -1.0 and seen["fast"] is True


@pytest.mark.parametrize("argv, error", [
    (["eta=nan"], "error: eta=nan: must be a finite number"),
    (["etaa=1"], "error: unknown config key 'etaa' for Ranged; did you mean 'eta'?"),
    (["--eta", "1"], "error: --eta: config fields are set as key=value, e.g. eta=..."),
    (["--nope"], "error: unrecognized arguments: --nope"),
    (["eta"], "error: override 'eta' is not of the form key=value"),
    (["--config", "missing.yaml"], "error: config file missing.yaml does not exist"),
])
def test_runner_bad_command_lines_end_with_one_error_line(argv, error, capsys):
    assert _cli(lambda config: pytest.fail("ran despite a bad command line"), argv) == 1
    err = capsys.readouterr().err
    assert err.startswith(error) and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("raised", [ValueError("bad teacher\nfolder"), FileNotFoundError("no such file: x"),
                                    RuntimeError("too many bad steps")])
def test_runner_project_errors_are_one_line_and_exit_1(raised, capsys, monkeypatch):
    monkeypatch.delenv(config_module.DEBUG_ENV, raising=False)

    def run(config):
        raise raised

    assert _cli(run, []) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    with pytest.raises(type(raised)):
        _cli(run, ["--debug"])
    monkeypatch.setenv(config_module.DEBUG_ENV, "1")
    with pytest.raises(type(raised)):
        _cli(run, [])


@pytest.mark.parametrize("bug", [TypeError("a bug"), KeyError("max_new_tokens")])
def test_runner_keeps_the_traceback_of_a_bug(bug):
    def run(config):
        raise bug

    with pytest.raises(type(bug)):
        _cli(run, [])


def test_ctrl_c_outside_a_training_loop_exits_130(capsys):
    def run(config):
        os.kill(os.getpid(), signal.SIGINT)
        pytest.fail("SIGINT did not interrupt")

    assert _cli(run, []) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_ctrl_c_in_a_training_loop_stops_at_the_step_boundary(capsys):
    steps = []

    def run(config):
        with stop_at_step_boundaries():
            for step in range(1, 10):
                if step == 3:
                    os.kill(os.getpid(), signal.SIGINT)  # lands mid-step: the step still completes
                steps.append(step)
                if stop_requested():
                    raise Interrupted(f"checkpoint of step {step} saved")

    assert _cli(run, []) == 130
    err = capsys.readouterr().err
    assert steps == [1, 2, 3] and err.strip().endswith("interrupted: checkpoint of step 3 saved")
    assert not stop_requested() and signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ---- what ships -------------------------------------------------------------------------------------------

def test_every_console_script_is_a_run_cli_main_and_the_presets_ship():
    """pyproject declares a console script per command, each a ``main`` whose --help comes from run_cli;
    the --quick presets are package data, so a pip install has them."""
    import importlib
    import tomllib
    from pathlib import Path

    from jaxdistill.config import preset_path

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    scripts = pyproject["project"]["scripts"]
    assert {"jaxdistill-calibrate", "jaxdistill-distill", "jaxdistill-evaluate", "jaxdistill-diagnose",
            "jaxdistill-plan", "jaxdistill-sweep", "jaxdistill-scorecard"} <= set(scripts)
    for name, target in scripts.items():
        module, function = target.split(":")
        main = getattr(importlib.import_module(module), function)
        with pytest.raises(SystemExit) as exit_info:
            main(["--help"])
        assert exit_info.value.code == 0, name
    assert "presets/*.yaml" in pyproject["tool"]["setuptools"]["package-data"]["jaxdistill"]
    for name in ("calibrate_quick.yaml", "sweep_quick.yaml"):
        assert preset_path(name).is_file()
