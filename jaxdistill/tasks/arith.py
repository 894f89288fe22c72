"""arith: a procedural GSM8K-format task small enough for a tiny transformer (docs/design.md section 4).

A problem is a short story over one running count: a start ("Ann has 12 apples." or "Ann has 3
bags with 4 apples in each.") then events that add, take away or multiply ("She gets 5 more.",
"She sells 3.", "She then has 2 times as many."), and a question. Every problem has 2-4
arithmetic steps (the bags start is a step: 3*4=12) over small numbers; totals stay in
[2, max_answer].

Solutions are chain-of-thought ending in ``#### N`` (the GSM8K format, scored by the GSM8K
verifier). Real chain-of-thought admits many valid ways to reach an answer and calibration works by
ranking them, so each problem has many equally valid solution *styles*, the product of independent
features (see ``Style``): operand order, a restated start, steps in words or bare, spaced or tight
arithmetic, two steps merged in one line, an inverse check of the last step, and a closing line.
The gold solution of an example is one style drawn at random; ``solutions(problem)`` renders all.

World versions: v1 (the default) is the above. v2 (``ArithTask(version=2)``) adds *detours* to part of
the gold solutions, each at a rate that is an option (``DetourRates``): a line first written with a
wrong result and corrected (``8*3=23, wait: 8*3=24``), a wrong result carried into the next line
before the redo, a correct computation that feeds nothing, a result written before its derivation
(``24=8*3``) and the final answer written first. Every v2 solution still ends right; problems, splits
and the verifier are those of v1. v3 (``version=3``, this project's extension) keeps one detour alone, the
result before its derivation, in 30% of the lines (``V3_RATES``). ``detour_counts`` parses the detours back
out of any text.

Train and test are disjoint by construction: a problem's arithmetic (start, operations, operands)
is hashed, and the hash alone decides which split may hold it, whatever the seed. Generation is
deterministic in (seed, split, difficulty) and prefix-stable (asking for more keeps the first ones).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import re
import statistics
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from jaxdistill.tasks.base import Example, Task, Verdict
from jaxdistill.tasks.gsm8k import parse_gsm8k_row, verify_number

NAMES = (("Ann", "she"), ("Ben", "he"), ("Mia", "she"), ("Tom", "he"),
         ("Zoe", "she"), ("Sam", "he"), ("Eva", "she"), ("Max", "he"))
ITEMS = ("apples", "pens", "cards", "eggs", "books", "shells", "coins", "stamps")
# Verb phrases of the events, by operation; {k} is the operand.
EVENT_PHRASES = {
    "+": ("gets {k} more", "finds {k} more", "buys {k} more"),
    "-": ("gives away {k}", "loses {k}", "sells {k}"),
    "*": ("then has {k} times as many", "now has {k} times as many"),
}
QUESTIONS = ("How many {item} does {name} have now?",
             "How many {item} does {name} have in the end?")
SPLITS = ("train", "test")
TEST_FRACTION = 0.1  # share of all arithmetic chains that belong to the test split


@dataclasses.dataclass(frozen=True)
class ArithConfig:
    """What a problem may contain. ``difficulty`` presets live in ``DIFFICULTIES``."""

    min_steps: int = 2
    max_steps: int = 3
    max_number: int = 20   # start count and the operands of + and -
    max_factor: int = 4    # multipliers are 2..max_factor
    max_answer: int = 200  # every running total stays in [2, max_answer] (plural nouns)
    p_bags: float = 0.25   # chance that the story starts with bags (a multiplication step)

    def __post_init__(self):
        if not 2 <= self.min_steps <= self.max_steps <= 4:
            raise ValueError(f"steps must satisfy 2 <= min_steps <= max_steps <= 4, got "
                             f"{self.min_steps}..{self.max_steps}")
        if self.max_number < 4 or self.max_factor < 2 or self.max_answer < 2 * self.max_number:
            raise ValueError(f"numbers too small to build problems: {self}")
        if self.p_bags > 0 and self.max_factor * (self.max_number // 2) > self.max_answer:
            raise ValueError(f"bags of up to {self.max_factor} x {self.max_number // 2} exceed "
                             f"max_answer={self.max_answer}")


DIFFICULTIES = {
    1: ArithConfig(min_steps=2, max_steps=2, max_number=10, max_factor=3, max_answer=100,
                   p_bags=0.0),
    2: ArithConfig(min_steps=2, max_steps=3, max_number=20, max_factor=4, max_answer=200,
                   p_bags=0.25),
    3: ArithConfig(min_steps=2, max_steps=4, max_number=50, max_factor=5, max_answer=999,
                   p_bags=0.3),
}


def config_for(difficulty: int | ArithConfig) -> ArithConfig:
    if isinstance(difficulty, ArithConfig):
        return difficulty
    if difficulty not in DIFFICULTIES:
        raise ValueError(f"unknown arith difficulty {difficulty!r}; valid: {sorted(DIFFICULTIES)} "
                         f"or an ArithConfig")
    return DIFFICULTIES[difficulty]


# ---- problems --------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Event:
    op: str      # "+", "-" or "*"
    amount: int
    phrase: int  # index into EVENT_PHRASES[op]

    def verb_phrase(self) -> str:
        return EVENT_PHRASES[self.op][self.phrase].format(k=self.amount)


@dataclasses.dataclass(frozen=True)
class Step:
    """One arithmetic step ``left op right = result`` and the clause that motivates it."""

    left: int
    op: str
    right: int
    result: int
    verb_phrase: str


@dataclasses.dataclass(frozen=True)
class ArithProblem:
    name: str
    pronoun: str
    item: str
    start: int
    bags: tuple[int, int] | None  # (number of bags, items per bag) when the story starts so
    events: tuple[Event, ...]
    question: int                 # index into QUESTIONS

    def steps(self) -> list[Step]:
        steps = []
        if self.bags:
            count, per_bag = self.bags
            steps.append(Step(count, "*", per_bag, self.start, f"has {count} bags of {per_bag}"))
        total = self.start
        for event in self.events:
            result = apply(total, event.op, event.amount)
            steps.append(Step(total, event.op, event.amount, result, event.verb_phrase()))
            total = result
        return steps

    @property
    def answer(self) -> int:
        return self.steps()[-1].result

    @property
    def n_steps(self) -> int:
        return len(self.events) + (1 if self.bags else 0)

    @property
    def text(self) -> str:
        """The word problem."""
        if self.bags:
            sentences = [f"{self.name} has {self.bags[0]} bags with {self.bags[1]} {self.item} "
                         f"in each."]
        else:
            sentences = [f"{self.name} has {self.start} {self.item}."]
        sentences += [f"{self.pronoun.capitalize()} {e.verb_phrase()}." for e in self.events]
        sentences.append(QUESTIONS[self.question].format(item=self.item, name=self.name))
        return " ".join(sentences)

    def arithmetic_key(self) -> tuple:
        """What the problem asks to compute, without the story (decides its split)."""
        return (self.bags or self.start, tuple((e.op, e.amount) for e in self.events))


def apply(left: int, op: str, right: int) -> int:
    return {"+": left + right, "-": left - right, "*": left * right}[op]


def split_of(problem: ArithProblem) -> str:
    """"test" for a fixed TEST_FRACTION of all arithmetic chains, "train" for the others."""
    digest = hashlib.sha256(repr(problem.arithmetic_key()).encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if bucket < TEST_FRACTION else "train"


def _draw_event(rng: np.random.Generator, total: int, config: ArithConfig) -> Event:
    allowed = []
    if total < config.max_answer:
        allowed.append("+")
    if total >= 3:
        allowed.append("-")
    if total * 2 <= config.max_answer:
        allowed.append("*")
    op = allowed[rng.integers(len(allowed))]
    if op == "+":
        amount = int(rng.integers(1, min(config.max_number, config.max_answer - total) + 1))
    elif op == "-":
        amount = int(rng.integers(1, min(config.max_number, total - 2) + 1))
    else:
        amount = int(rng.integers(2, min(config.max_factor, config.max_answer // total) + 1))
    return Event(op, amount, int(rng.integers(len(EVENT_PHRASES[op]))))


def draw_problem(rng: np.random.Generator, config: ArithConfig) -> ArithProblem:
    """One random problem (any split)."""
    n_steps = int(rng.integers(config.min_steps, config.max_steps + 1))
    name, pronoun = NAMES[rng.integers(len(NAMES))]
    item = ITEMS[rng.integers(len(ITEMS))]
    bags = None
    if rng.random() < config.p_bags:
        bags = (int(rng.integers(2, config.max_factor + 1)),
                int(rng.integers(2, config.max_number // 2 + 1)))
        start = bags[0] * bags[1]
    else:
        start = int(rng.integers(2, config.max_number + 1))
    events, total = [], start
    for _ in range(n_steps - (1 if bags else 0)):
        event = _draw_event(rng, total, config)
        events.append(event)
        total = apply(total, event.op, event.amount)
    return ArithProblem(name, pronoun, item, start, bags, tuple(events),
                        int(rng.integers(len(QUESTIONS))))


def generate_problems(n: int, *, split: str = "train", seed: int = 0,
                      difficulty: int | ArithConfig = 2) -> list[ArithProblem]:
    """``n`` distinct problems of ``split`` (see the module docstring for disjointness)."""
    if split not in SPLITS:
        raise ValueError(f"unknown arith split {split!r}; valid: {SPLITS}")
    config = config_for(difficulty)
    rng = np.random.default_rng([seed, SPLITS.index(split)])
    problems: list[ArithProblem] = []
    seen: set[ArithProblem] = set()
    max_draws = 100 * n + 1000
    for _ in range(max_draws):
        if len(problems) == n:
            return problems
        problem = draw_problem(rng, config)
        if split_of(problem) == split and problem not in seen:
            seen.add(problem)
            problems.append(problem)
    if len(problems) == n:
        return problems
    raise ValueError(f"could only draw {len(problems)} distinct {split} problems of {n} at "
                     f"{config}; ask for fewer or raise the difficulty")


# ---- solution styles -------------------------------------------------------------------------
CLOSINGS = ("none", "answer", "summary")
_FLAGS = ("swap", "restate", "words", "spaced", "merge", "check")


@dataclasses.dataclass(frozen=True)
class Style:
    """One way to write a solution. All styles are equally valid."""

    swap: bool = False     # commutative steps as "5+12" instead of "12+5"
    restate: bool = False  # a first line restating the start ("Ann starts with 12 apples.")
    words: bool = False    # steps in sentences ("She gets 5 more, so 12+5=17.")
    spaced: bool = False   # "12 + 5 = 17" instead of "12+5=17"
    merge: bool = False    # the first step followed by + or - shares its line ("12+5-3=14")
    check: bool = False    # an inverse check of the last step ("check: 14+3=17")
    closing: str = "none"  # "answer" ("The answer is 14.") or "summary" ("So Ann has 14 apples.")

    def __post_init__(self):
        if self.closing not in CLOSINGS:
            raise ValueError(f"closing must be one of {CLOSINGS}, got {self.closing!r}")

    @property
    def name(self) -> str:
        parts = [flag for flag in _FLAGS if getattr(self, flag)]
        if self.closing != "none":
            parts.append(self.closing)
        return "+".join(parts) or "plain"

    @classmethod
    def from_name(cls, name: str) -> Style:
        parts = set() if name == "plain" else set(name.split("+"))
        unknown = parts - set(_FLAGS) - set(CLOSINGS[1:])
        closings = parts & set(CLOSINGS[1:])
        if unknown or len(closings) > 1:
            raise ValueError(f"bad style name {name!r}; features: {_FLAGS}, "
                             f"closing: {CLOSINGS[1:]}")
        return cls(**{flag: flag in parts for flag in _FLAGS},
                   closing=closings.pop() if closings else "none")


def list_styles() -> list[Style]:
    """Every style: 2^6 flag combinations times 3 closings."""
    return [Style(*flags, closing=closing)
            for flags in itertools.product((False, True), repeat=len(_FLAGS))
            for closing in CLOSINGS]


def sample_style(rng: np.random.Generator) -> Style:
    """A style with each flag on with probability 1/2 and a uniform closing."""
    flags = rng.integers(0, 2, size=len(_FLAGS)).astype(bool).tolist()
    return Style(*flags, closing=CLOSINGS[rng.integers(len(CLOSINGS))])


def _line_groups(steps: list[Step], merge: bool) -> list[list[Step]]:
    """Steps grouped into lines: with ``merge``, the first step followed by a + or - step shares
    its line with it (left-to-right evaluation stays correct: no * after + in one line)."""
    groups = [[step] for step in steps]
    if merge:
        for i in range(len(steps) - 1):
            if steps[i + 1].op in "+-":
                return groups[:i] + [[steps[i], steps[i + 1]]] + groups[i + 2:]
    return groups


def _arithmetic(tokens: Sequence[object], result: int, spaced: bool) -> str:
    sep = " " if spaced else ""
    return sep.join(str(t) for t in tokens) + f"{sep}={sep}{result}"


def _expression(group: list[Step], style: Style) -> str:
    first = group[0]
    left, right = first.left, first.right
    if style.swap and first.op in "+*":
        left, right = right, left
    tokens: list[object] = [left, first.op, right]
    for step in group[1:]:
        tokens += [step.op, step.right]
    return _arithmetic(tokens, group[-1].result, style.spaced)


def _inverse_check(step: Step, style: Style) -> str:
    """The last step undone: 12+5=17 -> 17-5=12; 17-3=14 -> 14+3=17; 14*2=28 -> 28/2=14."""
    inverse = {"+": "-", "-": "+", "*": "/"}[step.op]
    tokens = [step.result, inverse, step.right]
    if style.swap and inverse == "+":
        tokens = [step.right, inverse, step.result]
    return "check: " + _arithmetic(tokens, step.left, style.spaced)


def _words_line(problem: ArithProblem, group: list[Step], expression: str, style: Style) -> str:
    if not style.words:
        return expression
    clause = " and ".join(step.verb_phrase for step in group)
    return f"{problem.pronoun.capitalize()} {clause}, so {expression}."


def render_solution(problem: ArithProblem, style: Style, detours: Detours | None = None) -> str:
    """The chain-of-thought solution of ``problem`` written in ``style``, ending in ``#### N``;
    with ``detours`` (world v2, ``sample_detours``), the lines take those detours."""
    steps = problem.steps()
    groups = _line_groups(steps, style.merge)
    if detours is not None and len(detours.kinds) != len(groups):
        raise ValueError(f"detours drawn for {len(detours.kinds)} lines, but the solution has {len(groups)}; "
                         "draw them with sample_detours(problem, style, ...)")
    lines = []
    if detours is not None and detours.answer_first:
        lines.append(f"Answer: {problem.answer}")
    if style.restate:
        start = (f"{problem.bags[0]} bags of {problem.bags[1]} {problem.item}" if problem.bags
                 else f"{problem.start} {problem.item}")
        lines.append(f"{problem.name} starts with {start}.")
    for i, group in enumerate(groups):
        if detours is None:
            lines.append(_words_line(problem, group, _expression(group, style), style))
            continue
        lines += _detour_lines(problem, groups, i, style, detours)
    if style.check:
        lines.append(_inverse_check(steps[-1], style))
    if style.closing == "answer":
        lines.append(f"The answer is {problem.answer}.")
    elif style.closing == "summary":
        lines.append(f"So {problem.name} has {problem.answer} {problem.item}.")
    lines.append(f"#### {problem.answer}")
    return "\n".join(lines)


def solutions(problem: ArithProblem, style: Style | str | None = None) -> dict[str, str]:
    """{style name: solution}: every style when ``style`` is None, else just that one."""
    if style is None:
        return {s.name: render_solution(problem, s) for s in list_styles()}
    if isinstance(style, str):
        style = Style.from_name(style)
    return {style.name: render_solution(problem, style)}


# ---- world v2: detours ----------------------------------------------------------------------
WORLD_VERSIONS = (1, 2, 3)
# World v3: one detour alone, the result written before its derivation ("24=8*3"), in a share of the lines:
# correct text that the tiny world's students learn least from (docs/results/2026-12-06-ceiling.md), at a
# rate low enough that the teacher's own text stays mostly plain
V3_RATES = {"correction": 0.0, "late_correction": 0.0, "result_first": 0.3, "distractor": 0.0, "answer_first": 0.0}
DETOUR_KINDS = ("plain", "correction", "late_correction", "result_first")


@dataclasses.dataclass(frozen=True)
class DetourRates:
    """World v2: how often a gold solution takes each detour. Every solution still ends right.

    Per line (a line is one step, or two merged ones), at most one of correction, late_correction
    and result_first (so their sum is at most 1); late_correction only on lines that have a next one.
    """

    correction: float = 0.25       # "8*3=23, wait: 8*3=24": a wrong result, then the redo on the same line
    late_correction: float = 0.1   # "8*3=23 / 23+5=28 / wait: 8*3=24 / 24+5=29": the wrong value carried on
    result_first: float = 0.3      # "24=8*3": the result before its derivation
    distractor: float = 0.15       # per line: followed by a correct computation that feeds nothing ("24+5=29")
    answer_first: float = 0.2      # per solution: "Answer: 24" as the first line, the work after it

    def __post_init__(self):
        for field in dataclasses.fields(self):
            rate = getattr(self, field.name)
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"detour rate {field.name}={rate} is not in [0, 1]")
        if self.correction + self.late_correction + self.result_first > 1.0 + 1e-9:
            raise ValueError(f"correction + late_correction + result_first = "
                             f"{self.correction + self.late_correction + self.result_first:g} > 1: a line "
                             "takes at most one of them")


@dataclasses.dataclass(frozen=True)
class Detours:
    """The detours of one solution (``sample_detours``). Per line: its kind (``DETOUR_KINDS``), the
    error added to its result when it is written wrong first (0 otherwise), and the computation
    written after it that feeds nothing (``(left, op, right)``, or None)."""

    kinds: tuple[str, ...]
    errors: tuple[int, ...]
    distractors: tuple[tuple[int, str, int] | None, ...]
    answer_first: bool = False


def sample_detours(problem: ArithProblem, style: Style, rates: DetourRates,
                   rng: np.random.Generator) -> Detours:
    """Independent draws per line (and one per solution for ``answer_first``) at ``rates``."""
    groups = _line_groups(problem.steps(), style.merge)
    kinds, errors, distractors = [], [], []
    for i, group in enumerate(groups):
        u = rng.random()
        late = rates.late_correction if i + 1 < len(groups) else 0.0
        if u < rates.correction:
            kind = "correction"
        elif u < rates.correction + late:
            kind = "late_correction"
        elif u < rates.correction + late + rates.result_first:
            kind = "result_first"
        else:
            kind = "plain"
        error = 0
        if kind in ("correction", "late_correction"):  # a slip of 1 or 2 either way, never below 0
            choices = [e for e in (-2, -1, 1, 2) if group[-1].result + e >= 0]
            error = int(choices[rng.integers(len(choices))])
        distractor = None
        if rng.random() < rates.distractor:
            distractor = _draw_distractor(problem, groups, i, rng)
        kinds.append(kind)
        errors.append(error)
        distractors.append(distractor)
    return Detours(tuple(kinds), tuple(errors), tuple(distractors), bool(rng.random() < rates.answer_first))


def _draw_distractor(problem: ArithProblem, groups: list[list[Step]], i: int,
                     rng: np.random.Generator) -> tuple[int, str, int]:
    """The line's result combined with a number of the problem, but not as the next line does."""
    total = groups[i][-1].result
    numbers = sorted({s.right for s in problem.steps()} | {problem.start})
    following = {(s.op, s.right) for s in groups[i + 1]} if i + 1 < len(groups) else set()
    options = [(op, k) for op in "+-*" for k in numbers
               if (op, k) not in following and apply(total, op, k) >= 0 and not (op == "*" and k > 5)]
    if not options:  # only when every + of a problem number is the next line (never seen): double it
        options = [("+", total)]
    op, k = options[rng.integers(len(options))]
    return (total, op, k)


