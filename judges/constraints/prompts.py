"""Prompts with verifiable constraints attached, for exact preference labels.

Each base prompt (an everyday task such as "Explain why bread goes stale.") gets one to K
constraints drawn at random but reproducibly: the random generator of a prompt is seeded
with the run seed and the prompt id, so the same seed gives the same constraints, and a
prompt's constraints do not depend on its position in the file or on ``--limit``. Kinds
that clash (``judges.constraints.compat``) are never combined. The constraint specs are recorded on
the row next to the final prompt text, which is the base prompt, a blank line and one
phrasing per constraint from ``judges/constraints/data/constraint_phrasings.yaml``, so responses to
it can later be checked by ``judges.constraints.verify`` without any model call.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

from datagen.errors import UserInputError
from datagen.jsonl import note_unique, read_objects, read_text
from judges.constraints.checkers import Spec
from judges.constraints.compat import compatible, kinds_compatible
from judges.constraints.kinds import KINDS, Constraint, parse_constraints

MAX_CONSTRAINTS = 8  # more than this reads like a puzzle, not a request
DRAWS_PER_SET = 40  # kind draws before a partial set is abandoned and started again
SETS_PER_PROMPT = 50
# Kinds that fit few everyday tasks (a yes/no answer to "Describe a market") are drawn less.
KIND_WEIGHTS = {"yes_no_answer": 0.25, "one_word_answer": 0.25, "repeat_request": 0.5}


class BasePrompt(BaseModel):
    """A task to attach constraints to. Example: ``BasePrompt(id="p1", prompt="Explain ...")``"""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    prompt: str = Field(min_length=1)


class ConstrainedPrompt(BaseModel):
    """A base prompt, its constraints and the rendered prompt text sent to a model.

    Example: ``ConstrainedPrompt(id="p1-3f2a", prompt_id="p1", base_prompt="Explain ...",
    prompt="Explain ...\\n\\nUse no more than 80 words.",
    constraints=[{"kind": "word_count", "max": 80}], seed=0)``
    """

    model_config = ConfigDict(extra="forbid")

    id: str
    prompt_id: str
    base_prompt: str
    prompt: str
    constraints: list[Constraint]
    seed: int

    @field_validator("constraints", mode="before")
    @classmethod
    def _from_json_text(cls, value: Any) -> Any:
        return json.loads(value) if isinstance(value, str) else value  # as stored in SQLite


def bundled_prompts_path() -> Path:
    """The bundled file of base prompts (judges/constraints/data/constrained_prompts.jsonl)."""
    return Path(str(resources.files("judges.constraints") / "data" / "constrained_prompts.jsonl"))


def load_phrasings(path: Path | None = None) -> dict[str, Any]:
    """The phrasings and parameter pools (judges/constraints/data/constraint_phrasings.yaml)."""
    default = resources.files("judges.constraints") / "data" / "constraint_phrasings.yaml"
    path = path or Path(str(default))
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_base_prompts(path: Path | None = None) -> list[BasePrompt]:
    """Read a JSONL file of ``{"prompt": ..., "id": ...}`` lines (id optional: a hash of the
    text is used); raises UserInputError naming the file and line of the first bad row."""
    path = path or bundled_prompts_path()
    prompts: list[BasePrompt] = []
    seen: dict[str, int] = {}
    for lineno, where, row in read_objects(
        path, read_text(path, cannot_read="cannot read prompts file"),
        empty_message=f"{path}: no prompts in file",
        not_object='expected a JSON object with a "prompt" field',
    ):
        prompt = _prompt_line(row, where)
        note_unique(seen, prompt.id, lineno, where, what="prompt id")
        prompts.append(prompt)
    return prompts


def _prompt_line(row: dict[str, Any], where: str) -> BasePrompt:
    text = row.get("prompt")
    if not isinstance(text, str) or not text.strip():
        raise UserInputError(f'{where}: missing or empty "prompt" (a non-empty string)')
    row_id = row.get("id")
    if row_id is None:
        row_id = "p-" + hashlib.sha1(text.encode()).hexdigest()[:12]
    elif isinstance(row_id, bool) or not isinstance(row_id, str | int) or not str(row_id):
        raise UserInputError(f'{where}: "id" must be a non-empty string or an integer')
    return BasePrompt(id=str(row_id), prompt=text.strip())


def add_constraints(
    prompts: Iterable[BasePrompt | Mapping[str, Any] | str],
    k_min: int = 1,
    k_max: int = 3,
    seed: int = 0,
) -> list[ConstrainedPrompt]:
    """Attach k_min..k_max mutually compatible constraints to each prompt (seeded: the same
    seed gives the same output) and render the final prompt text."""
    if not 1 <= k_min <= k_max <= MAX_CONSTRAINTS:
        raise ValueError(f"need 1 <= k_min <= k_max <= {MAX_CONSTRAINTS}, got {k_min}, {k_max}")
    data = load_phrasings()
    out = []
    for item in prompts:
        base = _as_base_prompt(item)
        rng = random.Random(f"{seed}:{base.id}")
        specs = sample_constraints(rng, rng.randint(k_min, k_max), base.prompt, data["pools"])
        text = render_prompt(base.prompt, specs, data["phrasings"], rng)
        dumped = [spec.model_dump(mode="json") for spec in specs]
        digest = hashlib.sha1(json.dumps([text, dumped], sort_keys=True).encode()).hexdigest()
        out.append(
            ConstrainedPrompt(
                id=f"{base.id}-{digest[:10]}",
                prompt_id=base.id,
                base_prompt=base.prompt,
                prompt=text,
                constraints=dumped,
                seed=seed,
            )
        )
    return out


def _as_base_prompt(item: BasePrompt | Mapping[str, Any] | str) -> BasePrompt:
    if isinstance(item, BasePrompt):
        return item
    if isinstance(item, str):
        return BasePrompt(id="p-" + hashlib.sha1(item.encode()).hexdigest()[:12], prompt=item)
    return BasePrompt.model_validate(item)


def sample_constraints(
    rng: random.Random, k: int, request: str, pools: Mapping[str, Any]
) -> list[Spec]:
    """Draw ``k`` constraints of different, mutually compatible kinds for one request."""
    for _ in range(SETS_PER_PROMPT):
        chosen: list[Spec] = []
        for _ in range(DRAWS_PER_SET):
            if len(chosen) == k:
                return chosen
            kinds = [
                kind for kind in KINDS if all(kinds_compatible(kind, spec.kind) for spec in chosen)
            ]
            if not kinds:
                break
            kind = rng.choices(kinds, weights=[KIND_WEIGHTS.get(kd, 1.0) for kd in kinds])[0]
            spec = parse_constraints([sample_params(kind, rng, request, pools)])[0]
            if all(compatible(spec, other) for other in chosen):
                chosen.append(spec)
        if len(chosen) == k:
            return chosen
    raise ValueError(f"could not draw {k} compatible constraints for {request[:60]!r}")


def sample_params(
    kind: str, rng: random.Random, request: str, pools: Mapping[str, Any]
) -> dict[str, Any]:
    """Random parameters for one constraint kind, as a spec dict."""
    if kind in ("word_count", "sentence_count"):
        return {"kind": kind, **_sample_bounds(kind, rng)}
    if kind in ("bullet_count", "numbered_list_count"):
        return {"kind": kind, "n": rng.randint(2, 6)}
    if kind == "paragraph_count":
        return {
            "kind": kind,
            "n": rng.randint(2, 5),
            "separator": rng.choice(["blank_line", "marker"]),
        }
    if kind in ("highlighted_sections", "placeholder_count"):
        return {"kind": kind, "n": rng.randint(2, 4)}
    if kind == "section_count":
        marker = rng.choice(pools["section_markers"])
        return {"kind": kind, "n": rng.randint(2, 5), "marker": marker}
    if kind == "postscript":
        return {"kind": kind, "marker": rng.choices(pools["postscript_markers"], [3, 1])[0]}
    if kind == "json_format":
        return {"kind": kind, "keys": rng.choice([[], *pools["json_keys"]])}
    if kind == "repeat_request":
        return {"kind": kind, "request": request}
    return _sample_wording_params(kind, rng, pools)


def _sample_bounds(kind: str, rng: random.Random) -> dict[str, int]:
    if kind == "word_count":
        ranges, lows, highs = (
            [(40, 80), (50, 100), (80, 150), (100, 200), (150, 250)],
            [30, 50, 80, 100, 150],
            [50, 80, 100, 150, 200],
        )
    else:
        ranges, lows, highs = [(2, 4), (3, 5), (4, 8), (5, 10)], [3, 5, 8], [3, 4, 5, 6, 8]
    variant = rng.choice(["range", "min", "max"])
    if variant == "range":
        low, high = rng.choice(ranges)
        return {"min": low, "max": high}
    return {"min": rng.choice(lows)} if variant == "min" else {"max": rng.choice(highs)}


def _sample_wording_params(kind: str, rng: random.Random, pools: Mapping[str, Any]) -> dict:
    if kind == "include_keywords":
        count = rng.choice([1, 1, 1, 2, 3])
        return {
            "kind": kind,
            "keywords": rng.sample(pools["keywords"], rng.randint(1, 3)),
            "min_count": count,
        }
    if kind == "keyword_frequency":
        relation = rng.choice(["at_least", "at_most", "exactly"])
        words = pools["keywords"] if relation != "at_most" else pools["forbidden_words"]
        return {
            "kind": kind,
            "keyword": rng.choice(words),
            "relation": relation,
            "n": rng.randint(2, 4) if relation == "at_least" else rng.randint(2, 3),
        }
    if kind == "forbidden_words":
        return {"kind": kind, "words": rng.sample(pools["forbidden_words"], rng.randint(1, 3))}
    if kind in ("starts_with", "ends_with"):
        return {"kind": kind, "phrase": rng.choice(pools[kind])}
    if kind == "letter_frequency":
        if rng.random() < 0.5:
            return {
                "kind": kind,
                "letter": rng.choice(pools["common_letters"]),
                "relation": "at_least",
                "n": rng.choice([5, 8, 10, 15, 20]),
            }
        return {
            "kind": kind,
            "letter": rng.choice(pools["rare_letters"]),
            "relation": "at_most",
            "n": rng.randint(2, 4),
        }
    return {"kind": kind}  # kinds without parameters


def render_prompt(
    base: str, specs: list[Spec], phrasings: Mapping[str, Any], rng: random.Random
) -> str:
    """The base prompt, a blank line, then one randomly chosen phrasing per constraint."""
    sentences = [
        rng.choice(phrasing_options(spec, phrasings)).format_map(spec.fields()) for spec in specs
    ]
    return base.rstrip() + "\n\n" + " ".join(sentences)


def phrasing_options(spec: Spec, phrasings: Mapping[str, Any]) -> list[str]:
    """The phrasings that can render ``spec`` (by kind, then by variant where it has one)."""
    options = phrasings[spec.kind]
    return options[spec.variant] if spec.variant is not None else options


def ifeval_row(row: ConstrainedPrompt) -> dict[str, Any]:
    """A constrained prompt in IFEval's form: ``key``, ``prompt``, ``instruction_id_list`` (the
    constraint kinds) and ``kwargs`` (each spec's parameters), as IFEval files spell them."""
    dumped = [spec.model_dump(mode="json") for spec in row.constraints]
    return {"key": row.id, "prompt": row.prompt,
            "instruction_id_list": [spec.pop("kind") for spec in dumped], "kwargs": dumped}
