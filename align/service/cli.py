"""`rlaif service`, `rlaif label-queue` and `rlaif label-export`: parse, call, print.

`service` serves ``align.service.app`` with uvicorn on a socket it binds first (``--port 0`` picks a
free port and the first line on stderr says which); every request needs a token, made with
`service token create` (`token list`, `token revoke`); `service audit` lists the
state-changing requests. `label-queue` puts pairs on the human labelling queue, chosen at random,
where the judge is least sure, or where judges disagree; `label-export` writes the pairs with
their ``human`` consensus label.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
import time
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


@click.group("service", invoke_without_command=True)
@db_option("Project database: jobs, request ledger, label queue, users.", postgres=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on.")
@click.option("--port", default=8470, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0: any free port, printed on start).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Uploads and job workspaces, shared by every service process on the db "
                   "(a shared filesystem across machines).  [default: DB.data next to a "
                   "SQLite db]")
@click.option("--endpoint", "endpoints", multiple=True, metavar="NAME=URL[,key_env=VAR]"
              "[,models=a|b]",
              help="A model endpoint jobs may use by name (repeatable); its key is read from "
                   "VAR at start. `default` is the embedded model unless named here.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Another host name clients use (a reverse proxy's); repeatable.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(0),
              help="Jobs run at once (0: queue jobs without running them).")
@click.option("--max-upload-mb", default=256.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True), help="Largest upload.")
@click.option("--user-quota-mb", default=2048.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Uploads one user may keep.")
@click.option("--user-jobs", default=20, show_default=True, type=click.IntRange(1),
              help="Queued or running jobs one user may have.")
@click.option("--job-memory-mb", default=None, type=click.IntRange(64),
              help="Address-space limit of each job process.  [default: none]")
@click.option("--job-timeout-s", default=None, type=click.FloatRange(min=0, min_open=True),
              help="Wall-clock limit of each job.  [default: none]")
@click.option("--header-timeout-s", default=10.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True),
              help="Time a request's headers may take to arrive; slower connections close.")
@click.pass_context
def service(ctx: click.Context, db: Path | str, host: str, port: int, data_dir: Path | None,
            endpoints: tuple[str, ...], allowed_hosts: tuple[str, ...], workers: int,
            max_upload_mb: float, user_quota_mb: float, user_jobs: int,
            job_memory_mb: int | None, job_timeout_s: float | None,
            header_timeout_s: float) -> None:
    """Serve jobs (/v1/jobs), uploads (/v1/files) and the labelling page (/label).

    Every request needs a token (`rlaif service token create`). Jobs take the options of
    their CLI command and run as CLI processes on --db, so they share its request ledger; a
    restarted service resumes unfinished jobs. The API is described at /openapi.json.
    """
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from align.service.app import create_app
    from align.service.context import Settings
    from align.service.endpoints import endpoint_table
    from align.service.protocol import timed_protocol

    env = dict(os.environ)
    table = endpoint_table(list(endpoints), env)
    for endpoint in table.values():  # keys live in the service's memory only from here on
        if endpoint.key_env:
            os.environ.pop(endpoint.key_env, None)
            env.pop(endpoint.key_env, None)
    if data_dir is None and store.is_postgres(db):
        raise UserInputError("--data-dir: needed with a postgresql:// --db (every service "
                             "process on the database must use the same folder)")
    store.open_db(db).close()
    sock = bind_socket(host, port)
    bound_host, bound_port = sock.getsockname()[:2]
    hosts = {bound_host.lower(), *(h.lower() for h in allowed_hosts)}
    if is_loopback(host):
        hosts |= {"127.0.0.1", "localhost", "::1"}
    settings = Settings(
        data_dir=(data_dir or db.with_name(db.name + ".data")).resolve(), workers=workers,
        hosts=frozenset(hosts), upload_bytes=int(max_upload_mb * 2**20),
        user_bytes=int(user_quota_mb * 2**20), user_jobs=user_jobs,
        job_memory_bytes=job_memory_mb * 2**20 if job_memory_mb else None,
        job_seconds=job_timeout_s)
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    click.echo(f"service: http://{shown}:{bound_port} (db {store.shown_target(db)}, "
               f"{workers} workers, endpoints {', '.join(sorted(table))}; every request "
               "needs a token)", err=True)
    sys.stderr.flush()
    app = create_app(db, settings, env=env, endpoints=table)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=10, proxy_headers=False,
                            timeout_keep_alive=5, limit_concurrency=512,
                            http=timed_protocol(header_timeout_s),
                            h11_max_incomplete_event_size=64 * 1024)
    uvicorn.Server(config).run(sockets=[sock])


@service.group("token")
def token() -> None:
    """Create, list and revoke the tokens people and programs use the service with."""


@token.command("create")
@db_option("Project database the service runs on.", postgres=True)
@click.option("--name", required=True, help="Who the token is for (unique, case-insensitive).")
@click.option("--role", required=True, type=click.Choice(["admin", "operator", "annotator"]),
              help="admin: users, instructions, gold; operator: jobs and queues; annotator: "
                   "labels.")
def token_create(db: Path, name: str, role: str) -> None:
    """Make a token; it is printed once, as the last line (only its hash is kept)."""
    from align.service.users import create_token

    user, secret = create_token(store.open_db(db), name, role)
    click.echo(f"token for {user.name} ({user.role}); keep it secret, it is shown once:",
               err=True)
    click.echo(secret)


@token.command("revoke")
@db_option("Project database the service runs on.", postgres=True)
@click.option("--id", "token_id", default=None, help="The token id (from `token list`).")
@click.option("--name", default=None, help="Revoke every token and session of this user.")
def token_revoke(db: Path, token_id: str | None, name: str | None) -> None:
    """Revoke a token (or all of a user's); it stops working on the next request."""
    from align.service.users import revoke

    if (token_id is None) == (name is None):
        raise UserInputError("give exactly one of --id TOKEN_ID or --name NAME")
    count = revoke(store.open_db(db), token_id=token_id, name=name)
    if not count:
        raise UserInputError(f"{'--id ' + token_id if token_id else '--name ' + str(name)}: "
                             "no live token")
    click.echo(f"revoked {count} token(s)", err=True)


@token.command("list")
@db_option("Project database the service runs on.", postgres=True)
def token_list(db: Path) -> None:
    """The tokens: id, user, role, created, revoked (never the secrets)."""
    from align.service.users import list_tokens

    for row in list_tokens(store.open_db(db)):
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(row["created_at"]))
        click.echo(f"{row['id']}\t{row['name']}\t{row['role']}\t{created}"
                   f"\t{'revoked' if row['revoked'] else 'live'}")


