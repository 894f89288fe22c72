"""calibration_mode=influence: r_cal = -harm along the direction of held-out gold text, on tiny random models."""
import numpy as np
import pytest

from helpers import tiny_calibration, tiny_world as build_tiny_world
from jaxdistill.models import load_model
from jaxdistill.rl.influence import harm_scores, retokenized_batch, split_proxy, validation_batches
from jaxdistill.rl.loop import calibrate, hold_out_validation
from jaxdistill.rl.rewards import CalibrationScorer
from jaxdistill.tasks import get_task
from jaxdistill.tasks.base import Example
from jaxdistill.tokenizer import load_tokenizer
from jaxdistill.training import read_metrics


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_tiny_world(tmp_path_factory.mktemp("world"))


def _config(world, out, **overrides):
    return tiny_calibration(world, out, **{**dict(num_generations=2, max_completion_length=8, eval_num_prompts=2,
                                                  save_steps=0, export=False, eta=-1.0,
                                                  calibration_mode="influence", influence_validation_size=8,
                                                  influence_batch_size=4), **overrides})


def test_influence_run_logs_harm_and_a_stability_and_pays_minus_harm(world, tmp_path):
    calibrate(_config(world, tmp_path / "frozen"))
    records = read_metrics(tmp_path / "frozen")[1:]
    assert [r["step"] for r in records] == [1, 2]
    for r in records:
        assert np.isfinite(r["calibration/harm_mean"]) and r["calibration/harm_std"] > 0
        assert -1.0 <= r["calibration/direction_stability"] <= 1.0
        assert r["calibration/validation_loss"] > 0 and r["calibration/validation_grad_norm"] > 0
        assert r["rewards/calibration/mean"] == pytest.approx(-r["calibration/harm_mean"], rel=1e-5, abs=1e-9)
    # a frozen proxy: one direction for the run
    assert records[0]["calibration/direction_stability"] == records[1]["calibration/direction_stability"]
    assert records[0]["calibration/validation_loss"] == records[1]["calibration/validation_loss"]


def test_a_learning_proxy_moves_the_direction_and_nothing_compiles_after_step_one(world, tmp_path):
    calibrate(_config(world, tmp_path / "learning", max_steps=3, proxy_learning_rate=1e-2))
    records = read_metrics(tmp_path / "learning")[1:]
    assert records[0]["compile/programs"] > 0
    assert [r["compile/programs"] for r in records[1:]] == [0, 0]  # the direction's programs are reused
    losses = [r["calibration/validation_loss"] for r in records]
    assert len(set(losses)) == 3, losses  # recomputed every step under the proxy as it learns


def test_eight_devices_measure_the_same_harm_as_one(world, tmp_path):
    """On a (data 2, fsdp 2, tensor 2) mesh the rollouts and the validation batches are split over the
    batch axes (sharding.shard_rows): the direction, its stability and every harm are those of one device."""
    from jaxdistill.sharding import MeshConfig

    one = calibrate(_config(world, tmp_path / "one", max_steps=1, save_steps=1, num_generations=4))
    eight = calibrate(_config(world, tmp_path / "eight", max_steps=1, save_steps=1, num_generations=4,
                              mesh=MeshConfig(data=2, fsdp=2, tensor=2)))
    a, b = one["history"][1], eight["history"][1]
    for key in ("calibration/harm_mean", "calibration/harm_std", "calibration/direction_stability",
                "calibration/validation_loss", "calibration/validation_grad_norm", "rewards/task/mean", "loss"):
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key


@pytest.mark.parametrize("devices", [1, 8])
def test_the_scorer_pays_minus_the_harm_of_the_text_the_proxy_reads(world, devices):
    """The scorer's own batch (fixed widths, teacher bytes) against the library's path for the same tokens;
    on 8 devices, with the proxy's inputs and validation batches split over the batch axes."""
    from jax.sharding import PartitionSpec as P

    from jaxdistill.sharding import MeshConfig, make_mesh

    mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2)) if devices == 8 else None
    proxy, _ = load_model(world["proxy"], "float32", mesh=mesh)
    proxy_tok, teacher_tok = load_tokenizer(world["proxy"]), load_tokenizer(world["teacher"])
    examples = get_task("arith", difficulty=1).load("train", limit=12)
    gold = validation_batches(proxy_tok, [e.prompt for e in examples[:8]], [e.solution for e in examples[:8]], 4)
    scorer = CalibrationScorer(proxy, proxy_tok, teacher_tok, mode="influence", validation=gold,
                               prompt_width=64, completion_width=64, mesh=mesh)
    if mesh is not None:
        assert scorer.validation[0].tokens.sharding.spec == P(("data", "fsdp"), None)
        assert scorer.proxy_inputs(["1 + 2"] * 4, np.ones((4, 8), np.int32), np.ones((4, 8), bool))[2] \
            .sharding.spec == P(("data", "fsdp"), None)
    prompts = [e.prompt for e in examples[8:]]
    completions = [teacher_tok.encode(e.solution[:20 + 7 * i]) + [teacher_tok.eos_id]
                   for i, e in enumerate(examples[8:])]
    teacher_lp = np.full((4, 40), -1.0, np.float32)  # not read by this mode's reward
    reward, metrics, _ = scorer(prompts, completions, teacher_lp)
    graphdef, params, rest = split_proxy(proxy)
    harm = harm_scores(params, graphdef, rest, scorer.direction.direction,
                       retokenized_batch(teacher_tok, completions, proxy_tok, prompts), proxy_tok.vocab_size)
    assert np.all(np.abs(np.asarray(harm)) > 0)
    np.testing.assert_allclose(reward, -np.asarray(harm), rtol=1e-5, atol=1e-8)
    assert metrics["calibration/harm_mean"] == pytest.approx(float(np.mean(harm)), rel=1e-5)


