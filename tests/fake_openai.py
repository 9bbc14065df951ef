"""A scripted OpenAI-compatible HTTP server on 127.0.0.1 for tests.

It is a real server (stdlib ``ThreadingHTTPServer``, HTTP/1.1 keep-alive), not a mock object:
the client under test opens sockets to it. Tests script its replies with ``enqueue`` (served
in order) or a ``responder`` function (used when the queue is empty), read what it received
in ``requests``, and inject faults on demand.

A reply is a dict with any of:
  text / texts      the content of one / several choices (default: "echo: <last message>")
  logprobs          per generated position, a dict {token: logprob}; the first key is the
                    chosen token and the dict is returned as its top_logprobs
  usage             {"prompt_tokens", "completion_tokens"} (default: word counts)
  finish_reason     default "stop"
  status, error     an error reply (e.g. 429, "rate limited"); headers (e.g. Retry-After)
  delay             seconds to wait before answering
  raw               a body sent as-is with status 200 (malformed JSON, say)
  truncate          send only the first half of the JSON body, then close the connection
  reset             close the connection without answering (TCP reset)
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = dict[str, Any]


def _last_user_text(body: dict[str, Any]) -> str:
    if isinstance(body.get("input"), str):  # embeddings and the Responses API
        return body["input"]
    if "messages" in body:
        for message in reversed(body["messages"]):
            content = message.get("content")
            if isinstance(content, str):
                return content
        return ""
    prompt = body.get("prompt", "")
    return prompt if isinstance(prompt, str) else json.dumps(prompt)


def default_responder(path: str, body: dict[str, Any]) -> Reply:
    """Echo the last message, so distinct requests get distinct answers."""
    return {"text": "echo: " + _last_user_text(body)}


def _logprob_records(positions: list[dict[str, float]], chat: bool) -> dict[str, Any]:
    if chat:
        content = []
        for top in positions:
            token, logprob = next(iter(top.items()))
            content.append({
                "token": token, "logprob": logprob, "bytes": list(token.encode()),
                "top_logprobs": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top.items()
                ],
            })
        return {"content": content}
    tokens = [next(iter(top)) for top in positions]
    return {
        "tokens": tokens,
        "token_logprobs": [top[t] for top, t in zip(positions, tokens, strict=True)],
        "top_logprobs": positions,
        "text_offset": [0] * len(tokens),
    }


def build_body(path: str, request: dict[str, Any], reply: Reply, serial: int) -> dict[str, Any]:
    """The JSON body of a successful reply, shaped like OpenAI's."""
    if path.endswith("embeddings"):
        words = len(_last_user_text(request).split())
        return {"object": "list", "model": request.get("model") or "fake-model",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -0.5, float(
                    words)]}], "usage": {"prompt_tokens": words, "total_tokens": words}}
    if path.endswith("responses"):
        return _responses_body(request, reply, serial)
    chat = path.endswith("chat/completions")
    texts = reply.get("texts") or [reply.get("text", "")] * int(request.get("n") or 1)
    choices = []
    for index, text in enumerate(texts):
        choice: dict[str, Any] = {
            "index": index, "finish_reason": reply.get("finish_reason", "stop")}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        if reply.get("logprobs") is not None:
            choice["logprobs"] = _logprob_records(reply["logprobs"], chat)
        else:
            choice["logprobs"] = None
        choices.append(choice)
    usage = reply.get("usage") or {
        "prompt_tokens": len(_last_user_text(request).split()),
        "completion_tokens": sum(len(t.split()) for t in texts),
    }
    usage = {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}
    return {
        "id": f"fake-{serial}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": request.get("model") or "fake-model",
        "choices": choices,
        "usage": usage,
    }


