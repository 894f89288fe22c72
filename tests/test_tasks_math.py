"""GSM8K and MATH-500 verifiers: hand-written tricky outputs and gold self-checks on real data."""
import pytest

from jaxdistill.tasks import OK, UNPARSEABLE, get_task, summarize
from jaxdistill.tasks.gsm8k import extract_answer, gold_from_solution, verify_number

# (model output, gold, expected reward, expected status)
GSM8K_CASES = [
    ("The answer is 18.", "18", 1.0, OK),
    ("The answer is 18", "18", 1.0, OK),
    ("#### 18", "18", 1.0, OK),
    ("####18", "18", 1.0, OK),
    ("She makes 9 * 2 = $18 every day.\n#### 18", "18", 1.0, OK),
    ("So the final answer is $\\boxed{18}$.", "18", 1.0, OK),
    ("\\boxed{18.00}", "18", 1.0, OK),
    ("\\boxed{\\$18}", "18", 1.0, OK),
    ("\\boxed{1{,}234}", "1234", 1.0, OK),
    ("\\boxed{1,234}", "1234", 1.0, OK),
    ("The answer is 1,234,567.", "1234567", 1.0, OK),
    ("The answer is $1,000.50", "1000.5", 1.0, OK),
    ("The answer is 25%.", "25", 1.0, OK),
    ("The answer is -5.", "-5", 1.0, OK),
    ("The temperature drops to \u22125 degrees.", "-5", 1.0, OK),
    ("He owes -$20.", "-20", 1.0, OK),
    ("The answer is 0.5", "0.5", 1.0, OK),
    ("The answer is .5", "0.5", 1.0, OK),
    ("\\boxed{\\frac{1}{2}}", "0.5", 1.0, OK),
    ("\\boxed{3/4}", "0.75", 1.0, OK),
    ("\\boxed{18 \\text{ dollars}}", "18", 1.0, OK),
    ("It costs 18 dollars in total.", "18", 1.0, OK),
    ("The trip is 120km long.", "120", 1.0, OK),
    ("20 + 27 = 47, then 47 * 3 = 141.", "141", 1.0, OK),
    ("12-3=9", "9", 1.0, OK),
    ("I first thought 12, then 15, finally 17.", "17", 1.0, OK),
    # "answer is" beats the last number; the last statement (box, phrase, ####) wins
    ("The answer is 18. Check: 18 - 3 = 15.", "18", 1.0, OK),
    ("\\boxed{17} was wrong, so \\boxed{18}. 3 more apples.", "18", 1.0, OK),
    ("\\boxed{18}\nThe answer is 20.", "20", 1.0, OK),
    ("#### 18\nThe answer is not obvious.", "18", 1.0, OK),
    ("The answer is\n\n18 apples", "18", 1.0, OK),
    ("The answer is: **42**", "42", 1.0, OK),
    # think blocks are ignored
    ("<think>maybe 99</think>The answer is 18.", "18", 1.0, OK),
    ("<think>The answer is 99</think>so 18", "18", 1.0, OK),
    ("reasoning about 99 ... </think> 18", "18", 1.0, OK),
    ("<THINK>40</THINK> 41", "41", 1.0, OK),
    # wrong answers are parsed and score 0
    ("The answer is 17.", "18", 0.0, OK),
    ("\\boxed{18.5}", "18", 0.0, OK),
    ("#### -18", "18", 0.0, OK),
    ("The answer is 1,800.", "18", 0.0, OK),
    ("8 + 10 = 18 and then I add 1 to get 19.", "18", 0.0, OK),
    # nothing to read
    ("I don't know.", "18", 0.0, UNPARSEABLE),
    ("", "18", 0.0, UNPARSEABLE),
    ("<think>18</think>", "18", 0.0, UNPARSEABLE),
    ("<think>still thinking about 18 and", "18", 0.0, UNPARSEABLE),
    ("The answer is eighteen.", "18", 0.0, UNPARSEABLE),
    ("\\boxed{", "18", 0.0, UNPARSEABLE),
]


@pytest.mark.parametrize("completion, gold, reward, status", GSM8K_CASES)
def test_gsm8k_verifier_cases(completion, gold, reward, status):
    verdict = verify_number(completion, gold)
    assert (verdict.reward, verdict.status) == (reward, status), verdict


def test_gsm8k_extraction_sources():
    assert extract_answer("\\boxed{7} and 8")[1] == "boxed"
    assert extract_answer("answer is 7; 8")[1] == "marker"
    assert extract_answer("7 and 8") == (8.0, "last_number")
    assert extract_answer("nothing") == (None, "none")
    # thousands commas need groups of exactly three digits
    assert extract_answer("1, 2, 3")[0] == 3.0
    assert extract_answer("12,3456")[0] == 3456.0


def test_gsm8k_every_test_row_parses_and_its_gold_solution_scores_one(shared_dir):
    task = get_task("gsm8k")
    examples = task.load("test", shared_dir / "data" / "gsm8k")
    assert len(examples) == 1319
    verdicts = [task.verify(e.solution, e) for e in examples]
    assert all(v.status == OK for v in verdicts)
    assert summarize(verdicts)["accuracy"] == 1.0
    # the SFT target has no calculator annotations and keeps its "#### N" line; some golds are
    # written "#### 2,125" and normalise to "2125"
    assert all("<<" not in e.solution and gold_from_solution(e.solution) == e.answer
               for e in examples)
    assert sum("," in e.solution.rsplit("####", 1)[1] for e in examples) > 0


