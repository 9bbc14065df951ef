"""`--executor ray` on a real two-node Ray cluster on this machine (ray.cluster_utils).

Each node has its own loopback endpoint (``--endpoint-per-node`` with ``${RLAIF_NODE_PORT}``
taken from the node's environment), so the servers show which node sent what. Checked: the
output equals the local executor's, each node served a share, every request was sent once and
a rerun sends nothing; the requests-per-minute limit holds across both nodes together; and a
node killed mid-run leaves its shards to the other node, the run completes, and only requests
that were in flight on the dead node are sent again.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import ray
from click.testing import CliRunner
from fake_openai import FakeOpenAI
from ray.cluster_utils import Cluster

from align.cli import main
from datagen.distributed.shards import shard_count, split

pytestmark = pytest.mark.slow
RLAIF = [sys.executable, "-m", "align.cli"]
TEMPLATE = "http://127.0.0.1:${RLAIF_NODE_PORT}/v1"


def slow_echo(path, body):
    return {"text": "echo: " + body["messages"][-1]["content"], "delay": 0.02}


@pytest.fixture(scope="module")
def cluster():
    servers = [FakeOpenAI(slow_echo).start(), FakeOpenAI(slow_echo).start()]
    ports = [s.base_url.rsplit(":", 1)[1].split("/")[0] for s in servers]
    small = {"num_cpus": 1, "object_store_memory": 80 * 1024 * 1024}
    cluster = Cluster(initialize_head=True, head_node_args={
        **small, "include_dashboard": False,
        "env_vars": {"RLAIF_NODE_PORT": ports[0], "RLAIF_NODE_NAME": "head"},
        "_system_config": {"health_check_period_ms": 500, "health_check_failure_threshold": 4},
    })
    worker = cluster.add_node(**small, env_vars={"RLAIF_NODE_PORT": ports[1],
                                                  "RLAIF_NODE_NAME": "worker"})
    cluster.wait_for_nodes()
    cluster.servers, cluster.worker = servers, worker
    yield cluster
    cluster.shutdown()
    for server in servers:
        server.stop()


def requests_file(path: Path, n: int, prefix: str) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"custom_id": f"{prefix}{i}", "method": "POST",
                                "url": "/v1/chat/completions",
                                "body": {"model": "fake-model", "max_tokens": 8, "messages": [
                                    {"role": "user", "content": f"{prefix} question {i}"}]}})
                    + "\n")
    return path


def ray_batch(cluster, src: Path, out: Path, db: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*RLAIF, "batch", str(src), "-o", str(out), "--db", str(db), "--executor", "ray",
         "--ray-address", cluster.address, "--endpoint-per-node", TEMPLATE,
         "--concurrency", "4", *extra],
        capture_output=True, text=True, timeout=300)


def answers(path: Path) -> dict[str, str]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return {line["custom_id"]: line["response"]["body"]["choices"][0]["message"]["content"]
            for line in lines if line["error"] is None}


def sent_contents(cluster) -> Counter:
    return Counter(r["body"]["messages"][-1]["content"]
                   for server in cluster.servers for r in server.requests)


def test_ray_batch_matches_local_spreads_over_nodes_and_reruns_free(cluster, tmp_path, fake_llm):
    src = requests_file(tmp_path / "in.jsonl", 120, "a")
    local = subprocess.run([*RLAIF, "batch", str(src), "-o", str(tmp_path / "local.jsonl"),
                            "--db", str(tmp_path / "local.db"), "--base-url", fake_llm.base_url],
                           capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stderr
    done = ray_batch(cluster, src, tmp_path / "ray.jsonl", tmp_path / "ray.db")
    assert done.returncode == 0, done.stderr
    assert answers(tmp_path / "ray.jsonl") == answers(tmp_path / "local.jsonl")
    assert len(answers(tmp_path / "ray.jsonl")) == 120
    per_server = [sum(r["body"]["messages"][-1]["content"].startswith("a ")
                      for r in server.requests) for server in cluster.servers]
    assert min(per_server) > 0 and sum(per_server) == 120
    assert max(Counter(c for c in sent_contents(cluster).elements() if c.startswith("a "))
               .values()) == 1
    again = ray_batch(cluster, src, tmp_path / "ray2.jsonl", tmp_path / "ray.db")
    assert again.returncode == 0, again.stderr
    assert sum(server.requests.__len__() for server in cluster.servers) == sum(per_server)
    assert "120 from the ledger" in again.stderr


def longer_first(path, body):
    user = body["messages"][-1]["content"]
    first = re.search(r"<response_A>\n(.*?)\n</response_A>", user, re.S).group(1)
    second = re.search(r"<response_B>\n(.*?)\n</response_B>", user, re.S).group(1)
    return {"text": "A" if len(first) > len(second) else "B"}


def test_ray_label_matches_local(cluster, tmp_path, fake_llm):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({
        "id": f"p{i}", "prompt": f"Say something about {i}.", "response_a": "short " * (1 + i % 3),
        "response_b": "a longer answer " * (1 + i % 2)}) + "\n" for i in range(40)))
    fake_llm.responder = longer_first
    for server in cluster.servers:
        server.responder = longer_first
    common = ["label", "--input", str(pairs), "--judge-model", "judge"]
    local = subprocess.run([*RLAIF, *common, "-o", str(tmp_path / "local.jsonl"), "--db",
                            str(tmp_path / "l.db"), "--judge-base-url", fake_llm.base_url],
                           capture_output=True, text=True, timeout=300)
    assert local.returncode == 0, local.stderr
    before = [len(server.requests) for server in cluster.servers]
    remote = subprocess.run([*RLAIF, *common, "-o", str(tmp_path / "ray.jsonl"), "--db",
                             str(tmp_path / "r.db"), "--executor", "ray", "--ray-address",
                             cluster.address, "--endpoint-per-node", TEMPLATE],
                            capture_output=True, text=True, timeout=300)
    for server in cluster.servers:
        server.responder = slow_echo
    assert remote.returncode == 0, remote.stderr
    strip = ("created", "run_id")
    mine = [{k: v for k, v in json.loads(line).items() if k not in strip}
            for line in (tmp_path / "ray.jsonl").read_text().splitlines()]
    theirs = [{k: v for k, v in json.loads(line).items() if k not in strip}
              for line in (tmp_path / "local.jsonl").read_text().splitlines()]
    assert [r["preferred"] for r in mine] == [r["preferred"] for r in theirs]
    assert [r["p_a"] for r in mine] == [r["p_a"] for r in theirs]
    served = [len(server.requests) - n for server, n in zip(cluster.servers, before, strict=True)]
    assert sum(served) == 80  # each request once (the batch test checks the spread over nodes)


def test_rpm_limit_holds_across_nodes(cluster, tmp_path):
    # --rpm 120: a burst of 20 (ten seconds' worth), then 2 per second for both nodes together.
    # Limits per node would let both nodes burst 20 each and finish 30 requests at once.
    src = requests_file(tmp_path / "in.jsonl", 30, "r")
    started = time.time()
    done = ray_batch(cluster, src, tmp_path / "out.jsonl", tmp_path / "r.db", "--rpm", "120")
    assert done.returncode == 0, done.stderr
    times = sorted(r["received_at"] for server in cluster.servers for r in server.requests
                   if r["body"]["messages"][-1]["content"].startswith("r "))
    assert len(times) == 30
    assert times[-1] - times[0] >= 4.0
    assert sum(t - times[0] < 1.0 for t in times) <= 24  # 20 + 2/s (30 with per-node limits)
    assert time.time() - started < 120


def run_rlaif(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*RLAIF, *args], capture_output=True, text=True, timeout=300)


def in_process(*args: str):
    """Run rlaif in this process (a new process costs seconds of imports per run)."""
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 0, result.output
    return result


def on_ray(cluster) -> list[str]:
    return ["--executor", "ray", "--ray-address", cluster.address]


def test_label_verify_runs_in_blocks_on_ray_and_matches_local(cluster, tmp_path):
    rules = [{"kind": "no_commas"}, {"kind": "word_count", "min": 3, "max": 6}]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({
        "id": f"v{i}", "prompt": f"Describe {i}.", "constraints": rules[: 1 + i % 2],
        "response_a": "one, two, three" if i % 3 else "one two three four",
        "response_b": "just words here " * (1 + i % 4)}) + "\n" for i in range(1200)))
    outs = {}
    for name, extra in (("local", []), ("ray", on_ray(cluster))):
        outs[name] = tmp_path / f"{name}.jsonl"
        in_process("label", "--input", str(pairs), "--judge", "verify", "-o", str(outs[name]),
                   "--db", str(tmp_path / f"{name}.db"), *extra)
    assert outs["ray"].read_bytes() == outs["local"].read_bytes()
    labels = [json.loads(line) for line in outs["ray"].read_text().splitlines()]
    assert len(labels) == 1200 and {r["preferred"] for r in labels} >= {"a", "b"}


def test_ifeval_scoring_flan_and_constrained_on_ray_match_local(cluster, tmp_path):
    from judges.constraints.ifeval.evaluate import read_ifeval_prompts

    items = read_ifeval_prompts(None)[:120]
    responses = tmp_path / "responses.jsonl"
    responses.write_text("".join(json.dumps({
        "prompt": item.prompt, "response": f"Answer {i}. " * (1 + i % 5) + (
            "END" if i % 2 else "")}) + "\n" for i, item in enumerate(items)))
    printed = {}
    for name, extra in (("local", []), ("ray", on_ray(cluster))):
        printed[name] = in_process(
            "eval", "ifeval", "--responses", str(responses), "--n-prompts", "120", "--json",
            "-o", str(tmp_path / f"ifeval-{name}.jsonl"), *extra).stdout
        flan_data = Path(__file__).parent / "data" / "flan"
        in_process("generate", "flan", "--input", str(flan_data / "nli.jsonl"), "--task", "nli",
                   "--input", str(flan_data / "sentiment.csv"), "--task", "sentiment",
                   "--shots", "2", "--options-style", "random", "--seed", "11",
                   "-o", str(tmp_path / f"flan-{name}.jsonl"), *extra)
        in_process("generate", "constrained", "--constraints", "1-3", "--seed", "5",
                   "-o", str(tmp_path / f"constrained-{name}.jsonl"), *extra)
    assert printed["ray"] == printed["local"]
    assert json.loads(printed["ray"])["n_prompts"] == 120
    assert ((tmp_path / "ifeval-ray.jsonl").read_bytes()
            == (tmp_path / "ifeval-local.jsonl").read_bytes())
    flan = (tmp_path / "flan-ray.jsonl").read_bytes()
    assert flan == (tmp_path / "flan-local.jsonl").read_bytes() and flan.count(b"\n") == 20
    constrained = (tmp_path / "constrained-ray.jsonl").read_bytes()
    assert constrained == (tmp_path / "constrained-local.jsonl").read_bytes()
    assert constrained.count(b"\n") > 20


def test_map_blocks_keeps_order_spreads_and_raises_the_functions_error(cluster):
    from align.eval.heldout import satisfaction
    from datagen.distributed.blocks import map_blocks, map_local
    from datagen.distributed.session import ray_session
    from datagen.errors import UserInputError

    texts = [("word " * (i % 9)).strip() + (", and" if i % 4 == 0 else "") for i in range(900)]
    items = [SimpleNamespace(constraints=[{"kind": "no_commas"},
                                          {"kind": "word_count", "min": 2, "max": 5}])
             for _ in texts]
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers lack tests/
    with ray_session(cluster.address):
        blocks = functools.partial(map_blocks, block_size=100)
        assert satisfaction(items, texts, blocks) == satisfaction(items, texts, map_local)
        nodes = map_blocks(where_it_ran, list(range(900)), block_size=100)
        with pytest.raises(UserInputError, match="constraints"):
            map_blocks(functools.partial(verify_rows, "no_such_kind"), ["x"] * 10)
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert [n for n, _ in nodes] == list(range(900))
    assert {name for _, name in nodes} == {"head", "worker"}


def where_it_ran(block: list[int]) -> list[tuple[int, str]]:
    import os

    return [(n, os.environ["RLAIF_NODE_NAME"]) for n in block]


def verify_rows(kind: str, texts: list[str]) -> list[object]:
    from datagen.errors import UserInputError
    from judges.constraints.verify import verify_response

    try:
        return [verify_response([{"kind": kind}], text) for text in texts]
    except ValueError as exc:
        raise UserInputError(f"constraints: {exc}") from None


def test_progress_counts_requests_while_shards_are_still_running(cluster):
    from datagen.distributed.executor import RayClient
    from datagen.endpoint.client import ClientConfig, Request

    requests = [Request("/chat/completions", {"model": "fake-model", "messages": [
        {"role": "user", "content": f"p question {i}"}]}) for i in range(20)]
    config = ClientConfig(base_url=TEMPLATE, concurrency=1)
    seen = []

    async def go():
        async with RayClient(config, None, address=cluster.address,
                             endpoint_per_node=TEMPLATE) as client:
            call = asyncio.ensure_future(client.call_many(requests))
            while not call.done():
                s = client.stats
                seen.append(s.ok + s.failed + s.skipped)
                await asyncio.sleep(0.05)
            return await call, client.stats

    for server in cluster.servers:
        server.responder = slower_echo
    try:
        answers, stats = asyncio.run(go())
    finally:
        for server in cluster.servers:
            server.responder = slow_echo
    assert stats.ok == 20 and all(a.ok for a in answers)
    # 4 shards of about 5 requests, 0.2 s each, reported every 0.5 s: counts that no set of
    # whole shards adds up to were seen, so running shards were counted as they went
    sizes = [len(s) for s in split(requests, shard_count(20, 2))]
    whole = {sum(c) for r in range(len(sizes) + 1) for c in itertools.combinations(sizes, r)}
    assert set(seen) - whole, (sorted(set(seen)), sizes)
    assert seen == sorted(seen)


def slower_echo(path, body):
    return {"text": "echo: " + body["messages"][-1]["content"], "delay": 0.2}


def test_pipeline_executor_ray_runs_its_batch_stage_on_the_cluster(cluster, tmp_path):
    src = requests_file(tmp_path / "in.jsonl", 24, "q")
    pipeline = tmp_path / "p.yaml"
    escaped = TEMPLATE.replace("${", "$${")  # the node's variable, not the pipeline's
    pipeline.write_text(
        f"output: {tmp_path / 'run'}\nexecutor: ray\nray_address: {cluster.address}\n"
        f"stages:\n  - stage: batch\n    args: [{src}]\n"
        f"    options: {{output: out.jsonl, endpoint-per-node: '{escaped}'}}\n")
    done = run_rlaif("run", str(pipeline))
    assert done.returncode == 0, done.stderr
    assert len(answers(tmp_path / "run" / "out.jsonl")) == 24
    # only the nodes know ${RLAIF_NODE_PORT}: every request reaching them was sent by Ray
    assert sum(r["body"]["messages"][-1]["content"].startswith("q ")
               for server in cluster.servers for r in server.requests) == 24


def test_dead_node_shards_finish_elsewhere_and_nothing_is_paid_twice(cluster, tmp_path):
    src = requests_file(tmp_path / "in.jsonl", 160, "k")
    db, out = tmp_path / "k.db", tmp_path / "out.jsonl"
    proc = subprocess.Popen(
        [*RLAIF, "batch", str(src), "-o", str(out), "--db", str(db), "--executor", "ray",
         "--ray-address", cluster.address, "--endpoint-per-node", TEMPLATE, "--concurrency", "4"],
        stderr=subprocess.PIPE, text=True)
    worker_server = cluster.servers[1]
    deadline = time.time() + 120
    while sum(r["body"]["messages"][-1]["content"].startswith("k ")
              for r in worker_server.requests) < 8:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    cluster.remove_node(cluster.worker, allow_graceful=False)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err
    assert len(answers(out)) == 160
    sent = Counter(c for c in sent_contents(cluster).elements() if c.startswith("k "))
    assert len(sent) == 160
    # only what was in flight on the dead node (4 at a time) can have been sent twice
    assert sum(sent.values()) - 160 <= 8
    before = sum(sent.values())
    again = ray_batch(cluster, src, tmp_path / "again.jsonl", db)
    assert again.returncode == 0, again.stderr
    assert sum(sent_contents(cluster)[c] for c in sent) == before
