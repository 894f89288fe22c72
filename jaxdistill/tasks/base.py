"""The common interface every task speaks: examples, verdicts and the Task base class.

calibrate / distill / evaluate only ever touch these names:

- ``Example``: one problem (``prompt``), its reference ``solution`` text for SFT, the gold
  ``answer`` and task-specific ``meta`` (choices, aliases, instruction ids, the arith problem, ...).
- ``Task.format_prompt(example)`` (plain text) and ``Task.chat_messages(example)`` (for a chat
  template) say how the problem is shown to a model; the completion follows the prompt.
- ``Task.verify(completion, example) -> Verdict``: ``reward`` in [0, 1], a parse ``status`` and
  task-specific ``details`` (token F1, loose IFEval scores, where the answer was found ...).
- ``summarize(verdicts)``: accuracy, the unparseable rate reported apart, and mean details.
"""
from __future__ import annotations

import abc
import dataclasses
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxdistill.tasks.loading import MalformedRow, load_examples

# Parse statuses. Only OK and UNPARSEABLE occur for the answer-matching tasks; TIMEOUT and ERROR
# come from math-verify; UNSUPPORTED marks IFEval prompts none of whose instructions we can check.
OK = "ok"
UNPARSEABLE = "unparseable"
TIMEOUT = "timeout"
ERROR = "error"
UNSUPPORTED = "unsupported"
STATUSES = (OK, UNPARSEABLE, TIMEOUT, ERROR, UNSUPPORTED)


@dataclasses.dataclass(frozen=True)
class Example:
    """One task item. ``solution`` is the SFT target ("" when the task has none, e.g. IFEval)."""

    prompt: str
    solution: str
    answer: str
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Verdict:
    """What a verifier says about one completion.

    ``reward`` is in [0, 1]. ``status`` is one of ``STATUSES``. ``prediction`` is the answer the
    verifier read from the completion (None when nothing could be read). ``details`` holds extra
    per-completion metrics (floats) that ``summarize`` averages.
    """

    reward: float
    status: str
    prediction: str | None = None
    details: Mapping[str, float] = dataclasses.field(default_factory=dict)


class Task(abc.ABC):
    """Base class: subclasses set the class attributes and implement ``parse_row`` and ``verify``.

    ``hub_name``/``hub_config``/``hub_splits`` say where ``load`` finds the data on the HF hub when
    no local path is given; ``local_files`` maps a split to the file name expected inside a local
    data folder (the layout of ../shared/data).
    """

    name: str = ""
    hub_name: str | None = None
    hub_config: str | None = None
    hub_splits: Mapping[str, str] = {}
    local_files: Mapping[str, str] = {}
    instruction: str = ""

    def __init__(self, instruction: str | None = None):
        if instruction is not None:
            self.instruction = instruction

    # ---- data -------------------------------------------------------------------------------
    @abc.abstractmethod
    def parse_row(self, row: Mapping[str, Any]) -> Example:
        """One data row -> an Example (raise MalformedRow for a bad row)."""

    def load(self, split: str = "test", path: str | Path | None = None, *,
             limit: int | None = None) -> list[Example]:
        """Examples of ``split``: from ``path`` (a JSONL/parquet file or a data folder) when given,
        else from the HF hub. Malformed rows are skipped, counted and warned about once."""
        return load_examples(self, split, path, limit=limit)

    # ---- prompts ----------------------------------------------------------------------------
    def user_text(self, example: Example) -> str:
        """The problem followed by the task instruction (one blank line apart)."""
        if not self.instruction:
            return example.prompt
        return f"{example.prompt}\n\n{self.instruction}"

    def format_prompt(self, example: Example) -> str:
        """Plain-text prompt for a base model; the completion is appended right after it."""
        return self.user_text(example) + "\n"

    def chat_messages(self, example: Example, system: str | None = None) -> list[dict[str, str]]:
        """Messages for ``tokenizer.apply_chat_template(..., add_generation_prompt=True)``."""
        messages = [{"role": "system", "content": system}] if system else []
        return messages + [{"role": "user", "content": self.user_text(example)}]

    def sample_solution(self, example: Example, rng) -> str:
        """A solution to train on; tasks with several valid styles (arith) draw one with ``rng``
        (a ``numpy.random.Generator``), the others return the reference solution."""
        return example.solution

    # ---- scoring ----------------------------------------------------------------------------
    @abc.abstractmethod
    def verify(self, completion: str, example: Example) -> Verdict:
        """Score one completion: reward in [0, 1] and a parse status."""

    def rewards(self, completions: Sequence[str], examples: Sequence[Example]) -> list[float]:
        """``verify(...).reward`` for aligned lists of completions and examples."""
        if len(completions) != len(examples):
            raise ValueError(f"{len(completions)} completions but {len(examples)} examples")
        return [self.verify(c, e).reward for c, e in zip(completions, examples)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def summarize(verdicts: Sequence[Verdict]) -> dict[str, float]:
    """Accuracy (mean reward over scorable completions), rate of each status, mean of each detail.

    Completions with status UNSUPPORTED are left out of accuracy and details: they are neither a
    pass nor a fail. ``unparseable_rate`` is over all completions.
    """
    n = len(verdicts)
    if n == 0:
        return {"n": 0}
    counts = Counter(v.status for v in verdicts)
    scored = [v for v in verdicts if v.status != UNSUPPORTED]
    out: dict[str, float] = {"n": n, "n_scored": len(scored)}
    out["accuracy"] = sum(v.reward for v in scored) / len(scored) if scored else float("nan")
    for status in STATUSES:
        out[f"{status}_rate"] = counts[status] / n
    detail_keys = sorted({k for v in scored for k in v.details})
    for key in detail_keys:
        values = [float(v.details[key]) for v in scored if key in v.details]
        out[key] = sum(values) / len(values)
    return out


_THINK_BLOCK = re.compile(r"<think>.*?</think>", flags=re.DOTALL | re.IGNORECASE)


def strip_thinking(text: str) -> str:
    """Remove reasoning blocks: every closed ``<think>...</think>``; text before a stray
    ``</think>`` (chat templates often put the opening tag in the prompt); and an unclosed
    ``<think>`` with everything after it (the model never finished thinking)."""
    text = _THINK_BLOCK.sub(" ", text)
    lowered = text.lower()
    close = lowered.rfind("</think>")
    if close >= 0:
        text = text[close + len("</think>"):]
        lowered = text.lower()
    start = lowered.find("<think>")
    if start >= 0:
        text = text[:start]
    return text


def require_str(row: Mapping[str, Any], key: str) -> str:
    """``row[key]`` as a non-empty string, else MalformedRow."""
    value = row.get(key) if isinstance(row, Mapping) else None
    if not isinstance(value, str) or not value.strip():
        raise MalformedRow(f"field {key!r} missing or not a non-empty string")
    return value
