"""`resolve`: per-domain gradients -> one combined gradient, with conflicts resolved inside each group.

It is the three public steps in a row: `local_gramians` (one pass over the gradients) -> `reduce` (the caller's
sum over ranks, one call on all groups' [num_groups, D, D] Gramians at once) -> `weights` (tiny, CPU, float64,
identical on every rank) -> `combine` (one more pass, local). Sharded callers (FSDP) pass their local shards and
an all-reduce as `reduce` and get exactly the result of resolving the unsharded gradients.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch

from mgs.surgery.gramian import Grads, StackedGrads, combine, grad_domains, local_gramians, param_names
from mgs.surgery.partition import Groups, Rules, cached_partition
from mgs.surgery.stats import SurgeryStats
from mgs.surgery.weights import weights

Reduce = Callable[[torch.Tensor], "torch.Tensor | None"]
NONFINITE_POLICIES = ("flag", "raise")


def resolve(
    domain_grads: Grads,
    granularity: str = "module",
    method: str = "pcgrad",
    seed: int = 0,
    step: int = 0,
    reduce: Reduce | None = None,
    *,
    rules: Rules | None = None,
    family: str | None = None,
    domains: Sequence[str] | None = None,
    groups: Mapping[str, Sequence[str]] | None = None,
    out: Mapping[str, torch.Tensor] | None = None,
    on_nonfinite: str = "flag",
    impl: str = "auto",
) -> tuple[dict[str, torch.Tensor], SurgeryStats]:
    """Combine per-domain gradients group by group. Returns `(combined {param_name: Tensor}, stats)`.

    domain_grads: `{domain: {param_name: Tensor}}` (same names/shapes in every domain) or `StackedGrads`.
    granularity / rules / family: how to group the parameters (see `partition`; memoised per set of names); or
        pass `groups` directly (e.g. computed once with `partition` at start-up).
    method: a name in `METHODS` ("sum", "pcgrad", ...). seed, step: seed the method's randomness.
    reduce: sums the stacked local Gramians [num_groups, D, D] over ranks (returns the sum, or None after
        reducing in place like `torch.distributed.all_reduce`). None = single process / full gradients.
    domains: the domains the caller expects (a missing one is an error); default: sorted names present.
    out: `{param_name: Tensor}` to write the combined gradients into (e.g. `{n: p.grad}`).
    on_nonfinite: "flag" (default: `stats.finite` is False, non-finite groups get the plain sum) or "raise".
    impl: "auto" (default), "torch" or "triton": how the two passes run (see mgs.surgery.gramian).
    """
    if on_nonfinite not in NONFINITE_POLICIES:
        raise ValueError(f"on_nonfinite must be one of {NONFINITE_POLICIES}; got {on_nonfinite!r}")
    order = grad_domains(domain_grads, domains)
    names = param_names(domain_grads, order)
    if groups is None:
        groups = cached_partition(names, granularity, rules=rules, family=family)
    else:
        _check_groups(groups, names)
    grams = local_gramians(domain_grads, groups, order, impl=impl)
    if reduce is not None:
        reduced = reduce(grams)
        grams = grams if reduced is None else reduced
    cpu_grams = grams.detach().to("cpu", torch.float64)  # the step's one device -> host read
    result = weights(cpu_grams, method=method, seed=seed, step=step)
    stats = SurgeryStats(
        domains=order,
        group_names=list(groups),
        gramians=cpu_grams,
        weights=result,
        method=method,
        granularity=getattr(groups, "granularity", "custom"),
        seed=seed,
        step=step,
        numels=[sum(_numel(domain_grads, order, n) for n in members) for members in groups.values()],
        unmatched=list(getattr(groups, "unmatched", [])),
        family=getattr(groups, "family", None),
    )
    if on_nonfinite == "raise" and not stats.finite:
        bad = [g for g, ok in zip(stats.group_names, result.finite) if not ok]
        raise FloatingPointError(f"non-finite gradients in groups {bad[:5]} (of {len(bad)}); skip this step")
    combined = combine(domain_grads, groups, result.coeffs, out=out, domains=order, impl=impl)
    return combined, stats


def _numel(grads: Grads, domains: Sequence[str], name: str) -> int:
    if isinstance(grads, StackedGrads):
        tensor = grads.tensors[name]
        return tensor.numel() // max(tensor.shape[0], 1)
    return grads[domains[0]][name].numel()


def _check_groups(groups: Mapping[str, Sequence[str]], names: Sequence[str]) -> None:
    """Every parameter in exactly one group, and nothing else."""
    seen: dict[str, str] = {}
    for group, members in groups.items():
        for name in members:
            if name in seen:
                raise ValueError(f"parameter {name!r} is in groups {seen[name]!r} and {group!r}")
            seen[name] = group
    missing = [n for n in names if n not in seen]
    unknown = [n for n in seen if n not in set(names)]
    if missing or unknown:
        raise ValueError(
            f"groups do not match the gradients: {len(missing)} parameters in no group (e.g. {missing[:3]}), "
            f"{len(unknown)} grouped names without a gradient (e.g. {unknown[:3]}); rebuild them with partition()"
        )
