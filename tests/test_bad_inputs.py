"""Bad input at every command line: one ``error:`` line naming the field or file, exit 1, no traceback,
and nothing an earlier run wrote is touched (the checks run before anything is loaded or written).
(A prompt longer than ``max_prompt_length`` is refused by the sampler, naming that field:
tests/test_generation.py::test_bad_input_is_clear.)
Ctrl-C: ``interrupted`` and exit 130, a checkpoint saved, also when it lands during a checkpoint save.

Every case calls the command's ``main`` in-process. One tiny finished run (a one-step distillation,
module fixture) is the earlier run: the training cases aim their ``output_dir`` at it, the others read
its model.
"""
import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from helpers import build_world
from jaxdistill.experiments.world import QUICK, check_run_folder, for_world
from jaxdistill.calibrate import main as calibrate_main
from jaxdistill.diagnose import main as diagnose_main
from jaxdistill.distill.__main__ import main as distill_main
from jaxdistill.evaluate import main as evaluate_main
from jaxdistill.experiments.scorecard import main as scorecard_main
from jaxdistill.experiments.sweep import main as sweep_main
from jaxdistill.plan import main as plan_main

CLIS = {"calibrate": calibrate_main, "distill": distill_main, "evaluate": evaluate_main,
        "diagnose": diagnose_main, "plan": plan_main, "sweep": sweep_main, "scorecard": scorecard_main}

# a calibration small enough to reach its first sample in seconds
TINY = ["task=arith", "task_options=[difficulty=1]", "num_generations=2", "prompts_per_step=2",
        "max_completion_length=8", "eval_steps=0", "eval_num_prompts=2", "lora_rank=2", "lora_alpha=4",
        "learning_rate=1e-3", "progress=false", "mesh.num_devices=1"]
