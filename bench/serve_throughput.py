"""Embedded server throughput: dynamic batching versus one request at a time, same run.

Starts ``rlaif serve`` on the default model (SmolLM2-135M-Instruct, converted on first use)
and measures, in this order:

1. plain sequential ``model.generate`` in this process (greedy, 64 new tokens, the 8 chat
   prompts below), as a reference for what transformers gives without a server;
2. the same 8 chat requests (greedy, ``max_tokens`` 64) sent one at a time, then all 8 at
   once: aggregate generated tokens per second, and their ratio (goal >= 3x);
3. judge-style requests (a short prompt, ``max_tokens`` 1, ``logprobs`` with
   ``top_logprobs`` 5) at concurrency 16: requests per second (goal >= 20), with the
   sequential rate for comparison.

Generated-token counts come from each reply's ``usage`` (a reply may end early at the
end-of-text token), so tokens/s compares like with like. The client is plain aiohttp.

    .venv/bin/python bench/serve_throughput.py                  # torch threads = CPU cores
    .venv/bin/python bench/serve_throughput.py --threads 1      # on a busy shared machine

On a shared machine, note the load average printed at the start: other processes competing
for the cores change every number, so only ratios from the same run mean much.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen, str]:
    command = [str(Path(sys.executable).parent / "rlaif"), "serve", "--model", args.model,
               "--port", "0", "--max-batch", str(args.max_batch), "--no-record"]
    if args.threads:
        command += ["--threads", str(args.threads)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(600)
    if not lines or not lines[0].startswith("http"):
        proc.kill()
        raise SystemExit("the server did not start")
    return proc, lines[0].strip()


async def post(session: aiohttp.ClientSession, url: str, body: dict) -> dict:
    async with session.post(url, json=body) as resp:
        data = await resp.json()
    if resp.status != 200:
        raise SystemExit(f"HTTP {resp.status}: {data}")
    return data


def story_body(prompt: str, new_tokens: int) -> dict:
    return {"model": "default", "messages": [{"role": "user", "content": prompt}],
            "max_tokens": new_tokens, "temperature": 0}


def judge_body(i: int) -> dict:
    a, b = i % 7 + 2, i % 5 + 3
    content = JUDGE_TEMPLATE.format(a=a, b=b, c=a + b + (i % 2))
    return {"model": "default", "messages": [{"role": "user", "content": content}],
            "max_tokens": 1, "temperature": 0, "logprobs": True, "top_logprobs": 5}


async def run_bodies(url: str, bodies: list[dict], concurrency: int) -> tuple[float, list[dict]]:
    """Send the bodies with at most `concurrency` in flight; (seconds, replies)."""
    gate = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(body: dict) -> dict:
            async with gate:
                return await post(session, url, body)

        started = time.perf_counter()
        replies = await asyncio.gather(*(one(b) for b in bodies))
        return time.perf_counter() - started, replies


def generated(replies: list[dict]) -> int:
    return sum(r["usage"]["completion_tokens"] for r in replies)


def reference_generate(args: argparse.Namespace) -> tuple[float, int]:
    """Sequential transformers ``generate`` over the story prompts: (seconds, new tokens)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from datagen.serve.default_model import resolve_model

    torch.set_num_threads(args.threads or len(os.sched_getaffinity(0)))
    model_dir = resolve_model(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    total, seconds = 0, 0.0
    for prompt in STORY_PROMPTS:
        text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                             add_generation_prompt=True, tokenize=False)
        inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
        started = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=args.new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        seconds += time.perf_counter() - started
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        total += len([t for t in new if t != tokenizer.eos_token_id])
    return seconds, total


async def measure(url: str, args: argparse.Namespace) -> None:
    chat_url = url + "/chat/completions"
    await run_bodies(chat_url, [story_body("Hello!", 8), judge_body(0)], 1)  # warm-up
    bodies = [story_body(p, args.new_tokens) for p in STORY_PROMPTS]
    one_s, one = await run_bodies(chat_url, bodies, 1)
    all_s, together = await run_bodies(chat_url, bodies, len(bodies))
    same = [r["choices"][0]["message"]["content"] for r in one] == [
        r["choices"][0]["message"]["content"] for r in together]
    print(f"chat, {len(bodies)} requests x {args.new_tokens} new tokens (greedy):")
    print(f"  one at a time : {generated(one):4d} tokens in {one_s:6.1f} s = "
          f"{generated(one) / one_s:6.1f} tok/s")
    print(f"  all at once   : {generated(together):4d} tokens in {all_s:6.1f} s = "
          f"{generated(together) / all_s:6.1f} tok/s")
    print(f"  speed-up      : {generated(together) / all_s / (generated(one) / one_s):.2f}x "
          f"(goal >= 3x); identical texts: {same}")

    judges = [judge_body(i) for i in range(args.judge_requests)]
    seq_s, _ = await run_bodies(chat_url, judges[:16], 1)
    par_s, replies = await run_bodies(chat_url, judges, 16)
    tops = replies[0]["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
    print(f"judge (max_tokens 1, top_logprobs 5), {len(judges)} requests:")
    print(f"  one at a time : {16 / seq_s:6.1f} req/s")
    print(f"  concurrency 16: {len(judges) / par_s:6.1f} req/s (goal >= 20)")
    print(f"  first verdict : {[(t['token'], round(t['logprob'], 2)) for t in tops]}")
    async with aiohttp.ClientSession() as session, session.get(url + "/stats") as resp:
        stats = await resp.json()
    print(f"server: {stats['decode_steps']} decode steps, {stats['prefill_passes']} prefill "
          f"passes, largest step {stats['max_rows_in_step']} rows; prompt tokens not "
          f"recomputed: {stats['shared_prefix_tokens']} shared in a batch, "
          f"{stats['cached_prefix_tokens']} from the prefix cache")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--judge-requests", type=int, default=96)
    parser.add_argument("--skip-reference", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as `rlaif serve` does
    print(f"load average {os.getloadavg()[0]:.2f} on {len(os.sched_getaffinity(0))} cores; "
          f"torch threads {args.threads or 'default (cores)'}")
    if not args.skip_reference:
        seconds, tokens = reference_generate(args)
        print(f"reference: sequential model.generate, {tokens} tokens in {seconds:.1f} s = "
              f"{tokens / seconds:.1f} tok/s")
    proc, url = start_server(args)
    try:
        asyncio.run(measure(url, args))
    finally:
        proc.terminate()
        proc.wait(30)


if __name__ == "__main__":
    main()
