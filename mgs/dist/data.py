"""Which prompts a rank samples, and the rule that a prompt's G completions live on one rank.

Every rank draws the step's global prompt list identically (same seeded streams), then takes every world_size-th
prompt starting at its rank (round robin: each domain spreads over the ranks in proportion). It samples all G
completions of its prompts itself, so GRPO's group statistics (mean and std over a prompt's G rewards) are computed
locally and exactly. `check_groups_local` verifies the rule on the scored rows.
"""

from __future__ import annotations

from typing import Hashable, Sequence, TypeVar

from mgs.dist.context import DistContext

T = TypeVar("T")


def rank_share(items: Sequence[T], ctx: DistContext) -> list[T]:
    """This rank's share of the step's prompts: items[rank], items[rank + world], ..."""
    return list(items[ctx.rank :: ctx.world_size])


def check_groups_local(group_keys: Sequence[Hashable], group_size: int, ctx: DistContext) -> None:
    """`group_keys`: one key per scored row (the prompt it answers, globally unique within the step). Rows come in
    consecutive blocks of `group_size` with one key each, and no key appears on two ranks."""
    if len(group_keys) % group_size:
        raise ValueError(f"rank {ctx.rank} holds {len(group_keys)} rows, not whole groups of {group_size}")
    keys = []
    for start in range(0, len(group_keys), group_size):
        block = set(group_keys[start : start + group_size])
        if len(block) != 1:
            raise ValueError(f"rank {ctx.rank}: rows {start}..{start + group_size - 1} mix prompts {sorted(map(str, block))};"
                             " a prompt's G samples must be consecutive on one rank")
        keys.append(next(iter(block)))
    seen: dict[Hashable, int] = {}
    for rank, theirs in enumerate(ctx.all_gather_object(keys)):
        for key in theirs:
            if key in seen and seen[key] != rank:
                raise ValueError(f"prompt {key!r} has samples on ranks {seen[key]} and {rank}; its group statistics "
                                 "would be wrong: give all G samples of a prompt to one rank")
            seen[key] = rank
