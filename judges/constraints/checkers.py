"""Text measurements behind the verifiable constraints, written once and shared.

A constraint checker asks small questions of a response: how many words, sentences, bullet
lines, paragraphs, highlighted spans or bracketed placeholders it has, whether a phrase opens
or closes it, whether it parses as JSON. ``Doc`` wraps one response and computes each answer
at most once, so checking three constraints on one response reads it a few times, not once
per rule; that is what lets the verifier label tens of thousands of pairs a second. Every
definition here is deliberately simple and literal (a program, not a reader, decides), and
the exact rules are spelled out next to each pattern so a surprising verdict can be traced.
The module also holds ``Spec``, the base every constraint kind extends, and the parameter
types the kinds share.
"""

from __future__ import annotations

import json
import re
from functools import cached_property, lru_cache
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from judges.constraints.ifeval.text import abbreviation_types, split_sentences


class Check(NamedTuple):
    """One checker verdict: ``satisfied`` is strict; ``degree`` in [0, 1] says how close a
    failing response came (1.0 when satisfied), or is None where closeness means nothing."""

    satisfied: bool
    degree: float | None = None


# A word is a run of letters or digits; an apostrophe or hyphen between two such runs joins
# them ("don't", "well-known"), as does a dot or comma between a digit and more digits
# ("3.5", "10,000", "v1.2"). Underscores and punctuation are not words. Scripts written
# without spaces count each run of letters as one word.
WORD_RE = re.compile(r"[^\W_]+(?:['’\-][^\W_]+|(?<=\d)[.,]\d+)*")
WORD_CHAR_RE = re.compile(r"[^\W_]")

# Sentences: the text is first cut at blank lines and after the CJK stops 。！？ (a heading
# above a blank line is a sentence of its own), then each piece is split by NLTK's Punkt with
# its English model, as IFEval counts them, so abbreviations ("Dr.", "p.m.", "e.g.") and list
# markers do not end sentences. A piece without a letter or digit, or one that is only a list
# marker ("1.", "b)"), is not a sentence.
SENTENCE_BLOCK_RE = re.compile(r"\n[ \t]*\n|(?<=[。！？])")
LIST_MARKER_RE = re.compile(r"\(?(?:\d{1,9}|[a-zA-Z]|[ivxIVX]{1,5})[.)]")
# Punkt is exact but slow (NLTK runs its patterns through a ReDoS guard: about 300 us for a
# 100-word reply, milliseconds for a long one). Its decision at a possible sentence end depends
# only on that token and the next one, so blocks are cut token by token: after a plain word of
# two or more ASCII letters ending in one "." or a run of "?!" (closing quotes or brackets
# allowed) that is no known abbreviation, Punkt always breaks (its abbreviation, initial,
# number, ellipsis and collocation rules cannot apply); any other token with . ? ! or … is
# shown to Punkt with the next token alone. A next token that opens with a closing quote or
# bracket (which Punkt may move across the break) sends the whole block to Punkt.
# tests/test_constraints.py checks this against Punkt on random texts.
END_MARK_RE = re.compile(r"[.?!…]")
PLAIN_END_TOKEN_RE = re.compile(
    r"[(\[\"'“‘*_]*([A-Za-z]{2,})[*_\]]*(?:\.|[?!]+)[)\]\"'”’»*_]*"
)

# Paragraphs in blank-line mode: runs of non-blank lines; a chunk without any letter or
# digit (for example a lone "***" line) is not a paragraph.
BLANK_LINE_RE = re.compile(r"\n[ \t]*\n")
# Paragraphs in marker mode: the text is cut at every "***" that stands alone between
# whitespace or the ends of the text (on a line of its own or inside a line, as IFEval
# allows; "***bold***" is not a marker); every piece must hold a letter or digit.
MARKER_RE = re.compile(r"(?<!\S)\*\*\*(?!\S)")

