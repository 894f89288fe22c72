"""Config loading: YAML + key=value overrides, nested keys, type checks, nearest-field errors."""
import dataclasses

import pytest

from jaxdistill.config import ConfigError, field_docs, load_config, option, parse_args


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
        parse_args(Outer, ["--help"], prog="x", description="d")
    out = capsys.readouterr().out
    for key, doc, _ in field_docs(Outer):
        assert key in out and doc in out
    assert "mesh.tensor" in out


def test_cli_error_exits_with_message(capsys):
    with pytest.raises(SystemExit):
        parse_args(Outer, ["etaa=1"], prog="x", description="d")
    assert "did you mean 'eta'" in capsys.readouterr().err


@dataclasses.dataclass
class Parent:
    mesh: Inner = option(Inner(fsdp=2, tensor=4), "a nested default that differs from Inner()")


def test_nested_override_keeps_the_parents_nested_defaults():
    cfg = load_config(Parent, None, ["mesh.tensor=8"])
    assert (cfg.mesh.fsdp, cfg.mesh.tensor) == (2, 8)