def _carried(group: list[Step], left: int) -> list[Step]:
    """``group`` recomputed from another starting value (the wrong one carried on)."""
    out = []
    for step in group:
        result = apply(left, step.op, step.right)
        out.append(dataclasses.replace(step, left=left, result=result))
        left = result
    return out


def _result_first(group: list[Step], style: Style) -> str:
    """ "24=8*3": the derivation after its result."""
    expression = _expression(group, style)
    sep = " " if style.spaced else ""
    derivation, _, result = expression.rpartition(f"{sep}={sep}")
    return f"{result}{sep}={sep}{derivation}"


def _detour_lines(problem: ArithProblem, groups: list[list[Step]], i: int, style: Style,
                  detours: Detours) -> list[str]:
    group, kind = groups[i], detours.kinds[i]
    right = _expression(group, style)
    if kind == "result_first":
        lines = [_words_line(problem, group, _result_first(group, style), style)]
    elif kind == "correction":
        wrong = _expression(group[:-1] + [dataclasses.replace(group[-1], result=group[-1].result
                                                                     + detours.errors[i])], style)
        lines = [_words_line(problem, group, f"{wrong}, wait: {right}", style)]
    elif kind == "late_correction":
        if i + 1 >= len(groups):
            raise ValueError("a late correction needs a next line to carry its wrong value into")
        slipped = group[:-1] + [dataclasses.replace(group[-1], result=group[-1].result + detours.errors[i])]
        carried = _carried(groups[i + 1], slipped[-1].result)
        lines = [_words_line(problem, group, _expression(slipped, style), style),
                 _words_line(problem, groups[i + 1], _expression(carried, style), style),
                 f"wait: {right}"]
    else:
        lines = [_words_line(problem, group, right, style)]
    if detours.distractors[i] is not None:
        left, op, k = detours.distractors[i]
        lines.append(_arithmetic([left, op, k], apply(left, op, k), style.spaced))
    return lines


