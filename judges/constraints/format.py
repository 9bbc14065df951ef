"""Constraint kinds about the shape of a response: length, lists, paragraphs, sections, marks.

These specs count things (words, sentences, bullet and numbered items, paragraphs, section
headers, highlighted spans, placeholders) or look for a layout (a <<title>>, a P.S. line, a
JSON body, surrounding quotes). The docstring of each class is its exact rule; the shared
text measurements are in ``judges.constraints.checkers`` and the full list of kinds in
``judges.constraints.kinds``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache
from typing import Annotated, Literal

from pydantic import Field, model_validator

from judges.constraints.checkers import (
    NOT_JSON,
    WORD_CHAR_RE,
    Check,
    Count,
    Doc,
    Phrase,
    Spec,
    count_range_degree,
    exact_degree,
    quoted_list,
    relation_check,
)


class _Bounds(Spec):
    min: Count | None = None
    max: Count | None = None

    @model_validator(mode="after")
    def _ordered(self) -> _Bounds:
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min must not exceed max")
        return self

    @property
    def variant(self) -> str:
        if self.min is not None and self.max is not None:
            return "range"
        return "min" if self.min is not None else "max"

    def fields(self) -> dict[str, str]:
        return {"min": str(self.min), "max": str(self.max)}

    def _check_count(self, count: int) -> Check:
        low, high = self.min, self.max
        ok = (low is None or count >= low) and (high is None or count <= high)
        return Check(ok, count_range_degree(count, low, high))


class WordCount(_Bounds):
    """Number of words within [min, max] (either bound optional). A word is a run of letters
    or digits; "don't", "well-known" and "3.5" are one word each (see ``checkers.WORD_RE``).
    Degree: count/min below the range, max/count above it."""

    kind: Literal["word_count"] = "word_count"

    def check(self, doc: Doc) -> Check:
        return self._check_count(doc.word_count)


class SentenceCount(_Bounds):
    """Number of sentences within [min, max]: NLTK Punkt's English sentences (as IFEval counts
    them: "Dr.", "p.m." and list markers such as "1." end no sentence), after cutting at
    blank lines and CJK full stops; pieces without a letter or digit are not sentences."""

    kind: Literal["sentence_count"] = "sentence_count"

    def check(self, doc: Doc) -> Check:
        return self._check_count(doc.sentence_count)


class BulletCount(Spec):
    """Exactly ``n`` bullet items: lines starting with the markdown markers "-", "*" or "+"
    followed by a space and text (nested items count; "* * *" rules, numbered items and
    other symbols such as "•" do not; lines inside code fences are ignored)."""

    kind: Literal["bullet_count"] = "bullet_count"
    n: Annotated[int, Field(ge=1, le=100)]

    def fields(self) -> dict[str, str]:
        return {"n": str(self.n)}

    def check(self, doc: Doc) -> Check:
        return Check(doc.bullet_count == self.n, exact_degree(doc.bullet_count, self.n))


class NumberedListCount(Spec):
    """Exactly ``n`` numbered items: lines starting with digits, then "." or ")", a space and
    text ("1. ...", "2) ..."); the numbers themselves are not checked for order. Lines inside
    code fences are ignored."""

    kind: Literal["numbered_list_count"] = "numbered_list_count"
    n: Annotated[int, Field(ge=1, le=100)]

    def fields(self) -> dict[str, str]:
        return {"n": str(self.n)}

    def check(self, doc: Doc) -> Check:
        return Check(doc.numbered_count == self.n, exact_degree(doc.numbered_count, self.n))


class ParagraphCount(Spec):
    """Exactly ``n`` paragraphs. ``separator="blank_line"``: paragraphs are runs of non-blank
    lines separated by one or more blank lines; chunks without letters or digits (such as a
    lone "***") are ignored. ``separator="marker"``: the text is cut at lines consisting of
    "***" standing alone (on its own line or between spaces inside a line, as IFEval allows)
    and every piece, including the first and the last, must hold text."""

    kind: Literal["paragraph_count"] = "paragraph_count"
    n: Annotated[int, Field(ge=1, le=100)]
    separator: Literal["blank_line", "marker"] = "blank_line"

    @property
    def variant(self) -> str:
        return self.separator

    def fields(self) -> dict[str, str]:
        return {"n": str(self.n)}

    def check(self, doc: Doc) -> Check:
        if self.separator == "blank_line":
            count = doc.blank_line_paragraphs
            return Check(count == self.n, exact_degree(count, self.n))
        count, has_empty = doc.marker_paragraphs
        return Check(count == self.n and not has_empty, exact_degree(count, self.n))


class SectionCount(Spec):
    """Exactly ``n`` lines that start a section: the ``marker`` word (case ignored) and a
    number, e.g. "Section 1", optionally after a markdown heading "#" or bold "**". Code
    fences are ignored; the numbers are not checked for order."""

    kind: Literal["section_count"] = "section_count"
    n: Annotated[int, Field(ge=1, le=100)]
    marker: Annotated[str, Field(min_length=1, max_length=30, pattern=r"^[^\W\d_]+$")] = "Section"

    def fields(self) -> dict[str, str]:
        return {"n": str(self.n), "marker": self.marker}

    def required_texts(self) -> list[str]:
        return [f"{self.marker} 1"]

    def check(self, doc: Doc) -> Check:
        count = len(_section_pattern(self.marker).findall(doc.prose))
        return Check(count == self.n, exact_degree(count, self.n))


@cache
def _section_pattern(marker: str) -> re.Pattern[str]:
    return re.compile(
        rf"^[ \t]*(?:#{{1,6}}[ \t]*)?(?:\*\*)?{re.escape(marker)}[ \t]+\d+\b", re.M | re.I
    )


class WrappedInQuotes(Spec):
    """After stripping whitespace, the response starts and ends with a double quote, either
    ASCII ("...") or typographic (“...”), with some text between them."""

    kind: Literal["wrapped_in_quotes"] = "wrapped_in_quotes"

    def check(self, doc: Doc) -> Check:
        text = doc.stripped
        if len(text) < 2 or (text[0], text[-1]) not in {('"', '"'), ("“", "”")}:
            return Check(False)
        return Check(WORD_CHAR_RE.search(text[1:-1]) is not None)


class JsonFormat(Spec):
    """The whole response is one JSON value (object, array, string, number, true, false or
    null, so "42" and "null" count), optionally inside a single code fence such as
    ```json ... ``` with nothing outside it. With ``keys``, the value must be an object
    holding each key (exact match). Degree: 0 when it does not parse, else the share of keys
    present."""

    kind: Literal["json_format"] = "json_format"
    keys: Annotated[list[Phrase], Field(max_length=20)] = []

    @property
    def variant(self) -> str:
        return "keys" if self.keys else "plain"

    def fields(self) -> dict[str, str]:
        return {"keys": quoted_list(self.keys) if self.keys else ""}

    def required_texts(self) -> list[str]:
        return list(self.keys)

    def check(self, doc: Doc) -> Check:
        value = doc.json_value
        if value is NOT_JSON:
            return Check(False, 0.0)
        if not self.keys:
            return Check(True, 1.0)
        if not isinstance(value, dict):
            return Check(False, 0.0)
        present = sum(key in value for key in self.keys)
        return Check(present == len(self.keys), present / len(self.keys))


class Title(Spec):
    """Somewhere outside code fences there is a title in double angle brackets,
    <<like this>>, on one line and holding at least one letter or digit."""

    kind: Literal["title"] = "title"

    def check(self, doc: Doc) -> Check:
        return Check(bool(doc.titles))


class Postscript(Spec):
    """A line that starts (after spaces) with ``marker``, followed by some text on that line,
    after a body that holds text. Case is ignored, the marker's final dot is optional
    ("P.P.S" is "P.P.S."), emphasis around it and a colon after it are allowed ("**P.S.**",
    "P.P.S:"). "P.P.S." lines do not count as "P.S." lines."""

    kind: Literal["postscript"] = "postscript"
    marker: Literal["P.S.", "P.P.S.", "P.P.S"] = "P.S."

    def fields(self) -> dict[str, str]:
        return {"marker": self.marker}

    def required_texts(self) -> list[str]:
        return [self.marker]

    def check(self, doc: Doc) -> Check:
        pattern = _postscript_pattern(self.marker.rstrip("."))
        for line_start, line in _lines_with_offsets(doc.text):
            if pattern.match(line) and WORD_CHAR_RE.search(doc.text[:line_start]):
                return Check(True)
        return Check(False)


@cache
def _postscript_pattern(marker: str) -> re.Pattern[str]:
    """The marker at the line start (final dot optional, not run on into a word or another
    dot), emphasis marks around it, then a letter or digit later on the line."""
    return re.compile(
        rf"[ \t]*[*_]{{0,3}}{re.escape(marker)}(?:\.(?!\w)|(?![.\w]))(?=.*[^\W_])", re.I
    )


def _lines_with_offsets(text: str) -> Iterable[tuple[int, str]]:
    offset = 0
    for line in text.split("\n"):
        yield offset, line
        offset += len(line) + 1


class HighlightedSections(Spec):
    """At least ``n`` highlighted spans, *like this* or **like this**, each on one line
    without spaces just inside the asterisks (so "* item" and "2*3*4" are not highlights).
    Code fences are ignored. Degree: count/n."""

    kind: Literal["highlighted_sections"] = "highlighted_sections"
    n: Annotated[int, Field(ge=1, le=100)]

    def fields(self) -> dict[str, str]:
        return {"n": str(self.n)}

    def check(self, doc: Doc) -> Check:
        return relation_check(doc.highlight_count, "at_least", self.n)


class PlaceholderCount(Spec):
    """At least ``n`` placeholders in square brackets, such as [name] or [street address],
    each on one line with a letter or digit inside; "[text](url)" links do not count and
    code fences are ignored. Degree: count/n."""

    kind: Literal["placeholder_count"] = "placeholder_count"
    n: Annotated[int, Field(ge=1, le=100)]

    def fields(self) -> dict[str, str]:
        return {"n": str(self.n)}

    def check(self, doc: Doc) -> Check:
        return relation_check(doc.placeholder_count, "at_least", self.n)
