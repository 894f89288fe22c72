"""sweep: the knob table maths, and the quick profile end to end on tiny random models."""
import json
import re

import pytest
from flax import nnx

from jaxdistill.models import Qwen, QwenConfig, save_model
from jaxdistill.experiments.sweep import DEFAULT_ETAS, ORIGINAL, SweepConfig, eta_label, knob_markdown, knob_table, main, \
    plot_knob, quick_config, sweep
from jaxdistill.tasks.tiny_tokenizers import train_tiny_tokenizers
from jaxdistill.tokenizer import load_tokenizer


def test_knob_table_means_stds_and_collapse(tmp_path):
    accuracy = {"teacher": {eta_label(-1): [0.6, 0.8], eta_label(1): [0.7, 0.7]},
                "small": {ORIGINAL: [0.5, 0.5], eta_label(-1): [0.05, 0.1], eta_label(1): [0.6, 0.8]},
                "zero": {ORIGINAL: [0.0], eta_label(-1): [0.0], eta_label(1): [0.1]}}
    rows = knob_table(accuracy, [-1.0, 1.0], collapse_ratio=0.2)
    assert [r["name"] for r in rows] == [ORIGINAL, "eta=-1", "eta=1"]
    assert [r["eta"] for r in rows] == [None, -1.0, 1.0]
    minus = rows[1]["accuracy"]
    assert minus["teacher"]["mean"] == pytest.approx(0.7) and minus["teacher"]["std"] == pytest.approx(0.1414, abs=1e-4)
    assert minus["small"]["collapse"] is True and minus["small"]["relative_to_original"] == pytest.approx(0.15)
    plus = rows[2]["accuracy"]["small"]
    assert plus["collapse"] is False and plus["relative_to_original"] == pytest.approx(1.4)
    assert "collapse" not in rows[2]["accuracy"]["teacher"]
    assert list(rows[0]["accuracy"]) == ["small", "zero"]  # the original teacher's own accuracy was not given
    # collapse is undefined against a reference student that scores 0
    assert rows[1]["accuracy"]["zero"]["collapse"] is None and rows[2]["accuracy"]["zero"]["collapse"] is None
    markdown = knob_markdown(rows, ["teacher", "small"], title="t")
    assert "| eta=-1 | -1 | 70.0 ± 14.1 | 7.5 ± 3.5 **collapse** |" in markdown
    assert plot_knob(rows, ["teacher", "small"], tmp_path / "knob.png", title="t").stat().st_size > 0


def test_quick_profile_keeps_explicit_overrides():
    config = quick_config(["recipe.max_steps=2", "etas=[-1,1]"])
    assert config.recipe.max_steps == 2 and config.calibration.max_steps == 1
    assert config.etas == (-1.0, 1.0) and SweepConfig().etas == DEFAULT_ETAS
    with pytest.raises(ValueError, match="together"):
        sweep(quick_config(["teacher=x"]))
    with pytest.raises(ValueError, match="attack='sft' is not valid"):
        sweep(quick_config(["attack=sft"]))


@pytest.fixture(scope="module")
def sweep_world(tmp_path_factory):
    """Random tiny teacher (Qwen3, teacher tokenizer), proxy and student (Qwen2, proxy tokenizer)."""
    root = tmp_path_factory.mktemp("sweep_world")
    toks = train_tiny_tokenizers(root / "tokenizers", n_problems=400)
    folders = {}
    for name, tok_name, model_type, seed in (("teacher", "teacher", "qwen3", 1), ("proxy", "proxy", "qwen2", 2),
                                             ("student", "proxy", "qwen2", 3)):
        tok = load_tokenizer(toks[tok_name])
        config = QwenConfig(model_type=model_type, vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                            num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                            qk_norm=model_type == "qwen3", qkv_bias=model_type == "qwen2", tie_word_embeddings=True,
                            max_position_embeddings=512, eos_token_id=tok.eos_id, pad_token_id=tok.pad_id)
        folders[name] = save_model(Qwen(config, rngs=nnx.Rngs(seed)), root / name, tokenizer_dir=toks[tok_name])
    return folders


def test_quick_sweep_writes_the_knob_curve_with_every_eta(sweep_world, tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["--quick", f"teacher={sweep_world['teacher']}", f"proxy={sweep_world['proxy']}",
                 f"students=[small={sweep_world['student']}]", f"output_dir={out}"])
    assert code == 0
    assert (out / "knob.png").stat().st_size > 0
    result = json.loads((out / "knob.json").read_text())
    assert result["models"] == ["teacher", "small"]
    calibrated = [row for row in result["rows"] if row["eta"] is not None]
    assert [row["eta"] for row in calibrated] == list(DEFAULT_ETAS)
    for row in calibrated:
        for model in ("teacher", "small"):
            assert 0 <= row["accuracy"][model]["mean"] <= 1 and len(row["accuracy"][model]["runs"]) == 1
        assert "collapse" in row["accuracy"]["small"]
    original = result["rows"][0]
    assert original["name"] == ORIGINAL and set(original["accuracy"]) == {"teacher", "small"}
    markdown = (out / "knob.md").read_text()
    for eta in DEFAULT_ETAS:
        assert re.search(rf"^\| {re.escape(eta_label(eta))} \| {eta:g} \| \d", markdown, re.MULTILINE), eta
    assert "knob curve" in capsys.readouterr().out
    assert "seqkd students" in markdown
    assert json.loads((out / "students" / "small" / "eta=1" / "seed0" / "summary.json").read_text())
    for eta in DEFAULT_ETAS:
        assert (out / "teachers" / eta_label(eta) / "seed0" / "teacher" / "config.json").exists()
        assert (out / "students" / "small" / eta_label(eta) / "seed0" / "model" / "config.json").exists()