_EQUATION = re.compile(r"(\d+(?: ?[-+*/] ?\d+)+) ?= ?(-?\d+)")
_RESULT_FIRST = re.compile(r"(?:^|so )(\d+) ?= ?(\d+(?: ?[-+*] ?\d+)+)")
_INLINE_CORRECTION = re.compile(r"(\d+(?: ?[-+*] ?\d+)+) ?= ?(-?\d+), wait: (\d+(?: ?[-+*] ?\d+)+) ?= ?(-?\d+)")
_LATE_REDO = re.compile(r"^wait: (\d+(?: ?[-+*] ?\d+)+) ?= ?(-?\d+)")


def left_to_right(expression: str) -> Fraction | None:
    """The value of ``12+5-3`` (or ``28/2``) evaluated left to right, as the solutions write merged steps;
    None for what is no such expression (sampled text can hold ``5--3``) or divides by zero."""
    tokens = re.findall(r"\d+|[-+*/]", expression)
    if len(tokens) % 2 == 0 or not all(t.isdigit() == (i % 2 == 0) for i, t in enumerate(tokens)):
        return None
    value = Fraction(int(tokens[0]))
    for op, number in zip(tokens[1::2], tokens[2::2]):
        if op == "/":
            if int(number) == 0:
                return None
            value /= int(number)
        else:
            value = apply(value, op, int(number))
    return value


