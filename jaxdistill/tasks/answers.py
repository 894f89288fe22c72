"""Reading the final stated numeric answer of a completion (the GSM8K and arith verifiers).

The convention is a careful grader's: the answer the completion states last counts; units, ``$``,
``%`` and thousands separators are ignored; 3/4, .75 and 2 1/4 are the numbers they denote.

Reading a completion (``extract_answer``), in order:

1. drop ``<think>`` blocks (``strip_thinking``) and normalise the text (``normalize_number_text``);
2. drop run-on text: after a completed answer, text that starts a new problem (``drop_runoff``);
3. find the *statements* (``find_statements``): every ``####``, "answer is"-style phrase and
   ``\\boxed{}``, and every sentence that opens with a correction word ("Actually, it is 42.");
4. the last statement whose clause states a number wins (``clause_value``); with none, the last
   number of the text that is not negated (``last_value``).

A statement's clause is read as the number it concludes with (``clause_value``): up to the end of
its sentence, asides in parentheses and negated numbers ("not 40") dropped, then split at
restatement and result markers ("=", "i.e.", "which is", "wait", ...); the last piece that names
exactly one quantity, or is plain arithmetic, gives the value ("6 + 9 = 15" and "6 + 9" read 15,
"12 dollars and 25 cents, i.e. 12.25" reads 12.25). A quantity (``quantities``) is a number with
its thousands commas, a fraction, a mixed number, a time of day, an amount in dollars and cents,
or a number with a scale ("5k", "2 million"). The conventions for ambiguous forms are listed in
docs/tasks.md.
"""
from __future__ import annotations

import ast
import bisect
import dataclasses
import operator
import re

from jaxdistill.tasks.base import strip_thinking

# ---- normalising the text ---------------------------------------------------------------------
_LATEX_TEXT = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox)\s*\{([^{}]*)\}")
_DIGIT_BEFORE_FRAC = re.compile(r"(\d)\s*(\\[dt]?frac)")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*(-?[\d.,]+)\s*\}\s*\{\s*(-?[\d.,]+)\s*\}")
_VULGAR_FRACTIONS = {"\u00bd": "1/2", "\u00bc": "1/4", "\u00be": "3/4", "\u2153": "1/3",
                     "\u2154": "2/3", "\u215b": "1/8"}
_VULGAR = re.compile(r"(\d?)([" + "".join(_VULGAR_FRACTIONS) + "])")
# An exponent right after a unit (a letter or a closing bracket), never after a digit: the 2 of
# "30 cm^2" or "m\u00b2" is not a quantity, the 2 of "5^2" is.
_UNIT_EXPONENT = re.compile(r"(?<=[A-Za-z)\]}])[ \t]*(?:\^[ \t]*(?:\{[ \t]*-?\d+[ \t]*\}|-?\d+)"
                            r"|[\u00b2\u00b3\u00b9])")
# Order matters: "-$20" keeps its sign before "$" is dropped.
_REPLACEMENTS = (("\u2212", "-"), ("\u2013", "-"), ("\u00a0", " "), ("\u2009", " "),
                 ("\u202f", " "), ("-\\$", "-"), ("-$", "-"), ("\\$", " "), ("$", " "),
                 ("\\%", " "), ("%", " "), ("{,}", ","), ("\\,", ""), ("\\!", ""),
                 ("\\left", ""), ("\\right", ""), ("\\(", " "), ("\\)", " "), ("\\[", " "),
                 ("\\]", " "), ("\\approx", "\u2248"), ("\\times", "\u00d7"),
                 ("\\cdot", "\u00b7"), ("\\div", "\u00f7"))


def normalize_number_text(text: str) -> str:
    """``text`` with LaTeX, currency, percent and unit exponents reduced to plain numbers.

    Reads ``\\text{..}`` as its content, ``\\frac{a}{b}`` as ``a/b`` (``2\\frac{1}{4}`` as the mixed
    number ``2 1/4``), ``\u00bd`` as ``1/2``, ``\\times`` as ``\u00d7``; drops ``$``, ``%``, math
    delimiters ``\\( \\[``, LaTeX thousands spacing (``1{,}000``, ``1\\,000``) and exponents of
    units (``cm^2``, ``m\u00b2``); reads the unicode minus as ``-``.
    """
    text = _LATEX_TEXT.sub(r" \1 ", text)
    text = _DIGIT_BEFORE_FRAC.sub(r"\1 \2", text)
    text = _LATEX_FRAC.sub(r"\1/\2", text)
    text = _VULGAR.sub(lambda m: (m.group(1) + " " if m.group(1) else "")
                       + _VULGAR_FRACTIONS[m.group(2)], text)
    text = _UNIT_EXPONENT.sub("", text)
    for old, new in _REPLACEMENTS:
        text = text.replace(old, new)
    return text


