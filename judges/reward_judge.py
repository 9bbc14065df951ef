"""A trained reward model as a judge: ``--judge rm:PATH``.

A sequence-classification reward model (one logit, as TRL's reward trainer saves it) scores
each response of a pair in context, and the pair is labelled with the Bradley-Terry
probability ``p_a = sigmoid(r_a - r_b)``, the same quantity the model was trained to fit.
The model is loaded with transformers directly (judges never import ``align``) and runs on
the CPU or the first GPU; torch and transformers are imported only when such a judge is used,
so the base install needs neither. The text scored is the prompt and response through the
tokenizer's chat template when it has one, else ``prompt + "\\n\\n" + response``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datagen.errors import UserInputError
from datagen.responses.sample import as_messages
from judges.pairs import PairRow, prompt_text
from judges.panel import JudgeResult
from judges.verdicts import preferred_from_p, sigmoid


def load_reward_model(path: str | Path) -> tuple[Any, Any]:
    """(model, tokenizer) of a saved one-logit sequence-classification model, in eval mode."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
        model = AutoModelForSequenceClassification.from_pretrained(str(path))
    except (OSError, ValueError) as exc:
        raise UserInputError(f"--judge rm:{path}: cannot load a reward model: {exc}") from None
    if model.config.num_labels != 1:
        raise UserInputError(
            f"--judge rm:{path}: expected a reward model with one output, "
            f"found {model.config.num_labels}")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    return model, tokenizer


def reward_text(tokenizer: Any, prompt: str | list[dict[str, Any]], response: str) -> str:
    """The text the reward model scores for one response."""
    if tokenizer.chat_template:
        messages = as_messages(prompt) + [{"role": "assistant", "content": response}]
        return tokenizer.apply_chat_template(messages, tokenize=False)
    return f"{prompt_text(prompt)}\n\n{response}"


def score_texts(model: Any, tokenizer: Any, texts: list[str], batch_size: int = 8,
                max_length: int = 2048) -> list[float]:
    """One reward per text, in batches."""
    import torch

    rewards: list[float] = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                              truncation=True, max_length=max_length).to(model.device)
            logits = model(**batch).logits  # (B, 1)
            rewards.extend(logits[:, 0].float().tolist())
    return rewards


def judge_reward_model(
    rows: list[PairRow], path: str | Path, tie_margin: float = 0.05, batch_size: int = 8
) -> list[JudgeResult]:
    """Label pairs with p_a = sigmoid(r_a - r_b) from a saved reward model."""
    name = f"rm:{path}"
    if not rows:
        return []
    model, tokenizer = load_reward_model(path)
    texts = sorted({reward_text(tokenizer, row.prompt, side)
                    for row in rows for side in (row.response_a, row.response_b)})
    reward = dict(zip(texts, score_texts(model, tokenizer, texts, batch_size), strict=True))
    results = []
    for row in rows:
        r_a = reward[reward_text(tokenizer, row.prompt, row.response_a)]
        r_b = reward[reward_text(tokenizer, row.prompt, row.response_b)]
        p_a = sigmoid(r_a - r_b)
        results.append(JudgeResult(
            judge=name, preferred=preferred_from_p(p_a, tie_margin), p_a=p_a, consistent=None,
            verdicts=[{"judge": name, "reward_a": r_a, "reward_b": r_b}]))
    return results
