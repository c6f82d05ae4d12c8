"""`sum`: the plain sum of the domain gradients (= Mixed RL). W is the identity (batched: one per group)."""

from __future__ import annotations

import torch

from mgs.surgery.methods.base import METHODS, BatchedWeighting, GroupContext, StepContext, Weighting, batched


@METHODS.register("sum")
def plain_sum(gram: torch.Tensor, ctx: GroupContext) -> Weighting:
    return Weighting(torch.eye(gram.shape[0], dtype=torch.float64))


@batched(plain_sum)
def plain_sum_batched(grams: torch.Tensor, ctx: StepContext) -> BatchedWeighting:
    num_groups, num_domains = grams.shape[0], grams.shape[1]
    return BatchedWeighting(torch.eye(num_domains, dtype=torch.float64).repeat(num_groups, 1, 1),
                            [{} for _ in range(num_groups)])
