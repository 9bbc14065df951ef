"""FLAN-style conversion: labelled datasets rendered through instruction templates into chat
examples (Wei et al. 2021, https://arxiv.org/abs/2109.01652; Longpre et al. 2023, "The Flan
Collection", https://arxiv.org/abs/2301.13688).

Each row of a source dataset is rendered with one of its task family's templates (assigned
round-robin), zero-shot or with k exemplars from other rows of the same dataset. Answer
choices are shown as an ``OPTIONS:`` list, in a seeded random style, or not at all; when the
random style names the choices (A/B/C, 1/2/3, i/ii/iii) the target becomes that name. Several
inputs are mixed examples-proportionally with a per-task cap (see ``flan_mix``). Everything is
streamed, so memory stays flat however large the dataset, and the same arguments and seed
always give the same bytes. ``paraphrase_templates`` asks a model for new phrasings of a
template file, keeping its placeholders, to be reviewed before use.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections.abc import Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any, Literal, NamedTuple

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from datagen import store
from datagen.distributed.blocks import Mapper, map_local
from datagen.endpoint.client import LLMClient
from datagen.flan.io import BadRows, Row, checked_rows, count_rows, row_spec
from datagen.flan.mix import interleave, template_order, with_exemplars
from datagen.flan.template_files import (
    TEMPLATE_DIR,
    FewShotFormat,
    OptionStyles,
    TaskTemplates,
    Template,
    load_option_styles,
    placeholders,
    template_problems,
)
from datagen.store.tables import FLAN_EXAMPLES

PARAPHRASE_PROMPT_FILE = TEMPLATE_DIR / "_paraphrase.yaml"
OptionsStyle = Literal["plain", "random", "none"]
RENDER_CHUNK = 8192  # plans rendered at a time (bounds memory; many blocks for a cluster)


class Message(BaseModel):
    role: Literal["user", "assistant"]
    content: str


class ExampleSource(BaseModel):
    file: str = Field(description="The input path as given")
    row: int = Field(ge=0, description="0-based row index in that file")


class FlanExample(BaseModel):
    """One rendered example, as written to JSONL and saved in the ``flan_examples`` table."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Message]
    task: str
    template_id: str
    source: ExampleSource
    shots: int = Field(ge=0)
    answer: str = Field(description="Gold answer text (the option text, even if the target "
                                    "is its letter)")
    id: str = Field(description="Content hash of everything above")


class TaskInput(NamedTuple):
    """One input of a run: a dataset file, its task's templates and its column renames."""

    path: Path
    spec: TaskTemplates
    field_map: dict[str, str]
    label_map: dict[str, str] | None = None


class OptionStyle(NamedTuple):
    """How a list of choices is shown: a header, an item prefix and an item ending."""

    start: str
    item: str
    end: str


class _Prepared(NamedTuple):
    id: str
    input: str
    target: str
    shows_options: bool


# --- rendering --------------------------------------------------------------------------------

_ROMAN = (("x", 10), ("ix", 9), ("v", 5), ("iv", 4), ("i", 1))


def _roman(number: int) -> str:
    out = ""
    for numeral, value in _ROMAN:
        while number >= value:
            out += numeral
            number -= value
    return out


def _item_name(kind: str, index: int) -> str:
    return {
        "letter": chr(ord("a") + index), "LETTER": chr(ord("A") + index),
        "number": str(index + 1), "roman": _roman(index + 1), "ROMAN": _roman(index + 1).upper(),
    }[kind]


def render_options(options: Sequence[str], style: OptionStyle) -> tuple[str, list[str] | None]:
    """The options block and, when items are named (A/1/i...), each option's name as it
    becomes the target; ``None`` for unnamed bullets (the target stays the option text)."""
    names = placeholders(style.item)
    if names:
        prefixes = [style.item.format(**{names[0]: _item_name(names[0], i)})
                    for i in range(len(options))]
        labels: list[str] | None = [p.strip().rstrip(":").strip() for p in prefixes]
    else:
        prefixes, labels = [style.item] * len(options), None
    lines = [prefix + option + style.end for prefix, option in zip(prefixes, options, strict=True)]
    return style.start + "\n".join(lines), labels


def strip_options(text: str) -> str:
    """A template input with ``{options}`` removed, with the blank space before it (NoOpt)."""
    return re.sub(r"\s*\{options\}[ \t]*", "", text).lstrip("\n")