def _responses_body(request: dict[str, Any], reply: Reply, serial: int) -> dict[str, Any]:
    text = reply.get("text", "echo: " + _last_user_text(request))
    used = {"input_tokens": len(_last_user_text(request).split()),
            "output_tokens": len(text.split())}
    return {"id": f"resp_{serial}", "object": "response", "created_at": int(time.time()),
            "model": request.get("model") or "fake-model", "status": "completed",
            "output": [{"type": "message", "id": f"msg_{serial}", "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}],
            "usage": {**used, "total_tokens": sum(used.values())}}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # listen backlog: the default 5 drops SYNs under fan-out

    def handle_error(self, request, client_address) -> None:  # a client that went away
        pass


class FakeOpenAI:
    """The scripted server. Use as a context manager or call start()/stop()."""

    def __init__(self, responder: Callable[[str, dict[str, Any]], Reply] | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.responder = responder or default_responder
        self.ssl_context = ssl_context  # serve https with this context (a test-made cert)
        self.requests: list[dict[str, Any]] = []
        self.models = ["fake-model"]
        self._queue: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.in_flight = 0
        self.peak_in_flight = 0
        self.transport = "auto"  # the client transport a test runs over (see test_llm.py)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{'https' if self.ssl_context else 'http'}://{host}:{port}/v1"

    def enqueue(self, *replies: Reply) -> None:
        """Serve these replies, in order, to the next requests."""
        with self._lock:
            self._queue.extend(replies)

    def bodies(self, path_suffix: str = "completions") -> list[dict[str, Any]]:
        """Bodies of the recorded requests whose path ends with the suffix."""
        return [r["body"] for r in self.requests if r["path"].endswith(path_suffix)]

    def _next_reply(self, path: str, body: dict[str, Any]) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        return self.responder(path, body)

    def start(self) -> FakeOpenAI:
        server = _Server(("127.0.0.1", 0), _make_handler(self))
        if self.ssl_context is not None:
            server.socket = self.ssl_context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _make_handler(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output quiet
            pass

        def _send_json(self, status: int, payload: Any, headers: dict | None = None) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-request-id", f"req-{time.monotonic_ns()}")
            for name, value in (headers or {}).items():
                self.send_header(name, str(value))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/").endswith("/models"):
                self._send_json(200, {"object": "list", "data": [
                    {"id": m, "object": "model", "owned_by": "test"} for m in fake.models]})
            else:
                self._send_json(404, {"error": {"message": "not found"}})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            try:
                body = json.loads(raw)
            except ValueError:
                self._send_json(400, {"error": {"message": "malformed JSON"}})
                return
            record = {"path": self.path, "body": body, "headers": dict(self.headers.items()),
                      "received_at": time.time(), "answered_at": None}
            with fake._lock:
                fake.requests.append(record)
                serial = len(fake.requests)
                fake.in_flight += 1
                fake.peak_in_flight = max(fake.peak_in_flight, fake.in_flight)
            try:
                self._answer(body, fake._next_reply(self.path, body), serial)
                record["answered_at"] = time.time()
            finally:
                with fake._lock:
                    fake.in_flight -= 1

        def _answer(self, body: dict[str, Any], reply: Reply, serial: int) -> None:
            if reply.get("delay"):
                time.sleep(reply["delay"])
            if reply.get("reset"):
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
                return
            if reply.get("status") and reply["status"] != 200:
                self._send_json(reply["status"], {"error": {
                    "message": reply.get("error", "error"), "type": "test_error"}},
                    reply.get("headers"))
                return
            if "raw" in reply:
                data = reply["raw"].encode() if isinstance(reply["raw"], str) else reply["raw"]
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            payload = build_body(self.path, body, reply, serial)
            if reply.get("truncate"):
                data = json.dumps(payload).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self._send_json(200, payload, reply.get("headers"))

    return Handler


if __name__ == "__main__":  # a standalone server for manual tries and subprocess tests
    import sys

    with FakeOpenAI() as server:
        print(server.base_url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait(float(sys.argv[1]) if len(sys.argv) > 1 else 3600)
