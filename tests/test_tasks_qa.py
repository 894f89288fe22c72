"""CommonsenseQA letters and NQ-open EM/F1: tricky outputs and gold self-checks on real data."""
import pytest

from jaxdistill.tasks import OK, UNPARSEABLE, Example, get_task, summarize
from jaxdistill.tasks.qa import normalize_answer, token_f1

CSQA_EXAMPLE = Example(prompt="?", solution="The answer is (B).", answer="B",
                       meta={"choices": {"A": "bank", "B": "library", "C": "mall", "D": "park",
                                         "E": "zoo"}})

# (model output, letter the verifier should read or None)
CSQA_CASES = [
    ("The answer is (B).", "B"),
    ("The answer is B.", "B"),
    ("The answer is B", "B"),
    ("the answer is (b)", "B"),
    ("The answer is: B", "B"),
    ("The answer is **(B)**", "B"),
    ("The answer is: **B**", "B"),
    ("So the answer is (D), not (B).", "D"),
    ("I was unsure between (A) and (C). The answer is (B).", "B"),
    ("The answer is (B). Wait, the answer is (C).", "C"),
    ("(A) is wrong, (C) is wrong, so (B).", "B"),
    ("B", "B"),
    ("B.", "B"),
    ("(B)", "B"),
    ("Answer: B", "B"),
    ("My choice: E", "E"),
    ("A library keeps books, so B", "B"),
    ("A revolving door is found at a bank: the answer is A.", "A"),
    ("A", "A"),
    ("A.", "A"),
    ("Option C fits best.", "C"),
    ("C) mall", "C"),
    ("<think>The answer is (A)</think>The answer is (B).", "B"),
    ("<think>(B) maybe</think> (E)", "E"),
    ("reasoning ... </think> The answer is (C)", "C"),
    ("The answer is (F).", None),
    ("A door is a thing.", None),
    ("I think it is the library.", None),
    ("", None),
    ("The answer is a library.", None),
    ("<think>The answer is (B)</think>", None),
    ("Both are possible.", None),
    ("It's the answer I'd pick.", None),
    ("ABCDE", None),
    ("The answer is (B)", "B"),
    ("answer is (e)", "E"),
    ("The correct choice is D.", "D"),
    ("Between B and C I pick C.", "C"),
    ("The answer is D\n", "D"),
    ("**D**", "D"),
]


@pytest.mark.parametrize("completion, letter", CSQA_CASES)
def test_csqa_letter_extraction(completion, letter):
    verdict = get_task("csqa").verify(completion, CSQA_EXAMPLE)
    assert verdict.prediction == letter
    assert verdict.status == (OK if letter else UNPARSEABLE)
    assert verdict.reward == float(letter == "B")


def test_csqa_gold_self_check_and_prompt(shared_dir):
    task = get_task("csqa")
    examples = task.load("validation", shared_dir / "data" / "commonsenseqa")
    assert len(examples) == 1221
    assert summarize([task.verify(e.solution, e) for e in examples])["accuracy"] >= 0.999
    prompt = task.format_prompt(examples[0])
    assert "(A) bank" in prompt and "(E) new york" in prompt and "The answer is (A)" in prompt


def test_csqa_reads_the_hub_row_layout():
    row = {"id": "x", "question": "Where are books?", "question_concept": "books",
           "choices": {"label": ["A", "B"], "text": ["library", "sea"]}, "answerKey": "A"}
    example = get_task("csqa").parse_row(row)
    assert example.answer == "A" and "(B) sea" in example.prompt


NQ_EXAMPLE = Example(prompt="?", solution="", answer="December 1972",
                     meta={"aliases": ["14 December 1972 UTC", "December 1972"]})

