"""Self-Instruct: grow an instruction dataset from a few human-written seed tasks.

Implements the bootstrap of Wang et al., "Self-Instruct: Aligning Language Models with
Self-Generated Instructions" (ACL 2023, arXiv:2212.10560): each round samples in-context tasks
(human seeds mixed with instructions the model made earlier), asks the model to continue the
numbered list, filters the new instructions and keeps those whose ROUGE-L against the pool is
at most 0.7 (``datagen.self_instruct.rouge``, exact and fast). Kept instructions are then classified
(classification task or not) and given instances, output-first for classification tasks.

Every request goes through the client's ledger and every outcome is a row in the project
database: rounds are written atomically, their randomness is seeded by (seed, round) and
repeated requests carry distinct ``sample_index`` values, so a run killed at any point and
started again with the same arguments replays its finished rounds from the database, answers
interrupted requests from the ledger, and reaches the same result. ``num_instructions`` is a
target, not part of the run's identity: a rerun with a larger target extends the run.
Prompt text and parsing rules live in ``datagen/self_instruct/parse.py``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from datagen import store
from datagen.endpoint.client import LLMClient
from datagen.endpoint.completion import Completion
from datagen.self_instruct.parse import (
    DEFAULT_SEED_FILE,
    SeedTask,
    filter_instances,
    instruction_filter,
    load_seed_tasks,
    parse_input_first,
    parse_instruction_list,
    parse_output_first,
    parse_yes_no,
    render_classify_prompt,
    render_generate_prompt,
    render_instance_prompt,
    sample_context,
)
from datagen.self_instruct.rouge import NoveltyIndex
from datagen.store.tables import SI_FAILURES, SI_INSTANCES, SI_INSTRUCTIONS, SI_ROUNDS, SI_TASKS

__all__ = [
    "DEFAULT_SEED_FILE", "RunSummary", "SelfInstructConfig", "bootstrap_instructions",
    "generate_instances", "instance_rows", "load_seed_tasks", "run_self_instruct",
    "seeds_digest", "sft_examples", "summarise", "to_messages",
]

TASK_CHUNK = 32


class SelfInstructConfig(BaseModel):
    """Parameters of a Self-Instruct run; all but the stopping rules identify the run.

    Example: ``SelfInstructConfig(num_instructions=200, model="tiny", seed=1)``
    """

    model_config = ConfigDict(extra="forbid")

    num_instructions: int = Field(default=100, ge=1, description="Target of kept instructions")
    model: str | None = None
    seed: int = 42
    prompts_per_round: int = Field(default=8, ge=1)
    num_context: int = Field(default=8, ge=1, description="In-context tasks per prompt")
    num_machine: int = Field(default=2, ge=0, description="Of which machine-generated")
    temperature: float = 1.0
    top_p: float | None = 0.95
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    max_tokens: int = 1024
    min_words: int = 4
    max_words: int = 150
    threshold: float = 0.7
    classify_examples: int = Field(default=12, ge=0)
    instance_demos: int = Field(default=3, ge=0)
    max_instances: int = Field(default=5, ge=1)
    instance_max_tokens: int = 350
    patience: int = Field(default=10, ge=1, description="Stop after this many idle rounds")

    def generation_params(self) -> dict[str, Any]:
        """Sampling parameters of instruction-generation requests (None values are not sent)."""
        return {
            "temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens,
            "presence_penalty": self.presence_penalty,
            "frequency_penalty": self.frequency_penalty, "stop": ["\n16."],
        }

    def run_id(self, seeds_digest: str) -> str:
        """A stable id from everything that shapes the rows; the stopping rules
        (``num_instructions``, ``patience``) are left out, so changing them continues a run."""
        identity = self.model_dump(exclude={"num_instructions", "patience"})
        text = json.dumps({"config": identity, "seeds": seeds_digest}, sort_keys=True)
        return "self-instruct-" + hashlib.sha256(text.encode()).hexdigest()[:12]


class RunSummary(BaseModel):
    """What a run has produced so far (cumulative over restarts)."""

    run_id: str
    status: str
    rounds: int
    candidates: int
    kept: int
    rejected: dict[str, int]
    tasks: int
    classification_tasks: int
    instances: int
    tasks_dropped: int
    failed_parses: int
    request_failures: int = Field(description="Requests of this invocation that failed")


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def seeds_digest(seeds: list[SeedTask]) -> str:
    """A hash of the seed tasks, part of the run's identity."""
    return _digest([s.model_dump() for s in seeds])


