"""IFEval: prompts with verifiable instructions ("no commas", "at least 300 words", ...).

Every supported instruction id has a checker ``(response, kwargs) -> bool`` written from the
IFEval paper's definitions (Zhou et al., 2023). Differences from Google's reference code, all
because its extra dependencies are not ours:

- ``length_constraints:number_sentences`` counts sentences with a small regex splitter (protects
  decimals, initials and common abbreviations) instead of NLTK's punkt model;
- ``change_case:english_lowercase`` / ``english_capital`` check the case only, not that the text
  is English (the reference also runs langdetect);
- ``change_case:capital_word_frequency`` counts ``\\w+`` words instead of NLTK word tokens.

``language:response_language`` (needs a language detector) and any id not in ``CHECKS`` are
*unsupported*: reported as such, never scored as pass or fail.

Strict: the response as written. Loose (as in the paper): the instruction counts as followed if any
of eight variants passes: the response with or without markdown asterisks, each as is, without its
first line, without its last line, and without both.

``verify`` gives reward = fraction of the supported instructions followed (strict); ``details``
add the prompt-level (all followed) and instruction-level scores, strict and loose.
"""
from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from jaxdistill.tasks.base import OK, UNSUPPORTED, Example, MalformedRow, Task, Verdict, \
    require_str

Checker = Callable[[str, Mapping[str, Any]], bool]

_WORD = re.compile(r"\w+")


def count_words(text: str) -> int:
    return len(_WORD.findall(text))


_ABBREVIATIONS = ("mr", "mrs", "ms", "dr", "st", "prof", "sr", "jr", "vs", "etc", "inc", "ltd",
                  "co", "e.g", "i.e", "approx", "no", "fig")
_ABBREVIATION_DOT = re.compile(
    r"\b(" + "|".join(re.escape(a) for a in _ABBREVIATIONS) + r")\.", flags=re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"'\u201d)\]]*\s+")


def split_sentences(text: str) -> list[str]:
    """Sentences: split after . ! or ? (and any closing quote) followed by space, except after
    decimals (3.5), initials (J. K.) and common abbreviations (Dr., e.g.)."""
    text = " ".join(text.split())
    text = re.sub(r"(?<=\d)\.(?=\d)", "<dot>", text)
    text = _ABBREVIATION_DOT.sub(r"\1<dot>", text)
    text = re.sub(r"\b([A-Z])\.", r"\1<dot>", text)
    return [s.replace("<dot>", ".") for s in _SENTENCE_END.split(text) if s.strip()]


def _compare(count: int, relation: str, threshold: Any) -> bool:
    """IFEval's two relations: "less than" (count < N) and "at least" (count >= N)."""
    if relation == "less than":
        return count < int(threshold)
    if relation == "at least":
        return count >= int(threshold)
    raise ValueError(f"unknown relation {relation!r}")


def _contains_word(text: str, word: str) -> bool:
    return re.search(r"\b" + re.escape(word) + r"\b", text, flags=re.IGNORECASE) is not None


# ---- the checkers -----------------------------------------------------------------------------
def no_comma(response: str, kwargs: Mapping[str, Any]) -> bool:
    return "," not in response


def number_words(response: str, kwargs: Mapping[str, Any]) -> bool:
    return _compare(count_words(response), kwargs["relation"], kwargs["num_words"])


def number_sentences(response: str, kwargs: Mapping[str, Any]) -> bool:
    return _compare(len(split_sentences(response)), kwargs["relation"], kwargs["num_sentences"])


def forbidden_words(response: str, kwargs: Mapping[str, Any]) -> bool:
    return not any(_contains_word(response, word) for word in kwargs["forbidden_words"])


def highlighted_sections(response: str, kwargs: Mapping[str, Any]) -> bool:
    """At least N non-empty ``*highlighted*`` or ``**bold**`` spans (each within one line)."""
    singles = [h for h in re.findall(r"\*[^\n*]*\*", response) if h.strip("*").strip()]
    doubles = [h for h in re.findall(r"\*\*[^\n*]*\*\*", response) if h[2:-2].strip()]
    return len(singles) + len(doubles) >= int(kwargs["num_highlights"])


def keyword_frequency(response: str, kwargs: Mapping[str, Any]) -> bool:
    """Occurrences of the keyword anywhere (case-insensitive, also inside longer words)."""
    count = len(re.findall(re.escape(kwargs["keyword"]), response, flags=re.IGNORECASE))
    return _compare(count, kwargs["relation"], kwargs["frequency"])


def repeat_prompt(response: str, kwargs: Mapping[str, Any]) -> bool:
    return response.strip().lower().startswith(kwargs["prompt_to_repeat"].strip().lower())


def quotation(response: str, kwargs: Mapping[str, Any]) -> bool:
    text = response.strip()
    return len(text) > 1 and text[0] == '"' and text[-1] == '"'