def _canonical(expression: str) -> str:
    return expression.replace(" ", "")


@dataclasses.dataclass(frozen=True)
class DetourCounts:
    """What ``detour_counts`` finds in a text. ``hollow``: corrections whose redo is not a true equation
    or is the same as the wrong one (or, for a late redo, repeats no earlier equation)."""

    corrections: int = 0
    late_corrections: int = 0
    hollow: int = 0
    result_first: int = 0
    answer_first: bool = False
    false_equations: int = 0  # equations outside corrections that are false

    @property
    def all_corrections(self) -> int:
        return self.corrections + self.late_corrections


def detour_counts(text: str) -> DetourCounts:
    """Parse the v2 detours out of a solution (gold or sampled): corrections (``X=W, wait: X=R``),
    late corrections (a ``wait: X=R`` line redoing an earlier ``X=W``), result-first lines (``R=X``),
    an answer-first line, and false equations outside corrections (a late correction's slip counts among
    them; the line that carries it on is true arithmetic)."""
    lines = text.splitlines()
    corrections = late = hollow = result_first = false = 0
    earlier: dict[str, int] = {}
    for line in lines:
        inline = _INLINE_CORRECTION.search(line)
        redo = _LATE_REDO.match(line)
        if inline:
            corrections += 1
            wrong_x, wrong_r, x, r = inline.groups()
            if (_canonical(wrong_x) != _canonical(x) or int(wrong_r) == int(r)
                    or left_to_right(x) != int(r)):
                hollow += 1
            continue
        if redo:
            late += 1
            x, r = _canonical(redo.group(1)), int(redo.group(2))
            if left_to_right(x) != r or x not in earlier or earlier[x] == r:
                hollow += 1
            continue
        rf = _RESULT_FIRST.search(line)
        if rf and not line.startswith("check:"):
            result_first += 1
            false += left_to_right(rf.group(2)) != int(rf.group(1))
            continue
        if line.startswith("check:"):
            continue
        for expression, result in _EQUATION.findall(line):
            earlier[_canonical(expression)] = int(result)
            false += left_to_right(expression) != int(result)
    return DetourCounts(corrections, late, hollow, result_first,
                        bool(lines) and lines[0].startswith("Answer:"), false)


