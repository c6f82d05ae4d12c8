"""Resumable checkpoints: RUN/checkpoints/step_XXXXXX/ with the model (or LoRA adapter), the optimizer, the RNG
states and the data position; RUN/checkpoints/latest (a text file) names the last complete one.

Multi-process runs (train.parallel=ddp|fsdp2) write the same folder with `dcp/` (torch.distributed.checkpoint
shards of model + optimizer, any world size on load, see mgs.dist.checkpoint), `tokenizer/` and `state.json` instead
of model/, trainable.pt, optimizer.pt and rng.pt; `begin` / `publish` are the shared temporary-folder protocol.

Why: `--resume` must continue exactly (the same parameters at step N as an uninterrupted run), and a checkpoint
must also be usable on its own (`model/` is a normal `save_pretrained` directory, loadable by transformers/peft).
A checkpoint is written to a temporary directory and renamed, so an interrupted save never shadows a good one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import torch

LATEST = "latest"


def step_dir(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step_{step:06d}"


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    try:
        import numpy as np

        state["numpy"] = np.random.get_state()
    except ImportError:
        pass
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "numpy" in state:
        import numpy as np

        np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable parameter by full name (what resume restores: exact for full fine-tuning and LoRA)."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def begin(run_dir: str | Path, step: int) -> Path:
    """A fresh temporary folder for checkpoint `step` (published by `publish`)."""
    final = step_dir(run_dir, step)
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, run_dir: str | Path, step: int, state: dict[str, Any]) -> Path:
    """Write state.json into the complete temporary folder, rename it to step_XXXXXX and point `latest` at it."""
    final = step_dir(run_dir, step)
    (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    (final.parent / LATEST).write_text(final.name + "\n")
    return final


def save(run_dir: str | Path, step: int, *, model: torch.nn.Module, tokenizer: Any, optimizer: torch.optim.Optimizer,
         state: dict[str, Any], reference: dict[str, torch.Tensor] | None = None) -> Path:
    """Write checkpoint `step` (model/, trainable.pt, optimizer.pt, rng.pt, state.json[, reference.pt])."""
    tmp = begin(run_dir, step)
    model.save_pretrained(str(tmp / "model"))
    if tokenizer is not None:
        tokenizer.save_pretrained(str(tmp / "model"))
    torch.save(trainable_state(model), tmp / "trainable.pt")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    if reference is not None:
        torch.save(reference, tmp / "reference.pt")
    return publish(tmp, run_dir, step, state)


def is_dcp(path: str | Path) -> bool:
    """Written by several processes (mgs.dist.checkpoint: dcp/ shards, no model/ folder)?"""
    return (Path(path) / "dcp").is_dir()


def read_state(path: str | Path) -> dict[str, Any]:
    return json.loads((Path(path) / "state.json").read_text())


def latest(run_dir: str | Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / LATEST
    if not pointer.is_file():
        return None
    path = pointer.parent / pointer.read_text().strip()
    return path if (path / "state.json").is_file() else None


def load(path: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore parameters, optimizer and RNG from checkpoint `path`; returns its state.json (+ `reference` when
    the checkpoint holds a reset KL reference)."""
    path = Path(path)
    params = torch.load(path / "trainable.pt", map_location="cpu")
    named = dict(model.named_parameters())
    missing = [n for n, p in named.items() if p.requires_grad and n not in params]
    unknown = [n for n in params if n not in named]
    if missing or unknown:
        raise ValueError(f"checkpoint {path} does not match the model (missing {missing[:3]}, unknown {unknown[:3]}): "
                         "resume with the same model config")
    with torch.no_grad():
        for n, t in params.items():
            named[n].copy_(t.to(named[n].device))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False))
    set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    state = json.loads((path / "state.json").read_text())
    if (path / "reference.pt").is_file():
        state["reference"] = torch.load(path / "reference.pt", map_location="cpu")
    return state
