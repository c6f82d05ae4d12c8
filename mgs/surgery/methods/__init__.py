"""Combination methods (a registry): Gramian [D, D] -> weight matrix W [D, D]. One small file per method."""

from mgs.surgery.methods import pcgrad, plain_sum  # noqa: F401  (registers the built-in methods)
from mgs.surgery.methods.base import METHODS, GroupContext, Method, Weighting, derive_seed

__all__ = ["METHODS", "GroupContext", "Method", "Weighting", "derive_seed"]