EQUATION_ORDERS = ("result_first", "derivation_first")


def _swap_sides(match: re.Match, left: int, right: int) -> str:
    """The text of ``match`` from group ``left`` to group ``right`` with the two sides of its ``=`` swapped,
    the spacing around the ``=`` kept: ``8*3 =24`` -> ``24 =8*3``."""
    middle = match.string[match.end(left):match.start(right)]
    return f"{match.group(right)}{middle}{match.group(left)}"


def rewrite_equations(text: str, order: str) -> str:
    """``text`` with every equation line written in one ``order``: "result_first" turns ``8*3=24`` into
    ``24=8*3`` (as world v3's gold writes a result-first line, spacing and words kept), "derivation_first"
    turns ``24=8*3`` back. Left as they are: check lines, one-line corrections, ``wait:`` redo lines (a late
    correction's slip line turns like any other), lines already in that order, negative results, and
    result-first forms ``detour_counts`` does not read (mid-sentence, ``/``); a mid-sentence equation is
    still turned result-first, but not counted as such. Lines are ``detour_counts``'s (``str.splitlines``),
    each line ending kept: every number, and so the verdict, stays; only the order of result and work
    changes."""
    if order not in EQUATION_ORDERS:
        raise ValueError(f"order {order!r}: one of {EQUATION_ORDERS}")
    out = []
    for line in text.splitlines(keepends=True):
        body = (line.splitlines() or [""])[0]
        ending = line[len(body):]
        rf = _RESULT_FIRST.search(body)
        if body.startswith("check:") or _INLINE_CORRECTION.search(body) or _LATE_REDO.match(body):
            pass
        elif order == "derivation_first" and rf:
            body = body[:rf.start(1)] + _swap_sides(rf, 1, 2) + body[rf.end(2):]
        elif order == "result_first" and not rf:
            body = _EQUATION.sub(lambda m: m.group(0) if m.group(2).startswith("-") else _swap_sides(m, 1, 2), body)
        out.append(body + ending)
    return "".join(out)


