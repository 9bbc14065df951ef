"""Experience collection for the project PPO: load the four models, sample, score, shape.

``collect_rollout`` samples responses from the policy with a KV cache (temperature T, logits
divided by T + 1e-7), cuts them after the stop token, recomputes behaviour and reference
log-probs with the same full forward pass training uses, reads values and reward-model scores
through the seq-cls ``.score`` heads, applies the missing-eos penalty and the KL-shaped
per-token reward, and runs GAE with whitened advantages (``align/ppo/losses.py``). Unlike TRL 1.12,
the score is added on the last real response token (TRL adds it one position later, clamped),
and behaviour log-probs come from the training forward pass rather than from generation.

Models and rollout tensors live on one device (``Models.device``); forward passes may run under
bf16 autocast (``Models.autocast``) while the arithmetic stays in float32. Everything here runs
without autograd, and only gathered log-probs (B, R) are kept, never (B, T, V) logits.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from align.ppo.config import PPOConfig
from align.ppo.losses import (
    compute_gae,
    kl_per_token,
    kl_shaped_rewards,
    last_token_index,
    token_logprobs,
    truncate_after_stop,
    whiten,
)

Prompt = str | list[dict[str, str]]


@dataclass
class Models:
    """The four networks of a PPO run, the shared tokenizer, the device they all live on and
    whether their forward passes run under bf16 autocast."""

    policy: PreTrainedModel
    ref_policy: PreTrainedModel
    value_model: PreTrainedModel
    reward_model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device = torch.device("cpu")
    bf16: bool = False

    def autocast(self) -> contextlib.AbstractContextManager:
        """Context for forward passes: bf16 autocast on ``device`` when enabled, else nothing."""
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)


@dataclass
class Rollout:
    """One batch of experience. Q = padded prompt length, R = response length."""

    query_responses: torch.Tensor  # (B, Q + R) left-padded prompts followed by responses
    attention_mask: torch.Tensor  # (B, Q + R) 1 on real tokens
    responses: torch.Tensor  # (B, R) truncated after the stop token, then padded
    response_mask: torch.Tensor  # (B, R) bool, True on real response tokens
    logprobs: torch.Tensor  # (B, R) behaviour log-probs at temperature T
    values: torch.Tensor  # (B, R) value estimates, 0 outside the mask
    advantages: torch.Tensor  # (B, R) whitened, 0 outside the mask
    returns: torch.Tensor  # (B, R)
    stats: dict[str, torch.Tensor]  # scalar rollout statistics for the log


def load_models(
    policy_dir: str | Path, reward_model_dir: str | Path,
    device: torch.device | str = "cpu", bf16: bool = False,
) -> Models:
    """Load the policy, a frozen reference copy, the reward model and a value model initialised
    from the reward model, in float32 on ``device``. All are put in eval mode, which disables
    dropout; the reference and reward model also get ``requires_grad=False`` (no gradients, no
    optimiser state). The reward model must share the policy's tokenizer."""
    device = torch.device(device)
    tokenizer = AutoTokenizer.from_pretrained(policy_dir)

    def load(cls: type, path: str | Path, **kwargs: object) -> PreTrainedModel:
        return cls.from_pretrained(path, dtype=torch.float32, **kwargs).to(device).eval()

    models = Models(
        policy=load(AutoModelForCausalLM, policy_dir),
        ref_policy=load(AutoModelForCausalLM, policy_dir).requires_grad_(False),
        value_model=load(AutoModelForSequenceClassification, reward_model_dir, num_labels=1),
        reward_model=load(AutoModelForSequenceClassification, reward_model_dir,
                          num_labels=1).requires_grad_(False),
        tokenizer=tokenizer,
        device=device,
        bf16=bf16,
    )
    return models


