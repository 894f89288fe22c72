"""GSM8K: grade-school word problems with a numeric answer after ``####``.

Answer extraction (docs/design.md section 3), in this order; the first rule that yields a number wins:

1. drop ``<think>`` blocks (``strip_thinking``);
2. the content of the last ``\\boxed{...}`` (balanced braces; ``\\frac{a}{b}`` and ``a/b`` read as
   fractions);
3. the text right after the last "answer is" or "####" (up to the end of that line);
4. the last number anywhere.

Numbers are normalised before comparing: ``$`` and ``%`` dropped, thousands commas removed
(``1,234`` but not ``1, 2``), unicode minus read as ``-``; a minus sign right after a digit is a
subtraction, not a sign (``12-3`` reads 12 and 3). Prediction and gold are compared as floats with
a small tolerance. No number at all: status ``unparseable``, reward 0.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from jaxdistill.tasks.base import OK, UNPARSEABLE, Example, MalformedRow, Task, Verdict, \
    require_str, strip_thinking

# A signed decimal number with optional thousands commas. The sign is only taken when the minus
# does not follow a digit or a dot ("12-3" is a subtraction).
_NUMBER = re.compile(r"(?<![\d.])-?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
                     r"|(?<![\d.])-?\.\d+")
_FRACTION = re.compile(r"^(-?\d+(?:\.\d+)?)/(-?\d+(?:\.\d+)?)$")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d.,]+)\s*\}\s*\{\s*(-?[\d.,]+)\s*\}")
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}")
_MARKER = re.compile(r"answer is|####", flags=re.IGNORECASE)
_CALC_ANNOTATION = re.compile(r"<<[^<>]*>>")

# LaTeX thousands separators ("1{,}000", "1\\,000") become plain commas or nothing.
_REPLACEMENTS = (("\u2212", "-"), ("\u2013", "-"), ("-\\$", "-"), ("-$", "-"), ("\\$", " "),
                 ("$", " "), ("\\%", " "), ("%", " "), ("{,}", ","), ("\\,", ""), ("\\!", ""),
                 ("\\left", ""), ("\\right", ""))

REL_TOL = 1e-6
ABS_TOL = 1e-6


def normalize_number_text(text: str) -> str:
    """Drop currency, percent and LaTeX spacing so that the number regex sees plain digits."""
    text = _LATEX_TEXT.sub(r" \1 ", text)
    text = _LATEX_FRAC.sub(r"\1/\2", text)
    for old, new in _REPLACEMENTS:
        text = text.replace(old, new)
    return text


def to_float(number: str) -> float:
    """A matched number string ("1,234.5", "-7", ".5") as a float."""
    return float(number.replace(",", ""))


def numbers_in(text: str) -> list[float]:
    """Every number in ``text`` in order, after ``normalize_number_text``."""
    return [to_float(m.group(0)) for m in _NUMBER.finditer(normalize_number_text(text))]


def first_number(text: str) -> float | None:
    """The first number in ``text``; a whole-string fraction ``a/b`` or ``\\frac{a}{b}`` is a/b."""
    text = normalize_number_text(text).strip().rstrip(".").strip()
    fraction = _FRACTION.match(text.replace(" ", "").replace(",", ""))
    if fraction and float(fraction.group(2)) != 0:
        return float(fraction.group(1)) / float(fraction.group(2))
    match = _NUMBER.search(text)
    return to_float(match.group(0)) if match else None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (braces balanced), else None.

    ``\\boxed 18`` (no braces) gives the next run of non-space characters."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)", text)]
    if not starts:
        return None
    rest = text[starts[-1]:].lstrip()
    if not rest.startswith("{"):
        token = re.match(r"[^\s$]+", rest)
        return token.group(0) if token else None
    depth = 0
    for i, char in enumerate(rest):
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return rest[1:i]
    return None  # unbalanced: the model was cut off inside the box


def after_last_marker(text: str) -> float | None:
    """The first number on the line after the last "answer is"/"####" that has one."""
    for marker in reversed(list(_MARKER.finditer(text))):
        line = text[marker.end():].lstrip().split("\n", 1)[0]
        value = first_number(line)
        if value is not None:
            return value
    return None


def extract_answer(completion: str) -> tuple[float | None, str]:
    """(number, where it was found: "boxed" | "marker" | "last_number" | "none")."""
    text = strip_thinking(completion)
    boxed = last_boxed(text)
    if boxed is not None:
        value = first_number(boxed)
        if value is not None:
            return value, "boxed"
    value = after_last_marker(text)
    if value is not None:
        return value, "marker"
    numbers = numbers_in(text)
    if numbers:
        return numbers[-1], "last_number"
    return None, "none"


def numbers_match(prediction: float, gold: float) -> bool:
    return math.isclose(prediction, gold, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def format_number(value: float) -> str:
    """18.0 -> "18", 2.5 -> "2.5"."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def verify_number(completion: str, gold: str) -> Verdict:
    """The GSM8K verifier: reward 1.0 iff the extracted number equals ``gold`` numerically."""
    gold_value = first_number(gold)
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
    value = first_number(solution.rsplit("####", 1)[1])
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
