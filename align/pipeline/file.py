"""Pipeline files: a YAML file of `rlaif` commands, read and checked into a runnable ``Plan``.

A pipeline names its stages exactly as the command line does, so anything a person can type
can be put in a file, and nothing else can; and since a stage may run for an hour, every
mistake must surface before the first one starts. ``load_plan`` reads the file, applies
variables and profiles (``align.pipeline.source``), resolves output, database and seed, and
has each stage checked against its click command (``align.pipeline.stages``): a mistake is
one ``FILE:LINE: stages[3].options.key: what is wrong`` message and exit status 2. Each stage
gets a key, a hash of the stage and every stage before it, so that the runner
(``align.pipeline.run``) keeps finished work when only a later stage is edited. The file format is
described below the imports.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from align.pipeline.source import Source, substitute, user_vars
from align.pipeline.stages import Confinement, Stage, StageBuilder
from datagen.errors import UserInputError

# The file format::
#
#     name: tiny                  # optional, for messages
#     output: runs/tiny           # folder for everything (default: ./<file stem>); relative
#                                 # stage paths resolve inside it, and stages run in it
#     db: rlaif.db                # project database, relative to output (default rlaif.db)
#     seed: 0                     # given as --seed to every stage that has one and sets none
#     executor: ray               # given as --executor to every stage that has one and sets
#     ray_address: auto           # no executor (with --ray-address): its requests or CPU work on
#                                 # a Ray cluster; stages without the option run as usual
#     vars: {n: 8}                # ${n} in any value; a value that is exactly "${n}" keeps its
#                                 # type; $${X} is a literal ${X} (an --endpoint-per-node template)
#     profiles: {quick: {n: 2}}   # named sets of vars (`rlaif run --profile quick`)
#     stages:
#       - stage: generate constrained       # a command path of `rlaif`
#         options: {limit: "${n}", output: prompts.jsonl}
#       - stage: judge-report
#         name: report                      # optional, for --from
#         options: {reference: verify}
#         args: [labels.jsonl]              # positional arguments
#
# Option keys are the long option names with or without the leading dashes (``max-tokens``,
# ``--max-tokens``, ``max_tokens`` or ``-o``); true/false switch a flag on or off, a list repeats
# an option, null leaves it out. ``--db`` is added to every stage that always uses a database;
# write ``db: ${db}`` where a database is optional (``generate flan``). Built-in variables:
# ``${output}``, ``${db}``, ``${seed}`` and ``${pipeline_dir}`` (the folder of the file, for data
# shipped next to it). Every input path must exist or be written by an earlier stage.

TOP_KEYS = ("name", "output", "db", "seed", "executor", "ray_address", "vars", "profiles",
            "stages")
EXECUTORS = ("local", "ray")


@dataclass
class Plan:
    """A checked pipeline: where things go and the stages in order."""

    file: Path
    name: str
    output: Path
    db: Path
    seed: int | None
    stages: list[Stage]
    digest: str

    def find(self, spec: str) -> int:
        """Index of the stage named by ``spec``: its 1-based number, its name or its command."""
        if spec.isdigit():
            number = int(spec)
            if not 1 <= number <= len(self.stages):
                raise UserInputError(f"--from {spec}: the pipeline has {len(self.stages)} stages")
            return number - 1
        for matcher in (lambda s: s.name == spec, lambda s: s.label == spec):
            hits = [s.index for s in self.stages if matcher(s)]
            if len(hits) == 1:
                return hits[0]
            if hits:
                numbers = ", ".join(str(i + 1) for i in hits)
                raise UserInputError(f"--from {spec}: ambiguous (stages {numbers}); give the "
                                     "number or name the stages")
        names = ", ".join(f"{s.index + 1} {s.name}" for s in self.stages)
        raise UserInputError(f"--from {spec}: no such stage (stages: {names})")


def load_plan(path: str | Path, *, output: str | Path | None = None, profile: str | None = None,
              overrides: dict[str, Any] | None = None, confine: Confinement | None = None
              ) -> Plan:
    """Read, resolve and check a pipeline file; any mistake raises a one-line UserInputError.
    With ``confine`` (a service job), stages and paths are held to its limits."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserInputError(f"{path}: cannot read pipeline: {exc}") from None
    src = Source(path, text)
    doc = src.data
    if not isinstance(doc, dict):
        raise src.error((), "expected a mapping with stages:")
    for key in doc:
        if key not in TOP_KEYS:
            raise src.error((key,), f"unknown key (expected {', '.join(TOP_KEYS)})")
    variables = user_vars(src, doc, profile, overrides or {})
    variables["pipeline_dir"] = str(path.resolve().parent)
    out_dir = Path(output) if output is not None else Path(
        substitute(src, ("output",), doc.get("output") or path.stem, variables))
    out_dir = out_dir.expanduser().resolve()
    variables["output"] = str(out_dir)
    db = out_dir / Path(substitute(src, ("db",), doc.get("db") or "rlaif.db", variables))
    variables["db"] = str(db)
    seed = doc.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise src.error(("seed",), f"expected an integer, got {seed!r}")
    variables["seed"] = seed
    cluster = cluster_settings(src, doc, variables)
    stages_raw = doc.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise src.error(("stages",), "expected a non-empty list of stages")
    if confine is not None and (why := confine.check_path(db, "file")):
        raise src.error(("db",), why)
    builder = StageBuilder(src, variables, out_dir, db, seed, confine, cluster)
    with builder.scratch():
        stages = [builder.build(i, raw) for i, raw in enumerate(stages_raw)]
    return Plan(file=path, name=str(doc.get("name") or path.stem), output=out_dir, db=db,
                seed=seed, stages=stages, digest=chain_keys(stages, out_dir, db))


def cluster_settings(src: Source, doc: dict[str, Any], variables: dict[str, Any]
                     ) -> dict[str, str]:
    """The top-level ``executor`` and ``ray_address`` settings, checked (empty when unset)."""
    settings = {key: substitute(src, (key,), doc[key], variables)
                for key in ("executor", "ray_address") if doc.get(key) is not None}
    executor = settings.get("executor")
    if executor is not None and executor not in EXECUTORS:
        raise src.error(("executor",), f"expected one of {', '.join(EXECUTORS)}, got "
                                       f"{executor!r}")
    if "ray_address" in settings and executor != "ray":
        raise src.error(("ray_address",), "needs executor: ray")
    for key, value in settings.items():
        if not isinstance(value, str) or not value:
            raise src.error((key,), f"expected a string, got {value!r}")
    return settings


def chain_keys(stages: list[Stage], output: Path, db: Path) -> str:
    """Give each stage its key (a hash of it and every stage before it); return the last."""
    digest = hashlib.sha256(json.dumps([str(output), str(db)]).encode()).hexdigest()
    for stage in stages:
        body = json.dumps([digest, stage.words, stage.argv])
        digest = hashlib.sha256(body.encode()).hexdigest()
        stage.key = digest[:16]
    return digest[:16]
