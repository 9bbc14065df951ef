"""The endpoint client against a real loopback server: retries, limits, budget, ledger."""

from __future__ import annotations

import json
import time

import pytest
from fake_openai import FakeOpenAI
from pydantic import SecretStr

from datagen import store
from datagen.endpoint.client import ClientConfig, LLMClient, Request, run_async
from datagen.endpoint.keys import request_key, resolve_url
from datagen.endpoint.limits import price_for
from datagen.store.tables import LABEL_SETTINGS

MSG = [{"role": "user", "content": "hello"}]


@pytest.fixture(params=["own", "httpx"])
def fake_llm(request):
    """The scripted server, once per client transport: both must behave the same."""
    with FakeOpenAI() as server:
        server.transport = request.param
        yield server


def config(server, **kw) -> ClientConfig:
    kw.setdefault("transport", server.transport)
    kw.setdefault("backoff_base", 0.01)
    kw.setdefault("backoff_max", 0.05)
    return ClientConfig(base_url=server.base_url, model="fake-model", **kw)


def run_chat(cfg, db=None, messages=MSG, **params):
    async def go():
        async with LLMClient(cfg, db) as client:
            return await client.chat(messages, **params), client.stats

    return run_async(go())


def test_resolve_url_does_not_double_v1():
    assert resolve_url("http://h:1/v1", "/v1/chat/completions") == "http://h:1/v1/chat/completions"
    assert resolve_url("http://h:1/v1/", "chat/completions") == "http://h:1/v1/chat/completions"
    assert resolve_url("http://h:1/v1", "/completions") == "http://h:1/v1/completions"


def test_request_key_depends_on_body_and_sample_index():
    body = {"model": "m", "messages": MSG, "temperature": 1.0}
    assert request_key("/v1/chat/completions", body) == request_key("chat/completions", dict(body))
    assert request_key("/chat/completions", body, 0) != request_key("/chat/completions", body, 1)
    assert request_key("/chat/completions", body) != request_key(
        "/chat/completions", {**body, "temperature": 0.5})


def test_chat_returns_text_usage_and_sends_parameters(fake_llm):
    fake_llm.enqueue({"text": "hi there", "usage": {"prompt_tokens": 7, "completion_tokens": 3},
                      "logprobs": [{"hi": -0.1, "yo": -2.5}]})
    result, stats = run_chat(config(fake_llm), logprobs=True, top_logprobs=2, seed=3, n=1,
                             stop=["\n"], response_format={"type": "json_object"})
    assert result.ok and result.text == "hi there"
    assert (result.prompt_tokens, result.completion_tokens) == (7, 3)
    assert result.top_logprobs(0) == {"hi": -0.1, "yo": -2.5}
    sent = fake_llm.requests[0]["body"]
    assert sent["logprobs"] is True and sent["top_logprobs"] == 2 and sent["seed"] == 3
    assert sent["stop"] == ["\n"] and sent["response_format"] == {"type": "json_object"}
    assert stats.prompt_tokens == 7


@pytest.mark.parametrize("fault", [
    {"status": 500, "error": "boom"},
    {"status": 503, "error": "overloaded"},
    {"status": 429, "error": "slow down"},
    {"reset": True},
    {"raw": "{not json"},
    {"truncate": True},
    {"raw": '{"object": "error"}'},
])
def test_transient_faults_are_retried(fake_llm, fault):
    fake_llm.enqueue(fault, {"text": "recovered"})
    result, stats = run_chat(config(fake_llm))
    assert result.ok and result.text == "recovered"
    assert result.attempts == 2 and stats.retries == 1


def test_timeout_is_retried(fake_llm):
    fake_llm.enqueue({"delay": 1.5, "text": "late"}, {"text": "on time"})
    result, _ = run_chat(config(fake_llm, timeout=0.3))
    assert result.ok and result.text == "on time" and result.attempts == 2


def test_retry_after_is_honoured(fake_llm):
    fake_llm.enqueue({"status": 429, "error": "wait", "headers": {"Retry-After": "0.6"}},
                     {"text": "ok"})
    started = time.monotonic()
    result, _ = run_chat(config(fake_llm))
    assert result.ok
    gap = fake_llm.requests[1]["received_at"] - fake_llm.requests[0]["received_at"]
    assert gap >= 0.55 and time.monotonic() - started >= 0.55