def test_validation_batches_split_the_texts_into_two_halves_of_one_shape(world):
    proxy_tok = load_tokenizer(world["proxy"])
    examples = get_task("arith", difficulty=1).load("train", limit=7)
    batches = validation_batches(proxy_tok, [e.prompt for e in examples], [e.solution for e in examples], 2)
    assert len(batches) == 4 and len({(b.tokens.shape, b.prompt_ids.shape) for b in batches}) == 1
    assert [int((np.asarray(b.mask).sum(1) > 0).sum()) for b in batches] == [2, 2, 2, 1]  # 7 texts, i mod 4
    padded = validation_batches(proxy_tok, [e.prompt for e in examples], [e.solution for e in examples], 2,
                                row_multiple=4)  # rows that split over data x fsdp = 4; the filler adds nothing
    assert [b.tokens.shape[0] for b in padded] == [4] * 4
    assert [int((np.asarray(b.mask).sum(1) > 0).sum()) for b in padded] == [2, 2, 2, 1]
    assert sum(int(np.asarray(b.num_bytes).sum()) for b in padded) == sum(len(e.solution) for e in examples)
    assert sum(int(np.asarray(b.num_bytes).sum()) for b in batches) == sum(len(e.solution) for e in examples)
    with pytest.raises(ValueError, match="at least 2 gold texts"):
        validation_batches(proxy_tok, ["1 + 1"], ["2"], 4)


def test_validation_text_the_proxy_cannot_read_faithfully_is_named(world, tmp_path):
    import json
    import shutil

    folder = tmp_path / "nfc"
    shutil.copytree(world["proxy"], folder)
    spec = json.loads((folder / "tokenizer.json").read_text())
    (folder / "tokenizer.json").write_text(json.dumps({**spec, "normalizer": {"type": "NFC"}}))
    with pytest.raises(ValueError, match=r"changes the bytes of gold 1 \('cafe\\u0301'\)"):
        validation_batches(load_tokenizer(folder), ["a", "b"], ["ok", "cafe\u0301"], 4, labels=["gold 0", "gold 1"])


def test_validation_is_held_out_of_training():
    examples = [Example(f"p{i % 6}", f"s{i}", "0") for i in range(10)]  # p0..p3 appear twice
    train, validation = hold_out_validation(examples, 3, "train")
    assert [e.solution for e in validation] == ["s7", "s8", "s9"]
    assert {e.prompt for e in train}.isdisjoint({e.prompt for e in validation})
    assert [e.solution for e in train] == ["s0", "s4", "s5", "s6"]  # s1..s3 repeat p1..p3 of the validation
    with pytest.raises(ValueError, match="influence_validation_size=10"):
        hold_out_validation(examples, 10, "train")
    with pytest.raises(ValueError, match="no gold solution"):
        hold_out_validation([*examples[:5], Example("q", "", "0")], 2, "train")


def test_a_run_reads_its_validation_text_from_the_validation_options(world, tmp_path):
    """A world-v2 calibration whose validation options are world v1's takes the direction from v1's gold: the
    frozen proxy's validation loss is that of a v1 run (the v2 gold differs: the test above)."""
    def first_loss(name, **overrides):
        calibrate(_config(world, tmp_path / name, max_steps=1, **overrides))
        return read_metrics(tmp_path / name)[1]["calibration/validation_loss"]

    v1 = first_loss("v1", task_options=("difficulty=1",))
    restyled = first_loss("v2_v1gold", task_options=("difficulty=1", "version=2"),
                          influence_validation_task_options=("difficulty=1",))
    assert restyled == pytest.approx(v1, rel=1e-6)
