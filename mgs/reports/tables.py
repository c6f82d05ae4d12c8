"""Tables of a report: the paper-style strategies x benchmarks table (mean and std over seeds) and the interference
summary per run and domain pair. Pure data -> rows of strings; `build` renders them as markdown and HTML.
In the strategies table a column's best mean is bold only where it beats the runner-up by more than the spread
(`clear_best`), so a bold cell is never a seed-noise winner."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from typing import Any, Sequence

from mgs.diagnostics import conflict
from mgs.diagnostics.rundir import RunDir


def final_eval_tag(run: RunDir) -> str | None:
    """File stem (RUN/eval/<stem>.json) of the evaluation a run is judged by: its latest `mgs eval` (tag bench_*),
    else `after`, else the latest one."""
    tags = run.eval_tags()
    if not tags:
        return None
    evals = [(t, run.eval(t)) for t in tags]
    bench = [(t, e) for t, e in evals if str(e.get("tag", "")).startswith("bench")]
    after = [(t, e) for t, e in evals if e.get("tag") == "after"]
    pool = bench or after or evals
    return max(pool, key=lambda te: (te[1].get("step") or 0, te[1].get("created", "")))[0]


def final_eval(run: RunDir) -> dict[str, Any] | None:
    """The evaluation a run is judged by (`final_eval_tag`)."""
    tag = final_eval_tag(run)
    return None if tag is None else run.eval(tag)


def final_scores(run: RunDir) -> dict[str, Any] | None:
    """Per-prompt scores of the run's final evaluation (`mgs.eval.results.read_scores`), None if it has none."""
    from mgs.eval.results import read_scores

    tag = final_eval_tag(run)
    return None if tag is None else read_scores(run.path / "eval" / f"{tag}.json")


def fmt(mean: float, std: float | None) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.1f}" if std is None else f"{mean:.1f} ± {std:.1f}"


def strategy_table(runs: Sequence[RunDir]) -> tuple[list[str], list[list[str]], dict[str, Any]]:
    """(header, rows, data): one row per strategy label, one column per evaluated set + Total; each cell the mean
    over the label's seeds ± their sample std (a single seed: the value alone). `data[label][set]` has the raw
    values and the seeds, for checks and JSON."""
    by_label: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    proxies: set[str] = set()
    sets: list[str] = []
    for run in runs:
        ev = final_eval(run)
        if ev is None:
            continue
        by_label[run.label].append((run.seed, ev))
        for name, s in ev["sets"].items():
            if name not in sets:
                sets.append(name)
            if s.get("proxy"):
                proxies.add(name)
    header = ["strategy", "seeds"] + [f"{s}*" if s in proxies else s for s in sets] + ["Total"]
    rows, data = [], {}
    for label, items in by_label.items():
        seeds = sorted(seed for seed, _ in items)
        row = [label, ",".join(map(str, seeds))]
        data[label] = {"seeds": seeds}
        for name in sets + ["Total"]:
            values = [float(ev["total"]["value"]) if name == "Total" else float(ev["sets"][name]["score"])
                      for _, ev in items if name == "Total" or name in ev["sets"]]
            values = [v for v in values if math.isfinite(v)]
            mean = statistics.fmean(values) if values else math.nan
            std = statistics.stdev(values) if len(values) > 1 else None
            data[label][name] = {"values": values, "mean": mean, "std": std}
            row.append(fmt(mean, std))
        rows.append(row)
    for col, name in enumerate(sets + ["Total"], start=2):
        best = clear_best({label: data[label][name] for label in data})
        if best is not None:
            row = rows[list(data).index(best)]
            row[col] = f"**{row[col]}**"
            data[best][name]["best"] = True
    return header, rows, data


def clear_best(cells: dict[str, dict[str, Any]]) -> str | None:
    """The label whose mean is highest *by more than the spread*: its lead over the runner-up exceeds the larger of
    the two sample stds. None when fewer than two labels, a tie, or either has no std (one seed: spread unknown)."""
    ranked = sorted(((c["mean"], label) for label, c in cells.items() if math.isfinite(c["mean"])), reverse=True)
    if len(ranked) < 2:
        return None
    (top, label), (second, runner_up) = ranked[0], ranked[1]
    spreads = [cells[label]["std"], cells[runner_up]["std"]]
    if any(s is None for s in spreads):
        return None
    return label if top - second > max(spreads) else None


