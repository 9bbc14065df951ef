"""One-time CTranslate2 conversion of a served checkpoint, cached by the weights' fingerprint.

``rlaif serve --backend ctranslate2`` runs an int8 copy of the model: on two CPU cores it
decodes about three times faster than float32 transformers (see bench/serve_throughput.py).
The copy is made with CTranslate2's own transformers converter, offline, from the local
safetensors directory, into ``<cache>/ct2/<name>-<fingerprint>-<quantization>``; the
fingerprint is the one in the served model id, so a checkpoint retrained in place gets a fresh
conversion. Like the GGUF step in ``default_model``, it is written to a scratch folder and
renamed into place, so an interrupted run never leaves half a model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from datagen.errors import UserInputError
from datagen.serve.default_model import cache_root, model_fingerprint

QUANTIZATION = "int8"


def ct2_model_dir(model_dir: Path, quantization: str = QUANTIZATION) -> Path:
    """The CTranslate2 copy of ``model_dir``, converting it on first use."""
    target = cache_root() / "ct2" / (
        f"{model_dir.name}-{model_fingerprint(model_dir)}-{quantization}")
    if (target / "model.bin").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        convert(model_dir, scratch, quantization)
        try:
            scratch.rename(target)
        except OSError:
            # Another process finished the same conversion first; its copy is identical.
            if not (target / "model.bin").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def convert(model_dir: Path, out_dir: Path, quantization: str) -> None:
    """Convert a local transformers causal LM with CTranslate2's converter (no network)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from ctranslate2.converters import TransformersConverter
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    try:
        TransformersConverter(str(model_dir)).convert(str(out_dir), quantization=quantization,
                                                      force=True)
    except (ValueError, NotImplementedError, KeyError, OSError) as exc:
        raise UserInputError(
            f"--model {model_dir}: CTranslate2 cannot convert this checkpoint ({exc}); "
            "serve it with --backend transformers") from None
