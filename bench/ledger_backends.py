"""The request ledger on SQLite and on PostgreSQL, same run, same endpoint.

For each backend a batch of fresh requests is sent at concurrency 256 through the client (every
request claimed in the ledger before it is sent and completed after, in group commits), against
the nginx endpoint of ``bench/client_throughput.py`` (50 ms per request, so 256 in flight allow
at most 5,120 requests/s); then the same batch is run again, every answer coming from the ledger,
and its cost per request is printed. PostgreSQL is a throw-away local cluster
(``tests/postgres.py``: fsync off, as a test server; a networked server adds its round trips).

    apt-get install nginx libnginx-mod-http-echo postgresql-15    # once
    .venv/bin/python bench/ledger_backends.py [--requests 5000] [--backends sqlite]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench"), str(ROOT / "tests")]

from client_throughput import LATENCY, messages, start_nginx  # noqa: E402
from postgres import Cluster  # noqa: E402

from datagen import store  # noqa: E402
from datagen.batch.file import read_batch_file, run_batch  # noqa: E402
from datagen.endpoint.client import ClientConfig, LLMClient, run_async  # noqa: E402

CONCURRENCY = 256


def write_batch(path: Path, count: int) -> Path:
    with path.open("w") as fh:
        for i in range(count):
            fh.write(json.dumps({"custom_id": f"r{i}", "method": "POST",
                                 "url": "/v1/chat/completions",
                                 "body": {"model": "bench", "messages": messages(i)}}) + "\n")
    return path


def timed_run(base_url: str, target: str, src: Path) -> tuple[float, int, int]:
    """(seconds, requests sent, answers from the ledger) of one `rlaif batch`-like run."""
    started = time.perf_counter()
    lines = read_batch_file(src)
    db = store.open_db(target)

    async def go():
        config = ClientConfig(base_url=base_url, concurrency=CONCURRENCY)
        async with LLMClient(config, db) as client:
            results = await run_batch(client, lines)
            return results, client.stats

    results, stats = run_async(go())
    assert all(r.ok for r in results)
    db.close()
    return time.perf_counter() - started, stats.sent, stats.from_ledger


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--backends", nargs="+", default=["sqlite", "postgresql"],
                        choices=["sqlite", "postgresql"])
    args = parser.parse_args()
    n = args.requests
    with tempfile.TemporaryDirectory() as tmp, Cluster() as cluster:
        nginx, base_url = start_nginx(Path(tmp))
        try:
            src = write_batch(Path(tmp) / "in.jsonl", n)
            targets = {"sqlite": str(Path(tmp) / "ledger.db"),
                       "postgresql": cluster.new_database()}
            limit = CONCURRENCY / LATENCY
            print(f"endpoint: nginx echo, {LATENCY * 1000:.0f} ms per request; {n} requests at "
                  f"concurrency {CONCURRENCY} (limit {limit:.0f} req/s)")
            print(f"{'backend':>10} {'send req/s':>11} {'of limit':>9} {'rerun s':>8} "
                  f"{'rerun ms/req':>13}")
            for name in args.backends:
                target = targets[name]
                first, sent, _ = timed_run(base_url, target, src)
                rerun, resent, answered = timed_run(base_url, target, src)
                assert sent == n and resent == 0 and answered == n
                print(f"{name:>10} {n / first:>11.0f} {n / first / limit:>9.2f} {rerun:>8.2f} "
                      f"{rerun / n * 1000:>13.3f}")
        finally:
            nginx.terminate()
            nginx.wait()


if __name__ == "__main__":
    main()
