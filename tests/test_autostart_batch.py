"""`rlaif batch` with no endpoint given starts the embedded server and gets real model text."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tiny_models import tiny_model_dir  # noqa: F401 (a fixture)


def test_batch_without_base_url_uses_the_auto_started_embedded_model(tiny_model_dir, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({
        "custom_id": "q1", "method": "POST", "url": "/v1/chat/completions",
        "body": {"messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 5,
                 "logprobs": True, "top_logprobs": 2, "temperature": 0},
    }) + "\n")
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "RLAIF_SERVE_MODEL": str(tiny_model_dir)}
    env.pop("OPENAI_BASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "align.cli", "batch", str(src), "-o", str(out),
         "--db", str(tmp_path / "d.db")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "started the embedded model" in done.stderr
    line = json.loads(out.read_text())
    body = line["response"]["body"]
    assert body["model"].startswith(tiny_model_dir.name + "-")
    content = body["choices"][0]["logprobs"]["content"]
    assert 1 <= len(content) <= 5
    assert all(t["logprob"] <= 0 and len(t["top_logprobs"]) == 2 for t in content)
    assert body["usage"]["completion_tokens"] == len(content)
    # issue 17: a rerun the ledger answers in full starts no model
    again = subprocess.run(
        [sys.executable, "-m", "align.cli", "batch", str(src), "-o", str(tmp_path / "again.jsonl"),
         "--db", str(tmp_path / "d.db")], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    assert "started the embedded model" not in again.stderr
    assert "the embedded model is not started" in again.stderr
    assert "1 from the ledger" in again.stderr
    assert json.loads((tmp_path / "again.jsonl").read_text())["response"] == line["response"]


def test_a_retrained_model_directory_gets_a_new_served_id(tmp_path):
    from datagen.serve.default_model import served_model_id

    model = tmp_path / "final"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 64}')
    (model / "model.safetensors").write_bytes(b"weights-1")
    first = served_model_id(str(model))
    assert first.startswith("final-") and served_model_id(str(model)) == first
    (model / "model.safetensors").write_bytes(b"weights-2, retrained")
    assert served_model_id(str(model)) != first
    other = tmp_path / "elsewhere" / "final"
    other.mkdir(parents=True)
    (other / "config.json").write_text('{"hidden_size": 32}')
    assert served_model_id(str(other)) != first


def test_started_servers_take_their_backend_from_the_environment(monkeypatch, tmp_path):
    from datagen.serve.default_model import served_model_id

    monkeypatch.setenv("RLAIF_SERVE_BACKEND", "transformers")
    assert served_model_id("default").endswith("-transformers-fp32")
    monkeypatch.setenv("RLAIF_SERVE_BACKEND", "ctranslate2")
    assert served_model_id("default").endswith("-ct2-int8")
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps({"custom_id": "q1", "method": "POST",
                               "url": "/v1/chat/completions", "body": {
                                   "messages": [{"role": "user", "content": "Hi."}]}}) + "\n")
    env = {**os.environ, "RLAIF_SERVE_BACKEND": "onnx"}
    env.pop("OPENAI_BASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "align.cli", "batch", str(src), "-o", str(tmp_path / "o.jsonl"),
         "--db", str(tmp_path / "d.db")], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].endswith(
        "$RLAIF_SERVE_BACKEND: expected one of ctranslate2, transformers, got 'onnx'")
    assert "Traceback" not in done.stderr and not (tmp_path / "o.jsonl").exists()
