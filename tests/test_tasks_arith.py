"""arith: determinism, disjoint splits, every style correct and verified, the difficulty knob."""
import io
import re

import numpy as np
import pytest

from jaxdistill.tasks import OK, Style, describe, generate_problems, get_task, list_styles, restyled_solutions, \
    render_solution, solutions
from jaxdistill.tasks.arith import DIFFICULTIES, ArithConfig, DetourCounts, DetourRates, Detours, _line_groups, \
    detour_counts, generated_examples, rewrite_equations, sample_style, split_of
from jaxdistill.tasks.gsm8k import verify_number


def test_generation_is_deterministic_and_prefix_stable():
    first = generate_problems(200, split="train", seed=3)
    assert first == generate_problems(200, split="train", seed=3)
    assert generate_problems(50, split="train", seed=3) == first[:50]
    assert first != generate_problems(200, split="train", seed=4)
    task = get_task("arith", seed=3)
    a = task.load("test", limit=100)
    drawn_again = generated_examples.__wrapped__(100, "test", 3, task.config)  # past the process's cache
    assert [(e.prompt, e.solution, e.answer) for e in a] == [(e.prompt, e.solution, e.answer) for e in drawn_again]


def test_a_later_load_reuses_the_examples_drawn_and_returns_its_own_list():
    task = get_task("arith", seed=5)
    first = task.load("test", limit=30)
    hits = generated_examples.cache_info().hits
    first.clear()  # the caller's list is its own
    again = get_task("arith", seed=5).load("test", limit=30)
    assert generated_examples.cache_info().hits == hits + 1 and len(again) == 30
    assert again == list(generated_examples.__wrapped__(30, "test", 5, task.config))


def test_train_and_test_share_no_arithmetic_even_across_seeds():
    train = generate_problems(3000, split="train", seed=0)
    test = generate_problems(300, split="test", seed=1)
    assert len(set(train)) == 3000 and len(set(test)) == 300
    assert not {p.arithmetic_key() for p in train} & {p.arithmetic_key() for p in test}
    assert {split_of(p) for p in train} == {"train"} and {split_of(p) for p in test} == {"test"}


_EQUATION = re.compile(r"(\d+(?: ?[-+*/] ?\d+)+) ?= ?(\d+)")


def _left_to_right(expression: str) -> float:
    tokens = re.findall(r"\d+|[-+*/]", expression)
    value = float(tokens[0])
    for op, number in zip(tokens[1::2], tokens[2::2]):
        value = {"+": value + int(number), "-": value - int(number), "*": value * int(number),
                 "/": value / int(number)}[op]
    return value


@pytest.mark.parametrize("difficulty", sorted(DIFFICULTIES))
def test_every_style_is_arithmetically_true_and_verifies(difficulty):
    task = get_task("arith", difficulty=difficulty)
    styles = list_styles()
    assert len(styles) == 192 and len({s.name for s in styles}) == 192
    for example in task.load("test", limit=12):
        problem = example.meta["problem"]
        assert 2 <= problem.n_steps <= 4
        for name, text in solutions(problem).items():
            assert text.endswith(f"#### {problem.answer}")
            assert verify_number(text, example.answer).reward == 1.0, name
            equations = _EQUATION.findall(text)
            assert len(equations) >= 2 - ("merge" in name)
            for expression, result in equations:
                assert _left_to_right(expression) == int(result), (name, text)


def test_styles_differ_and_round_trip_by_name():
    problem = generate_problems(1, split="train", seed=0)[0]
    texts = solutions(problem)
    assert len(set(texts.values())) > 100  # merge can coincide with plain on some problems
    for style in list_styles():
        assert Style.from_name(style.name) == style
    assert solutions(problem, "words+check+answer") == {
        "words+check+answer": render_solution(problem, Style(words=True, check=True,
                                                             closing="answer"))}
    with pytest.raises(ValueError, match="bad style name"):
        Style.from_name("words+loud")


