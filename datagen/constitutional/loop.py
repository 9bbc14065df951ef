"""Constitutional AI critique and revision (SL-CAI): turn red-team prompts into SFT examples
and preference pairs.

A model answers a prompt, critiques its own answer against a principle drawn from a
constitution, and rewrites it; the final revision becomes an SFT target and, paired against
the initial answer, a preference pair. The public recipe keeps everything in memory, draws the
principle without a seed and never records it, truncates multi-turn prompts and loses the run
on one failure; here every turn is one request through the exactly-once ledger (a killed run
resumes at the next unanswered turn), the principle is drawn from ``seed`` and the prompt id
(reproducible whatever the order) and stored per round, multi-turn prompts keep their whole
context, failures and empty outputs are rows, and degenerate revisions never become pairs.
Constitution and prompts files are read by ``datagen.constitutional.constitution``.

Conversation order. Every turn is one chat request whose messages are, in order:

1. the prompt's system message, when it starts with one (hoisted so that it stays first);
2. the constitution's few-shot conversations, flattened, each as user prompt, assistant
   answer, user critique request, assistant critique, user revision request, assistant
   revision (the public recipe's ``system_chat`` conversations are used as they are);
3. the prompt's remaining messages (every turn of a multi-turn prompt; the last is the user's);

followed by the turn's own tail. With ``A0`` the initial answer, ``CRr``/``RRr`` the critique
and revision requests of round r's principle, ``Cr`` the critique and ``Ar`` the revision:

- answer:       (no tail)                                        -> A0
- critique r:   A0, CR1, C1, RR1, A1, ..., A(r-1), CRr           -> Cr
- revision r:   A0, CR1, C1, RR1, A1, ..., A(r-1), CRr, Cr, RRr  -> Ar

so round r sees the earlier rounds and critiques the latest revision; the final revision is
``AR``. Roles alternate: answers, critiques and revisions are assistant turns, requests are
user turns. A turn that fails, is not sent (budget) or comes back empty ends its chain.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from datagen import jsonl, store
from datagen.constitutional.constitution import Constitution, Message, Principle, Prompt
from datagen.endpoint.client import LLMClient, Stats
from datagen.endpoint.completion import Completion
from datagen.endpoint.keys import canonical_json
from datagen.store.tables import CAI_SAMPLES

SOURCE = "constitutional"

Degenerate = Literal["empty_revision", "unchanged", "scaffolding"]

_REFUSAL = re.compile(
    r"^\W*(i['’]?m sorry|i am sorry|sorry,|i can(?:no|['’])t|i won['’]?t|i will not|"
    r"i['’]?m (?:not able|unable)|i am (?:not able|unable)|as an ai\b)",
    re.IGNORECASE,
)
_SCAFFOLD = re.compile(
    r"^[\s>*#_-]*(critique request|revision request|critique|revision|human|user|assistant)"
    r"[\s*_]*:",
    re.IGNORECASE | re.MULTILINE,
)


# --- the critique/revision loop --------------------------------------------------------------


class CaiRound(BaseModel):
    """One critique and revision under one principle."""

    round: int
    principle_id: str
    critique_request: str
    revision_request: str
    critique: str | None = None
    critique_key: str | None = None
    revision: str | None = None
    revision_key: str | None = None


class CaiSample(BaseModel):
    """Everything one prompt went through; a row of ``cai_samples``."""

    id: str = Field(description="run_id/prompt_id")
    run_id: str
    prompt_id: str
    category: str | None = None
    prompt: list[Message]
    constitution: str
    constitution_hash: str
    model: str | None = None
    resolved_model: str | None = None
    params: dict[str, Any]
    principle_ids: list[str]
    initial: str | None = None
    initial_key: str | None = None
    rounds: list[CaiRound] = Field(default_factory=list)
    final: str | None = None
    status: Literal["ok", "empty", "failed", "skipped"] = "ok"
    stopped_at: str | None = Field(default=None, description="turn that ended the chain early")
    error: str | None = None
    refusals: list[str] = Field(default_factory=list, description="turns that read as refusals")
    degenerate: Degenerate | None = None
    judge_agrees: bool | None = Field(
        default=None, description="Judge prefers the final revision (set by judge-revisions)")
    prompt_tokens: int = 0
    completion_tokens: int = 0


def choose_principles(
    principles: list[Principle], seed: int, prompt_id: str, rounds: int
) -> list[Principle]:
    """The principles of a prompt's rounds: drawn from ``seed`` and the prompt id alone, without
    repeats while there are enough principles."""
    rng = random.Random(f"{seed}/{prompt_id}")
    if rounds <= len(principles):
        return rng.sample(principles, rounds)
    return [rng.choice(principles) for _ in range(rounds)]


def conversation_prefix(constitution: Constitution, prompt: list[Message]) -> list[Message]:
    """The messages every turn starts with: system message, few-shot examples, the prompt."""
    head = prompt[:1] if prompt and prompt[0].role == "system" else []
    return [*head, *constitution.few_shot, *prompt[len(head):]]


def run_id_for(constitution: Constitution, model: str | None, *, rounds: int, seed: int,
               temperature: float, max_tokens: int) -> str:
    """A run id that names the settings, so a rerun with the same settings continues the run."""
    settings = {"constitution": constitution.content_hash, "model": model, "rounds": rounds,
                "seed": seed, "temperature": temperature, "max_tokens": max_tokens}
    return "cai-" + hashlib.sha256(canonical_json(settings).encode()).hexdigest()[:12]


def is_refusal(text: str, finish_reason: str | None = None) -> bool:
    """Whether a reply reads as a refusal (or was blocked by a content filter)."""
    return finish_reason == "content_filter" or bool(_REFUSAL.match(text))


def normalise(text: str) -> str:
    """Text with whitespace collapsed and case folded, for comparing answers."""
    return " ".join(text.split()).casefold()


def degenerate_reason(initial: str, revision: str | None,
                      principles: Iterable[Principle] = ()) -> Degenerate | None:
    """Why a revision must not become a pair: empty, unchanged, or carrying critique scaffolding
    (a "Critique:"-style label line, or the text of a critique or revision request)."""
    if not revision or not revision.strip():
        return "empty_revision"
    if normalise(revision) == normalise(initial):
        return "unchanged"
    body = normalise(revision)
    requests = [normalise(t) for p in principles for t in (p.critique_request, p.revision_request)]
    if _SCAFFOLD.search(revision) or any(r in body for r in requests):
        return "scaffolding"
    return None


async def revise_prompt(
    client: LLMClient, prompt: Prompt, constitution: Constitution, *, run_id: str,
    rounds: int = 1, seed: int = 0, temperature: float = 1.0, max_tokens: int = 1024,
) -> CaiSample:
    """Answer one prompt, then critique and revise it ``rounds`` times (see module docstring)."""
    principles = choose_principles(constitution.principles, seed, prompt.id, rounds)
    messages = [m.model_dump() for m in conversation_prefix(constitution, prompt.messages)]
    sample = CaiSample(
        id=f"{run_id}/{prompt.id}", run_id=run_id, prompt_id=prompt.id, category=prompt.category,
        prompt=prompt.messages, constitution=constitution.name,
        constitution_hash=constitution.content_hash, model=client.config.model,
        params={"temperature": temperature, "max_tokens": max_tokens, "rounds": rounds,
                "seed": seed},
        principle_ids=[p.id for p in principles],
    )

    async def ask(turn: str) -> tuple[str | None, str]:
        result = await client.chat(list(messages), temperature=temperature, max_tokens=max_tokens)
        return _record_turn(sample, turn, result), result.key

    sample.initial, sample.initial_key = await ask("answer")
    current = sample.initial
    for number, principle in enumerate(principles, start=1):
        if sample.status != "ok":
            break
        one = CaiRound(round=number, principle_id=principle.id,
                       critique_request=principle.critique_request,
                       revision_request=principle.revision_request)
        sample.rounds.append(one)
        messages += [{"role": "assistant", "content": current},
                     {"role": "user", "content": principle.critique_request}]
        one.critique, one.critique_key = await ask(f"critique-{number}")
        if one.critique is None:
            break
        messages += [{"role": "assistant", "content": one.critique},
                     {"role": "user", "content": principle.revision_request}]
        one.revision, one.revision_key = await ask(f"revision-{number}")
        current = one.revision
    if sample.status == "ok":
        sample.final = current
    ended_in_revision = sample.status == "empty" and sample.stopped_at.startswith("revision")
    if sample.status == "ok" or ended_in_revision:
        sample.degenerate = degenerate_reason(sample.initial, sample.final, principles)
    return sample


def _record_turn(sample: CaiSample, turn: str, result: Completion) -> str | None:
    """Account one turn on the sample; the reply text, or None when the chain must stop."""
    sample.prompt_tokens += result.prompt_tokens
    sample.completion_tokens += result.completion_tokens
    if not result.ok:
        sample.status = "failed" if result.status == "failed" else "skipped"
        sample.stopped_at, sample.error = turn, result.error
        return None
    sample.resolved_model = sample.resolved_model or (result.body or {}).get("model")
    text = result.text.strip()
    if is_refusal(text, result.finish_reason):
        sample.refusals.append(turn)
    if not text:
        sample.status, sample.stopped_at = "empty", turn
        return None
    return text


async def critique_and_revise(
    client: LLMClient, prompts: list[Prompt], constitution: Constitution, *, rounds: int = 1,
    seed: int = 0, temperature: float = 1.0, max_tokens: int = 1024,
) -> list[CaiSample]:
    """Run every prompt's chain concurrently (the client bounds how many requests fly)."""
    run_id = run_id_for(constitution, client.config.model, rounds=rounds, seed=seed,
                        temperature=temperature, max_tokens=max_tokens)
    settings = {"run_id": run_id, "rounds": rounds, "seed": seed, "temperature": temperature,
                "max_tokens": max_tokens}
    return list(await asyncio.gather(
        *(revise_prompt(client, p, constitution, **settings) for p in prompts)))