def test_gsm8k_prompt_formats():
    task = get_task("gsm8k")
    example = task.parse_row({"question": "What is 2+2?", "answer": "2+2=<<2+2=4>>4\n#### 4"})
    assert example.solution == "2+2=4\n#### 4" and example.answer == "4"
    assert task.format_prompt(example).startswith("What is 2+2?\n\n")
    assert task.format_prompt(example).endswith("'####'.\n")
    messages = task.chat_messages(example, system="Be brief.")
    assert [m["role"] for m in messages] == ["system", "user"]
    assert "What is 2+2?" in messages[1]["content"]


# MATH-500 through math-verify: (model output, gold answer, expected reward, expected status)
MATH_CASES = [
    ("The answer is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}", 1.0, OK),
    ("$\\boxed{0.5}$", "\\frac{1}{2}", 1.0, OK),
    ("$\\boxed{\\dfrac{2}{4}}$", "\\frac{1}{2}", 1.0, OK),
    ("$\\boxed{1/2}$", "\\frac{1}{2}", 1.0, OK),
    ("$\\boxed{\\frac{1}{3}}$", "\\frac{1}{2}", 0.0, OK),
    ("$\\boxed{(3, \\frac{\\pi}{2})}$", "\\left( 3, \\frac{\\pi}{2} \\right)", 1.0, OK),
    ("$\\boxed{(3,\\pi/2)}$", "\\left( 3, \\frac{\\pi}{2} \\right)", 1.0, OK),
    ("$\\boxed{(\\pi/2, 3)}$", "\\left( 3, \\frac{\\pi}{2} \\right)", 0.0, OK),
    ("$\\boxed{2\\sqrt{2}}$", "2\\sqrt{2}", 1.0, OK),
    ("$\\boxed{\\sqrt{8}}$", "2\\sqrt{2}", 1.0, OK),
    ("$\\boxed{\\sqrt{2}}$", "2\\sqrt{2}", 0.0, OK),
    ("$\\boxed{x^2+2x+1}$", "(x+1)^2", 1.0, OK),
    ("$\\boxed{x^2+1}$", "(x+1)^2", 0.0, OK),
    ("$\\boxed{10}$", "10", 1.0, OK),
    ("$\\boxed{10.0}$", "10", 1.0, OK),
    ("$\\boxed{-10}$", "10", 0.0, OK),
    ("The final answer is $\\boxed{5}$. I hope it is correct.", "5", 1.0, OK),
    ("Therefore the answer is $5$.", "5", 1.0, OK),
    ("<think>maybe $\\boxed{4}$</think> The answer is $\\boxed{5}$.", "5", 1.0, OK),
    ("<think>it is $\\boxed{5}$</think> The answer is $\\boxed{4}$.", "5", 0.0, OK),
    ("$\\boxed{\\pi}$", "\\pi", 1.0, OK),
    ("$\\boxed{3.14159}$", "\\pi", 0.0, OK),
    ("$\\boxed{\\frac{\\sqrt{3}}{2}}$", "\\frac{\\sqrt{3}}{2}", 1.0, OK),
    ("$\\boxed{\\sin(\\pi/3)}$", "\\frac{\\sqrt{3}}{2}", 1.0, OK),
    ("$\\boxed{\\{1, 2, 3\\}}$", "\\{1,2,3\\}", 1.0, OK),
    ("$\\boxed{\\{3, 2, 1\\}}$", "\\{1,2,3\\}", 1.0, OK),
    ("$\\boxed{[1, 4]}$", "[1,4]", 1.0, OK),
    ("$\\boxed{(1, 4)}$", "[1,4]", 0.0, OK),
    ("$\\boxed{90^\\circ}$", "90^\\circ", 1.0, OK),
    ("$\\boxed{50\\%}$", "50\\%", 1.0, OK),
    ("$\\boxed{\\text{(C)}}$", "\\text{(C)}", 1.0, OK),
    ("$\\boxed{\\text{(D)}}$", "\\text{(C)}", 0.0, OK),
    ("$\\boxed{1,000}$", "1000", 1.0, OK),
    ("$\\boxed{x=3}$", "3", 1.0, OK),
    ("$\\boxed{\\frac{7}{4}}$", "1.75", 1.0, OK),
    ("$\\boxed{2^{10}}$", "1024", 1.0, OK),
    ("$\\boxed{1023}$", "1024", 0.0, OK),
    ("$\\boxed{\\infty}$", "\\infty", 1.0, OK),
    ("I cannot solve this.", "5", 0.0, UNPARSEABLE),
    ("", "5", 0.0, UNPARSEABLE),
    ("<think>the answer is $\\boxed{5}$</think>", "5", 0.0, UNPARSEABLE),
    ("\\boxed{", "5", 0.0, UNPARSEABLE),
]


@pytest.mark.parametrize("completion, gold, reward, status", MATH_CASES)
def test_math500_verifier_cases(completion, gold, reward, status):
    verdict = get_task("math500").verify(completion, _math_example(gold))
    assert (verdict.reward, verdict.status) == (reward, status), verdict


def _math_example(answer):
    from jaxdistill.tasks import Example

    return Example(prompt="?", solution="", answer=answer)


def test_math500_gold_solutions_score_one(shared_dir):
    task = get_task("math500")
    examples = task.load("test", shared_dir / "data" / "math500")
    assert len(examples) == 500
    verdicts = [task.verify(e.solution, e) for e in examples]
    assert summarize(verdicts)["accuracy"] >= 0.999


def test_math500_runs_outside_the_main_thread():
    # math-verify's signal-based timeout only works in the main thread; ours must not raise.
    from concurrent.futures import ThreadPoolExecutor

    task = get_task("math500")
    with ThreadPoolExecutor(1) as pool:
        verdict = pool.submit(task.verify, "$\\boxed{\\frac{1}{2}}$", _math_example("0.5")).result()
    assert (verdict.reward, verdict.status) == (1.0, OK)
