"""GRPO's numbers: group-normalised advantages and the per-token clipped policy loss with k3 KL and entropy bonus.

Pure functions on tensors/lists so that they can be checked against hand computations. Conventions (as in the
paper's verl setup):
- advantages are normalised per prompt group, `A = (r - mean) / (std + eps)` with the unbiased std of the group's
  scored rewards (rewards that are None are left out of their group and get no advantage); a group with fewer
  than two scored samples or zero std gets A = 0 and is counted as a zero-std group. Normalising per prompt makes
  domains with different reward scales comparable.
- the policy loss is PPO's clipped surrogate with a dual clip for negative advantages; the KL to the reference is
  the k3 ("low variance") estimator `exp(ref - logp) - (ref - logp) - 1`; the entropy bonus is subtracted.
- reduction is the token mean over the *whole step's batch* (the caller passes the global token count), so the
  per-domain gradients add up exactly to the Mixed-RL gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch


@dataclass(frozen=True)
class GroupAdvantages:
    advantages: list[float | None]  # one per sample (None where the reward was None)
    zero_std_groups: int  # groups whose scored rewards have zero spread (or < 2 scored samples)
    num_groups: int


def group_advantages(rewards: Sequence[float | None], group_size: int, eps: float = 1e-6) -> GroupAdvantages:
    """Advantages of `rewards` laid out as consecutive groups of `group_size` samples (one group per prompt)."""
    if group_size < 1 or len(rewards) % group_size:
        raise ValueError(f"{len(rewards)} rewards do not split into groups of {group_size}")
    advantages: list[float | None] = []
    zero_std = 0
    num_groups = len(rewards) // group_size
    for g in range(num_groups):
        group = rewards[g * group_size : (g + 1) * group_size]
        scored = [float(r) for r in group if r is not None]
        n = len(scored)
        mean = sum(scored) / n if n else 0.0
        std = math.sqrt(sum((r - mean) ** 2 for r in scored) / (n - 1)) if n >= 2 else 0.0
        if std == 0.0:
            zero_std += 1
            advantages.extend(None if r is None else 0.0 for r in group)
        else:
            advantages.extend(None if r is None else (float(r) - mean) / (std + eps) for r in group)
    return GroupAdvantages(advantages, zero_std, num_groups)


@dataclass(frozen=True)
class LossTerms:
    """Per-token pieces of the loss (shape [B, T], zero outside the completion mask) and scalar diagnostics."""

    loss_sum: torch.Tensor  # scalar: sum over valid tokens of the per-token loss (divide by the global token count)
    pg_sum: torch.Tensor
    kl_sum: torch.Tensor
    entropy_sum: torch.Tensor
    clipped_tokens: torch.Tensor
    tokens: torch.Tensor


def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    clip_eps: float,
    dual_clip: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token PPO loss [B, T] and a clipped-token indicator [B, T]. `advantages` broadcasts ([B, 1] or [B, T]).
    Dual clip (dual_clip > 1): for A < 0 the loss is capped at -A * dual_clip."""
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = torch.maximum(unclipped, clipped)
    was_clipped = (clipped > unclipped).float()
    if dual_clip:
        capped = torch.minimum(loss, -advantages * dual_clip)
        loss = torch.where(advantages < 0, capped, loss)
    return loss, was_clipped


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 estimator of KL(policy || reference) per token, >= 0; the log ratio is clamped to [-20, 20] for safety."""
    log_ratio = torch.clamp(ref_logp - logp, -20.0, 20.0)
    return torch.exp(log_ratio) - log_ratio - 1.0


def grpo_loss_terms(
    logp: torch.Tensor,
    mask: torch.Tensor,
    advantages: torch.Tensor,
    *,
    old_logp: torch.Tensor | None = None,
    ref_logp: torch.Tensor | None = None,
    entropy: torch.Tensor | None = None,
    clip_eps: float = 0.2,
    dual_clip: float = 3.0,
    kl_coef: float = 0.0,
    entropy_coef: float = 0.0,
) -> LossTerms:
    """Sums over valid tokens (mask [B, T] of 0/1) of the GRPO per-token loss
    `pg + kl_coef * k3 - entropy_coef * entropy`. With one update per rollout batch `old_logp` is `logp.detach()`
    (ratio 1, gradient of the plain policy gradient), which is the default."""
    mask = mask.to(logp.dtype)
    if old_logp is None:
        old_logp = logp.detach()
    adv = advantages.to(logp.dtype)
    if adv.dim() == 1:
        adv = adv[:, None]
    pg, was_clipped = clipped_policy_loss(logp, old_logp, adv, clip_eps, dual_clip)
    per_token = pg
    kl_sum = logp.new_zeros(())
    if kl_coef and ref_logp is not None:
        kl = kl_k3(logp, ref_logp.to(logp.dtype))
        per_token = per_token + kl_coef * kl
        kl_sum = (kl * mask).sum()
    entropy_sum = logp.new_zeros(())
    if entropy is not None:
        entropy_sum = (entropy * mask).sum()
        if entropy_coef:
            per_token = per_token - entropy_coef * entropy
    return LossTerms(
        loss_sum=(per_token * mask).sum(),
        pg_sum=(pg * mask).sum().detach(),
        kl_sum=kl_sum.detach(),
        entropy_sum=entropy_sum.detach(),
        clipped_tokens=(was_clipped * mask).sum().detach(),
        tokens=mask.sum().detach(),
    )
