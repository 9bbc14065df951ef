"""Labelling throughput: pairs/s of `rlaif label --soft --orders both` at concurrency 256.

A small aiohttp server, started by this script in a subprocess, answers every chat completion
after a fixed 50 ms with a one-token verdict and its top logprobs, so the ceiling is
concurrency / latency = 5,120 requests/s = 2,560 pairs/s (two orders per pair). The labeller
runs in this process with a fresh project database (every request is sent and recorded in the
ledger), then once more over the same database (every answer comes from the ledger). We print
pairs/s, the fraction of the ceiling and the client's CPU time per pair. With ``--embedded N``
it also labels N pairs with the embedded model, started as `rlaif label` starts it without
--judge-base-url (the start and one warm-up pair are not timed; concurrency at most 8).

    .venv/bin/python bench/label_throughput.py                      # 4,000 pairs, c = 256
    .venv/bin/python bench/label_throughput.py --pairs 10000 --embedded 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from judges.pairs import PairRow, pair_row
from judges.pairwise import PairwiseSettings
from judges.setup import load_rubrics, run_judges

REPLY = {
    "id": "bench", "object": "chat.completion", "created": 0, "model": "bench",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "A"},
                 "logprobs": {"content": [{"token": "A", "logprob": -0.1, "top_logprobs": [
                     {"token": "A", "logprob": -0.1}, {"token": "B", "logprob": -2.4}]}]}}],
    "usage": {"prompt_tokens": 300, "completion_tokens": 1, "total_tokens": 301},
}


def serve(latency: float) -> None:
    """Answer POST /v1/chat/completions after `latency` seconds; print the base URL first."""
    from aiohttp import web

    body = json.dumps(REPLY).encode()

    async def answer(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(latency)
        return web.Response(body=body, content_type="application/json")

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
        await site.start()
        port = runner.addresses[0][1]
        print(f"http://127.0.0.1:{port}/v1", flush=True)
        await asyncio.Event().wait()

    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())


def make_pairs(n: int) -> list[PairRow]:
    """Synthetic pairs whose judge prompts have a realistic size (about 300 tokens)."""
    filler = "This sentence pads the response to a typical length for a chat answer. " * 6
    return [pair_row({"id": f"b{i}", "prompt": f"Question number {i}: explain item {i}.",
                      "response_a": f"Answer A to {i}. {filler}",
                      "response_b": f"Answer B to {i}. {filler[:200]}"}, f"bench:{i}")
            for i in range(n)]


def timed_label(rows: list[PairRow], options: dict, db: Path,
                settings: PairwiseSettings) -> dict:
    """Label rows with the pairwise judge; wall time, pairs/s, client CPU per pair."""
    rubrics = load_rubrics(())
    wall, cpu = time.perf_counter(), time.process_time()
    labels, failed, stats = run_judges(rows, ["pairwise"], rubrics, settings, options, db)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if failed:
        raise SystemExit(f"{failed} pairs had failed requests")
    return {"pairs": len(rows), "seconds": wall, "pairs_per_s": len(rows) / wall,
            "cpu_ms_per_pair": 1000 * cpu / len(rows), "sent": stats.sent,
            "from_ledger": stats.from_ledger,
            "ties": sum(r["preferred"] == "tie" for r in labels)}


def loopback(pairs: int, concurrency: int, latency: float) -> None:
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(latency)],
                              stdout=subprocess.PIPE, text=True)
    try:
        url = server.stdout.readline().strip()
        options = {"base_url": url, "model": "bench", "concurrency": concurrency,
                   "max_retries": 0}
        settings = PairwiseSettings(soft=True, orders="both", model="bench")
        ceiling = concurrency / latency / 2
        print(f"loopback endpoint, {latency * 1000:.0f} ms per request, concurrency "
              f"{concurrency}: ceiling {ceiling:,.0f} pairs/s")
        rows = make_pairs(pairs)
        with tempfile.TemporaryDirectory() as tmp:
            for name in ("cold (all sent)", "rerun (all from the ledger)"):
                r = timed_label(rows, options, Path(tmp) / "bench.db", settings)
                print(f"  {name:28s} {r['pairs']:,} pairs in {r['seconds']:.2f} s = "
                      f"{r['pairs_per_s']:,.0f} pairs/s ({r['pairs_per_s'] / ceiling:.0%} of "
                      f"the ceiling), client CPU {r['cpu_ms_per_pair']:.2f} ms/pair, "
                      f"{r['sent']:,} sent, {r['from_ledger']:,} from the ledger")
    finally:
        server.terminate()
        server.wait()


def embedded(n: int, concurrency: int) -> None:
    """Label n pairs with the embedded model (its start and one warm-up pair not timed)."""
    from datagen.serve.autostart import embedded_endpoint

    with embedded_endpoint() as (url, model_id), tempfile.TemporaryDirectory() as tmp:
        options = {"base_url": url, "model": model_id, "concurrency": concurrency}
        settings = PairwiseSettings(soft=True, orders="both", model=model_id)
        timed_label(make_pairs(1), options, Path(tmp) / "warm.db", settings)
        r = timed_label(make_pairs(n), options, Path(tmp) / "bench.db", settings)
    print(f"embedded model {model_id}, concurrency {concurrency}: {n} pairs in "
          f"{r['seconds']:.1f} s = {r['pairs_per_s']:.2f} pairs/s "
          f"({2 * r['pairs_per_s']:.2f} requests/s); {r['ties']} of {n} pairs tied")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--embedded", type=int, default=0, metavar="N",
                        help="Also label N pairs with the embedded model.")
    parser.add_argument("--serve", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve)
        return
    loopback(args.pairs, args.concurrency, args.latency)
    if args.embedded:
        embedded(args.embedded, min(args.concurrency, 8))


if __name__ == "__main__":
    main()
