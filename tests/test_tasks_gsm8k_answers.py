"""The GSM8K verifier reads the final stated answer: hand-graded completions, the gold solutions of
the GSM8K files, and a property test that a wrong final answer never scores."""
import json
import math
import string
import time

import pytest
from conftest import shared_path
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from jaxdistill.tasks import OK, UNPARSEABLE, get_task
from jaxdistill.tasks.answers import clause_value, drop_negated, drop_runoff, expression_value, \
    normalize_number_text, quantities
from jaxdistill.tasks.gsm8k import verify_number


def case(case_id, completion, gold, reward, status=OK):
    return pytest.param(completion, gold, reward, status, id=case_id)


# Graded by hand: the completion's final stated answer counts; units, $, % and thousands commas are
# ignored; 3/4, .75 and 2 1/4 are the numbers they denote. (completion, gold, reward, status)
HAND_GRADED = [
    # "answer is" followed by several numbers: the number the statement gives, not the first
    case("phrase-because", "So the answer is 56 because 8 * 7 = 56.", "56", 1.0),
    case("phrase-extra-count", "The answer is 24 cookies for the 3 friends.", "24", 1.0),
    case("phrase-extra-count-wrong", "The answer is 24 cookies for the 3 friends.", "3", 0.0),
    case("phrase-since", "The answer is 7, since 21 / 3 = 7.", "7", 1.0),
    case("phrase-trailing-duration", "The final answer is 310 km after 5 hours of driving.", "310", 1.0),
    case("phrase-aside", "The answer is 64 (that is 8 boxes of 8).", "64", 1.0),
    case("phrase-aside-wrong", "The answer is 64 (that is 8 boxes of 8).", "8", 0.0),
    case("phrase-answer-colon", "Answer: 19 students", "19", 1.0),
    # negation and correction: a denied number never counts, a corrected one is replaced
    case("negation-then-value", "The answer is not 120 but 150.", "150", 1.0),
    case("negation-then-value-wrong", "The answer is not 120 but 150.", "120", 0.0),
    case("value-then-negation", "The answer is 90, not 60.", "90", 1.0),
    case("value-then-negation-wrong", "The answer is 90, not 60.", "60", 0.0),
    case("isnt", "The answer isn't 35; it's 45.", "35", 0.0),
    case("rather-than", "The answer is 75 rather than 80.", "80", 0.0),
    case("only-negated", "The answer is not 40.", "40", 0.0, UNPARSEABLE),
    case("inline-correction", "The answer is 48, no wait, 52.", "52", 1.0),
    case("inline-correction-wrong", "The answer is 48, no wait, 52.", "48", 0.0),
    case("correction-sentence", "The answer is 48. Actually, it is 52.", "52", 1.0),
    case("correction-sentence-wrong", "The answer is 48. Actually, it is 52.", "48", 0.0),
    case("marked-wrong", "So 25 is incorrect. The answer is 27.", "25", 0.0),
    case("corrected-hash", "Total: 30\n#### 30\nWait, I forgot the tax: 30 + 3 = 33.\n#### 33", "30", 0.0),
    case("corrected-hash-right", "Total: 30\n#### 30\nWait, I forgot the tax: 30 + 3 = 33.\n#### 33", "33", 1.0),
    case("check-after-answer", "The answer is 40. Wait, let me check: 8 * 5 = 40. Yes.", "40", 1.0),
    # expression results: the value after the last "="
    case("phrase-expression", "The answer is 4 * 12 = 48.", "48", 1.0),
    case("phrase-expression-wrong", "The answer is 4 * 12 = 48.", "4", 0.0),
    case("phrase-expression-units", "The answer is 120 / 8 = 15 pages per day.", "15", 1.0),
    case("hash-expression", "#### 7 + 8 = 15", "15", 1.0),
    case("boxed-expression", "$\\boxed{3 \\times 5 = 15}$", "15", 1.0),
    case("subtraction-result", "The answer is 9 - 4 = 5 marbles.", "9", 0.0),
    case("bare-expression", "The answer is 6 x 7.", "42", 1.0),
    case("bare-expression-wrong", "The answer is 6 x 7.", "6", 0.0),
    case("expression-brackets-units", "So the answer is \\(3 \\times (4 + 5)\\) apples.", "27", 1.0),
    # amounts restated as decimals
    case("dollars-cents-restated", "The answer is 7 dollars and 50 cents, i.e. $7.50.", "7.5", 1.0),
    case("dollars-cents", "The answer is 3 dollars and 5 cents.", "3.05", 1.0),
    case("dollars-cents-wrong", "The answer is 15 dollars and 75 cents.", "15", 0.0),
    case("dollar-sign-and-cents", "The answer is $4 and 20 cents.", "4.2", 1.0),
    case("hours-restated", "The answer is 2 hours and 30 minutes, i.e. 2.5 hours.", "2.5", 1.0),
    case("that-is-restated", "The answer is half a dollar, that is 0.50.", "0.5", 1.0),
    # unit exponents are not quantities
    case("exponent-caret", "The area of the garden is 12 * 9 = 108 m^2.", "108", 1.0),
    case("exponent-caret-wrong", "The area of the garden is 12 * 9 = 108 m^2.", "2", 0.0),
    case("exponent-superscript", "So the floor covers 56 ft\u00b2.", "56", 1.0),
    case("exponent-cube", "The volume is 4 * 5 * 6 = 120 cm^3.", "120", 1.0),
    case("exponent-latex", "The answer is 81 \\text{ cm}^{2}.", "81", 1.0),
    case("exponent-boxed", "\\boxed{64\\text{ m}^2}", "64", 1.0),
    # mixed numbers
    case("hash-mixed", "#### 3 1/2", "3.5", 1.0),
    case("hash-mixed-not-glued", "#### 3 1/2", "15.5", 0.0),
    case("phrase-mixed", "The answer is 5 3/4 pounds.", "5.75", 1.0),
    case("mixed-with-and", "He walks 1 and 1/3 miles in total.", "4/3", 1.0),
    case("latex-mixed", "The answer is 2\\frac{1}{4} cups.", "2.25", 1.0),
    case("unicode-mixed", "#### 2\u00bd", "2.5", 1.0),
    case("negative-mixed", "#### -1 1/4", "-1.25", 1.0),
    # fractions and decimals without a leading zero
    case("fraction", "The answer is 3/4 of the pizza.", "0.75", 1.0),
    case("fraction-sentence-end", "The answer is 5/8.", "0.625", 1.0),
    case("fraction-wrong", "The answer is 5/8.", "5", 0.0),
    case("leading-dot", "The answer is .75", "0.75", 1.0),
    case("leading-dot-wrong", "The answer is .75", "75", 0.0),
    case("negative-fraction", "#### -2/5", "-0.4", 1.0),
    case("latex-fraction", "\\boxed{\\dfrac{9}{4}}", "2.25", 1.0),
    # $ % and thousands separators
    case("dollars-thousands", "The answer is $12,500.", "12500", 1.0),
    case("percent", "She saves 35% of her salary.\n#### 35%", "35", 1.0),
    case("millions-cents", "#### $1,234,567.89", "1234567.89", 1.0),
    case("negative-dollars", "The answer is -$45.", "-45", 1.0),
    case("latex-thousands", "\\boxed{1{,}250}", "1250", 1.0),
    case("thousands-near-miss", "#### 10,001", "10000", 0.0),
    case("european-comma", "The answer is 2,50.", "2.5", 0.0),
    case("k-suffix", "The answer is 5k.", "5000", 1.0),
    case("scale-word", "The prize is 2.5 million dollars.", "2500000", 1.0),
    case("time-on-the-hour", "She should leave at 7:00 am.\n#### 7", "7", 1.0),
    case("time-phrase", "The answer is 3:00 pm.", "3", 1.0),
    # text after a completed "#### N" that starts a new question is ignored
    case("runoff-header", "6 * 4 = 24\n#### 24\n\nQuestion: Ben has 3 cats and 2 dogs. How many "
         "pets does he have?\nAnswer: 3 + 2 = 5\n#### 5", "24", 1.0),
    case("runoff-header-wrong", "6 * 4 = 24\n#### 24\n\nQuestion: Ben has 3 cats and 2 dogs. How "
         "many pets does he have?\nAnswer: 3 + 2 = 5\n#### 5", "5", 0.0),
    case("runoff-question-mark", "#### 24\nLily buys 7 pens and loses 2. How many pens does she "
         "have left?\n7 - 2 = 5\n#### 5", "24", 1.0),
    case("runoff-problem-number", "#### 81\n\nProblem 2. A farmer has 14 cows.\n#### 14", "81", 1.0),
    case("runoff-boxed", "\\boxed{12}\n\nQuestion: what is 2 + 2?\nThe answer is 4.", "12", 1.0),
    case("no-runoff-self-correction", "#### 24\nOops, 6 * 5 = 30.\n#### 30", "30", 1.0),
    # boxed answers: the last statement wins, whatever its kind
    case("boxed-dollar", "Therefore the total is $\\boxed{\\$42}$ dollars.", "42", 1.0),
    case("boxed-then-phrase", "\\boxed{42} is what I first got, but the answer is 44.", "44", 1.0),
    case("boxed-then-phrase-wrong", "\\boxed{42} is what I first got, but the answer is 44.", "42", 0.0),
    case("phrase-then-boxed", "The answer is 44.\n\nFinal: \\boxed{42}", "42", 1.0),
    case("boxed-unclosed", "The total is 17.\n\\boxed{", "17", 1.0),
    # nothing stated: the last number that is not denied
    case("fallback-negated", "She needs 12 boxes, not 10.", "10", 0.0),
    case("fallback-wrong-then-right", "I first wrote 14 but that is wrong; the total is 16.", "16", 1.0),
    case("words-only", "The answer is nineteen.", "19", 0.0, UNPARSEABLE),
]


