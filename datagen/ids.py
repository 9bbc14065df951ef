"""Content ids: the short, stable names of records that arrive without an ``id``.

A prompt, response or pair without an ``id`` is named by a hash of its content, and every file
that carries it (responses, pairs, labels, the label queue, exports) must agree on that name, or
joining them by id silently fails: exports once hashed a pair's prompt after turning text into
chat messages, with spaced JSON, so an unnamed pair had one id in its labels file and another
in its export. The id is therefore computed here only: sha256 over the canonical JSON of the
parts (sorted keys, no spaces, unicode kept; ``datagen.endpoint.keys.canonical_json``), as they
appear in the input, first 16 hex digits.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from datagen.endpoint.keys import canonical_json


def content_id(*parts: Any) -> str:
    """A short stable id of JSON-able parts: ``content_id(prompt, "answer")``."""
    return hashlib.sha256(canonical_json(list(parts)).encode()).hexdigest()[:16]


def pair_id(prompt: Any, responses: Sequence[str]) -> str:
    """The id of an unnamed pair (or k-way comparison): its prompt, as given (text or chat
    messages), and its responses in order."""
    return content_id(prompt, *responses)
