"""`rlaif service`, `rlaif label-queue` and `rlaif label-export`: parse, call, print.

`service` serves ``align.service.app`` with uvicorn on a socket it binds first (``--port 0`` picks a
free port and the first line on stderr says which); it refuses to listen beyond loopback
without an API key. `label-queue` puts pairs on the human labelling queue, chosen at random,
where the judge is least sure, or where judges disagree; `label-export` writes the pairs with
their ``human`` consensus label.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path

import click

from datagen import store
from datagen.cli_checks import db_option, output_option
from datagen.errors import UserInputError
from datagen.responses.sample import write_jsonl

LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def is_loopback(host: str) -> bool:
    """Whether an address to bind stays on this machine."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (port 0: a free one)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        raise UserInputError(f"--host {host} --port {port}: cannot listen: {exc.strerror or exc}"
                             ) from None
    return sock


@click.command("service")
@db_option("Project database: jobs, request ledger, label queue.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Beyond loopback an API key is required.")
@click.option("--port", default=8470, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port, printed on start).")
@click.option("--api-key-env", default=None, metavar="NAME",
              help="Require on every request the key held in this environment variable "
                   "(Authorization: Bearer KEY or X-API-Key: KEY).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(0),
              help="Jobs run at once (0: queue jobs without running them).")
def service(db: Path, host: str, port: int, api_key_env: str | None, workers: int) -> None:
    """Serve jobs (/v1/jobs) and the human labelling page (/label) over HTTP.

    Jobs take the options of their CLI command and run as CLI processes on --db, so they
    share its request ledger; a restarted service resumes unfinished jobs. The API is
    described at /openapi.json.
    """
    import uvicorn

    from align.service.app import create_app, key_hash

    env = dict(os.environ)
    digest = None
    if api_key_env:
        key = env.pop(api_key_env, None)
        if not key:
            raise UserInputError(f"--api-key-env {api_key_env}: the variable is not set or empty")
        digest = key_hash(key)
        os.environ.pop(api_key_env, None)
        del key
    elif not is_loopback(host):
        raise UserInputError(
            f"--host {host} is reachable from other machines: give --api-key-env NAME so "
            "every request must carry a key (or bind 127.0.0.1)")
    store.open_db(db).close()
    sock = bind_socket(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    click.echo(f"service: http://{shown}:{bound_port} (db {db}, {workers} workers"
               f"{', API key required' if digest else ''})", err=True)
    sys.stderr.flush()
    app = create_app(db, workers=workers, key_digest=digest, env=env)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=10, proxy_headers=False)
    uvicorn.Server(config).run(sockets=[sock])


@click.command("label-queue")
@db_option("Project database holding the label queue.")
@click.option("--pairs", "pairs_path", type=click.Path(path_type=Path), default=None,
              help="Pairs JSONL: prompt, response_a, response_b (or responses: [K texts] to "
                   "rank), optional id.")
@click.option("--from-labels", "labels_path", type=click.Path(path_type=Path), default=None,
              help="Labels JSONL from `rlaif label` (p_a, verdicts, panel) to sample from.")
@click.option("--sample", type=click.IntRange(1), default=None,
              help="Queue at most this many pairs (default: all).")
@click.option("--strategy", type=click.Choice(["random", "uncertain", "disagree"]),
              default="random", show_default=True,
              help="random; uncertain: judge p_a nearest 0.5 first; disagree: judges of a panel "
                   "or the two orders disagree first.")
@click.option("--gold", "gold_path", type=click.Path(path_type=Path), default=None,
              help="Gold pairs JSONL with a known `human` answer, mixed in hidden.")
@click.option("--annotators-per-pair", default=3, show_default=True, type=click.IntRange(1),
              help="Counted votes each pair needs.")
@click.option("--gold-threshold", default=None, type=click.FloatRange(0, 1),
              help="Flag annotators below this gold accuracy.  [default: 0.7]")
@click.option("--gold-every", default=None, type=click.IntRange(1),
              help="One gold item per this many ordinary items.  [default: 4]")
@click.option("--min-gold", default=None, type=click.IntRange(1),
              help="Gold answers needed before an annotator can be flagged.  [default: 3]")
@click.option("--seed", default=0, show_default=True, help="Seed of --strategy random.")
def label_queue(db: Path, pairs_path: Path | None, labels_path: Path | None,
                sample: int | None, strategy: str, gold_path: Path | None,
                annotators_per_pair: int, gold_threshold: float | None,
                gold_every: int | None, min_gold: int | None, seed: int) -> None:
    """Put pairs on the human labelling queue served at /label by `rlaif service`."""
    from align.labeling.queue import (
        enqueue,
        judges_disagree,
        load_settings,
        read_items,
        sample_items,
    )

    if (pairs_path is None) == (labels_path is None):
        raise UserInputError("give exactly one of --pairs PAIRS.jsonl or --from-labels "
                             "LABELS.jsonl")
    items = read_items(pairs_path or labels_path, required=annotators_per_pair)
    if strategy == "uncertain" and not any(isinstance(i.source.get("p_a"), int | float)
                                           for i in items):
        raise UserInputError(f"{pairs_path or labels_path}: no line has p_a; --strategy "
                             "uncertain needs judge labels (--from-labels)")
    if strategy == "disagree" and not any(
            "verdicts" in i.source or "panel" in i.source or "consistent" in i.source
            for i in items):
        raise UserInputError(f"{pairs_path or labels_path}: no line has verdicts, panel or "
                             "consistent; --strategy disagree needs judge labels")
    chosen = sample_items(items, sample, strategy, seed)
    gold = read_items(gold_path, gold=True, required=annotators_per_pair) if gold_path else []
    database = store.open_db(db)
    settings = load_settings(database)
    updates = {k: v for k, v in (("gold_threshold", gold_threshold), ("gold_every", gold_every),
                                 ("min_gold", min_gold)) if v is not None}
    added = enqueue(database, [*chosen, *gold], settings.model_copy(update=updates))
    disagreeing = sum(judges_disagree(i.source) for i in chosen)
    click.echo(f"label-queue: {len(chosen)} pairs ({strategy}"
               f"{f', {disagreeing} with judges disagreeing' if strategy == 'disagree' else ''})"
               f" and {len(gold)} gold, {added} new on the queue, {annotators_per_pair} "
               f"annotators each -> {db}", err=True)


@click.command("label-export")
@db_option("Project database holding the label queue.")
@output_option("Labels JSONL: each pair with `human` (consensus) and its votes.")
@click.option("--complete-only", is_flag=True,
              help="Only pairs whose votes are all in.")
def label_export(db: Path, output: Path, complete_only: bool) -> None:
    """Write the human-labelled pairs as JSONL with a `human` field (`rlaif judge-report`
    reads it)."""
    from align.labeling.votes import LabelBoard

    if not db.is_file():
        raise UserInputError(f"{db}: no such database")
    board = LabelBoard(store.open_db(db))
    board.refresh()
    rows = [r for r in board.export() if r["human_complete"] or not complete_only]
    write_jsonl(output, rows)
    labelled = sum(r["human"] is not None for r in rows)
    click.echo(f"label-export: {len(rows)} pairs, {labelled} with a human label -> {output}",
               err=True)
