"""GSM8K: grade-school word problems with a numeric answer after ``####``.

The verifier reads the completion's final stated number (``jaxdistill.tasks.answers``: the last
``####``, "answer is"-style phrase, ``\\boxed{}`` or correction that states a number, else the last
number) and compares it with the gold answer as a float, up to float rounding
(``numbers_match``). No number at all: status ``unparseable``, reward 0.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from jaxdistill.tasks.answers import extract_answer, read_number
from jaxdistill.tasks.base import OK, UNPARSEABLE, Example, MalformedRow, Task, Verdict, \
    require_str

_CALC_ANNOTATION = re.compile(r"<<[^<>]*>>")

# Tolerances absorb float rounding only (0.1 + 0.2 matches 0.3, 0.333333 matches 1/3): a relative
# tolerance of 1e-6 would let 109,200,050 match a gold of 109,200,000.
REL_TOL = 1e-9
ABS_TOL = 1e-6


def numbers_match(prediction: float, gold: float) -> bool:
    """|prediction - gold| <= max(REL_TOL * max(|prediction|, |gold|), ABS_TOL)."""
    return math.isclose(prediction, gold, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def format_number(value: float) -> str:
    """18.0 -> "18", 2.5 -> "2.5"."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def verify_number(completion: str, gold: str) -> Verdict:
    """The GSM8K verifier: reward 1.0 iff the extracted number equals ``gold`` numerically."""
    gold_value = read_number(gold)
    if gold_value is None:
        raise ValueError(f"gold answer {gold!r} is not a number")
    value, source = extract_answer(completion)
    if value is None:
        return Verdict(0.0, UNPARSEABLE, None, {})
    correct = numbers_match(value, gold_value)
    return Verdict(1.0 if correct else 0.0, OK, format_number(value),
                   {"from_boxed": float(source == "boxed")})


def gold_from_solution(solution: str) -> str:
    """The text after the last ``####`` of a GSM8K solution, normalised ("1,000" -> "1000")."""
    if "####" not in solution:
        raise MalformedRow("solution has no '####' final answer")
    value = read_number(solution.rsplit("####", 1)[1])
    if value is None:
        raise MalformedRow("no number after '####'")
    return format_number(value)


def clean_solution(solution: str) -> str:
    """A GSM8K solution without its ``<<48/2=24>>`` calculator annotations."""
    return _CALC_ANNOTATION.sub("", solution).strip()


def parse_gsm8k_row(row: Mapping[str, Any]) -> Example:
    """A {question, answer} row, the answer being a solution that ends in "#### N"."""
    question = require_str(row, "question")
    solution = require_str(row, "answer")
    return Example(prompt=question.strip(), solution=clean_solution(solution),
                   answer=gold_from_solution(solution), meta={})


class Gsm8kTask(Task):
    name = "gsm8k"
    hub_name = "openai/gsm8k"
    hub_config = "main"
    hub_splits = {"train": "train", "test": "test"}
    local_files = {"train": "train.jsonl", "test": "test.jsonl"}
    instruction = "Solve the problem step by step. Write the final answer as a number after '####'."

    def parse_row(self, row: Mapping[str, Any]) -> Example:
        return parse_gsm8k_row(row)

    def verify(self, completion: str, example: Example) -> Verdict:
        return verify_number(completion, example.answer)
