"""Each constraint checker passes what it should and fails what it should, edge cases included;
specs validate their parameters; contradictory constraints are never compatible."""

from __future__ import annotations

import random
import re

import pydantic
import pytest

from judges.constraints.checkers import (
    HIGHLIGHT_RE,
    Doc,
    _is_sentence,
    _plain_sentences,
    count_phrase,
)
from judges.constraints.compat import (
    CONFLICTS,
    EXCLUSIVE,
    all_compatible,
    compatible,
    kinds_compatible,
)
from judges.constraints.ifeval.text import split_sentences
from judges.constraints.kinds import KINDS, check, parse_constraints

LIST_3 = "Some intro.\n\n- one\n- two\n- three\n"
FENCED_JSON = '```json\n{"title": "Tea", "summary": "Hot."}\n```'

# (spec, response, satisfied)
CASES = [
    # word_count: runs of letters/digits, joined by internal apostrophes and hyphens
    ({"kind": "word_count", "min": 3, "max": 3}, "one two three", True),
    ({"kind": "word_count", "min": 3, "max": 3}, "one two", False),
    ({"kind": "word_count", "max": 3}, "don't well-known 3.5", True),
    ({"kind": "word_count", "max": 3}, "a b c d", False),
    ({"kind": "word_count", "min": 2}, "  — ... !! ", False),
    ({"kind": "word_count", "min": 3, "max": 3}, "café naïve Ålesund", True),
    ({"kind": "word_count", "min": 3, "max": 3}, "one, two; three!   \n\n  ", True),
    ({"kind": "word_count", "min": 2, "max": 2}, "snake_case word", False),  # "_" splits
    # sentence_count
    ({"kind": "sentence_count", "min": 3, "max": 3}, "One. Two! Three?", True),
    ({"kind": "sentence_count", "max": 2}, "One. Two! Three?", False),
    ({"kind": "sentence_count", "min": 2, "max": 2}, 'He said "hi." Then he left.', True),
    ({"kind": "sentence_count", "min": 1, "max": 1}, "Pi is 3.14 today.", True),
    ({"kind": "sentence_count", "min": 1, "max": 1}, "Wait... what?", True),  # as punkt
    # issue 16: abbreviations and list markers end no sentence (punkt, as IFEval counts)
    ({"kind": "sentence_count", "min": 4, "max": 4},
     "Dr. Smith came at 5 p.m. on Jan. 3. He left.\n1. First.\n2. Second.", True),
    ({"kind": "sentence_count", "max": 2}, "Mr. Brown met Dr. Green. They talked.", True),
    ({"kind": "sentence_count", "min": 2, "max": 2}, "第一句。第二句。", True),
    ({"kind": "sentence_count", "min": 2, "max": 2}, "A heading\n\nA sentence.", True),
    ({"kind": "sentence_count", "min": 1, "max": 1}, "One sentence.   \n\n \n", True),
    # bullet_count: markdown "-", "*", "+"; numbered items and "•" are not bullets
    ({"kind": "bullet_count", "n": 3}, LIST_3, True),
    ({"kind": "bullet_count", "n": 3}, "- a\n* b\n+ c", True),
    ({"kind": "bullet_count", "n": 3}, "- a\n  - nested\n- c", True),
    ({"kind": "bullet_count", "n": 2}, LIST_3, False),
    ({"kind": "bullet_count", "n": 3}, "1. a\n2. b\n3. c", False),
    ({"kind": "bullet_count", "n": 3}, "• a\n• b\n• c", False),
    ({"kind": "bullet_count", "n": 2}, "- a\n* * *\n- b\n- - -", True),
    ({"kind": "bullet_count", "n": 2}, "-a\n- b\n- c", True),  # "-a" lacks the space
    ({"kind": "bullet_count", "n": 1}, "*bold start* text\n- item", True),
    ({"kind": "bullet_count", "n": 1}, "- item\n```\n- code\n- code\n```", True),
    ({"kind": "bullet_count", "n": 2}, "- a   \r\n- b  \t\n", True),
    # numbered_list_count
    ({"kind": "numbered_list_count", "n": 3}, "1. a\n2. b\n3) c", True),
    ({"kind": "numbered_list_count", "n": 3}, "1. a\n2. b", False),
    ({"kind": "numbered_list_count", "n": 2}, "1. a\n2. b\n- c\n3.5 is a number", True),
    ({"kind": "numbered_list_count", "n": 2}, "  10. a\n  11. b", True),
    # paragraph_count
    ({"kind": "paragraph_count", "n": 2}, "First.\n\nSecond.", True),
    ({"kind": "paragraph_count", "n": 2}, "First.\n  \n\n\nSecond.\n\n", True),
    ({"kind": "paragraph_count", "n": 2}, "First.\nStill first.", False),
    ({"kind": "paragraph_count", "n": 2}, "First.\n\n***\n\nSecond.", True),
    ({"kind": "paragraph_count", "n": 2, "separator": "marker"}, "First.\n***\nSecond.", True),
    ({"kind": "paragraph_count", "n": 2, "separator": "marker"}, "A.\n  ***  \nB.", True),
    ({"kind": "paragraph_count", "n": 2, "separator": "marker"}, "First.\n\nSecond.", False),
    ({"kind": "paragraph_count", "n": 2, "separator": "marker"}, "A.\n***\nB.\n***\n", False),
    ({"kind": "paragraph_count", "n": 2, "separator": "marker"}, "A *** B", True),  # issue 16
    ({"kind": "paragraph_count", "n": 1, "separator": "marker"}, "A ***bold*** B", True),
    # include_keywords: case-insensitive, word boundaries, counts
    ({"kind": "include_keywords", "keywords": ["plan"]}, "A PLAN.", True),
    ({"kind": "include_keywords", "keywords": ["plan"]}, "planning ahead", False),
    ({"kind": "include_keywords", "keywords": ["art"]}, "a party", False),
    ({"kind": "include_keywords", "keywords": ["plan", "time"]}, "plan only", False),
    ({"kind": "include_keywords", "keywords": ["plan"], "min_count": 2}, "plan, Plan", True),
    ({"kind": "include_keywords", "keywords": ["plan"], "min_count": 2}, "plan plans", False),
    ({"kind": "include_keywords", "keywords": ["ice cream"]}, "some ICE\n cream", True),
    ({"kind": "include_keywords", "keywords": ["café"]}, "Le CAFÉ ouvre.", True),
    ({"kind": "include_keywords", "keywords": ["C++"]}, "I like C++.", True),
    ({"kind": "include_keywords", "keywords": ["straße"]}, "DIE STRASSE", True),  # casefold
    ({"kind": "include_keywords", "keywords": ["plan"]}, "_plan and plan_", False),
    ({"kind": "include_keywords", "keywords": ["plan"]}, "plan" + " x" * 5000, True),
    # keyword_frequency
    (
        {"kind": "keyword_frequency", "keyword": "very", "n": 2, "relation": "at_most"},
        "very very good",
        True,
    ),
    (
        {"kind": "keyword_frequency", "keyword": "very", "n": 2, "relation": "at_most"},
        "Very very VERY",
        False,
    ),
    (
        {"kind": "keyword_frequency", "keyword": "step", "n": 2, "relation": "exactly"},
        "step by step, steps",
        True,
    ),
    (
        {"kind": "keyword_frequency", "keyword": "step", "n": 3, "relation": "at_least"},
        "step by step",
        False,
    ),
    # forbidden_words
    ({"kind": "forbidden_words", "words": ["very", "just"]}, "A fine answer.", True),
    ({"kind": "forbidden_words", "words": ["very", "just"]}, "Just fine.", False),
    ({"kind": "forbidden_words", "words": ["just"]}, "justice and adjust", True),
    ({"kind": "forbidden_words", "words": ["good"]}, "(good)", False),
    # starts_with / ends_with: whitespace collapsed, case ignored, punctuation kept
    ({"kind": "starts_with", "phrase": "In short,"}, "  in  SHORT, yes.", True),
    ({"kind": "starts_with", "phrase": "In short,"}, "In short yes.", False),
    ({"kind": "starts_with", "phrase": "In short,"}, "Well. In short, yes.", False),
    ({"kind": "ends_with", "phrase": "Good luck!"}, "Try it.\nGood   luck!  \n\n", True),
    ({"kind": "ends_with", "phrase": "Good luck!"}, "Good luck! Bye.", False),
    ({"kind": "ends_with", "phrase": "Good luck!"}, "Good luck", False),
    ({"kind": "starts_with", "phrase": "In short,"}, "In" + " " * 500 + "short, yes", True),
    ({"kind": "ends_with", "phrase": "Good luck!"}, "Good" + "\n" * 500 + "luck!", True),
    ({"kind": "ends_with", "phrase": "Good luck!"}, "x " * 3000 + "good luck!", True),
    # all_lowercase / all_uppercase
    ({"kind": "all_lowercase"}, "all lower, 123 — ça va?", True),
    ({"kind": "all_lowercase"}, "all lower but I", False),
    ({"kind": "all_lowercase"}, "12345 !!", False),
    ({"kind": "all_lowercase"}, "straße", True),
    ({"kind": "all_lowercase"}, "ÉCOLE", False),
    ({"kind": "all_uppercase"}, "ALL UPPER, ÇA VA? 42", True),
    ({"kind": "all_uppercase"}, "ALL UPPER, Except this", False),
    ({"kind": "all_uppercase"}, "STRAßE", False),
    ({"kind": "all_uppercase"}, "", False),
    # wrapped_in_quotes
    ({"kind": "wrapped_in_quotes"}, '  "Hello there."\n', True),
    ({"kind": "wrapped_in_quotes"}, "“Hello there.”", True),
    ({"kind": "wrapped_in_quotes"}, '"Hello" there', False),
    ({"kind": "wrapped_in_quotes"}, "'Hello there.'", False),
    ({"kind": "wrapped_in_quotes"}, '""', False),
    ({"kind": "wrapped_in_quotes"}, '"', False),
    # json_format: object or array, optionally in one code fence
    ({"kind": "json_format"}, '{"a": 1}', True),
    ({"kind": "json_format"}, "  [1, 2]  \n", True),
    ({"kind": "json_format"}, FENCED_JSON, True),
    ({"kind": "json_format"}, '```\n{"a": 1}\n```', True),
    ({"kind": "json_format"}, 'Here you go: {"a": 1}', False),
    ({"kind": "json_format"}, FENCED_JSON + "\nHope this helps.", False),
    ({"kind": "json_format"}, '{"a": 1,}', False),
    ({"kind": "json_format"}, '"just a string"', True),  # issue 16: any JSON value
    ({"kind": "json_format"}, "42", True),
    ({"kind": "json_format"}, " null ", True),
    ({"kind": "json_format", "keys": ["a"]}, "null", False),
    ({"kind": "json_format", "keys": ["title", "summary"]}, FENCED_JSON, True),
    ({"kind": "json_format", "keys": ["title", "author"]}, FENCED_JSON, False),
    ({"kind": "json_format", "keys": ["title"]}, '[{"title": "x"}]', False),
    ({"kind": "json_format", "keys": ["Title"]}, '{"title": "x"}', False),
    # title
    ({"kind": "title"}, "<<A Day Out>>\n\nText.", True),
    ({"kind": "title"}, "Text then <<Título único>>.", True),
    ({"kind": "title"}, "<< >> and <title>", False),
    ({"kind": "title"}, "<<split\ntitle>>", False),
    ({"kind": "title"}, "```\n<<in code>>\n```", False),
    # no_commas
    ({"kind": "no_commas"}, "No commas here. None at all!", True),
    ({"kind": "no_commas"}, "Yes, one.", False),
    ({"kind": "no_commas"}, "中文，逗号", False),
    ({"kind": "no_commas"}, "نعم، هذا", False),
    # postscript
    ({"kind": "postscript"}, "Main text.\n\nP.S. One more thing.", True),
    ({"kind": "postscript"}, "Main text.\n   p.s. lowercase works", True),
    ({"kind": "postscript"}, "P.S. only a postscript", False),
    ({"kind": "postscript"}, "Main text.\nP.S.", False),
    ({"kind": "postscript"}, "Main text. P.S. inline does not count", False),
    ({"kind": "postscript"}, "Main text.\n**P.S.** decorated", True),  # issue 16
    ({"kind": "postscript"}, "Main text.\nP.S: no final dot", True),
    ({"kind": "postscript"}, "Main text.\nP.Sam is a name", False),
    ({"kind": "postscript", "marker": "P.P.S"}, "Main.\nP.P.S: b", True),
    ({"kind": "postscript", "marker": "P.P.S."}, "Main.\n*P.P.S* b", True),
    ({"kind": "postscript"}, "Main text.\nP.P.S. not a P.S. line", False),
    ({"kind": "postscript", "marker": "P.P.S."}, "Main.\nP.S. a\nP.P.S. b", True),
    # highlighted_sections
    ({"kind": "highlighted_sections", "n": 2}, "Note *this* and **that**.", True),
    ({"kind": "highlighted_sections", "n": 2}, "Note *this* only.", False),
    ({"kind": "highlighted_sections", "n": 1}, "* item\n* other", False),
    ({"kind": "highlighted_sections", "n": 1}, "2*3*4 and * spaced *", False),
    ({"kind": "highlighted_sections", "n": 1}, "*split\nline*", False),
    ({"kind": "highlighted_sections", "n": 2}, "*héllo wörld* and *日本*", True),
    ({"kind": "highlighted_sections", "n": 1}, "***\n*real*", True),
    ({"kind": "highlighted_sections", "n": 1}, "Say ***bold italic*** once.", True),  # issue 16
    ({"kind": "highlighted_sections", "n": 2}, "Say ***bold italic*** once.", False),
    # placeholder_count
    ({"kind": "placeholder_count", "n": 2}, "Dear [name], at [address].", True),
    ({"kind": "placeholder_count", "n": 2}, "Dear [name], see [the docs](http://x).", False),
    ({"kind": "placeholder_count", "n": 1}, "Empty [] and [ ] and [...]", False),
    ({"kind": "placeholder_count", "n": 1}, "```\nx = a[0]\n```", False),
    # yes_no_answer
    ({"kind": "yes_no_answer"}, "Yes.", True),
    ({"kind": "yes_no_answer"}, "  NO!\n", True),
    ({"kind": "yes_no_answer"}, "Yes, because it is.", False),
    ({"kind": "yes_no_answer"}, "Maybe", False),
    # one_word_answer
    ({"kind": "one_word_answer"}, "Paris.", True),
    ({"kind": "one_word_answer"}, "  well-known  ", True),
    ({"kind": "one_word_answer"}, "Zürich", True),
    ({"kind": "one_word_answer"}, "New York", False),
    ({"kind": "one_word_answer"}, "...", False),
    ({"kind": "one_word_answer"}, "**Paris**", True),  # issue 16
    ({"kind": "one_word_answer"}, '"Paris".', True),
    ({"kind": "one_word_answer"}, "**New York**", False),
    # repeat_request
    (
        {"kind": "repeat_request", "request": "Explain why bread goes stale."},
        "Explain why bread  goes stale.\nBecause it dries out.",
        True,
    ),
    (
        {"kind": "repeat_request", "request": "Explain why bread goes stale."},
        "EXPLAIN WHY BREAD GOES STALE. IT DRIES.",
        True,
    ),
    (
        {"kind": "repeat_request", "request": "Explain why bread goes stale."},
        "Explain why bread goes stale.",
        False,
    ),
    (
        {"kind": "repeat_request", "request": "Explain why bread goes stale."},
        "Bread goes stale because it dries out.",
        False,
    ),
    (
        {"kind": "repeat_request", "request": "Explain why bread goes stale."},
        "Explain why bread goes stale.\n" + "— " * 400 + "Answer.",
        True,
    ),
    (
        {"kind": "repeat_request", "request": "Explain why bread goes stale."},
        "Explain why bread goes stale.\n" + "— " * 400,
        False,
    ),
    # letter_frequency
    ({"kind": "letter_frequency", "letter": "e", "n": 3, "relation": "at_least"}, "EeE", True),
    ({"kind": "letter_frequency", "letter": "e", "n": 3, "relation": "at_least"}, "éèe", False),
    ({"kind": "letter_frequency", "letter": "z", "n": 1, "relation": "at_most"}, "a zoo", True),
    ({"kind": "letter_frequency", "letter": "z", "n": 1, "relation": "at_most"}, "zz", False),
    ({"kind": "letter_frequency", "letter": "s", "n": 0, "relation": "at_most"}, "Maße", True),
    # ends_with_question: language-agnostic question marks, closing marks allowed
    ({"kind": "ends_with_question"}, "Any questions?  \n", True),
    ({"kind": "ends_with_question"}, 'She asked, "Why?"', True),
    ({"kind": "ends_with_question"}, "Any questions? *", True),
    ({"kind": "ends_with_question"}, "你明白吗？", True),
    ({"kind": "ends_with_question"}, "هل فهمت؟", True),
    ({"kind": "ends_with_question"}, "Τι κάνεις\u037e", True),
    ({"kind": "ends_with_question"}, "Is it? It is.", False),
    ({"kind": "ends_with_question"}, "", False),
    # section_count
    ({"kind": "section_count", "n": 2}, "Section 1\nText.\n\nSection 2\nMore.", True),
    ({"kind": "section_count", "n": 2}, "## SECTION 1\nA\n**Section 2**\nB", True),
    ({"kind": "section_count", "n": 2}, "Section 1\nText.", False),
    ({"kind": "section_count", "n": 2, "marker": "Part"}, "Part 1\nA\nPart 2\nB\nSection 3", True),
    ({"kind": "section_count", "n": 1}, "Section one\nSection 1\nsee Section 2", True),
    # no_digits
    ({"kind": "no_digits"}, "Twenty three apples.", True),
    ({"kind": "no_digits"}, "23 apples.", False),
    ({"kind": "no_digits"}, "٣ apples.", False),
]