def encode_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[Prompt]
) -> list[list[int]]:
    """Token ids per prompt: chat messages go through the chat template with a generation
    prompt; plain strings are tokenized as they are."""
    encoded = []
    for prompt in prompts:
        if isinstance(prompt, str):
            encoded.append(tokenizer(prompt)["input_ids"])
        else:
            text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            encoded.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return encoded


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into ``(ids, mask)``, both (B, Q)."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        if seq:
            ids[row, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
            mask[row, width - len(seq):] = 1
    return ids, mask


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip padding: (B, L) mask -> (B, L) positions."""
    return (mask.cumsum(1) - 1).clamp(min=0)


@torch.no_grad()
def sample_responses(
    policy: PreTrainedModel,
    queries: torch.Tensor,
    query_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    temperature: float,
    stop_id: int | None,
    pad_id: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample up to ``max_new_tokens`` tokens per prompt from softmax(logits / (T + 1e-7)) with a
    KV cache; rows that emitted the stop token get padding. Returns the tokens and their
    sampling log-probs, both (B, R) with R <= max_new_tokens."""
    mask = query_mask
    positions = position_ids(mask)
    # the prompt forward only needs the last position's logits, not (B, Q, V)
    out = policy(input_ids=queries, attention_mask=mask, position_ids=positions, use_cache=True,
                 logits_to_keep=1)
    next_position = positions[:, -1:] + 1  # (B, 1)
    done = torch.zeros(queries.shape[0], dtype=torch.bool, device=queries.device)
    tokens, logprobs = [], []
    for _ in range(max_new_tokens):
        logp = torch.log_softmax(out.logits[:, -1].float() / (temperature + 1e-7), dim=-1)  # (B, V)
        token = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(1)
        token = token.masked_fill(done, pad_id)
        tokens.append(token)
        logprobs.append(logp.gather(1, token[:, None]).squeeze(1))
        if stop_id is not None:
            done |= token == stop_id
        if done.all():
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        out = policy(input_ids=token[:, None], attention_mask=mask, position_ids=next_position,
                     cache=out.cache, use_cache=True)
        next_position = next_position + 1
    return torch.stack(tokens, dim=1), torch.stack(logprobs, dim=1)


def response_logits(
    policy: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor, response_length: int,
    temperature: float, *, trim: bool = False,
) -> torch.Tensor:
    """Temperature-scaled logits that predict each response token: (B, Q + R) -> (B, R, V).

    No KV cache is built. ``trim`` runs the LM head on the last R + 1 positions only, so no
    (B, Q + R, V) tensor exists. For no-grad passes only: the values match (bit for bit on CPU),
    but under autograd the head's weight gradient would be summed in another order.
    """
    keep = {"logits_to_keep": response_length + 1} if trim else {}
    logits = policy(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                    use_cache=False, **keep).logits
    return logits[:, -response_length - 1:-1].float() / (temperature + 1e-7)


def hidden_scores(model: PreTrainedModel, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The ``.score`` head applied to every last hidden state: (B, L) -> (B, L)."""
    hidden = model.base_model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask),
                              use_cache=False).last_hidden_state
    return model.score(hidden).squeeze(-1).float()


@torch.no_grad()
def rollout_forward(
    models: Models, ids: torch.Tensor, mask: torch.Tensor, responses: torch.Tensor,
    response_mask: torch.Tensor, config: PPOConfig,
) -> tuple[torch.Tensor, ...]:
    """Behaviour log-probs, reference log-probs, values (each (B, R)) and reward-model scores
    (B,) at the last real token, computed in chunks of ``rollout_forward_batch_size``."""
    length = responses.shape[1]
    context = ids.shape[1] - length
    parts: list[list[torch.Tensor]] = [[], [], [], []]
    step = config.rollout_forward_batch_size
    for start in range(0, ids.shape[0], step):
        chunk = slice(start, start + step)
        tokens = responses[chunk]
        # each (b, R, V) logits tensor is reduced to (b, R) log-probs before the next forward
        with models.autocast():
            logits = response_logits(models.policy, ids[chunk], mask[chunk], length,
                                     config.temperature, trim=True)
        logp = token_logprobs(logits, tokens)
        with models.autocast():
            logits = response_logits(models.ref_policy, ids[chunk], mask[chunk], length,
                                     config.temperature, trim=True)
        ref_logp = token_logprobs(logits, tokens)
        del logits
        with models.autocast():
            values = hidden_scores(models.value_model, ids[chunk], mask[chunk])[:, context - 1:-1]
            rewards = hidden_scores(models.reward_model, ids[chunk], mask[chunk])
        last = context + last_token_index(response_mask[chunk])
        scores = rewards[torch.arange(rewards.shape[0], device=rewards.device), last]
        for bucket, value in zip(parts, (logp, ref_logp, values, scores), strict=True):
            bucket.append(value)
    return tuple(torch.cat(bucket) for bucket in parts)


@torch.no_grad()  # not inference_mode: PPO's loss uses these tensors under autograd
def pearson(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """Pearson correlation of two (B,) tensors; NaN when either is constant."""
    xs, ys = xs.float() - xs.float().mean(), ys.float() - ys.float().mean()
    denominator = (xs.square().sum() * ys.square().sum()).sqrt()
    if denominator <= 0:
        return torch.tensor(float("nan"), device=xs.device)
    return (xs * ys).sum() / denominator


def collect_rollout(
    models: Models, prompt_ids: Sequence[Sequence[int]], config: PPOConfig,
    generator: torch.Generator,
) -> Rollout:
    """Sample responses for the prompts, score them, shape rewards and compute advantages.
    ``generator`` must live on ``models.device``; all returned tensors do."""
    tokenizer = models.tokenizer
    eos_id = tokenizer.eos_token_id
    # masks are explicit, so the filler id only needs to be a valid token (pad may equal eos)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    stop_id = eos_id if config.stop_token == "eos" else None
    queries, query_mask = (t.to(models.device) for t in left_pad(prompt_ids, pad_id))
    # the sampling log-probs are recomputed below with the training forward pass, so that the
    # first PPO step starts at ratio 1 exactly
    with models.autocast():
        sampled, _ = sample_responses(models.policy, queries, query_mask,
                                      max_new_tokens=config.response_length,
                                      temperature=config.temperature, stop_id=stop_id,
                                      pad_id=pad_id, generator=generator)
    responses, response_mask = truncate_after_stop(sampled, stop_id, pad_id)
    ids = torch.cat([queries, responses], dim=1)
    mask = torch.cat([query_mask, response_mask.long()], dim=1)
    logprobs, ref_logprobs, values, scores = rollout_forward(
        models, ids, mask, responses, response_mask, config)
    has_eos = ((responses == eos_id) & response_mask).any(dim=1)
    if config.missing_eos_penalty is not None:
        scores = scores - config.missing_eos_penalty * (~has_eos).float()
    rewards, non_score = kl_shaped_rewards(scores, logprobs, ref_logprobs, response_mask,
                                           config.kl_coef, config.kl_estimator)
    if config.whiten_rewards:
        rewards = whiten(rewards, response_mask, shift_mean=False)
    values = values * response_mask
    advantages, returns = compute_gae(rewards, values, response_mask, config.gamma, config.lam)
    advantages = whiten(advantages, response_mask)
    k1 = kl_per_token(logprobs, ref_logprobs, "k1") * response_mask
    stats = {
        "score": scores.mean(),
        "non_score_reward": non_score.sum(1).mean(),
        "rlhf_reward": (scores + non_score.sum(1)).mean(),
        "kl": k1.sum(1).mean(),
        "response_length": response_mask.float().sum(1).mean(),
        "eos_fraction": has_eos.float().mean(),
        # the reward-hacking watch (align/rl/watch.py)
        "score_std": scores.std(unbiased=False),
        "kl_per_token": k1.sum() / response_mask.sum().clamp(min=1),
        "score_length_corr": pearson(scores, response_mask.float().sum(1)),
    }
    return Rollout(ids, mask, responses, response_mask, logprobs, values, advantages, returns,
                   stats)