def test_client_errors_are_not_retried(fake_llm):
    fake_llm.enqueue({"status": 400, "error": "bad model"})
    result, stats = run_chat(config(fake_llm))
    assert result.status == "failed" and result.attempts == 1
    assert "bad model" in result.error and result.status_code == 400
    assert len(fake_llm.requests) == 1 and stats.failed == 1


def test_retries_give_up_and_failure_is_recorded(fake_llm, tmp_path):
    fake_llm.responder = lambda path, body: {"status": 503, "error": "down"}
    db = store.open_db(tmp_path / "x.db")
    result, _ = run_chat(config(fake_llm, max_retries=2), db=db)
    assert result.status == "failed" and result.attempts == 3 and len(fake_llm.requests) == 3
    row = store.ledger_lookup(db, [result.key])[result.key]
    assert row["status"] == "failed" and row["attempts"] == 3 and "down" in row["error"]


@pytest.mark.parametrize("transport", ["own", "httpx"])
def test_connection_refused_is_a_failed_result(tmp_path, transport):
    cfg = ClientConfig(base_url="http://127.0.0.1:9/v1", model="m", max_retries=1,
                       backoff_base=0.01, transport=transport)
    result, _ = run_chat(cfg)
    assert result.status == "failed" and result.attempts == 2 and result.error


def test_concurrency_limit_holds(fake_llm):
    fake_llm.responder = lambda path, body: {"delay": 0.05, "text": "x"}

    async def go():
        async with LLMClient(config(fake_llm, concurrency=4)) as client:
            import asyncio

            return await asyncio.gather(*(
                client.chat([{"role": "user", "content": str(i)}]) for i in range(20)))

    results = run_async(go())
    assert all(r.ok for r in results)
    assert fake_llm.peak_in_flight <= 4
    assert fake_llm.peak_in_flight >= 2


def _many(fake_llm, cfg, count):
    import asyncio

    async def go():
        async with LLMClient(cfg) as client:
            return await asyncio.gather(*(
                client.chat([{"role": "user", "content": f"m{i}"}], max_tokens=10)
                for i in range(count)))

    started = time.monotonic()
    results = run_async(go())
    return results, time.monotonic() - started


def test_requests_per_minute_limit(fake_llm):
    # bucket capacity is rpm/6 = 10 requests, refilled at 1 per second: 11 need >= ~1 s
    results, elapsed = _many(fake_llm, config(fake_llm, rpm=60, concurrency=50), 11)
    assert all(r.ok for r in results)
    assert elapsed >= 0.9
    times = sorted(r["received_at"] for r in fake_llm.requests)
    assert times[-1] - times[0] >= 0.9


def test_tokens_per_minute_limit(fake_llm):
    # each request is estimated at >= 10 tokens; capacity is tpm/6 = 50 tokens
    results, elapsed = _many(fake_llm, config(fake_llm, tpm=300, concurrency=50), 8)
    assert all(r.ok for r in results)
    assert elapsed >= 0.5


def test_budget_stops_new_requests(fake_llm):
    fake_llm.responder = lambda path, body: {
        "text": "x", "usage": {"prompt_tokens": 1, "completion_tokens": 1}}
    cfg = config(fake_llm, concurrency=1, budget_usd=1.5, prices={"fake-model": (1e6, 0.0)})
    results, _ = _many(fake_llm, cfg, 5)
    statuses = [r.status for r in results]
    assert statuses.count("ok") == 2 and statuses.count("skipped") == 3
    assert len(fake_llm.requests) == 2


def test_price_table_longest_prefix():
    assert price_for("gpt-4o-mini-2024-07-18", {}) == (0.15, 0.60)
    assert price_for("gpt-4o-2024-08-06", {}) == (2.50, 10.00)
    assert price_for("smollm2-135m-instruct", {}) == (0.0, 0.0)
    assert price_for("mine", {"mine": (1.0, 2.0)}) == (1.0, 2.0)


def test_cost_is_accounted(fake_llm):
    fake_llm.enqueue({"text": "x", "usage": {"prompt_tokens": 1000, "completion_tokens": 500}})
    result, stats = run_chat(config(fake_llm, prices={"fake-model": (2.0, 4.0)}))
    assert result.cost_usd == pytest.approx(1000 * 2 / 1e6 + 500 * 4 / 1e6)
    assert stats.cost_usd == pytest.approx(result.cost_usd)


