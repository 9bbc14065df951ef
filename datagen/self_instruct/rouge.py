"""Exact, fast ROUGE-L similarity search for the Self-Instruct novelty filter and `rlaif dedup`.

Self-Instruct keeps a generated instruction only when its ROUGE-L F-measure against every
instruction already in the pool is at most 0.7. Done the usual way (rouge_score, one Python
DP table per pair) that costs about 50 microseconds a pair, i.e. hours for a pool of tens of
thousands. This module gives the same numbers bit for bit, thousands of times faster:

- the tokenizer is rouge_score's (lower-case, ``[^a-z0-9]+`` to spaces, split, no stemmer);
- a score is computed with the same float64 operations in the same order as rouge_score
  (precision = LCS/len(prediction), recall = LCS/len(target), then 2PR/(P+R)), because for
  pairs whose exact value is 0.7 the order decides between 0.7 and 0.7000000000000001;
- LCS lengths come from a bit-parallel kernel (Allison-Dix / Hyyro, one 64-bit word per 64
  candidate tokens) compiled with numba;
- an inverted index over the pool gives every member's bag-of-words overlap I with the
  candidate, hence the exact upper bound F <= 2I/(m+n); members added since the index was
  last rebuilt are bounded by length, F <= 2min(m,n)/(m+n). A bound only ever skips a pair
  that cannot beat the best score found so far; every reported score is an exact one.

Search always returns the true maximum and the earliest pool member that reaches it, so
callers can report the nearest neighbour, not just a keep/drop decision.
See shared/reference/performance.md section 1 for the measurements behind this design.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
from numba import njit

# Maximal runs of [a-z0-9] in the lower-cased text: the same tokens as rouge_score's
# "replace [^a-z0-9]+ by a space, split, keep ^[a-z0-9]+$".
TOKEN = re.compile(r"[a-z0-9]+")
DEFAULT_THRESHOLD = 0.7
# Bounds are exact rationals computed in floating point; a pair is skipped only when its bound
# is this far below the best score, far more than the few ulps a float score can differ by.
BOUND_SLACK = 1e-9


def tokenize(text: str) -> list[str]:
    """rouge_score's default tokenizer without stemming (lower-case, alphanumeric runs)."""
    return TOKEN.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (plain DP)."""
    if not a or not b:
        return 0
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def fmeasure(lcs: int, target_len: int, prediction_len: int) -> float:
    """ROUGE-L F from an LCS length, in rouge_score's float operations and order."""
    if lcs == 0 or target_len == 0 or prediction_len == 0:
        return 0.0
    precision = lcs / prediction_len
    recall = lcs / target_len
    return 2 * precision * recall / (precision + recall)


def rouge_l(target: str, prediction: str) -> float:
    """ROUGE-L F-measure of two texts, equal to rouge_score's rougeL fmeasure (no stemmer)."""
    t, p = tokenize(target), tokenize(prediction)
    return fmeasure(lcs_length(t, p), len(t), len(p))


# --- compiled kernels -------------------------------------------------------------------------

_ONE = np.uint64(1)
_ALL = np.uint64(0xFFFFFFFFFFFFFFFF)


@njit(cache=True)
def _zero_bits(v, nbits):
    """Number of zero bits among the low ``nbits`` bits of a uint64."""
    x = ~v
    if nbits < 64:
        x &= (_ONE << np.uint64(nbits)) - _ONE
    count = 0
    while x:
        x &= x - _ONE
        count += 1
    return count


@njit(cache=True)
def _load_pattern(ctok, slot, masks):
    """Set one bit per candidate position in the mask row of its token; return #rows used."""
    rows = 0
    for i in range(ctok.shape[0]):
        t = ctok[i]
        if slot[t] < 0:
            slot[t] = rows
            rows += 1
        masks[slot[t], i >> 6] |= _ONE << np.uint64(i & 63)
    return rows


@njit(cache=True)
def _unload_pattern(ctok, slot):
    for i in range(ctok.shape[0]):
        slot[ctok[i]] = -1


@njit(cache=True)
def _lcs(m, slot, masks, tok, start, end, v):
    """LCS length of the loaded candidate (m tokens) and tok[start:end], bit-parallel."""
    words = (m + 63) >> 6
    if words == 1:
        x = _ALL
        for k in range(start, end):
            s = slot[tok[k]]
            if s >= 0:
                u = x & masks[s, 0]
                x = (x + u) | (x - u)
        return _zero_bits(x, m)
    for w in range(words):
        v[w] = _ALL
    for k in range(start, end):
        s = slot[tok[k]]
        if s < 0:
            continue
        carry = np.uint64(0)
        for w in range(words):
            x = v[w]
            u = x & masks[s, w]
            total = x + u
            overflow = total < x
            total2 = total + carry
            if total2 < total:
                overflow = True
            v[w] = total2 | (x - u)
            carry = _ONE if overflow else np.uint64(0)
    lcs = 0
    for w in range(words):
        lcs += _zero_bits(v[w], min(64, m - 64 * w))
    return lcs