@pytest.mark.parametrize(("spec", "text", "expected"), CASES)
def test_checker(spec: dict, text: str, expected: bool) -> None:
    [parsed] = parse_constraints([spec])
    result = check(parsed, text)
    assert result.satisfied is expected
    if result.degree is not None:
        assert 0.0 <= result.degree <= 1.0
        assert (result.degree == 1.0) or not expected


def test_every_kind_has_passing_and_failing_cases() -> None:
    outcomes = {(spec["kind"], expected) for spec, _, expected in CASES}
    for kind in KINDS:
        assert (kind, True) in outcomes and (kind, False) in outcomes, kind
    assert len(KINDS) >= 20


@pytest.mark.parametrize(
    ("spec", "text", "degree"),
    [
        ({"kind": "word_count", "min": 4}, "one two", 0.5),
        ({"kind": "word_count", "max": 2}, "a b c d", 0.5),
        ({"kind": "bullet_count", "n": 4}, "- a\n- b", 0.5),
        ({"kind": "include_keywords", "keywords": ["a", "b", "c", "d"]}, "a b", 0.5),
        ({"kind": "forbidden_words", "words": ["x", "y"]}, "x", 0.5),
        ({"kind": "all_lowercase"}, "abC", 2 / 3),
        ({"kind": "json_format", "keys": ["a", "b"]}, '{"a": 1}', 0.5),
        ({"kind": "json_format"}, "not json", 0.0),
        ({"kind": "letter_frequency", "letter": "e", "n": 4, "relation": "at_least"}, "ee", 0.5),
        ({"kind": "highlighted_sections", "n": 4}, "*a* *b*", 0.5),
        ({"kind": "wrapped_in_quotes"}, "no quotes", None),
    ],
)
def test_degree(spec: dict, text: str, degree: float | None) -> None:
    assert check(parse_constraints([spec])[0], text).degree == pytest.approx(degree)


