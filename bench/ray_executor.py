"""`--executor ray`: its overhead against the local executor, and scaling over simulated nodes.

1. Overhead: the same 10,000-request `rlaif batch` run against the nginx endpoint of
   bench/client_throughput.py (50 ms per answer), first with the local executor, then with
   `--executor ray` on a running one-node local Ray cluster; both at concurrency 256, fresh
   ledgers. Throughput is counted from the ledger (first request registered to last answered),
   so joining the cluster is reported apart. Goal: Ray within 15% of local.
2. Scaling, simulated: N = 1, 2, 4 Ray nodes on this machine, each with its own loopback
   endpoint that serves at most K requests at once with latency L (so each node's endpoint
   has capacity K/L requests/s), reached through `--endpoint-per-node` and `${BENCH_PORT}`.
   Goal: throughput N*K/L within 15%. On a 2-core machine the node processes, not the cores,
   are what is modelled: each endpoint is mostly asleep, like a GPU server seen from its client.

    apt-get install nginx libnginx-mod-http-echo     # once, for part 1
    .venv/bin/python bench/ray_executor.py [--requests 10000] [--skip-overhead]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from client_throughput import free_port, start_nginx  # noqa: E402

RLAIF = [sys.executable, "-m", "align.cli"]
CAPACITY_SERVER = """
import asyncio, json, sys, time
from aiohttp import web
K, L = int(sys.argv[2]), float(sys.argv[3])
gate = asyncio.Semaphore(K)
seen = []
REPLY = {"id": "b", "object": "chat.completion", "created": 0, "model": "bench",
         "choices": [{"index": 0, "finish_reason": "stop",
                      "message": {"role": "assistant", "content": "ok"}}],
         "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}
async def answer(request):
    await request.read()
    seen.append(time.time())
    async with gate:
        await asyncio.sleep(L)
    return web.json_response(REPLY)
async def report(app):
    with open(sys.argv[4], "w") as f:
        json.dump({"count": len(seen), "first": min(seen, default=0),
                   "last": max(seen, default=0)}, f)
app = web.Application()
app.on_shutdown.append(report)
app.router.add_post("/v1/chat/completions", answer)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


def write_requests(path: Path, n: int, tag: str) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"custom_id": f"{tag}{i}", "method": "POST",
                                "url": "/v1/chat/completions", "body": {
                                    "model": "bench", "max_tokens": 1,
                                    "messages": [{"role": "user", "content": f"{tag} {i}"}]}})
                    + "\n")
    return path


def timed_batch(args: list[str]) -> float:
    started = time.monotonic()
    done = subprocess.run([*RLAIF, "batch", *args], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"rlaif batch failed: {done.stderr[-2000:]}")
    return time.monotonic() - started


def sending_span(db: Path) -> float:
    """Seconds from the first request registered to the last answered, from the ledger."""
    with sqlite3.connect(db) as conn:
        query = "SELECT min(created_at), max(updated_at) FROM requests"
        first, last = conn.execute(query).fetchone()
    return last - first


def overhead(tmp: Path, total: int) -> None:
    from ray.cluster_utils import Cluster

    nginx, base_url = start_nginx(tmp)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 2, "include_dashboard": False, "object_store_memory": 100 * 1024 * 1024})
    try:
        src = write_requests(tmp / "o.jsonl", total, "o")
        common = ["--base-url", base_url, "--concurrency", "256", "--model", "bench"]
        local = timed_batch([str(src), "-o", str(tmp / "l.out"), "--db", str(tmp / "l.db"),
                             *common])
        remote = timed_batch([str(src), "-o", str(tmp / "r.out"), "--db", str(tmp / "r.db"),
                              *common, "--executor", "ray", "--ray-address", cluster.address])
    finally:
        cluster.shutdown()
        nginx.terminate()
    spans = sending_span(tmp / "l.db"), sending_span(tmp / "r.db")
    print(f"overhead, {total:,} requests, 50 ms endpoint, c=256, one running node: "
          f"local {total / spans[0]:,.0f} req/s while sending (wall {local:.1f} s), "
          f"ray {total / spans[1]:,.0f} req/s while sending (wall {remote:.1f} s incl. joining "
          f"the cluster): ray/local = {spans[0] / spans[1]:.2f}")


def scaling(tmp: Path, per_node: int, k: int, latency: float) -> None:
    from ray.cluster_utils import Cluster

    for nodes in (1, 2, 4):
        ports = [free_port() for _ in range(nodes)]
        logs = [tmp / f"n{nodes}-{p}.json" for p in ports]
        servers = [subprocess.Popen([sys.executable, "-c", CAPACITY_SERVER, str(port), str(k),
                                     str(latency), str(log)])
                   for port, log in zip(ports, logs, strict=True)]
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "include_dashboard": False, "env_vars": {"BENCH_PORT": str(ports[0])},
            "object_store_memory": 100 * 1024 * 1024})
        for port in ports[1:]:
            cluster.add_node(num_cpus=1, env_vars={"BENCH_PORT": str(port)},
                             object_store_memory=100 * 1024 * 1024)
        cluster.wait_for_nodes()
        time.sleep(2)
        try:
            total = per_node * nodes
            src = write_requests(tmp / f"s{nodes}.jsonl", total, f"s{nodes}")
            seconds = timed_batch([
                str(src), "-o", str(tmp / f"s{nodes}.out"), "--db", str(tmp / f"s{nodes}.db"),
                "--model", "bench", "--concurrency", str(k), "--executor", "ray",
                "--ray-address", cluster.address,
                "--endpoint-per-node", "http://127.0.0.1:${BENCH_PORT}/v1"])
        finally:
            cluster.shutdown()
            for server in servers:
                server.terminate()
                server.wait()
        seen = [json.loads(log.read_text()) for log in logs]
        span = max(s["last"] for s in seen) - min(s["first"] for s in seen) + latency
        ideal = nodes * k / latency
        print(f"scaling: {nodes} node(s) x K={k}/L={latency * 1000:.0f} ms: "
              f"{total / span:,.0f} req/s at the endpoints of an ideal {ideal:,.0f} "
              f"({total / span / ideal:.2f}); per node {[s['count'] for s in seen]}; "
              f"wall {seconds:.1f} s incl. joining the cluster")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--per-node", type=int, default=2_000)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--skip-overhead", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_overhead:
            overhead(Path(tmp), args.requests)
        scaling(Path(tmp), args.per_node, args.k, args.latency)


if __name__ == "__main__":
    main()
