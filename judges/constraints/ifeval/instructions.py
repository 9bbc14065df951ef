"""IFEval's 25 instruction ids as constraint kinds, with IFEval's kwargs and verdicts.

Each class is one IFEval id: its ``kind`` is the id (``"punctuation:no_comma"``), its fields are
the id's kwargs exactly as IFEval files spell them (``num_words``, ``relation``, ...), and its
``check`` gives the verdict the reference implementation (Google's checkers, as shipped in
lm-eval's ifeval task) gives on the same text. The rules are deliberately IFEval's, including
its quirks, because the point of these kinds is that our numbers equal everyone else's: the
class docstrings say what each rule really checks. Where IFEval would draw a random value
(a missing kwarg, a letter that is not a-z) these kinds instead require the kwarg or count the
given character, so a verdict never depends on chance. A keyword is matched literally where
the reference reads it as a regular expression (the same verdict for every keyword without
regex syntax, and no pathological patterns from input files). The empty-reply rule (an empty
or blank reply satisfies nothing) is applied by ``judges.constraints.kinds.check`` for every
kind alike.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Literal

from pydantic import Field

from judges.constraints.checkers import Check, Doc, Spec
from judges.constraints.ifeval.text import (
    count_sentences,
    count_words,
    detect_language,
    word_tokens,
)

IfRelation = Literal["less than", "at least"]
Num = Annotated[int, Field(ge=0, le=1_000_000)]
Text = Annotated[str, Field(min_length=1, max_length=5_000)]
WordList = Annotated[list[Text], Field(min_length=1, max_length=50)]


def _compare(count: int, relation: str, threshold: int) -> Check:
    return Check(count < threshold if relation == "less than" else count >= threshold)


def _literal(text: str) -> re.Pattern[str]:
    return re.compile(re.escape(text), re.IGNORECASE)


class KeywordsExistence(Spec):
    """Every keyword occurs somewhere, case ignored, inside words too ("art" is in "party")."""

    kind: Literal["keywords:existence"] = "keywords:existence"
    keywords: WordList

    def check(self, doc: Doc) -> Check:
        return Check(all(_literal(word).search(doc.text) for word in self.keywords))


class KeywordsFrequency(Spec):
    """The keyword (stripped) occurs ``relation`` ``frequency`` times, counted as
    non-overlapping case-insensitive matches, inside words too."""

    kind: Literal["keywords:frequency"] = "keywords:frequency"
    keyword: Text
    frequency: Num
    relation: IfRelation

    def check(self, doc: Doc) -> Check:
        found = len(_literal(self.keyword.strip()).findall(doc.text))
        return _compare(found, self.relation, self.frequency)


class KeywordsForbiddenWords(Spec):
    """None of the words occurs between word boundaries (``\\b``), case ignored."""

    kind: Literal["keywords:forbidden_words"] = "keywords:forbidden_words"
    forbidden_words: WordList

    def check(self, doc: Doc) -> Check:
        return Check(
            not any(
                re.search(rf"\b{re.escape(word)}\b", doc.text, re.IGNORECASE)
                for word in self.forbidden_words
            )
        )


class KeywordsLetterFrequency(Spec):
    """The letter occurs ``let_relation`` ``let_frequency`` times in the lowercased reply
    (so "ß" stays one "ß"). IFEval draws a random letter when ``letter`` is not a-z; this
    kind counts the given character instead."""

    kind: Literal["keywords:letter_frequency"] = "keywords:letter_frequency"
    letter: Annotated[str, Field(min_length=1, max_length=1)]
    let_frequency: Num
    let_relation: IfRelation

    def check(self, doc: Doc) -> Check:
        count = doc.text.lower().count(self.letter.lower())
        return _compare(count, self.let_relation, self.let_frequency)


class ResponseLanguage(Spec):
    """langdetect (seeded) names ``language`` (ISO 639-1, e.g. "fr"); a reply in which
    langdetect finds nothing to judge by (digits and marks only) counts as following, as in
    IFEval."""

    kind: Literal["language:response_language"] = "language:response_language"
    language: Annotated[str, Field(min_length=2, max_length=10)]

    def check(self, doc: Doc) -> Check:
        found = detect_language(doc.text)
        return Check(found is None or found == self.language)


class NumberSentences(Spec):
    """The number of sentences NLTK's Punkt (English model) finds is ``relation``
    ``num_sentences``: "Dr." and "1." do not end a sentence on their own."""

    kind: Literal["length_constraints:number_sentences"] = "length_constraints:number_sentences"
    num_sentences: Num
    relation: IfRelation

    def check(self, doc: Doc) -> Check:
        return _compare(count_sentences(doc.text), self.relation, self.num_sentences)


class NumberParagraphs(Spec):
    """Exactly ``num_paragraphs`` pieces between ``***`` markers (the marker may sit inside a
    line, with one whitespace character either side taken with it); an empty first or last
    piece is not counted, an empty piece in between fails."""

    kind: Literal["length_constraints:number_paragraphs"] = "length_constraints:number_paragraphs"
    num_paragraphs: Num

    def check(self, doc: Doc) -> Check:
        count = _count_pieces(re.split(r"\s?\*\*\*\s?", doc.text))
        return Check(count == self.num_paragraphs)


def _count_pieces(pieces: list[str]) -> int | None:
    """Non-blank pieces, allowing a blank first and last piece; None if one in between is."""
    last = len(pieces) - 1
    count = 0
    for index, piece in enumerate(pieces):
        if piece.strip():
            count += 1
        elif 0 < index < last:
            return None
    return count


class NumberWords(Spec):
    """The number of ``\\w+`` runs is ``relation`` ``num_words`` ("don't" counts two)."""

    kind: Literal["length_constraints:number_words"] = "length_constraints:number_words"
    num_words: Num
    relation: IfRelation

    def check(self, doc: Doc) -> Check:
        return _compare(count_words(doc.text), self.relation, self.num_words)


class NthParagraphFirstWord(Spec):
    """Paragraphs are split at every "\\n\\n"; the non-blank ones number ``num_paragraphs``
    and the ``nth_paragraph``-th piece (counting blank pieces too) opens with ``first_word``:
    its first whitespace-separated token, leading quotes dropped, up to the first of
    . , ? ! ' ", compared lowercased."""

    kind: Literal["length_constraints:nth_paragraph_first_word"] = (
        "length_constraints:nth_paragraph_first_word"
    )
    num_paragraphs: Num
    nth_paragraph: Annotated[int, Field(ge=1, le=1_000_000)]
    first_word: Text

    def check(self, doc: Doc) -> Check:
        pieces = doc.text.split("\n\n")
        filled = sum(1 for piece in pieces if piece.strip())
        if self.nth_paragraph > filled:
            return Check(False)
        paragraph = pieces[self.nth_paragraph - 1].strip()
        if not paragraph:
            return Check(False)
        token = paragraph.split()[0].lstrip("'").lstrip('"')
        word = re.match(r"[^.,?!'\"]*", token).group(0).lower()
        return Check(filled == self.num_paragraphs and word == self.first_word.lower())


