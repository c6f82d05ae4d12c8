"""`pcgrad`: projecting conflicting gradients (Yu et al. 2020, Alg. 1), from the Gramian alone.

For each domain i, start from g_i' = g_i and visit the other domains j in a random order (generator seeded
from (seed, step, group, i)); whenever <g_i', g_j> < 0 (the running g_i' against the *original* g_j), set
g_i' -= <g_i', g_j> / ||g_j||^2 g_j. Projections onto zero-norm g_j are skipped. The result is sum_i g_i'.
With g_i' = w_i @ G (w_i a row of coefficients, starting at e_i): <g_i', g_j> = (w_i @ gram)[j] and the
update is w_i[j] -= that / gram[j, j], so W needs nothing but the Gramian.

Two forms with identical results: `pcgrad` (one group, plain Python floats: the reference) and `pcgrad_batched`
(all groups at once: D (D - 1) rounds of [G]-wide tensor ops, each product and sum in the same order as the
reference, so W agrees bit for bit). A domain i whose original inner products with the others are all >= 0 is
never projected, whatever its order, so the batched form draws the random orders only for the rows that can
project (a seeded generator per draw is the main per-group cost); the others are drawn when the stats are read.
"""

from __future__ import annotations

import torch

from mgs.surgery.methods.base import (
    METHODS,
    BatchedWeighting,
    GroupContext,
    LazyInfos,
    StepContext,
    Weighting,
    batched,
    derive_seed,
)


def _draw(others: list[int], seed: int, generator: torch.Generator) -> list[int]:
    return [others[k] for k in torch.randperm(len(others), generator=generator.manual_seed(seed)).tolist()]


def visiting_order(others: list[int], ctx: GroupContext, domain_index: int) -> list[int]:
    """The other domains in the order domain `domain_index` visits them (one choice only: no draw needed)."""
    if len(others) < 2:
        return list(others)
    return _draw(others, derive_seed(ctx.seed, ctx.step, ctx.group_index, domain_index), torch.Generator())


def _others(num_domains: int, i: int) -> list[int]:
    return [j for j in range(num_domains) if j != i]


@METHODS.register("pcgrad")
def pcgrad(gram: torch.Tensor, ctx: GroupContext) -> Weighting:
    g = gram.tolist()
    num_domains = len(g)
    weights = [[1.0 if r == c else 0.0 for c in range(num_domains)] for r in range(num_domains)]
    orders: list[list[int]] = []
    projections: list[list[int]] = []  # [i, j]: g_i' was projected off g_j
    for i in range(num_domains):
        order = visiting_order(_others(num_domains, i), ctx, i)
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


@batched(pcgrad)
def pcgrad_batched(grams: torch.Tensor, ctx: StepContext) -> BatchedWeighting:
    """`pcgrad` on every group of `grams` [G, D, D] (float64, finite) at once: W [G, D, D] and lazy infos."""
    num_groups, num_domains = grams.shape[0], grams.shape[1]
    weights = torch.eye(num_domains, dtype=torch.float64).repeat(num_groups, 1, 1)
    others = [_others(num_domains, i) for i in range(num_domains)]
    # orders [G, D, D-1]: row i of group g lists the domains in the order g's domain i visits them.
    orders = torch.tensor(others, dtype=torch.int64).reshape(1, num_domains, num_domains - 1)
    orders = orders.repeat(num_groups, 1, 1)
    diag = grams.diagonal(dim1=1, dim2=2)  # [G, D]
    # Row i can be projected only if some original <g_i, g_j> < 0 with ||g_j|| > 0 (else it stays e_i).
    conflicting = (grams < 0) & (diag > 0)[:, None, :]
    can_project = conflicting.any(dim=2)  # [G, D] (the diagonal is never < 0)
    drawn: dict[tuple[int, int], list[int]] = {}
    if num_domains > 2:
        needy = can_project.nonzero().tolist()
        if needy:
            generator = torch.Generator()
            for g, i in needy:
                drawn[g, i] = _draw(others[i], derive_seed(ctx.seed, ctx.step, g, i), generator)
            index = torch.tensor(needy, dtype=torch.int64)
            orders[index[:, 0], index[:, 1]] = torch.tensor([drawn[g, i] for g, i in needy], dtype=torch.int64)
    projected = torch.zeros(num_groups, num_domains, max(num_domains - 1, 0), dtype=torch.bool)
    groups = torch.arange(num_groups)
    for i in range(num_domains):
        if not bool(can_project[:, i].any()):
            continue
        row = weights[:, i, :]  # a view: the updates below write W
        for k in range(num_domains - 1):
            j = orders[:, i, k]
            norm_sq = diag[groups, j]
            column = grams[groups, :, j]  # [G, D]: <g_m, g_j> for every m
            dot = row[:, 0] * column[:, 0]  # summed left to right, as the reference does
            for m in range(1, num_domains):
                dot = dot + row[:, m] * column[:, m]
            hit = (norm_sq > 0) & (dot < 0)
            row[groups, j] = row[groups, j] - torch.where(hit, dot / torch.where(hit, norm_sq, 1.0), 0.0)
            projected[:, i, k] = hit

    hits: dict[int, list[list[int]]] = {}

    def info(g: int) -> dict:
        if not hits and bool(projected.any()):
            for gg, i, k in projected.nonzero().tolist():
                hits.setdefault(gg, []).append([i, int(orders[gg, i, k])])
        group_ctx = ctx.group(g)
        group_orders = [drawn.get((g, i)) or visiting_order(others[i], group_ctx, i) for i in range(num_domains)]
        return {"orders": group_orders, "projections": list(hits.get(g, []))}

    return BatchedWeighting(weights, LazyInfos(num_groups, info))