def test_style_features_render_as_described():
    problem = generate_problems(1, split="train", seed=0)[0]
    plain = render_solution(problem, Style())
    assert all(_EQUATION.fullmatch(line) for line in plain.splitlines()[:-1])
    assert " = " in render_solution(problem, Style(spaced=True))
    assert "check: " in render_solution(problem, Style(check=True))
    assert render_solution(problem, Style(restate=True)).startswith(f"{problem.name} starts with")
    assert f"The answer is {problem.answer}." in render_solution(problem, Style(closing="answer"))
    assert f"So {problem.name} has" in render_solution(problem, Style(closing="summary"))
    assert ", so " in render_solution(problem, Style(words=True))


def test_difficulty_knob_changes_steps_and_numbers():
    easy = generate_problems(300, split="train", difficulty=1)
    hard = generate_problems(300, split="train", difficulty=3)
    assert {p.n_steps for p in easy} == {2} and {p.n_steps for p in hard} == {2, 3, 4}
    assert max(p.answer for p in easy) <= 100 < max(p.answer for p in hard)
    custom = generate_problems(50, split="train", difficulty=ArithConfig(min_steps=4, max_steps=4))
    assert {p.n_steps for p in custom} == {4}
    with pytest.raises(ValueError, match="unknown arith difficulty"):
        generate_problems(5, difficulty=9)


def test_running_totals_stay_in_range():
    config = DIFFICULTIES[2]
    for problem in generate_problems(500, split="train", seed=5):
        assert all(2 <= step.result <= config.max_answer for step in problem.steps())


def test_gold_examples_verify_and_sampled_solutions_vary():
    task = get_task("arith")
    examples = task.load("train", limit=300)
    assert all(task.verify(e.solution, e).reward == 1.0 for e in examples)
    assert all(task.verify(e.solution, e).status == OK for e in examples)
    assert len({e.meta["style"] for e in examples}) > 100
    rng = np.random.default_rng(0)
    drawn = {task.sample_solution(examples[0], rng) for _ in range(30)}
    assert len(drawn) > 10
    assert all(task.verify(text, examples[0]).reward == 1.0 for text in drawn)
    assert len({sample_style(np.random.default_rng(i)).name for i in range(400)}) > 100


def test_texts_are_short_and_the_distribution_is_printed(capsys):
    examples = get_task("arith").load("test")
    out = io.StringIO()
    summary = describe(examples, file=out)
    assert summary["n"] == 500 and set(summary["steps"]) == {2, 3}
    assert 40 <= summary["words"]["mean"] <= 90 and summary["words"]["max"] <= 100
    assert summary["distinct_solutions_per_problem"] > 100
    assert all(0.35 < share < 0.65 for share in summary["style_features"].values())
    with capsys.disabled():
        print("\narith distribution (difficulty 2, test split):\n" + out.getvalue())


def test_loading_a_saved_jsonl_copy(tmp_path):
    import json

    task = get_task("arith")
    examples = task.load("test", limit=5)
    file = tmp_path / "arith.jsonl"
    file.write_text("".join(json.dumps({"question": e.prompt, "answer": e.solution}) + "\n"
                            for e in examples))
    loaded = task.load("test", file)
    assert [(e.prompt, e.answer) for e in loaded] == [(e.prompt, e.answer) for e in examples]
    assert task.sample_solution(loaded[0], np.random.default_rng(0)) == loaded[0].solution


# ---- world v2: detours ----------------------------------------------------------------------
V2_RATES = dict(correction=0.3, late_correction=0.2, result_first=0.3, distractor=0.3, answer_first=0.3)


