"""`sum`: the plain sum of the domain gradients (= Mixed RL). W is the identity."""

from __future__ import annotations

import torch

from mgs.surgery.methods.base import METHODS, GroupContext, Weighting


@METHODS.register("sum")
def plain_sum(gram: torch.Tensor, ctx: GroupContext) -> Weighting:
    return Weighting(torch.eye(gram.shape[0], dtype=torch.float64))