class CaiSummary(BaseModel):
    """What a run did: counts per status, degenerate counts by reason, refusals, usage."""

    run_id: str
    prompts: int
    status: dict[str, int]
    degenerate: dict[str, int]
    refusals: dict[str, int] = Field(description="refused turns by kind: answer/critique/revision")
    pairs: int
    requests_sent: int
    from_ledger: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    seconds: float


def summarise(samples: list[CaiSample], stats: Stats, run_id: str, seconds: float) -> CaiSummary:
    """Summary counts of a finished run; usage is what this process spent."""
    return CaiSummary(
        run_id=run_id, prompts=len(samples),
        status=dict(Counter(s.status for s in samples)),
        degenerate=dict(Counter(s.degenerate for s in samples if s.degenerate)),
        refusals=dict(Counter(t.split("-")[0] for s in samples for t in s.refusals)),
        pairs=sum(_pairable(s) for s in samples),
        requests_sent=stats.sent, from_ledger=stats.from_ledger,
        prompt_tokens=stats.prompt_tokens, completion_tokens=stats.completion_tokens,
        cost_usd=stats.cost_usd, seconds=seconds,
    )


# --- rows and exports --------------------------------------------------------------------------

_JSON_FIELDS = ("prompt", "params", "principle_ids", "rounds", "refusals")


