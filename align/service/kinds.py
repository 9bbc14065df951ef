"""The job kinds of `rlaif service` and the states a job goes through, defined once.

A kind is an `rlaif` command a caller may run as a job; it says where the command sits under
`rlaif`, whether it gets the service's database, and where its results are when it writes no
output file (a table of the project database). The API's request and response models, the
argv builder and the job runner all read these names from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from datagen.store.tables import PAIRS, SI_INSTRUCTIONS


@dataclass(frozen=True)
class JobKind:
    """Where a kind's command sits under `rlaif`, and where its results are when it writes no
    output file (a table of the project database)."""

    path: tuple[str, ...]
    table: str | None = None
    pass_db: bool = True


KINDS: dict[str, JobKind] = {
    "batch": JobKind(("batch",)),
    "self-instruct": JobKind(("generate", "self-instruct"), table=SI_INSTRUCTIONS),
    "flan": JobKind(("generate", "flan")),
    "constitutional": JobKind(("generate", "constitutional")),
    "responses": JobKind(("generate", "responses"), table=PAIRS),
    "label": JobKind(("label",)),
    # offline, no ledger; it takes exactly one of -o and --db, and the service gives it -o
    "constrained": JobKind(("generate", "constrained"), pass_db=False),
    "pipeline": JobKind(("run",)),
}
STATUSES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = ("succeeded", "failed", "cancelled")

KindName = Literal[tuple(KINDS)]  # type: ignore[valid-type]
Status = Literal[STATUSES]  # type: ignore[valid-type]