# --- bootstrap state ----------------------------------------------------------------------


class _State:
    """The pool as of the last finished round, rebuilt from the database on start."""

    def __init__(self, db: Any, run_id: str, seeds: list[SeedTask], threshold: float) -> None:
        self.index = NoveltyIndex(threshold)
        self.member_ids: list[str] = []
        for seed in seeds:
            self.index.add(seed.instruction)
            self.member_ids.append(seed.id)
        self.machine: list[tuple[str, str]] = []
        for row in store.load_rows(db, SI_INSTRUCTIONS, order_by="round, prompt_index, item_index",
                                   run_id=run_id, status="kept"):
            self.index.add(row["instruction"])
            self.member_ids.append(row["id"])
            self.machine.append((row["id"], row["instruction"]))
        rounds = store.load_rows(db, SI_ROUNDS, order_by="round", run_id=run_id)
        self.rounds = len(rounds)
        self.idle = 0
        for r in reversed(rounds):
            if r["kept"]:
                break
            self.idle += 1


async def _generate_round(
    client: LLMClient, config: SelfInstructConfig, seeds: list[SeedTask], state: _State,
    run_id: str, model: str | None,
) -> tuple[list[dict], list[dict], bool]:
    """One round: build prompts, send them, filter replies. Returns (rows, failures, complete)."""
    rng = random.Random(f"{config.seed}:{state.rounds}")
    contexts = [
        sample_context(rng, seeds, state.machine, config.num_context, config.num_machine)
        for _ in range(config.prompts_per_round)
    ]
    params = config.generation_params()
    replies = await asyncio.gather(*(
        client.chat([{"role": "user", "content": render_generate_prompt([t for _, t in ctx])}],
                    sample_index=state.rounds * config.prompts_per_round + i, **params)
        for i, ctx in enumerate(contexts)))
    if not all(c.ok for c in replies):
        return [], [], False
    rows, failures = [], []
    for p, (ctx, reply) in enumerate(zip(contexts, replies, strict=True)):
        base = {"run_id": run_id, "round": state.rounds, "prompt_index": p, "model": model,
                "params": params, "context_ids": [i for i, _ in ctx], "request_key": reply.key,
                "parent": None}
        items = parse_instruction_list(reply.text)
        if not items:
            failures.append(_failure(run_id, "instructions", reply, "no numbered instructions"))
        for k, text in enumerate(items):
            reason = instruction_filter(text, config.min_words, config.max_words)
            if reason is None and reply.finish_reason == "length" and k == len(items) - 1:
                reason = "truncated"
            # every candidate gets its score (a float column), only survivors may join the pool
            score, member = state.index.nearest(text)
            if reason is None and score > config.threshold:
                reason = "rouge"
            row = {"id": "si-" + _digest(run_id, state.rounds, p, k), **base, "item_index": k,
                   "instruction": text, "rouge_l": score,
                   "nearest": state.member_ids[member] if member is not None else None,
                   "status": "rejected" if reason else "kept", "reason": reason}
            if reason is None:
                state.index.add(text)
                state.member_ids.append(row["id"])
                state.machine.append((row["id"], text))
            rows.append(row)
    return rows, failures, True


def _failure(run_id: str, stage: str, reply: Completion, error: str,
             instruction_id: str | None = None) -> dict[str, Any]:
    return {"id": "sf-" + _digest(run_id, stage, reply.key), "run_id": run_id, "stage": stage,
            "instruction_id": instruction_id, "request_key": reply.key, "raw_text": reply.text,
            "finish_reason": reply.finish_reason, "error": error}


