"""The served model: its tokenizer, id, context length and the decoding backend behind it.

``rlaif serve`` runs one of two backends over the same checkpoint: ``ctranslate2`` (an int8
copy, the default: about three times faster on CPU) or ``transformers`` (float32, exact scores,
and any checkpoint CTranslate2 cannot convert). Both take the same ``Job``s
(``datagen.serve.jobs``), so the HTTP side never knows which one runs. This module loads
either, and maps token ids to the exact bytes and text the OpenAI log-prob fields carry.
"""

from __future__ import annotations

import asyncio
import copy
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from datagen.serve.api import ModelInfo
from datagen.serve.jobs import Job, eos_ids

BACKENDS = ("ctranslate2", "transformers")


class Engine(Protocol):
    """What a decoding backend offers the server."""

    backend: str
    stats: Any

    def start(self) -> None: ...
    def submit(self, job: Job) -> None: ...
    def close(self) -> None: ...
    def snapshot(self) -> dict[str, Any]: ...


class ServedModel:
    """A loaded backend with its tokenizers, id and context length."""

    def __init__(self, engine: Engine, tokenizer: Any, model_id: str,
                 context_length: int) -> None:
        self.engine, self.tokenizer, self.model_id = engine, tokenizer, model_id
        self.context_length = context_length
        self.created = int(time.time())
        self._token_bytes = token_bytes_function(tokenizer)
        # Request preparation runs on another thread: a Rust tokenizer is not safe to share
        # between threads that encode and decode at the same time.
        self.info = ModelInfo(model_id, context_length, copy.deepcopy(tokenizer))
        self.special_ids = set(tokenizer.all_special_ids)

    def token_bytes(self, token: int) -> bytes:
        return self._token_bytes(token)

    def token_text(self, token: int) -> str:
        return self._token_bytes(token).decode("utf-8", errors="replace")

    def submit(self, job: Job) -> None:
        self.engine.submit(job)

    def job_for(self, loop: asyncio.AbstractEventLoop, prompts: list[list[int]],
                seeds: list[int], sampling: Any, cancelled: Callable[[], bool],
                on_token: Any = None) -> tuple[Job, asyncio.Future]:
        """A job whose outcome settles the returned future on ``loop``."""
        future: asyncio.Future = loop.create_future()

        def settle(results: Any, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(results)

        def on_done(results: Any, error: BaseException | None) -> None:
            if not loop.is_closed():
                loop.call_soon_threadsafe(settle, results, error)

        return Job(prompts=prompts, seeds=seeds, sampling=sampling, on_done=on_done,
                   cancelled=cancelled, on_token=on_token), future


def load_tokenizer(model_dir: Path) -> Any:
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)


def load_served(model_dir: Path, model_id: str, backend: str, *, max_batch: int,
                threads: int) -> ServedModel:
    """Load the checkpoint on the chosen backend (converting it for CTranslate2 once)."""
    from transformers import AutoConfig, GenerationConfig

    tokenizer = load_tokenizer(model_dir)
    context = int(AutoConfig.from_pretrained(model_dir, local_files_only=True)
                  .max_position_embeddings)
    if backend == "ctranslate2":
        from datagen.serve.convert import ct2_model_dir
        from datagen.serve.ctranslate import CT2Engine

        try:
            generation = GenerationConfig.from_pretrained(model_dir, local_files_only=True)
        except OSError:
            generation = None
        engine: Engine = CT2Engine(ct2_model_dir(model_dir), copy.deepcopy(tokenizer),
                                   eos_ids(generation, tokenizer), context,
                                   max_batch=max_batch, threads=threads)
    else:
        import torch
        from transformers import AutoModelForCausalLM

        from datagen.serve.batcher import Batcher

        torch.set_num_threads(threads)
        model = AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True,
                                                     dtype=torch.float32).eval()
        engine = Batcher(model, copy.deepcopy(tokenizer), max_batch=max_batch)
    return ServedModel(engine, tokenizer, model_id, context)


def byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE's printable stand-ins for the 256 byte values, as character -> byte."""
    kept = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    table = {chr(b): b for b in kept}
    shifted = sorted(set(range(256)) - set(kept))
    table |= {chr(256 + i): b for i, b in enumerate(shifted)}
    return table


def token_bytes_function(tokenizer: Any) -> Callable[[int], bytes]:
    """A memoised id -> UTF-8 bytes map (exact for byte-level BPE, decoded otherwise)."""
    from tokenizers import decoders

    alphabet = byte_level_alphabet()
    added = {i: t.content for i, t in tokenizer.added_tokens_decoder.items()}
    byte_level = isinstance(tokenizer.backend_tokenizer.decoder, decoders.ByteLevel)
    memo: dict[int, bytes] = {}

    def lookup(token: int) -> bytes:
        if token not in memo:
            piece = tokenizer.convert_ids_to_tokens(token)
            if token in added:
                memo[token] = added[token].encode()
            elif byte_level and all(ch in alphabet for ch in piece):
                memo[token] = bytes(alphabet[ch] for ch in piece)
            else:
                memo[token] = tokenizer.decode([token]).encode()
        return memo[token]

    return lookup
