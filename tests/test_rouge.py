"""The exact fast ROUGE-L filter (datagen.self_instruct.rouge) against rouge_score, bit for bit."""

from __future__ import annotations

import random

import numpy as np
import pytest
from rouge_score import rouge_scorer

from datagen.self_instruct.rouge import (
    NoveltyIndex,
    _score_pairs,
    lcs_length,
    rouge_l,
    score_pairs,
    tokenize,
)

SCORER = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
WORDS = (
    "a", "the", "of", "to", "and", "write", "list", "sort", "give", "find", "explain", "why",
    "code", "data", "3", "42", "2024", "x1", "Café", "ÉTÉ", "naïve", "don't", "x-y", "e.g.",
    "\u0130stanbul", "Kelvin", "\u212a", "ß", "\ufb01ne", "\uff11\uff12", "résumé", "C++",
    "U.S.A.", "hello,", "world!", "...", "---", "??", "(note)", "[1]", "{json}", "tab\there",
    "new\nline",
)


def reference(target: str, prediction: str) -> float:
    return SCORER.score(target, prediction)["rougeL"].fmeasure


def random_text(rng: random.Random, max_words: int = 40) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(0, max_words))]
    if words and rng.random() < 0.3:
        words[0] = words[0].upper()
    return rng.choice([" ", "  ", ", ", "-"]).join(words)


def boundary_pair(rng: random.Random) -> tuple[str, str]:
    """Two texts whose exact ROUGE-L is 0.7 (2L/(m+n) = 7/10), a float-order trap."""
    k = rng.randint(1, 4)
    lcs = 7 * k
    m = rng.randint(lcs, 20 * k - lcs)
    n = 20 * k - m
    common = [f"w{i}" for i in range(lcs)]
    a = common + [f"a{i}" for i in range(m - lcs)]
    b = common + [f"b{i}" for i in range(n - lcs)]
    return " ".join(a), " ".join(b)


def test_tokenizer_matches_rouge_score_on_edge_cases():
    cases = ["", "   ", "!!!", "Hello, World!", "İstanbul", "\u212aelvin", "ﬁne", "１２３",
             "naïve café", "x_y", "tab\tand\nnewline", "UPPER lower 123abc", "a.b.c", "don't"]
    rng = random.Random(3)
    cases += [random_text(rng) for _ in range(300)]
    for text in cases:
        assert tokenize(text) == SCORER._tokenizer.tokenize(text), text


def test_scores_bit_identical_on_10000_pairs():
    rng = random.Random(7)
    pairs = [(random_text(rng, 30), random_text(rng, 30)) for _ in range(9_600)]
    pairs += [boundary_pair(rng) for _ in range(300)]
    pairs += [(random_text(rng, 130), random_text(rng, 130)) for _ in range(100)]  # > 64 tokens
    pairs += [("", ""), ("", "a b"), ("a b", ""), ("?!", "a"), ("same text", "same text")]
    targets = [t for t, _ in pairs]
    predictions = [p for _, p in pairs]
    fast = score_pairs(predictions, targets)
    fast_swapped = score_pairs(targets, predictions)
    mismatches = 0
    for i, (t, p) in enumerate(pairs):
        ref = reference(t, p)
        python = rouge_l(t, p) if i % 10 == 0 or i >= 9_600 else ref
        if not (ref == fast[i] == fast_swapped[i] == python):
            mismatches += 1
        assert (ref > 0.7) == (fast[i] > 0.7)
    assert mismatches == 0
    assert any(reference(t, p) == 0.7000000000000001 for t, p in pairs[9_600:9_900])


def test_float_order_decides_boundary_scores():
    # exact value 0.7; rouge_score's float operations give 0.7000000000000001 here
    target, prediction = " ".join("abcdefgxyz"), " ".join("abcdefgpqr")
    assert reference(target, prediction) == rouge_l(target, prediction)
    hits = [(t, p) for t, p in (boundary_pair(random.Random(s)) for s in range(200))
            if reference(t, p) > 0.7]
    assert hits, "expected some exact-0.7 pairs that rouge_score scores above 0.7"
    pool = NoveltyIndex(0.7)
    pool.add(hits[0][0])
    novel, score, member = pool.offer(hits[0][1])
    assert (novel, score, member) == (False, reference(*hits[0]), 0)


def test_lcs_length():
    assert lcs_length("abcbdab", "bdcaba") == 4
    assert lcs_length([], ["a"]) == 0


class BruteForce:
    """Every pair through the plain kernel (itself checked against rouge_score above)."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.members: list[np.ndarray] = []

    def ids(self, text: str) -> np.ndarray:
        return np.array([self.vocab.setdefault(w, len(self.vocab)) for w in tokenize(text)],
                        np.int32)

    def best(self, text: str) -> tuple[float, int | None]:
        if not self.members:
            return 0.0, None
        cand = self.ids(text)
        lens = np.array([0] + [len(m) for m in self.members], np.int64)
        tok_b, off_b = np.concatenate(self.members), np.cumsum(lens)
        tok_a = np.tile(cand, len(self.members))
        off_a = np.arange(len(self.members) + 1, dtype=np.int64) * len(cand)
        slot = np.full(len(self.vocab) + 1, -1, np.int32)
        scores = list(_score_pairs(tok_a, off_a, tok_b, off_b, slot))
        best = max(scores)
        return best, (scores.index(best) if best > 0 else None)


@pytest.mark.parametrize("seed", [0, 1])
def test_index_matches_brute_force_on_a_stream(seed):
    rng = random.Random(seed)
    base = [random_text(rng, 25) for _ in range(500)]
    stream = []
    for _ in range(900):
        if stream and rng.random() < 0.35:
            words = rng.choice(stream).split(" ")
            for _ in range(rng.randint(0, 3)):
                words[rng.randrange(len(words))] = rng.choice(WORDS)
            stream.append(" ".join(words))
        elif rng.random() < 0.05:
            stream.append(random_text(rng, 120))
        else:
            stream.append(rng.choice(base))
    index = NoveltyIndex(0.7)
    brute = BruteForce()
    for text in stream:
        expected = brute.best(text)
        novel, score, member = index.offer(text)
        assert (score, member) == expected
        assert novel == (expected[0] <= 0.7)
        if novel:
            brute.members.append(brute.ids(text))
    assert len(index) == len(brute.members) > 300  # past the first inverted-index rebuild


def test_near_duplicates_in_one_batch_only_one_kept():
    index = NoveltyIndex(0.7)
    index.add("Summarize the article in three sentences.")
    first = index.offer("Write a haiku about the first snow of winter.")
    second = index.offer("Write a haiku about the first snow in winter.")
    assert first[0] is True
    assert second[:1] == (False,) and second[2] == 1


def test_nearest_is_earliest_member_and_none_without_overlap():
    index = NoveltyIndex(0.7)
    index.extend(["red green blue", "red green blue", "something else"])
    assert index.nearest("red green blue") == (1.0, 0)
    assert index.nearest("nothing shared here") == (0.0, None)
    assert index.nearest("") == (0.0, None)
    assert NoveltyIndex().nearest("anything") == (0.0, None)
