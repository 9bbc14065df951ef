"""Held-out constraint satisfaction (`rlaif eval constraints`): does training help on new prompts?

The demo pipeline ends by asking whether the trained policies satisfy the constraints of
prompts they never saw more often than the policy they started from. Every policy answers the
same constrained prompts with the same sampling settings and seeds (``sample_policy``: served by
`rlaif serve`, every request through the ledger, as `rlaif eval winrate` samples), each
answer is checked by the exact verifier (``judges.constraints.verify``), and the share of answers
meeting every constraint, overall and per constraint kind, is reported with a Wilson 95% interval
(``align.eval.intervals``); each policy after the first gets a paired bootstrap interval of its
difference from the first. The JSON also carries the flat ``<name>_satisfaction_rate`` keys
that `rlaif report` reads.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from align.eval.intervals import wilson
from align.eval.policies import Sampling, answer, parse_source, served
from datagen import store
from datagen.distributed.blocks import Mapper, map_local
from datagen.endpoint.client import ClientConfig
from datagen.errors import UserInputError
from datagen.responses.sample import PromptItem, read_prompts


def paired_bootstrap(base: list[float], other: list[float], rounds: int = 2000,
                     seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of mean(other) - mean(base), resampling the paired items."""
    rng = random.Random(seed)
    n = len(base)
    if n == 0:
        return 0.0, 0.0
    diffs = [o - b for b, o in zip(base, other, strict=True)]
    means = sorted(sum(diffs[rng.randrange(n)] for _ in range(n)) / n for _ in range(rounds))
    tail = (1 - level) / 2
    return means[int(tail * rounds)], means[min(rounds - 1, int((1 - tail) * rounds))]


def read_constrained(path: str | Path) -> list[Any]:
    """Constrained prompts (``prompt`` and ``constraints`` per line), each with constraints."""
    items = read_prompts(path)
    for item in items:
        if not item.constraints:
            raise UserInputError(f"{path}: prompt {item.id!r} has no constraints to check")
    return items


def sample_policy(model: str, prompts: list[Any], *, temperature: float, max_new_tokens: int,
                  seed: int, db: Any, samples: int = 1,
                  concurrency: int = 16) -> tuple[list[list[str]], int]:
    """``samples`` answers to each prompt (text or chat messages) from a local model ("default"
    or a directory), served by `rlaif serve` for the call, every request through the ledger in
    ``db`` (``align.eval.policies``). Sample k of every prompt is sent with seed ``seed + k``,
    so the same arguments give every policy the same sampling settings and seeds, and a rerun
    is answered from the ledger. Returns the answers per prompt and the number of requests
    that failed (their answers are empty; a rerun retries them)."""
    source = parse_source("model", model, None)
    items = [PromptItem(id=str(i), prompt=prompt) for i, prompt in enumerate(prompts)]
    with served([source]) as (endpoint,):
        config = ClientConfig(base_url=endpoint.base_url, model=endpoint.model,
                              concurrency=concurrency)
        runs = answer(config, db, items, [Sampling(temperature=temperature,
                                                   max_tokens=max_new_tokens, seed=seed + k)
                                          for k in range(samples)], progress="auto")
    failed = sum(r.status != "ok" for run in runs for r in run)
    texts = [[run[i].text if run[i].status == "ok" else "" for run in runs]
             for i in range(len(items))]
    return texts, failed


def verify_answers(answers: list[tuple[Any, str]]) -> list[tuple[tuple[bool, ...],
                                                                   tuple[str, ...]]]:
    """(passed, kinds) of each (constraints, answer text), by the exact verifier."""
    from judges.constraints.verify import verify_response

    results = [verify_response(constraints, text) for constraints, text in answers]
    return [(result.passed, result.kinds) for result in results]


def satisfaction(items: list[Any], texts: list[str], mapper: Mapper = map_local
                 ) -> dict[str, Any]:
    """How many answers satisfy all their constraints, and each constraint kind's pass rate
    (the checks run through ``mapper``: in this process, or in blocks on a Ray cluster)."""
    checked = mapper(verify_answers, [(item.constraints, text)
                                      for item, text in zip(items, texts, strict=True)])
    per_item: list[int] = []
    kinds: dict[str, list[int]] = {}
    for passed, found_kinds in checked:
        per_item.append(int(all(passed)))
        for kind, ok in zip(found_kinds, passed, strict=True):
            kinds.setdefault(kind, []).append(int(ok))
    checks = [p for values in kinds.values() for p in values]
    return {
        **rate(sum(per_item), len(per_item)),
        "constraints": rate(sum(checks), len(checks)),
        "by_kind": {kind: rate(sum(v), len(v)) for kind, v in sorted(kinds.items())},
        "per_item": per_item,
    }


