"""Combination methods (a registry): Gramian [D, D] -> weight matrix W [D, D] (optionally also batched over
groups, [G, D, D] -> [G, D, D]). One small file per method."""

from mgs.surgery.methods import pcgrad, plain_sum  # noqa: F401  (registers the built-in methods)
from mgs.surgery.methods.base import (
    METHODS,
    BatchedWeighting,
    GroupContext,
    LazyInfos,
    Method,
    StepContext,
    Weighting,
    batched,
    derive_seed,
)

__all__ = ["METHODS", "BatchedWeighting", "GroupContext", "LazyInfos", "Method", "StepContext", "Weighting",
           "batched", "derive_seed"]