@pytest.mark.parametrize(
    "spec",
    [
        {"kind": "word_count"},
        {"kind": "word_count", "min": 10, "max": 5},
        {"kind": "bullet_count", "n": 0},
        {"kind": "include_keywords", "keywords": []},
        {"kind": "include_keywords", "keywords": ["  "]},
        {"kind": "starts_with", "phrase": ""},
        {"kind": "letter_frequency", "letter": "ab", "n": 1, "relation": "at_most"},
        {"kind": "letter_frequency", "letter": "7", "n": 1, "relation": "at_most"},
        {"kind": "no_commas", "extra": 1},
        {"kind": "paragraph_count", "n": 2, "separator": "dash"},
        {"kind": "section_count", "n": 2, "marker": "Sec 1"},
        {"kind": "no_such_kind"},
    ],
)
def test_bad_specs_are_rejected(spec: dict) -> None:
    with pytest.raises(pydantic.ValidationError):
        parse_constraints([spec])


def test_parse_accepts_models_dicts_and_json_text() -> None:
    specs = parse_constraints('[{"kind": "no_commas"}, {"kind": "word_count", "max": 5}]')
    assert [s.kind for s in specs] == ["no_commas", "word_count"]
    assert parse_constraints(specs) == specs
    assert parse_constraints([specs[0], {"kind": "title"}])[1].kind == "title"
    assert parse_constraints(specs)[1].model_dump() == {"kind": "word_count", "min": None, "max": 5}


