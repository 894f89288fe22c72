"""diagnose CLI end to end on tiny random models: same tokenizer and different tokenizers."""
import json

import pytest

from helpers import tiny_qwen_folder
from jaxdistill.diagnose import (DiagnoseConfig, diagnose, load_diagnostics, main,
                                 summary_numbers)
from jaxdistill.tasks.tiny_tokenizers import train_tiny_tokenizers


@pytest.fixture(scope="module")
def pair_world(tmp_path_factory):
    """A random teacher (teacher tokenizer) and two random students: one sharing the teacher's
    tokenizer (and architecture, so the compiled programs are shared: faster), one with the proxy
    tokenizer and a Qwen2 architecture."""
    root = tmp_path_factory.mktemp("diag_world")
    toks = train_tiny_tokenizers(root / "tokenizers", n_problems=400)
    folders = {}
    models = (("teacher", "teacher", "qwen3", 1), ("student_same", "teacher", "qwen3", 2),
              ("student_other", "proxy", "qwen2", 3))
    for name, tok_name, model_type, seed in models:
        folders[name] = tiny_qwen_folder(root / name, toks[tok_name], model_type=model_type, extra_rows=3, seed=seed)
    return folders


SMALL = ["task=arith", "num_prompts=6", "samples_per_prompt=1", "max_completion_length=16", "generation_batch_size=8",
         "top_ks=[1,4,16]"]


def _check_outputs(out):
    for name in ("diagnostics.json", "diagnostics.md", "divergence.png", "symptoms.png"):
        assert (out / name).stat().st_size > 0, name
    result = json.loads((out / "diagnostics.json").read_text())
    assert result == load_diagnostics(out)
    return result


def test_same_tokenizer_end_to_end(pair_world, tmp_path, capsys):
    out = tmp_path / "same"
    code = main([f"teacher={pair_world['teacher']}", f"student={pair_world['student_same']}",
                 "task=arith", f"output_dir={out}", *SMALL[1:]])
    assert code == 0
    assert "gap_per_byte" in capsys.readouterr().out
    result = _check_outputs(out)
    assert result["settings"]["same_tokenizer"] is True
    for source in ("teacher_samples", "student_samples"):
        token = result[source]["token"]
        assert token["forward_kl"] > 0 and token["reverse_kl"] > 0
        split = token["split"]
        assert split["k"] == [1, 4, 16]
        for head, tail in zip(split["forward_head"], split["forward_tail"]):
            assert head + tail == pytest.approx(token["forward_kl"], rel=1e-4, abs=1e-6)
        assert split["teacher_top_k_mass"] == sorted(split["teacher_top_k_mass"])
        assert 0 <= result[source]["answers"]["accuracy"] <= 1
        assert result[source]["likelihood"]["aligned_byte_fraction"] == 1.0
        likelihood = result[source]["likelihood"]
        assert likelihood["gap_per_byte"] == pytest.approx(likelihood["teacher_per_byte"]
                                                           - likelihood["student_per_byte"], rel=1e-4, abs=1e-6)
    assert result["drift"]["forward_kl"] == pytest.approx(
        result["student_samples"]["token"]["forward_kl"] - result["teacher_samples"]["token"]["forward_kl"])
    numbers = summary_numbers(out)
    assert numbers["tail_share@16"] is not None and numbers["off_policy_forward_kl"] > 0
    markdown = (out / "diagnostics.md").read_text()
    assert "Tail noise" in markdown and "| 16 |" in markdown


def test_a_model_against_itself_has_no_gap(pair_world, tmp_path):
    teacher = str(pair_world["teacher"])
    result = diagnose(DiagnoseConfig(teacher=teacher, student=teacher, num_prompts=6, max_completion_length=16, generation_batch_size=8,
                                     top_ks=(1, 4, 16), output_dir=str(tmp_path), plots=False))
    for source in ("teacher_samples", "student_samples"):
        token, likelihood = result[source]["token"], result[source]["likelihood"]
        assert token["forward_kl"] == pytest.approx(0, abs=1e-5)
        assert token["reverse_kl"] == pytest.approx(0, abs=1e-5)
        assert token["split"]["forward_tail"] == pytest.approx([0, 0, 0], abs=1e-5)
        assert likelihood["gap_per_byte"] == pytest.approx(0, abs=1e-5)
        assert token["sequence"]["sequence_kl_estimate"] == pytest.approx(0, abs=1e-4)
    # the same sampler and seed write the same completions: every symptom is unchanged
    assert result["teacher_samples"]["examples"] == result["student_samples"]["examples"]
    assert all(v == pytest.approx(0) for v in result["symptom_change"].values() if v is not None)
    assert not (tmp_path / "divergence.png").exists()


def test_different_tokenizers_end_to_end(pair_world, tmp_path):
    out = tmp_path / "cross"
    config = DiagnoseConfig(teacher=str(pair_world["teacher"]), student=str(pair_world["student_other"]),
                            task="arith", num_prompts=6, max_completion_length=16, generation_batch_size=8, output_dir=str(out))
    result = diagnose(config)
    assert _check_outputs(out) == result
    assert result["settings"]["same_tokenizer"] is False
    for source in ("teacher_samples", "student_samples"):
        entry = result[source]
        assert entry["token"] is None
        likelihood = entry["likelihood"]
        assert likelihood["aligned_byte_fraction"] > 0.9
        assert likelihood["gap_per_byte"] == pytest.approx(likelihood["teacher_per_byte"]
                                                           - likelihood["student_per_byte"], rel=1e-4, abs=1e-6)
        assert likelihood["event_forward_kl"] > 0
    assert "forward_kl" not in result["drift"] and "gap_per_byte" in result["drift"]
    numbers = summary_numbers(result)
    assert numbers["off_policy_forward_kl"] is None and numbers["gap_per_byte"] is not None
    assert "Tail noise" not in (out / "diagnostics.md").read_text()


def test_cli_errors(pair_world, tmp_path, capsys):
    with pytest.raises(ValueError, match="diagnose needs student"):
        diagnose(DiagnoseConfig(teacher="a"))
    assert main([f"teacher={tmp_path}", f"student={tmp_path}", f"output_dir={tmp_path / 'out'}"]) == 1
    assert "not an HF model folder" in capsys.readouterr().err
    assert main(["teacher=a", "num_prompt=3"]) == 1
    assert "did you mean 'num_prompts'" in capsys.readouterr().err
    assert main(["--teacher", "a"]) == 1  # fields are key=value, as in every command
    assert "--teacher: config fields are set as key=value" in capsys.readouterr().err
