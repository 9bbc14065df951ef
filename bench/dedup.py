"""Benchmark: the exact fast ROUGE-L novelty filter (datagen.self_instruct.rouge) against
rouge_score.

Makes a deterministic stream of instruction-like sentences (175 seeds, then candidates of
8-32 tokens, about 20% near-duplicates of earlier candidates and 4% exact or case-only
copies), runs the streaming filter over it (keep when max ROUGE-L <= 0.7, pool = seeds +
kept), and in the same run times the reference: rouge_score's LCS scorer over a pre-tokenized
pool, as Alpaca does it, on evenly spaced sample candidates against their true pool state.
The reference total is extrapolated from its measured cost per pair (performance.md 1.3),
and its decisions, max scores and nearest members are checked identical to the fast ones
on every sampled candidate. A second part times single queries against a fixed 50,000 pool.

    .venv/bin/python bench/dedup.py                      # 1k and 5k streams, 50k pool
    .venv/bin/python bench/dedup.py --sizes 1000,5000,20000 --repeat 3

Speed ratios are what matter: both sides run in the same process on the same machine.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from rouge_score import rouge_scorer
from rouge_score.rouge_scorer import _score_lcs

from datagen.self_instruct.rouge import NoveltyIndex


def _words(text: str) -> list[str]:
    return text.split()


VERBS = _words("write explain describe summarize list compare rewrite classify translate outline "
         "suggest create design plan analyze identify find evaluate generate draft convert "
         "calculate estimate recommend critique edit simplify expand predict justify rank "
         "extract organize review name tell give")
ADJS = _words("short detailed formal casual persuasive funny simple technical brief clear creative "
        "friendly critical balanced polite concise vivid historical modern practical careful "
        "new old local global personal public private common rare important small large "
        "complex basic healthy weekly daily yearly quick slow bright dark green digital")
NOUNS = _words("email story poem essay letter report summary plan recipe list review article "
         "speech "
         "dialogue outline question answer argument proposal description schedule budget "
         "itinerary checklist guide lesson quiz joke riddle slogan tweet headline caption "
         "product service company student teacher city river mountain forest ocean planet "
         "computer phone garden kitchen museum library hospital school market festival game "
         "movie song book painting theory experiment policy law election climate energy "
         "vaccine algorithm database network robot startup invoice contract meeting interview "
         "holiday wedding birthday friend neighbor customer manager doctor scientist artist "
         "athlete farmer chef pilot engineer lawyer nurse child parent tourist volunteer")
PREPS = _words("about for to with from on in of against without during after before")
TAILS = ["in three sentences", "for a child", "using simple words", "in under 100 words",
         "as a bulleted list", "with two examples", "in a formal tone", "step by step",
         "for a beginner", "in the style of a news report", "with a catchy title", ""]


def _phrase(rng: random.Random) -> list[str]:
    return [rng.choice(["a", "the", "an", "my", "your"]), rng.choice(ADJS), rng.choice(NOUNS)]


def _sentence(rng: random.Random) -> str:
    target = round(rng.triangular(8, 32, 10))
    words = [rng.choice(VERBS).capitalize()] + _phrase(rng)
    tail = rng.choice(TAILS).split()
    while len(words) + len(tail) < target:
        words += [rng.choice(PREPS)] + _phrase(rng)
    return " ".join((words + tail)[:max(target, 8)]) + rng.choice([".", ".", "?", "!"])


def _near_duplicate(rng: random.Random, text: str) -> str:
    words = text.rstrip(".?!").split()
    for _ in range(rng.randint(1, 3)):
        op = rng.random()
        pos = rng.randrange(len(words))
        if op < 0.4:
            words[pos] = rng.choice(ADJS + NOUNS)
        elif op < 0.7 and len(words) > 8:
            del words[pos]
        else:
            words.insert(pos, rng.choice(ADJS + PREPS))
    out = " ".join(words) + rng.choice([".", "!", "", " ?", "..."])
    return out.upper() if rng.random() < 0.1 else out


def make_stream(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(175 seed texts, n candidates) — deterministic for a given seed."""
    rng = random.Random(seed)
    seeds = [_sentence(rng) for _ in range(175)]
    stream: list[str] = []
    for _ in range(n):
        r = rng.random()
        if stream and r < 0.04:
            src = rng.choice(stream)
            stream.append(src if rng.random() < 0.5 else src.lower())
        elif stream and r < 0.24:
            stream.append(_near_duplicate(rng, rng.choice(stream)))
        else:
            stream.append(_sentence(rng))
    return seeds, stream


def run_fast(seeds: list[str], stream: list[str]) -> tuple[float, list[tuple]]:
    """Seconds for the whole stream and each candidate's (novel, max, nearest member)."""
    started = time.perf_counter()
    index = NoveltyIndex(0.7)
    index.extend(seeds)
    decisions = [index.offer(text) for text in stream]
    return time.perf_counter() - started, decisions