@pytest.mark.parametrize("completion, gold, reward, status", HAND_GRADED)
def test_hand_graded_completion(completion, gold, reward, status):
    verdict = verify_number(completion, gold)
    assert (verdict.reward, verdict.status) == (reward, status), verdict


# ---- the pure pieces ------------------------------------------------------------------------------
@pytest.mark.parametrize("text, values", [
    ("2 1/4 and 3/4", [2.25, 0.75]),
    ("3 12/4", [3.0, 3.0]),             # improper: not a mixed number
    ("5/0", [5.0, 0.0]),
    ("1,234 and 12,3456", [1234.0, 12.0, 3456.0]),
    ("12-3=9", [12.0, 3.0, 9.0]),
    ("-7 and .5", [-7.0, 0.5]),
    ("4:30", [4.5]),
    ("9 dollars 5 cents, 1,200 dollars and 50 cents", [9.05, 1200.5]),
    ("5k runs, 5 km, 5kg", [5000.0, 5.0, 5.0]),
    ("3 thousand", [3000.0]),
])
def test_quantities(text, values):
    assert quantities(text) == pytest.approx(values)


def test_normalize_drops_unit_exponents_but_not_powers():
    assert quantities(normalize_number_text("5^2 = 25 cm^2 and 9 m\u00b2")) == [5, 2, 25, 9]


