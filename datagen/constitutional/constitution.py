"""Constitution and prompts files for Constitutional AI critique and revision (SL-CAI).

A constitution is data: principles (a critique request and a revision request each) and
few-shot conversations, read either in our YAML/JSON layout or unchanged in the public recipe's
JSON layout (``constitutions`` + ``system_chat``), and a prompts file is JSONL of single- or
multi-turn red-team prompts. Both are validated with pydantic before anything is sent, and every
problem is a one-line ``FILE:LINE: key.path: problem``. The loop that uses them is
``datagen.constitutional.loop``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from datagen.endpoint.keys import canonical_json
from datagen.errors import UserInputError
from datagen.jsonl import note_unique, read_objects, read_utf8

PACKAGE_DIR = Path(__file__).parent
DEFAULT_CONSTITUTION = PACKAGE_DIR / "constitutions" / "default.yaml"
DEFAULT_PROMPTS = PACKAGE_DIR / "prompts" / "red_team_prompts.jsonl"


# --- constitution files ----------------------------------------------------------------------


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str


class Principle(BaseModel):
    """A critique request and the matching revision request, sent as user turns."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1)
    critique_request: str = Field(min_length=1)
    revision_request: str = Field(min_length=1)


class Example(BaseModel):
    """A few-shot conversation worked through one principle's requests."""

    model_config = ConfigDict(extra="forbid")

    principle: str = Field(min_length=1, description="id of the principle whose requests it uses")
    prompt: str = Field(min_length=1)
    answer: str = Field(min_length=1)
    critique: str = Field(min_length=1)
    revision: str = Field(min_length=1)


class ConstitutionFile(BaseModel):
    """Our layout (YAML or JSON). Example: ``{"principles": [{"id": "honesty",
    "critique_request": "...", "revision_request": "..."}], "examples": []}``"""

    model_config = ConfigDict(extra="forbid")

    name: str | None = None
    description: str | None = None
    principles: list[Principle] = Field(min_length=1)
    examples: list[Example] = Field(default_factory=list)


class HFCritique(BaseModel):
    model_config = ConfigDict(extra="forbid")

    critic: str = Field(min_length=1)
    revision: str = Field(min_length=1)


class HFConstitutionFile(BaseModel):
    """The public recipe's JSON layout: ``{"constitutions": [{"critic", "revision"}],
    "system_chat": [[messages]]}``; principle ids become ``critic-00``, ``critic-01``, ..."""

    model_config = ConfigDict(extra="forbid")

    constitutions: list[HFCritique] = Field(min_length=1)
    system_chat: list[list[Message]] = Field(default_factory=list)


class Constitution(BaseModel):
    """A loaded constitution: principles and the few-shot messages placed before every prompt."""

    name: str
    layout: Literal["rlaif", "hf"]
    principles: list[Principle]
    few_shot: list[Message]

    @property
    def content_hash(self) -> str:
        body = {"principles": [p.model_dump() for p in self.principles],
                "few_shot": [m.model_dump() for m in self.few_shot]}
        return hashlib.sha256(canonical_json(body).encode()).hexdigest()[:16]


def load_constitution(path: str | Path) -> Constitution:
    """Read and validate a constitution file in our layout or the public recipe's JSON layout.

    Raises UserInputError ``FILE:LINE: key.path: problem`` for anything wrong."""
    path = Path(path)
    text = read_utf8(path, expected="a file")
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise UserInputError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except yaml.YAMLError as exc:
        if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
            raise UserInputError(f"{path}:{exc.problem_mark.line + 1}: not valid YAML "
                                 f"({exc.problem})") from None
        raise UserInputError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: expected a mapping with 'principles' "
                             "(or 'constitutions' in the public recipe's JSON layout)")
    if "constitutions" in data:
        hf = _validate(HFConstitutionFile, data, path, text)
        return Constitution(
            name=path.stem, layout="hf",
            principles=[Principle(id=f"critic-{i:02d}", critique_request=c.critic,
                                  revision_request=c.revision)
                        for i, c in enumerate(hf.constitutions)],
            few_shot=[m for conversation in hf.system_chat for m in conversation],
        )
    parsed = _validate(ConstitutionFile, data, path, text)
    by_id: dict[str, Principle] = {}
    for i, principle in enumerate(parsed.principles):
        if principle.id in by_id:
            raise _located(path, text, ("principles", i, "id"),
                           f"duplicate principle id {principle.id!r}")
        by_id[principle.id] = principle
    few_shot: list[Message] = []
    for i, example in enumerate(parsed.examples):
        if example.principle not in by_id:
            raise _located(path, text, ("examples", i, "principle"),
                           f"unknown principle id {example.principle!r}")
        few_shot += example_messages(example, by_id[example.principle])
    return Constitution(name=parsed.name or path.stem, layout="rlaif",
                        principles=parsed.principles, few_shot=few_shot)