def test_doc_measures_each_text_once() -> None:
    doc = Doc("- a\n- b")
    assert doc.bullet_count == 2
    assert "bullet_count" in doc.__dict__  # cached for the next constraint


# --- compatibility ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("all_lowercase", "all_uppercase"),
        ("json_format", "bullet_count"),
        ("json_format", "no_commas"),
        ("one_word_answer", "word_count"),
        ("one_word_answer", "bullet_count"),
        ("yes_no_answer", "repeat_request"),
        ("yes_no_answer", "one_word_answer"),
        ("wrapped_in_quotes", "starts_with"),
        ("no_digits", "numbered_list_count"),
        ("word_count", "word_count"),
    ],
)
def test_declared_conflicts(a: str, b: str) -> None:
    assert not kinds_compatible(a, b)
    assert not kinds_compatible(b, a)


def test_conflict_table_names_real_kinds() -> None:
    named = {kind for pair in CONFLICTS for kind in pair} | set(EXCLUSIVE)
    named |= {kind for allowed in EXCLUSIVE.values() for kind in allowed}
    assert named <= set(KINDS)


def _specs(*items: dict):
    return parse_constraints(list(items))


@pytest.mark.parametrize(
    ("a", "b", "ok"),
    [
        ({"kind": "no_commas"}, {"kind": "repeat_request", "request": "Hi, you."}, False),
        ({"kind": "no_commas"}, {"kind": "repeat_request", "request": "Hi you."}, True),
        ({"kind": "no_commas"}, {"kind": "starts_with", "phrase": "In short,"}, False),
        (
            {"kind": "forbidden_words", "words": ["plan"]},
            {"kind": "include_keywords", "keywords": ["plan"]},
            False,
        ),
        (
            {"kind": "forbidden_words", "words": ["plan"]},
            {"kind": "include_keywords", "keywords": ["planet"]},
            True,
        ),
        (
            {"kind": "forbidden_words", "words": ["good"]},
            {"kind": "ends_with", "phrase": "Good luck!"},
            False,
        ),
        (
            {"kind": "keyword_frequency", "keyword": "plan", "n": 2, "relation": "at_most"},
            {"kind": "include_keywords", "keywords": ["plan"], "min_count": 3},
            False,
        ),
        (
            {"kind": "letter_frequency", "letter": "z", "n": 1, "relation": "at_most"},
            {"kind": "starts_with", "phrase": "Zzz"},
            False,
        ),
        ({"kind": "no_digits"}, {"kind": "repeat_request", "request": "List 3 ideas."}, False),
        ({"kind": "ends_with", "phrase": "Any questions?"}, {"kind": "ends_with_question"}, True),
        ({"kind": "ends_with", "phrase": "Good luck!"}, {"kind": "ends_with_question"}, False),
        ({"kind": "word_count", "max": 20}, {"kind": "paragraph_count", "n": 3}, False),
        ({"kind": "word_count", "max": 100}, {"kind": "paragraph_count", "n": 3}, True),
        ({"kind": "word_count", "min": 300}, {"kind": "sentence_count", "max": 3}, False),
        (
            {"kind": "word_count", "max": 5},
            {"kind": "repeat_request", "request": "Explain why bread goes stale."},
            False,
        ),
        ({"kind": "sentence_count", "max": 2}, {"kind": "paragraph_count", "n": 3}, False),
        ({"kind": "all_lowercase"}, {"kind": "postscript"}, True),
        ({"kind": "one_word_answer"}, {"kind": "no_commas"}, True),
    ],
)
def test_parameter_compatibility(a: dict, b: dict, ok: bool) -> None:
    spec_a, spec_b = _specs(a, b)
    assert compatible(spec_a, spec_b) is ok
    assert compatible(spec_b, spec_a) is ok
    assert all_compatible([spec_a, spec_b]) is ok


