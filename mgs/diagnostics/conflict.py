"""Gradient-conflict diagnostics of a run, from its surgery stats files and per-step metrics.

What the paper measures to motivate MGS, per domain pair: the whole-model cosine between domain gradients over
steps and the fraction of steps where it is negative (Mixed RL: ~42% for math/chat), the gradient-norm ratio
(0.03..46), and where in the network conflicts sit: a layer x module-type matrix of conflict rates (rows =
decoder layer, columns = attn / mlp; embed and head reported apart). A pair *conflicts* in a group at a step when
the inner product of the two original domain gradients there is negative (`mgs.surgery.stats`). Any surgery
granularity maps onto the matrix: `module` groups are cells already, `tensor` groups (parameter names) are placed
with the same partition rules surgery uses, `block` groups fill the "block" column.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

from mgs.diagnostics.rundir import RunDir

_MODULE_GROUP = re.compile(r"^layers\.(\d+)(?:\.(attn|mlp))?$")
OUTSIDE = ("embed", "head")


def _groups_of(payload: dict[str, Any]) -> dict[str, Any]:
    """The surgery stats inside a step file (monitor-mode files keep them under `mixed`)."""
    if "groups" in payload:
        return payload
    if isinstance(payload.get("mixed"), dict) and "groups" in payload["mixed"]:
        return payload["mixed"]
    raise ValueError("surgery step file has no 'groups' (expected SurgeryStats.to_dict(), optionally under 'mixed')")


def _ratio(norms: dict[str, float | None], pair: str) -> float:
    a, b = pair.split("__")
    na, nb = norms.get(a), norms.get(b)
    if na is None or nb is None:
        return math.nan
    return na / nb if nb > 0 else (math.inf if na > 0 else math.nan)


@dataclass
class GroupRow:
    step: int
    group: str
    pair: str
    cos: float
    conflict: bool
    norm_ratio: float


def group_rows(run: RunDir) -> list[GroupRow]:
    """One row per (surgery step, group, domain pair): cosine, conflict flag, norm ratio ||g_a|| / ||g_b||."""
    rows = []
    for step, payload in run.iter_surgery():
        stats = _groups_of(payload)
        for g in stats["groups"]:
            conflicts = set(g.get("conflicts", []))
            for pair, cos in g["cos"].items():
                rows.append(GroupRow(step, g["name"], pair, math.nan if cos is None else float(cos),
                                     pair in conflicts, _ratio(g.get("norms", {}), pair)))
    return rows


def pairs(run: RunDir) -> list[str]:
    """Domain pairs that have whole-model cosines in the metrics (or, failing that, in the surgery files)."""
    found = [k.split("/", 2)[2] for k in run.keys(r"^surgery/cos/")]
    if found:
        return found
    return sorted({r.pair for r in group_rows(run)})


@dataclass
class PairSeries:
    """Whole-model series of one domain pair: `cos`, `norm_ratio`, `conflict_frac` (fraction of groups where it
    conflicted) over `steps`, and `neg_frac` = fraction of steps with a negative whole-model cosine."""

    pair: str
    steps: list[int]
    cos: list[float]
    norm_ratio: list[float]
    conflict_frac: list[float]

    @property
    def neg_frac(self) -> float:
        return sum(c < 0 for c in self.cos) / len(self.cos) if self.cos else math.nan

    @property
    def cos_mean(self) -> float:
        return sum(self.cos) / len(self.cos) if self.cos else math.nan


def whole_model(run: RunDir) -> dict[str, PairSeries]:
    """Per pair, the whole-model cosine / norm ratio / conflict fraction over steps (from metrics.jsonl)."""
    out = {}
    for pair in pairs(run):
        steps, cos = run.series(f"surgery/cos/{pair}")
        ratio = dict(zip(*run.series(f"surgery/norm_ratio/{pair}")))
        frac = dict(zip(*run.series(f"surgery/conflict_frac/{pair}")))
        out[pair] = PairSeries(pair, steps, cos, [ratio.get(s, math.nan) for s in steps],
                               [frac.get(s, math.nan) for s in steps])
    return out


def cell_of(groups: Iterable[str]) -> dict[str, tuple[str, str]]:
    """Group name -> (row, column) of the layer x module-type matrix: row "layer i" / "embed" / "head" / "other",
    column "attn" / "mlp" / "block" / "all"."""
    from mgs.surgery.partition import partition  # the same naming rules surgery grouped by

    groups = list(groups)
    out: dict[str, tuple[str, str]] = {}
    rest = []
    for g in groups:
        m = _MODULE_GROUP.match(g)
        if m:
            out[g] = (f"layer {int(m[1])}", m[2] or "block")
        elif g in OUTSIDE:
            out[g] = (g, "all")
        else:
            rest.append(g)
    if rest:
        module_groups = partition(rest, "module")
        for mg, members in module_groups.items():
            m = _MODULE_GROUP.match(mg)
            for name in members:
                if m:
                    out[name] = (f"layer {int(m[1])}", m[2] or "block")
                elif mg in OUTSIDE:
                    out[name] = (mg, "all")
                else:
                    out[name] = ("other", "all")
    return out


@dataclass
class ConflictMatrix:
    """Conflict rate per cell = conflicted (step, group) events / all (step, group) events of the cell.
    `rate[i][j]` for `layers[i]` x `parts[j]` (NaN where a cell has no group); `outside` for embed / head / other;
    `counts` the number of events behind each rate."""

    pair: str
    layers: list[int]
    parts: list[str]
    rate: list[list[float]]
    counts: list[list[int]]
    outside: dict[str, float] = field(default_factory=dict)
    outside_counts: dict[str, int] = field(default_factory=dict)


def conflict_matrix(run: RunDir, pair: str | None = None, rows: list[GroupRow] | None = None) -> ConflictMatrix:
    """The layer x module-type conflict-rate matrix of one pair (default: the first pair) over all surgery steps."""
    rows = group_rows(run) if rows is None else rows
    all_pairs = sorted({r.pair for r in rows})
    if not all_pairs:
        raise ValueError(f"{run.path} has no surgery stats (surgery/step_*.json); train with strategy mgs, or "
                         "surgery.monitor: true for mixed/sequential runs")
    pair = pair or all_pairs[0]
    if pair not in all_pairs:
        raise KeyError(f"pair {pair!r} not in the surgery stats; pairs: {all_pairs}")
    cells = cell_of(sorted({r.group for r in rows}))
    hits: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for r in rows:
        if r.pair == pair:
            h = hits[cells[r.group]]
            h[0] += int(r.conflict)
            h[1] += 1
    layers = sorted({int(row.split()[1]) for row, _ in hits if row.startswith("layer ")})
    parts = [p for p in ("attn", "mlp", "block") if any(c == p for _, c in hits)]
    rate = [[math.nan] * len(parts) for _ in layers]
    counts = [[0] * len(parts) for _ in layers]
    outside, outside_counts = {}, {}
    for (row, col), (conf, total) in hits.items():
        if row.startswith("layer "):
            i, j = layers.index(int(row.split()[1])), parts.index(col)
            rate[i][j], counts[i][j] = conf / total, total
        else:
            outside[row], outside_counts[row] = conf / total, total
    return ConflictMatrix(pair, layers, parts, rate, counts, outside, outside_counts)


def group_type_cosines(run: RunDir, rows: list[GroupRow] | None = None) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """{pair: {group type: (steps, mean cosine over the groups of that type)}}; types attn / mlp / block / embed /
    head (from `cell_of`)."""
    rows = group_rows(run) if rows is None else rows
    cells = cell_of(sorted({r.group for r in rows}))
    acc: dict[str, dict[str, dict[int, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for r in rows:
        row, col = cells[r.group]
        kind = col if row.startswith("layer ") else row
        if math.isfinite(r.cos):
            acc[r.pair][kind][r.step].append(r.cos)
    return {pair: {kind: (sorted(by_step), [sum(by_step[s]) / len(by_step[s]) for s in sorted(by_step)])
                   for kind, by_step in kinds.items()} for pair, kinds in acc.items()}


def group_series(run: RunDir, pair: str, rows: list[GroupRow] | None = None) -> dict[str, dict[str, list]]:
    """{group: {"steps", "cos", "conflict", "norm_ratio"}} of one pair over steps."""
    rows = group_rows(run) if rows is None else rows
    out: dict[str, dict[str, list]] = {}
    for r in rows:
        if r.pair != pair:
            continue
        s = out.setdefault(r.group, {"steps": [], "cos": [], "conflict": [], "norm_ratio": []})
        s["steps"].append(r.step)
        s["cos"].append(r.cos)
        s["conflict"].append(r.conflict)
        s["norm_ratio"].append(r.norm_ratio)
    return out


def conflict_summary(run: RunDir) -> dict[str, dict[str, float]]:
    """Per pair: mean whole-model cosine, fraction of steps negative, norm-ratio min/median/max, mean fraction of
    groups conflicted. The numbers the report's interference table shows."""
    out = {}
    for pair, s in whole_model(run).items():
        ratios = sorted(r for r in s.norm_ratio if math.isfinite(r))
        fracs = [f for f in s.conflict_frac if math.isfinite(f)]
        out[pair] = {
            "steps": float(len(s.steps)),
            "cos_mean": s.cos_mean,
            "cos_neg_frac": s.neg_frac,
            "norm_ratio_min": ratios[0] if ratios else math.nan,
            "norm_ratio_median": ratios[len(ratios) // 2] if ratios else math.nan,
            "norm_ratio_max": ratios[-1] if ratios else math.nan,
            "groups_conflicted_frac_mean": sum(fracs) / len(fracs) if fracs else math.nan,
        }
    return out