def prepare_templates(spec: TaskTemplates, options_style: OptionsStyle) -> list[_Prepared]:
    """The file's templates as rendered: ``{options}`` dropped for the ``none`` style."""
    out = []
    for t in spec.templates:
        shows = spec.has_options and "options" in placeholders(t.input)
        text = strip_options(t.input) if options_style == "none" and shows else t.input
        out.append(_Prepared(t.id, text, t.target, shows and options_style != "none"))
    return out


def render_pair(template: _Prepared, row: Row, options: tuple[str, list[str] | None] | None,
                cot_target: str | None) -> tuple[str, str]:
    """(input, target) of one row; ``options`` is the rendered block when it is shown."""
    values = dict(row.values)
    answer = row.answer
    if options is not None and template.shows_options:
        values["options"], labels = options
        if labels is not None:
            answer = labels[row.answer_index]
    values["answer"] = answer
    target = template.target
    if cot_target is not None and row.rationale is not None:
        values["rationale"] = row.rationale
        target = cot_target
    return template.input.format_map(values), target.format_map(values)


def compose_shots(fmt: FewShotFormat, exemplars: Sequence[tuple[str, str]], query: str) -> str:
    """k-shot prompt: each exemplar as prefix + x + delimiter + prefix + y + separator, then
    the query (followed by the target prefix when there is one)."""
    parts = [fmt.inputs_prefix + x + fmt.x_y_delimiter + fmt.targets_prefix + y
             + fmt.example_separator for x, y in exemplars]
    final = fmt.inputs_prefix + query
    if fmt.targets_prefix:
        final += fmt.x_y_delimiter + fmt.targets_prefix.rstrip()
    return "".join(parts) + final


def example_id(task: str, template_id: str, file: str, row: int, shots: int, user: str,
               target: str) -> str:
    """Content hash of an example: everything that is written with it."""
    text = f"{task}\x1f{template_id}\x1f{file}\x1f{row}\x1f{shots}\x1f{user}\x1f{target}"
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


# --- conversion -------------------------------------------------------------------------------


class _Look(NamedTuple):
    """What every example of one input is rendered with (shared by its plans)."""

    task: str
    few_shot: FewShotFormat
    templates: list[_Prepared]
    cot_target: str | None
    file: str
    shots: int


class _Plan(NamedTuple):
    """One example decided but not yet rendered: every seeded choice is made."""

    look: _Look
    template: int
    row: Row
    exemplars: list[Row]
    style: OptionStyle


def task_plans(
    source: TaskInput, index: int, *, shots: int, options_style: OptionsStyle, cot: bool,
    seed: int, styles: OptionStyles, on_bad_row: str, bad: BadRows,
) -> Iterator[_Plan]:
    """The examples of one input as plans, in file order (setup errors are raised before the
    first one). Every seeded choice happens here, in order, so rendering the plans anywhere
    (in blocks, on other machines) gives the same bytes."""
    spec = source.spec
    columns = row_spec(spec, source.field_map, cot, source.label_map)
    templates = prepare_templates(spec, options_style)
    rng = random.Random(f"flan:{seed}:{index}")
    rows = checked_rows(source.path, columns, on_bad_row, bad)
    pairs = (with_exemplars(rows, shots, rng, str(source.path)) if shots
             else ((row, []) for row in rows))
    plain = OptionStyle(styles.plain_start, styles.plain_item, "")
    look = _Look(spec.task, spec.few_shot, templates, spec.cot_target if cot else None,
                 str(source.path), shots)
    order = template_order(len(templates), rng)

    def generate() -> Iterator[_Plan]:
        for row, exemplars in pairs:
            number = next(order)
            style = plain
            if options_style == "random" and templates[number].shows_options and row.options:
                style = OptionStyle(rng.choice(styles.starts), rng.choice(styles.items),
                                    rng.choice(styles.endings))
            yield _Plan(look, number, row, exemplars, style)

    return generate()