# (model output, expected EM, expected F1 (rounded to 2 places), expected status)
NQ_CASES = [
    ("December 1972", 1.0, 1.0, OK),
    ("december 1972", 1.0, 1.0, OK),
    ("December, 1972.", 1.0, 1.0, OK),
    ("The answer is December 1972.", 1.0, 1.0, OK),
    ("The answer is: December 1972", 1.0, 1.0, OK),
    ("the answer is **December 1972**", 1.0, 1.0, OK),
    ("The answer is \"December 1972\".", 1.0, 1.0, OK),
    ("The answer is 14 December 1972 UTC.", 1.0, 1.0, OK),
    ("14 December 1972 UTC", 1.0, 1.0, OK),
    ("December 1972\nIt was Apollo 17.", 1.0, 1.0, OK),
    ("\n\nDecember 1972", 1.0, 1.0, OK),
    ("<think>maybe 1969</think>December 1972", 1.0, 1.0, OK),
    ("<think>The answer is July 1969</think> The answer is December 1972.", 1.0, 1.0, OK),
    ("1972", 0.0, 0.67, OK),
    ("In December 1972", 0.0, 0.8, OK),
    ("December 1972 UTC", 0.0, 0.86, OK),
    ("December 1969", 0.0, 0.5, OK),
    ("July 1969.", 0.0, 0.0, OK),
    ("Apollo 17", 0.0, 0.0, OK),
    ("I think the answer is 1972", 0.0, 0.67, OK),
    ("It happened in December 1972, with Apollo 17.", 0.0, 0.4, OK),
    ("", 0.0, 0.0, UNPARSEABLE),
    ("   \n  ", 0.0, 0.0, UNPARSEABLE),
    ("The answer is", 0.0, 0.0, UNPARSEABLE),
    ("The answer is .", 0.0, 0.0, UNPARSEABLE),
    ("<think>December 1972</think>", 0.0, 0.0, UNPARSEABLE),
]


@pytest.mark.parametrize("completion, em, f1, status", NQ_CASES)
def test_nq_open_cases(completion, em, f1, status):
    verdict = get_task("nq_open").verify(completion, NQ_EXAMPLE)
    assert (verdict.reward, round(verdict.details["f1"], 2), verdict.status) == (em, f1, status)


# SQuAD normalisation and F1 on their own: (prediction, gold, EM, F1)
SQUAD_CASES = [
    ("The Beatles", "Beatles", 1.0, 1.0),
    ("an apple", "apple", 1.0, 1.0),
    ("A+", "---", 1.0, 1.0),  # both normalise to nothing, as in the SQuAD script
    ("U.S.", "US", 1.0, 1.0),
    ("New   York", "new york", 1.0, 1.0),
    ("the the cat", "cat", 1.0, 1.0),
    ("cat cat", "cat", 0.0, 0.67),
    ("Barack Obama", "Obama", 0.0, 0.67),
    ("Theatre", "the atre", 0.0, 0.0),
    ("42", "forty-two", 0.0, 0.0),
    ("rock 'n' roll", "rock n roll", 1.0, 1.0),
    ("Paris, France", "Paris", 0.0, 0.67),
    ("", "Paris", 0.0, 0.0),
    ("Paris", "", 0.0, 0.0),
]


@pytest.mark.parametrize("prediction, gold, em, f1", SQUAD_CASES)
def test_squad_normalisation(prediction, gold, em, f1):
    assert float(normalize_answer(prediction) == normalize_answer(gold)) == em
    assert round(token_f1(prediction, gold), 2) == f1


@pytest.mark.parametrize("file", ["NQ-open.dev.jsonl", "NQ-open.efficientqa.dev.1.1.jsonl"])
def test_nq_open_gold_self_check(shared_dir, file):
    task = get_task("nq_open")
    examples = task.load("test", shared_dir / "data" / "nq_open" / file)
    assert len(examples) in (3610, 1800)
    verdicts = [task.verify(e.solution, e) for e in examples]
    assert summarize(verdicts)["accuracy"] >= 0.999
    assert all(e.prompt.endswith("?") for e in examples)
