"""Running a pipeline (`rlaif run`): each stage as its own process, resumable after a kill.

A long journey from generated data to a trained policy must survive a crash or a kill
without redoing finished work, so each checked stage (``align.pipeline.file.load_plan``) runs
as its own process (``python -m align.cli STAGE ARGS``) that dies with the runner, so a crash
cannot corrupt the runner, and each stage resumes through the request ledger. Stage status
(start and end times, exit status, the exact argv) goes to the ``pipeline_stages`` table of the
project database, keyed by the pipeline hash and the stage index: the hash covers the stage
and every stage before it, so editing a later stage keeps the finished work before it. Run
again after a kill, the runner skips finished stages and reruns the unfinished one; ``--from``
reruns from a stage on. Each stage's output goes to its log under ``OUTPUT/logs``, and when
every stage is done ``rlaif report`` writes ``OUTPUT/report.html``.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from align.commands import find_param, resolve_command
from align.pipeline.file import Plan
from align.pipeline.stages import Stage
from datagen import store
from datagen.processes import die_with_parent
from datagen.store.tables import PIPELINE_STAGES

Echo = Callable[[str], None]


def stage_record(db: Any, stage: Stage) -> dict[str, Any] | None:
    rows = store.load_rows(db, PIPELINE_STAGES, id=stage.record_id)
    return rows[0] if rows else None


def save_record(db: Any, plan: Plan, stage: Stage, **fields: Any) -> None:
    """Write a stage's row: status, argv, pid, returncode, started_at, finished_at."""
    row = {"id": stage.record_id, "pipeline": plan.digest, "stage_key": stage.key,
           "stage_index": stage.index, "stage": stage.label, "name": stage.name,
           "argv": stage.command, "pipeline_file": str(plan.file), "status": "running", **fields}
    store.save_rows(db, PIPELINE_STAGES, [row], replace=True)


def stage_states(plan: Plan) -> list[str]:
    """'done' or 'pending' per stage, from the database (without creating it)."""
    if not plan.db.is_file():
        return ["pending"] * len(plan.stages)
    db = store.open_db(plan.db)
    return [((stage_record(db, s) or {}).get("status") == "done") and "done" or "pending"
            for s in plan.stages]


def describe_plan(plan: Plan, start: int = 0) -> list[str]:
    """One line per stage for --dry-run: number, state and the command line."""
    lines = [f"pipeline {plan.name}: {len(plan.stages)} stages, output {plan.output}, "
             f"db {plan.db}"]
    for stage, state in zip(plan.stages, stage_states(plan), strict=True):
        if state == "done" and stage.index >= start:
            state = "rerun"
        cmd = shlex.join(["rlaif", *stage.words, *stage.argv])
        lines.append(f"[{stage.index + 1}/{len(plan.stages)}] {state:7} {stage.name}: {cmd}")
    return lines


def run_plan(plan: Plan, start: int | None = None, echo: Echo | None = None) -> int:
    """Run the stages in order, skipping finished ones before ``start`` (every finished one
    when ``start`` is None); returns 0, or the exit status of the stage that failed."""
    echo = echo or (lambda line: click.echo(line, err=True))
    plan.output.mkdir(parents=True, exist_ok=True)
    (plan.output / "logs").mkdir(exist_ok=True)
    db = store.open_db(plan.db)
    started = time.time()
    for stage in plan.stages:
        tag = f"[{stage.index + 1}/{len(plan.stages)}] {stage.name}"
        record = stage_record(db, stage)
        rerun = start is not None and stage.index >= start
        if record and record["status"] == "done" and not rerun:
            echo(f"{tag}: done earlier, skipped")
            continue
        if record and record["status"] == "running":
            echo(f"{tag}: resuming an unfinished run")
        echo(f"{tag}: {shlex.join(['rlaif', *stage.words, *stage.argv])}")
        began = time.time()
        code = run_stage(db, plan, stage)
        if code == 0:
            echo(f"{tag}: done in {time.time() - began:.0f} s")
        else:
            echo(f"{tag}: failed with exit status {code}; see {log_path(plan, stage)}; run "
                 "again to resume")
            return code if code > 0 else 1
    run_report(plan, echo)
    echo(f"pipeline {plan.name}: {len(plan.stages)} stages done in "
         f"{time.time() - started:.0f} s")
    return 0