def render_plans(plans: list[_Plan]) -> list[FlanExample]:
    """The examples of a block of plans (a pure function: the same plans, the same bytes)."""
    shown: dict[tuple[tuple[str, ...], OptionStyle], tuple[str, list[str] | None]] = {}

    def options_for(row: Row, style: OptionStyle) -> tuple[str, list[str] | None] | None:
        if not row.options:
            return None
        if (row.options, style) not in shown:
            shown[row.options, style] = render_options(row.options, style)
        return shown[row.options, style]

    examples = []
    for look, number, row, exemplars, style in plans:
        template = look.templates[number]
        x, y = render_pair(template, row, options_for(row, style), look.cot_target)
        if exemplars:
            pairs = [render_pair(template, ex, options_for(ex, style), look.cot_target)
                     for ex in exemplars]
            x = compose_shots(look.few_shot, pairs, x)
        examples.append(FlanExample(
            messages=[{"role": "user", "content": x}, {"role": "assistant", "content": y}],
            task=look.task, template_id=template.id,
            source={"file": look.file, "row": row.index}, shots=look.shots, answer=row.answer,
            id=example_id(look.task, template.id, look.file, row.index, look.shots, x, y),
        ))
    return examples


def convert(
    inputs: Sequence[TaskInput], *, shots: int = 0, options_style: OptionsStyle = "plain",
    cot: bool = False, seed: int = 0, limit: int | None = None, max_per_task: int | None = None,
    on_bad_row: str = "fail", bad: BadRows | None = None, mapper: Mapper = map_local,
) -> Iterator[FlanExample]:
    """Render every input and mix them (examples-proportional, ``max_per_task`` cap each);
    at most ``limit`` examples in all. Bad rows raise UserInputError or go into ``bad``. The
    plans are rendered ``RENDER_CHUNK`` at a time through ``mapper`` (in this process, or in
    blocks on a Ray cluster), so memory stays flat and the output is the same either way."""
    styles = load_option_styles()
    bad = bad if bad is not None else BadRows()
    streams = [
        task_plans(source, i, shots=shots, options_style=options_style, cot=cot, seed=seed,
                   styles=styles, on_bad_row=on_bad_row, bad=bad)
        for i, source in enumerate(inputs)
    ]
    if len(streams) == 1:
        caps = [cap for cap in (limit, max_per_task) if cap is not None]
        plans = islice(streams[0], min(caps) if caps else None)
    else:
        quotas = [count_rows(source.path,
                             row_spec(source.spec, source.field_map, cot, source.label_map))
                  for source in inputs]
        if max_per_task is not None:
            quotas = [min(q, max_per_task) for q in quotas]
        plans = islice(interleave(streams, quotas, random.Random(f"flan-mix:{seed}")), limit)
    return _rendered(plans, mapper)


def _rendered(plans: Iterator[_Plan], mapper: Mapper) -> Iterator[FlanExample]:
    while chunk := list(islice(plans, RENDER_CHUNK)):
        yield from mapper(render_plans, chunk)


# --- the project database -----------------------------------------------------------------------


def run_id(args: dict[str, Any]) -> str:
    """A run's id: a hash of its arguments (the same command reruns under the same id)."""
    text = json.dumps(args, sort_keys=True, default=str)
    return "flan-" + hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def save_run(db: Any, jsonl_path: str | Path, args: dict[str, Any], seed: int,
             summary: dict[str, Any], batch_size: int = 2000) -> int:
    """Save the examples of a finished JSONL file and record the run, in one transaction.
    Returns the number of new rows (existing ids are left as they are)."""
    rid = run_id(args)
    written = 0
    with store.transaction(db), open(jsonl_path, encoding="utf-8") as handle:
        store.start_run(db, rid, "flan", args, seed)
        while batch := [{**json.loads(line), "run_id": rid} for line in islice(handle, batch_size)]:
            written += store.save_rows(db, FLAN_EXAMPLES, batch, pk="id")
        store.finish_run(db, rid, "ok", {**summary, "saved": written})
    return written


def sft_examples(db: Any) -> Iterator[dict[str, Any]]:
    """SFT rows from the project DB: ``{"messages", "id", "source": "flan", "task"}``."""
    for row in store.load_rows(db, FLAN_EXAMPLES):
        yield {"messages": json.loads(row["messages"]), "id": row["id"], "source": "flan",
               "task": row["task"]}


# --- template paraphrases -------------------------------------------------------------------------


class ParaphrasePrompt(BaseModel):
    """The prompt file asking a model for new phrasings of one template."""

    model_config = ConfigDict(extra="forbid")

    system: str
    user: str
    reask: str
    temperature: float = Field(ge=0, le=2)
    max_tokens: int = Field(gt=0)