def test_v2_keeps_the_problems_and_styles_of_v1_and_every_gold_solution_verifies():
    v1 = get_task("arith", difficulty=1).load("train", limit=300)
    task = get_task("arith", difficulty=1, version=2, **V2_RATES)
    v2 = task.load("train", limit=300)
    assert [(e.prompt, e.answer, e.meta["style"]) for e in v1] == \
        [(e.prompt, e.answer, e.meta["style"]) for e in v2]
    assert sum(a.solution != b.solution for a, b in zip(v1, v2)) > 200
    assert all(task.verify(e.solution, e).reward == 1.0 for e in v2)
    rng = np.random.default_rng(0)
    assert all(task.verify(task.sample_solution(e, rng), e).reward == 1.0 for e in v2[:50])


@pytest.mark.parametrize("difficulty", sorted(DIFFICULTIES))
def test_v2_detours_are_well_formed_and_parse_back(difficulty):
    task = get_task("arith", difficulty=difficulty, version=2, **V2_RATES)
    for example in task.load("test", limit=150):
        detours, text = example.meta["detours"], example.solution
        counts = detour_counts(text)
        assert counts.corrections == detours.kinds.count("correction"), text
        assert counts.late_corrections == detours.kinds.count("late_correction"), text
        assert counts.result_first == detours.kinds.count("result_first"), text
        assert counts.answer_first == detours.answer_first
        assert counts.hollow == 0, text  # every redo is true and differs from its slip
        assert counts.false_equations == counts.late_corrections, text  # only the slips carried on
        for line in text.splitlines():
            if ", wait: " in line:  # "X=W, wait: X=R": the same X, W wrong, R right
                (x, w), (x2, r) = _EQUATION.findall(line)
                assert x == x2 and int(w) != int(r) == _left_to_right(x), line
    assert detour_counts("3*8=24\n#### 24") == DetourCounts()
    assert detour_counts("3*8=25, wait: 3*8=25\n#### 25").hollow == 1


def test_v2_rates_are_honoured():
    rates = dict(correction=0.4, late_correction=0.2, result_first=0.1, distractor=0.25, answer_first=0.5)
    examples = get_task("arith", difficulty=2, version=2, **rates).load("train", limit=3000)
    drawn = [e.meta["detours"] for e in examples]
    lines = [kind for d in drawn for kind in d.kinds]
    not_last = [kind for d in drawn for kind in d.kinds[:-1]]
    last = [d.kinds[-1] for d in drawn]
    n = len(lines)
    assert abs(lines.count("correction") / n - 0.4) < 0.03
    assert abs(not_last.count("late_correction") / len(not_last) - 0.2) < 0.03
    assert "late_correction" not in last  # a late correction needs a next line
    assert abs(lines.count("result_first") / n - 0.1) < 0.02
    assert abs(sum(x is not None for d in drawn for x in d.distractors) / n - 0.25) < 0.03
    assert abs(np.mean([d.answer_first for d in drawn]) - 0.5) < 0.04
    none = get_task("arith", version=2, correction=0, late_correction=0, result_first=0, distractor=0,
                    answer_first=0).load("train", limit=50)
    assert [e.solution for e in none] == [e.solution for e in get_task("arith").load("train", limit=50)]


def test_v2_options_are_checked():
    with pytest.raises(ValueError, match="need version=2"):
        get_task("arith", correction=0.5)
    with pytest.raises(ValueError, match="unknown arith world version"):
        get_task("arith", version=4)
    with pytest.raises(ValueError, match="at most one of them"):
        get_task("arith", version=2, correction=0.6, result_first=0.6)
    with pytest.raises(ValueError, match="not in"):
        DetourRates(distractor=1.5)
    with pytest.raises(TypeError, match="unknown arith option"):
        get_task("arith", version=2, corections=0.5)


