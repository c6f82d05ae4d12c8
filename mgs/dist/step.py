"""The per-domain step on many ranks: `mgs.rl.step.update` with the distributed hooks filled in.

This rank's samples -> a domain-synchronous schedule (mgs.dist.schedule) -> `update` with
- `placeholder`: the zero-weight sample empty micro-batches run (lockstep collectives, no bias),
- `sync`: DDP's `no_sync` for all but the micro-batch after which the gradient is read,
- `local`: the rank-local shard of FSDP2's DTensor gradients (buffers, Gramians and the combine work on shards),
- `surgery_reduce`: ONE all-reduce of all groups' stacked Gramians [num_groups, D, D] (sum of shard partials for
  FSDP2, mean of the identical replicas for DDP), also used for the per-domain squared gradient norms.
Surgery's random domain order is seeded from (seed, step, group, domain) in mgs.surgery, so every rank derives the
same weights from the same reduced Gramians, and each rank combines its own shard locally.
"""

from __future__ import annotations

from typing import Sequence

import torch

from mgs.dist.context import DistContext
from mgs.dist.parallel import Parallel
from mgs.dist.schedule import placeholder_sample, sync_schedule
from mgs.rl.step import StepOutcome, StepSettings, TrainSample, update


def distributed_update(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    samples: Sequence[TrainSample],
    domain_order: Sequence[str],
    settings: StepSettings,
    *,
    step: int,
    pad_id: int,
    micro_batch_size: int,
    unit: str,
    ctx: DistContext,
    parallel: Parallel,
    keep_domain_grads: bool = False,
) -> StepOutcome:
    """One optimizer step from this rank's `samples`; the update equals the single-process update on the union of
    all ranks' samples. Returns this rank's outcome (metrics still per rank: see mgs.dist.metrics)."""
    schedule = sync_schedule(samples, domain_order, micro_batch_size, unit, ctx)
    return update(
        model, optimizer, samples, schedule, settings, step=step, pad_id=pad_id,
        surgery_reduce=parallel.combine_partials(ctx),
        keep_domain_grads=keep_domain_grads,
        placeholder=placeholder_sample(pad_id, with_reference=bool(settings.kl_coef)) if ctx.distributed else None,
        sync=lambda last: parallel.sync(model, last),
        local=parallel.local,
    )