@njit(cache=True)
def _fmeasure(lcs, target_len, prediction_len):
    if lcs == 0:
        return 0.0
    precision = lcs / prediction_len
    recall = lcs / target_len
    return 2 * precision * recall / (precision + recall)


@njit(cache=True)
def _score_pairs(tok_a, off_a, tok_b, off_b, slot):
    """F of each (a[i] as prediction, b[i] as target) pair; the kernel the index uses."""
    n = off_a.shape[0] - 1
    out = np.zeros(n, np.float64)
    for i in range(n):
        ctok = tok_a[off_a[i]:off_a[i + 1]]
        m = ctok.shape[0]
        tlen = off_b[i + 1] - off_b[i]
        if m == 0 or tlen == 0:
            continue
        masks = np.zeros((m, (m + 63) >> 6), np.uint64)
        v = np.empty((m + 63) >> 6, np.uint64)
        _load_pattern(ctok, slot, masks)
        lcs = _lcs(m, slot, masks, tok_b, off_b[i], off_b[i + 1], v)
        _unload_pattern(ctok, slot)
        out[i] = _fmeasure(lcs, tlen, m)
    return out


@njit(cache=True)
def _search(ctok, slot, ccount, tok, off, n_pool, frozen, post_ptr, post_member, post_cnt,
            acc, touched):
    """Max F of the candidate against pool members [0, n_pool) and the earliest member with it.

    Members [0, frozen) are in the inverted index (post_*); the rest are scanned.
    Returns (best, index) with index -1 when nothing shares a token with the candidate.
    """
    m = ctok.shape[0]
    best = 0.0
    best_j = -1
    if m == 0 or n_pool == 0:
        return best, best_j
    words = (m + 63) >> 6
    masks = np.zeros((m, words), np.uint64)
    v = np.empty(words, np.uint64)
    _load_pattern(ctok, slot, masks)
    indexed_vocab = post_ptr.shape[0] - 1
    for i in range(m):
        ccount[ctok[i]] += 1
    # bag-of-words overlap with every indexed member that shares a token
    n_touched = 0
    for i in range(m):
        t = ctok[i]
        c = ccount[t]
        if c <= 0:
            continue  # already visited
        ccount[t] = -c
        if t >= indexed_vocab:
            continue
        for p in range(post_ptr[t], post_ptr[t + 1]):
            j = post_member[p]
            if acc[j] == 0:
                touched[n_touched] = j
                n_touched += 1
            acc[j] += min(c, post_cnt[p])
    # start from the member with the highest bound, so the bound prunes from the first pair on
    top = -1
    top_bound = -1.0
    for q in range(n_touched):
        j = touched[q]
        bound = 2.0 * acc[j] / (m + off[j + 1] - off[j])
        if bound > top_bound:
            top_bound = bound
            top = j
    if top >= 0:
        lcs = _lcs(m, slot, masks, tok, off[top], off[top + 1], v)
        best = _fmeasure(lcs, off[top + 1] - off[top], m)
        best_j = top
    for q in range(n_touched):
        j = touched[q]
        n = off[j + 1] - off[j]
        if j != top and 2.0 * acc[j] / (m + n) >= best - BOUND_SLACK:
            f = _fmeasure(_lcs(m, slot, masks, tok, off[j], off[j + 1], v), n, m)
            if f > best or (f == best and j < best_j):
                best = f
                best_j = j
        acc[j] = 0
    # members added since the last index rebuild: length bound, then the exact score
    for j in range(frozen, n_pool):
        n = off[j + 1] - off[j]
        if n == 0 or 2.0 * min(m, n) / (m + n) < best - BOUND_SLACK:
            continue
        f = _fmeasure(_lcs(m, slot, masks, tok, off[j], off[j + 1], v), n, m)
        if f > best or (f == best and f > 0.0 and (best_j < 0 or j < best_j)):
            best = f
            best_j = j
    for i in range(m):
        ccount[ctok[i]] = 0
    _unload_pattern(ctok, slot)
    if best == 0.0:
        best_j = -1
    return best, best_j


@njit(cache=True)
def _build_postings(tok, off, n_members, n_vocab, scratch):
    """Inverted index (CSR): for each token, the members containing it and its count there."""
    ptr = np.zeros(n_vocab + 1, np.int64)
    for j in range(n_members):
        for k in range(off[j], off[j + 1]):
            t = tok[k]
            if scratch[t] == 0:
                ptr[t + 1] += 1
            scratch[t] += 1
        for k in range(off[j], off[j + 1]):
            scratch[tok[k]] = 0
    for t in range(n_vocab):
        ptr[t + 1] += ptr[t]
    member = np.empty(ptr[n_vocab], np.int32)
    count = np.empty(ptr[n_vocab], np.int32)
    fill = ptr[:-1].copy()
    for j in range(n_members):
        for k in range(off[j], off[j + 1]):
            scratch[tok[k]] += 1
        for k in range(off[j], off[j + 1]):
            t = tok[k]
            if scratch[t] > 0:
                member[fill[t]] = j
                count[fill[t]] = scratch[t]
                fill[t] += 1
                scratch[t] = 0
    return ptr, member, count