def test_ledger_answers_repeated_requests_without_sending(fake_llm, tmp_path):
    db = store.open_db(tmp_path / "l.db")
    first, _ = run_chat(config(fake_llm), db=db, temperature=0.7)
    second, stats = run_chat(config(fake_llm), db=db, temperature=0.7)
    assert len(fake_llm.requests) == 1
    assert second.from_ledger and second.text == first.text and stats.from_ledger == 1
    other, _ = run_chat(config(fake_llm), db=db, temperature=0.7, sample_index=1)
    assert len(fake_llm.requests) == 2 and not other.from_ledger


def test_pending_rows_left_by_a_crash_are_sent_again(fake_llm, tmp_path):
    db = store.open_db(tmp_path / "p.db")
    body = {"model": "fake-model", "messages": MSG}
    key = request_key("/chat/completions", body)
    store.ledger_add_pending(db, [{"key": key, "path": "/chat/completions", "model": "fake-model",
                                   "body": json.dumps(body)}])
    result, _ = run_chat(config(fake_llm), db=db)
    assert result.key == key and result.ok and len(fake_llm.requests) == 1
    assert store.ledger_lookup(db, [key])[key]["status"] == "ok"


def test_api_key_is_sent_but_never_stored(fake_llm, tmp_path):
    secret = "sk-test-SECRET-0123456789"
    db_path = tmp_path / "k.db"
    db = store.open_db(db_path)
    cfg = config(fake_llm, api_key=SecretStr(secret))
    assert secret not in repr(cfg) and secret not in cfg.model_dump_json()
    result, _ = run_chat(cfg, db=db)
    assert result.ok
    assert fake_llm.requests[0]["headers"]["Authorization"] == f"Bearer {secret}"
    db.close()
    for path in tmp_path.iterdir():
        assert secret.encode() not in path.read_bytes()


def test_ledger_writes_do_not_interfere_with_the_callers_transactions(fake_llm, tmp_path):
    # The client commits ledger rows from its own thread; it must use its own connection, or
    # its commits end the caller's open transactions.
    import asyncio

    db = store.open_db(tmp_path / "race.db")

    async def go():
        async with LLMClient(config(fake_llm, concurrency=16), db) as client:
            async def saver():
                for i in range(200):
                    store.save_rows(db, LABEL_SETTINGS, [{"key": str(i), "value": "x" * i}])
                    await asyncio.sleep(0)

            calls = [client.chat([{"role": "user", "content": f"r{i}"}]) for i in range(200)]
            results = await asyncio.gather(saver(), *calls)
            return results[1:]

    results = run_async(go())
    assert all(r.ok for r in results)
    assert store.count_rows(db, LABEL_SETTINGS) == 200
    assert store.ledger_totals(db)["ok"] == 200


def test_call_many_answers_in_order_sends_each_request_once_and_reruns_from_the_ledger(
        fake_llm, tmp_path):
    fake_llm.responder = lambda path, body: {
        "text": f"{body['messages'][0]['content']}#{body.get('temperature')}"}
    chat = "/v1/chat/completions"
    requests = [Request(chat, {"model": "m", "messages": [{"role": "user", "content": c}],
                               "temperature": t}, index)
                for c, t, index in (("a", 0.0, 0), ("b", None, 0), ("a", 0.0, 0), ("a", 0.0, 1))]
    db = store.open_db(tmp_path / "ledger.db")

    def call_many():
        async def go():
            async with LLMClient(config(fake_llm), db) as client:
                return await client.call_many(requests), client.stats

        return run_async(go())

    answers, stats = call_many()
    assert [a.text for a in answers] == ["a#0.0", "b#None", "a#0.0", "a#0.0"]
    assert answers[0].key == answers[2].key != answers[3].key  # the sample index tells apart
    assert answers[1].key == request_key(chat, {"model": "m", "messages": [
        {"role": "user", "content": "b"}]})  # keyed as `call` keys it: unset fields left out
    assert len(fake_llm.requests) == 3 and stats.sent == 3
    assert all(None not in r["body"].values() for r in fake_llm.requests)
    again, stats = call_many()
    assert [a.text for a in again] == [a.text for a in answers] and all(a.from_ledger
                                                                       for a in again)
    assert len(fake_llm.requests) == 3 and stats.from_ledger == 3
