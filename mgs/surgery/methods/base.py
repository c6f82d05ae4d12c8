"""The interface of a combination method: a group's Gramian G G^T [D, D] -> a weight matrix W [D, D].

Row i of W expresses domain i's (possibly projected) gradient as coefficients on the *original* domain
gradients, so the group's combined gradient is sum_i (W @ G)_i = (1^T W) @ G. Methods that only ever move
inside the span of the rows (sum, PCGrad, ...) are exactly expressible this way, and because W depends on the
Gramian alone, every rank of a sharded model derives the same W from the all-reduced Gramians.

A method is registered in `METHODS` with `@METHODS.register("name")` and called as
`method(gram, ctx) -> Weighting`, where `gram` is float64 on the CPU and `ctx` hands out the per-domain random
generators (seeded from (seed, step, group index, i) only, never from global RNG state).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from mgs.registry import Registry


def derive_seed(seed: int, step: int, group_index: int, domain_index: int) -> int:
    """A 63-bit seed from (seed, step, group index, domain index): the same on every rank and every run."""
    packed = struct.pack("<4q", seed, step, group_index, domain_index)
    return int.from_bytes(hashlib.blake2b(packed, digest_size=8).digest(), "little") & ((1 << 63) - 1)


@dataclass(frozen=True)
class GroupContext:
    """Where a method is applied: used only to seed its randomness."""

    seed: int
    step: int
    group_index: int

    def generator(self, domain_index: int) -> torch.Generator:
        """A fresh CPU generator for domain `domain_index` of this group."""
        return torch.Generator().manual_seed(derive_seed(self.seed, self.step, self.group_index, domain_index))


@dataclass
class Weighting:
    """`matrix`: W [D, D] float64; `info`: JSON-serialisable extras for the stats (e.g. PCGrad's orders)."""

    matrix: torch.Tensor
    info: dict[str, Any] = field(default_factory=dict)


Method = Callable[[torch.Tensor, GroupContext], Weighting]
METHODS: Registry[Method] = Registry("surgery method")
