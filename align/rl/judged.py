"""LLM-judge rewards during online training: the score judge per reply, the pairwise judge per
pair of replies, both through the request ledger.

A trainer calls its reward functions synchronously, once per batch; each call here opens an
``LLMClient`` on a fresh event loop over the one project database, sends the batch's judge
requests in one ledger sweep (``judges.verdicts.ask_all``) and closes it. The endpoint is
resolved once per run (``--base-url``-style options in the reward spec, else
``$OPENAI_BASE_URL``, else the embedded model, started for the run's lifetime) and held open
by the caller's ``ExitStack``. Request counts add up in ``JudgeEndpoint.stats`` so the
command can say how many judge calls were paid for and how many came from the ledger.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from align.rl.rewards import RewardSpec
from datagen import store
from datagen.connect import client_config, endpoint_url
from datagen.endpoint.client import ClientConfig, LLMClient, run_async
from judges.pairs import PairRow, prompt_text
from judges.pairwise import PairwiseSettings, judge_pairwise
from judges.pointwise import POINTWISE_FIELDS, PointwiseRubric, score_each
from judges.rubric import PAIRWISE_FIELDS, PairwiseRubric, default_rubric_path, load_rubric


@dataclass
class JudgeEndpoint:
    """A resolved judge endpoint and the ledger database; ``stats`` sums every call."""

    config: ClientConfig
    db: Any
    stats: dict[str, int] = field(default_factory=lambda: {"requests": 0, "from_ledger": 0,
                                                           "failed": 0})

    def run(self, work: Callable[[LLMClient], Awaitable[Any]]) -> Any:
        """Run ``work(client)`` on a fresh loop with a client over the ledger."""
        async def go() -> Any:
            async with LLMClient(self.config, self.db) as client:
                result = await work(client)
                stats = client.stats
            self.stats["requests"] += stats.ok + stats.failed + stats.skipped
            self.stats["from_ledger"] += stats.from_ledger
            self.stats["failed"] += stats.failed
            return result
        return run_async(go())


def open_endpoint(spec: RewardSpec, db_path: Path, stack: ExitStack) -> JudgeEndpoint:
    """Resolve the judge endpoint of a reward spec (kept open by ``stack``)."""
    options = spec.options()
    url, model = stack.enter_context(endpoint_url(options.get("base-url"), options.get("model")))
    config = client_config({"api_key_env": options.get("api-key-env") or "OPENAI_API_KEY",
                            "model": model}, url, model=model)
    return JudgeEndpoint(config, store.open_db(db_path))


def judge_scorer(spec: RewardSpec, endpoint: JudgeEndpoint) -> Callable[..., list[float]]:
    """Score judge: each reply's expected 1-10 score rescaled to [0, 1]; unread -> NaN."""
    path = spec.options().get("rubric") or default_rubric_path("pointwise")
    rubric = load_rubric(path, PointwiseRubric, **POINTWISE_FIELDS)
    low, high = min(map(float, rubric.scores)), max(map(float, rubric.scores))

    def score(prompts: list[Any], texts: list[str], lengths: list[int],
              constraints: list[str]) -> list[float]:
        items = [(prompt_text(p), t) for p, t in zip(prompts, texts, strict=True)]
        scored = endpoint.run(lambda client: score_each(client, items, rubric))
        return [math.nan if scored[i]["score"] is None else
                (scored[i]["score"] - low) / (high - low) for i in items]
    return score


def pairwise_scorer(spec: RewardSpec, endpoint: JudgeEndpoint) -> Callable[..., list[float]]:
    """Pairwise judge over the two samples of each prompt (online DPO lays a batch out as all
    first samples, then all second samples): winner 1, loser 0, inconsistent or error NaN."""
    path = spec.options().get("rubric") or default_rubric_path("pairwise")
    rubric = load_rubric(path, PairwiseRubric, **PAIRWISE_FIELDS)
    settings = PairwiseSettings(orders="both", model=endpoint.config.model)

    def score(prompts: list[Any], texts: list[str], lengths: list[int],
              constraints: list[str]) -> list[float]:
        half = len(texts) // 2
        rows = [PairRow(where=f"sample {i}", id=f"online-{i}", prompt=prompts[i],
                        response_a=texts[i], response_b=texts[half + i], data={})
                for i in range(half)]
        results = endpoint.run(lambda client: judge_pairwise(client, rows, rubric, settings))
        first = [{"a": 1.0, "b": 0.0}.get(r.preferred, math.nan) for r in results]
        second = [{"a": 0.0, "b": 1.0}.get(r.preferred, math.nan) for r in results]
        return first + second
    return score
