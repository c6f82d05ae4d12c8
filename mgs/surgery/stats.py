"""What one surgery step did, per group and for the whole model: cosines, conflicts, norms, weights, orders.

Everything derives from the (rank-summed) Gramians and the weights, so it is the same on every rank and costs no
extra pass over the gradients. Whole-model numbers use the sum of the groups' Gramians (= the Gramian of the
whole model). A pair *conflicts* in a group when the inner product of its original gradients is negative
(whatever the method does about it). Domain-pair keys are the two names sorted and joined by `__`.
`finite` is False when any group's Gramian holds a NaN/Inf (cheap detection of a non-finite gradient).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from mgs.surgery.weights import Weights

_LAYER_PART = re.compile(r"^layers\.(\d+)(?:\.(\w+))?$")


def pair_key(a: str, b: str) -> str:
    return "__".join(sorted((a, b)))


def _num(x: float) -> float | None:
    """JSON-safe float: NaN/Inf become None."""
    return x if math.isfinite(x) else None


def _norms(gram: torch.Tensor) -> torch.Tensor:
    """||g_i|| [..., D] from Gramians [..., D, D]."""
    return gram.diagonal(dim1=-2, dim2=-1).clamp(min=0).sqrt()


def _cosines(gram: torch.Tensor) -> torch.Tensor:
    """cos [..., D, D] from Gramians [..., D, D] (one or a stack); 0 where a norm is 0."""
    norms = _norms(gram)
    denom = norms[..., :, None] * norms[..., None, :]
    return torch.where(denom > 0, gram / torch.where(denom > 0, denom, 1.0), torch.zeros_like(gram))


@dataclass
class SurgeryStats:
    """Per-group and whole-model statistics of one `resolve` (or of `weights` + `make_stats`)."""

    domains: list[str]
    group_names: list[str]
    gramians: torch.Tensor  # [num_groups, D, D] float64, CPU
    weights: Weights
    method: str
    granularity: str
    seed: int
    step: int
    numels: list[int] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    family: str | None = None

    @property
    def finite(self) -> bool:
        return all(self.weights.finite)

    def _pairs(self) -> list[tuple[int, int, str]]:
        d = len(self.domains)
        return [(a, b, pair_key(self.domains[a], self.domains[b])) for a in range(d) for b in range(a + 1, d)]

    def conflicts(self) -> torch.Tensor:
        """[num_groups, D, D] bool: <g_a, g_b> < 0 inside the group."""
        return self.gramians < 0

    def total_gramian(self) -> torch.Tensor:
        return self.gramians.sum(dim=0)

    def sq_norms(self) -> torch.Tensor:
        """[D] float64: each domain's squared whole-model gradient norm (the diagonal of the summed Gramians, so
        global under a sharded reduce; NaN/inf when that domain's gradient holds one). No pass over gradients."""
        return self.total_gramian().diagonal().clone()

    def summary(self, prefix: str = "surgery/") -> dict[str, float]:
        """Flat scalars: `cos/<a>__<b>` (whole model), `conflict_frac/<a>__<b>` (fraction of groups where the pair
        conflicted), `norm_ratio/<a>__<b>` (||g_a|| / ||g_b||, whole model, a < b by name; inf when ||g_b|| = 0),
        `groups_conflicted_frac` (groups where any pair conflicted), `finite` (1.0 / 0.0)."""
        total = self.total_gramian()
        cos = _cosines(total)
        norms = total.diagonal().clamp(min=0).sqrt()
        conflicts = self.conflicts()
        num_groups = max(len(self.group_names), 1)
        out: dict[str, float] = {}
        any_conflict = torch.zeros(len(self.group_names), dtype=torch.bool)
        for a, b, key in self._pairs():
            out[f"{prefix}cos/{key}"] = float(cos[a, b])
            out[f"{prefix}conflict_frac/{key}"] = float(conflicts[:, a, b].sum()) / num_groups
            first, second = (a, b) if self.domains[a] < self.domains[b] else (b, a)
            num, den = float(norms[first]), float(norms[second])
            out[f"{prefix}norm_ratio/{key}"] = num / den if den > 0 else (math.inf if num > 0 else math.nan)
            any_conflict |= conflicts[:, a, b]
        out[f"{prefix}groups_conflicted_frac"] = float(any_conflict.sum()) / num_groups
        out[f"{prefix}finite"] = 1.0 if self.finite else 0.0
        return out

    def group_table(self) -> list[dict[str, Any]]:
        """One row per (group, domain pair): group, layer (int or None), part ('attn'/'mlp'/None), pair, cos,
        inner product, conflict. Ready for `pandas.DataFrame(rows)` and a layer x part heatmap."""
        cos = _cosines(self.gramians).tolist()  # all groups at once: one conversion, not ops per group
        inner = self.gramians.tolist()
        rows = []
        pairs = self._pairs()
        for index, name in enumerate(self.group_names):
            match = _LAYER_PART.match(name)
            layer, part = (int(match[1]), match[2]) if match else (None, None)
            for a, b, key in pairs:
                value = inner[index][a][b]
                rows.append({"group": name, "layer": layer, "part": part, "pair": key, "cos": cos[index][a][b],
                             "inner": value, "conflict": value < 0})
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-serialisable (non-finite numbers become null)."""
        # Whole-stack tensors converted once (per-group tensor ops cost ~60 ms a step at 272 groups).
        cos = _cosines(self.gramians).tolist()
        norms = _norms(self.gramians).tolist()
        inner = self.gramians.tolist()
        matrices = self.weights.matrices.tolist()
        coeffs = self.weights.coeffs.tolist()
        pairs = self._pairs()
        groups = []
        for index, name in enumerate(self.group_names):
            info = dict(self.weights.infos[index])
            if "orders" in info:  # indices -> names
                info["orders"] = {self.domains[i]: [self.domains[j] for j in o] for i, o in enumerate(info["orders"])}
            if "projections" in info:
                info["projections"] = [[self.domains[i], self.domains[j]] for i, j in info["projections"]]
            groups.append(
                {
                    "name": name,
                    "numel": self.numels[index] if self.numels else None,
                    "finite": self.weights.finite[index],
                    "norms": {d: _num(n) for d, n in zip(self.domains, norms[index])},
                    "cos": {key: _num(cos[index][a][b]) for a, b, key in pairs},
                    "conflicts": [key for a, b, key in pairs if inner[index][a][b] < 0],
                    "weights": [[_num(x) for x in row] for row in matrices[index]],
                    "coeffs": {d: _num(c) for d, c in zip(self.domains, coeffs[index])},
                    **info,
                }
            )
        return {
            "domains": list(self.domains),
            "method": self.method,
            "granularity": self.granularity,
            "family": self.family,
            "seed": self.seed,
            "step": self.step,
            "finite": self.finite,
            "unmatched": list(self.unmatched),
            "summary": {k: _num(v) for k, v in self.summary(prefix="").items()},
            "groups": groups,
        }
