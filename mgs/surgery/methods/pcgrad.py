"""`pcgrad`: projecting conflicting gradients (Yu et al. 2020, Alg. 1), from the Gramian alone.

For each domain i, start from g_i' = g_i and visit the other domains j in a random order (generator seeded
from (seed, step, group, i)); whenever <g_i', g_j> < 0 (the running g_i' against the *original* g_j), set
g_i' -= <g_i', g_j> / ||g_j||^2 g_j. Projections onto zero-norm g_j are skipped. The result is sum_i g_i'.
With g_i' = w_i @ G (w_i a row of coefficients, starting at e_i): <g_i', g_j> = (w_i @ gram)[j] and the
update is w_i[j] -= that / gram[j, j], so W needs nothing but the Gramian. Plain Python floats: D is tiny and
this runs once per group per step, where per-element tensor ops would cost more than the math.
"""

from __future__ import annotations

import torch

from mgs.surgery.methods.base import METHODS, GroupContext, Weighting


def visiting_order(others: list[int], ctx: GroupContext, domain_index: int) -> list[int]:
    """The other domains in the order domain `domain_index` visits them (one choice only: no draw needed)."""
    if len(others) < 2:
        return list(others)
    return [others[k] for k in torch.randperm(len(others), generator=ctx.generator(domain_index)).tolist()]


@METHODS.register("pcgrad")
def pcgrad(gram: torch.Tensor, ctx: GroupContext) -> Weighting:
    g = gram.tolist()
    num_domains = len(g)
    weights = [[1.0 if r == c else 0.0 for c in range(num_domains)] for r in range(num_domains)]
    orders: list[list[int]] = []
    projections: list[list[int]] = []  # [i, j]: g_i' was projected off g_j
    for i in range(num_domains):
        order = visiting_order([j for j in range(num_domains) if j != i], ctx, i)
        orders.append(order)
        row = weights[i]
        for j in order:
            if g[j][j] <= 0:
                continue
            dot = sum(row[k] * g[k][j] for k in range(num_domains))
            if dot < 0:
                row[j] -= dot / g[j][j]
                projections.append([i, j])
    return Weighting(torch.tensor(weights, dtype=torch.float64), {"orders": orders, "projections": projections})