def reference_sample(seeds: list[str], stream: list[str], decisions: list, sample: int) -> dict:
    """Time rouge_score on evenly spaced candidates against their true pool; check agreement."""
    tokenize = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)._tokenizer.tokenize
    pool_texts = list(seeds)
    pool_before: list[int] = []
    for text, (novel, _, _) in zip(stream, decisions, strict=True):
        pool_before.append(len(pool_texts))
        if novel:
            pool_texts.append(text)
    pool_tokens = [tokenize(t) for t in pool_texts]  # tokenized once (not timed), as Alpaca does
    picks = sorted({round(i * (len(stream) - 1) / max(1, sample - 1)) for i in range(sample)})
    seconds = pairs = agree = 0
    for i in picks:
        cand = tokenize(stream[i])
        started = time.perf_counter()
        scores = [_score_lcs(cand, toks).fmeasure for toks in pool_tokens[: pool_before[i]]]
        seconds += time.perf_counter() - started
        pairs += pool_before[i]
        best = max(scores, default=0.0)
        nearest = scores.index(best) if best > 0 else None
        agree += (best <= 0.7, best, nearest) == decisions[i]
    per_pair = seconds / pairs
    return {"sampled": len(picks), "agree": agree, "per_pair_us": per_pair * 1e6,
            "total_pairs": sum(pool_before), "estimated_s": per_pair * sum(pool_before)}


def bench_stream(n: int, sample: int, repeat: int) -> None:
    seeds, stream = make_stream(n)
    times, decisions = [], None
    for _ in range(repeat):
        seconds, got = run_fast(seeds, stream)
        assert decisions is None or got == decisions
        times.append(seconds)
        decisions = got
    fast = statistics.median(times)
    ref = reference_sample(seeds, stream, decisions, sample)
    kept = sum(d[0] for d in decisions)
    at_boundary = sum(d[1] == 0.7 for d in decisions)
    print(f"stream {n:>6}: kept {kept} ({at_boundary} at exactly 0.7); fast {fast:.3f} s "
          f"(median of {repeat}, {fast / n * 1e6:.0f} us/candidate); reference "
          f"{ref['per_pair_us']:.1f} us/pair x {ref['total_pairs']:,} pairs = "
          f"{ref['estimated_s']:.0f} s (est.); speedup {ref['estimated_s'] / fast:,.0f}x; "
          f"decisions identical on {ref['agree']}/{ref['sampled']} sampled candidates")


def bench_pool(size: int, queries: int, ref_queries: int) -> None:
    seeds, stream = make_stream(size + queries, seed=1)
    index = NoveltyIndex(0.7)
    started = time.perf_counter()
    index.extend((seeds + stream)[:size])
    build = time.perf_counter() - started
    probe = stream[-queries:]
    started = time.perf_counter()
    results = [index.nearest(text) for text in probe]
    per_query = (time.perf_counter() - started) / queries
    tokenize = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)._tokenizer.tokenize
    pool_tokens = [tokenize(t) for t in (seeds + stream)[:size]]
    ref_times, agree = [], 0
    for text, fast in zip(probe[:ref_queries], results, strict=False):
        cand = tokenize(text)
        started = time.perf_counter()
        scores = [_score_lcs(cand, toks).fmeasure for toks in pool_tokens]
        ref_times.append(time.perf_counter() - started)
        best = max(scores)
        agree += (best, scores.index(best) if best > 0 else None) == fast
    ref = statistics.mean(ref_times)
    print(f"pool {size:>6}: {per_query * 1e3:.3f} ms per candidate (mean of {queries}; pool "
          f"built in {build:.2f} s); reference {ref:.2f} s per candidate (mean of "
          f"{len(ref_times)}); speedup {ref / per_query:,.0f}x; identical {agree}/{len(ref_times)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,5000", help="stream lengths, comma-separated")
    parser.add_argument("--sample", type=int, default=30, help="reference candidates per stream")
    parser.add_argument("--repeat", type=int, default=3, help="fast runs per stream (median)")
    parser.add_argument("--pool", type=int, default=50_000, help="fixed pool size (0: skip)")
    parser.add_argument("--queries", type=int, default=500, help="timed queries at that pool")
    parser.add_argument("--ref-queries", type=int, default=2, help="reference queries there")
    args = parser.parse_args()
    warm = NoveltyIndex()
    warm.extend(f"warm up {i}" for i in range(300))  # loads every compiled kernel, rebuild too
    warm.offer("warm up the kernels " * 10)
    for n in (int(s) for s in args.sizes.split(",") if s):
        bench_stream(n, args.sample, args.repeat)
    if args.pool:
        bench_pool(args.pool, args.queries, args.ref_queries)


if __name__ == "__main__":
    main()