# --- the pool ---------------------------------------------------------------------------------


def _grow(array: np.ndarray, needed: int, fill: int = 0) -> np.ndarray:
    if needed <= array.shape[0]:
        return array
    bigger = np.full(max(needed, 2 * array.shape[0]), fill, dtype=array.dtype)
    bigger[: array.shape[0]] = array
    return bigger


class NoveltyIndex:
    """A growing pool of texts with exact ROUGE-L nearest-member search.

    Example: ``pool = NoveltyIndex(); pool.add("Sort a list."); pool.offer("Sort the list.")``
    returns ``(False, 0.8, 0)`` (not novel, score 0.8 against member 0), and a novel text is
    added to the pool by ``offer``. Members are numbered 0, 1, ... in the order they joined.
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.threshold = threshold
        self._vocab: dict[str, int] = {}
        self._tok = np.zeros(4096, np.int32)
        self._off = np.zeros(1025, np.int64)
        self._n = 0
        self._slot = np.full(1024, -1, np.int32)
        self._ccount = np.zeros(1024, np.int32)
        self._acc = np.zeros(1024, np.int32)
        self._touched = np.zeros(1024, np.int32)
        self._frozen = 0
        self._post_ptr = np.zeros(1, np.int64)
        self._post_member = np.zeros(0, np.int32)
        self._post_cnt = np.zeros(0, np.int32)

    def __len__(self) -> int:
        return self._n

    def _ids(self, text: str) -> np.ndarray:
        vocab = self._vocab
        ids = [vocab.setdefault(word, len(vocab)) for word in TOKEN.findall(text.lower())]
        if len(vocab) > self._slot.shape[0]:
            self._slot = _grow(self._slot, len(vocab), -1)
            self._ccount = _grow(self._ccount, len(vocab))
        return np.array(ids, np.int32)

    def add(self, text: str) -> int:
        """Add a text to the pool unconditionally; return its member number."""
        ids = self._ids(text)
        start = int(self._off[self._n])
        self._tok = _grow(self._tok, start + len(ids))
        self._tok[start : start + len(ids)] = ids
        self._off = _grow(self._off, self._n + 2)
        self._off[self._n + 1] = start + len(ids)
        self._n += 1
        if self._n > self._acc.shape[0]:
            self._acc = _grow(self._acc, self._n)
            self._touched = _grow(self._touched, self._n)
        if self._n - self._frozen >= max(256, self._frozen // 16):
            self._rebuild()
        return self._n - 1

    def extend(self, texts: Iterable[str]) -> None:
        """Add several texts unconditionally."""
        for text in texts:
            self.add(text)

    def _rebuild(self) -> None:
        self._post_ptr, self._post_member, self._post_cnt = _build_postings(
            self._tok, self._off, self._n, len(self._vocab), self._ccount)
        self._frozen = self._n

    def nearest(self, text: str) -> tuple[float, int | None]:
        """(max ROUGE-L F against the pool, earliest member with it); (0.0, None) when no
        member shares a token with the text (or the pool is empty)."""
        best, j = _search(
            self._ids(text), self._slot, self._ccount, self._tok, self._off, self._n,
            self._frozen, self._post_ptr, self._post_member, self._post_cnt, self._acc,
            self._touched)
        return float(best), (int(j) if j >= 0 else None)

    def offer(self, text: str) -> tuple[bool, float, int | None]:
        """Check a text and add it when novel (max score <= threshold).

        Returns (novel, max score, nearest member) as they were before the text was added.
        """
        score, member = self.nearest(text)
        novel = score <= self.threshold
        if novel:
            self.add(text)
        return novel, score, member


def score_pairs(predictions: Sequence[str], targets: Sequence[str]) -> np.ndarray:
    """ROUGE-L F of each (prediction, target) pair through the compiled kernel (for checks)."""
    vocab: dict[str, int] = {}

    def flat(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        ids, off = [], [0]
        for text in texts:
            ids.extend(vocab.setdefault(w, len(vocab)) for w in tokenize(text))
            off.append(len(ids))
        return np.array(ids, np.int32), np.array(off, np.int64)

    tok_a, off_a = flat(predictions)
    tok_b, off_b = flat(targets)
    slot = np.full(max(1, len(vocab)), -1, np.int32)
    return _score_pairs(tok_a, off_a, tok_b, off_b, slot)
