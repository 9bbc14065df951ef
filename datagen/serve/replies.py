"""OpenAI-shaped answers of ``rlaif serve``: whole responses and server-sent-event chunks.

A request's rows come back as ``RowResult``s (text, finish reason, scored tokens); this module
turns them into ``chat.completion`` / ``text_completion`` bodies with ``usage`` and log-probs,
or, for ``stream: true``, into the chunk sequence OpenAI sends: a first chat chunk carrying
the assistant role, one chunk per generated token (text delta and, when asked, its log-probs),
a last chunk per choice with its finish reason, a usage chunk when
``stream_options.include_usage`` is set, then ``[DONE]``. Streamed text is decoded
incrementally from each token's bytes; when the request has stop strings, the last few
characters are held back until it is clear that no stop string starts there, so a stream never
shows text the whole response would have cut.
"""

from __future__ import annotations

import codecs
import secrets
import time
from typing import Any

from datagen.serve.api import Prepared
from datagen.serve.jobs import RowResult, Scored
from datagen.serve.model import ServedModel


def usage(prompt_tokens: int, results: list[RowResult]) -> dict[str, int]:
    completion = sum(len(r.tokens) for r in results)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
            "total_tokens": prompt_tokens + completion}


def chat_entries(served: ServedModel, scored: list[Scored]) -> list[dict[str, Any]]:
    def entry(token: int, logprob: float | None) -> dict[str, Any]:
        return {"token": served.token_text(token), "logprob": logprob,
                "bytes": list(served.token_bytes(token))}

    return [{**entry(s.token, s.logprob), "top_logprobs": [entry(t, lp) for t, lp in s.top]}
            for s in scored]


def completion_logprobs(
    served: ServedModel, scored: list[Scored], offset: int = 0
) -> dict[str, Any]:
    """Legacy completions log-probs; text offsets count from ``offset`` in the choice's text."""
    tokens = [served.token_text(s.token) for s in scored]
    offsets = []
    for text in tokens:
        offsets.append(offset)
        offset += len(text)
    return {
        "tokens": tokens,
        "token_logprobs": [s.logprob for s in scored],
        "top_logprobs": [
            None if s.logprob is None else {served.token_text(t): lp for t, lp in s.top}
            for s in scored
        ],
        "text_offset": offsets,
    }


def echo_logprobs(served: ServedModel, result: RowResult, echoed: str) -> dict[str, Any]:
    """Completions log-probs of the scored prompt followed by the generated tokens."""
    prompt = completion_logprobs(served, result.prompt_scored)
    generated = completion_logprobs(served, result.scored, len(echoed))
    return {key: prompt[key] + generated[key] for key in prompt}


def chat_response(served: ServedModel, prep: Prepared, results: list[RowResult]) -> dict:
    choices = [{
        "index": i,
        "message": {"role": "assistant", "content": r.text, "refusal": None},
        "logprobs": ({"content": chat_entries(served, r.scored), "refusal": None}
                     if prep.logprobs else None),
        "finish_reason": r.finish_reason,
    } for i, r in enumerate(results)]
    return {"id": f"chatcmpl-{secrets.token_hex(12)}", "object": "chat.completion",
            "created": int(time.time()), "model": served.model_id, "choices": choices,
            "usage": usage(prep.prompt_tokens, results), "system_fingerprint": None}


