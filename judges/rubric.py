"""Judge prompts as data: rubric files, and a pair rendered into the judge's chat messages.

The wording and sampling parameters of a judge live in a YAML rubric next to the code
(``judges/rubrics/pairwise.yaml``, ``pointwise.yaml``), read here with its sha256 kept for
provenance and its template checked to render. Judged text is quoted between the template's
tags as data, and any tag-like text inside it is defused, so a response cannot close its quote
and speak to the judge from outside it (the rubric tells the judge to ignore instructions
found there).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from datagen.errors import UserInputError

RUBRIC_DIR = Path(__file__).parent / "rubrics"
PAIRWISE_FIELDS = {"prompt": "", "first": "", "second": "", "ending": ""}


class PairwiseParams(BaseModel):
    """Sampling parameters of a pairwise judge request."""

    model_config = ConfigDict(extra="forbid")

    temperature: float = Field(default=0.0, ge=0)
    max_tokens: int = Field(default=1, ge=1, description="Tokens for the verdict reply")
    cot_max_tokens: int = Field(default=512, ge=1, description="Tokens for the CoT rationale")
    top_logprobs: int = Field(default=5, ge=2, le=20)
    missing_logprob: float | None = Field(
        default=None,
        description="Log-probability given to a verdict token absent from the top-k list. "
                    "Unset: the lowest log-probability in the returned list (the missing "
                    "token's cannot be higher), the least confident value the reply allows.")


class PairwiseRubric(BaseModel):
    """A pairwise judge as data.

    Example: ``load_rubric(default_rubric_path("pairwise"), PairwiseRubric, **PAIRWISE_FIELDS)``
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["pairwise"] = "pairwise"
    labels: tuple[str, str] = ("A", "B")
    system: str
    template: str = Field(description="Placeholders {prompt} {first} {second} {ending}")
    ending: str
    cot_request: str
    cot_ending: str
    reminder: str
    params: PairwiseParams = PairwiseParams()
    sha: str = Field(default="", description="Set on load: sha256 of the file, first 12 digits")


def load_rubric(path: str | Path, model: type[BaseModel], **placeholders: str) -> Any:
    """Read a rubric YAML file into ``model``; check its template renders with the placeholders."""
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = yaml.safe_load(raw)
    except (OSError, yaml.YAMLError) as exc:
        raise UserInputError(f"{path}: cannot read rubric: {exc}") from None
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: a rubric is a YAML mapping")
    try:
        rubric = model(**data, sha=hashlib.sha256(raw).hexdigest()[:12])
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UserInputError(f"{path}: {where}: {first['msg']}") from None
    try:
        rubric.template.format(**placeholders)
    except (KeyError, IndexError, ValueError) as exc:
        raise UserInputError(f"{path}: template: unknown or malformed placeholder {exc}") from None
    return rubric


def default_rubric_path(kind: str) -> Path:
    """The rubric shipped for a judge kind ("pairwise" or "pointwise")."""
    return RUBRIC_DIR / f"{kind}.yaml"


# --- quoting judged text as data --------------------------------------------------------------


def defuse(text: str, tags: Sequence[str]) -> str:
    """Escape every opening or closing form of the template's tags inside quoted text, so a
    response cannot close its quote and speak to the judge from outside it."""
    if not tags:
        return text
    pattern = re.compile(r"<(\s*/?\s*(?:" + "|".join(map(re.escape, tags)) + r")\b)", re.I)
    return pattern.sub(r"&lt;\1", text)


def template_tags(template: str) -> list[str]:
    """The tag names a template quotes data between (from its closing tags)."""
    return sorted(set(re.findall(r"</([A-Za-z_][\w-]*)>", template)))


def render_pair(
    rubric: PairwiseRubric, prompt: str, first: str, second: str, ending: str
) -> list[dict[str, str]]:
    """The judge's chat messages for one pair in one order."""
    tags = template_tags(rubric.template)
    user = rubric.template.format(
        prompt=defuse(prompt, tags), first=defuse(first, tags), second=defuse(second, tags),
        ending=ending)
    return [{"role": "system", "content": rubric.system}, {"role": "user", "content": user}]
