"""Tasks: datasets, prompts, verifiers and input pipelines (see docs/tasks.md).

    from jaxdistill.tasks import get_task
    task = get_task("gsm8k")
    examples = task.load("test", path="data/gsm8k")     # or path=None: the HF hub
    verdict = task.verify(completion, examples[0])  # reward, status, prediction, details
"""
from __future__ import annotations

from jaxdistill.tasks.arith import ArithConfig, ArithProblem, ArithTask, Style, describe, \
    generate_problems, list_styles, render_solution, solutions
from jaxdistill.tasks.base import ERROR, OK, STATUSES, TIMEOUT, UNPARSEABLE, UNSUPPORTED, \
    Example, MalformedRow, Task, Verdict, strip_thinking, summarize
from jaxdistill.tasks.gsm8k import Gsm8kTask, extract_answer
from jaxdistill.tasks.ifeval import SUPPORTED_INSTRUCTIONS, IfevalTask
from jaxdistill.tasks.loading import MalformedRowsWarning
from jaxdistill.tasks.math500 import Math500Task
from jaxdistill.tasks.pipeline import make_pipeline
from jaxdistill.tasks.qa import CsqaTask, NqOpenTask
from jaxdistill.tasks.tiny_tokenizers import train_tiny_tokenizers

TASKS: dict[str, type[Task]] = {
    "gsm8k": Gsm8kTask,
    "math500": Math500Task,
    "csqa": CsqaTask,
    "nq_open": NqOpenTask,
    "ifeval": IfevalTask,
    "arith": ArithTask,
}


def list_tasks() -> list[str]:
    return list(TASKS)


def parse_task_options(items) -> dict:
    """``("difficulty=1", "seed=3")`` -> ``{"difficulty": 1, "seed": 3}`` (values read as YAML scalars)."""
    import yaml

    options = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"task option {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        options[key.strip()] = yaml.safe_load(value)
    return options


def get_task(name: str, **options) -> Task:
    """A fresh task object by name; ``options`` go to its constructor (e.g. ``instruction=``,
    arith's ``difficulty=``, ``seed=``, ``train_size=``, math500's ``timeout_s=``)."""
    if name not in TASKS:
        raise KeyError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[name](**options)


def restyled_solutions(examples: list[Example], task: Task, split: str, data_path: str | None = None, *,
                       first: int) -> list[str]:
    """The gold solutions of ``examples`` (examples ``first``, ``first + 1`` ... of ``split``) as ``task``
    writes them: the same problems in another style of solution (arith's world versions). Refuses a task
    whose examples there are other problems, or have no solution."""
    gold = task.load(split, data_path)[first:first + len(examples)]
    if len(gold) < len(examples):
        raise ValueError(f"the {split} split holds {first + len(gold)} examples under the other task options, "
                         f"fewer than the {first + len(examples)} asked for")
    for i, (ours, theirs) in enumerate(zip(examples, gold)):
        if ours.prompt != theirs.prompt or not theirs.solution:
            raise ValueError(f"{split} example {first + i} is another problem (or has no solution) under the other "
                             "task options: the text must be the same problems in another style of solution")
    return [e.solution for e in gold]


__all__ = [
    "ArithConfig", "ArithProblem", "ArithTask", "CsqaTask", "ERROR", "Example", "Gsm8kTask",
    "IfevalTask", "MalformedRow", "MalformedRowsWarning", "Math500Task", "NqOpenTask", "OK",
    "STATUSES", "SUPPORTED_INSTRUCTIONS", "Style", "TASKS", "TIMEOUT", "Task", "UNPARSEABLE",
    "UNSUPPORTED", "Verdict", "describe", "extract_answer", "generate_problems", "get_task",
    "list_styles", "list_tasks", "make_pipeline", "parse_task_options", "render_solution", "restyled_solutions",
    "solutions",
    "strip_thinking", "summarize", "train_tiny_tokenizers",
]
