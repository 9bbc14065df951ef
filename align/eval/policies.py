"""Answers of a policy through the ledger: the one way evaluation samples a model.

`rlaif eval winrate` and `rlaif eval constraints` both ask policies (a local model directory,
``default`` for the embedded model, or an OpenAI-compatible URL) to answer prompts with given
sampling settings and a seed. A local model is served by `rlaif serve` for as long as its answers
are needed (``served``), and every request goes through the client and the ledger
(``sample_answers``), so a rerun is answered from the database instead of sampling again, and
served model ids carry a fingerprint of the weights, so a retrained checkpoint is never answered
from an old row. Seeded requests give the same answers on every run.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from datagen.endpoint.client import CHAT_PATH, ClientConfig, LLMClient, Request, run_async
from datagen.endpoint.keys import request_key
from datagen.errors import UserInputError
from datagen.progress import track
from datagen.responses.sample import PromptItem, Response, as_messages


class Source(BaseModel):
    """Where one side's answers come from: a local model (``local``: "default" or a resolved
    directory) or an endpoint URL with a model name."""

    model_config = ConfigDict(frozen=True)

    role: str
    spec: str
    local: str | None = None
    url: str | None = None
    model: str | None = None


class Endpoint(BaseModel):
    """A reachable side: base URL and the model name to send."""

    base_url: str
    model: str


class Sampling(BaseModel):
    """Sampling settings shared by both sides. Example: ``Sampling(temperature=0.7)``."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(default=0.7, ge=0, le=2)
    max_tokens: int = Field(default=512, ge=1)
    seed: int = 0


def parse_source(role: str, value: str, model: str | None) -> Source:
    """Check a --policy / --reference value: an http(s) URL (with --ROLE-model), "default" or
    a local Hugging Face model directory."""
    if value.startswith(("http://", "https://")):
        if not model:
            raise UserInputError(f"--{role}-model: required with a URL --{role} (the model name "
                                 "the endpoint serves)")
        return Source(role=role, spec=value, url=value, model=model)
    if model:
        raise UserInputError(f"--{role}-model: only with a URL --{role}; a local model is sent "
                             "under the name its server announces")
    if value == "default":
        return Source(role=role, spec=value, local="default")
    path = Path(value).expanduser()
    if not path.is_dir():
        raise UserInputError(f"--{role}: {value}: no such directory (give a model directory, "
                             "'default' or an http(s) URL)")
    if not (path / "config.json").is_file():
        raise UserInputError(f"--{role}: {value}: not a Hugging Face model directory "
                             "(no config.json)")
    return Source(role=role, spec=value, local=str(path.resolve()))


@contextmanager
def served(sources: list[Source]) -> Iterator[list[Endpoint]]:
    """Endpoints of the sources, starting one embedded server per distinct local model for the
    block (the same directory given twice is served once)."""
    from datagen.serve.autostart import embedded_endpoint

    with ExitStack() as stack:
        started: dict[str, Endpoint] = {}
        endpoints = []
        for source in sources:
            if source.url is not None:
                endpoints.append(Endpoint(base_url=source.url, model=source.model))
                continue
            if source.local not in started:
                url, model_id = stack.enter_context(embedded_endpoint(source.local))
                started[source.local] = Endpoint(base_url=url, model=model_id)
            endpoints.append(started[source.local])
        yield endpoints


async def sample_answers(client: LLMClient, prompts: list[PromptItem], model: str,
                         sampling: Sampling, sample_index: int = 0) -> list[Response]:
    """One answer per prompt from ``model``, every request through the ledger."""
    plan = []
    for item in prompts:
        body = {"model": model, "messages": as_messages(item.prompt),
                "temperature": sampling.temperature, "max_tokens": sampling.max_tokens,
                "seed": sampling.seed}
        plan.append((item, body, request_key(CHAT_PATH, body, sample_index)))
    answers = await client.call_many(
        [Request(CHAT_PATH, body, sample_index) for _, body, _ in plan])
    return [
        Response(id=f"{model}:{item.id}:{sample_index}", prompt_id=item.id, model=model,
                 sample_index=sample_index, temperature=sampling.temperature,
                 max_tokens=sampling.max_tokens, text=answer.text,
                 finish_reason=answer.finish_reason, status=answer.status, error=answer.error,
                 request_key=key)
        for (item, _, key), answer in zip(plan, answers, strict=True)
    ]


def answer(config: ClientConfig, db: Any, prompts: list[PromptItem],
           samplings: Sequence[Sampling], sample_index: int = 0,
           progress: str | None = "none") -> list[list[Response]]:
    """Each sampling's answers to the prompts from the endpoint and model of ``config``
    (one client for all), every request through the ledger in ``db``; ``progress`` is a
    ``datagen.progress`` mode."""
    async def go() -> list[list[Response]]:
        async with LLMClient(config, db) as client, track(client, progress):
            return [await sample_answers(client, prompts, config.model, sampling, sample_index)
                    for sampling in samplings]

    return run_async(go())
