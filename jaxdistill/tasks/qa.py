"""Question answering: CommonsenseQA (multiple choice, A-E) and NQ-open (short free-form answers).

CommonsenseQA letter extraction, first rule that matches wins (after ``strip_thinking``):
1. the last "answer is (X)" / "answer is: X" (X in A-E; lower case only inside parentheses);
2. the last parenthesised letter "(X)";
3. the last standalone capital letter A-E, not counting the article "A" ("A door ...").

NQ-open: the prediction is the text after the last "answer is" (to the end of that line), else the
first non-empty line. Exact match (EM) and token F1 use SQuAD normalisation (lower case, no
punctuation, no articles a/an/the, single spaces), each the best over the gold aliases.
reward = EM; F1 is in ``details``. An empty prediction is ``unparseable``; as in the SQuAD script,
an alias that normalises to nothing ("A+", "---") matches a prediction that does too.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from jaxdistill.tasks.base import OK, UNPARSEABLE, Example, MalformedRow, Task, Verdict, \
    require_str, strip_thinking

# ---------------------------------------------------------------------------------------------
# CommonsenseQA
# ---------------------------------------------------------------------------------------------
_ANSWER_IS_LETTER = re.compile(
    r"answer is\s*:?\s*\**\s*(?:\(([A-Ea-e])\)|([A-E])(?![\w']))", flags=re.IGNORECASE)
_PAREN_LETTER = re.compile(r"\(([A-E])\)")
_STANDALONE_LETTER = re.compile(r"(?<![\w'])([A-E])(?![\w'])")


def _is_article(text: str, match: re.Match) -> bool:
    """True for the "A" of "A door": a capital A followed by a space and a lower-case word."""
    return match.group(1) == "A" and re.match(r"\s+[a-z]", text[match.end():]) is not None


def extract_choice_letter(completion: str) -> str | None:
    """The chosen letter (upper case) or None; see the module docstring for the rules."""
    text = strip_thinking(completion)
    # The letter group is matched case-insensitively because of the flag; keep the rule that a
    # bare letter must be upper case by re-checking it.
    for match in reversed(list(_ANSWER_IS_LETTER.finditer(text))):
        if match.group(1):
            return match.group(1).upper()
        if match.group(2) and match.group(2).isupper():
            return match.group(2)
    parenthesised = _PAREN_LETTER.findall(text)
    if parenthesised:
        return parenthesised[-1]
    for match in reversed(list(_STANDALONE_LETTER.finditer(text))):
        if not _is_article(text, match):
            return match.group(1)
    return None


def _csqa_choices(row: Mapping[str, Any]) -> tuple[str, list[tuple[str, str]]]:
    """(stem, [(label, text), ...]) from the official JSONL layout or the HF hub layout."""
    question = row.get("question")
    if isinstance(question, Mapping):  # official: question{stem, choices[{label, text}]}
        stem = require_str(question, "stem")
        raw = question.get("choices")
        if not isinstance(raw, list):
            raise MalformedRow("question.choices missing or not a list")
        choices = [(require_str(c, "label"), require_str(c, "text")) for c in raw]
    else:  # hub (tau/commonsense_qa): question str, choices{label: [...], text: [...]}
        stem = require_str(row, "question")
        raw = row.get("choices")
        if not isinstance(raw, Mapping) or not isinstance(raw.get("label"), Sequence) \
                or not isinstance(raw.get("text"), Sequence):
            raise MalformedRow("choices missing or not {label: [...], text: [...]}")
        choices = [(str(label), str(text)) for label, text in zip(raw["label"], raw["text"])]
    if len(choices) < 2:
        raise MalformedRow("fewer than two choices")
    return stem, choices


class CsqaTask(Task):
    name = "csqa"
    hub_name = "tau/commonsense_qa"
    # The official test split has no public answers: "test" reads the validation split.
    hub_splits = {"train": "train", "validation": "validation", "test": "validation"}
    local_files = {"train": "train_rand_split.jsonl", "validation": "dev_rand_split.jsonl",
                   "test": "dev_rand_split.jsonl"}
    instruction = "Answer with the letter of the correct choice, as in 'The answer is (A)'."

    def parse_row(self, row: Mapping[str, Any]) -> Example:
        stem, choices = _csqa_choices(row)
        key = require_str(row, "answerKey").strip()
        labels = [label for label, _ in choices]
        if key not in labels:
            raise MalformedRow(f"answerKey {key!r} is not one of the labels {labels}")
        lines = [stem.strip(), "Answer choices:"] + [f"({label}) {text}" for label, text in choices]
        return Example(prompt="\n".join(lines), solution=f"The answer is ({key}).", answer=key,
                       meta={"choices": dict(choices), "id": row.get("id", "")})

    def verify(self, completion: str, example: Example) -> Verdict:
        letter = extract_choice_letter(completion)
        if letter is None:
            return Verdict(0.0, UNPARSEABLE)
        return Verdict(1.0 if letter == example.answer else 0.0, OK, letter)


# ---------------------------------------------------------------------------------------------
# NQ-open
# ---------------------------------------------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)
_ANSWER_IS = re.compile(r"answer is", flags=re.IGNORECASE)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation, drop articles, collapse spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    """Harmonic mean of token precision and recall after ``normalize_answer``."""
    predicted, expected = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not predicted or not expected:
        return float(predicted == expected)
    overlap = sum((Counter(predicted) & Counter(expected)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(expected)
    return 2 * precision * recall / (precision + recall)


def extract_short_answer(completion: str) -> str:
    """The text after the last "answer is" (to the end of its line), else the first line."""
    text = strip_thinking(completion)
    markers = list(_ANSWER_IS.finditer(text))
    if markers:
        text = text[markers[-1].end():].lstrip(" \t:")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    answer = lines[0] if lines else ""
    return answer.strip("*\"' ").rstrip(".").strip()


def _aliases(row: Mapping[str, Any]) -> list[str]:
    answers = row.get("answer")
    if not isinstance(answers, (list, tuple)) or not answers:
        raise MalformedRow("field 'answer' missing or not a non-empty list")
    # Whitespace inside an alias is collapsed (one efficientqa alias holds blank lines); SQuAD
    # normalisation collapses it anyway, so scoring is unchanged.
    aliases = [" ".join(a.split()) for a in answers if isinstance(a, str) and a.strip()]
    if len(aliases) != len(answers):
        raise MalformedRow("field 'answer' holds a non-string or empty alias")
    return aliases


class NqOpenTask(Task):
    name = "nq_open"
    hub_name = "google-research-datasets/nq_open"
    # NQ-open has no public test answers; "test" reads the dev ("validation") split.
    hub_splits = {"train": "train", "validation": "validation", "test": "validation"}
    local_files = {"train": "NQ-open.train.jsonl", "validation": "NQ-open.dev.jsonl",
                   "test": "NQ-open.dev.jsonl"}
    instruction = "Answer with a short phrase, as in 'The answer is ...'."

    def parse_row(self, row: Mapping[str, Any]) -> Example:
        question = require_str(row, "question").strip()
        aliases = _aliases(row)
        prompt = question[0].upper() + question[1:]
        if not prompt.endswith("?"):
            prompt += "?"
        return Example(prompt=prompt, solution=f"The answer is {aliases[0]}.", answer=aliases[0],
                       meta={"aliases": aliases})

    def verify(self, completion: str, example: Example) -> Verdict:
        prediction = extract_short_answer(completion)
        if not prediction:
            return Verdict(0.0, UNPARSEABLE, None, {"f1": 0.0})
        aliases = example.meta.get("aliases") or [example.answer]
        em = max(exact_match(prediction, gold) for gold in aliases)
        f1 = max(token_f1(prediction, gold) for gold in aliases)
        return Verdict(em, OK, prediction, {"f1": f1})