# ---- the task --------------------------------------------------------------------------------
def _style_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split), index, 7])


def _detour_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """Its own stream, so a v2 example has the same problem and style as in v1, plus detours."""
    return np.random.default_rng([seed, SPLITS.index(split), index, 13])


def problem_example(problem: ArithProblem, style: Style, detours: Detours | None = None) -> Example:
    meta = {"problem": problem, "style": style.name, "n_steps": problem.n_steps}
    if detours is not None:
        meta["detours"] = detours
    return Example(prompt=problem.text, solution=render_solution(problem, style, detours),
                   answer=str(problem.answer), meta=meta)


@functools.lru_cache(maxsize=8)
def generated_examples(n: int, split: str, seed: int, config: ArithConfig,
                       rates: DetourRates | None = None) -> tuple[Example, ...]:
    """The first ``n`` examples of ``split``: problems, a style each and (``rates``) detours, every one drawn
    from its own seeded stream. Kept for the process's later loads (a train split takes seconds to draw,
    and every job of a run loads it). Callers share the examples: never write to an example's ``meta``."""
    problems = generate_problems(n, split=split, seed=seed, difficulty=config)
    examples = []
    for i, problem in enumerate(problems):
        style = sample_style(_style_rng(seed, split, i))
        detours = None
        if rates is not None:
            detours = sample_detours(problem, style, rates, _detour_rng(seed, split, i))
        examples.append(problem_example(problem, style, detours))
    return tuple(examples)


