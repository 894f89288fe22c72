"""MATH-500: competition problems whose answers are LaTeX expressions, checked with ``math-verify``.

``math_verify.parse`` reads the answer from the completion (``\\boxed{}``, ``$...$``, plain
expressions) and ``math_verify.verify`` decides symbolic equivalence with the gold answer.

Timeout safety: math-verify bounds each call with ``signal.alarm``, which only works in the main
thread. There we pass ``timeout_s``; in any other thread (a grain worker, a thread pool) we pass
None, which math-verify runs without a bound, and rely on its own error handling. A timeout gives
status ``timeout``; an exception while parsing a completion gives ``unparseable``; one while
comparing gives ``error``. All three score 0 and never raise.
"""
from __future__ import annotations

import functools
import threading
from collections.abc import Mapping
from typing import Any

from jaxdistill.tasks.base import ERROR, OK, TIMEOUT, UNPARSEABLE, Example, Task, Verdict, \
    require_str, strip_thinking

DEFAULT_TIMEOUT_S = 5


def _timeout_for_this_thread(timeout_s: int | None) -> int | None:
    return timeout_s if threading.current_thread() is threading.main_thread() else None


@functools.lru_cache(maxsize=4096)
def parse_gold(answer: str, timeout_s: int | None = DEFAULT_TIMEOUT_S) -> tuple:
    """The gold answer string parsed by math-verify (as if it were boxed); cached."""
    from math_verify import LatexExtractionConfig, parse

    return tuple(parse(f"\\boxed{{{answer}}}", extraction_config=[LatexExtractionConfig()],
                       parsing_timeout=_timeout_for_this_thread(timeout_s)))


def verify_math(completion: str, gold_answer: str, timeout_s: int | None = DEFAULT_TIMEOUT_S
                ) -> Verdict:
    """Reward 1.0 iff math-verify finds the completion's answer equivalent to ``gold_answer``."""
    from math_verify import parse, verify
    from math_verify.errors import TimeoutException

    timeout = _timeout_for_this_thread(timeout_s)
    try:
        prediction = parse(strip_thinking(completion), parsing_timeout=timeout,
                           raise_on_error=True)
    except TimeoutException:
        return Verdict(0.0, TIMEOUT)
    except Exception:  # noqa: BLE001 - any failure to read the completion is "unparseable"
        return Verdict(0.0, UNPARSEABLE)
    if not prediction:
        return Verdict(0.0, UNPARSEABLE)
    shown = str(prediction[-1])
    try:
        gold = list(parse_gold(gold_answer, timeout_s))
        correct = verify(gold, prediction, timeout_seconds=timeout, raise_on_error=True)
    except TimeoutException:
        return Verdict(0.0, TIMEOUT, shown)
    except Exception:  # noqa: BLE001
        return Verdict(0.0, ERROR, shown)
    return Verdict(1.0 if correct else 0.0, OK, shown)


class Math500Task(Task):
    name = "math500"
    hub_name = "HuggingFaceH4/MATH-500"
    hub_splits = {"test": "test"}
    local_files = {"test": "test.jsonl"}
    instruction = "Solve the problem step by step. Put the final answer in \\boxed{}."

    def __init__(self, instruction: str | None = None, timeout_s: int | None = DEFAULT_TIMEOUT_S):
        super().__init__(instruction)
        self.timeout_s = timeout_s

    def parse_row(self, row: Mapping[str, Any]) -> Example:
        meta = {key: row[key] for key in ("subject", "level", "unique_id") if key in row}
        return Example(prompt=require_str(row, "problem").strip(),
                       solution=require_str(row, "solution").strip(),
                       answer=require_str(row, "answer").strip(), meta=meta)

    def verify(self, completion: str, example: Example) -> Verdict:
        return verify_math(completion, example.answer, self.timeout_s)
