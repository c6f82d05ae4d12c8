"""Where a run's numbers go: metrics.jsonl (always), TensorBoard / W&B (when asked), a tqdm bar, and the bulky
per-step files (completions/, surgery/, grads/) of the run directory (docs/contracts.md).

TensorBoard and W&B are imported only when enabled, so neither is a dependency of a plain run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else (1e308 if value > 0 else -1e308)
    return value


class RunLogger:
    """One per (sub-)run. `log(metrics)` appends a line to metrics.jsonl and forwards the scalars."""

    def __init__(self, run_dir: str | Path, *, tensorboard: bool = False, wandb_project: str | None = None,
                 progress: bool = True, total_steps: int = 0, initial_step: int = 0, desc: str = "train",
                 config: dict | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._tb = None
        self._wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as e:
                raise ImportError("logging.tensorboard: true needs `pip install tensorboard`") from e
            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        if wandb_project:
            try:
                import wandb
            except ImportError as e:
                raise ImportError("logging.wandb needs `pip install wandb` (and `wandb login`)") from e
            self._wandb = wandb.init(project=wandb_project, name=self.run_dir.name, config=config or {},
                                     dir=str(self.run_dir))
        self._bar = None
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=initial_step, desc=desc, unit="step", dynamic_ncols=True)

    def log(self, metrics: dict[str, Any]) -> None:
        clean = {k: _jsonable(v) for k, v in metrics.items()}
        with self.metrics_path.open("a") as f:
            f.write(json.dumps(clean) + "\n")
        step = int(metrics["step"])
        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and k != "step"}
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)
        if self._bar is not None:
            live = {k.split("/")[1][:8]: f"{v:.2f}" for k, v in scalars.items()
                    if k.startswith("train/") and k.endswith("/reward_mean")}
            live["s"] = f"{scalars.get('time/step_s', 0.0):.1f}"
            if scalars.get("train/skipped"):
                live["skipped"] = "1"
            self._bar.set_postfix(live, refresh=False)
            self._bar.update(1)

    def write_json(self, relative: str, data: Any) -> Path:
        path = self.run_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1, default=_default))
        return path

    def write_jsonl(self, relative: str, rows: list[dict]) -> Path:
        path = self.run_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w") as f:
            for row in rows:
                f.write(json.dumps(row, default=_default) + "\n")
        return path

    def write_grads(self, step: int, domain_grads: dict[str, dict[str, torch.Tensor]]) -> Path:
        path = self.run_dir / "grads" / f"step_{step:06d}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(domain_grads, path)
        return path

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