# --- fast patterns agree with their plain reference forms ------------------------------------

REFERENCE_HIGHLIGHT = re.compile(r"(?<![*\w])(\*{1,3})(?![\s*])([^*\n]+?)(?<![\s*])\1(?![*\w])")


def _random_texts(count: int = 3000) -> list[str]:
    rng = random.Random(0)
    alphabet = list("ab AZ.!?…。！\n\n \t**_-'\"”),3é") + ["plan", "Plan", "***", "e.g. "]
    return ["".join(rng.choices(alphabet, k=rng.randint(0, 40))) for _ in range(count)]


PUNKT_WORDS = re.findall(r"\S+", """
the cat Dr. dr. Mr. p.m. e.g. etc. U.S. No. vs. Inc. Jan. St. a. I. 3. 1. 10. end. end? end!
end!! why?! (hi.) "hi." 'so.' Then then He But ... wait... … word. word.. x. B. J. o. co. ok.
Ok. well-dr. 3.5 $5. v1.2 A The In is ' " ( ) ? ! . - Section 1) a) ii. iv. *bold*. [name].
*a* _x_. **b**! light*. [x] word*? *fresh [idea] 'quote "Then (then -dash #tag @me {x} x: x;
**Bold** _it_ `code`. «Oui». - * • # -- -> 2) — – !! ? 42. 7! A. Z? q. x.y. 3.14.
""")


