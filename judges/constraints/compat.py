"""Which constraints may share a prompt: the declared contradictions and the parameter rules.

A prompt that asks for both "all lowercase" and "all uppercase", or for a one-word answer of
at least 50 words, has no satisfying response, so a pair of responses to it carries no
preference signal. Sampling therefore never combines the kind pairs listed in
``CONFLICTS`` (contradictory, or so awkward together that no natural response fits both),
lets the short-answer kinds in ``EXCLUSIVE`` sit only beside the few kinds that still make
sense, and then checks parameters: text one spec forces into the response (a keyword, an
opening phrase, the repeated request) must not be text another spec rules out (a forbidden
word, a comma, a digit), and word budgets must leave room for the requested counts.
"""

from __future__ import annotations

from judges.constraints.checkers import WORD_RE, Doc, Spec

_JSON_CLASHES = (
    # a JSON body has no room for prose layout, markers or framing text
    "bullet_count",
    "numbered_list_count",
    "paragraph_count",
    "section_count",
    "sentence_count",
    "title",
    "postscript",
    "highlighted_sections",
    "placeholder_count",
    "starts_with",
    "ends_with",
    "wrapped_in_quotes",
    "repeat_request",
    "ends_with_question",
    # JSON needs commas between members and lowercase literals (true, false, null)
    "no_commas",
    "all_uppercase",
)

CONFLICTS: frozenset[frozenset[str]] = frozenset(
    frozenset(pair)
    for pair in [
        ("all_lowercase", "all_uppercase"),
        *(("json_format", kind) for kind in _JSON_CLASHES),
        # the opening quote takes the first character a phrase, request or list would need
        ("wrapped_in_quotes", "starts_with"),
        ("wrapped_in_quotes", "ends_with"),
        ("wrapped_in_quotes", "repeat_request"),
        ("wrapped_in_quotes", "bullet_count"),
        ("wrapped_in_quotes", "numbered_list_count"),
        ("wrapped_in_quotes", "section_count"),
        # both decide how the response opens
        ("starts_with", "repeat_request"),
        # list items and headers rarely end in sentence punctuation: the count is ill-posed
        ("sentence_count", "bullet_count"),
        ("sentence_count", "numbered_list_count"),
        ("sentence_count", "section_count"),
        # numbered items and "Section 1" headers need digits
        ("no_digits", "numbered_list_count"),
        ("no_digits", "section_count"),
    ]
)

# Short-answer kinds: a yes/no or one-word reply leaves room only for these companions.
_SHORT_COMPANIONS = frozenset(
    {"all_lowercase", "all_uppercase", "no_commas", "no_digits", "forbidden_words"}
)
EXCLUSIVE: dict[str, frozenset[str]] = {
    "yes_no_answer": _SHORT_COMPANIONS,
    "one_word_answer": _SHORT_COMPANIONS,
}

# Words one counted unit needs at least, for the word-budget rule: (kind, words per unit).
_WORDS_PER_UNIT = {
    "sentence_count": 3,
    "paragraph_count": 15,
    "bullet_count": 3,
    "numbered_list_count": 3,
    "section_count": 15,
    "highlighted_sections": 2,
    "placeholder_count": 1,
}


def kinds_compatible(kind_a: str, kind_b: str) -> bool:
    """Whether two kinds may ever appear together (a kind never appears twice)."""
    if kind_a == kind_b or frozenset((kind_a, kind_b)) in CONFLICTS:
        return False
    for one, other in ((kind_a, kind_b), (kind_b, kind_a)):
        if one in EXCLUSIVE and other not in EXCLUSIVE[one]:
            return False
    return True


def compatible(a: Spec, b: Spec) -> bool:
    """Whether a response can satisfy both specs: kinds allowed together and parameters that
    do not contradict each other."""
    if not kinds_compatible(a.kind, b.kind):
        return False
    for one, other in ((a, b), (b, a)):
        if any(other.forbids(text) for text in one.required_texts()):
            return False
        if one.kind == "word_count" and not _fits_word_budget(one, other):
            return False
        if (
            one.kind == "ends_with"
            and other.kind == "ends_with_question"
            and not (other.check(Doc(one.phrase)).satisfied)
        ):
            return False
        # every paragraph holds at least one sentence
        if (
            one.kind == "sentence_count"
            and other.kind == "paragraph_count"
            and (one.max is not None and one.max < other.n)
        ):
            return False
    return True


def all_compatible(specs: list[Spec]) -> bool:
    """Whether every pair in ``specs`` is compatible."""
    return all(compatible(a, b) for i, a in enumerate(specs) for b in specs[i + 1 :])


def _fits_word_budget(words: Spec, other: Spec) -> bool:
    """A word range must leave room for the text and counted units the other spec needs."""
    low, high = words.min, words.max
    forced = sum(len(WORD_RE.findall(text)) for text in other.required_texts())
    if high is not None and forced >= high:  # the forced text alone is not an answer
        return False
    per_unit = _WORDS_PER_UNIT.get(other.kind)
    if per_unit is not None and high is not None:
        units = other.min if other.kind == "sentence_count" else other.n
        if units is not None and units * per_unit > high:
            return False
    if other.kind == "sentence_count" and low is not None and other.max is not None:
        return low <= 40 * other.max  # no more than 40 words a sentence
    if other.kind == "letter_frequency" and other.relation == "at_least" and high is not None:
        return 3 * other.n <= high  # about one such letter per three words at most
    return True
