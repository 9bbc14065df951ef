"""Tiny, fully synthetic models for align/ tests: nothing is downloaded, everything is built here.

A byte-level BPE tokenizer trained in a few milliseconds on an in-code corpus (ChatML template,
``<|im_end|>`` as eos, a separate ``<|pad|>``, left padding), a tiny ``LlamaForCausalLM`` policy
and tiny ``LlamaForSequenceClassification`` reward models, each saved with its tokenizer to a
directory so trainers load them by path like real checkpoints. ``build_token_reward_model``
hand-sets a reward model whose score is known in advance: +1 when the last token is one of the
given ids, -1 otherwise (it reads only the last token's embedding).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

SPECIAL_TOKENS = ["<|pad|>", "<|bos|>", "<|im_start|>", "<|im_end|>"]

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

SUBJECTS = ["the cat", "a dog", "my friend", "the robot", "our team", "the teacher", "a bird"]
VERBS = ["likes", "finds", "makes", "sees", "wants", "writes", "keeps"]
OBJECTS = ["a good plan", "the red apple", "some nice music", "a long story", "the new book",
           "a small house", "bright colours", "42 tiny stones", "code, tests & docs!"]
QUESTIONS = ["What does {s} do?", "Tell me about {s}.", "Why {v} {s} {o}?", "Describe {o}."]


def synthetic_corpus(n: int = 400, seed: int = 0) -> list[str]:
    """Sentences, questions and ChatML-looking lines to train the toy tokenizer on."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        s, v, o = rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)
        lines.append(f"{s.capitalize()} {v} {o}.")
        lines.append(rng.choice(QUESTIONS).format(s=s, v=v, o=o))
    return lines


def toy_prompts(n: int = 32, seed: int = 0) -> list[list[dict[str, str]]]:
    """Chat prompts (one user message each) over the toy vocabulary."""
    rng = random.Random(seed)
    return [
        [{"role": "user", "content": rng.choice(QUESTIONS).format(
            s=rng.choice(SUBJECTS), v=rng.choice(VERBS), o=rng.choice(OBJECTS))}]
        for _ in range(n)
    ]


def build_tokenizer(vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE (full byte alphabet, no unk) and wrap it as a fast tokenizer."""
    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    raw.train_from_iterator(synthetic_corpus(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        pad_token="<|pad|>",
        bos_token="<|bos|>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
        padding_side="left",
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer


def tiny_llama_config(tokenizer: PreTrainedTokenizerFast, **overrides: object) -> LlamaConfig:
    """A ~100k-parameter Llama config on the tokenizer's vocabulary."""
    values: dict[str, object] = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    values.update(overrides)
    return LlamaConfig(**values)


def _save(model: torch.nn.Module, tokenizer: PreTrainedTokenizerFast, out_dir: Path) -> Path:
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def build_policy(
    tokenizer: PreTrainedTokenizerFast, out_dir: str | Path, *, seed: int = 0, **config: object
) -> Path:
    """Save a randomly initialised tiny ``LlamaForCausalLM`` (and the tokenizer) to ``out_dir``."""
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(tokenizer, **config))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return _save(model, tokenizer, Path(out_dir))


def build_reward_model(
    tokenizer: PreTrainedTokenizerFast, out_dir: str | Path, *, seed: int = 0, **config: object
) -> Path:
    """Save a randomly initialised tiny ``LlamaForSequenceClassification`` (num_labels=1)."""
    torch.manual_seed(seed)
    config.setdefault("tie_word_embeddings", False)
    model = LlamaForSequenceClassification(tiny_llama_config(tokenizer, num_labels=1, **config))
    return _save(model, tokenizer, Path(out_dir))


def alphabetic_token_ids(tokenizer: PreTrainedTokenizerFast) -> list[int]:
    """Ids of the non-special tokens that decode to letters only (optionally after a space)."""
    special = set(tokenizer.all_special_ids)
    ids = []
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id]).strip()
        if token_id not in special and text.isascii() and text.isalpha():
            ids.append(token_id)
    return ids


def build_token_reward_model(
    tokenizer: PreTrainedTokenizerFast,
    out_dir: str | Path,
    good_token_ids: list[int],
    *,
    pooling: str = "last",
    scale: float = 1.0,
    seed: int = 0,
) -> Path:
    """Save a seq-cls model with a known score. Each token has a sign, +1 when its id is in
    ``good_token_ids`` and -1 otherwise. With ``pooling="last"`` the score is ``scale`` times
    the sign of the scored (last) token; with ``pooling="mean"`` it is ``scale`` times the mean
    sign over the whole sequence up to the scored token (prompt included), up to a factor
    1 / sqrt(1 + mean**2 / hidden_size) from the final norm.

    Construction: embeddings have RMS 1 (so RMSNorms leave them as they are), coordinate 0 holds
    the sign and coordinate 1 is 0. The MLP output is zero. For "last" the attention output is
    zero too and ``.score`` reads coordinate 0. For "mean" the query and key projections are
    zero, so attention is uniform over the visible tokens; the value projection copies the sign
    and the output projection writes the average into coordinate 1, which ``.score`` reads.
    """
    if pooling not in ("last", "mean"):
        raise ValueError(f"pooling must be 'last' or 'mean', not {pooling!r}")
    generator = torch.Generator().manual_seed(seed)
    config = tiny_llama_config(tokenizer, num_labels=1, num_hidden_layers=1,
                               tie_word_embeddings=False)
    model = LlamaForSequenceClassification(config)
    hidden = config.hidden_size
    sign = -torch.ones(config.vocab_size)
    sign[list(good_token_ids)] = 1.0
    rest = torch.randn(config.vocab_size, hidden - 2, generator=generator)
    rest = rest / rest.norm(dim=1, keepdim=True) * (hidden - 1) ** 0.5
    embeddings = torch.cat([sign[:, None], torch.zeros(config.vocab_size, 1), rest], dim=1)
    layer = model.model.layers[0]
    with torch.no_grad():
        model.model.embed_tokens.weight.copy_(embeddings)
        layer.input_layernorm.weight.fill_(1.0)
        layer.mlp.down_proj.weight.zero_()
        layer.self_attn.o_proj.weight.zero_()
        model.model.norm.weight.fill_(1.0)
        model.score.weight.zero_()
        if pooling == "last":
            model.score.weight[0, 0] = scale
        else:
            layer.self_attn.q_proj.weight.zero_()
            layer.self_attn.k_proj.weight.zero_()
            layer.self_attn.v_proj.weight.zero_()
            layer.self_attn.v_proj.weight[0, 0] = 1.0
            layer.self_attn.o_proj.weight[1, 0] = 1.0
            model.score.weight[0, 1] = scale
    return _save(model, tokenizer, Path(out_dir))