def test_sentence_shortcut_matches_punkt() -> None:
    """Blocks counted without Punkt (plain words before every end) count as Punkt counts."""
    rng = random.Random(0)
    shortcut = 0
    for _ in range(1500):
        text = " ".join(rng.choice(PUNKT_WORDS) for _ in range(rng.randint(1, 15)))
        text = text.replace(" ", "\n", rng.choice([0, 0, 1, 2]))
        pieces = _plain_sentences(text)
        if pieces is None:
            continue
        shortcut += 1
        assert sum(map(_is_sentence, pieces)) == sum(
            map(_is_sentence, split_sentences(text))), repr(text)
    assert shortcut > 500


def test_highlight_pattern_matches_reference() -> None:
    for text in _random_texts():
        fast = [m.span() for m in HIGHLIGHT_RE.finditer(text)]
        assert fast == [m.span() for m in REFERENCE_HIGHLIGHT.finditer(text)], repr(text)


def test_phrase_count_matches_reference() -> None:
    reference = re.compile(r"(?<!\w)plan(?!\w)")
    for text in _random_texts():
        folded = text.casefold()
        assert count_phrase(folded, "plan") == len(reference.findall(folded)), repr(text)


def test_letter_case_counts_match_reference() -> None:
    for text in [*_random_texts(300), "ÀÉ straße ǅ", "ABC def"]:
        expected = (sum(c.islower() for c in text), sum(c.isupper() for c in text))
        assert Doc(text).cased_letters == expected