def example_messages(example: Example, principle: Principle) -> list[Message]:
    """The six messages of a few-shot example, in conversation order."""
    turns = [example.prompt, example.answer, principle.critique_request, example.critique,
             principle.revision_request, example.revision]
    return [Message(role="user" if i % 2 == 0 else "assistant", content=text)
            for i, text in enumerate(turns)]


def _validate(model: type[BaseModel], data: Any, path: Path, text: str, line: int | None = None):
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        problem = {"missing": "missing required key", "extra_forbidden": "unknown key"}.get(
            error["type"], error["msg"])
        raise _located(path, text, error["loc"], problem, line) from None


def _located(path: Path, text: str, loc: tuple, problem: str,
             line: int | None = None) -> UserInputError:
    key_path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
    line = line or _line_of(text, loc)
    where = f"{path}:{line}" if line else str(path)
    return UserInputError(f"{where}: {key_path or '(top level)'}: {problem}")


def _line_of(text: str, loc: tuple) -> int | None:
    """1-based line of the deepest node on a key path (JSON parses as YAML for this)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    if node is None:
        return None
    line = node.start_mark.line
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            pair = next(((k, v) for k, v in node.value if k.value == part), None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and \
                part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line
        else:
            break
    return line + 1


# --- prompts -----------------------------------------------------------------------------------


class PromptLine(BaseModel):
    """One line of a prompts file: ``{"id", "category", "prompt": str | [messages]}``."""

    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, min_length=1)
    category: str | None = None
    prompt: list[Message]

    @field_validator("prompt", mode="before")
    @classmethod
    def _single_turn(cls, value: Any) -> Any:
        return [{"role": "user", "content": value}] if isinstance(value, str) else value

    @field_validator("prompt")
    @classmethod
    def _shape(cls, messages: list[Message]) -> list[Message]:
        if not messages or messages[-1].role != "user":
            raise ValueError("must be a non-empty string or a list of messages ending with 'user'")
        if any(not m.content.strip() for m in messages):
            raise ValueError("messages must not be empty")
        if any(m.role == "system" for m in messages[1:]):
            raise ValueError("a system message may only come first")
        return messages


class Prompt(BaseModel):
    """A validated prompt; ``id`` defaults to a hash of the messages."""

    id: str
    category: str | None = None
    messages: list[Message]


def load_prompts(path: str | Path, limit: int | None = None) -> list[Prompt]:
    """Read a JSONL prompts file (first ``limit`` prompts); UserInputError names FILE:LINE."""
    path = Path(path)
    prompts: list[Prompt] = []
    seen: dict[str, int] = {}
    for line_no, where, obj in read_objects(
        path, read_utf8(path, expected="a file"),
        empty_message=f"{path}: no prompts, expected one JSON object per line",
    ):
        # The line number is given, so _validate needs no text to locate the key.
        line = _validate(PromptLine, obj, path, "", line=line_no)
        prompt_id = line.id or "p-" + hashlib.sha256(
            canonical_json([m.model_dump() for m in line.prompt]).encode()).hexdigest()[:12]
        note_unique(seen, prompt_id, line_no, where, what="prompt id")
        prompts.append(Prompt(id=prompt_id, category=line.category, messages=line.prompt))
        if limit is not None and len(prompts) >= limit:
            break
    return prompts
