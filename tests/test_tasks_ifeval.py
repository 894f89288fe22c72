"""IFEval: every supported instruction id passes and fails where it should; loose scoring;
unsupported ids are neither passes nor failures."""
import pytest

from jaxdistill.tasks import OK, SUPPORTED_INSTRUCTIONS, UNSUPPORTED, Example, get_task, summarize
from jaxdistill.tasks.ifeval import follows, instruction_counts, loose_variants, split_sentences

# (instruction id, kwargs, a response that follows it, a response that does not)
CASES = [
    ("punctuation:no_comma", {}, "No commas here at all.", "Here, a comma."),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 5},
     "one two three four five", "one two three four"),
    ("length_constraints:number_words", {"relation": "less than", "num_words": 5},
     "one two three four", "one two three four five"),
    ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3},
     "Dr. Smith paid $3.50 today. He left.", "One. Two! Three?"),
    ("length_constraints:number_sentences", {"relation": "at least", "num_sentences": 3},
     "One. Two! Three?", "J. K. Rowling wrote it, e.g. the first book. Fine."),
    ("keywords:forbidden_words", {"forbidden_words": ["rock", "stone"]},
     "Rocket science and rocks-free soil.", "A Rock fell."),
    ("detectable_format:number_highlighted_sections", {"num_highlights": 2},
     "*first part* and **second part**", "*only one* and ** ** and **"),
    ("keywords:frequency", {"keyword": "war", "relation": "at least", "frequency": 3},
     "War, WAR and war.", "war and war"),
    ("keywords:frequency", {"keyword": "peace", "relation": "less than", "frequency": 2},
     "peace", "Peace and peace"),
    ("combination:repeat_prompt", {"prompt_to_repeat": "Write a poem about cats."},
     "write a poem about cats. Cats are soft.", "Here is a poem about cats."),
    ("startend:quotation", {}, '  "Wrapped in quotes."  ', '"Only opening quote.'),
    ("change_case:english_lowercase", {}, "all lower case, 42 times.", "Not all lower case."),
    ("keywords:existence", {"keywords": ["mom", "mother"]}, "My Mother and mom.",
     "Only my mom."),
    ("detectable_format:title", {}, "<<A Poem of Joy>>\nverse", "<< >> no title\n<<broken"),
    ("keywords:letter_frequency", {"letter": "o", "let_relation": "less than",
                                   "let_frequency": 3}, "foo", "Foo bOOk"),
    ("keywords:letter_frequency", {"letter": "#", "let_relation": "at least",
                                   "let_frequency": 2}, "# one # two", "# one"),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n- two",
     "* one\n* two\n* three"),
    ("detectable_content:number_placeholders", {"num_placeholders": 2},
     "Dear [name], at [address].", "Dear [name], at address."),
    ("length_constraints:number_paragraphs", {"num_paragraphs": 2},
     "First part.\n***\nSecond part.", "First.\n***\n***\nSecond."),
    ("startend:end_checker", {"end_phrase": "Is there anything else I can help with?"},
     'Sure.\nIs there anything else I can help with?"',
     "Is there anything else I can help with? No."),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "Hi.\n\nP.S. see you",
     "Hi.\nPS see you"),
    ("detectable_content:postscript", {"postscript_marker": "P.P.S"}, "Hi.\np. p. s. bye",
     "Hi.\nP.S. bye"),
    ("change_case:english_capital", {}, "ALL CAPS, 100%!", "ALL CAPS but one word"),
    ("change_case:capital_word_frequency", {"capital_relation": "at least",
                                            "capital_frequency": 2}, "The USA and NASA.",
     "The USA and Nasa."),
    ("change_case:capital_word_frequency", {"capital_relation": "less than",
                                            "capital_frequency": 2}, "Only NASA here.",
     "NASA, ESA and JAXA."),
    ("combination:two_responses", {}, "Answer one.\n******\nAnswer two.",
     "Same.\n******\nSame."),
    ("detectable_format:json_format", {}, '```json\n{"a": [1, 2]}\n```', "{'a': 1}"),
    ("detectable_format:multiple_sections", {"section_spliter": "SECTION", "num_sections": 2},
     "SECTION 1\nintro\nSECTION 2\nbody", "SECTION 1\nintro\nSection two"),
    ("length_constraints:nth_paragraph_first_word",
     {"num_paragraphs": 2, "nth_paragraph": 2, "first_word": "weekend"},
     "Plans.\n\n\"Weekend, at last.\"", "Plans.\n\nThe weekend.\n\nMore."),
    ("detectable_format:constrained_response", {}, "Well... My answer is maybe.",
     "My answer is perhaps."),
]


