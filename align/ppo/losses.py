"""The tensor arithmetic of PPO for language models, kept apart from the training loop.

Every function here is pure (tensors in, tensors out, no models, no randomness) so it can be
checked against hand-computed values. They follow "The N+ Implementation Details of RLHF with
PPO" (Huang et al., 2024, https://arxiv.org/abs/2403.17031) and Schulman et al.'s PPO
(https://arxiv.org/abs/1707.06347) with GAE (https://arxiv.org/abs/1506.02438). Shapes: B is
the number of sequences, R the number of response tokens, V the vocabulary; ``mask`` is a
``(B, R)`` bool tensor that is True on real response tokens (a prefix of each row).
"""

from __future__ import annotations

import torch

from align.ppo.config import KL_ESTIMATORS


def masked_mean(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` over the positions where ``mask`` is True (all positions if None)."""
    if mask is None:
        return values.mean()
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_var(values: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Unbiased (Bessel-corrected) variance of ``values`` over the masked positions."""
    if mask is None:
        return values.var()
    count = mask.sum()
    centered = (values - masked_mean(values, mask)) * mask
    return (centered**2).sum() / (count - 1).clamp(min=1)


def whiten(
    values: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True
) -> torch.Tensor:
    """Scale ``values`` to unit variance over the mask; also centre them unless ``shift_mean`` is
    False (reward whitening keeps the mean). Positions outside the mask are set to 0."""
    mean = masked_mean(values, mask)
    whitened = (values - mean) * torch.rsqrt(masked_var(values, mask) + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened if mask is None else whitened * mask


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probability of each chosen token: logits (B, R, V), tokens (B, R) -> (B, R)."""
    logsumexp = torch.logsumexp(logits, dim=-1)
    return logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - logsumexp


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position: (B, R, V) -> (B, R)."""
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)


def truncate_after_stop(
    responses: torch.Tensor, stop_id: int | None, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep each response up to and including its first ``stop_id``; pad the rest.

    Returns ``(responses, mask)`` with ``mask`` True on the kept tokens. Without a stop token
    nothing is cut.
    """
    if stop_id is None:
        return responses, torch.ones_like(responses, dtype=torch.bool)
    is_stop = responses == stop_id  # (B, R)
    # a token is kept when no stop token came strictly before it
    stops_before = torch.cumsum(is_stop.long(), dim=1) - is_stop.long()
    mask = stops_before == 0
    return responses.masked_fill(~mask, pad_id), mask


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last True position in each row of a prefix mask: (B, R) -> (B,)."""
    return (mask.long().sum(1) - 1).clamp(min=0)


def kl_per_token(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: str = "k1"
) -> torch.Tensor:
    """Per-token KL(policy || reference) estimate from sampled tokens.

    k1 = log pi - log pi_ref; k3 = (rho - 1) - log rho with rho = pi_ref / pi (always >= 0);
    see http://joschu.net/blog/kl-approx.html.
    """
    log_rho = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_rho
    if estimator == "k3":
        return torch.expm1(log_rho) - log_rho
    raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, not {estimator!r}")


def kl_shaped_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
    estimator: str = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -kl_coef * KL_t on every response token, plus the reward-model score
    (B,) on the last real response token. Returns ``(rewards, non_score_rewards)``, both (B, R)
    and zero outside the mask."""
    non_score = -kl_coef * kl_per_token(logprobs, ref_logprobs, estimator) * mask
    rewards = non_score.clone()
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    rewards[rows, last_token_index(mask)] += scores
    return rewards, non_score


def compute_gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens.

    delta_t = r_t + gamma * V_{t+1} - V_t with V = 0 after the last real token, and
    A_t = delta_t + gamma * lam * A_{t+1}. Returns ``(advantages, returns)`` with
    returns = advantages + values; both (B, R) and zero outside the mask.
    """
    rewards = rewards * mask
    values = values * mask
    length = rewards.shape[1]
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(length)):
        next_values = values[:, t + 1] if t + 1 < length else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_values - values[:, t]
        last = delta + gamma * lam * last
        advantages[:, t] = last
    advantages = advantages * mask
    return advantages, (advantages + values) * mask


def clipped_policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    cliprange: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate, to minimise: mean over real tokens of
    max(-A * rho, -A * clip(rho, 1 - eps, 1 + eps)) with rho = exp(logp - old_logp).
    Returns ``(loss, clip_fraction)``; the fraction counts tokens where the clipped term won."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cliprange, 1.0 + cliprange)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    return loss, clipfrac


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    cliprange_value: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss 0.5 * mean over real tokens of max((V - R)^2, (V_clip - R)^2), where
    V_clip stays within ``cliprange_value`` of the rollout values. The training loss weights it
    by ``vf_coef``. Returns ``(loss, clip_fraction)``."""
    delta = torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    clipped_values = old_values + delta
    unclipped = (values - returns) ** 2
    clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    return loss, clipfrac