# a distillation likewise (gold solutions: no teacher sampling)
SFT = ["objective=sft", "task=arith", "task_options=[difficulty=1]", "train_num_prompts=16",
       "train_batch_size=2", "max_completion_length=16", "learning_rate=1e-3", "progress=false"]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Teacher and student folders, a finished one-step distillation (the earlier run) and bad inputs."""
    models = build_world(tmp_path_factory)
    root = tmp_path_factory.mktemp("bad_inputs")
    run = root / "earlier_run"
    assert distill_main([f"student={models.student}", f"output_dir={run}", "max_steps=1", "save_steps=1",
                         *SFT]) == 0
    files = {"teacher": models.teacher, "proxy": models.student, "run": run, "root": root,
             "exported": run / "model"}
    # inputs a careless user might pass
    (root / "teacherless.yaml").write_text("eta: -1\nmax_steps: 50\n")
    (root / "broken.yaml").write_text("eta: -1\nmesh:\n  tensor: [2, 4\nmax_steps: 3\n")
    (root / "renamed.yaml").write_text("save_every: 10\n")
    (root / "a_file").write_text("not a folder")
    (root / "train.jsonl").write_text(json.dumps({"question": "What is 1 + 1?", "answer": "#### 2"}) + "\n")
    truncated = root / "truncated"
    shutil.copytree(run / "model", truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:weights.stat().st_size // 2])
    small_embedding = root / "small_embedding"  # a tokenizer with more ids than the model has rows
    shutil.copytree(run / "model", small_embedding)
    config = json.loads((small_embedding / "config.json").read_text())
    (small_embedding / "config.json").write_text(json.dumps({**config, "vocab_size": config["vocab_size"] // 2}))
    v2_run = root / "v2_run"  # a default run's folder holding a world v2 (its profile recorded, nothing built)
    check_run_folder(v2_run, for_world(QUICK, 2), 0)
    nfc_proxy = root / "nfc_proxy"  # a proxy whose tokenizer normalises text (NFC), and data it would change
    shutil.copytree(models.student, nfc_proxy)
    spec = json.loads((nfc_proxy / "tokenizer.json").read_text())
    (nfc_proxy / "tokenizer.json").write_text(json.dumps({**spec, "normalizer": {"type": "NFC"}}))
    decomposed = root / "decomposed"
    decomposed.mkdir()
    rows = [{"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"} for i in range(6)]
    rows[-1]["answer"] = "cafe\u0301 #### 6"  # e + combining accent: NFC makes it one character
    for split in ("train", "test"):
        (decomposed / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    files.update(v2_run=v2_run, nfc_proxy=nfc_proxy, decomposed=decomposed)
    files.update(teacherless=root / "teacherless.yaml", broken=root / "broken.yaml", renamed=root / "renamed.yaml",
                 a_file=root / "a_file", train_file=root / "train.jsonl", truncated=truncated,
                 small_embedding=small_embedding)
    return files


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def models(w):
    return [f"teacher={w['teacher']}", f"proxy={w['proxy']}"]


# (command, argv given the world, words the error line must contain)
CASES = {
    "negative learning rate": ("calibrate", lambda w: [*models(w), f"output_dir={w['run']}", "learning_rate=-1e-5"],
                               ["learning_rate=-1e-05", "> 0"]),
    "eta nan": ("calibrate", lambda w: [*models(w), f"output_dir={w['run']}", "eta=nan"], ["eta=nan", "finite"]),
    "infinite KL weight": ("calibrate", lambda w: [*models(w), f"output_dir={w['run']}", "beta=inf"], ["beta=inf"]),
    "zero temperature": ("calibrate", lambda w: [*models(w), f"output_dir={w['run']}", "temperature=0"],
                         ["temperature=0.0", "> 0"]),
    "config file without a teacher": ("calibrate", lambda w: ["--config", str(w["teacherless"]),
                                                              f"output_dir={w['run']}"],
                                      ["teacherless.yaml", "teacher"]),
    "settings without a teacher": ("calibrate", lambda w: ["eta=-1", f"output_dir={w['run']}"], ["eta", "teacher"]),
    "empty teacher in YAML": ("calibrate", lambda w: [f"proxy={w['proxy']}", "teacher=", f"output_dir={w['run']}"],
                              ["needs teacher"]),
    "calibrate without a proxy": ("calibrate", lambda w: [f"teacher={w['teacher']}", f"output_dir={w['run']}"],
                                  ["needs proxy", "eta != 0"]),
    "influence mode without validation text": ("calibrate", lambda w: [*models(w), f"output_dir={w['run']}",
                                                                       "calibration_mode=influence",
                                                                       "influence_validation_size=0"],
                                               ["influence_validation_size=0", "at least 2"]),
    "influence mode: validation text the proxy changes": (
        "calibrate", lambda w: [f"teacher={w['teacher']}", f"proxy={w['nfc_proxy']}", f"data_path={w['decomposed']}",
                                f"output_dir={w['root'] / 'new_nfc'}", "calibration_mode=influence",
                                "influence_validation_size=2", *TINY],
        ["changes the bytes of the gold solution of train example 5", "cafe\\u0301"]),
    "default run into a folder of world v2": ("calibrate", lambda w: ["--quick", f"output_dir={w['v2_run']}"],
                                              ["world_version: 2 there, 1 now"]),
    "world_version with a teacher": ("calibrate", lambda w: [*models(w), f"output_dir={w['run']}", "world_version=2"],
                                     ["world_version=2", "task_options=[version=2]"]),
    "one data_path file for two splits": ("calibrate", lambda w: [*models(w), f"output_dir={w['run']}",
                                                                  f"data_path={w['train_file']}"],
                                          ["data_path=", "eval_data_path"]),
    "missing data_path names the field": ("calibrate", lambda w: [*models(w), f"output_dir={w['root'] / 'new1'}",
                                                                  f"data_path={w['root'] / 'nowhere'}", *TINY],
                                          ["data_path"]),
    "mesh above the devices present": ("calibrate", lambda w: [*models(w), f"output_dir={w['root'] / 'new0'}",
                                                               "mesh.num_devices=4096"], ["mesh.num_devices=4096"]),
    "malformed YAML": ("calibrate", lambda w: ["--config", str(w["broken"])], ["broken.yaml:4:", "invalid YAML"]),
    "renamed field in YAML": ("calibrate", lambda w: ["--config", str(w["renamed"]), *models(w)],
                              ["renamed.yaml", "'save_every' was renamed: use 'save_steps'"]),
    "renamed field as override": ("distill", lambda w: [f"student={w['proxy']}", "batch_size=4"],
                                  ["'batch_size' was renamed: use 'train_batch_size'"]),
    "misspelt field": ("calibrate", lambda w: [*models(w), "num_generation=8"], ["did you mean 'num_generations'"]),
    "output_dir is a file": ("calibrate", lambda w: [*models(w), f"output_dir={w['a_file']}"],
                             ["output_dir=", "is a file"]),
    "distill needs a teacher": ("distill", lambda w: [f"student={w['proxy']}", "objective=kd",
                                                      f"output_dir={w['run']}"], ["teacher"]),
    "distill: one data_path file, evaluated": ("distill", lambda w: [f"student={w['proxy']}", f"output_dir={w['run']}",
                                                                     f"data_path={w['train_file']}",
                                                                     "eval_num_prompts=8"], ["eval_data_path"]),
    "distill sampling_temperature renamed": ("distill", lambda w: [f"student={w['proxy']}",
                                                                   "sampling_temperature=0.7"],
                                             ["use 'temperature'"]),
    "jsd_beta out of range": ("distill", lambda w: [f"student={w['proxy']}", "jsd_beta=2"], ["jsd_beta=2.0", "<= 1"]),
    "evaluate: tokenizer ids beyond the embedding": ("evaluate", lambda w: [f"models=[x={w['small_embedding']}]",
                                                                            f"output_dir={w['root'] / 'new3'}"],
                                                     ["small_embedding", "embedding rows"]),
    "evaluate: truncated safetensors": ("evaluate", lambda w: [f"models=[x={w['truncated']}]", "num_prompts=2",
                                                               f"output_dir={w['root'] / 'new4'}"],
                                        ["truncated/model.safetensors"]),
    "evaluate: missing model": ("evaluate", lambda w: [f"models=[x={w['root'] / 'nowhere'}]"], ["nowhere"]),
    "evaluate: no models": ("evaluate", lambda w: [], ["models"]),
    "evaluate: old limit": ("evaluate", lambda w: [f"models=[x={w['exported']}]", "limit=5"],
                            ["use 'num_prompts'"]),
    "diagnose: output_dir is a file": ("diagnose", lambda w: [f"teacher={w['exported']}", f"student={w['proxy']}",
                                                              f"output_dir={w['a_file'] / 'diag'}"],
                                       ["output_dir=", "is a file"]),
    "diagnose: missing student": ("diagnose", lambda w: [f"teacher={w['exported']}"], ["student"]),
    "diagnose: --key value": ("diagnose", lambda w: ["--teacher", str(w["exported"])], ["teacher=..."]),
    "diagnose: old chat": ("diagnose", lambda w: ["chat=true"], ["use 'chat_template'"]),
    "plan: zero devices": ("plan", lambda w: [*models(w), "devices=0"], ["devices=0", ">= 1"]),
    "plan: negative devices": ("plan", lambda w: [*models(w), "devices=-8"], ["devices=-8"]),
    "plan: negative memory": ("plan", lambda w: [*models(w), "device_memory_gib=-16"], ["device_memory_gib=-16"]),
    "plan: old --devices flag": ("plan", lambda w: [*models(w), "--devices", "8"], ["devices=..."]),
    "sweep: no etas": ("sweep", lambda w: ["--quick", "etas=[]", f"output_dir={w['root'] / 'new5'}"], ["etas"]),
    "sweep: unknown attack": ("sweep", lambda w: ["attack=sft"], ["attack='sft'", "seqkd | kd | gkd"]),
    "sweep: half the models": ("sweep", lambda w: ["--quick", f"teacher={w['teacher']}",
                                                   f"output_dir={w['root'] / 'new6'}"], ["together"]),
    "sweep: one data_path file": ("sweep", lambda w: [f"data_path={w['train_file']}"], ["data_path="]),
    "scorecard: unknown attack": ("scorecard", lambda w: [f"original_teacher={w['teacher']}", "attacks=[distil]",
                                                          f"students=[s={w['proxy']}]"], ["attacks='distil'"]),
    "scorecard: no students": ("scorecard", lambda w: [f"original_teacher={w['teacher']}"], ["students"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_error_line_and_touches_nothing(case, world, capsys, monkeypatch):
    monkeypatch.delenv("JAXDISTILL_DEBUG", raising=False)
    command, argv, words = CASES[case]
    before = snapshot(world["run"])
    code = CLIS[command](argv(world))
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 1, err
    assert len(errors) == 1, err
    for word in words:
        assert word in errors[0], (word, errors[0])
    assert "Traceback" not in err
    assert snapshot(world["run"]) == before


def test_offline_hub_dataset_fails_in_seconds_naming_the_local_setting(world, capsys, monkeypatch):
    from jaxdistill.tasks import loading

    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(loading, "hub_reachable", lambda timeout=5.0: False)  # no network, whatever the machine
    started = time.perf_counter()
    code = evaluate_main([f"models=[t={world['exported']}]", "tasks=[gsm8k]", "num_prompts=2",
                          f"output_dir={world['root'] / 'offline'}"])
    err = capsys.readouterr().err
    assert code == 1 and time.perf_counter() - started < 30
    assert "data_path" in err and "HF_DATASETS_OFFLINE=1" in err and "Traceback" not in err


def test_debug_shows_the_traceback(world, capsys):
    with pytest.raises(ValueError, match="learning_rate"):
        calibrate_main([*models(world), f"output_dir={world['run']}", "learning_rate=-1", "--debug"])


def test_ctrl_c_during_a_checkpoint_save_saves_and_exits_130(world, tmp_path, capsys, monkeypatch):
    """SIGINT arrives while orbax writes the checkpoint of step 1 (the main thread waits for orbax's
    background commit): the save completes, the loop stops at that step with its checkpoint, and the
    command prints ``interrupted`` and exits 130, with no traceback (not even orbax's); resume=true then
    continues from step 1 to the end."""
    import orbax.checkpoint as ocp

    wait = ocp.CheckpointManager.wait_until_finished
    signalled = []

    def wait_with_ctrl_c(manager):
        if not signalled:
            signalled.append(True)
            os.kill(os.getpid(), signal.SIGINT)  # handled at once, in the main thread, inside orbax's save
        return wait(manager)

    monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", wait_with_ctrl_c)
    out = tmp_path / "run"
    argv = [f"student={world['proxy']}", f"output_dir={out}", "max_steps=3", "save_steps=1", *SFT]
    assert distill_main(argv) == 130
    err = capsys.readouterr().err
    assert signalled and "interrupted: checkpoint of step 1 saved" in err.strip().splitlines()[-1]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    assert sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.isdigit()) == ["1"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the runner put the handler back
    monkeypatch.setattr(ocp.CheckpointManager, "wait_until_finished", wait)
    assert distill_main([*argv, "resume=true"]) == 0
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


def test_ctrl_c_outside_training_exits_130(world, capsys, monkeypatch):
    """Ctrl-C while models load or samples are drawn (no training loop listening): stop at once."""
    import jaxdistill.evaluate as evaluate

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
        pytest.fail("SIGINT did not stop the command")

    monkeypatch.setattr(evaluate, "evaluate_models", interrupted)
    code = evaluate_main([f"models=[t={world['exported']}]", f"output_dir={world['root'] / 'ctrl_c'}"])
    assert code == 130 and capsys.readouterr().err.strip().splitlines()[-1] == "interrupted"