# ---- quantities -------------------------------------------------------------------------------
# A decimal number with optional thousands commas (groups of exactly three digits). A minus is a
# sign only when it does not follow a digit or a dot: "12-3" is a subtraction.
_NUMBER = r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+"
_QUANTITY = re.compile(
    r"(?<![\d.])(?:"
    # 12 dollars and 25 cents / 12 and 25 cents
    r"(?P<dollars>\d{1,3}(?:,\d{3})+|\d+)[ \t]*(?:dollars?[ \t]*(?:and[ \t]+)?|and[ \t]+)"
    r"(?P<cents>\d{1,2})[ \t]*cents?\b"
    # 2:30 (a time of day)
    r"|(?P<hour>[01]?\d|2[0-4]):(?P<minute>[0-5]\d)(?![\d:])"
    # 2 1/4, 2 and 1/4 (proper fractions only, checked in ``quantities``)
    r"|(?P<whole>-?\d+)[ \t]+(?:and[ \t]+)?(?P<mixed_num>\d+)[ \t]*/[ \t]*(?P<mixed_den>\d+)"
    r"(?!\.?\d)"
    # 3/4, -1.5/2
    rf"|(?P<num>-?(?:{_NUMBER}))[ \t]*/[ \t]*(?P<den>{_NUMBER})(?!\.?\d)"
    # 1,234.5, 5k, 2 million
    rf"|(?P<number>-?(?:{_NUMBER}))"
    r"(?:(?P<k>[kK])(?![A-Za-z])|[ \t]+(?P<scale>thousand|million|billion)\b)?"
    r")")
_SCALES = {"thousand": 1e3, "million": 1e6, "billion": 1e9}


def _to_float(number: str) -> float:
    """A matched number ("1,234.5", "-7", ".5") as a float."""
    return float(number.replace(",", ""))


def quantities(text: str) -> list[float]:
    """The value of every quantity in (normalised) ``text``, in order.

    "2 1/4" is 2.25 (an improper "3 12/4" is the two quantities 3 and 3); "3/4" is 0.75 ("5/0"
    is 5 and 0); "2:30" is 2.5 (hours); "12 dollars and 25 cents" is 12.25; "5k" is 5000.
    """
    values, pos = [], 0
    while (match := _QUANTITY.search(text, pos)) is not None:
        group = match.groupdict()
        pos = match.end()
        if group["dollars"] is not None:
            values.append(_to_float(group["dollars"]) + int(group["cents"]) / 100)
        elif group["hour"] is not None:
            values.append(int(group["hour"]) + int(group["minute"]) / 60)
        elif group["whole"] is not None:
            whole, num, den = (float(group[key]) for key in ("whole", "mixed_num", "mixed_den"))
            if not 0 < num < den:  # not a mixed number: read the whole part alone, go on after it
                values.append(whole)
                pos = match.end("whole")
                continue
            sign = -1.0 if group["whole"].startswith("-") else 1.0
            values.append(whole + sign * num / den)
        elif group["num"] is not None:
            den = _to_float(group["den"])
            if den == 0:  # "5/0": two numbers, not a fraction
                values.append(_to_float(group["num"]))
                pos = match.end("num")
                continue
            values.append(_to_float(group["num"]) / den)
        else:
            scale = 1e3 if group["k"] else _SCALES.get(group["scale"] or "", 1.0)
            values.append(_to_float(group["number"]) * scale)
    return values


# ---- reading one clause -----------------------------------------------------------------------
# The end of a sentence: . ! ? ; before a space (not the dots of "i.e." or "12.5"), or a newline.
_SENTENCE_END = re.compile(r"(?<!\bi\.e)(?<!\be\.g)(?<!approx)[.!?;](?=\s|$)|\n")
_DIGIT = re.compile(r"\d")
_PARENTHESES = re.compile(r"\([^()]*\)")
_NEGATION = re.compile(r"(?:\bnot|n't|\bnever|\binstead of|\brather than|\bother than)[ \t]+"
                       r"(?:equal to[ \t]+|be[ \t]+)?", flags=re.IGNORECASE)
_WRONG = re.compile(r"(?<![\d.,])(?:-?\d[\d,]*(?:\.\d+)?|\.\d+)[ \t]+(?:\w+[ \t]+)?(?:is|was)[ \t]+"
                    r"(?:wrong|incorrect|a mistake)", flags=re.IGNORECASE)
# Where a clause restates or corrects what it said before: the value comes after these.
_RESTATEMENT = re.compile(r"=|\u2248|\u2192|->|\bi\.e\.?|\bthat is\b|\bin other words\b|"
                          r"\bwhich is\b|\bwhich equals\b|\bequals\b|\bwhich makes\b|"
                          r"\bactually\b|\bwait\b|\bcorrection\b|\bsorry\b|\bI mean\b|\bno\b",
                          flags=re.IGNORECASE)