def save_samples(db: Any, samples: Iterable[CaiSample]) -> int:
    """Store samples in ``cai_samples`` (a rerun of the same run replaces its rows, keeping a
    judge verdict whose initial answer and final revision are unchanged)."""
    judged = {s.id: s for s in load_samples(db) if s.judge_agrees is not None}
    kept = []
    for sample in samples:
        old = judged.get(sample.id)
        if sample.judge_agrees is None and old and (old.initial, old.final) == (
                sample.initial, sample.final):
            sample = sample.model_copy(update={"judge_agrees": old.judge_agrees})
        kept.append(sample)
    return store.save_rows(db, CAI_SAMPLES, kept, pk="id", replace=True)


def record_judge_verdicts(db: Any, verdicts: dict[str, bool | None]) -> int:
    """Set ``judge_agrees`` of the stored samples named by id; returns how many were updated."""
    samples = [s.model_copy(update={"judge_agrees": verdicts[s.id]})
               for s in load_samples(db) if s.id in verdicts]
    return store.save_rows(db, CAI_SAMPLES, samples, pk="id", replace=True)


def load_samples(db: Any, run_id: str | None = None) -> list[CaiSample]:
    """Stored samples, ordered by id (one run's, or all)."""
    rows = store.load_rows(db, CAI_SAMPLES, order_by="id", **({"run_id": run_id} if run_id else {}))
    for row in rows:
        for name in _JSON_FIELDS:
            if isinstance(row.get(name), str):
                row[name] = json.loads(row[name])
    return [CaiSample.model_validate(row) for row in rows]