def test_expression_value_reads_plain_arithmetic_only():
    assert expression_value("3 x (4 + 5) apples") == 27
    assert expression_value("1,000 \u00f7 8") == 125
    assert expression_value("17 18") is None           # two numbers, no operator
    assert expression_value("2**10") is None           # powers are not evaluated
    assert expression_value("5 / 0") is None
    assert expression_value("(" * 500 + "1" + ")" * 500) in (1.0, None)  # deep nesting never raises
    assert expression_value("__import__('os')") is None


def test_drop_negated_and_clause_value():
    assert quantities(drop_negated("not 2 1/4 but 3, and 7 is wrong")) == [3]
    assert clause_value(" 6 + 9 = 15. Then 20.") == 15
    assert clause_value("15 = 6 + 9") == 15
    assert clause_value("(3/4)") == 0.75      # an aside that holds the only number counts
    assert clause_value("no number") is None


def test_drop_runoff_cuts_only_after_a_completed_answer():
    text = "#### 5\nQuestion: 2 + 2?\n#### 4"
    assert drop_runoff(text) == "#### 5"
    assert drop_runoff("####\nQ: 2 + 2?\n#### 4") == "####\nQ: 2 + 2?\n#### 4"
    assert drop_runoff("#### 5\nWait, is that right? 3 + 3 = 6\n#### 6").endswith("#### 6")


# ---- every GSM8K gold solution scores 1 ---------------------------------------------------------
@pytest.fixture(scope="module")
def gsm8k_dir():
    try:
        path = shared_path() / "data" / "gsm8k"
    except FileNotFoundError as error:
        pytest.skip(f"GSM8K data absent: {error}")
    if not path.is_dir():
        pytest.skip(f"GSM8K data absent: no folder {path}")
    return path


@pytest.mark.parametrize("split, rows", [("test", 1319), ("train", 7473)])
def test_every_gold_scores_one_against_its_own_solution(gsm8k_dir, split, rows):
    task = get_task("gsm8k")
    examples = task.load(split, gsm8k_dir)
    assert len(examples) == rows
    raw = [json.loads(line)["answer"] for line in (gsm8k_dir / task.local_files[split]).open()]
    failures = [(e.answer, e.solution[-80:]) for e, solution in zip(examples, raw)
                if task.verify(e.solution, e).reward != 1.0 or verify_number(solution, e.answer).reward != 1.0]
    assert not failures, f"{len(failures)} gold solutions do not score 1, e.g. {failures[:3]}"


# ---- property: a different final answer scores 0 whatever came before ---------------------------
# Integers up to 1e8 and amounts in cents up to 1e6: two distinct values always differ by more
# than the verifier's tolerance.
_VALUES = st.one_of(st.integers(-10**8, 10**8).map(float),
                    st.integers(-10**8, 10**8).map(lambda cents: cents / 100))
_FILLER = st.text(alphabet=string.ascii_lowercase + "  ,", max_size=40)


