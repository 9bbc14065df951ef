"""Response pairs for preference labelling: `rlaif generate responses`, `rlaif export pairs`.

A judge needs two answers to the same prompt. This stage samples ``n`` responses per prompt
from one model or several (sample ``j`` goes to model ``j mod M``, so two models and ``n=2``
give one answer from each), each sample its own ledger request (``sample_index``), so a rerun
sends nothing that was answered and a larger ``n`` only asks for the new samples. Each sample's
request carries its own ``seed``, derived from the run seed and the sample's number (recorded in
the request body the ledger keeps, which ``request_key`` names), so the n samples differ on any
endpoint that honours ``seed`` (even a deterministic one), and the same run seed asks for the
same samples again. Pairs are
then formed from the usable responses of a prompt: all pairs, or one random pair, with the
A/B orientation drawn too; the draw is seeded by the seed and the prompt id, so it does not
depend on the file order. Prompt lines may carry ``constraints`` (from
``rlaif generate constrained``) or IFEval's ``instruction_id_list`` + ``kwargs`` (an IFEval
``input_data.jsonl`` loads unchanged, its ``key`` as the id); they ride along on the pair, as
a ``constraints`` list, for ``rlaif label --judge verify``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel

from datagen import store
from datagen.constraint_form import row_constraints
from datagen.endpoint.client import CHAT_PATH, LLMClient, Request
from datagen.endpoint.keys import canonical_json, request_key
from datagen.errors import UserInputError
from datagen.ids import content_id
from datagen.jsonl import note_unique, read_objects
from datagen.jsonl import write_jsonl as write_jsonl  # align/service/cli.py imports it from here
from datagen.store.tables import PAIRS, RESPONSES

PairMode = Literal["random", "all"]


class PromptItem(BaseModel):
    """One prompt to answer. Example: ``PromptItem(id="p1", prompt="Explain rain.")``"""

    id: str
    prompt: str | list[dict[str, Any]]
    constraints: Any = None


class Response(BaseModel):
    """One sampled response (or the error that ended its request)."""

    id: str
    prompt_id: str
    model: str | None
    sample_index: int
    temperature: float
    max_tokens: int
    text: str
    finish_reason: str | None
    status: str
    error: str | None
    request_key: str


class Pair(BaseModel):
    """Two responses to one prompt, ready for `rlaif label`."""

    id: str
    prompt_id: str
    prompt: str | list[dict[str, Any]]
    response_a: str
    response_b: str
    model_a: str | None
    model_b: str | None
    response_a_id: str
    response_b_id: str
    constraints: Any = None


def read_prompts(path: str | Path) -> list[PromptItem]:
    """Read a prompts JSONL file: ``prompt`` (text or chat messages), optional ``id`` and
    ``constraints``."""
    path = Path(path)
    items: list[PromptItem] = []
    seen: dict[str, int] = {}
    for line_no, where, obj in read_objects(
        path, empty_message=f"{path}: empty file, expected one JSON prompt per line"
    ):
        item = _prompt_item(obj, where)
        note_unique(seen, item.id, line_no, where, what="id")
        items.append(item)
    return items


def _prompt_item(obj: dict[str, Any], where: str) -> PromptItem:
    prompt = obj.get("prompt")
    if not is_prompt(prompt):
        raise UserInputError(
            f"{where}: missing prompt (a non-empty string or a list of chat messages)")
    prompt_id = obj.get("id")
    if prompt_id is None:
        prompt_id = obj.get("key")  # IFEval's prompt files number their prompts as "key"
    return PromptItem(id=str(prompt_id) if prompt_id is not None else "p-" + content_id(prompt),
                      prompt=prompt, constraints=row_constraints(obj, where))


def is_prompt(value: Any) -> bool:
    """A non-empty string, or a non-empty list of {"role": str, "content": str} messages."""
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in value)


def as_messages(prompt: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A prompt as chat messages (a string becomes one user turn)."""
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def sample_seed(run_seed: int, sample: int) -> int:
    """The request seed of a prompt's sample number ``sample`` (0..n-1) in a run: distinct per
    sample, the same in every rerun, within the 31-bit range every endpoint accepts."""
    digest = hashlib.sha256(f"rlaif-sample:{run_seed}:{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


async def sample_responses(
    client: LLMClient, prompts: list[PromptItem], models: list[str | None], n: int,
    temperature: float, max_tokens: int, seed: int = 0,
) -> list[Response]:
    """Sample n responses per prompt, round-robin over the models, all through the ledger;
    sample j of every prompt is sent with ``sample_seed(seed, j)``."""
    plan = []
    for item in prompts:
        for j in range(n):
            model, index = models[j % len(models)], j // len(models)
            body = {"model": model, "messages": as_messages(item.prompt),
                    "temperature": temperature, "max_tokens": max_tokens,
                    "seed": sample_seed(seed, j)}
            body = {k: v for k, v in body.items() if v is not None}
            plan.append((item, model, index, body, request_key(CHAT_PATH, body, index)))
    answers = await client.call_many(
        [Request(CHAT_PATH, body, index) for _, _, index, body, _ in plan])
    return [
        Response(
            id=content_id(item.id, model, index, temperature, max_tokens, body["seed"]),
            prompt_id=item.id, model=model, sample_index=index, temperature=temperature,
            max_tokens=max_tokens, text=answer.text, finish_reason=answer.finish_reason,
            status=answer.status, error=answer.error, request_key=key)
        for (item, model, index, body, key), answer in zip(plan, answers, strict=True)
    ]


def usable(response: Response) -> bool:
    """A response worth judging: its request succeeded and it has text."""
    return response.status == "ok" and bool(response.text.strip())


def form_pairs(
    prompts: list[PromptItem], responses: Iterable[Response], mode: PairMode = "random",
    seed: int = 0,
) -> list[Pair]:
    """Pairs of usable responses per prompt: one random pair, or all pairs (each with a
    seeded A/B orientation)."""
    by_prompt: dict[str, list[Response]] = {}
    for response in responses:
        if usable(response):
            by_prompt.setdefault(response.prompt_id, []).append(response)
    pairs = []
    for item in prompts:
        candidates = by_prompt.get(item.id, [])
        if len(candidates) < 2:
            continue
        rng = random.Random(f"{seed}:{item.id}")
        chosen = ([tuple(rng.sample(candidates, 2))] if mode == "random"
                  else list(itertools.combinations(candidates, 2)))
        for first, second in chosen:
            a, b = (first, second) if mode == "random" or rng.random() < 0.5 else (second, first)
            pairs.append(Pair(
                id=content_id(item.id, a.id, b.id), prompt_id=item.id, prompt=item.prompt,
                response_a=a.text, response_b=b.text, model_a=a.model, model_b=b.model,
                response_a_id=a.id, response_b_id=b.id, constraints=item.constraints))
    return pairs


def save_responses(db: Any, responses: list[Response], pairs: list[Pair]) -> int:
    """Store responses (a rerun's outcome replaces a failed one) and pairs; return the number
    of new pairs."""
    store.save_rows(db, RESPONSES, responses, pk="id", replace=True)
    rows = [pair.model_dump(mode="json") | {"prompt": canonical_json(pair.prompt),
                                            "constraints": canonical_json(pair.constraints)}
            for pair in pairs]
    return store.save_rows(db, PAIRS, rows, pk="id")


def load_pairs(db: Any) -> list[dict[str, Any]]:
    """Stored pairs as `rlaif label` input objects (prompt and constraints decoded)."""
    out = []
    for row in store.load_rows(db, PAIRS):
        row["prompt"] = json.loads(row["prompt"])
        row["constraints"] = json.loads(row["constraints"])
        if row["constraints"] is None:
            del row["constraints"]
        out.append(row)
    return out