def english_lowercase(response: str, kwargs: Mapping[str, Any]) -> bool:
    return response.islower()


def keyword_existence(response: str, kwargs: Mapping[str, Any]) -> bool:
    return all(re.search(re.escape(k), response, flags=re.IGNORECASE) for k in kwargs["keywords"])


def title(response: str, kwargs: Mapping[str, Any]) -> bool:
    """A non-empty title in double angular brackets, like <<poem of joy>>."""
    return any(t.strip("<>").strip() for t in re.findall(r"<<[^\n]+>>", response))


def letter_frequency(response: str, kwargs: Mapping[str, Any]) -> bool:
    count = response.lower().count(str(kwargs["letter"]).lower())
    return _compare(count, kwargs["let_relation"], kwargs["let_frequency"])


def bullet_lists(response: str, kwargs: Mapping[str, Any]) -> bool:
    """Exactly N markdown bullets: lines starting with "* " or "-"."""
    stars = re.findall(r"^\s*\*[^*].*$", response, flags=re.MULTILINE)
    dashes = re.findall(r"^\s*-.*$", response, flags=re.MULTILINE)
    return len(stars) + len(dashes) == int(kwargs["num_bullets"])


def placeholders(response: str, kwargs: Mapping[str, Any]) -> bool:
    return len(re.findall(r"\[.*?\]", response)) >= int(kwargs["num_placeholders"])


def number_paragraphs(response: str, kwargs: Mapping[str, Any]) -> bool:
    """Exactly N paragraphs separated by the markdown divider ``***``; an empty paragraph is
    allowed only before the first or after the last divider."""
    paragraphs = re.split(r"\s?\*\*\*\s?", response)
    count = len(paragraphs)
    for index, paragraph in enumerate(paragraphs):
        if not paragraph.strip():
            if index in (0, len(paragraphs) - 1):
                count -= 1
            else:
                return False
    return count == int(kwargs["num_paragraphs"])


def end_checker(response: str, kwargs: Mapping[str, Any]) -> bool:
    ending = response.strip().strip('"').lower()
    return ending.endswith(kwargs["end_phrase"].strip().lower())


def postscript(response: str, kwargs: Mapping[str, Any]) -> bool:
    """A line starting with the postscript marker (P.S. or P.P.S, spacing and case free)."""
    marker = kwargs["postscript_marker"]
    if marker == "P.P.S":
        pattern = r"\s*p\.\s?p\.\s?s.*$"
    elif marker == "P.S.":
        pattern = r"\s*p\.\s?s\..*$"
    else:
        pattern = r"\s*" + re.escape(marker.lower()) + r".*$"
    return bool(re.findall(pattern, response.lower(), flags=re.MULTILINE))


def english_capital(response: str, kwargs: Mapping[str, Any]) -> bool:
    return response.isupper()


def capital_word_frequency(response: str, kwargs: Mapping[str, Any]) -> bool:
    count = sum(1 for word in _WORD.findall(response) if word.isupper())
    return _compare(count, kwargs["capital_relation"], kwargs["capital_frequency"])


def two_responses(response: str, kwargs: Mapping[str, Any]) -> bool:
    """Two different responses separated by six asterisks ``******``."""
    parts = response.split("******")
    valid = []
    for index, part in enumerate(parts):
        if part.strip():
            valid.append(part.strip())
        elif index not in (0, len(parts) - 1):
            return False
    return len(valid) == 2 and valid[0] != valid[1]


def json_format(response: str, kwargs: Mapping[str, Any]) -> bool:
    """The whole response parses as JSON (a surrounding ```json fence is allowed)."""
    text = response.strip()
    for fence in ("```json", "```Json", "```JSON", "```"):
        if text.startswith(fence):
            text = text[len(fence):]
            break
    text = text.removesuffix("```").strip()
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def multiple_sections(response: str, kwargs: Mapping[str, Any]) -> bool:
    """At least N sections, each opened by the splitter word and a number ("SECTION 1")."""
    splitter = re.escape(kwargs["section_spliter"])
    sections = re.split(r"\s?" + splitter + r"\s?\d+\s?", response)
    return len(sections) - 1 >= int(kwargs["num_sections"])


def nth_paragraph_first_word(response: str, kwargs: Mapping[str, Any]) -> bool:
    """Exactly ``num_paragraphs`` paragraphs (split by blank lines) and paragraph
    ``nth_paragraph`` (1-based) starts with ``first_word`` (case and punctuation ignored)."""
    paragraphs = re.split(r"\n\n", response)
    count = sum(1 for p in paragraphs if p.strip())
    nth = int(kwargs["nth_paragraph"])
    if nth > count:
        return False
    paragraph = paragraphs[nth - 1].strip()
    if not paragraph:
        return False
    word = paragraph.split()[0].lstrip("'\"")
    first_word = re.match(r"[^.,?!'\"]*", word).group(0).lower()
    return count == int(kwargs["num_paragraphs"]) and first_word == kwargs["first_word"].lower()


