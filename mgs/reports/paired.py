"""Paired differences between strategies on the same benchmark prompts: the test of "does A beat B" that the
mean ± std-over-seeds table cannot give.

Every run answers the same prompts, so prompt difficulty is shared noise. Per prompt p the per-prompt headline
scores (`RUN/eval/<tag>.scores.json`, `mgs.eval.results.prompt_scores`) are averaged over a strategy's seeds,
d_p = A_p - B_p over the prompts present in every run of both, and we report mean(d) in points, its standard error
sd(d)/sqrt(n) and a 95% interval (normal, or a paired bootstrap over prompts with a fixed seed), and whether the
interval excludes 0. The Total is the mean of the in-Total sets' mean differences; its standard error combines the
per-set ones assuming the sets are independent.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Callable, Mapping, Sequence

from mgs.registry import Registry

Z95 = statistics.NormalDist().inv_cdf(0.975)  # 1.95996...
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0

INTERVALS: Registry[Callable[[list[float], float, float], tuple[float, float]]] = Registry("paired interval")
"""Name -> f(diffs [n], mean, stderr) -> (low, high) 95% interval of the mean difference (same units as diffs)."""


@INTERVALS.register("normal")
def normal_interval(diffs: list[float], mean: float, stderr: float) -> tuple[float, float]:
    return mean - Z95 * stderr, mean + Z95 * stderr


@INTERVALS.register("bootstrap")
def bootstrap_interval(diffs: list[float], mean: float, stderr: float) -> tuple[float, float]:
    """Percentile interval of the mean over `BOOTSTRAP_RESAMPLES` resamples of the prompts (seeded: reproducible)."""
    rng = random.Random(BOOTSTRAP_SEED)
    n = len(diffs)
    means = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(BOOTSTRAP_RESAMPLES))
    return means[int(0.025 * (BOOTSTRAP_RESAMPLES - 1))], means[int(math.ceil(0.975 * (BOOTSTRAP_RESAMPLES - 1)))]


class UnknownReference(ValueError):
    """The requested reference strategy is not among the runs' strategy labels."""


@dataclass(frozen=True)
class PairedDiff:
    """Mean difference (strategy minus reference) over `n` shared prompts, in points (metric x scale)."""

    n: int
    mean: float
    stderr: float
    low: float
    high: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "excludes_zero": self.excludes_zero}


def seed_mean(runs: Sequence[Mapping[str, float]], uids: Sequence[str]) -> list[float]:
    """Per uid, the mean over the runs (a strategy's seeds) of its per-prompt score."""
    return [statistics.fmean(float(r[u]) for r in runs) for u in uids]


def paired_difference(a_runs: Sequence[Mapping[str, float]], b_runs: Sequence[Mapping[str, float]], *,
                      scale: float = 100.0, interval: str = "normal") -> PairedDiff | None:
    """A minus B: `a_runs` / `b_runs` are the {uid: score} of each seed of the two strategies. None when fewer than
    two prompts are shared by every run (no standard error)."""
    make_interval = INTERVALS.get(interval)
    if not a_runs or not b_runs:
        return None
    uids = sorted(set.intersection(*(set(r) for r in (*a_runs, *b_runs))))
    if len(uids) < 2:
        return None
    diffs = [scale * (a - b) for a, b in zip(seed_mean(a_runs, uids), seed_mean(b_runs, uids))]
    mean = statistics.fmean(diffs)
    stderr = statistics.stdev(diffs) / math.sqrt(len(diffs))
    low, high = make_interval(diffs, mean, stderr)
    return PairedDiff(len(diffs), mean, stderr, low, high)


def combined_total(diffs: Sequence[PairedDiff]) -> PairedDiff | None:
    """Mean of the sets' mean differences; stderr = sqrt(sum stderr_i^2) / k (sets independent); normal interval."""
    if not diffs:
        return None
    k = len(diffs)
    mean = statistics.fmean(d.mean for d in diffs)
    stderr = math.sqrt(sum(d.stderr ** 2 for d in diffs)) / k
    low, high = normal_interval([], mean, stderr)
    return PairedDiff(sum(d.n for d in diffs), mean, stderr, low, high)


