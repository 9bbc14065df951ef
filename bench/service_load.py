"""Service load: 50 concurrent clients submit jobs and post labels to `rlaif service` for 30 s.

A real service process on loopback (2 job workers) and a scripted OpenAI server in a process
of its own (the service's endpoint ``fake``). Every request carries a token, as in use: each
client is an annotator (its own token) that asks for its next item and posts a vote, over and
over, and every ``--job-every`` seconds it submits, with its operator token, a small batch job
(a few chat requests given inline) against the scripted server. At the end every vote the
service acknowledged must be in the database (no lost label) and no request may have failed;
we print requests/s and the median, p95 and p99 latency of each kind of request, and how many
jobs finished meanwhile.

    .venv/bin/python bench/service_load.py [--clients 50] [--seconds 30]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from align.labeling.queue import LabelSettings, enqueue, queue_item  # noqa: E402
from align.service.users import create_token  # noqa: E402
from datagen import store  # noqa: E402
from datagen.store.tables import LABEL_VOTES  # noqa: E402


def prepare_queue(db_path: Path, pairs: int, gold: int, required: int) -> None:
    db = store.open_db(db_path)
    items = [queue_item({"id": f"p{i}", "prompt": f"Question {i}: what is {i} + {i}?",
                         "response_a": f"{2 * i}", "response_b": f"{2 * i + 1}",
                         "preferred": "a", "p_a": random.Random(i).random()},
                        f"pair {i}", False, required) for i in range(pairs)]
    items += [queue_item({"id": f"g{i}", "prompt": f"Gold {i}", "response_a": "right",
                          "response_b": "wrong", "human": "a"}, f"gold {i}", True, required)
              for i in range(gold)]
    enqueue(db, items, LabelSettings(gold_every=4, min_gold=3, gold_threshold=0.5))
    db.close()


def make_tokens(db_path: Path, clients: int) -> dict[str, str]:
    """A token for each client's annotator and operator, and one for the admin."""
    db = store.open_db(db_path)
    tokens = {"admin": create_token(db, "admin", "admin")[1]}
    for number in range(clients):
        for role, prefix in (("annotator", "annotator"), ("operator", "operator")):
            name = f"{prefix}-{number:02d}"
            tokens[name] = create_token(db, name, role)[1]
    db.close()
    return tokens


def start(command: list[str], log: Path, marker: str, timeout: float = 60) -> tuple:
    out = log.open("w")
    proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if marker in line:
                return proc, line[line.index(marker):].split()[0]
        if proc.poll() is not None:
            raise SystemExit(f"{command[2:4]} exited: {log.read_text()}")
        time.sleep(0.05)
    raise SystemExit(f"{command} did not start: {log.read_text()}")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class Tally:
    def __init__(self) -> None:
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.errors: list[str] = []
        self.votes: set[tuple[str, str]] = set()
        self.jobs: list[str] = []


async def client(number: int, url: str, tokens: dict[str, str], deadline: float,
                 job_every: float, tally: Tally, session: aiohttp.ClientSession) -> None:
    name = f"annotator-{number:02d}"
    annotator = {"Authorization": f"Bearer {tokens[name]}"}
    operator = {"Authorization": f"Bearer {tokens[f'operator-{number:02d}']}"}
    rng = random.Random(number)
    next_job = time.monotonic() + rng.uniform(0, job_every)

    async def timed(kind: str, method: str, path: str, **kw) -> dict | None:
        started = time.perf_counter()
        try:
            async with session.request(method, url + path, **kw) as reply:
                body = await reply.read()
                ok = reply.status in (200, 201)
        except (TimeoutError, aiohttp.ClientError) as exc:
            tally.errors.append(f"{kind}: {type(exc).__name__}: {exc}")
            return None
        tally.latency[kind].append(time.perf_counter() - started)
        if not ok:
            tally.errors.append(f"{kind}: HTTP {reply.status}: {body[:200]!r}")
            return None
        return json.loads(body)

    while time.monotonic() < deadline:
        if time.monotonic() >= next_job:
            next_job += job_every
            lines = [{"custom_id": f"{name}-{next_job:.0f}-{i}", "method": "POST",
                      "url": "/v1/chat/completions",
                      "body": {"model": "fake-model", "messages": [
                          {"role": "user", "content": f"{name} {next_job:.3f} {i}"}]}}
                     for i in range(5)]
            job = await timed("submit job", "POST", "/v1/jobs", headers=operator, json={
                "kind": "batch", "endpoint": "fake", "options": {"input_file": lines}})
            if job:
                tally.jobs.append(job["id"])
            continue
        shown = await timed("next item", "GET", "/label/api/next", headers=annotator)
        if not shown or not shown["item"]:
            await asyncio.sleep(0.05)
            continue
        item = shown["item"]
        choice = "a" if item["prompt"].startswith("Gold") else rng.choice(["a", "b", "b", "tie"])
        voted = await timed("post vote", "POST", "/label/api/votes", headers=annotator, json={
            "item_id": item["id"], "choice": choice, "note": ""})
        if voted and voted["stored"]:
            tally.votes.add((item["id"], name))


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(url: str, tokens: dict[str, str], clients: int, seconds: float,
               job_every: float) -> tuple[Tally, float]:
    tally = Tally()
    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.monotonic()
        deadline = started + seconds
        await asyncio.gather(*(client(i, url, tokens, deadline, job_every, tally, session)
                               for i in range(clients)))
        return tally, time.monotonic() - started


