"""`rlaif serve` end to end: a real server process on a tiny model, driven by the openai client.

One server (``--max-batch 8 --api-key``) is started per backend (CTranslate2 int8, on a copy
converted in the test, and transformers) on the tiny random Llama from ``tiny_models``; every
test that talks to it runs against both. The tests check the response shapes, sampling
controls, log-probs, echo scoring, every error answer, and that concurrent requests are
decoded in shared batches (through ``GET /v1/stats``). The slow test converts the real
embedded model into a fresh cache folder and asks it a question.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from click.testing import CliRunner
from serve_process import BACKENDS, Server, session_cache_env
from tiny_models import tiny_model_dir  # noqa: F401 (a fixture)

from datagen.errors import UserInputError
from datagen.serve.autostart import embedded_endpoint, write_record
from datagen.serve.cli import serve
from datagen.serve.default_model import GGUF_SHA256, resolve_model, served_model_id

API_KEY = "test-key"
MAX_BATCH = 8
# How far log-probs of the same tokens may differ between two computations of them: float32
# transformers repeats itself; int8 CTranslate2 quantizes activations per batch and pass.
SAME_LOGPROB = {"transformers": 1e-4, "ctranslate2": 0.05}


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory, backend: str) -> Iterator[Server]:  # noqa: F811
    log = tmp_path_factory.mktemp("serve") / "stderr.txt"
    # One thread: on a busy shared machine two threads make tiny steps 10x slower.
    running = Server(["--model", str(tiny_model_dir), "--port", "0", "--max-batch",
                      str(MAX_BATCH), "--threads", "1", "--api-key", API_KEY,
                      "--backend", backend], log, key=API_KEY,
                     env=session_cache_env(tmp_path_factory))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def model_id(tiny_model_dir: Path, backend: str) -> str:  # noqa: F811
    return served_model_id(str(tiny_model_dir), backend)


def chat(client: openai.OpenAI, content: str, **params):
    return client.chat.completions.create(
        model="default", messages=[{"role": "user", "content": content}], **params)


def test_models_lists_the_directory_name(client, model_id):
    assert [m.id for m in client.models.list().data] == [model_id]


def test_chat_returns_text_logprobs_and_usage(client, model_id, tiny_model_dir):  # noqa: F811
    from transformers import AutoTokenizer

    reply = chat(client, "Name three colours.", max_tokens=6, temperature=0, logprobs=True,
                 top_logprobs=3)
    choice = reply.choices[0]
    assert reply.model == model_id and reply.object == "chat.completion"
    assert choice.message.role == "assistant" and choice.finish_reason in ("length", "stop")
    content = choice.logprobs.content
    assert len(content) == reply.usage.completion_tokens <= 6
    for entry in content:  # greedy: the chosen token is the best alternative
        assert len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].token == entry.token
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob)
        assert bytes(entry.bytes).decode("utf-8", "replace") == entry.token
    assert "".join(e.token for e in content) == choice.message.content
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    expected = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name three colours."}], add_generation_prompt=True,
        tokenize=False)
    assert reply.usage.prompt_tokens == len(tokenizer(expected).input_ids)
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_max_completion_tokens_and_no_logprobs(client):
    reply = chat(client, "Hello", max_completion_tokens=3, temperature=0)
    assert reply.usage.completion_tokens <= 3 and reply.choices[0].logprobs is None


def test_logprobs_are_raw_model_probabilities(client, tiny_model_dir, backend):  # noqa: F811
    """Sampled at temperature 1.8, the reported log-probs equal echo scores of the same ids."""
    from transformers import AutoTokenizer

    from datagen.serve.model import byte_level_alphabet

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    to_char = {b: ch for ch, b in byte_level_alphabet().items()}
    vocab = tokenizer.get_vocab()
    messages = [{"role": "user", "content": "The weather today is"}]
    sampled = client.chat.completions.create(model="default", messages=messages, max_tokens=8,
                                             temperature=1.8, seed=3, logprobs=True)
    content = sampled.choices[0].logprobs.content
    generated = [vocab["".join(to_char[b] for b in t.bytes)] for t in content]
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    ids = tokenizer(prompt).input_ids
    scored = client.completions.create(model="default", prompt=ids + generated, max_tokens=0,
                                       echo=True, logprobs=0)
    echo = scored.choices[0].logprobs.token_logprobs[len(ids):]
    assert echo == pytest.approx([t.logprob for t in content], abs=SAME_LOGPROB[backend])


def test_echo_scores_the_prompt_with_max_tokens_zero(client):
    prompt = "Judges score a text by reading it."
    reply = client.completions.create(model="default", prompt=prompt, max_tokens=0, echo=True,
                                      logprobs=3)
    choice = reply.choices[0]
    lp = choice.logprobs
    assert choice.text == prompt and choice.finish_reason == "length"
    assert reply.usage.completion_tokens == 0 and reply.usage.prompt_tokens == len(lp.tokens)
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(isinstance(x, float) and x < 0 for x in lp.token_logprobs[1:])
    assert all(len(top) == 3 for top in lp.top_logprobs[1:])
    assert "".join(lp.tokens) == prompt
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))]
    total = sum(math.exp(v) for v in lp.top_logprobs[1].values())
    assert 0 < total <= 1.0001


def test_echo_with_generation_offsets_continue_after_the_prompt(client):
    reply = client.completions.create(model="default", prompt="One two", max_tokens=3,
                                      echo=True, logprobs=1, temperature=0)
    choice = reply.choices[0]
    lp = choice.logprobs
    assert choice.text.startswith("One two")
    assert len(lp.tokens) == reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert lp.text_offset == [len("".join(lp.tokens[:i])) for i in range(len(lp.tokens))]


def test_completions_accept_lists_of_prompts_and_token_ids(client):
    reply = client.completions.create(model="default", prompt=["a cat", "a dog sat"], n=2,
                                      max_tokens=2, temperature=0)
    assert [c.index for c in reply.choices] == [0, 1, 2, 3]
    assert reply.choices[0].text == reply.choices[1].text
    by_ids = client.completions.create(model="default", prompt=[64, 2645], max_tokens=2,
                                       temperature=0)
    assert by_ids.usage.prompt_tokens == 2


def test_n_samples_and_seed_repeat(client):
    params = dict(max_tokens=8, temperature=1.0, n=3, seed=11)
    first = [c.message.content for c in chat(client, "Tell me a story.", **params).choices]
    again = [c.message.content for c in chat(client, "Tell me a story.", **params).choices]
    other = [c.message.content for c in chat(client, "Tell me a story.",
                                             **{**params, "seed": 12}).choices]
    assert len(first) == 3 and len(set(first)) == 3
    assert first == again and first != other


def test_results_do_not_depend_on_the_batch(client, backend):
    prompts = ["Write a haiku.", "Say hi", "List four prime numbers, please, in order.",
               "Why is the sky blue? Explain briefly."]
    seeded = dict(max_tokens=12, temperature=0.9, top_p=0.95, seed=5)
    greedy = dict(max_tokens=12, temperature=0, logprobs=True)
    alone_seeded = chat(client, prompts[0], **seeded).choices[0].message.content
    alone_greedy = [chat(client, p, **greedy).choices[0] for p in prompts]
    with ThreadPoolExecutor(8) as pool:
        seeded_job = pool.submit(chat, client, prompts[0], **seeded)
        jobs = [pool.submit(chat, client, p, **greedy) for p in prompts]
        noise = [pool.submit(chat, client, "noise " * i, max_tokens=20) for i in range(1, 4)]
        together = [j.result().choices[0] for j in jobs]
        for job in noise:
            job.result()
    assert seeded_job.result().choices[0].message.content == alone_seeded
    for a, b in zip(alone_greedy, together, strict=True):
        assert a.message.content == b.message.content
        assert [t.logprob for t in a.logprobs.content] == pytest.approx(
            [t.logprob for t in b.logprobs.content], abs=SAME_LOGPROB[backend])


def test_stop_truncates_and_reports_stop(client):
    full = chat(client, "Count with me", max_tokens=16, temperature=0).choices[0].message.content
    stop = full[len(full) // 2: len(full) // 2 + 3]
    expected = full[: full.find(stop)]
    for given in (stop, [stop, "never-appears-xyz"]):
        reply = chat(client, "Count with me", max_tokens=16, temperature=0, stop=given,
                     logprobs=True)
        choice = reply.choices[0]
        assert choice.message.content == expected and choice.finish_reason == "stop"
        assert "".join(t.token for t in choice.logprobs.content).startswith(expected)


def test_concurrent_requests_are_decoded_together(client, server):
    before = server.get("/stats")["step_rows_histogram"]
    with ThreadPoolExecutor(12) as pool:
        replies = list(pool.map(lambda i: chat(client, f"Request {i}", max_tokens=24,
                                               temperature=0), range(12)))
    after = server.get("/stats")
    assert all(r.usage.completion_tokens > 0 for r in replies)
    grew = {int(size) for size, count in after["step_rows_histogram"].items()
            if count > before.get(size, 0)}
    assert max(grew) > 1, after
    assert after["max_rows_in_step"] <= MAX_BATCH


def error_of(exc: openai.APIStatusError) -> dict:
    body = exc.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(("params", "param"), [
    ({"model": "gpt-4o"}, "model"),
    ({"temperature": "hot"}, "temperature"),
    ({"max_tokens": 5000}, "messages"),
    ({"max_tokens": -1}, "max_tokens"),
    ({"n": True}, "n"),
    ({"top_p": 0}, "top_p"),
    ({"stop": [1, 2]}, "stop"),
    ({"top_logprobs": 2}, "top_logprobs"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
    ({"messages": []}, "messages"),
])
def test_bad_chat_requests_get_400(client, params, param):
    body = {"model": "default", "messages": [{"role": "user", "content": "hi"}], **params}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**body)
    error = error_of(caught.value)
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_too_long_request_says_context_length_exceeded(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="default", prompt="word " * 2100, max_tokens=1)
    assert error_of(caught.value)["code"] == "context_length_exceeded"


def test_bad_completion_prompts_get_400(client):
    for prompt in ([], [[1, 2], "mixed"], [10**9], ""):
        with pytest.raises(openai.BadRequestError):
            client.completions.create(model="default", prompt=prompt, max_tokens=1)


def test_malformed_json_gets_400(server):
    request = urllib.request.Request(
        server.base_url + "/chat/completions", data=b'{"model": "default", ',
        headers={"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=30)
    assert caught.value.code == 400
    assert "not valid JSON" in json.loads(caught.value.read())["error"]["message"]


def test_unknown_path_gets_404_and_wrong_method_405(client, server):
    with pytest.raises(openai.NotFoundError) as caught:
        client.get("/embeddings", cast_to=object)
    assert error_of(caught.value)["code"] == "not_found"
    with pytest.raises(urllib.error.HTTPError) as caught:
        server.get("/chat/completions")
    assert caught.value.code == 405 and "error" in json.loads(caught.value.read())


def test_wrong_api_key_gets_401(server):
    wrong = openai.OpenAI(base_url=server.base_url, api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        wrong.models.list()
    assert error_of(caught.value)["code"] == "invalid_api_key"


def test_non_loopback_host_needs_an_api_key(tiny_model_dir, monkeypatch):  # noqa: F811
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)  # `serve` sets it; undo afterwards
    result = CliRunner().invoke(serve, ["--model", str(tiny_model_dir), "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "--api-key" in result.output


def test_missing_model_directory_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with pytest.raises(UserInputError, match="--model PATH|--model default"):
        resolve_model(str(tmp_path / "nowhere"))
    result = CliRunner().invoke(serve, ["--model", str(tmp_path / "nowhere")])
    assert result.exit_code == 2


def test_autostart_starts_reuses_and_stops(tiny_model_dir, capsys):  # noqa: F811
    spec = str(tiny_model_dir)
    with embedded_endpoint(spec) as (url, model_id):
        assert "started the embedded model" in capsys.readouterr().err
        listed = openai.OpenAI(base_url=url, api_key="x", max_retries=0).models.list()
        assert [m.id for m in listed.data] == [model_id] == [served_model_id(spec)]
        assert model_id.endswith("-ct2-int8")  # the default backend
        write_record(spec, url, model_id)  # as a long-running `rlaif serve` would
        with embedded_endpoint(spec) as reused:
            assert reused == (url, model_id)
            assert "already running" in capsys.readouterr().err
    with pytest.raises(openai.APIConnectionError):
        openai.OpenAI(base_url=url, api_key="x", max_retries=0, timeout=5).models.list()


@pytest.mark.slow
def test_default_model_end_to_end(tmp_path, monkeypatch):
    """Convert the bundled SmolLM2 into a fresh cache, serve it on both backends and ask.

    Float32 answers the capital question; the int8 copy (the default) gets simple arithmetic
    right but not that question, as README's serve section says."""
    monkeypatch.setenv("RLAIF_CACHE_DIR", str(tmp_path / "cache"))
    questions = {"transformers": ("What is the capital of France?", "Paris"),
                 "ctranslate2": ("What is 2 plus 2?", "4")}
    for backend, (question, answer) in questions.items():
        running = Server(["--model", "default", "--port", "0", "--no-record", "--backend",
                          backend], tmp_path / "log.txt")
        try:
            client = openai.OpenAI(base_url=running.base_url, api_key="x", max_retries=0,
                                   timeout=300)
            assert [m.id for m in client.models.list().data] == [
                served_model_id("default", backend)]
            reply = chat(client, question, max_tokens=24, temperature=0, logprobs=True,
                         top_logprobs=2)
        finally:
            running.stop()
        text = reply.choices[0].message.content
        words = [w for w in text.split() if w.strip(".,!").isalpha()]
        assert len(words) >= 3 and answer in text, (backend, text)
        logprobs = [t.logprob for t in reply.choices[0].logprobs.content]
        assert sum(logprobs) / len(logprobs) > -2.0  # a real model is confident
    assert [p.name for p in (tmp_path / "cache" / "models").iterdir()] == [
        "smollm2-135m-instruct-" + GGUF_SHA256[:16]]
    converted = [p.name for p in (tmp_path / "cache" / "ct2").iterdir()]
    assert len(converted) == 1 and converted[0].endswith("-int8")
    assert served_model_id("default") == "smollm2-135m-instruct-ct2-int8"