def test_v3_writes_results_first_alone_in_the_problems_of_v1():
    """World v3: the result before its derivation is its only detour, in 30% of the lines (an option); the
    problems and styles are v1's and every gold solution verifies."""
    v1 = get_task("arith", difficulty=1).load("train", limit=2000)
    task = get_task("arith", difficulty=1, version=3)
    v3 = task.load("train", limit=2000)
    assert [(e.prompt, e.answer, e.meta["style"]) for e in v1] == [(e.prompt, e.answer, e.meta["style"]) for e in v3]
    assert all(task.verify(e.solution, e).reward == 1.0 for e in v3)
    counts = [detour_counts(e.solution) for e in v3]
    assert sum(c.result_first for c in counts) > 0
    assert all(c.corrections == c.late_corrections == c.answer_first == c.false_equations == 0 for c in counts)
    lines = [kind for e in v3 for kind in e.meta["detours"].kinds]
    assert set(lines) <= {"plain", "result_first"}
    assert abs(lines.count("result_first") / len(lines) - 0.3) < 0.03
    assert max(len(e.solution) for e in v3) == max(len(e.solution) for e in v1)  # no longer than v1's
    half = get_task("arith", difficulty=1, version=3, result_first=0.6).load("train", limit=2000)
    share = np.mean([k == "result_first" for e in half for k in e.meta["detours"].kinds])
    assert abs(share - 0.6) < 0.03


def test_restyled_solutions_are_the_same_problems_in_another_style():
    """restyled_solutions: world v1's gold of world v2's problems (influence mode's validation text in the
    mixed world); options that change the problems are refused."""
    v2 = get_task("arith", difficulty=1, version=2).load("train", limit=40)
    v1 = get_task("arith", difficulty=1).load("train", limit=40)
    gold = restyled_solutions(v2[30:], get_task("arith", difficulty=1), "train", first=30)
    assert gold == [e.solution for e in v1[30:]]
    assert gold != [e.solution for e in v2[30:]]  # some v2 solutions carry detours
    with pytest.raises(ValueError, match="train example 30 is another problem"):
        restyled_solutions(v2[30:], get_task("arith", difficulty=2), "train", first=30)


@pytest.mark.parametrize("difficulty", sorted(DIFFICULTIES))
def test_rewriting_the_order_of_equations_writes_what_the_gold_of_that_order_writes(difficulty):
    """Every style's plain gold rewritten result-first is the gold with every line a result-first detour
    (world v3's form), and rewriting it back gives the plain gold; the numbers, so the verdict, stay."""
    task = get_task("arith", difficulty=difficulty)
    for example in task.load("test", limit=6):
        problem = example.meta["problem"]
        for style in list_styles():
            plain = render_solution(problem, style)
            lines = len(_line_groups(problem.steps(), style.merge))
            every_line = Detours(("result_first",) * lines, (0,) * lines, (None,) * lines)
            result_first = render_solution(problem, style, every_line)
            assert rewrite_equations(plain, "result_first") == result_first, style.name
            assert rewrite_equations(result_first, "derivation_first") == plain, style.name
            assert rewrite_equations(result_first, "result_first") == result_first  # already in that order
            assert detour_counts(result_first).result_first == lines
            assert verify_number(result_first, example.answer).reward == 1.0
    v3 = get_task("arith", difficulty=difficulty, version=3).load("test", limit=50)
    v1 = task.load("test", limit=50)
    assert [rewrite_equations(e.solution, "derivation_first") for e in v3] == [e.solution for e in v1]
    # a correction (world v2) is left as it is; an unknown order is refused
    assert rewrite_equations("8*3=23, wait: 8*3=24\n#### 24", "result_first") == "8*3=23, wait: 8*3=24\n#### 24"
    assert rewrite_equations("3 + 4= 7\n", "result_first") == "7= 3 + 4\n"  # its spacing and last newline kept
    late = "8*3=23\n23+5=28\nwait: 8*3=24\n24+5=29\n#### 29"  # a late correction: its redo line stays
    assert rewrite_equations(late, "result_first") == "23=8*3\n28=23+5\nwait: 8*3=24\n29=24+5\n#### 29"
    assert rewrite_equations("8*3=24\x1c#### 24", "result_first") == "24=8*3\x1c#### 24"  # detour_counts's lines
    with pytest.raises(ValueError, match="one of"):
        rewrite_equations("8*3=24", "backwards")
