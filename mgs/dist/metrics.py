"""A step's metrics aggregated over ranks (what rank 0 logs): each rank's flat dict -> one dict.

Rules by key (docs/contracts.md names): sums for counts and the loss (each rank's loss is its share of the global
token-mean loss); token-weighted means for per-token quantities (train/pg_loss, kl, entropy, clip_frac and the
per-domain entropy); sample-weighted means for per-domain reward statistics (reward_std pooled from the ranks' means
and variances); maxima for times, memory and the skip flag; values that are already global (gradient norms, surgery
statistics, lr, absent flags) are taken from rank 0.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

from mgs.dist.context import DistContext

_SUMMED = ("train/loss",)
_TOKEN_MEANS = ("train/pg_loss", "train/kl", "train/entropy", "train/clip_frac")
_MAXED = ("time/", "mem/", "train/skipped")


def gather_metrics(metrics: Mapping[str, float], weights: Mapping[str, float], ctx: DistContext) -> dict[str, float]:
    """All ranks call this; every rank gets the aggregate. `weights`: this rank's `tokens` (completion tokens of its
    samples) and `tokens/<domain>`."""
    if not ctx.distributed:
        return dict(metrics)
    return aggregate(ctx.all_gather_object((dict(metrics), dict(weights))))


def _wmean(values: Sequence[tuple[float, float]]) -> float:
    total = sum(w for v, w in values if w > 0 and not math.isnan(v))
    return sum(v * w for v, w in values if w > 0 and not math.isnan(v)) / total if total else float("nan")


def aggregate(per_rank: Sequence[tuple[dict, dict]]) -> dict[str, float]:
    keys = list(dict.fromkeys(k for m, _ in per_rank for k in m))
    out: dict[str, float] = {}
    for key in keys:
        vals = [(m.get(key, float("nan")), m, w) for m, w in per_rank]
        parts = key.split("/")
        if key in _SUMMED or key.endswith("/num_samples"):
            out[key] = sum(v for v, _, _ in vals if not math.isnan(v))
        elif key in _TOKEN_MEANS:
            out[key] = _wmean([(v, w.get("tokens", 0.0)) for v, _, w in vals])
        elif key.startswith(_MAXED):
            out[key] = max((v for v, _, _ in vals if not math.isnan(v)), default=float("nan"))
        elif len(parts) == 3 and parts[0] == "train" and parts[2] == "entropy":
            out[key] = _wmean([(v, w.get(f"tokens/{parts[1]}", 0.0)) for v, _, w in vals])
        elif len(parts) == 3 and parts[0] == "train" and parts[2] in ("reward_mean", "reward_none_frac",
                                                                       "response_tokens_mean", "zero_std_group_frac"):
            weight = (lambda m: m.get(f"train/{parts[1]}/num_samples", 0.0) * (1 - m.get(f"train/{parts[1]}/reward_none_frac", 0.0))) \
                if parts[2] == "reward_mean" else (lambda m: m.get(f"train/{parts[1]}/num_samples", 0.0))
            out[key] = _wmean([(v, weight(m)) for v, m, _ in vals])
        elif len(parts) == 3 and parts[0] == "train" and parts[2] == "reward_std":
            d = parts[1]
            rows = [(m.get(f"train/{d}/reward_mean", float("nan")), v,
                     m.get(f"train/{d}/num_samples", 0.0) * (1 - m.get(f"train/{d}/reward_none_frac", 0.0)))
                    for v, m, _ in vals]
            mean = _wmean([(mu, w) for mu, _, w in rows])
            second = _wmean([(sd * sd + mu * mu, w) for mu, sd, w in rows])
            out[key] = math.sqrt(max(second - mean * mean, 0.0)) if not math.isnan(second) else float("nan")
        else:
            out[key] = vals[0][0]
    return out