class ArithTask(Task):
    """The synthetic task. ``load(split)`` generates; ``load(split, path)`` reads GSM8K-format
    JSONL (question/answer rows) such as a saved copy.

    ``version``: the world (``WORLD_VERSIONS``): 1, plain solutions; 2, solutions with detours at
    the rates given by the remaining options (``DetourRates``' fields); 3, results before their
    derivation as the only detour (``V3_RATES``, which the options may change)."""

    name = "arith"
    local_files = {"train": "train.jsonl", "test": "test.jsonl"}
    instruction = ""

    def __init__(self, difficulty: int | ArithConfig = 2, seed: int = 0, train_size: int = 20000,
                 test_size: int = 500, instruction: str | None = None, version: int = 1,
                 **detour_rates: float):
        super().__init__(instruction)
        if version not in WORLD_VERSIONS:
            raise ValueError(f"unknown arith world version={version!r}; valid: {WORLD_VERSIONS}")
        unknown = set(detour_rates) - {f.name for f in dataclasses.fields(DetourRates)}
        if unknown:
            raise TypeError(f"unknown arith option(s) {sorted(unknown)}; detour rates: "
                            f"{[f.name for f in dataclasses.fields(DetourRates)]}")
        if detour_rates and version == 1:
            raise ValueError(f"detour rates {sorted(detour_rates)} need version=2 or 3 (world v1 has no detours)")
        self.config = config_for(difficulty)
        self.seed = seed
        self.sizes = {"train": train_size, "test": test_size}
        self.version = version
        self.rates = None
        if version == 2:
            self.rates = DetourRates(**detour_rates)
        elif version == 3:
            self.rates = DetourRates(**{**V3_RATES, **detour_rates})

    def load(self, split: str = "test", path: str | Path | None = None, *,
             limit: int | None = None) -> list[Example]:
        if path is not None:
            return super().load(split, path, limit=limit)
        if split not in SPLITS:
            raise ValueError(f"unknown arith split {split!r}; valid: {SPLITS}")
        n = self.sizes[split] if limit is None else min(limit, self.sizes[split])
        return list(generated_examples(n, split, self.seed, self.config, self.rates))

    def parse_row(self, row: Mapping[str, Any]) -> Example:
        return parse_gsm8k_row(row)  # same row format; such examples carry no arithmetic meta

    def sample_solution(self, example: Example, rng: np.random.Generator) -> str:
        """A freshly drawn style of the example's solution (the gold one if it has no problem)."""
        problem = example.meta.get("problem")
        if problem is None:
            return example.solution
        style = sample_style(rng)
        if self.rates is None:
            return render_solution(problem, style)
        return render_solution(problem, style, sample_detours(problem, style, self.rates, rng))

    def verify(self, completion: str, example: Example) -> Verdict:
        return verify_number(completion, example.answer)


