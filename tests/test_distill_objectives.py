"""The trainer's losses on real (tiny, random) models: prompt tokens never trained, vocabularies sliced,
chunking exact, the span path equal to its one-tokenizer counterpart, spans covering the same bytes on
both sides, and each loss lowered by the learner. The pure maths is tested in test_distill_losses.py."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from helpers import SPLIT_VOCAB, build_world
from jaxdistill.distill import losses
from jaxdistill.distill.data import BatchMaker, BatchRecipe, Side, TeacherSampleCache, batch_indices
from jaxdistill.distill.learner import StudentLearner, _loss
from jaxdistill.distill.objectives import DistillBatch, LossSettings, Sequences
from jaxdistill.models import LoraConfig, LoraParam, load_model
from jaxdistill.tasks import get_task
from jaxdistill.tokenizer import load_tokenizer
from jaxdistill.training import make_optimizer


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return build_world(tmp_path_factory)


@pytest.fixture(scope="module")
def models(world):
    student, _ = load_model(world.student)
    teacher, _ = load_model(world.teacher)
    cross_student, _ = load_model(world.cross_student)
    return student, teacher, cross_student


def sequences(prompts, completions, prompt_width=8, width=6, pad=0):
    """Left-padded prompts and right-padded completions (pads filled with ``pad``)."""
    n = len(prompts)
    out = [np.full((n, prompt_width), pad), np.zeros((n, prompt_width)), np.full((n, width), pad), np.zeros((n, width))]
    for r, (p, c) in enumerate(zip(prompts, completions)):
        out[0][r, prompt_width - len(p):], out[1][r, prompt_width - len(p):] = p, 1
        out[2][r, :len(c)], out[3][r, :len(c)] = c, 1
    return Sequences(*(jnp.asarray(a, jnp.int32) for a in out))


PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14, 15, 16, 17, 18]]
COMPLETIONS = [[20, 21, 22, 1], [23, 24, 25, 26, 27, 1], [28, 1]]


def completion_logits(model, seqs):
    """Reference: one plain forward over prompt + completion; the logits that predict completion tokens."""
    ids = jnp.concatenate([seqs.prompt_ids, seqs.tokens], axis=1)
    mask = jnp.concatenate([seqs.prompt_mask, seqs.mask], axis=1)
    p, c = seqs.prompt_ids.shape[1], seqs.tokens.shape[1]
    return model(ids, mask)[:, p - 1:p - 1 + c]


def loss_of(student, teacher, batch, settings):
    learner = StudentLearner(student, make_optimizer(1e-3, 1), settings, teacher=teacher)
    return learner.loss(batch)


def test_nll_trains_completion_tokens_only(models):
    student = models[0]
    settings = LossSettings(kind="nll", student_vocab_size=SPLIT_VOCAB)
    seqs = sequences(PROMPTS, COMPLETIONS)
    expected = losses.sft_loss(completion_logits(student, seqs), seqs.tokens, seqs.mask, vocab_size=SPLIT_VOCAB)
    assert loss_of(student, None, DistillBatch(seqs), settings) == pytest.approx(float(expected), rel=1e-5)
    # padding holds any ids: prompt pads and completion pads never reach the loss
    junk = sequences(PROMPTS, COMPLETIONS, pad=37)
    assert loss_of(student, None, DistillBatch(junk), settings) == pytest.approx(float(expected), rel=1e-5)
    # ... while a real prompt token conditions the completion (so it is read, just not trained)
    changed = sequences([[40] + p[1:] for p in PROMPTS], COMPLETIONS)
    assert loss_of(student, None, DistillBatch(changed), settings) != pytest.approx(float(expected), rel=1e-5)


def test_token_kd_slices_two_model_vocab_sizes(models):
    student, teacher, _ = models
    assert student.config.vocab_size == SPLIT_VOCAB + 2 and teacher.config.vocab_size == SPLIT_VOCAB + 4
    seqs = sequences(PROMPTS, COMPLETIONS)
    settings = LossSettings(kind="token_kd", divergence="jsd", beta=0.3, temperature=2.0,
                            student_vocab_size=SPLIT_VOCAB, teacher_vocab_size=SPLIT_VOCAB)
    expected = losses.kd_loss(completion_logits(student, seqs), completion_logits(teacher, seqs), seqs.mask,
                              divergence_kind="jsd", beta=0.3, temperature=2.0, student_vocab_size=SPLIT_VOCAB,
                              teacher_vocab_size=SPLIT_VOCAB)
    batch = DistillBatch(seqs, seqs)
    assert loss_of(student, teacher, batch, settings) == pytest.approx(float(expected), rel=1e-5)
    # padded rows (2 in the student, 4 in the teacher) may hold anything: they are cut before the softmax
    loud_student, loud_teacher = nnx.clone(student), nnx.clone(teacher)
    for model in (loud_student, loud_teacher):
        model.embed_tokens[...] = model.embed_tokens[...].at[SPLIT_VOCAB:].multiply(300.0)
    assert loss_of(loud_student, loud_teacher, batch, settings) == pytest.approx(float(expected), rel=1e-5)
    unsliced = LossSettings(kind="token_kd", divergence="jsd", beta=0.3, temperature=2.0)  # what slicing prevents
    assert loss_of(loud_student, loud_teacher, batch, unsliced) > 10 * float(expected)


def test_chunked_logits_give_the_same_loss_and_gradient(models):
    student = models[0]
    batch = DistillBatch(sequences(PROMPTS, COMPLETIONS))
    graphdef, params, rest = nnx.split(student, nnx.Param, ...)

    def value_and_grad(chunk_size):
        settings = LossSettings(kind="nll", student_vocab_size=SPLIT_VOCAB, chunk_size=chunk_size)
        fn = jax.jit(lambda p: _loss(p, rest, None, batch, graphdef, None, settings)[0])
        return jax.value_and_grad(fn)(params)

    (one, grad_one), (chunked, grad_chunked) = value_and_grad(64), value_and_grad(4)  # 6 positions: 2 chunks
    assert float(chunked) == pytest.approx(float(one), rel=1e-5)
    for a, b in zip(jax.tree.leaves(grad_one), jax.tree.leaves(grad_chunked)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-7)


def gold_batch(world, student, teacher, student_tokenizer, loss_kind, batch_size=3):
    """A batch of gold solutions scored by the teacher (gkd with lmbda=0: no sampling)."""
    sides = {"student": Side.of(load_tokenizer(student_tokenizer)),
             "teacher": Side.of(load_tokenizer(world.split_tokenizer))}
    task = get_task("arith", difficulty=1)
    recipe = BatchRecipe(objective="gkd", loss_kind=loss_kind, batch_size=batch_size, max_completion_length=64,
                         lmbda=0.0, off_policy_data="gold")
    maker = BatchMaker(recipe, task, task.load("train", limit=16), sides, student=student, teacher=teacher)
    return maker(0)[0], sides


def test_span_path_with_one_tokenizer_equals_chosen_token_kd(world, models):
    """The cross-tokenizer path, forced on one tokenizer, makes every token its own span (EOS included) and
    gives the same loss as the one-tokenizer loss on chosen tokens."""
    student, teacher, _ = models
    batch, _ = gold_batch(world, student, teacher, world.split_tokenizer, "span_kd")
    mask = np.asarray(batch.student.mask, bool)
    np.testing.assert_array_equal(batch.student.tokens, batch.teacher.tokens)
    expected_ids = np.where(mask, np.arange(mask.shape[1])[None, :], -1)
    np.testing.assert_array_equal(batch.student_span_ids, expected_ids)
    np.testing.assert_array_equal(batch.span_mask, mask)
    settings = LossSettings(kind="span_kd", divergence="jsd", beta=0.5, temperature=1.5,
                            student_vocab_size=SPLIT_VOCAB, teacher_vocab_size=SPLIT_VOCAB)
    expected = losses.chosen_token_kd_loss(
        completion_logits(student, batch.student), completion_logits(teacher, batch.teacher), batch.student.tokens,
        batch.student.mask, divergence_kind="jsd", beta=0.5, temperature=1.5, student_vocab_size=SPLIT_VOCAB,
        teacher_vocab_size=SPLIT_VOCAB)
    # The loss is ~5e-6 (two tiny, nearly uniform models): a small difference of O(1) fp32 log-probs, so the
    # two programs' summation orders show at the 1e-5 relative level (3.5e-10 absolute seen); hence 1e-4.
    assert loss_of(student, teacher, batch, settings) == pytest.approx(float(expected), rel=1e-4)


def test_cross_tokenizer_spans_hold_the_same_bytes_on_both_sides(world, models):
    student, teacher, cross_student = models
    batch, sides = gold_batch(world, cross_student, teacher, world.merged_tokenizer, "span_kd")
    assert not np.array_equal(np.asarray(batch.student.mask).sum(1), np.asarray(batch.teacher.mask).sum(1))
    for row in range(3):
        pieces = {}
        for side, seqs, spans in (("student", batch.student, batch.student_span_ids),
                                  ("teacher", batch.teacher, batch.teacher_span_ids)):
            table = sides[side].tokenizer.token_bytes
            for token, span in zip(np.asarray(seqs.tokens[row]), np.asarray(spans[row])):
                if span >= 0:
                    pieces.setdefault(side, {}).setdefault(int(span), []).append(table[token] or b"<eos>")
        student_spans = {s: b"".join(p) for s, p in pieces["student"].items()}
        teacher_spans = {s: b"".join(p) for s, p in pieces["teacher"].items()}
        assert student_spans == teacher_spans
        assert student_spans[max(student_spans)] == b"<eos>"  # the final "stop here" span
        assert int(np.asarray(batch.span_mask[row]).sum()) == len(student_spans)
        assert len(student_spans) < int(np.asarray(batch.teacher.mask[row]).sum())  # spans merge digits


@pytest.mark.parametrize("kind", ["token_kd", "span_kd"])  # nll: see test_distill_smoke.py
def test_learner_lowers_its_own_loss(world, kind):
    cross = kind == "span_kd"
    student, _ = load_model(world.cross_student if cross else world.student)
    teacher, _ = load_model(world.teacher)
    batch, sides = gold_batch(world, student, teacher, world.merged_tokenizer if cross else world.split_tokenizer,
                              kind)
    settings = LossSettings(kind=kind, student_vocab_size=sides["student"].vocab_size,
                            teacher_vocab_size=SPLIT_VOCAB)
    learner = StudentLearner(student, make_optimizer(1e-2, 10), settings, teacher=teacher)
    losses_seen = [float(learner.step(batch)["loss"]) for _ in range(10)]  # each before its update
    assert losses_seen[-1] < 0.7 * losses_seen[0]


def test_lora_learner_trains_adapters_only(world):
    student, _ = load_model(world.student, lora=LoraConfig(rank=2, alpha=4.0))
    base = jax.tree.map(np.array, nnx.state(student, nnx.Not(LoraParam)))  # host copies (steps donate buffers)
    adapters = jax.tree.map(np.array, nnx.state(student, LoraParam))
    batch = DistillBatch(sequences(PROMPTS, COMPLETIONS))
    learner = StudentLearner(student, make_optimizer(1e-2, 2), LossSettings(kind="nll"), lora_only=True)
    learner.step(batch)
    learner.step(batch)
    for a, b in zip(jax.tree.leaves(base), jax.tree.leaves(nnx.state(student, nnx.Not(LoraParam)))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    changed = [not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(adapters), jax.tree.leaves(nnx.state(student, LoraParam)))]
    assert all(changed)
    with pytest.raises(ValueError, match="no LoRA adapters"):
        StudentLearner(load_model(world.student)[0], make_optimizer(1e-2, 2), LossSettings(), lora_only=True)


def test_a_model_folder_keeps_its_tokenizer_splitting(world):
    """Regression: transformers 5 maps a qwen2 folder's config.json to Qwen2Tokenizer, which re-splits
    digits; the tokenizer copied into a student folder must encode exactly like its source folder."""
    source = load_tokenizer(world.merged_tokenizer)
    number = next(piece.decode() for piece in source.token_bytes if len(piece) > 1 and piece.strip().isdigit())
    text = f"Ann has {number} apples. 3+{number}"
    assert len(source.encode(number)) == 1 and len(load_tokenizer(world.split_tokenizer).encode(number)) > 1
    assert load_tokenizer(world.cross_student).encode(text) == source.encode(text)


def test_seqkd_only_correct_trains_exactly_the_verified_teacher_samples():
    from helpers import FIXTURE_TEACHER  # a trained arith teacher (75% greedy), so samples vary

    teacher, _ = load_model(FIXTURE_TEACHER)
    side = Side.of(load_tokenizer(FIXTURE_TEACHER))
    task = get_task("arith", difficulty=1)
    recipe = BatchRecipe(objective="seqkd", loss_kind="nll", batch_size=8, max_completion_length=64,
                         seqkd_only_correct=True, seed=3)
    batch, metrics = BatchMaker(recipe, task, task.load("train", limit=64), {"student": side, "teacher": side},
                                student=teacher, teacher=teacher)(0)
    examples = [task.load("train", limit=64)[i] for i in batch_indices(64, 8, 3, 0)]
    tokens, mask = np.asarray(batch.student.tokens), np.asarray(batch.student.mask)
    trained = mask.sum(1) > 0
    # a row is its sample, EOS and padding: decoding drops the special tokens
    correct = [task.verify(side.text(row), e).reward == 1.0 for row, e in zip(tokens.tolist(), examples)]
    assert list(trained) == correct and 0 < trained.mean() < 1
    assert metrics["seqkd/kept_fraction"] == pytest.approx(trained.mean())
    assert metrics["samples/teacher_accuracy"] == pytest.approx(trained.mean())


def test_teacher_sample_cache_gives_a_second_student_the_same_batches(world, models):
    """Two students distilled from one teacher with one seed read identical teacher samples: with a shared
    cache the second samples nothing and gets the very batches it would have sampled itself."""
    student, teacher, other_student = models
    sides = {"student": Side.of(load_tokenizer(world.split_tokenizer)),
             "teacher": Side.of(load_tokenizer(world.split_tokenizer))}
    task = get_task("arith", difficulty=1)
    examples = task.load("train", limit=16)
    recipe = BatchRecipe(objective="seqkd", loss_kind="nll", batch_size=3, max_completion_length=12, seed=5)
    cache = TeacherSampleCache()
    makers = [BatchMaker(recipe, task, examples, sides, student=s, teacher=teacher, teacher_samples=cache,
                         teacher_id="teacher-folder") for s in (student, other_student)]
    uncached = BatchMaker(recipe, task, examples, sides, student=other_student, teacher=teacher)
    for step in range(2):
        first, second, fresh = makers[0](step)[0], makers[1](step)[0], uncached(step)[0]
        np.testing.assert_array_equal(second.student.tokens, fresh.student.tokens)
        np.testing.assert_array_equal(first.student.tokens, fresh.student.tokens)
    assert (cache.misses, cache.hits) == (2, 2)
    other_seed = BatchMaker(dataclasses.replace(recipe, seed=6), task, examples, sides, student=student,
                            teacher=teacher, teacher_samples=cache, teacher_id="teacher-folder")
    other_seed(0)
    assert cache.misses == 3  # another seed samples other completions