async def job_states(url: str, admin: str, ids: list[str]) -> dict[str, int]:
    headers = {"Authorization": f"Bearer {admin}"}
    jobs, offset = [], 0
    async with aiohttp.ClientSession(headers=headers) as session:
        while offset is not None:
            async with session.get(url + "/v1/jobs", params={"limit": 500,
                                                             "offset": offset}) as reply:
                page = await reply.json()
            jobs += page["jobs"]
            offset = page["next_offset"]
    wanted = set(ids)
    counts: dict[str, int] = defaultdict(int)
    for job in jobs:
        if job["id"] in wanted:
            counts[job["status"]] += 1
    return dict(counts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--job-every", type=float, default=10.0,
                        help="Seconds between one client's job submissions.")
    parser.add_argument("--pairs", type=int, default=6000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rlaif-service-load-") as tmp:
        tmp = Path(tmp)
        db = tmp / "load.db"
        prepare_queue(db, args.pairs, gold=args.pairs // 20, required=3)
        tokens = make_tokens(db, args.clients)
        fake, fake_url = start([sys.executable, str(ROOT / "tests" / "fake_openai.py"), "3600"],
                               tmp / "fake.log", "http://")
        service, url = start([sys.executable, "-m", "align.cli", "service", "--db",
                              str(db), "--port", "0", "--workers", str(args.workers),
                              "--endpoint", f"fake={fake_url}", "--user-jobs", "1000"],
                             tmp / "service.log", "http://")
        try:
            tally, elapsed = asyncio.run(load(url, tokens, args.clients, args.seconds,
                                              args.job_every))
            states = asyncio.run(job_states(url, tokens["admin"], tally.jobs))
        finally:
            stop(service)
            stop(fake)
        stored = {(row["item_id"], row["annotator"])
                  for row in store.load_rows(store.open_db(db), LABEL_VOTES)}
    lost = tally.votes - stored
    total = sum(len(v) for v in tally.latency.values())
    print(f"service load (every request authenticated): {args.clients} clients, "
          f"{elapsed:.1f} s, {total} requests "
          f"({total / elapsed:.0f}/s), {len(tally.errors)} errors")
    for kind, values in sorted(tally.latency.items()):
        print(f"  {kind:<12} {len(values):>6} requests  median {1000 * percentile(values, .5):6.1f}"
              f" ms  p95 {1000 * percentile(values, .95):6.1f} ms  p99 "
              f"{1000 * percentile(values, .99):6.1f} ms")
    every = [v for values in tally.latency.values() for v in values]
    print(f"  all          {len(every):>6} requests  p95 {1000 * percentile(every, .95):.1f} ms")
    print(f"  labels: {len(tally.votes)} acknowledged, {len(stored)} stored, {len(lost)} lost")
    print(f"  jobs: {len(tally.jobs)} submitted; at the end: "
          + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
    for error in tally.errors[:10]:
        print("  error:", error)
    if tally.errors or lost:
        sys.exit(1)


if __name__ == "__main__":
    main()