@service.command("audit")
@db_option("Project database the service runs on.", postgres=True)
@click.option("--limit", default=100, show_default=True, type=click.IntRange(1),
              help="The most recent this many requests.")
def audit(db: Path, limit: int) -> None:
    """Who changed what through the service, and with what outcome (newest last)."""
    if not store.database_exists(db):
        raise UserInputError(f"{db}: no such database")
    rows = store.load_page(store.open_db(db), store.tables.SERVICE_AUDIT, "at DESC, rowid DESC",
                           limit)
    for row in reversed(rows):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["at"]))
        click.echo(f"{when}\t{row['user_name'] or '-'}\t{row['role'] or '-'}\t"
                   f"{row['method']} {row['path']}\t{row['target'] or '-'}\t{row['status']}")


@click.command("label-queue")
@db_option("Project database holding the label queue.", postgres=True)
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
@db_option("Project database holding the label queue.", postgres=True)
@output_option("Labels JSONL: each pair with `human` (consensus) and its votes.")
@click.option("--complete-only", is_flag=True,
              help="Only pairs whose votes are all in.")
def label_export(db: Path, output: Path, complete_only: bool) -> None:
    """Write the human-labelled pairs as JSONL with a `human` field (`rlaif judge-report`
    reads it)."""
    from align.labeling.votes import LabelBoard

    if not store.database_exists(db):
        raise UserInputError(f"{db}: no such database")
    board = LabelBoard(store.open_db(db))
    board.refresh()
    rows = [r for r in board.export() if r["human_complete"] or not complete_only]
    write_jsonl(output, rows)
    labelled = sum(r["human"] is not None for r in rows)
    click.echo(f"label-export: {len(rows)} pairs, {labelled} with a human label -> {output}",
               err=True)