class NumberPlaceholders(Spec):
    """At least ``num_placeholders`` bracketed spans ``[...]`` (shortest match, one line;
    "[]" counts)."""

    kind: Literal["detectable_content:number_placeholders"] = (
        "detectable_content:number_placeholders"
    )
    num_placeholders: Num

    def check(self, doc: Doc) -> Check:
        return Check(len(re.findall(r"\[.*?\]", doc.text)) >= self.num_placeholders)


class IfPostscript(Spec):
    """The lowercased reply contains the marker anywhere: "P.S." matches "p.s." or "p. s.",
    "P.P.S" matches "p.p.s" with optional single spaces after each dot; any other marker
    matches literally."""

    kind: Literal["detectable_content:postscript"] = "detectable_content:postscript"
    postscript_marker: Text

    def check(self, doc: Doc) -> Check:
        marker = self.postscript_marker.strip()
        if marker == "P.P.S":
            pattern = r"p\.\s?p\.\s?s"
        elif marker == "P.S.":
            pattern = r"p\.\s?s\."
        else:
            pattern = re.escape(marker.lower())
        return Check(re.search(pattern, doc.text.lower()) is not None)


class NumberBulletLists(Spec):
    """Exactly ``num_bullets`` markdown bullets: lines starting (after whitespace) with "*"
    not followed by another "*", plus lines starting with "-" (so "---" and "-5" count)."""

    kind: Literal["detectable_format:number_bullet_lists"] = "detectable_format:number_bullet_lists"
    num_bullets: Num

    def check(self, doc: Doc) -> Check:
        stars = re.findall(r"^\s*\*[^*].*$", doc.text, re.MULTILINE)
        dashes = re.findall(r"^\s*-.*$", doc.text, re.MULTILINE)
        return Check(len(stars) + len(dashes) == self.num_bullets)