def _save_round(db: Any, run_id: str, number: int, rows: list[dict], failures: list[dict]) -> None:
    kept = sum(r["status"] == "kept" for r in rows)
    with store.transaction(db):
        store.save_rows(db, SI_INSTRUCTIONS, rows)
        store.save_rows(db, SI_FAILURES, failures)
        store.save_rows(db, SI_ROUNDS, [{"id": f"{run_id}:{number}", "run_id": run_id,
                                      "round": number, "candidates": len(rows), "kept": kept}])


async def bootstrap_instructions(
    client: LLMClient, db: Any, config: SelfInstructConfig, seeds: list[SeedTask], run_id: str,
    model: str | None,
) -> str:
    """Run rounds until the run holds ``num_instructions`` kept instructions.

    Returns "complete", "stalled" (``patience`` rounds in a row kept nothing) or
    "incomplete" (a request failed; the round is not saved and a rerun retries it).
    """
    state = _State(db, run_id, seeds, config.threshold)
    while len(state.machine) < config.num_instructions and state.idle < config.patience:
        rows, failures, complete = await _generate_round(
            client, config, seeds, state, run_id, model)
        if not complete:
            return "incomplete"
        _save_round(db, run_id, state.rounds, rows, failures)
        state.idle = 0 if any(r["status"] == "kept" for r in rows) else state.idle + 1
        state.rounds += 1
    return "complete" if len(state.machine) >= config.num_instructions else "stalled"


# --- classification and instances -----------------------------------------------------------


async def _make_task(
    client: LLMClient, config: SelfInstructConfig, seeds: list[SeedTask], row: dict,
    model: str | None,
) -> tuple[dict | None, list[dict], list[dict]]:
    """Classify one instruction and generate its instances: (task row, instances, failures)."""
    rng = random.Random(f"{config.seed}:{row['id']}")
    clf = [s for s in seeds if s.is_classification]
    other = [s for s in seeds if not s.is_classification]
    half = config.classify_examples // 2
    shots = rng.sample(clf, min(half, len(clf))) + rng.sample(
        other, min(config.classify_examples - half, len(other)))
    rng.shuffle(shots)
    classify_params = {"temperature": 0, "max_tokens": 3, "stop": ["\n", "Task:"]}
    c1 = await client.chat([{"role": "user", "content": render_classify_prompt(
        row["instruction"], shots)}], **classify_params)
    if not c1.ok:
        return None, [], []
    is_clf = parse_yes_no(c1.text)
    pool = [s for s in (clf if is_clf else other) if s.instances]
    demos = rng.sample(pool, min(config.instance_demos, len(pool)))
    params = {"temperature": 0, "stop": ["Example 6", "\nTask:"],
              "max_tokens": config.instance_max_tokens - (50 if is_clf else 0)}
    c2 = await client.chat([{"role": "user", "content": render_instance_prompt(
        row["instruction"], is_clf, demos, config.max_instances)}], **params)
    if not c2.ok:
        return None, [], []
    parsed = (parse_output_first if is_clf else parse_input_first)(c2.text)
    if c2.finish_reason == "length" and parsed:
        parsed = parsed[:-1]
    kept, dropped, task_reason = filter_instances(parsed, config.max_instances, rng)
    failures = []
    if not parsed:
        task_reason = "unparseable"
        failures.append(_failure(row["run_id"], "instances", c2, "no instances found", row["id"]))
    elif not kept and task_reason is None:
        task_reason = "no_valid_instances"
    base = {"run_id": row["run_id"], "model": model, "params": params,
            "context_ids": [d.id for d in demos], "request_key": c2.key, "parent": row["id"]}
    instances = [{"id": "sx-" + _digest(row["id"], i.input, i.output), **base,
                  "instruction_id": row["id"], "position": k, "input": i.input, "output": i.output}
                 for k, i in enumerate(kept)]
    task = {"id": row["id"], "run_id": row["run_id"], "instruction_id": row["id"],
            "is_classification": is_clf, "classify_answer": c1.text, "classify_key": c1.key,
            "classify_params": classify_params, "classify_context_ids": [s.id for s in shots],
            "instance_key": c2.key, "instances": len(instances), "dropped": dropped,
            "drop_reason": task_reason, "model": model, "parent": row["id"]}
    return task, instances, failures


