"""Startup checks of a multi-process run, each failing with an error that says what to change.

- every rank groups the parameters identically for surgery (a checksum of the partition, all-gathered): different
  groupings would make the one all-reduce of stacked Gramians add unrelated groups;
- the step's prompts split evenly over ranks (same rollout work per rank);
- every domain of the mix gets at least one prompt per step (otherwise its weight is silently zero).
"""

from __future__ import annotations

import hashlib
import json
from typing import Mapping, Sequence

from mgs.dist.context import DistContext


def partition_checksum(groups: Mapping[str, Sequence[str]]) -> str:
    """sha256 of the ordered {group: [parameter names]} (order matters: Gramians are stacked in it)."""
    payload = json.dumps([[g, list(m)] for g, m in groups.items()], separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()


def check_same_partition(groups: Mapping[str, Sequence[str]], ctx: DistContext) -> str:
    """All ranks must hold the same grouping; returns its checksum."""
    mine = partition_checksum(groups)
    sums = ctx.all_gather_object((mine, len(groups)))
    differ = [r for r, (s, _) in enumerate(sums) if s != sums[0][0]]
    if differ:
        raise RuntimeError(
            f"ranks {differ} group the parameters differently from rank 0 for surgery (groups per rank: "
            f"{[n for _, n in sums]}); every rank must load the same model, LoRA config and surgery.granularity/"
            "rules (check model.name and surgery.* are identical on every node)")
    return mine


def check_batch(prompts_per_step: int, world_size: int) -> None:
    if prompts_per_step % world_size:
        lower = prompts_per_step - prompts_per_step % world_size
        raise ValueError(
            f"grpo.prompts_per_step={prompts_per_step} does not split evenly over {world_size} ranks; use a multiple "
            f"of {world_size} (e.g. {lower or world_size} or {lower + world_size})")


def check_proportions(counts: Mapping[str, int], weights: Mapping[str, float], prompts_per_step: int) -> None:
    """`counts`: prompts per domain of a step (mgs.rl.trainer.allocate); a weighted domain with none is an error."""
    starved = [d for d, w in weights.items() if w > 0 and counts.get(d, 0) == 0]
    if starved:
        raise ValueError(
            f"domains {starved} get no prompt per step with grpo.prompts_per_step={prompts_per_step} and weights "
            f"{dict(weights)}; raise grpo.prompts_per_step (at least {len(weights)}) or the weights of {starved}")
