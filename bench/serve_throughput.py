"""Embedded server throughput and fairness, CTranslate2 int8 against transformers float32.

Starts ``rlaif serve`` on the default model (SmolLM2-135M-Instruct, converted on first use)
once per backend, in the same run, and measures for each:

1. one stream alone: 8 chat requests (greedy, ``max_tokens`` 64) one at a time, tokens/s
   (goal >= 70 for ctranslate2);
2. the same 8 requests all at once: aggregate tokens/s (goal >= 150, and >= 2.5x transformers);
3. judge-style requests (a short prompt, ``max_tokens`` 1, ``top_logprobs`` 5) at concurrency
   16: requests/s (goal >= 40);
4. fairness: p95 latency of 1-token requests sent one after another while a request with
   ``n`` 16 and ``max_tokens`` 512 runs, against their latency on the idle server (goal <= 3x);
   the large request is abandoned afterwards (its rows are cancelled by the server);
5. time to first token of 8 concurrent streamed chat requests (median and worst).

Generated-token counts come from each reply's ``usage``; the client is plain aiohttp.

    .venv/bin/python bench/serve_throughput.py            # both backends
    .venv/bin/python bench/serve_throughput.py --backends ctranslate2

On a shared machine, note the load average printed at the start and end: other processes
competing for the cores change every number, so compare ratios from the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp

STORY_PROMPTS = [
    "Write a long story about a dragon who learns to bake bread.",
    "Explain in detail how a bicycle works, part by part.",
    "Describe a walk through a busy market on a summer morning.",
    "Write a letter to a friend about your first week in a new city.",
    "Give a step-by-step guide to planting a vegetable garden.",
    "Tell the history of a small lighthouse and its keepers.",
    "Describe how rain forms, from the ocean to the clouds.",
    "Write a speech for the opening of a new public library.",
]
JUDGE_TEMPLATE = ("Is this answer correct? Question: what is {a} plus {b}? Answer: {c}. "
                  "Reply Yes or No.")


def start_server(args: argparse.Namespace, backend: str) -> tuple[subprocess.Popen, str]:
    command = [str(Path(sys.executable).parent / "rlaif"), "serve", "--model", args.model,
               "--port", "0", "--backend", backend, "--no-record"]
    if args.threads:
        command += ["--threads", str(args.threads)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(900)
    if not lines or not lines[0].startswith("http"):
        proc.kill()
        raise SystemExit("the server did not start")
    return proc, lines[0].strip()


def story_body(prompt: str, new_tokens: int, **extra: object) -> dict:
    return {"model": "default", "messages": [{"role": "user", "content": prompt}],
            "max_tokens": new_tokens, "temperature": 0, **extra}


def judge_body(i: int) -> dict:
    a, b = i % 7 + 2, i % 5 + 3
    content = JUDGE_TEMPLATE.format(a=a, b=b, c=a + b + (i % 2))
    return {"model": "default", "messages": [{"role": "user", "content": content}],
            "max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": 5}


async def post(session: aiohttp.ClientSession, url: str, body: dict) -> dict:
    async with session.post(url, json=body) as resp:
        data = await resp.json()
    if resp.status != 200:
        raise SystemExit(f"HTTP {resp.status}: {data}")
    return data


async def run_bodies(session: aiohttp.ClientSession, url: str, bodies: list[dict],
                     concurrency: int) -> tuple[float, list[dict]]:
    """Send the bodies with at most `concurrency` in flight; (seconds, replies)."""
    gate = asyncio.Semaphore(concurrency)

    async def one(body: dict) -> dict:
        async with gate:
            return await post(session, url, body)

    started = time.perf_counter()
    replies = await asyncio.gather(*(one(b) for b in bodies))
    return time.perf_counter() - started, replies


def generated(replies: list[dict]) -> int:
    return sum(r["usage"]["completion_tokens"] for r in replies)


async def one_token_latencies(session: aiohttp.ClientSession, url: str, count: int) -> list[float]:
    latencies = []
    for i in range(count):
        started = time.perf_counter()
        await post(session, url, story_body(f"Say a number ({i}).", 1))
        latencies.append(time.perf_counter() - started)
    return latencies


async def fairness(session: aiohttp.ClientSession, url: str, count: int) -> tuple[float, float]:
    """(idle p95, p95 while n=16 x 512 runs) of 1-token request latencies, in seconds."""
    idle = await one_token_latencies(session, url, count)
    big = asyncio.create_task(post(session, url, {
        "model": "default", "messages": [{"role": "user", "content": STORY_PROMPTS[0]}],
        "n": 16, "max_tokens": 512, "temperature": 0.8}))
    await asyncio.sleep(1.0)  # let it start decoding
    loaded = await one_token_latencies(session, url, count)
    if big.done():
        print("  (the large request ended before the measurement did)")
    big.cancel()
    await asyncio.gather(big, return_exceptions=True)
    return p95(idle), p95(loaded)


def p95(values: list[float]) -> float:
    return sorted(values)[max(0, round(0.95 * len(values)) - 1)]


async def first_tokens(url: str, concurrency: int, new_tokens: int) -> list[float]:
    """Seconds to the first streamed content of `concurrency` simultaneous chat requests."""
    async with aiohttp.ClientSession() as session:

        async def one(prompt: str) -> float:
            started = time.perf_counter()
            body = story_body(prompt, new_tokens, stream=True)
            async with session.post(url, json=body) as resp:
                async for line in resp.content:
                    if not line.startswith(b"data: {"):
                        continue
                    delta = json.loads(line[6:])["choices"][0]["delta"]
                    if delta.get("content"):
                        first = time.perf_counter() - started
                        break
                else:
                    first = time.perf_counter() - started
                async for _ in resp.content:  # read the rest, as a client would
                    pass
            return first

        return list(await asyncio.gather(*(one(p) for p in STORY_PROMPTS[:concurrency])))


async def measure(url: str, args: argparse.Namespace) -> dict[str, float]:
    chat_url = url + "/chat/completions"
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await run_bodies(session, chat_url, [story_body("Hello!", 8), judge_body(0)], 1)
        bodies = [story_body(p, args.new_tokens) for p in STORY_PROMPTS]
        one_s, one = await run_bodies(session, chat_url, bodies, 1)
        all_s, together = await run_bodies(session, chat_url, bodies, len(bodies))
        judges = [judge_body(i) for i in range(args.judge_requests)]
        judge_s, _ = await run_bodies(session, chat_url, judges, 16)
        idle_p95, loaded_p95 = await fairness(session, chat_url, args.fairness_requests)
    ttft = await first_tokens(chat_url, 8, args.new_tokens)
    same = [r["choices"][0]["message"]["content"] for r in one] == [
        r["choices"][0]["message"]["content"] for r in together]
    return {"single": generated(one) / one_s, "batch8": generated(together) / all_s,
            "judge": len(judges) / judge_s, "idle_p95": idle_p95, "loaded_p95": loaded_p95,
            "ttft_median": statistics.median(ttft), "ttft_max": max(ttft),
            "same_texts": float(same)}


def report(results: dict[str, dict[str, float]]) -> None:
    print("| backend | one stream tok/s | 8 concurrent tok/s | judge req/s (c=16) | "
          "1-token p95 idle / under n=16x512 | TTFT c=8 median / max |")
    print("|---|---|---|---|---|---|")
    for backend, r in results.items():
        print(f"| {backend} | {r['single']:.1f} | {r['batch8']:.1f} | {r['judge']:.1f} | "
              f"{r['idle_p95'] * 1000:.0f} ms / {r['loaded_p95'] * 1000:.0f} ms "
              f"({r['loaded_p95'] / r['idle_p95']:.1f}x) | "
              f"{r['ttft_median'] * 1000:.0f} / {r['ttft_max'] * 1000:.0f} ms |")
    if {"ctranslate2", "transformers"} <= results.keys():
        ratio = results["ctranslate2"]["batch8"] / results["transformers"]["batch8"]
        print(f"ctranslate2 / transformers, 8 concurrent: {ratio:.2f}x (goal >= 2.5x)")
    for backend, r in results.items():
        print(f"{backend}: batched texts identical to one-at-a-time: {bool(r['same_texts'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--backends", default="ctranslate2,transformers")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--judge-requests", type=int, default=96)
    parser.add_argument("--fairness-requests", type=int, default=20)
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `rlaif serve` does
    print(f"load average {os.getloadavg()[0]:.2f} on {len(os.sched_getaffinity(0))} cores")
    results = {}
    for backend in args.backends.split(","):
        proc, url = start_server(args, backend)
        try:
            results[backend] = asyncio.run(measure(url, args))
        finally:
            proc.terminate()
            proc.wait(60)
    report(results)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
