"""Modular gradient surgery: combine one gradient per domain, resolving conflicts inside each module group.

`combined, stats = resolve(domain_grads, granularity="module", method="pcgrad", seed=0, step=0, reduce=None)`.
The work goes through the per-group Gramian G G^T [D, D] only, in three public steps that sharded callers run
themselves: `local_gramians` -> (sum over ranks) -> `weights` -> `combine`. Methods (`METHODS`: sum, pcgrad,
each also batched over groups) and granularities (`GRANULARITIES`: tensor, module, block, global, regex) are
registries; model-family naming rules live in `FAMILIES`. The fixed per-step cost is kept small: the partition
is memoised (`cached_partition`), the weights run on all groups at once, the Gramians are read to the host
once, and per-group infos are built when the stats are read. Imports torch + stdlib (+ mgs.registry) only.
"""

from mgs.surgery.families import FAMILIES, Family, register_family
from mgs.surgery.gramian import StackedGrads, combine, local_gramians
from mgs.surgery.methods import METHODS, GroupContext, Weighting, batched, derive_seed
from mgs.surgery.partition import GRANULARITIES, Groups, cached_partition, canonical_name, partition
from mgs.surgery.resolve import resolve
from mgs.surgery.stats import SurgeryStats, pair_key
from mgs.surgery.weights import Weights, weights

__all__ = [
    "FAMILIES",
    "GRANULARITIES",
    "METHODS",
    "Family",
    "GroupContext",
    "Groups",
    "StackedGrads",
    "SurgeryStats",
    "Weighting",
    "Weights",
    "batched",
    "cached_partition",
    "canonical_name",
    "combine",
    "derive_seed",
    "local_gramians",
    "pair_key",
    "partition",
    "register_family",
    "resolve",
    "weights",
]
