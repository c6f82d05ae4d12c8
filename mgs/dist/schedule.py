"""The domain-synchronous micro-batch schedule: every rank runs the same domain's micro-batches at the same time.

Why: a gradient reduction (DDP all-reduce, FSDP2 reduce-scatter) mixes whatever the ranks just back-propagated. If
rank 0 back-propagates a math sample while rank 1 back-propagates a chat sample, the reduced gradient is neither
(the official MGS code's mistake). Here each rank plans its own micro-batches with `mgs.rl.step.plan_schedule`, the
per-domain micro-batch counts are maximised over ranks, and a rank with fewer micro-batches of a domain runs
zero-weight placeholders (a real forward/backward whose loss is multiplied by 0: FSDP2's all-gathers and the
reductions still happen in lockstep, the gradient is unchanged). The loss denominator is the GLOBAL number of
completion tokens (an all-reduce before any forward), so the result does not depend on how samples fall on ranks.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch

from mgs.dist.context import DistContext
from mgs.rl.step import MicroBatch, Schedule, TrainSample, plan_schedule


def sync_schedule(
    samples: Sequence[TrainSample],
    domain_order: Sequence[str],
    micro_batch_size: int,
    unit: str,
    ctx: DistContext,
) -> Schedule:
    """This rank's schedule for its `samples`, aligned with every other rank's (same domains, same number of
    micro-batches per domain, same denominator). Two small collectives: token totals and micro-batch counts."""
    local = plan_schedule(samples, domain_order, micro_batch_size, unit,
                          loss_denominator=float(sum(len(s.completion_ids) for s in samples)))
    counts = Counter(mb.domain for mb in local.micro_batches)
    global_counts = ctx.max_ints([counts.get(d, 0) for d in domain_order])
    (denominator,) = ctx.sum_floats([local.loss_denominator])
    present = tuple(d for d, n in zip(domain_order, global_counts) if n > 0)
    absent = tuple(d for d in domain_order if d not in present)
    mbs: list[MicroBatch] = []
    for domain, target in zip(domain_order, global_counts):
        mine = [mb for mb in local.micro_batches if mb.domain == domain]
        mbs.extend(mine + [MicroBatch(domain, ())] * (target - len(mine)))
    return Schedule(present, tuple(mbs), denominator, absent)


def placeholder_sample(pad_id: int, with_reference: bool) -> TrainSample:
    """The sample a placeholder micro-batch runs (its loss is multiplied by 0): two pad tokens."""
    return TrainSample("", [pad_id], [pad_id], 0.0,
                       torch.zeros(1, dtype=torch.float32) if with_reference else None)
