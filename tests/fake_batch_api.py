"""A loopback fake of OpenAI's Files and Batches endpoints for tests.

A real HTTP server on 127.0.0.1 (stdlib ``ThreadingHTTPServer``), not a mock object. Every object
it returns is built with the ``openai`` package's own types (``FileObject``, ``Batch``), so a
field the real API would not send cannot slip in. A batch moves one step per retrieve:
``validating`` -> ``in_progress`` (answering ``lines_per_poll`` lines per retrieve, with the
same scripted ``responder`` as ``FakeOpenAI``) -> ``finalizing`` -> ``completed``; answered lines
go to the output file, non-200 answers and unanswered lines to the error file, as the hosted
API splits them. Faults on demand: ``fail_polls`` (poll numbers answered with a 500),
``expire_after`` (the batch expires after that many answered lines), ``cancel`` (partial
output), and ``pause`` events that hold an upload, a create, a poll or a download so a test can
kill the client at that moment. Counters (``uploads``, ``creates``, ``executed``) say what was
paid for.
"""

from __future__ import annotations

import email.parser
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fake_openai import build_body, default_responder
from openai.types import Batch, FileObject

MAX_LINES = 50_000


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request, client_address) -> None:
        pass


class FakeBatchAPI:
    """The fake. Use as a context manager; ``base_url`` is its /v1 URL."""

    def __init__(self, responder: Callable[[str, dict], dict] | None = None) -> None:
        self.responder = responder or default_responder
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.uploads = 0
        self.creates = 0
        self.executed: list[str] = []  # custom_ids answered (each one paid for)
        self.polls = 0
        self.authorizations: set[str | None] = set()  # Authorization headers received
        self.lines_per_poll = 10**9
        self.fail_polls: set[int] = set()
        self.expire_after: int | None = None
        self.pause: dict[str, threading.Event] = {}
        self.reached: dict[str, threading.Event] = {
            name: threading.Event() for name in ("upload", "create", "poll", "download")}
        self.lock = threading.Lock()
        self._server: _Server | None = None

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def __enter__(self) -> FakeBatchAPI:
        self._server = _Server(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        for event in self.pause.values():
            event.set()
        self._server.shutdown()
        self._server.server_close()

    def hold(self, name: str) -> None:
        """Make the next ``name`` (upload, create, poll, download) wait until released."""
        self.pause[name] = threading.Event()

    def release(self) -> None:
        for event in self.pause.values():
            event.set()
        self.pause.clear()

    def _wait(self, name: str) -> None:
        self.reached[name].set()
        event = self.pause.get(name)
        if event is not None:
            event.wait(30)

    # --- objects ------------------------------------------------------------------------------

    def add_file(self, filename: str, content: bytes, purpose: str) -> dict[str, Any]:
        with self.lock:
            file_id = f"file-{len(self.files) + 1}"
            obj = FileObject(id=file_id, bytes=len(content), created_at=int(time.time()),
                             filename=filename, object="file", purpose=purpose,
                             status="processed")
            self.files[file_id] = {"object": obj, "content": content}
        return obj.model_dump(mode="json")

    def create_batch(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        file = self.files.get(request.get("input_file_id") or "")
        if file is None:
            return 400, {"error": {"message": "no such file", "type": "invalid_request_error"}}
        with self.lock:
            self.creates += 1
            batch_id = f"batch_{len(self.batches) + 1}"
            lines = [json.loads(x) for x in file["content"].decode().splitlines() if x.strip()]
            batch = Batch(
                id=batch_id, object="batch", endpoint=request["endpoint"],
                input_file_id=request["input_file_id"], completion_window="24h",
                status="validating", created_at=int(time.time()),
                metadata=request.get("metadata"),
                request_counts={"total": len(lines), "completed": 0, "failed": 0})
            self.batches[batch_id] = {"batch": batch, "lines": lines, "done": 0,
                                      "output": [], "errors": [], "cancel": False}
        return 200, batch.model_dump(mode="json")

    def _validation_errors(self, state: dict[str, Any]) -> list[dict[str, Any]]:
        lines, batch = state["lines"], state["batch"]
        problems = []
        if len(lines) > MAX_LINES:
            problems.append({"code": "too_many_requests", "message": "over 50,000 requests"})
        models = {line["body"].get("model") for line in lines}
        urls = {line["url"] for line in lines}
        if len(models) > 1 or urls != {batch.endpoint}:
            problems.append({"code": "mixed", "message": "one model and endpoint per file"})
        return problems

    def advance(self, batch_id: str) -> dict[str, Any]:
        """One retrieve: move the batch one step and return it."""
        with self.lock:
            state = self.batches[batch_id]
            batch: Batch = state["batch"]
            if batch.status == "validating":
                problems = self._validation_errors(state)
                batch.status = "failed" if problems else "in_progress"
                if problems:
                    batch.errors = {"object": "list", "data": problems}
            elif batch.status == "cancelling":
                self._finish(state, "cancelled", "batch_cancelled")
            elif batch.status == "in_progress":
                self._answer_some(state)
            elif batch.status == "finalizing":
                self._finish(state, "completed", None)
            return batch.model_dump(mode="json")

    def _answer_some(self, state: dict[str, Any]) -> None:
        batch: Batch = state["batch"]
        for _ in range(self.lines_per_poll):
            if state["done"] >= len(state["lines"]):
                batch.status = "finalizing"
                return
            if self.expire_after is not None and state["done"] >= self.expire_after:
                self._finish(state, "expired", "batch_expired")
                return
            line = state["lines"][state["done"]]
            state["done"] += 1
            self.executed.append(line["custom_id"])
            self._record(state, line)

    def _record(self, state: dict[str, Any], line: dict[str, Any]) -> None:
        batch: Batch = state["batch"]
        path = line["url"]
        reply = self.responder(path, line["body"])
        serial = len(self.executed)
        out = {"id": f"batch_req_{serial}", "custom_id": line["custom_id"], "error": None}
        status = reply.get("status", 200)
        body = build_body(path, line["body"], reply, serial) if status == 200 else {
            "error": {"message": reply.get("error", "error"), "type": "invalid_request_error",
                      "param": None, "code": reply.get("code")}}
        out["response"] = {"status_code": status, "request_id": f"req_{serial}", "body": body}
        (state["output"] if status == 200 else state["errors"]).append(out)
        if status == 200:
            batch.request_counts.completed += 1
        else:
            batch.request_counts.failed += 1

    def _finish(self, state: dict[str, Any], status: str, unanswered: str | None) -> None:
        batch: Batch = state["batch"]
        for line in state["lines"][state["done"]:]:
            state["errors"].append({
                "id": f"batch_req_x{line['custom_id'][:8]}", "custom_id": line["custom_id"],
                "response": None,
                "error": {"code": unanswered, "message": f"This request was not run ({status})"}})
        batch.status = status
        if state["output"]:
            batch.output_file_id = self._jsonl_file(state["output"])["id"]
        if state["errors"]:
            batch.error_file_id = self._jsonl_file(state["errors"])["id"]

    def _jsonl_file(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        content = "".join(json.dumps(r) + "\n" for r in rows).encode()
        file_id = f"file-{len(self.files) + 1}"
        obj = FileObject(id=file_id, bytes=len(content), created_at=int(time.time()),
                         filename=f"{file_id}.jsonl", object="file", purpose="batch_output",
                         status="processed")
        self.files[file_id] = {"object": obj, "content": content}
        return obj.model_dump(mode="json")

    def cancel(self, batch_id: str) -> dict[str, Any]:
        with self.lock:
            batch: Batch = self.batches[batch_id]["batch"]
            if batch.status in ("validating", "in_progress", "finalizing"):
                batch.status = "cancelling"
            return batch.model_dump(mode="json")


def _multipart(headers: Any, raw: bytes) -> dict[str, Any]:
    message = email.parser.BytesParser().parsebytes(
        b"Content-Type: " + headers["Content-Type"].encode() + b"\r\n\r\n" + raw)
    fields: dict[str, Any] = {}
    for part in message.get_payload():
        name = part.get_param("name", header="content-disposition")
        if part.get_filename():
            fields[name] = (part.get_filename(), part.get_payload(decode=True))
        else:
            fields[name] = part.get_payload(decode=True).decode()
    return fields


def _handler(fake: FakeBatchAPI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, payload: Any, raw: bytes | None = None) -> None:
            data = raw if raw is not None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-request-id", f"req_api_{time.monotonic_ns()}")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            fake.authorizations.add(self.headers.get("Authorization"))
            parts = urlsplit(self.path)
            route = parts.path.removeprefix("/v1").strip("/").split("/")
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            if route == ["files"]:
                data = [f["object"].model_dump(mode="json") for f in fake.files.values()
                        if f["object"].purpose == query.get("purpose", f["object"].purpose)]
                self._send(200, {"object": "list", "data": data, "has_more": False})
            elif len(route) == 3 and route[0] == "files" and route[2] == "content":
                fake._wait("download")
                self._send(200, None, raw=fake.files[route[1]]["content"])
            elif route == ["batches"]:
                self._send(200, self._batch_page(query))
            elif len(route) == 2 and route[0] == "batches":
                self._poll(route[1])
            else:
                self._send(404, {"error": {"message": "not found"}})

        def _poll(self, batch_id: str) -> None:
            with fake.lock:
                fake.polls += 1
                number = fake.polls
            fake._wait("poll")
            if number in fake.fail_polls:
                self._send(500, {"error": {"message": "internal error", "type": "server"}})
                return
            self._send(200, fake.advance(batch_id))

        def _batch_page(self, query: dict[str, str]) -> dict[str, Any]:
            ids = sorted(fake.batches, key=lambda b: int(b.split("_")[1]), reverse=True)
            if query.get("after") in ids:
                ids = ids[ids.index(query["after"]) + 1:]
            limit = int(query.get("limit", 20))
            page = [fake.batches[b]["batch"].model_dump(mode="json") for b in ids[:limit]]
            return {"object": "list", "data": page, "has_more": len(ids) > limit}

        def do_POST(self) -> None:
            fake.authorizations.add(self.headers.get("Authorization"))
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            route = urlsplit(self.path).path.removeprefix("/v1").strip("/").split("/")
            if route == ["files"]:
                fields = _multipart(self.headers, raw)
                filename, content = fields["file"]
                fake._wait("upload")
                obj = fake.add_file(filename, content, fields["purpose"])
                with fake.lock:
                    fake.uploads += 1
                self._send(200, obj)
            elif route == ["batches"]:
                status, obj = fake.create_batch(json.loads(raw))
                fake._wait("create")
                self._send(status, obj)
            elif len(route) == 3 and route[0] == "batches" and route[2] == "cancel":
                self._send(200, fake.cancel(route[1]))
            else:
                self._send(404, {"error": {"message": "not found"}})

    return Handler
