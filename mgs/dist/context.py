"""The process group of a multi-process run: who am I (rank, world size, device) and the few collectives MGS needs.

Why a small object instead of calling torch.distributed everywhere: the rest of mgs never imports torch.distributed
(docs/contracts.md); it receives plain callables built here (`sum_over_ranks`, `all_gather_object`) or asks
`ctx.is_main` before writing files. A single-process run gets `DistContext.single()` and every collective becomes the
identity, so the same code path runs with and without torchrun.

Launch: `torchrun --nproc-per-node N -m mgs train CONFIG train.parallel=ddp|fsdp2`; torchrun sets RANK, WORLD_SIZE,
LOCAL_RANK, MASTER_ADDR/PORT and `init_from_env` joins the group (NCCL on CUDA, gloo on CPU).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None  # None = single process, no process group

    @staticmethod
    def single(device: str | torch.device = "cpu") -> "DistContext":
        return DistContext(0, 1, 0, torch.device(device), None)

    @property
    def distributed(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -------------------------------------------------------------------------------------------- collectives
    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """In-place sum over ranks (identity in a single process); returns the tensor."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def sum_floats(self, values: list[float]) -> list[float]:
        """Sum a list of Python floats over ranks in float64 (counts, token totals)."""
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def max_ints(self, values: list[int]) -> list[int]:
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.int64, device=self.comm_device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return [int(v) for v in t.tolist()]

    def all_gather_object(self, obj: Any) -> list[Any]:
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    @property
    def comm_device(self) -> torch.device:
        """Where small tensors for collectives live: NCCL needs CUDA tensors, gloo CPU ones."""
        return self.device if self.backend == "nccl" else torch.device("cpu")


def init_from_env(device: str = "auto", backend: str | None = None, timeout_s: float = 1800.0) -> DistContext:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

    device "auto": cuda:LOCAL_RANK when CUDA is available, else cpu. backend default: nccl on CUDA, gloo on CPU.
    Without torchrun's variables this is an error that says how to launch."""
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise RuntimeError(f"train.parallel needs a torchrun launch (missing environment variables {missing}); run "
                           "`torchrun --nproc-per-node N -m mgs train CONFIG train.parallel=ddp` (or fsdp2)")
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if dev.index is None:
            dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    backend = backend or ("nccl" if dev.type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world,
                                timeout=datetime.timedelta(seconds=timeout_s),
                                device_id=dev if dev.type == "cuda" else None)
    return DistContext(rank, world, local_rank, dev, backend)


def context_of_group(device: str | torch.device = "cpu") -> DistContext:
    """The context of an already initialised default process group (tests spawn their own groups)."""
    if not dist.is_initialized():
        return DistContext.single(device)
    rank, world = dist.get_rank(), dist.get_world_size()
    return DistContext(rank, world, int(os.environ.get("LOCAL_RANK", rank)), torch.device(device), dist.get_backend())


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
