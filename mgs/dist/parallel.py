"""How the model is spread over ranks (`PARALLEL` registry: none, ddp, fsdp2) and what the per-domain step needs
to know about it: how to wrap the model, when a micro-batch's backward synchronises, where a gradient's rank-local
part is, and whether ranks hold replicas or shards of each gradient.

All reductions are SUMS, never averages: the loss of every micro-batch is already divided by the GLOBAL number of
completion tokens of the step (all ranks, all domains), so the sum over ranks of the per-rank contributions is
exactly the single-process gradient of the same global batch. DDP gets a summing comm hook; FSDP2 gets a gradient
divide factor of 1.

- ddp: every rank holds full gradients. A domain's micro-batches run under `no_sync()` except the last one, whose
  backward all-reduces (sums) the domain's accumulated local gradient: one all-reduce per domain, overlapped with
  that backward. Gramians are then identical on every rank; they are averaged anyway so that every rank derives
  the surgery weights from bit-identical numbers.
- fsdp2: `fully_shard` on every decoder layer and on the root; every micro-batch's backward reduce-scatters (sums)
  into the sharded gradient, so a domain's gradient is a DTensor shard per rank. Gramians of the local shards
  are partial sums: one all-reduce sums them. The combine is local, clipping uses torch's DTensor-aware
  `clip_grad_norm_`.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager

import torch

from mgs.dist.context import DistContext
from mgs.registry import Registry


@dataclass(frozen=True)
class Parallel:
    """One way of spreading the model. `sharded`: gradients are shards (partial sums add up over ranks) rather
    than replicas (every rank holds the same full gradient)."""

    name: str
    sharded: bool
    wrap: Callable[[torch.nn.Module, DistContext], torch.nn.Module]
    sync: Callable[[torch.nn.Module, bool], ContextManager]  # (model, is the domain's last micro-batch) -> context
    # (model) -> context in which forwards of the model are rank-local (no collectives): rollouts, eval, reference
    # log-probs, where ranks run different numbers of forwards. Collective on entry and exit for fsdp2.
    full_params: Callable[[torch.nn.Module], ContextManager] = lambda model: contextlib.nullcontext()

    def local(self, tensor: torch.Tensor) -> torch.Tensor:
        """The rank-local part of a parameter or gradient (a DTensor's shard; a plain tensor itself)."""
        to_local = getattr(tensor, "to_local", None)
        return to_local() if to_local is not None else tensor

    def combine_partials(self, ctx: DistContext) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The reduce for per-rank partial quantities (stacked Gramians, squared norms): the sum for shards, the
        mean for replicas (equal values; averaging makes them bit-identical on every rank). None in one process."""
        if not ctx.distributed:
            return None
        world = ctx.world_size

        def reduce(t: torch.Tensor) -> torch.Tensor:
            t = t.contiguous()
            moved = t.to(ctx.comm_device)
            ctx.all_reduce_sum(moved)
            if not self.sharded:
                moved = moved / world
            return moved.to(t.device)

        return reduce


PARALLEL: Registry[Parallel] = Registry("parallel")


def _no_wrap(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    if ctx.world_size > 1:
        raise ValueError(f"train.parallel=none with {ctx.world_size} processes: every rank would train alone; set "
                         "train.parallel=ddp or fsdp2")
    return model


PARALLEL.register("none")(Parallel("none", sharded=False, wrap=_no_wrap,
                                   sync=lambda model, last: contextlib.nullcontext()))


# ------------------------------------------------------------------------------------------------------------ ddp


def _sum_hook(state, bucket):
    """DDP comm hook: all-reduce SUM of the bucket (DDP's default divides by the world size)."""
    import torch.distributed as dist

    fut = dist.all_reduce(bucket.buffer(), async_op=True).get_future()
    return fut.then(lambda f: f.value()[0])


def _wrap_ddp(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    model = model.to(ctx.device)
    ddp = DistributedDataParallel(
        model,
        device_ids=[ctx.device] if ctx.device.type == "cuda" else None,
        forward_sync_buffers=False,  # no collective in forward: buffers (rotary tables) are constant
    )
    ddp.register_comm_hook(None, _sum_hook)
    return ddp


def _ddp_sync(model: torch.nn.Module, last: bool) -> ContextManager:
    return contextlib.nullcontext() if last else model.no_sync()


PARALLEL.register("ddp")(Parallel("ddp", sharded=False, wrap=_wrap_ddp, sync=_ddp_sync))


# ---------------------------------------------------------------------------------------------------------- fsdp2


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The repeated blocks of a transformer (the largest ModuleList named layers / h / blocks / layer)."""
    best: list[torch.nn.Module] = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.split(".")[-1] in ("layers", "h", "blocks", "layer"):
            if len(module) > len(best):
                best = list(module)
    return best


def _wrap_fsdp2(model: torch.nn.Module, ctx: DistContext) -> torch.nn.Module:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, fully_shard

    model = model.to(ctx.device)
    mesh = init_device_mesh(ctx.device.type, (ctx.world_size,))
    layers = decoder_layers(model)
    if not layers:
        raise ValueError("fsdp2: found no decoder layers (a ModuleList named layers/h/blocks) to shard; use "
                         "train.parallel=ddp for this model")
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.set_gradient_divide_factor(1.0)  # reduce-scatter sums: the losses carry the global normaliser
            module.set_force_sum_reduction_for_comms(True)  # plain SUM (gloo has no PREMUL_SUM)
    return model


@contextlib.contextmanager
def _fsdp2_full_params(model: torch.nn.Module):
    """Gather every FSDP unit's full parameters once and keep them until the block ends, so that forwards inside it
    (generation: ranks stop decoding at different steps) run no collective. Costs the full model's parameters per
    rank for the duration (e.g. 16 GB for an 8B model in bf16), on top of the sharded training state."""
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
    for unit in units:  # the same order on every rank: the all-gathers pair up
        unit.unshard()
    # transformers' generate sees fully_shard's marker and then all-reduces a "finished" flag every decoding step
    # (synced_gpus) -- a hang when one rank generates alone (eval) or runs more generate calls than another
    managed = getattr(model, "_is_fsdp_managed_module", None)
    model._is_fsdp_managed_module = False
    try:
        yield model
    finally:
        model._is_fsdp_managed_module = managed
        for unit in units:
            unit.reshard()  # local: frees the gathered parameters
            # training: layers reshard after forward; the root keeps FSDP's default for roots (no reshard)
            unit.set_reshard_after_forward(unit is not model, recurse=False)


PARALLEL.register("fsdp2")(Parallel("fsdp2", sharded=True, wrap=_wrap_fsdp2,
                                    sync=lambda model, last: contextlib.nullcontext(),
                                    full_params=_fsdp2_full_params))
