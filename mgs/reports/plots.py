"""Matplotlib figures of a report (Agg backend: no display needed). Each function takes diagnostics data of one or
more runs and returns a Figure with a title, labelled axes (units) and a legend, or None when there is nothing to
draw. Curves over steps are drawn per strategy: a strategy with one run is its line (`<strategy> seed <s>`); one with
several seeds is their mean with a band from their min to their max (`<strategy> (mean of n seeds)`), so a 27-run
report stays readable. One legend per figure, below the panels, one colour per strategy in every panel.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from mgs.diagnostics import conflict, training  # noqa: E402
from mgs.diagnostics.rundir import RunDir  # noqa: E402


def run_name(run: RunDir) -> str:
    return f"{run.label} seed {run.seed}"


def _grid(n: int, width: float = 5.0, height: float = 3.4) -> tuple[Figure, list]:
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    flat = [ax for row in axes for ax in row]
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


Curve = tuple[Sequence[float], Sequence[float]]  # (optimizer steps, values)


def strategy_curves(curves: Sequence[tuple[RunDir, Curve]], geometric: bool = False
                    ) -> list[tuple[str, str, list[float], list[float], list[float], list[float]]]:
    """Runs' curves pooled per strategy label, in first-seen order: (strategy label, legend name, steps, mean, min,
    max) over the seeds that logged each step (min = max = mean for a single run). `geometric`: the geometric mean
    (for positive ratios drawn on a log scale, where the arithmetic mean leans to the largest seed)."""
    groups: dict[str, list[tuple[RunDir, Curve]]] = {}
    for run, curve in curves:
        groups.setdefault(run.label, []).append((run, curve))
    out = []
    for label, members in groups.items():
        at_step: dict[float, list[float]] = {}
        for _, (xs, ys) in members:
            for x, y in zip(xs, ys):
                if math.isfinite(y):
                    at_step.setdefault(x, []).append(y)
        steps = sorted(at_step)
        kind = "geometric mean" if geometric else "mean"
        name = run_name(members[0][0]) if len(members) == 1 else f"{label} ({kind} of {len(members)} seeds)"
        mean = ((lambda v: math.exp(sum(map(math.log, v)) / len(v))) if geometric else (lambda v: sum(v) / len(v)))
        out.append((label, name, steps, [mean(at_step[x]) for x in steps],
                    [min(at_step[x]) for x in steps], [max(at_step[x]) for x in steps]))
    return out


def _colours(runs: Sequence[RunDir]) -> dict[str, Any]:
    labels = list(dict.fromkeys(run.label for run in runs))
    cmap = plt.get_cmap("tab10" if len(labels) <= 10 else "tab20")
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def _draw_strategies(ax: Any, curves: Sequence[tuple[RunDir, Curve]], colours: dict[str, Any],
                     geometric: bool = False) -> None:
    for label, name, steps, mean, lo, hi in strategy_curves(curves, geometric):
        if steps:
            ax.plot(steps, mean, marker=".", color=colours[label], label=name)
            if lo != hi:
                ax.fill_between(steps, lo, hi, color=colours[label], alpha=0.15, lw=0)


def _legend_below(fig: Figure, axes: list) -> None:
    handles: dict[str, Any] = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.tight_layout()
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="upper center", bbox_to_anchor=(0.5, 0.0),
                   ncol=min(len(handles), 3), fontsize=8, frameon=False)


def domain_curves(runs: Sequence[RunDir], quantity: str) -> Figure | None:
    """One panel per domain: `quantity` (reward / entropy / length) over steps, a line (or band) per strategy."""
    suffix_label = training.QUANTITIES[quantity][1]
    data = [(run, training.domain_curves(run)[quantity]) for run in runs]
    domains = sorted({d for _, per in data for d in per})
    if not domains:
        return None
    colours = _colours(runs)
    fig, axes = _grid(len(domains))
    for ax, d in zip(axes, domains):
        _draw_strategies(ax, [(run, per[d]) for run, per in data if d in per], colours)
        ax.set_title(f"{d}: {quantity}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(suffix_label)
        ax.grid(alpha=0.3)
    fig.suptitle(f"Per-domain {quantity} during training")
    _legend_below(fig, axes)
    return fig


def _pair_panels(runs: Sequence[RunDir], attr: str, ylabel: str, title: str, log_y: bool = False) -> Figure | None:
    data = [(run, conflict.whole_model(run)) for run in runs]
    pairs = sorted({p for _, wm in data for p in wm})
    if not pairs:
        return None
    colours = _colours(runs)
    fig, axes = _grid(len(pairs))
    for ax, pair in zip(axes, pairs):
        curves = []
        for run, wm in data:
            if pair in wm:
                pts = [(x, y) for x, y in zip(wm[pair].steps, getattr(wm[pair], attr))
                       if math.isfinite(y) and (y > 0 or not log_y)]
                if pts:
                    curves.append((run, tuple(zip(*pts))))
        _draw_strategies(ax, curves, colours, geometric=log_y)
        if attr == "cos":
            ax.axhline(0.0, color="grey", lw=0.8, ls="--")
        if log_y:
            ax.set_yscale("log")
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        a, b = pair.split("__")
        ax.set_title(f"{a} vs {b}")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    _legend_below(fig, axes)
    return fig


def cosine_whole_model(runs: Sequence[RunDir]) -> Figure | None:
    return _pair_panels(runs, "cos", "cosine (unitless, -1..1)",
                        "Whole-model cosine between domain gradients (below 0 = conflict)")


def norm_ratio(runs: Sequence[RunDir]) -> Figure | None:
    return _pair_panels(runs, "norm_ratio", "||g_a|| / ||g_b|| (ratio, log scale)",
                        "Gradient-norm ratio between domains (whole model)", log_y=True)


def cosine_by_group_type(run: RunDir) -> Figure | None:
    """One panel per pair: mean cosine over the groups of each type (attn, mlp, embed, head) over steps."""
    per_pair = conflict.group_type_cosines(run)
    if not per_pair:
        return None
    fig, axes = _grid(len(per_pair))
    for ax, (pair, kinds) in zip(axes, sorted(per_pair.items())):
        for kind, (steps, values) in sorted(kinds.items()):
            ax.plot(steps, values, marker=".", label=kind)
        ax.axhline(0.0, color="grey", lw=0.8, ls="--")
        a, b = pair.split("__")
        ax.set_title(f"{a} vs {b} by group type")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("mean cosine over groups (-1..1)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="group type")
    fig.suptitle(f"Cosine between domain gradients per group type: {run_name(run)}")
    fig.tight_layout()
    return fig


def _outside_bars(ax: Any, m: conflict.ConflictMatrix) -> None:
    """Conflict rate of the groups outside the decoder layers (embedding, head, or the one global group)."""
    names = sorted(m.outside)
    ax.barh(names, [m.outside[n] for n in names], color="tab:red")
    for k, n in enumerate(names):
        ax.text(min(m.outside[n], 0.8) + 0.02, k, f"{m.outside[n]:.2f}", va="center", fontsize=8)
    ax.set_xlim(0, 1)
    ax.set_xlabel("conflict rate (fraction of steps)")


def _outside_only(m: conflict.ConflictMatrix, title: str) -> Figure:
    fig, ax = plt.subplots(figsize=(5.0, max(1.8, 0.4 * len(m.outside) + 1.2)))
    _outside_bars(ax, m)
    a, b = m.pair.split("__")
    ax.set_title(f"{title}\n{a} vs {b} (no per-layer groups)", fontsize=10)
    fig.tight_layout()
    return fig


def conflict_heatmap(m: conflict.ConflictMatrix, title: str) -> Figure:
    """Layer x module-type conflict rate (rows = decoder layer, columns = attn / mlp), embed/head as a side bar."""
    import numpy as np

    if not m.layers:  # one group for the whole model (global granularity): no layer grid to draw
        return _outside_only(m, title)
    rate = np.array(m.rate, dtype=float)
    fig, (ax, side) = plt.subplots(1, 2, figsize=(6.5, max(2.5, 0.35 * len(m.layers) + 1.5)),
                                   gridspec_kw={"width_ratios": [max(len(m.parts), 1), 1]})
    im = ax.imshow(rate, vmin=0, vmax=1, cmap="Reds", aspect="auto")
    ax.set_xticks(range(len(m.parts)), m.parts)
    ax.set_yticks(range(len(m.layers)), [str(layer) for layer in m.layers])
    ax.set_xlabel("module type")
    ax.set_ylabel("decoder layer")
    for i in range(rate.shape[0]):
        for j in range(rate.shape[1]):
            if math.isfinite(rate[i, j]):
                ax.text(j, i, f"{rate[i, j]:.2f}", ha="center", va="center", fontsize=7)
    _outside_bars(side, m)
    side.set_title("outside layers", fontsize=9)
    fig.colorbar(im, ax=ax, label="conflict rate (fraction of steps)")
    a, b = m.pair.split("__")
    ax.set_title(f"{title}\n{a} vs {b}", fontsize=10)
    fig.tight_layout()
    return fig


def sequential_bars(name: str, forgetting: dict[str, dict[str, float]], rigidity: dict[str, float],
                    rigidity_equal_steps: dict[str, float] | None = None) -> Figure | None:
    """Forgetting (score lost by an earlier domain after each later stage), rigidity (gap to the single-domain run)
    and rigidity at equal steps (gap to another order's first stage of the same length)."""
    items = [(f"forgetting {d}\nafter {stage}", v) for d, per in sorted(forgetting.items()) for stage, v in per.items()]
    items += [(f"rigidity {d}", v) for d, v in sorted(rigidity.items())]
    items += [(f"rigidity {d}\n(equal steps)", v) for d, v in sorted((rigidity_equal_steps or {}).items())]
    if not items:
        return None
    fig, ax = plt.subplots(figsize=(max(4.0, 1.6 * len(items)), 3.4))
    labels, values = zip(*items)
    colors = ["tab:orange" if lbl.startswith("forgetting") else "tab:blue" if lbl.endswith("(equal steps)")
              else "tab:purple" for lbl in labels]
    ax.bar(range(len(items)), values, color=colors)
    ax.set_xticks(range(len(items)), labels, fontsize=8)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_ylabel("score points lost (percentage points)")
    ax.set_title(f"Mode interference of a sequential run: {name}")
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="tab:orange", label="forgetting"), Patch(color="tab:purple", label="rigidity"),
                       Patch(color="tab:blue", label="rigidity, equal steps")], fontsize=8)
    fig.tight_layout()
    return fig
