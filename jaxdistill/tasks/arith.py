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

Train and test are disjoint by construction: a problem's arithmetic (start, operations, operands)
is hashed, and the hash alone decides which split may hold it, whatever the seed. Generation is
deterministic in (seed, split, difficulty) and prefix-stable (asking for more keeps the first ones).
"""
from __future__ import annotations

import dataclasses
import hashlib
import itertools
import statistics
import sys
from collections import Counter
from collections.abc import Mapping, Sequence
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


def render_solution(problem: ArithProblem, style: Style) -> str:
    """The chain-of-thought solution of ``problem`` written in ``style``, ending in ``#### N``."""
    steps = problem.steps()
    lines = []
    if style.restate:
        start = (f"{problem.bags[0]} bags of {problem.bags[1]} {problem.item}" if problem.bags
                 else f"{problem.start} {problem.item}")
        lines.append(f"{problem.name} starts with {start}.")
    for group in _line_groups(steps, style.merge):
        expression = _expression(group, style)
        if style.words:
            clause = " and ".join(step.verb_phrase for step in group)
            lines.append(f"{problem.pronoun.capitalize()} {clause}, so {expression}.")
        else:
            lines.append(expression)
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


# ---- the task --------------------------------------------------------------------------------
def _style_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SPLITS.index(split), index, 7])


def problem_example(problem: ArithProblem, style: Style) -> Example:
    return Example(prompt=problem.text, solution=render_solution(problem, style),
                   answer=str(problem.answer),
                   meta={"problem": problem, "style": style.name, "n_steps": problem.n_steps})


class ArithTask(Task):
    """The synthetic task. ``load(split)`` generates; ``load(split, path)`` reads GSM8K-format
    JSONL (question/answer rows) such as a saved copy."""

    name = "arith"
    local_files = {"train": "train.jsonl", "test": "test.jsonl"}
    instruction = ""

    def __init__(self, difficulty: int | ArithConfig = 2, seed: int = 0, train_size: int = 20000,
                 test_size: int = 500, instruction: str | None = None):
        super().__init__(instruction)
        self.config = config_for(difficulty)
        self.seed = seed
        self.sizes = {"train": train_size, "test": test_size}

    def load(self, split: str = "test", path: str | Path | None = None, *,
             limit: int | None = None) -> list[Example]:
        if path is not None:
            return super().load(split, path, limit=limit)
        if split not in SPLITS:
            raise ValueError(f"unknown arith split {split!r}; valid: {SPLITS}")
        n = self.sizes[split] if limit is None else min(limit, self.sizes[split])
        problems = generate_problems(n, split=split, seed=self.seed, difficulty=self.config)
        return [problem_example(p, sample_style(_style_rng(self.seed, split, i)))
                for i, p in enumerate(problems)]

    def parse_row(self, row: Mapping[str, Any]) -> Example:
        return parse_gsm8k_row(row)  # same row format; such examples carry no arithmetic meta

    def sample_solution(self, example: Example, rng: np.random.Generator) -> str:
        """A freshly drawn style of the example's solution (the gold one if it has no problem)."""
        problem = example.meta.get("problem")
        if problem is None:
            return example.solution
        return render_solution(problem, sample_style(rng))

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