# Fenced code blocks (``` ... ```) are ignored by the structural counts below so that list
# markers, brackets or asterisks inside code do not count as prose formatting.
FENCE_RE = re.compile(r"^[ \t]*```[^\n]*\n.*?^[ \t]*```[ \t]*$", re.M | re.S)

# A bullet item: a line starting (after spaces) with one of the markdown markers - * + and
# then at least one space and some text. Thematic breaks such as "* * *" or "- - -" are not
# items. Indented (nested) items count like top-level ones. Numbered items are not bullets,
# and neither are other symbols such as "•".
BULLET_RE = re.compile(r"^[ \t]*[-*+][ \t]+(?![-*+_ \t]*$)\S", re.M)
# A numbered item: a line starting with 1-9 digits, then "." or ")", a space and text.
NUMBERED_RE = re.compile(r"^[ \t]*\d{1,9}[.)][ \t]+\S", re.M)

# A title: <<text>> on one line, where the text holds a letter or digit.
TITLE_RE = re.compile(r"<<([^<>\n]*[^\W_][^<>\n]*)>>")

# A highlighted span: *text*, **text** or ***text*** on one line, where the text neither
# starts nor ends with a space or asterisk and the delimiters do not touch a letter, digit or
# another asterisk on the outside ("2*3*4" and "* item" are not highlights).
# (The pattern starts with the literal "*" and looks back from there, for speed.)
HIGHLIGHT_RE = re.compile(
    r"\*(?<![*\w]\*)(\*{0,2})(?![\s*])([^*\n]+?)(?<![\s*])\*\1(?![*\w])"
)
DIGIT_RE = re.compile(r"\d")  # any Unicode decimal digit

# A placeholder: [text] on one line, where the text holds a letter or digit, not directly
# followed by "(" (that would be a markdown link).
PLACEHOLDER_RE = re.compile(r"\[([^\[\]\n]*[^\W_][^\[\]\n]*)\](?!\()")

# A whole response wrapped in one code fence, with an optional language tag.
WHOLE_FENCE_RE = re.compile(r"\A```[ \t]*[\w+-]*[ \t]*\n(.*?)\n?[ \t]*```\Z", re.S)