CONSTRAINED_OPTIONS = ("My answer is yes.", "My answer is no.", "My answer is maybe.")


class ConstrainedResponse(Spec):
    """The reply contains one of "My answer is yes.", "My answer is no." or "My answer is
    maybe." (case and punctuation as written)."""

    kind: Literal["detectable_format:constrained_response"] = (
        "detectable_format:constrained_response"
    )

    def check(self, doc: Doc) -> Check:
        return Check(any(option in doc.text for option in CONSTRAINED_OPTIONS))


class NumberHighlightedSections(Spec):
    """At least ``num_highlights`` highlights, counted as two scans: each ``*...*`` (no ``*``
    or line break inside) with text inside, plus each ``**...**`` likewise; ``*x*`` and
    ``**x**`` count one each, ``***x***`` two."""

    kind: Literal["detectable_format:number_highlighted_sections"] = (
        "detectable_format:number_highlighted_sections"
    )
    num_highlights: Num

    def check(self, doc: Doc) -> Check:
        single = re.findall(r"\*[^\n*]*\*", doc.text)
        double = re.findall(r"\*\*[^\n*]*\*\*", doc.text)
        count = sum(1 for span in single if span.strip("*").strip())
        count += sum(1 for span in double if span[2:-2].strip())
        return Check(count >= self.num_highlights)


class MultipleSections(Spec):
    """At least ``num_sections`` occurrences of the splitter word followed by a number
    ("Section 1", "SECTION2"), anywhere in the text, case as written."""

    kind: Literal["detectable_format:multiple_sections"] = "detectable_format:multiple_sections"
    section_spliter: Text
    num_sections: Num

    def check(self, doc: Doc) -> Check:
        splitter = re.escape(self.section_spliter.strip())
        pieces = re.split(rf"\s?{splitter}\s?\d+\s?", doc.text)
        return Check(len(pieces) - 1 >= self.num_sections)


class IfJsonFormat(Spec):
    """The stripped reply, less one leading ```json / ```Json / ```JSON / ``` and one
    trailing ```, parses as JSON of any type (``42`` and ``null`` included)."""

    kind: Literal["detectable_format:json_format"] = "detectable_format:json_format"

    def check(self, doc: Doc) -> Check:
        body = doc.text.strip()
        for fence in ("```json", "```Json", "```JSON", "```"):
            if body.startswith(fence):
                body = body[len(fence) :]
                break
        body = body.removesuffix("```").strip()
        try:
            json.loads(body)
        except ValueError:
            return Check(False)
        return Check(True)


class IfTitle(Spec):
    """Some ``<<...>>`` on one line has text inside (the match runs to the last ">>" of the
    line)."""

    kind: Literal["detectable_format:title"] = "detectable_format:title"

    def check(self, doc: Doc) -> Check:
        titles = re.findall(r"<<[^\n]+>>", doc.text)
        return Check(any(title.lstrip("<").rstrip(">").strip() for title in titles))