# ---- the distribution ------------------------------------------------------------------------
def describe(examples: Sequence[Example], tokenizer: Any = None, file: TextIO | None = None
             ) -> dict[str, Any]:
    """Print (to ``file``, default stdout) and return the distribution of steps, operations,
    answers, styles and lengths of arith examples. ``tokenizer`` (optional, anything with
    ``encode``) adds token lengths of prompt + solution."""
    file = file or sys.stdout
    if not examples or any("problem" not in e.meta for e in examples):
        raise ValueError("describe() needs generated arith examples (ArithTask.load without a "
                         "path), which carry their problem in meta")
    problems = [e.meta["problem"] for e in examples]
    styles = [Style.from_name(e.meta["style"]) for e in examples]
    answers = [p.answer for p in problems]
    words = [len(e.prompt.split()) + len(e.solution.split()) for e in examples]
    summary: dict[str, Any] = {
        "n": len(examples),
        "steps": dict(sorted(Counter(p.n_steps for p in problems).items())),
        "ops": dict(Counter(s.op for p in problems for s in p.steps())),
        "answers": {"min": min(answers), "median": statistics.median(answers),
                    "max": max(answers), "distinct": len(set(answers)),
                    "1-9": sum(a < 10 for a in answers),
                    "10-99": sum(10 <= a < 100 for a in answers),
                    "100+": sum(a >= 100 for a in answers)},
        "style_features": {flag: sum(getattr(s, flag) for s in styles) / len(styles)
                           for flag in _FLAGS},
        "closings": dict(Counter(s.closing for s in styles)),
        "distinct_styles_drawn": len({s.name for s in styles}),
        "distinct_solutions_per_problem": statistics.mean(
            len(set(solutions(p).values())) for p in problems[:50]),
        "words": {"min": min(words), "mean": round(statistics.mean(words), 1), "max": max(words),
                  "share_40_90": sum(40 <= w <= 90 for w in words) / len(words)},
    }
    if tokenizer is not None:
        from jaxdistill.tasks.pipeline import text_encoder

        encode = text_encoder(tokenizer)
        lengths = [len(encode(e.prompt + "\n" + e.solution)) for e in examples]
        summary["tokens"] = {"min": min(lengths), "mean": round(statistics.mean(lengths), 1),
                             "max": max(lengths)}
    for key, value in summary.items():
        print(f"{key:>32}: {value}", file=file)
    return summary