def first_sentence(text: str) -> str:
    """``text`` from its first non-blank character to the end of that sentence or line."""
    text = text.lstrip(" \t\n*:")
    end = _SENTENCE_END.search(text)
    return text[:end.start()] if end else text


def drop_asides(text: str) -> str:
    """``text`` without parentheses that hold words ("42 (6 bags of 7)"); "(4 + 5)" is kept."""
    return _PARENTHESES.sub(lambda m: " " if re.search("[A-Za-z]", m.group(0)) else m.group(0), text)


def drop_negated(text: str) -> str:
    """``text`` without the quantities it denies: "not 40", "isn't 2 1/4", "rather than 40",
    "40 is wrong"."""
    kept, pos, cursor = [], 0, 0
    while (negation := _NEGATION.search(text, pos)) is not None:
        quantity = _QUANTITY.match(text, negation.end())
        pos = negation.end()
        if quantity is not None:
            kept += [text[cursor:negation.start()], " "]
            cursor = pos = quantity.end()
    text = "".join(kept) + text[cursor:]
    return _WRONG.sub(" ", text)


_TIMES = re.compile(r"(?<=[\d)\s])[x\u00d7\u00b7](?=[\s\d(.])")
_THOUSANDS_COMMA = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
              ast.Div: operator.truediv, ast.USub: operator.neg, ast.UAdd: operator.pos}


def _evaluate(node: ast.AST) -> float:
    """The value of a parsed expression made only of numbers, + - * / and parentheses."""
    if isinstance(node, ast.Expression):
        return _evaluate(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_evaluate(node.operand))
    raise ValueError(f"not plain arithmetic: {ast.dump(node)}")


def expression_value(text: str) -> float | None:
    """The value of ``text`` when it is plain arithmetic ("6 + 9", "3 x (4 + 5) apples": numbers,
    + - * / x \u00d7 \u00f7, parentheses, then optional words), else None."""
    end = len(text)
    while end and text[end - 1] not in "0123456789)":
        end -= 1
    if not re.fullmatch(r"[A-Za-z\s.,']*", text[end:]):  # only words may follow ("apples")
        return None
    expression = text[:end].replace("\u00f7", "/")
    expression = _THOUSANDS_COMMA.sub("", _TIMES.sub("*", expression)).strip()
    if not expression or not re.fullmatch(r"[\d.\s+\-*/()]+", expression) or "**" in expression:
        return None
    try:
        return _evaluate(ast.parse(expression, mode="eval"))
    except (SyntaxError, ValueError, ArithmeticError, RecursionError, MemoryError):
        return None


def restated_value(text: str) -> float | None:
    """The value a clause concludes with: split at restatement markers ("=", "i.e.", "which is",
    "wait", ...), the last piece that names one quantity or is plain arithmetic (``6 + 9`` is 15);
    else the first quantity."""
    pieces = _RESTATEMENT.split(text)
    found = [quantities(piece) for piece in pieces]
    single = [values[0] if len(values) == 1 else expression_value(piece)
              for piece, values in zip(pieces, found) if values]
    single = [value for value in single if value is not None]
    if single:
        return single[-1]
    return next((values[0] for values in found if values), None)


def clause_value(clause: str) -> float | None:
    """The number a statement's clause states (normalised text that follows "answer is", "####",
    or a box's content), or None: its first sentence, asides in parentheses dropped unless they
    hold the only number, negated numbers dropped, then ``restated_value``."""
    sentence = first_sentence(clause)
    if not _DIGIT.search(sentence):
        return None
    for text in (drop_asides(sentence), sentence.replace("(", " ").replace(")", " ")):
        value = restated_value(drop_negated(text))
        if value is not None:
            return value
    return None


def read_number(text: str) -> float | None:
    """The number a short answer text states ("18", "1,234", "$0.75", "3/4"), or None."""
    return clause_value(normalize_number_text(text))


def last_value(text: str) -> float | None:
    """The last quantity of (normalised) ``text`` that is not negated, or None."""
    values = quantities(drop_negated(text))
    return values[-1] if values else None


# ---- statements -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Statement:
    """Where a completion states an answer: ``kind`` ("marker" for ``####`` and "answer is"-style
    phrases, "boxed", "correction"), the offsets where the statement and its clause start, and the
    ``clause`` that states the number."""

    kind: str
    start: int
    clause_start: int
    clause: str

    def value(self) -> float | None:
        """The number the statement gives; a correction counts only when it names one number."""
        if self.kind == "correction":
            values = quantities(drop_negated(first_sentence(self.clause)))
            return values[0] if len(values) == 1 else None
        return clause_value(self.clause)


