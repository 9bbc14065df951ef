"""Client throughput: this project's client over both of its transports (its own HTTP/1.1
transport, used for plain-http endpoints, and httpx, used for https and proxied ones) vs
`openai.AsyncOpenAI`, same run, same endpoint.

An nginx server (Debian's nginx + echo module, a C server whose own cost per request is
tiny) answers every chat completion after a fixed 50 ms. Each client sends 2,000 requests at
concurrency 16, 64 and 256 from a fresh process of its own; we print requests/s, the fraction
of the limit (concurrency / latency) and the client's CPU time per request. Then a completed
10,000-request batch is rerun, every answer coming from the ledger, and its cost per request
is printed.

    apt-get install nginx libnginx-mod-http-echo     # once
    .venv/bin/python bench/client_throughput.py
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LATENCY = 0.05
REPLY = json.dumps({
    "id": "bench", "object": "chat.completion", "created": 0, "model": "bench",
    "choices": [{"index": 0, "finish_reason": "stop",
                 "message": {"role": "assistant", "content": "ok"}}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
})

NGINX_CONF = """
load_module {module};
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log crit;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {tmp};
    proxy_temp_path {tmp};
    fastcgi_temp_path {tmp};
    uwsgi_temp_path {tmp};
    scgi_temp_path {tmp};
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            default_type application/json;
            echo_read_request_body;
            echo_sleep {latency};
            echo '{reply}';
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(tmp: Path) -> tuple[subprocess.Popen, str]:
    module = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        sys.exit("nginx not found: apt-get install nginx libnginx-mod-http-echo")
    port = free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(module=module, tmp=tmp, port=port, latency=LATENCY,
                                      reply=REPLY))
    proc = subprocess.Popen([shutil.which("nginx") or "/usr/sbin/nginx", "-c", str(conf),
                             "-p", str(tmp)], stderr=subprocess.PIPE)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}/v1"


def messages(i: int) -> list[dict]:
    return [{"role": "user", "content": f"request {i}"}]


async def run_ours(base_url: str, total: int, concurrency: int, transport: str = "own") -> None:
    from datagen.endpoint.client import ClientConfig, LLMClient

    config = ClientConfig(base_url=base_url, model="bench", concurrency=concurrency,
                          transport=transport)
    async with LLMClient(config) as client:
        await asyncio.gather(*(client.chat(messages(-i)) for i in range(1, concurrency + 1)))
        started = time.perf_counter()
        cpu = time.process_time()
        results = await asyncio.gather(*(client.chat(messages(i)) for i in range(total)))
        report(total, concurrency, started, cpu, sum(r.ok for r in results))


async def run_openai(base_url: str, total: int, concurrency: int) -> None:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> bool:
        async with sem:
            reply = await client.chat.completions.create(model="bench", messages=messages(i))
            return bool(reply.choices)

    await asyncio.gather(*(one(-i) for i in range(1, concurrency + 1)))
    started = time.perf_counter()
    cpu = time.process_time()
    results = await asyncio.gather(*(one(i) for i in range(total)))
    report(total, concurrency, started, cpu, sum(results))
    await client.close()


async def run_httpx(base_url: str, total: int, concurrency: int) -> None:
    await run_ours(base_url, total, concurrency, transport="httpx")


CLIENTS = {"ours": run_ours, "httpx": run_httpx, "openai": run_openai}


def report(total: int, concurrency: int, started: float, cpu: float, ok: int) -> None:
    wall = time.perf_counter() - started
    print(json.dumps({"rps": total / wall, "cpu_us": (time.process_time() - cpu) / total * 1e6,
                      "ok": ok}))


def one_client(which: str, base_url: str, total: int, concurrency: int) -> dict:
    """Run one client configuration in a fresh process; return its JSON result."""
    out = subprocess.run(
        [sys.executable, __file__, "--child", which, base_url, str(total), str(concurrency)],
        capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def ledger_rerun(base_url: str, count: int) -> tuple[float, float]:
    """Fill a ledger with `count` answered requests, then time a rerun answered from it."""
    from datagen import store
    from datagen.batch.file import read_batch_file, run_batch, write_output
    from datagen.endpoint.client import ClientConfig, LLMClient, run_async

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        with src.open("w") as fh:
            for i in range(count):
                fh.write(json.dumps({"custom_id": f"r{i}", "method": "POST",
                                     "url": "/v1/chat/completions",
                                     "body": {"model": "bench", "messages": messages(i)}}) + "\n")
        config = ClientConfig(base_url=base_url, concurrency=256)

        def once() -> float:
            started = time.perf_counter()
            lines = read_batch_file(src)
            db = store.open_db(Path(tmp) / "l.db")

            async def go():
                async with LLMClient(config, db) as client:
                    return await run_batch(client, lines)

            results = run_async(go())
            write_output(Path(tmp) / "out.jsonl", lines, results)
            db.close()
            return time.perf_counter() - started

        first = once()
        return first, once()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--ledger-requests", type=int, default=10_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        nginx, base_url = start_nginx(Path(tmp))
        try:
            print(f"endpoint: nginx echo, {LATENCY * 1000:.0f} ms per request, {base_url}")
            print(f"{'concurrency':>11} {'client':>8} {'req/s':>8} {'of limit':>9} "
                  f"{'CPU us/req':>11}")
            for conc in args.concurrency:
                limit = conc / LATENCY
                rows = {w: one_client(w, base_url, args.requests, conc) for w in CLIENTS}
                for which, row in rows.items():
                    print(f"{conc:>11} {which:>8} {row['rps']:>8.0f} {row['rps'] / limit:>9.2f} "
                          f"{row['cpu_us']:>11.0f}")
                print(f"{'':>11} {'ratio':>8} {rows['ours']['rps'] / rows['openai']['rps']:>8.1f}x "
                      f"(ours/openai), {rows['ours']['rps'] / rows['httpx']['rps']:.1f}x "
                      "(own transport/httpx)")
            first, rerun = ledger_rerun(base_url, args.ledger_requests)
            per_request_ms = rerun / args.ledger_requests * 1000
            print(f"batch of {args.ledger_requests}: first run {first:.2f} s; rerun from the "
                  f"ledger {rerun:.2f} s = {per_request_ms:.3f} ms per request")
        finally:
            nginx.terminate()
            nginx.wait()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        which, url, total, conc = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        fn = CLIENTS[which]
        try:
            import uvloop

            uvloop.run(fn(url, total, conc))
        except ImportError:
            asyncio.run(fn(url, total, conc))
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        main()

