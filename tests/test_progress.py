"""Live progress (issue 17): a rich bar under a pseudo-terminal, one summary line without one,
and one JSON object a second with --progress jsonl; `rlaif batch` included."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def prompts_file(tmp_path: Path, n: int = 6) -> Path:
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{i}", "prompt": f"Say {i}."}) + "\n"
                            for i in range(n)))
    return path


def command(tmp_path: Path, fake, *extra: str) -> list[str]:
    return [sys.executable, "-m", "align.cli", "generate", "responses", "--prompts",
            str(prompts_file(tmp_path)), "--n", "2", "--db", str(tmp_path / "p.db"),
            "--base-url", fake.base_url, "--model", "m", "--concurrency", "2", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "160"}


def run_on_a_terminal(args: list[str]) -> tuple[int, str]:
    """Run with stderr on a pseudo-terminal; return the exit status and what it showed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=slave, env=env())
    os.close(slave)
    shown = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(master)
    return proc.wait(timeout=60), shown.decode(errors="replace")


@pytest.fixture
def slow_fake(fake_llm):
    fake_llm.responder = lambda path, body: {"text": f"answer {body['seed']}", "delay": 0.15}
    return fake_llm


def test_a_terminal_gets_a_live_bar_with_counts_rate_and_tokens(tmp_path, slow_fake):
    code, shown = run_on_a_terminal(command(tmp_path, slow_fake))
    assert code == 0, shown
    assert "\x1b[" in shown  # drawn in place with terminal control codes
    assert "12/12" in shown and "req/s" in shown and "from ledger" in shown and "tok" in shown
    assert "responses: 6 prompts, 12 responses" in shown


def test_without_a_terminal_only_the_summary_line(tmp_path, slow_fake):
    result = subprocess.run(command(tmp_path, slow_fake), capture_output=True, text=True,
                            env=env(), timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [line for line in result.stderr.splitlines()
                                          if line.startswith("responses: ")]
    assert len(result.stderr.splitlines()) == 1 and "\x1b[" not in result.stderr


def test_progress_jsonl_for_machines(tmp_path, slow_fake):
    result = subprocess.run(command(tmp_path, slow_fake, "--progress", "jsonl"),
                            capture_output=True, text=True, env=env(), timeout=60)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert events[-1]["event"] == "done" and events[0]["event"] == "progress"
    last = events[-1]
    assert (last["done"], last["total"], last["ok"], last["failed"]) == (12, 12, 12, 0)
    assert last["tokens"] > 0 and {"rate", "eta_s", "cost_usd", "from_ledger"} <= set(last)
    again = subprocess.run(command(tmp_path, slow_fake, "--progress", "jsonl"),
                           capture_output=True, text=True, env=env(), timeout=60)
    done = [json.loads(line) for line in again.stderr.splitlines() if line.startswith("{")][-1]
    assert done["from_ledger"] == 12 and done["sent"] == 0


def test_batch_draws_the_same_bar(tmp_path, slow_fake):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({
        "custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "m", "seed": i, "messages": [{"role": "user", "content": str(i)}]}})
        + "\n" for i in range(5)))
    code, shown = run_on_a_terminal([
        sys.executable, "-m", "align.cli", "batch", str(src), "-o", str(tmp_path / "out.jsonl"),
        "--db", str(tmp_path / "b.db"), "--base-url", slow_fake.base_url])
    assert code == 0, shown
    assert "5/5" in shown and "req/s" in shown and "batch: 5 requests" in shown