def rate(k: int, n: int) -> dict[str, Any]:
    low, high = wilson(k, n) or (0.0, 1.0)  # 0..1 when nothing was checked
    return {"passed": k, "n": n, "rate": k / n if n else 0.0, "ci95": [low, high]}


def constraint_eval(models: list[str], prompts_path: str | Path, *, db: str | Path,
                    temperature: float = 0.7, max_new_tokens: int = 128, samples: int = 1,
                    seed: int = 0, batch_size: int = 16, mapper: Mapper = map_local
                    ) -> dict[str, Any]:
    """Held-out constraint satisfaction of each policy on the same constrained prompts and
    sampling settings (``sample_policy``, ``batch_size`` requests in flight); the first model
    is the baseline the others are compared with (paired bootstrap interval of the difference
    in the all-satisfied rate); the answers are checked through ``mapper``. Failed requests
    count as unsatisfied answers and, when there are any, their number is the report's
    ``failed_requests``."""
    if len(set(models)) != len(models):
        raise UserInputError("--model: each policy once (the first is the baseline)")
    for model in models:
        parse_source("model", model, None)  # every --model checked before any is served
    base_items = read_constrained(prompts_path)
    items = base_items * samples  # sample-major: every prompt once, then again
    database = store.open_db(db)
    results: dict[str, Any] = {}
    failed = 0
    for model in models:
        texts, model_failed = sample_policy(
            model, [item.prompt for item in base_items], temperature=temperature,
            max_new_tokens=max_new_tokens, seed=seed, db=database, samples=samples,
            concurrency=batch_size)
        failed += model_failed
        results[model] = satisfaction(items, [texts[i][k] for k in range(samples)
                                              for i in range(len(base_items))], mapper)
    base = results[models[0]]["per_item"]
    for model in models[1:]:
        mine = results[model]["per_item"]
        results[model]["vs_baseline"] = {
            "baseline": models[0],
            "diff": (sum(mine) - sum(base)) / len(base),
            "ci95": list(paired_bootstrap([float(x) for x in base], [float(x) for x in mine],
                                          seed=seed)),
        }
    flat = {}  # top-level rates in the shape `rlaif report` reads (``<name>_rate``, ``_ci``)
    names = [short(m) for m in models]
    for number, (model, name) in enumerate(zip(models, names, strict=True)):
        key = name if names.count(name) == 1 else f"{name}{number + 1}"
        flat[f"{key}_satisfaction_rate"] = results[model]["rate"]
        flat[f"{key}_satisfaction_rate_ci"] = results[model]["ci95"]
    report = {"prompts": str(prompts_path), "n": len(items), "items": len(items),
              "samples": samples, "temperature": temperature, "max_new_tokens": max_new_tokens,
              "seed": seed, **flat, "models": results}
    return report | ({"failed_requests": failed} if failed else {})


def format_eval(report: dict[str, Any]) -> list[str]:
    """The evaluation as a few aligned lines: overall rates, then per constraint kind."""
    def pct(r: dict[str, Any]) -> str:
        low, high = r["ci95"]
        return f"{r['passed']:>3}/{r['n']:<3} {100 * r['rate']:5.1f}% [{100 * low:4.1f}, " \
               f"{100 * high:5.1f}]"

    lines = [f"held-out constraint satisfaction: {report['items']} answers per model "
             f"({report['prompts']}), temperature {report['temperature']}, "
             f"{report['max_new_tokens']} new tokens, seed {report['seed']}; 95% intervals",
             f"{'model':<28} {'all satisfied':<28} {'constraints passed':<28} vs baseline"]
    for model, r in report["models"].items():
        vs = r.get("vs_baseline")
        diff = (f"{100 * vs['diff']:+5.1f} pts [{100 * vs['ci95'][0]:+.1f}, "
                f"{100 * vs['ci95'][1]:+.1f}]") if vs else "(baseline)"
        lines.append(f"{short(model):<28} {pct(r):<28} {pct(r['constraints']):<28} {diff}")
    kinds = sorted({k for r in report["models"].values() for k in r["by_kind"]})
    if kinds:
        lines.append("by constraint kind (passed/checked, rate [95% CI]):")
        for kind in kinds:
            cells = [pct(r["by_kind"][kind]) if kind in r["by_kind"] else "-"
                     for r in report["models"].values()]
            lines.append(f"  {kind:<26} " + "  ".join(f"{c:<28}" for c in cells))
    return lines


def short(model: str) -> str:
    return model if model == "default" else Path(model).name or model