@pytest.mark.parametrize("instruction_id, kwargs, passing, failing", CASES)
def test_each_instruction_passes_and_fails(instruction_id, kwargs, passing, failing):
    assert follows(instruction_id, passing, kwargs) is True
    assert follows(instruction_id, failing, kwargs) is False


def test_every_supported_id_has_cases():
    assert {case[0] for case in CASES} == set(SUPPORTED_INSTRUCTIONS)


def test_supported_ids_cover_the_ten_most_frequent(shared_dir, capsys):
    examples = get_task("ifeval").load("test", shared_dir / "data" / "ifeval")
    assert len(examples) == 541
    counts = instruction_counts(examples)
    top_ten_count = sorted(counts.values(), reverse=True)[9]
    frequent = {i for i, n in counts.items() if n >= top_ten_count}
    assert len(frequent) >= 10 and frequent <= set(SUPPORTED_INSTRUCTIONS)
    supported = sum(n for i, n in counts.items() if i in SUPPORTED_INSTRUCTIONS)
    with capsys.disabled():
        print(f"\nIFEval: {len(SUPPORTED_INSTRUCTIONS)} of {len(counts)} ids supported, "
              f"{supported} of {sum(counts.values())} instructions")


def test_unknown_ids_and_bad_kwargs_are_unsupported_not_failed():
    assert follows("language:response_language", "hello", {"language": "en"}) is None
    assert follows("made:up", "hello", {}) is None
    assert follows("length_constraints:number_words", "hi", {"relation": "about",
                                                              "num_words": 3}) is None
    assert follows("keywords:frequency", "hi", {}) is None


def test_loose_scoring_forgives_a_preamble_and_markdown():
    kwargs = {"keyword": "apple", "relation": "less than", "frequency": 1}
    response = "Sure, here is a text without apple:\nA banana."
    assert follows("keywords:frequency", response, kwargs) is False
    assert follows("keywords:frequency", response, kwargs, loose=True) is True
    assert follows("startend:quotation", '**"Quoted"**', {}) is False
    assert follows("startend:quotation", '**"Quoted"**', {}, loose=True) is True
    assert len(loose_variants("a\nb\nc")) == 8
    # an empty response follows nothing, even "no commas"
    assert follows("punctuation:no_comma", "   ", {}) is False
    assert follows("punctuation:no_comma", "   ", {}, loose=True) is False


def test_sentence_splitter():
    assert split_sentences("Mr. Smith paid 3.5 dollars. He left! Did he? Yes.") == [
        "Mr. Smith paid 3.5 dollars.", "He left!", "Did he?", "Yes."]
    assert len(split_sentences('He said "stop." Then he went.')) == 2
    assert split_sentences("no end mark") == ["no end mark"]
    assert split_sentences("") == []


def _example(ids, kwargs):
    return Example(prompt="?", solution="", answer="",
                   meta={"key": 0, "instruction_ids": ids, "kwargs": kwargs})


def test_verify_scores_supported_instructions_only():
    task = get_task("ifeval")
    mixed = _example(["punctuation:no_comma", "language:response_language",
                      "change_case:english_lowercase"], [{}, {"language": "de"}, {}])
    verdict = task.verify("Hello world", mixed)
    assert verdict.status == OK and verdict.reward == 0.5
    assert verdict.details["prompt_strict"] == 0.0 and verdict.details["n_unsupported"] == 1.0
    only_unsupported = _example(["language:response_language"], [{"language": "de"}])
    verdict = task.verify("Hallo Welt", only_unsupported)
    assert verdict.status == UNSUPPORTED
    summary = summarize([task.verify("hello world", mixed), verdict])
    assert summary["n_scored"] == 1 and summary["accuracy"] == 1.0
    assert summary["unsupported_rate"] == 0.5


def test_verify_on_real_prompts(shared_dir):
    task = get_task("ifeval")
    examples = task.load("test", shared_dir / "data" / "ifeval")
    verdicts = [task.verify("a short plain reply", e) for e in examples]
    statuses = {v.status for v in verdicts}
    assert statuses <= {OK, UNSUPPORTED} and OK in statuses
    assert all(0.0 <= v.reward <= 1.0 for v in verdicts)
    # the hub copy fills unused kwargs with None: those are dropped
    row = {"key": 1, "prompt": "p", "instruction_id_list": ["punctuation:no_comma"],
           "kwargs": [{"num_words": None, "relation": None}]}
    assert task.parse_row(row).meta["kwargs"] == [{}]
