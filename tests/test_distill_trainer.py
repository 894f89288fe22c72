"""``distill()`` runs on a tiny random world: gkd's counted on-policy fraction, exact resume, non-finite
steps skipped then stopped, LoRA export, clear errors, and the CLI's --help."""
import dataclasses
import json

import numpy as np
import pytest
from safetensors.numpy import load_file

from helpers import DISTILL_SHAPE, build_world, tiny_qwen_folder
from jaxdistill.distill import DistillConfig, distill
from jaxdistill.distill import learner as learner_module
from jaxdistill.distill.__main__ import main as distill_main
from jaxdistill.distill.data import OBJECTIVES, batch_indices, student_rows_at
from jaxdistill.tasks import list_tasks
from jaxdistill.training import TooManyBadSteps, read_metrics


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory)


def config(world, tmp_path, **overrides) -> DistillConfig:
    base = DistillConfig(student=str(world.student), teacher=str(world.teacher), task="arith",
                         task_options=("difficulty=1",), train_num_prompts=64, train_batch_size=4, max_steps=4,
                         max_completion_length=16, learning_rate=1e-3, output_dir=str(tmp_path / "run"),
                         progress=False, save_steps=2)
    return dataclasses.replace(base, **overrides)


def weights(run_dir):
    return load_file(str(run_dir / "model" / "model.safetensors"))


def test_student_rows_count_exactly_lambda():
    for lmbda in (0.0, 0.1, 0.25, 0.3, 0.5, 2 / 3, 1.0):
        for batch_size in (1, 4, 7):
            rows = [student_rows_at(s, batch_size, lmbda) for s in range(30)]
            assert all(0 <= r <= batch_size for r in rows)
            for steps in (1, 7, 30):  # any prefix of a run, so resuming keeps the count
                assert sum(rows[:steps]) == int(np.floor(lmbda * batch_size * steps + 1e-9))


def test_data_order_is_a_function_of_the_step():
    order = np.concatenate([batch_indices(10, 4, seed=3, step=s) for s in range(5)])  # 2 epochs
    assert sorted(order[:10]) == list(range(10)) and sorted(order[10:20]) == list(range(10))
    assert not np.array_equal(order[:10], order[10:20])  # each epoch reshuffled
    np.testing.assert_array_equal(batch_indices(10, 4, seed=3, step=3), order[12:16])


def test_gkd_counts_the_student_generated_fraction(world, tmp_path):
    run = distill(config(world, tmp_path, objective="gkd", lmbda=0.25, max_steps=5, off_policy_data="gold"))
    records = read_metrics(run)
    assert [r["gkd/student_sequences"] for r in records] == [1] * 5
    assert records[-1]["gkd/student_fraction"] == pytest.approx(0.25, abs=1e-12)  # 5 of 20 sequences
    summary = json.loads((run / "summary.json").read_text())
    assert summary["student_sequences"] == 5 and summary["sequences"] == 20
    assert summary["divergence"] == "jsd" and summary["loss"] == "token_kd"
    assert all(np.isfinite(r["loss"]) for r in records) and "samples/student_accuracy" in records[0]
    for r in records:  # the step-time breakdown: both phases timed, within the step
        assert 0 < r["time/batch"] and 0 < r["time/update"] and r["time/batch"] + r["time/update"] <= r["step_time"]
        assert r["update/tflops_per_second"] > 0 and "update/mfu" not in r  # no peak FLOP/s on a CPU


def test_resume_replays_the_uninterrupted_run_exactly(world, tmp_path, monkeypatch):
    straight = distill(config(world, tmp_path / "a", objective="kd", max_steps=4))
    interrupted = config(world, tmp_path / "b", objective="kd", max_steps=4)
    real_step = learner_module.StudentLearner.step
    calls = []

    def crash_at_step_3(self, batch):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash after the step-2 checkpoint")
        return real_step(self, batch)

    monkeypatch.setattr(learner_module.StudentLearner, "step", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        distill(interrupted)
    monkeypatch.setattr(learner_module.StudentLearner, "step", real_step)
    with pytest.raises(FileExistsError, match="resume=true"):
        distill(interrupted)
    resumed = distill(dataclasses.replace(interrupted, resume=True))
    a, b = weights(straight), weights(resumed)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    assert [r["loss"] for r in read_metrics(straight)] == [r["loss"] for r in read_metrics(resumed)]
    assert a["model.embed_tokens.weight"].shape == (302, 32)  # the student, not the teacher


def test_nonfinite_steps_are_skipped_counted_and_stop_the_run(world, tmp_path):
    teacher = tiny_qwen_folder(tmp_path / "nan_teacher", world.split_tokenizer, extra_rows=4, seed=1, **DISTILL_SHAPE)
    poisoned = load_file(str(teacher / "model.safetensors"))
    from safetensors.numpy import save_file
    poisoned["model.norm.weight"][:] = np.nan
    save_file(poisoned, str(teacher / "model.safetensors"))
    skip = config(world, tmp_path / "skip", teacher=str(teacher), objective="gkd", lmbda=0.0, off_policy_data="gold",
                  max_steps=2, max_bad_steps=3)
    run = distill(skip)
    assert [r["bad_steps"] for r in read_metrics(run)] == [1, 2]
    assert json.loads((run / "summary.json").read_text())["bad_steps"] == 2
    start = load_file(str(world.student / "model.safetensors"))
    end = weights(run)
    assert all(np.array_equal(start[k], end[k]) for k in start)  # both steps were skipped
    with pytest.raises(TooManyBadSteps, match="2 consecutive steps had a non-finite loss"):
        distill(dataclasses.replace(skip, output_dir=str(tmp_path / "stop"), max_steps=5, max_bad_steps=2))


def test_lora_student_exports_merged_adapters_and_max_steps_0_exports_the_start(world, tmp_path):
    start = load_file(str(world.student / "model.safetensors"))
    unchanged = weights(distill(config(world, tmp_path / "zero", max_steps=0)))
    assert all(np.array_equal(start[k], unchanged[k]) for k in start)
    lora = weights(distill(config(world, tmp_path / "lora", objective="sft", lora_rank=2, lora_targets=("q", "v"),
                                  max_steps=2, learning_rate=1e-2)))
    changed = {k for k in start if not np.array_equal(start[k], lora[k])}
    assert changed == {"model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.v_proj.weight"}
    assert (tmp_path / "lora" / "run" / "model" / "tokenizer.json").exists()


def test_clear_errors(world, tmp_path):
    with pytest.raises(ValueError, match="needs a teacher"):
        distill(config(world, tmp_path, objective="kd", teacher=""))
    with pytest.raises(ValueError, match="objective='distil' is not valid; choose one of sft, seqkd, kd, gkd"):
        distill(config(world, tmp_path, objective="distil"))
    # these fail once the run folder is open (each leaves an unfinished run there): a folder each
    with pytest.raises(ValueError, match="token_alignment=token needs one shared tokenizer"):
        distill(config(world, tmp_path / "a", student=str(world.cross_student), objective="kd",
                       token_alignment="token"))
    with pytest.raises(ValueError, match="embedding rows but its tokenizer"):
        distill(config(world, tmp_path / "b", student_tokenizer=str(world.merged_tokenizer)))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        distill(config(world, tmp_path / "c", student=str(tmp_path / "missing")))


def test_cli_help_lists_every_objective_task_and_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        distill_main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for word in list(OBJECTIVES) + list_tasks() + [f.name for f in dataclasses.fields(DistillConfig)]:
        assert word in text, word
    assert distill_main(["objectve=kd"]) == 1
    assert "did you mean 'objective'" in capsys.readouterr().err