_CONSTRAINED_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


def constrained_response(response: str, kwargs: Mapping[str, Any]) -> bool:
    return any(option in response.strip() for option in _CONSTRAINED_OPTIONS)


CHECKS: dict[str, Checker] = {
    "punctuation:no_comma": no_comma,
    "length_constraints:number_words": number_words,
    "length_constraints:number_sentences": number_sentences,
    "keywords:forbidden_words": forbidden_words,
    "detectable_format:number_highlighted_sections": highlighted_sections,
    "keywords:frequency": keyword_frequency,
    "combination:repeat_prompt": repeat_prompt,
    "startend:quotation": quotation,
    "change_case:english_lowercase": english_lowercase,
    "keywords:existence": keyword_existence,
    "detectable_format:title": title,
    "keywords:letter_frequency": letter_frequency,
    "detectable_format:number_bullet_lists": bullet_lists,
    "detectable_content:number_placeholders": placeholders,
    "length_constraints:number_paragraphs": number_paragraphs,
    "startend:end_checker": end_checker,
    "detectable_content:postscript": postscript,
    "change_case:english_capital": english_capital,
    "change_case:capital_word_frequency": capital_word_frequency,
    "combination:two_responses": two_responses,
    "detectable_format:json_format": json_format,
    "detectable_format:multiple_sections": multiple_sections,
    "length_constraints:nth_paragraph_first_word": nth_paragraph_first_word,
    "detectable_format:constrained_response": constrained_response,
}
SUPPORTED_INSTRUCTIONS = tuple(CHECKS)


def loose_variants(response: str) -> list[str]:
    """The eight variants of the paper's loose scoring (see the module docstring)."""
    lines = response.split("\n")
    trimmed = [response, "\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(),
               "\n".join(lines[1:-1]).strip()]
    return trimmed + [text.replace("*", "") for text in trimmed]


def follows(instruction_id: str, response: str, kwargs: Mapping[str, Any], *,
            loose: bool = False) -> bool | None:
    """Whether ``response`` follows the instruction; None when it cannot be checked (unknown id,
    or kwargs the checker cannot use)."""
    check = CHECKS.get(instruction_id)
    if check is None:
        return None
    candidates = loose_variants(response) if loose else [response]
    try:
        return any(text.strip() and check(text, kwargs) for text in candidates)
    except (KeyError, TypeError, ValueError):
        return None


def instruction_counts(examples: Iterable[Example]) -> Counter:
    """How often each instruction id occurs over IFEval examples."""
    return Counter(i for example in examples for i in example.meta["instruction_ids"])


def _clean_kwargs(raw: Any) -> dict[str, Any]:
    """One instruction's kwargs without the None placeholders of the HF hub copy."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise MalformedRow("an entry of 'kwargs' is not an object")
    return {key: value for key, value in raw.items() if value is not None}


class IfevalTask(Task):
    name = "ifeval"
    hub_name = "google/IFEval"
    hub_splits = {"test": "train"}  # the hub copy calls its only split "train"
    local_files = {"test": "input_data.jsonl"}
    instruction = ""

    def parse_row(self, row: Mapping[str, Any]) -> Example:
        prompt = require_str(row, "prompt")
        ids = row.get("instruction_id_list")
        kwargs = row.get("kwargs")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise MalformedRow("instruction_id_list missing or not a list of strings")
        if not isinstance(kwargs, list) or len(kwargs) != len(ids):
            raise MalformedRow("kwargs missing or not one entry per instruction")
        return Example(prompt=prompt, solution="", answer="",
                       meta={"key": row.get("key"), "instruction_ids": list(ids),
                             "kwargs": [_clean_kwargs(k) for k in kwargs]})

    def verify(self, completion: str, example: Example) -> Verdict:
        strict, loose = [], []
        for instruction_id, kwargs in zip(example.meta["instruction_ids"], example.meta["kwargs"]):
            strict_result = follows(instruction_id, completion, kwargs)
            if strict_result is None:
                continue
            strict.append(strict_result)
            loose.append(bool(follows(instruction_id, completion, kwargs, loose=True)))
        n_unsupported = len(example.meta["instruction_ids"]) - len(strict)
        if not strict:
            return Verdict(0.0, UNSUPPORTED, None, {"n_unsupported": float(n_unsupported)})
        details = {
            "prompt_strict": float(all(strict)),
            "prompt_loose": float(all(loose)),
            "instruction_strict": sum(strict) / len(strict),
            "instruction_loose": sum(loose) / len(loose),
            "n_unsupported": float(n_unsupported),
        }
        return Verdict(details["instruction_strict"], OK, None, details)
