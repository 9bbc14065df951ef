"""How requests go through a hosted Batch API: the settings and the hosted API's file limits.

Kept apart from ``hosted.py`` because that module (through the ``openai`` package's types)
takes over a second to import, and every command that builds a ``ClientConfig`` needs these
names while only ``--hosted`` runs need the batcher.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

MAX_LINES = 50_000
MAX_BYTES = 200 * 1024 * 1024


class HostedOptions(BaseModel):
    """How requests go through a hosted Batch API.

    Example: ``HostedOptions(label="rlaif batch prompts.jsonl", poll_interval=60)``
    """

    model_config = ConfigDict(extra="forbid")

    label: str = Field(default="rlaif", max_length=500, description="Names the run in metadata")
    completion_window: str = Field(default="24h", pattern=r"^\d+[hd]$")
    poll_interval: float = Field(default=30.0, gt=0, description="Seconds between polls")
    gather_seconds: float = Field(
        default=0.2, ge=0, description="Calls made within this quiet time share a batch")
    max_lines: int = Field(default=MAX_LINES, ge=1, le=MAX_LINES)
    max_bytes: int = Field(default=MAX_BYTES, ge=1024, le=MAX_BYTES)
    progress: bool = Field(default=False, description="Draw a progress bar per batch")
