"""The report's opening: what its numbers say, in sentences, derived from the same data as its tables.

Why: a reader of a comparison wants the verdict first, and a verdict written by hand goes stale as runs are added
(session 4's one-seed gap between MGS and Mixed did not survive seeds 1 and 2). So the findings are computed: per
strategy, its benchmark Total (mean ± std over seeds); per strategy against the reference, the paired Total
difference with its interval and whether that interval excludes 0, plus the sets whose interval does; and how
often the domains' gradients pointed against each other. Judgement that numbers cannot make (comparison with the
paper, caveats of scale) goes in a conclusion file the author writes (`mgs report --conclusion FILE`), which the
report shows verbatim after these findings.
"""

from __future__ import annotations

import math
from typing import Any

from mgs.reports.paired import interval_text

TOTAL = "Total"


def _pts(x: float) -> str:
    return f"{x:+.2f}"


def strategy_lines(strategies: dict[str, dict[str, Any]]) -> list[str]:
    """One line per strategy with a Total: mean ± sample std over its seeds (std omitted for one seed)."""
    lines = []
    for label, row in strategies.items():
        total = row.get(TOTAL)
        if not total or total.get("mean") is None or not math.isfinite(total["mean"]):
            continue
        seeds = row.get("seeds") or []
        spread = f" ± {total['std']:.2f}" if len(seeds) > 1 and total.get("std") is not None else ""
        lines.append(f"{label}: benchmark Total {total['mean']:.2f}{spread} "
                     f"({len(seeds)} seed{'s' if len(seeds) != 1 else ''})")
    return lines


def paired_lines(paired: dict[str, Any]) -> list[str]:
    """Per strategy against the reference: the paired Total difference, its interval, and a verdict that only
    calls a difference where the interval excludes 0; then the sets (proxies included) whose interval does."""
    ref = paired.get("reference")
    lines = []
    for label, sets in (paired.get("comparisons") or {}).items():
        total = sets.get(TOTAL)
        parts = []
        if total:
            if total["excludes_zero"]:
                verdict = f"{'ahead of' if total['mean'] > 0 else 'behind'} {ref}"
            else:
                verdict = f"no difference from {ref} resolved"
            parts.append(f"{label} - {ref}: Total {_pts(total['mean'])} points, 95% interval "
                         f"{interval_text(total)} over {total['n']} prompts: {verdict}")
        else:
            parts.append(f"{label} - {ref}: no Total (no in-Total set with per-prompt scores in both)")
        clear = [f"{name} {_pts(c['mean'])} {interval_text(c)}"
                 for name, c in sets.items() if name != TOTAL and c["excludes_zero"]]
        parts.append("sets whose interval excludes 0: " + ("; ".join(clear) if clear else "none"))
        lines.append("; ".join(parts))
    return lines


def conflict_line(interference: dict[str, dict[str, dict[str, float]]]) -> str | None:
    """The range, over runs and domain pairs, of the mean whole-model gradient cosine and of the fraction of
    steps on which it was negative."""
    pairs = [(p.get("cos_mean"), p.get("cos_neg_frac")) for run in interference.values() for p in run.values()]
    pairs = [(c, n) for c, n in pairs if c is not None and n is not None and math.isfinite(c) and math.isfinite(n)]
    if not pairs:
        return None
    cos, neg = [c for c, _ in pairs], [n for _, n in pairs]
    return (f"gradient conflict: the mean whole-model cosine between two domains' gradients ranges "
            f"{min(cos):+.3f} to {max(cos):+.3f} over {len(cos)} (run, domain pair) combinations, negative on "
            f"{100 * min(neg):.0f}-{100 * max(neg):.0f}% of the steps")


def findings(data: dict[str, Any]) -> list[str]:
    """The report's findings as lines (markdown list items without the bullet), from `build_report`'s data."""
    out = strategy_lines(data.get("strategies") or {})
    if data.get("paired"):
        out += paired_lines(data["paired"])
    line = conflict_line(data.get("interference") or {})
    if line:
        out.append(line)
    return out