# A stated answer is short: a clause is not read past this many characters (it also bounds the
# work on degenerate completions that repeat a phrase thousands of times).
CLAUSE_CHARS = 400
_HASH_MARKER = re.compile(r"####")
_ANSWER_PHRASE = re.compile(r"\banswer(?:[ \t]+(?:is|was|would be|will be|should be|must be|"
                            r"equals|comes to)\b|'s\b|[ \t]*[:=])", flags=re.IGNORECASE)
_BOX = re.compile(r"\\(?:boxed|fbox)")
_CORRECTION = re.compile(r"(?:^|(?<=[.!?\n]))[ \t]*(?:(?:actually|wait|correction|oops|sorry),?|no,)"
                         r"[ \t]", flags=re.IGNORECASE)


def closing_braces(text: str) -> dict[int, int]:
    """For each ``{`` of ``text`` that is closed, the offset of its ``}`` (one pass)."""
    closing, open_at = {}, []
    for i, char in enumerate(text):
        if char == "{":
            open_at.append(i)
        elif char == "}" and open_at:
            closing[open_at.pop()] = i
    return closing


def box_content(text: str, start: int, closing: dict[int, int]) -> str:
    """The content of the box whose ``\\boxed`` ends at ``start``: up to the matching brace
    (``closing`` from ``closing_braces``), or the next run of non-space characters for
    ``\\boxed 18``; "" when the brace never closes (the model was cut off inside the box)."""
    brace = len(text[start:]) - len(text[start:].lstrip()) + start
    if not text.startswith("{", brace):
        token = re.match(r"\S+", text[brace:brace + CLAUSE_CHARS])
        return token.group(0) if token else ""
    return text[brace + 1:closing[brace]][:CLAUSE_CHARS] if brace in closing else ""


def find_statements(text: str) -> list[Statement]:
    """Every answer statement of (normalised) ``text``, ordered by where it starts. A clause is
    read at most ``CLAUSE_CHARS`` characters far."""
    def clause(m: re.Match) -> str:
        return text[m.end():m.end() + CLAUSE_CHARS]

    statements = [Statement("marker", m.start(), m.end(), clause(m))
                  for pattern in (_HASH_MARKER, _ANSWER_PHRASE) for m in pattern.finditer(text)]
    closing = closing_braces(text) if "\\boxed" in text or "\\fbox" in text else {}
    statements += [Statement("boxed", m.start(), m.end(), box_content(text, m.end(), closing))
                   for m in _BOX.finditer(text)]
    statements += [Statement("correction", m.start(), m.end(), clause(m))
                   for m in _CORRECTION.finditer(text)]
    return sorted(statements, key=lambda s: s.start)


# ---- run-on text ------------------------------------------------------------------------------
_QUESTION_HEADER = re.compile(r"^[ \t#*]*(?:question|problem|q|human|user|input|exercise|example)"
                              r"[ \t]*\d*[ \t]*[:.)](?!\d)", flags=re.IGNORECASE | re.MULTILINE)


def asks_about_numbers(text: str) -> bool:
    """Whether ``text`` asks a question about numbers: a "?" with a digit before it."""
    mark = text.find("?")
    return mark >= 0 and any(char.isdigit() for char in text[:mark])


def drop_runoff(text: str) -> str:
    """``text`` up to the end of the first answer line after which the completion starts a new
    problem before its next statement: a line that opens with a header such as "Question:" or
    "Problem 2.", or, after a ``#### N`` line, a question about numbers."""
    statements = find_statements(text)
    starts = [statement.start for statement in statements]
    no_new_problem = set()  # (line end, after ####) already looked at
    for statement in statements:
        after_hash = text.startswith("####", statement.start)
        lead = text[statement.clause_start:statement.clause_start + CLAUSE_CHARS]
        line_end = text.find("\n", statement.clause_start + len(lead) - len(lead.lstrip(" \t\n*:")))
        if line_end < 0:
            return text
        if (line_end, after_hash) in no_new_problem:
            continue
        following = bisect.bisect_right(starts, line_end)
        rest = text[line_end:starts[following] if following < len(starts) else len(text)]
        if not (_QUESTION_HEADER.search(rest) or (after_hash and asks_about_numbers(rest))):
            no_new_problem.add((line_end, after_hash))
        elif statement.value() is not None:
            return text[:line_end]
    return text


# ---- the final answer -------------------------------------------------------------------------
def extract_answer(completion: str) -> tuple[float | None, str]:
    """(the final stated number, how it was stated: "boxed" | "marker" | "correction" |
    "last_number" | "none")."""
    text = drop_runoff(normalize_number_text(strip_thinking(completion)))
    for statement in reversed(find_statements(text)):
        value = statement.value()
        if value is not None:
            return value, statement.kind
    value = last_value(text)
    return (value, "last_number") if value is not None else (None, "none")
