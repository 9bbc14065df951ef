"""Evaluate a trained reward model: pairwise accuracy on held-out preference pairs.

A pair counts as correct when the model scores ``prompt + chosen`` strictly above
``prompt + rejected``. Texts are built the way TRL's ``RewardTrainer`` builds them (chat
template over the whole conversation; plain strings get the eos token appended), so the
numbers match what the model saw in training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from align.export.datasets import load_split, require_columns


def _token_ids(tokenizer, row: dict[str, Any], side: str) -> list[int]:
    prompt = row.get("prompt")
    if isinstance(row[side], list):  # conversational
        messages = (prompt or []) + row[side]
        return tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    text = (prompt or "") + row[side]
    if not text.endswith(tokenizer.eos_token):
        text += tokenizer.eos_token
    return tokenizer(text)["input_ids"]


def reward_scores(model, tokenizer, rows: list[dict[str, Any]], side: str,
                  batch_size: int) -> list[float]:
    """Scalar rewards for ``prompt + row[side]`` of each row, in order."""
    import torch

    scores: list[float] = []
    for start in range(0, len(rows), batch_size):
        ids = [_token_ids(tokenizer, row, side) for row in rows[start : start + batch_size]]
        batch = tokenizer.pad({"input_ids": ids}, return_tensors="pt").to(model.device)
        with torch.inference_mode():
            logits = model(**batch).logits  # (B, 1)
        scores.extend(logits[:, 0].float().tolist())
    return scores


def reward_accuracy(
    model_dir: str | Path, data: str | Path, batch_size: int = 16
) -> dict[str, Any]:
    """Pairwise accuracy of a reward model on a preference export (the test split of a dataset
    directory with splits; a JSONL file or single dataset as it is).

    Returns ``accuracy``, ``count``, ``correct`` and ``mean_margin`` (mean r_chosen - r_rejected).
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from align.train.trainers import resolve_model

    model_dir = resolve_model(str(model_dir))
    dataset = load_split(data, "test")
    require_columns(dataset, data, ("chosen", "rejected"))
    rows = dataset.to_list()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    chosen = reward_scores(model, tokenizer, rows, "chosen", batch_size)
    rejected = reward_scores(model, tokenizer, rows, "rejected", batch_size)
    correct = sum(c > r for c, r in zip(chosen, rejected, strict=True))
    return {
        "accuracy": correct / len(rows),
        "count": len(rows),
        "correct": correct,
        "mean_margin": sum(c - r for c, r in zip(chosen, rejected, strict=True)) / len(rows),
    }