class TwoResponses(Spec):
    """Two different replies separated by "******": the text split at every "******" has
    exactly two non-blank pieces that differ once stripped; a blank piece is allowed only
    first or last."""

    kind: Literal["combination:two_responses"] = "combination:two_responses"

    def check(self, doc: Doc) -> Check:
        pieces = doc.text.split("******")
        if _count_pieces(pieces) != 2:
            return Check(False)
        first, second = (piece.strip() for piece in pieces if piece.strip())
        return Check(first != second)


class RepeatPrompt(Spec):
    """The stripped, lowercased reply starts with the stripped, lowercased
    ``prompt_to_repeat``."""

    kind: Literal["combination:repeat_prompt"] = "combination:repeat_prompt"
    prompt_to_repeat: Annotated[str, Field(min_length=1, max_length=20_000)]

    def check(self, doc: Doc) -> Check:
        expected = self.prompt_to_repeat.strip().lower()
        return Check(doc.text.strip().lower().startswith(expected))


class EndChecker(Spec):
    """The reply, stripped of whitespace and then of double quotes, lowercased, ends with the
    stripped, lowercased ``end_phrase`` (nothing may follow it)."""

    kind: Literal["startend:end_checker"] = "startend:end_checker"
    end_phrase: Text

    def check(self, doc: Doc) -> Check:
        text = doc.text.strip().strip('"').lower()
        return Check(text.endswith(self.end_phrase.strip().lower()))


class CapitalWordFrequency(Spec):
    """The number of all-capital tokens (NLTK ``word_tokenize``; "U.S." is one token, "I"
    counts) is ``capital_relation`` ``capital_frequency``."""

    kind: Literal["change_case:capital_word_frequency"] = "change_case:capital_word_frequency"
    capital_frequency: Num
    capital_relation: IfRelation

    def check(self, doc: Doc) -> Check:
        count = sum(1 for token in word_tokens(doc.text) if token.isupper())
        return _compare(count, self.capital_relation, self.capital_frequency)


class EnglishCapital(Spec):
    """Every cased letter is uppercase (``str.isupper``) and langdetect says English; a text
    langdetect cannot judge counts as English, as in IFEval."""

    kind: Literal["change_case:english_capital"] = "change_case:english_capital"

    def check(self, doc: Doc) -> Check:
        return Check(doc.text.isupper() and detect_language(doc.text) in (None, "en"))


class EnglishLowercase(Spec):
    """Every cased letter is lowercase (``str.islower``) and langdetect says English, as for
    ``change_case:english_capital``."""

    kind: Literal["change_case:english_lowercase"] = "change_case:english_lowercase"

    def check(self, doc: Doc) -> Check:
        return Check(doc.text.islower() and detect_language(doc.text) in (None, "en"))


class NoComma(Spec):
    """No ASCII comma (other comma forms are allowed, unlike our ``no_commas``)."""

    kind: Literal["punctuation:no_comma"] = "punctuation:no_comma"

    def check(self, doc: Doc) -> Check:
        return Check("," not in doc.text)


class Quotation(Spec):
    """The stripped reply is at least two characters and starts and ends with an ASCII
    double quote."""

    kind: Literal["startend:quotation"] = "startend:quotation"

    def check(self, doc: Doc) -> Check:
        text = doc.text.strip()
        return Check(len(text) > 1 and text[0] == '"' and text[-1] == '"')


IFEVAL_SPECS: tuple[type[Spec], ...] = (
    CapitalWordFrequency,
    EnglishCapital,
    EnglishLowercase,
    RepeatPrompt,
    TwoResponses,
    NumberPlaceholders,
    IfPostscript,
    ConstrainedResponse,
    IfJsonFormat,
    MultipleSections,
    NumberBulletLists,
    NumberHighlightedSections,
    IfTitle,
    KeywordsExistence,
    KeywordsForbiddenWords,
    KeywordsFrequency,
    KeywordsLetterFrequency,
    ResponseLanguage,
    NthParagraphFirstWord,
    NumberParagraphs,
    NumberSentences,
    NumberWords,
    NoComma,
    EndChecker,
    Quotation,
)

IFEVAL_IDS: tuple[str, ...] = tuple(spec.model_fields["kind"].default for spec in IFEVAL_SPECS)
