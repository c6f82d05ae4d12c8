"""Exact per-domain gradients and MGS on many processes (torchrun; DDP or FSDP2; NCCL on GPUs, gloo on CPU).

The only package of mgs that knows torch.distributed / DDP / FSDP2 / DTensor. It fills the hooks of the trainer's
per-domain step (`mgs.rl.step.update`): a domain-synchronous schedule with zero-weight placeholder micro-batches
and a global token normaliser (`schedule`), summing gradient reductions and shard-local buffers (`parallel`),
one all-reduce of all groups' Gramians for surgery (`step`), metrics aggregated over ranks (`metrics`), startup
checks (`checks`), prompt sharding (`data`) and torch.distributed.checkpoint checkpoints (`checkpoint`).
See docs/distributed.md.
"""

from mgs.dist import checkpoint
from mgs.dist.context import DistContext, context_of_group, init_from_env, shutdown
from mgs.dist.parallel import PARALLEL, Parallel, decoder_layers
from mgs.dist.schedule import placeholder_sample, sync_schedule
from mgs.dist.step import distributed_update

__all__ = [
    "PARALLEL",
    "checkpoint",
    "DistContext",
    "Parallel",
    "context_of_group",
    "decoder_layers",
    "distributed_update",
    "init_from_env",
    "placeholder_sample",
    "shutdown",
    "sync_schedule",
]
