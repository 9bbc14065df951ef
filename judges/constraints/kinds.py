"""Verifiable constraints: what a response must look like, stated so a program can check it.

Small local LLM judges label preference pairs at about chance, but many instructions can be
checked exactly ("at most 100 words", "no commas", "end with a question"). Each constraint kind
here is a pydantic spec holding its parameters, e.g. ``{"kind": "word_count", "min": 50, "max":
100}``, and a strict ``check`` that returns a ``Check`` (satisfied, and where it means something
a degree in [0, 1]). The kinds live in ``judges.constraints.format`` (layout) and
``judges.constraints.content`` (wording), and their class docstrings are the rules; the text
measurements are in ``judges.constraints.checkers``. IFEval's 25 instruction ids are kinds too
(``judges.constraints.ifeval``; the kind is the id, the fields its kwargs), so constraint lists
may mix both. This module is the public surface: the union of all kinds, parsing and checking
(where an empty or blank reply satisfies nothing). Each spec also says which phrasing variant
renders it (``variant``), which values fill the placeholders of its phrasings (``fields``),
which text it forces into a response (``required_texts``) and which text it rules out
(``forbids``), so ``judges.constraints.compat`` can keep contradictory constraints apart.
Phrasings live in ``judges/constraints/data/constraint_phrasings.yaml``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter

from judges.constraints.checkers import Check, Doc, Spec
from judges.constraints.content import (
    AllLowercase,
    AllUppercase,
    EndsWith,
    EndsWithQuestion,
    ForbiddenWords,
    IncludeKeywords,
    KeywordFrequency,
    LetterFrequency,
    NoCommas,
    NoDigits,
    OneWordAnswer,
    RepeatRequest,
    StartsWith,
    YesNoAnswer,
)
from judges.constraints.format import (
    BulletCount,
    HighlightedSections,
    JsonFormat,
    NumberedListCount,
    ParagraphCount,
    PlaceholderCount,
    Postscript,
    SectionCount,
    SentenceCount,
    Title,
    WordCount,
    WrappedInQuotes,
)
from judges.constraints.ifeval.instructions import IFEVAL_IDS, IFEVAL_SPECS

__all__ = [
    "IFEVAL_IDS",
    "KINDS",
    "AllLowercase",
    "AllUppercase",
    "BulletCount",
    "Check",
    "Constraint",
    "Doc",
    "EndsWith",
    "EndsWithQuestion",
    "ForbiddenWords",
    "HighlightedSections",
    "IncludeKeywords",
    "JsonFormat",
    "KeywordFrequency",
    "LetterFrequency",
    "NoCommas",
    "NoDigits",
    "NumberedListCount",
    "OneWordAnswer",
    "ParagraphCount",
    "PlaceholderCount",
    "Postscript",
    "RepeatRequest",
    "SectionCount",
    "SentenceCount",
    "Spec",
    "StartsWith",
    "Title",
    "WordCount",
    "WrappedInQuotes",
    "YesNoAnswer",
    "check",
    "parse_constraints",
]

OUR_SPECS: tuple[type[Spec], ...] = (
    WordCount,
    SentenceCount,
    BulletCount,
    NumberedListCount,
    ParagraphCount,
    IncludeKeywords,
    KeywordFrequency,
    ForbiddenWords,
    StartsWith,
    EndsWith,
    AllLowercase,
    AllUppercase,
    WrappedInQuotes,
    JsonFormat,
    Title,
    NoCommas,
    Postscript,
    HighlightedSections,
    PlaceholderCount,
    YesNoAnswer,
    OneWordAnswer,
    RepeatRequest,
    LetterFrequency,
    EndsWithQuestion,
    SectionCount,
    NoDigits,
)

# Every kind a constraint list may hold: ours, then IFEval's 25 ids (``kind`` = the id).
Constraint = Annotated[Union[(*OUR_SPECS, *IFEVAL_SPECS)], Field(discriminator="kind")]  # noqa: UP007

# Our own kinds, the ones ``judges.constraints.prompts`` draws from; IFEval's are in IFEVAL_IDS.
KINDS: tuple[str, ...] = (
    "word_count",
    "sentence_count",
    "bullet_count",
    "numbered_list_count",
    "paragraph_count",
    "include_keywords",
    "keyword_frequency",
    "forbidden_words",
    "starts_with",
    "ends_with",
    "all_lowercase",
    "all_uppercase",
    "wrapped_in_quotes",
    "json_format",
    "title",
    "no_commas",
    "postscript",
    "highlighted_sections",
    "placeholder_count",
    "yes_no_answer",
    "one_word_answer",
    "repeat_request",
    "letter_frequency",
    "ends_with_question",
    "section_count",
    "no_digits",
)


@cache
def _adapter() -> TypeAdapter:
    return TypeAdapter(list[Constraint])


def parse_constraints(
    constraints: str | Iterable[Spec | Mapping[str, Any]],
) -> list[Spec]:
    """Turn constraint specs given as models, dicts or a JSON list (as stored in SQLite) into
    spec models; raises ``pydantic.ValidationError`` (a ValueError) on a bad spec."""
    if isinstance(constraints, str):
        constraints = json.loads(constraints)
    items = list(constraints)
    if all(isinstance(item, Spec) for item in items):
        return items
    return _adapter().validate_python(
        [item.model_dump() if isinstance(item, Spec) else item for item in items]
    )


def check(spec: Spec, text: str | Doc) -> Check:
    """Check one response against one constraint spec. An empty or whitespace-only response
    satisfies no constraint of any kind (it has no commas and few words, but it is no answer).
    """
    doc = text if isinstance(text, Doc) else Doc(text)
    if not doc.text.strip():
        return Check(False, 0.0)
    return spec.check(doc)
