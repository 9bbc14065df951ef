"""Which transport carries an endpoint's requests: https and proxied endpoints go through httpx
(a loopback TLS server with a certificate made in the test; the fake server acting as an HTTP
proxy), plain http through the project's own transport. Online batch lines for /v1/embeddings
and /v1/responses are forwarded, and the output keeps the endpoint's request id."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys

import trustme
from fake_openai import FakeOpenAI

from datagen.endpoint._httpx import wants_httpx
from datagen.endpoint.client import ClientConfig, LLMClient, run_async


def chat_once(cfg: ClientConfig):
    async def go():
        async with LLMClient(cfg) as client:
            result = await client.chat([{"role": "user", "content": "over tls"}])
            return result, client.transport

    return run_async(go())


def test_https_endpoint_goes_through_httpx_and_trusts_the_ca_store(tmp_path, monkeypatch):
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    with FakeOpenAI(ssl_context=server_ctx) as server:
        cfg = ClientConfig(base_url=server.base_url, model="fake-model", max_retries=0)
        # without the test CA in the trust store, the certificate is refused
        refused, transport = chat_once(cfg)
        assert transport == "httpx" and refused.status == "failed"
        assert "CERTIFICATE_VERIFY_FAILED" in refused.error
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
        result, transport = chat_once(cfg)
    assert transport == "httpx" and result.ok and result.text == "echo: over tls"
    assert result.request_id.startswith("req-")
    assert server.base_url.startswith("https://")


def test_proxy_from_the_environment_routes_through_httpx(fake_llm, monkeypatch):
    proxy = fake_llm.base_url.removesuffix("/v1")
    monkeypatch.setenv("HTTP_PROXY", proxy)
    cfg = ClientConfig(base_url="http://model.invalid/v1", model="fake-model", max_retries=0)
    assert wants_httpx(cfg.base_url)
    result, transport = chat_once(cfg)
    assert transport == "httpx" and result.ok
    # the proxy (our fake) received the absolute-form request for the real endpoint
    assert fake_llm.requests[0]["path"] == "http://model.invalid/v1/chat/completions"
    monkeypatch.setenv("NO_PROXY", "model.invalid")
    assert not wants_httpx(cfg.base_url)


def test_plain_http_uses_the_own_transport(fake_llm):
    result, transport = chat_once(ClientConfig(base_url=fake_llm.base_url, model="fake-model"))
    assert transport == "own" and result.ok and result.request_id.startswith("req-")


def test_embeddings_and_responses_lines_are_forwarded_online(fake_llm, tmp_path):
    src = tmp_path / "in.jsonl"
    lines = [
        {"custom_id": "e", "method": "POST", "url": "/v1/embeddings",
         "body": {"model": "fake-model", "input": "three little words"}},
        {"custom_id": "r", "method": "POST", "url": "/v1/responses",
         "body": {"model": "fake-model", "input": "hello there"}},
    ]
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "out.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "align.cli", "batch", str(src), "-o", str(out), "--db",
         str(tmp_path / "d.db"), "--base-url", fake_llm.base_url],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    emb, resp = (json.loads(x) for x in out.read_text().splitlines())
    assert sorted(r["path"] for r in fake_llm.requests) == ["/v1/embeddings", "/v1/responses"]
    assert emb["response"]["body"]["data"][0]["embedding"] == [0.5, -0.5, 3.0]
    assert resp["response"]["body"]["output"][0]["content"][0]["text"] == "echo: hello there"
    assert emb["response"]["request_id"].startswith("req-") and resp["error"] is None