def completion_response(served: ServedModel, prep: Prepared, results: list[RowResult]) -> dict:
    choices = []
    for i, r in enumerate(results):
        echoed = prep.echo_texts[i // prep.n] if prep.echo_texts is not None else ""
        logprobs = None
        if prep.logprobs:
            logprobs = (echo_logprobs(served, r, echoed) if prep.echo_texts is not None
                        else completion_logprobs(served, r.scored))
        choices.append({"index": i, "text": echoed + r.text, "logprobs": logprobs,
                        "finish_reason": r.finish_reason})
    return {"id": f"cmpl-{secrets.token_hex(12)}", "object": "text_completion",
            "created": int(time.time()), "model": served.model_id, "choices": choices,
            "usage": usage(prep.prompt_tokens, results), "system_fingerprint": None}


class RowText:
    """Incremental text of one streamed row, holding back what a stop string may still cut."""

    def __init__(self, stop: tuple[str, ...]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.text, self.sent, self.stop = "", 0, stop
        self.hold = max((len(s) for s in stop), default=1) - 1
        self.offset = 0  # completions: characters of this choice's text sent before

    def add(self, data: bytes) -> str:
        self.text += self._decoder.decode(data)
        upto = max(self.sent, len(self.text) - self.hold)
        found = [i for i in (self.text.find(s, self.sent) for s in self.stop) if i >= 0]
        if found:  # the row ends at this stop string: never send it or what follows
            upto = min(found)
        delta, self.sent = self.text[self.sent:upto], max(self.sent, upto)
        return delta

    def rest(self, final: str) -> str:
        """What is left to send of the row's final text."""
        return final[self.sent:] if final.startswith(self.text[:self.sent]) else ""


class ChunkStream:
    """Builds the chunks of one streamed request, as dictionaries ready for ``data:`` lines."""

    def __init__(self, served: ServedModel, prep: Prepared, results: list[RowResult]) -> None:
        self.served, self.prep, self.results = served, prep, results
        self.chat = prep.kind == "chat"
        prefix = "chatcmpl" if self.chat else "cmpl"
        self.base = {"id": f"{prefix}-{secrets.token_hex(12)}",
                     "object": "chat.completion.chunk" if self.chat else "text_completion",
                     "created": int(time.time()), "model": served.model_id,
                     "system_fingerprint": None}
        self.rows = [RowText(prep.sampling.stop) for _ in prep.prompts]
        self.opened = [False] * len(prep.prompts)

    def chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        extra = {"usage": None} if self.prep.include_usage else {}
        return {**self.base, "choices": choices, **extra}

    def opening(self) -> list[dict[str, Any]]:
        """Chat: the assistant role for every choice. Completions: nothing yet."""
        if not self.chat:
            return []
        return [self.chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                             "logprobs": None, "finish_reason": None}])
                for i in range(len(self.rows))]

    def token(self, index: int, token: int, scored: Scored | None) -> list[dict[str, Any]]:
        chunks = self._open(index)
        row = self.rows[index]
        text = "" if token in self.served.special_ids else None
        delta = row.add(self.served.token_bytes(token)) if text is None else text
        chunks.append(self._choice(index, delta, [scored] if scored else [], None))
        return chunks

    def closing(self) -> list[dict[str, Any]]:
        chunks = []
        for i, result in enumerate(self.results):
            chunks += self._open(i)
            chunks.append(self._choice(i, self.rows[i].rest(result.text), [],
                                       result.finish_reason))
        if self.prep.include_usage:
            chunks.append({**self.base, "choices": [],
                           "usage": usage(self.prep.prompt_tokens, self.results)})
        return chunks

    def _open(self, index: int) -> list[dict[str, Any]]:
        """Completions with echo: the prompt (and its scores) before the first new text."""
        if self.opened[index] or self.chat or self.prep.echo_texts is None:
            return []
        self.opened[index] = True
        echoed = self.prep.echo_texts[index // self.prep.n]
        self.rows[index].offset = len(echoed)
        logprobs = (completion_logprobs(self.served, self.results[index].prompt_scored)
                    if self.prep.logprobs else None)
        return [self.chunk([{"index": index, "text": echoed, "logprobs": logprobs,
                             "finish_reason": None}])]

    def _choice(self, index: int, delta: str, scored: list[Scored],
                finish: str | None) -> dict[str, Any]:
        if self.chat:
            logprobs = ({"content": chat_entries(self.served, scored), "refusal": None}
                        if self.prep.logprobs and scored else None)
            body = {"delta": {"content": delta} if delta or finish is None else {}}
            return self.chunk([{"index": index, **body, "logprobs": logprobs,
                                "finish_reason": finish}])
        row = self.rows[index]
        logprobs = None
        if self.prep.logprobs and scored:
            logprobs = completion_logprobs(self.served, scored, row.offset)
            row.offset += sum(len(t) for t in logprobs["tokens"])
        return self.chunk([{"index": index, "text": delta, "logprobs": logprobs,
                            "finish_reason": finish}])
