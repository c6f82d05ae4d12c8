"""Read a run directory (docs/contracts.md) into plain Python data: the one place that knows its file layout.

Diagnostics, `mgs eval RUN_DIR` and `mgs report` read runs only through `RunDir`, never the trainer's objects, so a
run written on a GPU box can be analysed anywhere. Files that a run may legitimately lack (no surgery stats for a
plain sequential run, no eval when eval was off) read as empty; a missing `metrics.jsonl` or `config.yaml` is an
error that says which directory was expected.

Surgery stats are `surgery/step_<n>.json` as the trainer writes them, or the same objects one per line in
`surgery.jsonl.gz` (`pack_surgery`): at tensor granularity a 30-step run writes ~8 MB of JSON that gzip takes to
~1 MB losslessly, which is what an experiment keeps in the repository.
"""

from __future__ import annotations

import gzip
import json
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator

import yaml

_STEP_FILE = re.compile(r"^step_(\d+)\.(json|pt)$")
SURGERY_PACK = "surgery.jsonl.gz"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    lines = [(i, line) for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    rows = []
    for pos, (line_no, line) in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if pos == len(lines) - 1:  # a run killed mid-write leaves a truncated last line: keep the rest
                break
            raise ValueError(f"{path}:{line_no}: not JSON ({e})") from None
    return rows


def _step_files(folder: Path, suffix: str) -> list[tuple[int, Path]]:
    if not folder.is_dir():
        return []
    out = []
    for p in folder.iterdir():
        m = _STEP_FILE.match(p.name)
        if m and m.group(2) == suffix:
            out.append((int(m.group(1)), p))
    return sorted(out)


def pack_surgery(folder: Path, out_file: Path) -> int:
    """Write the `step_<n>.json` files of `folder` into one gzip JSON-lines file, in step order; each object gets
    its step as "step" (the trainer's stats already carry it). Returns the number of steps written."""
    steps = _step_files(Path(folder), "json")
    with gzip.open(out_file, "wt", encoding="utf-8") as f:
        for step, path in steps:
            payload = json.loads(path.read_text())
            if payload.setdefault("step", step) != step:
                raise ValueError(f"{path} says step {payload['step']}, its name says {step}")
            f.write(json.dumps(payload, separators=(",", ":")) + "\n")
    return len(steps)


def _read_surgery_pack(path: Path) -> dict[int, dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {int(r["step"]): r for r in rows}


@dataclass
class RunDir:
    """A training run directory. `path` must hold `config.yaml` and `metrics.jsonl`."""

    path: Path
    _surgery_cache: dict[int, dict[str, Any]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        missing = [n for n in ("config.yaml", "metrics.jsonl") if not (self.path / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{self.path} is not a run directory (missing {', '.join(missing)}); pass the folder `mgs train` "
                "wrote (its train.out_dir)"
            )

    # --- config ---------------------------------------------------------------------------------------------
    @cached_property
    def config(self) -> dict[str, Any]:
        return yaml.safe_load((self.path / "config.yaml").read_text()) or {}

    def cfg(self, dotted: str, default: Any = None) -> Any:
        """`run.cfg("strategy.name")`: a config value by dotted key, `default` when absent."""
        node: Any = self.config
        for key in dotted.split("."):
            if not isinstance(node, dict) or key not in node:
                return default
            node = node[key]
        return node

    @property
    def seed(self) -> int:
        return int(self.cfg("train.seed", 0))

    @property
    def strategy(self) -> str:
        return str(self.cfg("strategy.name", "unknown"))

    @property
    def label(self) -> str:
        """Strategy label for tables: the strategy, plus granularity/method where surgery shapes the update.

        `mgs` with granularity `global` is global PCGrad; with method `sum` it is Mixed RL computed per domain.
        A run that trains one domain only (mixed with one weight > 0, or one single-domain stage) is `<domain>-only`;
        a sequential run names its stage order, `sequential (math -> chat)`, so two orders are two table rows."""
        name = self.strategy
        trained = self.trained_domains()
        if len(trained) == 1 and len(self.domains) > 1:
            return f"{trained[0]}-only"
        if name == "sequential":
            order = [st.get("name") or "+".join(st.get("domains") or {}) for st in self.cfg("strategy.stages") or []]
            return f"sequential ({' -> '.join(order)})" if order else name
        if name != "mgs":
            return name
        gran, method = self.cfg("surgery.granularity", "module"), self.cfg("surgery.method", "pcgrad")
        if method == "sum":
            return "mixed (sum)"
        if gran == "global":
            return f"global-{method}"
        return f"mgs ({gran}/{method})" if (gran, method) != ("module", "pcgrad") else "mgs"

    @property
    def domains(self) -> list[str]:
        return [d.get("name") or d.get("kind") for d in (self.cfg("domains", []) or [])]

    def trained_domains(self) -> list[str]:
        """Domains that get training batches: weight > 0 (mixed / mgs), or named by a stage (sequential)."""
        if self.strategy == "sequential":
            named = {d for st in self.cfg("strategy.stages") or [] for d, w in (st.get("domains") or {}).items()
                     if float(w) > 0}
            return [d for d in self.domains if d in named]
        specs = self.cfg("domains", []) or []
        return [d.get("name") or d.get("kind") for d in specs if float(d.get("weight", 1.0)) > 0]

    # --- per-step metrics -----------------------------------------------------------------------------------
    @cached_property
    def metrics(self) -> list[dict[str, Any]]:
        return _read_jsonl(self.path / "metrics.jsonl")

    def series(self, key: str) -> tuple[list[int], list[float]]:
        """(steps, values) of one metric key over the steps that logged a finite value."""
        steps, values = [], []
        for row in self.metrics:
            v = row.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                steps.append(int(row["step"]))
                values.append(float(v))
        return steps, values

    def keys(self, pattern: str) -> list[str]:
        """Metric keys (over all steps) matching a regex, sorted."""
        rx = re.compile(pattern)
        found: set[str] = set()
        for row in self.metrics:
            found.update(k for k in row if rx.search(k))
        return sorted(found)

    def stages(self) -> list[tuple[str, int, int]]:
        """(stage, first_step, last_step) in order of appearance."""
        out: list[tuple[str, int, int]] = []
        for row in self.metrics:
            stage, step = str(row.get("stage", "")), int(row["step"])
            if out and out[-1][0] == stage:
                out[-1] = (stage, out[-1][1], step)
            else:
                out.append((stage, step, step))
        return out

    # --- surgery stats / saved gradients --------------------------------------------------------------------
    def _surgery_packed(self) -> dict[int, dict[str, Any]] | None:
        """All steps of `surgery.jsonl.gz` when the run has that instead of a `surgery/` folder, else None."""
        if (self.path / "surgery").is_dir() or not (self.path / SURGERY_PACK).is_file():
            return None
        if not self._surgery_cache:
            self._surgery_cache.update(_read_surgery_pack(self.path / SURGERY_PACK))
        return self._surgery_cache

    def surgery_steps(self) -> list[int]:
        packed = self._surgery_packed()
        if packed is not None:
            return sorted(packed)
        return [s for s, _ in _step_files(self.path / "surgery", "json")]

    def surgery(self, step: int) -> dict[str, Any]:
        packed = self._surgery_packed()
        if packed is not None:
            if step not in packed:
                raise KeyError(f"{self.path / SURGERY_PACK} has no step {step}; it has {sorted(packed)}")
            return packed[step]
        if step not in self._surgery_cache:
            self._surgery_cache[step] = json.loads((self.path / "surgery" / f"step_{step:06d}.json").read_text())
        return self._surgery_cache[step]

    def iter_surgery(self) -> Iterator[tuple[int, dict[str, Any]]]:
        packed = self._surgery_packed()
        if packed is not None:
            yield from sorted(packed.items())
            return
        for step, path in _step_files(self.path / "surgery", "json"):
            yield step, json.loads(path.read_text())

    def grad_steps(self) -> list[int]:
        return [s for s, _ in _step_files(self.path / "grads", "pt")]

    def grads(self, step: int) -> dict[str, dict[str, Any]]:
        """{domain: {param: tensor}} saved by `diagnostics.save_domain_grads_steps`."""
        import torch

        return torch.load(self.path / "grads" / f"step_{step:06d}.pt", map_location="cpu", weights_only=True)

    # --- evaluations ----------------------------------------------------------------------------------------
    def eval_tags(self) -> list[str]:
        """Tags of the evaluation files that hold results (in `mgs.eval.results` layout once read)."""
        from mgs.eval.results import normalize

        folder = self.path / "eval"
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.json") if normalize(json.loads(p.read_text()), p.stem))

    def eval(self, tag: str) -> dict[str, Any]:
        from mgs.eval.results import read_eval

        path = self.path / "eval" / f"{tag}.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found; evaluations of this run: {self.eval_tags()}")
        return read_eval(path)

    @cached_property
    def summary(self) -> dict[str, Any]:
        p = self.path / "summary.json"
        return json.loads(p.read_text()) if p.is_file() else {}

    def latest_checkpoint(self) -> Path:
        """RUN/checkpoints/<latest>: the `latest` pointer (symlink or a file naming the folder), else the highest."""
        root = self.path / "checkpoints"
        latest = root / "latest"
        if latest.is_symlink() or latest.is_dir():
            return latest.resolve()
        if latest.is_file():
            return root / latest.read_text().strip()
        found = sorted(p for p in root.glob("step_*") if p.is_dir()) if root.is_dir() else []
        if not found:
            raise FileNotFoundError(f"{self.path} has no checkpoint under checkpoints/; train with save_every or "
                                    "let the run finish")
        return found[-1]


def is_run_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / "config.yaml").is_file() and (p / "metrics.jsonl").is_file()