def last_output(plan: Plan, stage: Stage) -> str:
    """What the stage printed the last time it ran (from its log)."""
    path = log_path(plan, stage)
    if not path.is_file():
        return ""
    text = path.read_text(encoding="utf-8", errors="replace")
    return text.rsplit("\n$ ", 1)[-1].split("\n", 1)[-1] if "\n$ " in text else text


def log_path(plan: Plan, stage: Stage) -> Path:
    slug = re.sub(r"[^A-Za-z0-9]+", "-", stage.name).strip("-") or "stage"
    return plan.output / "logs" / f"{stage.index + 1:02d}-{slug}.log"


def run_stage(db: Any, plan: Plan, stage: Stage) -> int:
    """Run one stage as a child process (that dies with us), teeing its output to its log."""
    began = time.time()
    command = stage.command
    save_record(db, plan, stage, status="running", started_at=began)
    for output in stage.outputs:  # the pipeline owns its folder tree (datagen.cli_checks)
        output.parent.mkdir(parents=True, exist_ok=True)
    with log_path(plan, stage).open("ab") as log:
        log.write(f"\n$ {shlex.join(command)}\n".encode())
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=plan.output, env=child_env(),
                                preexec_fn=die_with_parent())
        try:
            save_record(db, plan, stage, status="running", started_at=began, pid=proc.pid)
            tee(proc, log)
            code = proc.wait()
        finally:
            stop_child(proc)
    took = time.time()
    save_record(db, plan, stage, status="done" if code == 0 else "failed", returncode=code,
                pid=proc.pid, started_at=began, finished_at=took)
    return code


def tee(proc: subprocess.Popen, log: Any) -> None:
    """Copy the child's output to its log and to our stderr as it comes."""
    out = getattr(sys.stderr, "buffer", None)
    while chunk := proc.stdout.read1(65536):
        log.write(chunk)
        log.flush()
        if out is not None:
            out.write(chunk)
            out.flush()
        else:
            sys.stderr.write(chunk.decode(errors="replace"))


def stop_child(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def child_env() -> dict[str, str]:
    """Our environment, unbuffered, with this package importable from the output folder."""
    root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    return env


def run_report(plan: Plan, echo: Echo) -> Path | None:
    """Run `rlaif report --db DB -o OUTPUT/report.html` when that command exists, giving it
    the output folder, label files and exports too when it takes them."""
    try:
        command, parent = resolve_command(("report",))
    except LookupError:
        return None
    target = plan.output / "report.html"
    argv = ["--db", str(plan.db), "-o", str(target), *report_extras(plan, command)]
    try:
        command.make_context("report", list(argv), parent=parent).close()
    except click.ClickException as exc:
        echo(f"report: not run (`rlaif report` does not take these options: "
             f"{exc.format_message()})")
        return None
    code = subprocess.call([sys.executable, "-m", "align.cli", "report", *argv], cwd=plan.output,
                           env=child_env(), stdin=subprocess.DEVNULL,
                           preexec_fn=die_with_parent())
    if code != 0:
        echo(f"report: `rlaif report` failed with exit status {code}")
        return None
    echo(f"report: {target}")
    return target


def report_extras(plan: Plan, command: click.Command) -> list[str]:
    """--runs-dir OUTPUT, --labels for label outputs, --dataset for exports (as supported)."""
    extras: list[str] = []
    if find_param(command, "runs-dir") is not None:
        extras += ["--runs-dir", str(plan.output)]
    wanted = (("labels", lambda s: s.words == ("label",)),
              ("dataset", lambda s: s.words[0] == "export"))
    for option, chosen in wanted:
        if find_param(command, option) is None:
            continue
        for stage in filter(chosen, plan.stages):
            for path in stage.outputs:
                if path != plan.db and path.exists():
                    extras += [f"--{option}", str(path)]
    return extras