async def generate_instances(
    client: LLMClient, db: Any, config: SelfInstructConfig, seeds: list[SeedTask], run_id: str,
    model: str | None,
) -> int:
    """Classify and instantiate every kept instruction that has no task row yet.

    Returns how many could not be done because a request failed (a rerun retries them).
    """
    done = {r["id"] for r in store.load_rows(db, SI_TASKS, run_id=run_id)}
    kept = store.load_rows(db, SI_INSTRUCTIONS, order_by="round, prompt_index, item_index",
                           run_id=run_id, status="kept")
    todo = [r for r in kept if r["id"] not in done]
    failed = 0
    for start in range(0, len(todo), TASK_CHUNK):
        chunk = todo[start:start + TASK_CHUNK]
        results = await asyncio.gather(
            *(_make_task(client, config, seeds, row, model) for row in chunk))
        with store.transaction(db):
            for task, instances, failures in results:
                if task is None:
                    failed += 1
                    continue
                store.save_rows(db, SI_INSTANCES, instances)
                store.save_rows(db, SI_FAILURES, failures)
                store.save_rows(db, SI_TASKS, [task])
    return failed


# --- the run --------------------------------------------------------------------------------


async def run_self_instruct(
    client: LLMClient, db: Any, config: SelfInstructConfig, seeds: list[SeedTask],
) -> RunSummary:
    """Generate (or continue) a Self-Instruct run and record it in the ``runs`` table."""
    model = config.model or client.config.model
    run_id = config.run_id(seeds_digest(seeds))
    store.start_run(db, run_id, "self-instruct", config.model_dump(), config.seed)
    status = await bootstrap_instructions(client, db, config, seeds, run_id, model)
    failed = 0
    if status != "incomplete":
        failed = await generate_instances(client, db, config, seeds, run_id, model)
        status = "incomplete" if failed else status
    summary = summarise(db, run_id, status, client.stats.failed)
    store.finish_run(db, run_id, status, summary.model_dump())
    return summary


def summarise(db: Any, run_id: str, status: str, request_failures: int = 0) -> RunSummary:
    """Counts of a run's rows."""
    rows = store.load_rows(db, SI_INSTRUCTIONS, run_id=run_id)
    tasks = store.load_rows(db, SI_TASKS, run_id=run_id)
    return RunSummary(
        run_id=run_id, status=status, rounds=store.count_rows(db, SI_ROUNDS, run_id=run_id),
        candidates=len(rows), kept=sum(r["status"] == "kept" for r in rows),
        rejected=dict(sorted(Counter(r["reason"] for r in rows if r["reason"]).items())),
        tasks=len(tasks), classification_tasks=sum(bool(t["is_classification"]) for t in tasks),
        instances=store.count_rows(db, SI_INSTANCES, run_id=run_id),
        tasks_dropped=sum(bool(t["drop_reason"]) for t in tasks),
        failed_parses=store.count_rows(db, SI_FAILURES, run_id=run_id),
        request_failures=request_failures)


# --- reading the results --------------------------------------------------------------------


def instance_rows(db: Any, run_id: str | None = None) -> Iterator[dict[str, Any]]:
    """Every stored instance with its instruction: {id, run_id, instruction, input, output}."""
    filters = {"run_id": run_id} if run_id else {}
    texts = {r["id"]: r["instruction"] for r in store.load_rows(db, SI_INSTRUCTIONS, **filters)}
    for row in store.load_rows(db, SI_INSTANCES, **filters):
        yield {"id": row["id"], "run_id": row["run_id"],
               "instruction": texts[row["instruction_id"]], "input": row["input"],
               "output": row["output"]}


def to_messages(instruction: str, input_text: str, output: str) -> list[dict[str, str]]:
    """The chat form of an instance: the instruction (and input) as user, the output as reply."""
    prompt = f"{instruction}\n\n{input_text}" if input_text else instruction
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]


def sft_examples(db: Any, run_id: str | None = None) -> Iterator[dict[str, Any]]:
    """SFT rows {"messages": [user, assistant], "id", "source": "self-instruct"} for export."""
    for row in instance_rows(db, run_id):
        yield {"messages": to_messages(row["instruction"], row["input"], row["output"]),
               "id": row["id"], "source": "self-instruct"}