_DROP_ASCII_LOWER = str.maketrans("", "", "abcdefghijklmnopqrstuvwxyz")
_DROP_ASCII_UPPER = str.maketrans("", "", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
COMMA_CHARS = (",", "，", "،", "、")  # ASCII, fullwidth, Arabic and ideographic commas
QUESTION_MARKS = frozenset("?\uff1f\u061f\u037e\u1367")  # ? ？ ؟, Greek U+037E, Ethiopic ፧
CLOSING_CHARS = "\"'”’»)]*_ \t\r\n"  # may follow the final question mark
WRAPPING_CHARS = "*_\"'“”‘’«»`"  # emphasis and quotes that may wrap a short answer


def normalize(text: str) -> str:
    """Collapse whitespace runs to one space, strip the ends and casefold, for phrase tests."""
    return " ".join(text.split()).casefold()


def count_range_degree(count: int, low: int | None, high: int | None) -> float:
    """1.0 inside [low, high]; count/low below it; high/count above it."""
    if low is not None and count < low:
        return count / low
    if high is not None and count > high:
        return high / count if count else 0.0
    return 1.0


def exact_degree(count: int, target: int) -> float:
    """1.0 when count equals target, falling with the relative distance otherwise."""
    if count == target:
        return 1.0
    return 1.0 - abs(count - target) / max(count, target)


def normalized_head(text: str, length: int) -> str:
    """A prefix of ``normalize(text)`` at least ``length`` long when the text has one,
    normalizing only as much of the text as needed."""
    text = text.lstrip()
    window = 4 * length + 64
    while True:
        head = normalize(text[:window])
        if len(head) > length or window >= len(text):
            return head
        window *= 4


def normalized_tail(text: str, length: int) -> str:
    """A suffix of ``normalize(text)`` at least ``length`` long when the text has one."""
    text = text.rstrip()
    window = 4 * length + 64
    while True:
        tail = normalize(text[-window:])
        if len(tail) > length or window >= len(text):
            return tail
        window *= 4


@lru_cache(maxsize=4096)
def phrase_pattern(phrase: str) -> re.Pattern[str]:
    """Pattern for a casefolded word or phrase that must not run on into a word character;
    spaces inside the phrase match any run of whitespace. The left boundary is checked by
    ``count_phrase`` (a pattern starting with a literal is much faster to search)."""
    body = r"\s+".join(re.escape(part) for part in phrase.casefold().split())
    return re.compile(rf"{body}(?!\w)")


def count_phrase(folded: str, phrase: str, limit: int | None = None) -> int:
    """How often ``phrase`` occurs as a whole word or phrase in ``folded`` (a casefolded
    text), so case is ignored; counting stops early at ``limit`` when given."""
    count = 0
    for match in phrase_pattern(phrase).finditer(folded):
        start = match.start()
        if start and (folded[start - 1].isalnum() or folded[start - 1] == "_"):
            continue  # the phrase starts inside a word ("art" in "party")
        count += 1
        if count == limit:
            break
    return count


NOT_JSON = object()  # parse_json_body's answer for a text that is not one JSON value


def parse_json_body(text: str) -> Any:
    """The JSON value the whole response consists of (optionally inside one code fence such
    as ```json ... ```): an object, array, string, number, true, false or null; ``NOT_JSON``
    when it is not exactly one JSON value."""
    body = text.strip()
    fenced = WHOLE_FENCE_RE.match(body)
    if fenced:
        body = fenced.group(1).strip()
    try:
        return json.loads(body)
    except ValueError:
        return NOT_JSON


class Doc:
    """One response, with each measurement computed on first use and then kept."""

    def __init__(self, text: str) -> None:
        self.text = text

    @cached_property
    def stripped(self) -> str:
        return self.text.strip()

    @cached_property
    def prose(self) -> str:
        """The text without fenced code blocks."""
        return FENCE_RE.sub("", self.text) if "```" in self.text else self.text

    @cached_property
    def word_count(self) -> int:
        return len(WORD_RE.findall(self.text))

    @cached_property
    def sentence_count(self) -> int:
        count = 0
        for block in SENTENCE_BLOCK_RE.split(self.text):
            if WORD_CHAR_RE.search(block):
                pieces = _plain_sentences(block)
                if pieces is None:
                    pieces = split_sentences(block)
                count += sum(1 for piece in pieces if _is_sentence(piece))
        return count

    @cached_property
    def blank_line_paragraphs(self) -> int:
        return sum(1 for chunk in BLANK_LINE_RE.split(self.text) if WORD_CHAR_RE.search(chunk))

    @cached_property
    def marker_paragraphs(self) -> tuple[int, bool]:
        """(number of pieces between "***" lines, whether any piece is empty)."""
        pieces = MARKER_RE.split(self.text)
        filled = sum(1 for piece in pieces if WORD_CHAR_RE.search(piece))
        return filled, filled < len(pieces)

    @cached_property
    def bullet_count(self) -> int:
        return len(BULLET_RE.findall(self.prose))

    @cached_property
    def numbered_count(self) -> int:
        return len(NUMBERED_RE.findall(self.prose))

    @cached_property
    def titles(self) -> list[str]:
        return TITLE_RE.findall(self.prose)

    @cached_property
    def highlight_count(self) -> int:
        return len(HIGHLIGHT_RE.findall(self.prose))

    @cached_property
    def placeholder_count(self) -> int:
        return len(PLACEHOLDER_RE.findall(self.prose))

    @cached_property
    def json_value(self) -> Any:
        return parse_json_body(self.text)

    @cached_property
    def cased_letters(self) -> tuple[int, int]:
        """(lowercase letters, uppercase letters)."""
        text = self.text
        if text.isascii():  # the common case, counted at C speed
            lower = len(text) - len(text.translate(_DROP_ASCII_LOWER))
            return lower, len(text) - len(text.translate(_DROP_ASCII_UPPER))
        return sum(map(str.islower, text)), sum(map(str.isupper, text))

    @cached_property
    def folded(self) -> str:
        return self.text.casefold()

    @cached_property
    def lowered(self) -> str:
        return self.text.lower()


def _plain_sentences(block: str) -> list[str] | None:
    """The sentences of a block, cut token by token as described at ``PLAIN_END_TOKEN_RE``, or
    None when the block must go to Punkt whole."""
    if END_MARK_RE.search(block) is None:
        return [block]
    tokens = list(re.finditer(r"\S+", block))
    pieces, start = [], 0
    for index, token in enumerate(tokens[:-1]):
        word, following = token.group(), tokens[index + 1].group()
        if END_MARK_RE.search(word) is None:
            continue
        if following[0] in "\"')]}":
            return None  # Punkt may move a closing quote or bracket across the break
        breaks = _breaks_after(word, following)
        if breaks is None:
            return None
        if breaks:
            pieces.append(block[start : token.end()])
            start = token.end()
    pieces.append(block[start:])
    return pieces


@lru_cache(maxsize=65536)  # a pure function of two tokens; pairs recur across replies
def _breaks_after(word: str, following: str) -> bool | None:
    """Whether Punkt ends a sentence after ``word`` when ``following`` comes next; None when
    it would cut elsewhere (inside a token)."""
    plain = PLAIN_END_TOKEN_RE.fullmatch(word)
    if plain is not None and plain.group(1).lower() not in abbreviation_types():
        return True
    found = split_sentences(f"{word} {following}")
    if found == [word, following]:
        return True
    return False if found == [f"{word} {following}"] else None


def _is_sentence(piece: str) -> bool:
    if WORD_CHAR_RE.search(piece) is None:
        return False
    return LIST_MARKER_RE.fullmatch(piece.strip()) is None


# --- what every constraint spec shares ---------------------------------------------------

Relation = Literal["at_least", "at_most", "exactly"]
Count = Annotated[int, Field(ge=0, le=10_000)]
Phrase = Annotated[str, Field(min_length=1, max_length=500, pattern=r"\S")]


def relation_check(count: int, relation: str, n: int) -> Check:
    """Compare a count with n: "at_least", "at_most" or "exactly", with a degree."""
    if relation == "at_least":
        return Check(count >= n, min(count / n, 1.0) if n else 1.0)
    if relation == "at_most":
        return Check(count <= n, 1.0 if count <= n else n / count)
    return Check(count == n, exact_degree(count, n))


def quoted_list(words: list[str], conjunction: str = "and") -> str:
    """Render words as '"a", "b" and "c"' (or another conjunction) for a phrasing."""
    quoted = [f'"{word}"' for word in words]
    if len(quoted) == 1:
        return quoted[0]
    return ", ".join(quoted[:-1]) + f" {conjunction} " + quoted[-1]


class Spec(BaseModel):
    """Fields and defaults shared by every constraint spec (frozen, extra keys rejected)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @property
    def variant(self) -> str | None:
        """Which list of phrasings renders this spec (None: the kind has a single list)."""
        return None

    def fields(self) -> dict[str, str]:
        """Values for the placeholders in this kind's phrasings."""
        return {}

    def required_texts(self) -> list[str]:
        """Text a satisfying response must contain (for compatibility checks)."""
        return []

    def forbids(self, fragment: str) -> bool:
        """Whether a response containing ``fragment`` would break this constraint."""
        return False

    def check(self, doc: Doc) -> Check:
        """The verdict for one analysed response (each kind defines its own rule)."""
        raise NotImplementedError