def paired_comparisons(scores: Mapping[str, Sequence[Mapping[str, Any] | None]], *, reference: str,
                       in_total: Sequence[str], proxies: Sequence[str] = (), interval: str = "normal"
                       ) -> dict[str, Any]:
    """Every strategy vs `reference`, per set and Total.

    `scores[label]` lists one scores-file object (`{set: {"scale", "scores": {uid: float}}}`) per run of that
    strategy, None for a run without one. A set is compared only where every run of both strategies has its scores
    (a run without a scores file, or whose file has no set with scores, leaves its strategy out; `missing` lists
    those strategies). Returns
    `{"reference", "interval", "sets": [...], "comparisons": {label: {set | "Total": PairedDiff.to_dict()}},
    "total_sets": {label: [...]}, "missing": [labels]}`."""
    if reference not in scores:
        raise UnknownReference(f"--paired-ref {reference!r} is not a strategy of these runs; choose from {sorted(scores)}")
    INTERVALS.get(interval)  # unknown method: fail before any work
    def usable(r: Mapping[str, Any] | None) -> bool:
        return r is not None and any("scores" in e for e in r.values())

    missing = sorted(label for label, runs in scores.items() if not runs or not all(usable(r) for r in runs))
    out: dict[str, Any] = {"reference": reference, "interval": interval, "sets": [], "comparisons": {},
                           "total_sets": {}, "missing": missing}
    if reference in missing:
        return out
    ref_runs = scores[reference]
    sets = [name for name in dict.fromkeys(n for r in ref_runs for n in r)]  # type: ignore[union-attr]
    for label, runs in scores.items():
        if label == reference or label in missing:
            continue
        per_set: dict[str, Any] = {}
        total_parts: list[PairedDiff] = []
        total_names: list[str] = []
        for name in sets:
            entries = [r.get(name) for r in (*runs, *ref_runs)]  # type: ignore[union-attr]
            if any(e is None or "scores" not in e for e in entries):
                continue
            scale = float(entries[0].get("scale", 100.0))
            d = paired_difference([e["scores"] for e in entries[:len(runs)]],
                                  [e["scores"] for e in entries[len(runs):]], scale=scale, interval=interval)
            if d is None:
                continue
            per_set[name] = d.to_dict()
            if name not in out["sets"]:
                out["sets"].append(name)
            if name in in_total and name not in proxies:
                total_parts.append(d)
                total_names.append(name)
        total = combined_total(total_parts)
        if total is not None:
            per_set["Total"] = total.to_dict()
        out["comparisons"][label] = per_set
        out["total_sets"][label] = total_names
    return out


def interval_text(d: Mapping[str, Any]) -> str:
    """A difference's 95% interval as shown in the table and the report's summary: "[-1.16, +0.34]" (points)."""
    return f"[{d['low']:+.2f}, {d['high']:+.2f}]"


def paired_rows(result: Mapping[str, Any], proxies: Sequence[str] = ()) -> tuple[list[str], list[list[str]]]:
    """The markdown/HTML table of `paired_comparisons`: one row per strategy and set, then its Total."""
    header = ["strategy", "vs", "set", "n prompts", "mean diff (pts)", "stderr", "95% interval", "excludes 0"]
    rows = []
    for label, per_set in result["comparisons"].items():
        for name, d in per_set.items():
            shown = f"{name}*" if name in proxies else name
            if name == "Total":
                shown = "Total (" + ", ".join(result["total_sets"][label]) + ")"
            rows.append([label, result["reference"], shown, str(d["n"]), f"{d['mean']:+.2f}", f"{d['stderr']:.2f}",
                         interval_text(d), "yes" if d["excludes_zero"] else "no"])
    return header, rows
