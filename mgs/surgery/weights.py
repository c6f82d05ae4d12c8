"""Step 2 of 3: all groups' (rank-summed) Gramians -> per-group weight matrices and combine coefficients.

Runs on the CPU in float64 (the Gramians are tiny) and is a pure function of (Gramians, method, seed, step), so
every rank derives identical weights. A group whose Gramian is not finite (a NaN/Inf gradient) gets the plain
sum (W = I) and `finite=False`: the combined gradient is then non-finite too, and the caller skips the step.
A method with a batched form (`methods.base.batched`) runs once on all groups; otherwise once per group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from mgs.surgery.methods import METHODS, GroupContext, LazyInfos, StepContext

_SKIPPED = {"skipped": "non-finite Gramian"}


@dataclass
class Weights:
    """`matrices`: W [num_groups, D, D] float64 (row i = domain i's projected gradient as coefficients on the
    original rows); `coeffs`: [num_groups, D] = column sums of W (combined = coeffs[g] @ G); `infos`: the
    method's per-group extras (possibly built on first access); `finite`: per-group flag, False where the
    Gramian had a NaN/Inf."""

    matrices: torch.Tensor
    coeffs: torch.Tensor
    infos: Sequence[dict[str, Any]]
    finite: list[bool]


def weights(
    gramians: torch.Tensor, method: str = "pcgrad", seed: int = 0, step: int = 0, *, batched: bool = True
) -> Weights:
    """Apply `method` (a name in `METHODS`) to every group's Gramian in `gramians` [num_groups, D, D].
    `batched=False` forces the per-group form of a method that also has a batched one (the reference)."""
    if gramians.dim() != 3 or gramians.shape[1] != gramians.shape[2]:
        raise ValueError(f"gramians must be [num_groups, D, D]; got {tuple(gramians.shape)}")
    apply = METHODS.get(method)
    grams = gramians.detach().to(device="cpu", dtype=torch.float64)
    finite_mask = torch.isfinite(grams).flatten(1).all(dim=1)
    finite = finite_mask.tolist()
    num_groups, num_domains = grams.shape[0], grams.shape[1]
    apply_batched = getattr(apply, "batched", None) if batched else None
    if apply_batched is not None:
        stacked, infos = _batched(apply_batched, grams, finite_mask, finite, StepContext(seed=seed, step=step), method)
    else:
        stacked = torch.eye(num_domains, dtype=torch.float64).repeat(num_groups, 1, 1)
        infos = []
        for index, gram in enumerate(grams.unbind(0)):
            if not finite[index]:
                infos.append(dict(_SKIPPED))
                continue
            result = apply(gram, GroupContext(seed=seed, step=step, group_index=index))
            _check_shape(tuple(result.matrix.shape), (num_domains, num_domains), method)
            stacked[index] = result.matrix
            infos.append(result.info)
    return Weights(matrices=stacked, coeffs=stacked.sum(dim=1), infos=infos, finite=finite)


def _batched(apply_batched, grams, finite_mask, finite: list[bool], ctx: StepContext, method: str):
    """All groups in one call; non-finite groups enter as zero Gramians and leave as W = I."""
    num_groups, num_domains = grams.shape[0], grams.shape[1]
    all_finite = all(finite)
    mask = finite_mask[:, None, None]
    result = apply_batched(grams if all_finite else torch.where(mask, grams, 0.0), ctx)
    _check_shape(tuple(result.matrices.shape), (num_groups, num_domains, num_domains), method)
    if len(result.infos) != num_groups:
        raise ValueError(f"method {method!r} returned {len(result.infos)} infos for {num_groups} groups")
    if all_finite:
        return result.matrices.to(torch.float64), result.infos
    eye = torch.eye(num_domains, dtype=torch.float64)
    matrices = torch.where(mask, result.matrices.to(torch.float64), eye)
    inner = result.infos
    return matrices, LazyInfos(num_groups, lambda g: inner[g] if finite[g] else dict(_SKIPPED))


def _check_shape(got: tuple, expected: tuple, method: str) -> None:
    if got != expected:
        raise ValueError(f"method {method!r} returned W {got}; expected {list(expected)}")
