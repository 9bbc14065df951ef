"""Constraint kinds about the words of a response: keywords, phrases, case, marks, answers.

These specs look at what is written rather than how it is laid out: required and forbidden
words, an opening or closing phrase, letter case, commas and digits, a letter's frequency, a
closing question, and short answer formats (yes/no, one word, repeating the request). The
docstring of each class is its exact rule; shared measurements live in
``judges.constraints.checkers``.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from judges.constraints.checkers import (
    CLOSING_CHARS,
    COMMA_CHARS,
    DIGIT_RE,
    QUESTION_MARKS,
    WORD_CHAR_RE,
    WORD_RE,
    WRAPPING_CHARS,
    Check,
    Doc,
    Phrase,
    Relation,
    Spec,
    count_phrase,
    normalize,
    normalized_head,
    normalized_tail,
    quoted_list,
    relation_check,
)


class IncludeKeywords(Spec):
    """Each keyword occurs at least ``min_count`` times as a whole word or phrase: case is
    ignored by Unicode casefolding ("STRASSE" matches "straße"), the match may not start or
    end inside a word ("art" is not in "party", "plan" is not in "plans"), and spaces inside
    a phrase match any whitespace. Degree: share of keywords met."""

    kind: Literal["include_keywords"] = "include_keywords"
    keywords: Annotated[list[Phrase], Field(min_length=1, max_length=10)]
    min_count: Annotated[int, Field(ge=1, le=100)] = 1

    @property
    def variant(self) -> str:
        return "once" if self.min_count == 1 else "repeated"

    def fields(self) -> dict[str, str]:
        return {"keywords": quoted_list(self.keywords), "min_count": str(self.min_count)}

    def required_texts(self) -> list[str]:
        return [" ".join([word] * self.min_count) for word in self.keywords]

    def check(self, doc: Doc) -> Check:
        folded, need = doc.folded, self.min_count
        met = sum(count_phrase(folded, word, need) >= need for word in self.keywords)
        return Check(met == len(self.keywords), met / len(self.keywords))


class KeywordFrequency(Spec):
    """One keyword occurs ``relation`` ``n`` times (at least, at most or exactly), matched as
    in ``include_keywords``. Degree: count/n when short, n/count when over, and for
    "exactly" one minus the relative distance."""

    kind: Literal["keyword_frequency"] = "keyword_frequency"
    keyword: Phrase
    n: Annotated[int, Field(ge=1, le=100)]
    relation: Relation

    @property
    def variant(self) -> str:
        return self.relation

    def fields(self) -> dict[str, str]:
        return {"keyword": self.keyword, "n": str(self.n)}

    def required_texts(self) -> list[str]:
        return [] if self.relation == "at_most" else [" ".join([self.keyword] * self.n)]

    def forbids(self, fragment: str) -> bool:
        count = count_phrase(fragment.casefold(), self.keyword)
        return self.relation != "at_least" and count > self.n

    def check(self, doc: Doc) -> Check:
        return relation_check(count_phrase(doc.folded, self.keyword), self.relation, self.n)


class ForbiddenWords(Spec):
    """None of the words occurs, matched as in ``include_keywords`` ("just" is not found in
    "justice"). Degree: share of the words that are absent."""

    kind: Literal["forbidden_words"] = "forbidden_words"
    words: Annotated[list[Phrase], Field(min_length=1, max_length=10)]

    def fields(self) -> dict[str, str]:
        return {"words": quoted_list(self.words, "or")}

    def forbids(self, fragment: str) -> bool:
        folded = fragment.casefold()
        return any(count_phrase(folded, word, 1) for word in self.words)

    def check(self, doc: Doc) -> Check:
        absent = sum(count_phrase(doc.folded, word, 1) == 0 for word in self.words)
        return Check(absent == len(self.words), absent / len(self.words))


class StartsWith(Spec):
    """The response opens with ``phrase``. Both sides are compared after stripping, collapsing
    whitespace runs to one space and casefolding; punctuation must match."""

    kind: Literal["starts_with"] = "starts_with"
    phrase: Phrase

    def fields(self) -> dict[str, str]:
        return {"phrase": self.phrase}

    def required_texts(self) -> list[str]:
        return [self.phrase]

    def check(self, doc: Doc) -> Check:
        phrase = normalize(self.phrase)
        return Check(normalized_head(doc.text, len(phrase)).startswith(phrase))


class EndsWith(Spec):
    """The response closes with ``phrase``, compared like ``starts_with``: whitespace
    collapsed, case ignored, punctuation kept; nothing but whitespace may follow."""

    kind: Literal["ends_with"] = "ends_with"
    phrase: Phrase

    def fields(self) -> dict[str, str]:
        return {"phrase": self.phrase}

    def required_texts(self) -> list[str]:
        return [self.phrase]

    def check(self, doc: Doc) -> Check:
        phrase = normalize(self.phrase)
        return Check(normalized_tail(doc.text, len(phrase)).endswith(phrase))


class AllLowercase(Spec):
    """No uppercase or titlecase letter anywhere (lowering the text changes nothing) and at
    least one lowercase letter. Any script with case counts. Degree: share of cased letters
    that are lowercase."""

    kind: Literal["all_lowercase"] = "all_lowercase"

    def check(self, doc: Doc) -> Check:
        text = doc.text
        if text == text.lower():
            return Check(text != text.upper(), 1.0 if text != text.upper() else 0.0)
        lower, upper = doc.cased_letters
        return Check(False, lower / (lower + upper) if lower + upper else 0.0)


class AllUppercase(Spec):
    """No lowercase letter anywhere (upper-casing the text changes nothing) and at least one
    uppercase letter. Degree: share of cased letters that are uppercase."""

    kind: Literal["all_uppercase"] = "all_uppercase"

    def check(self, doc: Doc) -> Check:
        text = doc.text
        if text == text.upper():
            return Check(text != text.lower(), 1.0 if text != text.lower() else 0.0)
        lower, upper = doc.cased_letters
        return Check(False, upper / (lower + upper) if lower + upper else 0.0)


class NoCommas(Spec):
    """No comma of any common form: ASCII ",", fullwidth "，", Arabic "،", ideographic "、"."""

    kind: Literal["no_commas"] = "no_commas"

    def forbids(self, fragment: str) -> bool:
        return any(comma in fragment for comma in COMMA_CHARS)

    def check(self, doc: Doc) -> Check:
        return Check(not self.forbids(doc.text))


class YesNoAnswer(Spec):
    """The whole response is "yes" or "no", ignoring case, surrounding whitespace and a
    trailing "." or "!"."""

    kind: Literal["yes_no_answer"] = "yes_no_answer"

    def check(self, doc: Doc) -> Check:
        return Check(doc.stripped.rstrip(".!").strip().casefold() in ("yes", "no"))


class OneWordAnswer(Spec):
    """The whole response is a single word (see ``word_count``), ignoring surrounding
    whitespace, emphasis marks (* _), quotes and trailing ". ! ?"; "Paris.", "**Paris**",
    '"Paris"' and "well-known" pass, "New York" fails."""

    kind: Literal["one_word_answer"] = "one_word_answer"

    def check(self, doc: Doc) -> Check:
        body = doc.stripped
        for _ in range(3):  # "**Paris.**", '"Paris".', "*'Paris'*": peel a few layers
            body = body.strip().strip(WRAPPING_CHARS).rstrip(".!?")
        return Check(WORD_RE.fullmatch(body.strip()) is not None)


class RepeatRequest(Spec):
    """The response starts with ``request`` word for word (whitespace collapsed, case
    ignored) and then continues with an answer that holds at least one letter or digit."""

    kind: Literal["repeat_request"] = "repeat_request"
    request: Annotated[str, Field(min_length=1, max_length=5_000)]

    def required_texts(self) -> list[str]:
        return [self.request]

    def check(self, doc: Doc) -> Check:
        request = normalize(self.request)
        head = normalized_head(doc.text, len(request) + 1)
        if not head.startswith(request):
            return Check(False)
        if WORD_CHAR_RE.search(head, len(request)) is None:  # look further only if needed
            head = normalize(doc.text)
        return Check(WORD_CHAR_RE.search(head, len(request)) is not None)


class LetterFrequency(Spec):
    """The letter occurs ``relation`` ``n`` times, ignoring case (lowercased, so "ß" is one
    letter and no "s"; accented letters are different letters: "é" is not "e"). Degree as for
    ``keyword_frequency``."""

    kind: Literal["letter_frequency"] = "letter_frequency"
    letter: Annotated[str, Field(min_length=1, max_length=1)]
    n: Annotated[int, Field(ge=0, le=10_000)]
    relation: Literal["at_least", "at_most"]

    @field_validator("letter")
    @classmethod
    def _is_letter(cls, value: str) -> str:
        if not value.isalpha():
            raise ValueError("letter must be a single letter")
        return value

    @property
    def variant(self) -> str:
        return self.relation

    def fields(self) -> dict[str, str]:
        return {"letter": self.letter, "n": str(self.n)}

    def forbids(self, fragment: str) -> bool:
        count = fragment.lower().count(self.letter.lower())
        return self.relation == "at_most" and count > self.n

    def check(self, doc: Doc) -> Check:
        count = doc.lowered.count(self.letter.lower())
        return relation_check(count, self.relation, self.n)


class EndsWithQuestion(Spec):
    """The last character, ignoring trailing whitespace, closing quotes, brackets and
    emphasis marks, is a question mark in any common script: "?", fullwidth "？", Arabic
    "؟", Greek ";" (U+037E) or Ethiopic "፧"."""

    kind: Literal["ends_with_question"] = "ends_with_question"

    def check(self, doc: Doc) -> Check:
        text = doc.text.rstrip(CLOSING_CHARS)
        return Check(bool(text) and text[-1] in QUESTION_MARKS)


class NoDigits(Spec):
    """No digit of any script (Unicode decimal digits, so "٣" counts as a digit)."""

    kind: Literal["no_digits"] = "no_digits"

    def forbids(self, fragment: str) -> bool:
        return DIGIT_RE.search(fragment) is not None

    def check(self, doc: Doc) -> Check:
        return Check(DIGIT_RE.search(doc.text) is None)