def split_prompt_ids(prompt_ids: Iterable[str], seed: int = 0) -> tuple[set[str], set[str]]:
    """Disjoint (sft, preference) halves of the prompt ids: floor(n/2) and ceil(n/2), seeded."""
    ids = sorted(set(prompt_ids))
    random.Random(f"split/{seed}").shuffle(ids)
    half = len(ids) // 2
    return set(ids[:half]), set(ids[half:])


def _selected(db: Any, split: Literal["sft", "preference"] | None, seed: int,
              run_id: str | None) -> list[CaiSample]:
    samples = load_samples(db, run_id)
    if split is None:
        return samples
    if split not in ("sft", "preference"):
        raise ValueError(f"split must be 'sft', 'preference' or None, not {split!r}")
    sft_ids, preference_ids = split_prompt_ids((s.prompt_id for s in samples), seed)
    keep = sft_ids if split == "sft" else preference_ids
    return [s for s in samples if s.prompt_id in keep]


def _pairable(sample: CaiSample) -> bool:
    return sample.status == "ok" and sample.degenerate is None


def sft_examples(db: Any, *, split: Literal["sft", "preference"] | None = None, seed: int = 0,
                 run_id: str | None = None) -> Iterator[dict[str, Any]]:
    """Chat SFT examples ``{id, source, messages}`` ending in the final revision. Unchanged
    revisions are kept (the answer needed no change); other degenerate rows are not."""
    for sample in _selected(db, split, seed, run_id):
        if sample.status == "ok" and sample.degenerate in (None, "unchanged"):
            yield {"id": sample.id, "source": SOURCE,
                   "messages": [*(m.model_dump() for m in sample.prompt),
                                {"role": "assistant", "content": sample.final}]}


def preference_pairs(db: Any, *, split: Literal["sft", "preference"] | None = None,
                     seed: int = 0, run_id: str | None = None,
                     drop_judge_disagrees: bool = False) -> Iterator[dict[str, Any]]:
    """TRL conversational preference rows ``{id, prompt, chosen, rejected}``: chosen is the
    final revision, rejected the initial answer; degenerate rows are left out, and so are rows
    whose judge preferred the initial answer when ``drop_judge_disagrees`` is set."""
    for sample in _selected(db, split, seed, run_id):
        if _pairable(sample) and not (drop_judge_disagrees and sample.judge_agrees is False):
            yield {"id": sample.id, "prompt": [m.model_dump() for m in sample.prompt],
                   "chosen": [{"role": "assistant", "content": sample.final}],
                   "rejected": [{"role": "assistant", "content": sample.initial}]}


def write_jsonl(path: str | Path, records: Iterable[BaseModel]) -> None:
    """Write records as JSONL atomically (a temporary file renamed over the target)."""
    jsonl.write_jsonl(path, (record.model_dump(mode="json") for record in records))