def run_table(runs: Sequence[RunDir]) -> tuple[list[str], list[list[str]]]:
    """One row per run. `trained domains` are those that got training batches (a single-domain run lists one);
    `surgery` is the granularity/method that shaped the update, `none` where the update was the plain sum (with
    `stats at <granularity>` where conflict statistics were still recorded)."""
    header = ["run", "strategy", "seed", "steps", "trained domains", "surgery", "stages"]
    rows = []
    for run in runs:
        steps = run.metrics[-1]["step"] if run.metrics else 0
        gran = run.cfg("surgery.granularity", "?")
        if run.strategy == "mgs":
            surgery = f"{gran}/{run.cfg('surgery.method', '?')}"
        else:
            surgery = f"none (stats at {gran})" if run.cfg("surgery.monitor", False) else "none"
        stages = " -> ".join(name for name, _, _ in run.stages())
        rows.append([run.path.name, run.label, str(run.seed), str(steps), ", ".join(run.trained_domains()), surgery,
                     stages])
    return header, rows


def interference_table(runs: Sequence[RunDir]) -> tuple[list[str], list[list[str]]]:
    header = ["run", "pair", "steps", "mean cos", "steps cos<0", "norm ratio min / median / max",
              "groups conflicted (mean)"]
    rows = []
    for run in runs:
        for pair, s in conflict.conflict_summary(run).items():
            rows.append([f"{run.label} seed {run.seed}", pair.replace("__", " vs "), f"{int(s['steps'])}",
                         f"{s['cos_mean']:.3f}", f"{100 * s['cos_neg_frac']:.0f}%",
                         f"{s['norm_ratio_min']:.3g} / {s['norm_ratio_median']:.3g} / {s['norm_ratio_max']:.3g}",
                         f"{100 * s['groups_conflicted_frac_mean']:.0f}%"])
    return header, rows


COST_COLUMNS = (  # (metric key, column, reduce over a run's steps)
    ("time/step_s", "step s", "median"),
    ("time/rollout_s", "rollout s", "median"),
    ("time/train_s", "fwd+bwd s", "median"),
    ("time/surgery_s", "surgery s", "median"),
    ("mem/peak_gb", "peak GB", "max"),
    ("mem/domain_buffers_gb", "domain buffers GB", "max"),
)


def cost_table(runs: Sequence[RunDir]) -> tuple[list[str], list[list[str]]]:
    """Time and memory per strategy label: each run's median over its steps after the first (compile / warm-up)
    of the time keys and its max of the memory keys, then mean ± std over the label's seeds; plus the surgery share
    of the step time. Empty rows when no run logged these keys."""
    by_label: dict[str, list[RunDir]] = defaultdict(list)
    for run in runs:
        by_label[run.label].append(run)
    header = ["strategy", "runs"] + [col for _, col, _ in COST_COLUMNS] + ["surgery share"]
    rows = []
    for label, group in by_label.items():
        per_key: dict[str, list[float]] = defaultdict(list)
        for run in group:
            for key, _, how in COST_COLUMNS:
                steps, values = run.series(key)
                values = [v for s, v in zip(steps, values) if s > 1] or values
                if values:
                    per_key[key].append(statistics.median(values) if how == "median" else max(values))
        if not per_key:
            continue
        row = [label, str(len(group))]
        for key, _, _ in COST_COLUMNS:
            vals = per_key.get(key, [])
            if not vals:
                row.append("")
                continue
            mean = statistics.fmean(vals)
            row.append(f"{mean:.3g}" + (f" ± {statistics.stdev(vals):.2g}" if len(vals) > 1 else ""))
        step, surgery = per_key.get("time/step_s"), per_key.get("time/surgery_s")
        share = statistics.fmean(surgery) / statistics.fmean(step) if step and surgery and statistics.fmean(step) else None
        row.append(f"{100 * share:.1f}%" if share is not None else "")
        rows.append(row)
    return header, rows
