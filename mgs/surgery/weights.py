"""Step 2 of 3: all groups' (rank-summed) Gramians -> per-group weight matrices and combine coefficients.

Runs on the CPU in float64 (the Gramians are tiny) and is a pure function of (Gramians, method, seed, step), so
every rank derives identical weights. A group whose Gramian is not finite (a NaN/Inf gradient) gets the plain
sum (W = I) and `finite=False`: the combined gradient is then non-finite too, and the caller skips the step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from mgs.surgery.methods import METHODS, GroupContext


@dataclass
class Weights:
    """`matrices`: W [num_groups, D, D] float64 (row i = domain i's projected gradient as coefficients on the
    original rows); `coeffs`: [num_groups, D] = column sums of W (combined = coeffs[g] @ G); `infos`: the
    method's per-group extras; `finite`: per-group flag, False where the Gramian had a NaN/Inf."""

    matrices: torch.Tensor
    coeffs: torch.Tensor
    infos: list[dict[str, Any]]
    finite: list[bool]


def weights(gramians: torch.Tensor, method: str = "pcgrad", seed: int = 0, step: int = 0) -> Weights:
    """Apply `method` (a name in `METHODS`) to every group's Gramian in `gramians` [num_groups, D, D]."""
    if gramians.dim() != 3 or gramians.shape[1] != gramians.shape[2]:
        raise ValueError(f"gramians must be [num_groups, D, D]; got {tuple(gramians.shape)}")
    apply = METHODS.get(method)
    grams = gramians.detach().to(device="cpu", dtype=torch.float64)
    finite = torch.isfinite(grams).flatten(1).all(dim=1).tolist()
    num_domains = grams.shape[1]
    stacked = torch.eye(num_domains, dtype=torch.float64).repeat(grams.shape[0], 1, 1)
    infos: list[dict[str, Any]] = []
    for index, gram in enumerate(grams.unbind(0)):
        if not finite[index]:
            infos.append({"skipped": "non-finite Gramian"})
            continue
        result = apply(gram, GroupContext(seed=seed, step=step, group_index=index))
        if tuple(result.matrix.shape) != (num_domains, num_domains):
            raise ValueError(
                f"method {method!r} returned W {tuple(result.matrix.shape)}; expected [{num_domains}, {num_domains}]"
            )
        stacked[index] = result.matrix
        infos.append(result.info)
    return Weights(matrices=stacked, coeffs=stacked.sum(dim=1), infos=infos, finite=finite)
