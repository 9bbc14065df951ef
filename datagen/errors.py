"""The project's exceptions, kept few so callers can tell user mistakes from faults.

Tree:
- ``UserInputError`` (a ``click.ClickException`` with exit code 2): bad files, bad options,
  bad rows. The CLI prints its one-line message, no traceback, and nothing is written.
- ``LLMOutputError``: a model reply that could not be parsed even after one re-ask; carries the
  raw text and the number of attempts so the caller can record it as a failed row.
- ``BudgetExhausted``: the ``--budget-usd`` cap was reached; no new request is scheduled.
- ``HostedBatchError`` (a ``ConnectionError``): the hosted Batch API refused a call or kept
  failing after every retry; what was submitted is in the database and a rerun resumes it.
"""

from __future__ import annotations

import click


class UserInputError(click.ClickException):
    """A problem with what the user gave us (file, line, key, option). Exit code 2."""

    exit_code = 2


class LLMOutputError(Exception):
    """A model reply that could not be parsed into the expected shape."""

    def __init__(self, message: str, raw_text: str = "", attempts: int = 1) -> None:
        super().__init__(message)
        self.raw_text = raw_text
        self.attempts = attempts


class BudgetExhausted(Exception):
    """The spending cap was reached before this request could be scheduled."""


class HostedBatchError(ConnectionError):
    """The hosted Batch API refused a call, or kept failing after every retry."""