def load_paraphrase_prompt(path: Path = PARAPHRASE_PROMPT_FILE) -> ParaphrasePrompt:
    """Read the paraphrase prompt file."""
    return ParaphrasePrompt.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))


def paraphrase_messages(prompt: ParaphrasePrompt, spec: TaskTemplates, template: Template,
                        n: int) -> list[dict[str, str]]:
    """The chat asking for ``n`` phrasings of ``template``."""
    names = sorted(set(placeholders(template.input)) | set(placeholders(template.target)))
    user = prompt.user.format(
        task=spec.task, description=spec.description or spec.task, n=n,
        input=template.input, target=template.target,
        placeholders=", ".join("{" + name + "}" for name in names),
    )
    return [{"role": "system", "content": prompt.system}, {"role": "user", "content": user}]


def parse_phrasings(text: str, spec: TaskTemplates, original: Template, start: int,
                    ) -> tuple[list[Template], list[str]]:
    """Templates from a reply (JSON ``{"templates": [{"input", "target"}]}``), keeping only
    those with exactly the original's placeholders; and what was wrong with the others."""
    body = re.sub(r"^\s*```(?:json)?\s*|\s*```\s*$", "", text)
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    items = data.get("templates") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return [], ['the reply was not JSON of the form {"templates": [{"input": ..., '
                    '"target": ...}]}']
    kept, problems = [], []
    want = (set(placeholders(original.input)), set(placeholders(original.target)))
    for item in items:
        try:
            candidate = Template(id=f"{original.id}-p{start + len(kept)}", **item)
            problem = template_problems(spec.model_copy(update={"templates": [candidate]}))
            got = (set(placeholders(candidate.input)), set(placeholders(candidate.target)))
        except (ValidationError, TypeError, ValueError) as exc:
            problems.append(f"an item is not a template ({str(exc).splitlines()[0]})")
            continue
        if problem:
            problems.append(problem[0][1])
        elif got != want:
            problems.append(f"placeholders {sorted(got[0])} / {sorted(got[1])} differ from "
                            f"{sorted(want[0])} / {sorted(want[1])}")
        else:
            kept.append(candidate)
    return kept, problems


async def paraphrase_template(client: LLMClient, prompt: ParaphrasePrompt, spec: TaskTemplates,
                              template: Template, n: int) -> tuple[list[Template], list[str]]:
    """Up to ``n`` checked phrasings of one template: one request, and one re-ask with the
    problems when fewer than ``n`` were usable. Returns them and the problems left."""
    messages = paraphrase_messages(prompt, spec, template, n)
    params = {"temperature": prompt.temperature, "max_tokens": prompt.max_tokens}
    reply = await client.chat(messages, **params)
    if not reply.ok:
        return [], [f"template {template.id}: request failed ({reply.error})"]
    kept, problems = parse_phrasings(reply.text, spec, template, 1)
    if len(kept) < n:
        reask = prompt.reask.format(problems="; ".join(problems) or "too few templates",
                                    n=n - len(kept))
        messages = [*messages, {"role": "assistant", "content": reply.text},
                    {"role": "user", "content": reask}]
        again = await client.chat(messages, **params)
        more, problems = (parse_phrasings(again.text, spec, template, len(kept) + 1)
                          if again.ok else ([], [f"request failed ({again.error})"]))
        kept += more
    missing = n - len(kept)
    notes = [f"template {template.id}: {missing} of {n} phrasings unusable ({'; '.join(problems)})"
             ] if missing > 0 else []
    return kept[:n], notes


async def paraphrase_templates(client: LLMClient, spec: TaskTemplates, n: int,
                               prompt: ParaphrasePrompt | None = None,
                               ) -> tuple[list[Template], list[str]]:
    """``n`` checked phrasings of each of ``spec``'s templates (ids ``<id>-p<k>``), and notes
    on the templates that got fewer."""
    prompt = prompt or load_paraphrase_prompt()
    results = await asyncio.gather(
        *(paraphrase_template(client, prompt, spec, t, n) for t in spec.templates))
    return ([t for kept, _ in results for t in kept],
            [note for _, notes in results for note in notes])


def dump_templates(spec: TaskTemplates) -> str:
    """A template file's YAML text (defaults left out)."""
    data = spec.model_dump(exclude_defaults=True)
    data["templates"] = [t.model_dump() for t in spec.templates]
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
