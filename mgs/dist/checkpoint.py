"""Sharded checkpoints with torch.distributed.checkpoint (DCP): every rank writes its own shards in parallel, and
a checkpoint written by N ranks loads on M ranks (DCP reshards on load), for DDP and FSDP2 alike.

Layout: CKPT/dcp/ (model + optimizer, DCP format) and CKPT/extra.pt (rank 0: the trainer's JSON-able state).
`get_state_dict` / `set_state_dict` give full-name, wrapper-free keys, so the same checkpoint also loads into an
unwrapped single-process model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from mgs.dist.context import DistContext


def save(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, ctx: DistContext,
         extra: dict[str, Any] | None = None) -> Path:
    """Collective: every rank calls it with the same `path`."""
    path = Path(path)
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(path / "dcp"))
    if ctx.is_main and extra is not None:
        torch.save(extra, path / "extra.pt")
    ctx.barrier()
    return path


def load(path: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
    """Collective: restore model + optimizer in place (any world size); returns the extra state (or None)."""
    path = Path(path)
    if not (path / "dcp").is_dir():
        raise FileNotFoundError(f"{path} has no dcp/ folder: not a checkpoint written by mgs.dist.checkpoint.save")
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=str(path / "dcp"))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    extra = path / "extra.pt"
    return torch.load(extra, weights_only=False) if extra.is_file() else None