def spell(value: float, style: str) -> str:
    """``value`` written the way a completion might: plain, with commas, as dollars, a percent,
    with a unit."""
    plain = f"{value:.0f}" if value.is_integer() else f"{value:.2f}"
    if style == "commas":
        return f"{value:,.0f}" if value.is_integer() else f"{value:,.2f}"
    if style == "dollars":
        return ("-$" if value < 0 else "$") + plain.lstrip("-")
    return {"plain": plain, "percent": plain + "%", "unit": plain + " cm^2"}[style]


_STYLES = st.sampled_from(["plain", "commas", "dollars", "percent", "unit"])
# Ways the earlier text may mention the gold answer (no question mark: that would start a new
# problem after a "#### N" line, see the runoff cases).
MENTIONS = ["The answer is {g}.", "#### {g}", "\\boxed{{{g}}}", "I think it is {g}",
            "{a} + {b} = {g}", "The answer is {g}, i.e. {g}.", "It is not {o}, it is {g}.",
            "Answer: {g}", "So the answer is {a} * {b} = {g}.", "{g}"]
# Ways the completion may state its (different) final answer.
FINALS = ["#### {o}", "The answer is {o}.", "The final answer is $\\boxed{{{o}}}$.", "\\boxed{{{o}}}",
          "Actually, it is {o}.", "So the answer is {a} + {b} = {o}.", "Answer: {o}",
          "The answer is not {g}, it is {o}."]


@settings(max_examples=300, deadline=None)
@given(gold=_VALUES, other=_VALUES, styles=st.tuples(_STYLES, _STYLES),
       mentions=st.lists(st.tuples(st.sampled_from(MENTIONS), _FILLER), min_size=1, max_size=4),
       final=st.sampled_from(FINALS), operands=st.tuples(st.integers(1, 99), st.integers(1, 99)))
def test_a_different_final_answer_never_scores(gold, other, styles, mentions, final, operands):
    assume(not math.isclose(gold, other, abs_tol=1e-3))
    g, o = spell(gold, styles[0]), spell(other, styles[1])
    a, b = operands
    lines = [f"{filler} {template.format(g=g, o=o, a=a, b=b)}" for template, filler in mentions]
    completion = "\n".join(lines + [final.format(g=g, o=o, a=a, b=b)])
    verdict = verify_number(completion, f"{gold:.2f}")
    assert verdict.reward == 0.0 and verdict.status == OK, (completion, verdict)
    assert verify_number(completion, f"{other:.2f}").reward == 1.0, completion


@settings(max_examples=200, deadline=None)
@given(gold=_VALUES, other=_VALUES, style=_STYLES, filler=_FILLER,
       operands=st.tuples(st.integers(1, 99), st.integers(1, 99)))
def test_without_statements_the_last_number_decides(gold, other, style, filler, operands):
    assume(not math.isclose(gold, other, abs_tol=1e-3))
    a, b = operands
    completion = (f"At first {spell(gold, style)} {filler}, and {a} + {b} = {spell(gold, style)}.\n"
                  f"So she has {spell(other, style)} left.")
    assert verify_number(completion, f"{gold:.2f}").reward == 0.0, completion
    assert verify_number(completion, f"{other:.2f}").reward == 1.0, completion


_PIECES = list("0123456789 ,./:-+*x=()$%#?\n{}\\^kQ") + [
    "answer is ", "####", "\\boxed{", "not ", "i.e. ", "Actually, ", "Question: ", "\\frac{", " and ",
    " dollars", " cents", "\u00bd", "\u00b2"]


@settings(max_examples=200, deadline=None)
@given(pieces=st.lists(st.sampled_from(_PIECES), max_size=40))
def test_any_text_gives_a_number_or_unparseable_and_never_raises(pieces):
    verdict = verify_number("".join(pieces), "7")
    assert verdict.status in (OK, UNPARSEABLE)
    assert (verdict.prediction is None) == (verdict.status == UNPARSEABLE)


@pytest.mark.parametrize("completion", [
    "answer is " * 500, "\\boxed{" * 2000, "answer is (" + "a" * 5000, "answer is " + "9" * 5000,
    "answer is " + "1," * 3000, "not 5 " * 2000, ("The answer is 5.\n" + "x " * 50 + "\n") * 200,
], ids=["phrases", "boxes", "open-paren", "digits", "commas", "negations", "many-lines"])
def test_degenerate_completions_are_read_in_bounded_time(completion):
    # RL policies produce such loops; each of these took 2-50 s before the work was bounded
    # (reading a clause at most CLAUSE_CHARS far, one pass over braces, no quadratic regexes).
    start = time.perf_counter()
    verify_number(completion, "5")
    assert time.perf_counter() - start < 5.0
