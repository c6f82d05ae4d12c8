"""`pcgrad`: projecting conflicting gradients (Yu et al. 2020, Alg. 1), from the Gramian alone.

For each domain i, start from g_i' = g_i and visit the other domains j in a random order (generator seeded
from (seed, step, group, i)); whenever <g_i', g_j> < 0 (the running g_i' against the *original* g_j), set
g_i' -= <g_i', g_j> / ||g_j||^2 g_j. Projections onto zero-norm g_j are skipped. The result is sum_i g_i'.
With g_i' = w_i @ G (w_i a row of coefficients, starting at e_i): <g_i', g_j> = (w_i @ gram)[j] and the
update is w_i[j] -= that / gram[j, j], so W needs nothing but the Gramian.
"""

from __future__ import annotations

import torch

from mgs.surgery.methods.base import METHODS, GroupContext, Weighting


@METHODS.register("pcgrad")
def pcgrad(gram: torch.Tensor, ctx: GroupContext) -> Weighting:
    num_domains = gram.shape[0]
    weights = torch.eye(num_domains, dtype=torch.float64)
    orders: list[list[int]] = []
    projections: list[list[int]] = []  # [i, j]: g_i' was projected off g_j
    for i in range(num_domains):
        others = [j for j in range(num_domains) if j != i]
        order = [others[k] for k in torch.randperm(len(others), generator=ctx.generator(i)).tolist()]
        orders.append(order)
        for j in order:
            if gram[j, j] <= 0:
                continue
            dot = float(weights[i] @ gram[:, j])
            if dot < 0:
                weights[i, j] -= dot / float(gram[j, j])
                projections.append([i, j])
    return Weighting(weights, {"orders": orders, "projections": projections})
