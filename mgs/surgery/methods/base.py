"""The interface of a combination method: a group's Gramian G G^T [D, D] -> a weight matrix W [D, D].

Row i of W expresses domain i's (possibly projected) gradient as coefficients on the *original* domain
gradients, so the group's combined gradient is sum_i (W @ G)_i = (1^T W) @ G. Methods that only ever move
inside the span of the rows (sum, PCGrad, ...) are exactly expressible this way, and because W depends on the
Gramian alone, every rank of a sharded model derives the same W from the all-reduced Gramians.

A method is registered in `METHODS` with `@METHODS.register("name")` and called as
`method(gram, ctx) -> Weighting`, where `gram` is float64 on the CPU and `ctx` hands out the per-domain random
generators (seeded from (seed, step, group index, i) only, never from global RNG state).

A method may also provide a batched form, registered with `@batched(method)`: all groups' Gramians
[G, D, D] -> W [G, D, D] in a few tensor ops instead of G Python calls (the per-step cost that matters at ~60-270
groups). `weights` uses it when present; the per-group method stays the reference, and the batched form must
give the same W (bit-for-bit where possible) and the same per-group infos (which it may build lazily: they are
read only when the stats are written).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

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


@dataclass(frozen=True)
class StepContext:
    """Where a batched method is applied: group g of its Gramians is group index g of `GroupContext`."""

    seed: int
    step: int

    def group(self, group_index: int) -> GroupContext:
        return GroupContext(seed=self.seed, step=self.step, group_index=group_index)


class LazyInfos(Sequence):
    """Per-group info dicts built on first access (`make(g)`), then kept: a sequence of G dicts."""

    def __init__(self, length: int, make: Callable[[int], dict[str, Any]]) -> None:
        self._length = length
        self._make = make
        self._built: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return self._length

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._length))]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError(f"group index {index} out of range for {self._length} groups")
        if index not in self._built:
            self._built[index] = self._make(index)
        return self._built[index]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(self._length))

    def __repr__(self) -> str:
        return f"LazyInfos({list(self)!r})"


@dataclass
class BatchedWeighting:
    """`matrices`: W [G, D, D] float64; `infos`: G JSON-serialisable dicts (a list or a `LazyInfos`)."""

    matrices: torch.Tensor
    infos: Sequence[dict[str, Any]]


BatchedMethod = Callable[[torch.Tensor, StepContext], BatchedWeighting]


def batched(method: Method) -> Callable[[BatchedMethod], BatchedMethod]:
    """`@batched(pcgrad)` above `pcgrad_batched(grams [G, D, D], ctx: StepContext) -> BatchedWeighting`: attaches
    the batched form to the registered per-group method (as `method.batched`), where `weights` finds it."""

    def attach(fn: BatchedMethod) -> BatchedMethod:
        if getattr(method, "batched", None) is not None:
            raise ValueError(f"{method!r} already has a batched form ({method.batched!r})")
        method.batched = fn  # type: ignore[attr-defined]
        return fn

    return attach
