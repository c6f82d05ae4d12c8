"""Build the report of one or more runs: a self-contained HTML page (plots embedded as base64 PNG, works offline)
and a markdown file with the PNGs beside it, from run directories only.

Sections, in order (a section with nothing to show says so instead of disappearing, so readers know it was looked
for): summary (the findings in sentences, `mgs.reports.summary`), the author's conclusion (only with a conclusion
file), runs, strategies x benchmarks (mean ± std over seeds), paired differences on the same prompts (each strategy
minus a reference, over the per-prompt scores files), per-domain reward, gradient cosine (whole model and per
group type), conflict rate by layer and module type, gradient-norm ratio, entropy and response length, interference
summary, forgetting and rigidity (sequential runs), time and memory per strategy.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from mgs.diagnostics import conflict, sequential
from mgs.diagnostics.rundir import RunDir
from mgs.reports import paired, plots, summary, tables

SECTIONS = (
    "Summary",
    "Runs",
    "Strategies x benchmarks",
    "Paired differences",
    "Per-domain reward",
    "Gradient cosine between domains",
    "Conflict rate by layer and module type",
    "Gradient-norm ratio",
    "Entropy and response length",
    "Interference summary",
    "Forgetting and rigidity",
    "Time and memory",
)


@dataclass
class Section:
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[tuple[list[str], list[list[str]]]] = field(default_factory=list)
    figures: list[tuple[str, bytes]] = field(default_factory=list)  # (file stem, PNG), rendered when added: a
    # report of many runs would otherwise hold dozens of open matplotlib figures


def _sections(runs: Sequence[RunDir], single: dict[str, RunDir], paired_ref: str | None = None,
              paired_interval: str = "normal") -> tuple[list[Section], dict[str, Any]]:
    data: dict[str, Any] = {}
    s_runs = Section("Runs", tables=[tables.run_table(runs)])

    s_main = Section("Strategies x benchmarks")
    header, rows, data["strategies"] = tables.strategy_table(runs)
    if rows:
        s_main.tables.append((header, rows))
        s_main.text.append("Headline score of each evaluated set in percent (the final evaluation of each run: its "
                           "latest `mgs eval`, else `after`); mean ± sample std over the seeds of a strategy. Bold: the "
                           "column's best mean, only where its lead over the runner-up exceeds the larger of the two "
                           "stds (never with a single seed).")
        first = next(tables.final_eval(r) for r in runs if tables.final_eval(r) is not None)
        s_main.text.append(first["total"]["formula"] + ".")
        if any(h.endswith("*") for h in header):
            s_main.text.append("* proxy score (similarity to the reference answer, no reward model): not comparable "
                               "to reward-model or judge scores; not in the Total.")
    else:
        s_main.text.append("No evaluation files in these runs (RUN/eval/*.json); run `mgs eval RUN_DIR`.")

    s_paired = _paired_section(runs, paired_ref, paired_interval, data)

    s_reward = Section("Per-domain reward")
    _add(s_reward, "reward", plots.domain_curves(runs, "reward"), "No per-domain reward metrics logged.")

    s_cos = Section("Gradient cosine between domains")
    _add(s_cos, "cosine_whole_model", plots.cosine_whole_model(runs),
         "No surgery statistics (train with strategy mgs, or surgery.monitor: true).")
    stems: set[str] = set()
    for run in runs:
        fig = plots.cosine_by_group_type(run)
        if fig is not None:
            s_cos.figures.append((_figure_stem("cosine_by_group_type", run.path.name, stems), _png(fig)))

    s_heat = Section("Conflict rate by layer and module type")
    data["conflict_matrices"] = {}
    by_label: dict[str, list[tuple[RunDir, list]]] = {}
    for run in runs:
        rows_ = conflict.group_rows(run)
        if rows_:
            by_label.setdefault(run.label, []).append((run, rows_))
    for label, group in by_label.items():
        stem = _figure_stem("conflict_heatmap", label, stems)
        seeds = ",".join(str(run.seed) for run, _ in group)
        name = f"{label} seed{'s' if len(group) > 1 else ''} {seeds}"
        for pair in sorted({r.pair for _, rows_ in group for r in rows_}):
            m = _pooled([conflict.conflict_matrix(run, pair, rows_) for run, rows_ in group
                         if any(r.pair == pair for r in rows_)])
            data["conflict_matrices"][f"{name}/{pair}"] = m.__dict__
            s_heat.figures.append((f"{stem}_{pair}", _png(plots.conflict_heatmap(m, name))))
    if not s_heat.figures:
        s_heat.text.append("No per-group surgery statistics (RUN/surgery/step_*.json).")
    else:
        s_heat.text.append("Fraction of surgery steps on which the two domains' gradients had a negative inner product "
                           "inside the group; rows = decoder layer, columns = attention / MLP; embedding and LM head "
                           "apart. One heatmap per strategy and pair, pooled over its seeds (events summed).")

    s_ratio = Section("Gradient-norm ratio")
    _add(s_ratio, "norm_ratio", plots.norm_ratio(runs), "No surgery statistics.")

    s_ent = Section("Entropy and response length")
    _add(s_ent, "entropy", plots.domain_curves(runs, "entropy"), "No per-domain entropy logged.")
    fig = plots.domain_curves(runs, "length")
    if fig is not None:
        s_ent.figures.append(("response_length", _png(fig)))

    s_int = Section("Interference summary")
    header, rows = tables.interference_table(runs)
    data["interference"] = {f"{plots.run_name(r)}": conflict.conflict_summary(r) for r in runs}
    if rows:
        s_int.tables.append((header, rows))
    else:
        s_int.text.append("No whole-model cosines in the metrics.")

    s_seq = Section("Forgetting and rigidity")
    data["sequential"] = {}
    seq_runs = [run for run in runs if sequential.is_sequential(run)]
    for run in runs:
        if not sequential.is_sequential(run):
            continue
        relevant = {d: r for d, r in single.items() if d in {x for st in sequential.stages(run) for x in st.domains}}
        seq_summary = sequential.sequential_summary(run, relevant, seq_runs)
        data["sequential"][plots.run_name(run)] = seq_summary
        equal = {d: m["points"] for d, m in seq_summary["rigidity_equal_steps"].items()}
        fig = plots.sequential_bars(plots.run_name(run), seq_summary["forgetting"], seq_summary["rigidity"], equal)
        rows = [[plots.run_name(run), "forgetting", d, stage, f"{v:.1f}"]
                for d, per in seq_summary["forgetting"].items() for stage, v in per.items()]
        rows += [[plots.run_name(run), "rigidity", d, _single_label(relevant[d]), f"{v:.1f}"]
                 for d, v in seq_summary["rigidity"].items()]
        rows += [[plots.run_name(run), "rigidity (equal steps)", d, f"first stage of {m['reference']} ({_steps(m['steps'])})",
                  f"{m['points']:.1f}"] for d, m in seq_summary["rigidity_equal_steps"].items()]
        if rows:
            s_seq.tables.append((["run", "measure", "domain", "compared with", "points lost"], rows))
        if fig is not None:
            s_seq.figures.append((_figure_stem("sequential", run.path.name, stems), _png(fig)))
    if not s_seq.tables:
        s_seq.text.append("No sequential run with evaluations after its stages among these runs.")
    else:
        s_seq.text.append("Forgetting: score of a domain right after the stage that trained it minus its score after a "
                          "later stage. Rigidity: score of the single-domain run minus the score right after the "
                          "sequential stage that trained the domain; where the single-domain run trained for more "
                          "steps than the stage, this includes the extra training. Rigidity (equal steps): score "
                          "right after the first stage of another sequential run that trained the domain alone for "
                          "as many steps (from the base model; same seed preferred) minus the score after this run's "
                          "later stage. Percentage points; positive = lost.")
    s_cost = Section("Time and memory")
    header, rows = tables.cost_table(runs)
    if rows:
        s_cost.tables.append((header, rows))
        s_cost.text.append("Per run: median over the steps after the first (compile / warm-up) of the step's times in "
                           "seconds, max of the memory keys (peak GB is CUDA only); then mean ± std over the seeds. "
                           "Runs that shared a GPU with other runs include that contention in their times; the "
                           "surgery share (surgery s / step s) is the MGS overhead of the update itself.")
    else:
        s_cost.text.append("No time/* or mem/* metrics logged.")
    s_summary = Section("Summary")
    lines = summary.findings(data)
    s_summary.text += [f"- {line}." for line in lines] if lines else ["No evaluated runs to summarise."]
    if lines and data.get("paired"):
        s_summary.text.append("Differences are paired over the same prompts (section \"Paired differences\"); a "
                              "difference is called only where its 95% interval excludes 0.")
    return [s_summary, s_runs, s_main, s_paired, s_reward, s_cos, s_heat, s_ratio, s_ent, s_int, s_seq, s_cost], data


def _paired_section(runs: Sequence[RunDir], ref: str | None, interval: str, data: dict[str, Any]) -> Section:
    """Each strategy minus the reference (`ref`, default `mixed` if present, else the first label) per set, over
    the prompts every run of both answered; fills `data["paired"]`."""
    section = Section("Paired differences")
    scores: dict[str, list] = {}
    in_total: list[str] = []
    proxies: list[str] = []
    for run in runs:
        ev = tables.final_eval(run)
        if ev is None:
            continue
        scores.setdefault(run.label, []).append(tables.final_scores(run))
        in_total += [n for n in ev["total"]["sets"] if n not in in_total]
        proxies += [n for n, s in ev["sets"].items() if s.get("proxy") and n not in proxies]
    if ref is None:
        ref = "mixed" if "mixed" in scores else next(iter(scores), None)
    if len(scores) < 2 or ref is None:
        section.text.append("Needs evaluations of at least two strategies.")
        return section
    result = paired.paired_comparisons(scores, reference=ref, in_total=in_total, proxies=proxies, interval=interval)
    data["paired"] = result
    header, rows = paired.paired_rows(result, proxies)
    if result["missing"]:
        section.text.append("No per-prompt scores (RUN/eval/<tag>.scores.json, written by `mgs eval` since the paired "
                            "comparison exists; evaluate again to get them) in some run of: "
                            + ", ".join(result["missing"]) + ".")
    if not rows:
        section.text.append(f"No set with per-prompt scores in every run of {ref!r} and another strategy.")
        return section
    how = ("normal (mean ± 1.96 stderr)" if interval == "normal" else
           f"paired bootstrap over prompts ({paired.BOOTSTRAP_RESAMPLES} resamples, seed {paired.BOOTSTRAP_SEED})")
    section.text.append(
        f"Each strategy minus {ref!r} on the same prompts, in points: per prompt, each strategy's headline score "
        "averaged over its seeds, then the difference; n = prompts present in every run of both. Mean difference, "
        f"its standard error sd/sqrt(n), and the 95% interval ({how}); \"excludes 0\" = the difference is "
        "unlikely to be prompt sampling noise alone (seed-to-seed training noise enters only through the seed "
        "average). Total: the mean of the in-Total sets' mean differences (named in the row), its standard error "
        "combining theirs assuming the sets are independent, a normal interval; its n is the sum over those sets.")
    section.tables.append((header, rows))
    if any(n in proxies for n in result["sets"]):
        section.text.append("* proxy score: shown, not in the Total.")
    return section


def _pooled(ms: list[conflict.ConflictMatrix]) -> conflict.ConflictMatrix:
    """Seeds of one strategy pooled: per cell, conflicted events / all events over the runs (their counts add)."""
    if len(ms) == 1:
        return ms[0]
    layers = sorted({layer for m in ms for layer in m.layers})
    parts = [p for p in dict.fromkeys(p for m in ms for p in m.parts)]
    hits = [[0.0] * len(parts) for _ in layers]
    counts = [[0] * len(parts) for _ in layers]
    out_hits: dict[str, float] = {}
    out_counts: dict[str, int] = {}
    for m in ms:
        for i, layer in enumerate(m.layers):
            for j, part in enumerate(m.parts):
                n = m.counts[i][j]
                if n:
                    a, b = layers.index(layer), parts.index(part)
                    hits[a][b] += m.rate[i][j] * n
                    counts[a][b] += n
        for key, rate in m.outside.items():
            n = m.outside_counts.get(key, 0)
            out_hits[key] = out_hits.get(key, 0.0) + rate * n
            out_counts[key] = out_counts.get(key, 0) + n
    rate = [[h / n if n else math.nan for h, n in zip(hr, nr)] for hr, nr in zip(hits, counts)]
    outside = {k: out_hits[k] / n if n else math.nan for k, n in out_counts.items()}
    return conflict.ConflictMatrix(ms[0].pair, layers, parts, rate, counts, outside, out_counts)


def _steps(n: int) -> str:
    return f"{n} step" if n == 1 else f"{n} steps"


def _single_label(run: RunDir) -> str:
    return f"single-domain run ({_steps(int(run.metrics[-1]['step']))})" if run.metrics else "single-domain run"


def _add(section: Section, stem: str, fig: Any, empty: str) -> None:
    if fig is None:
        section.text.append(empty)
    else:
        section.figures.append((stem, _png(fig)))


def _runs_title(runs: Sequence[RunDir]) -> str:
    """`mixed seeds 0, 1, 2; mgs seed 0` -- each strategy once with its seeds, so a 27-run title stays a line."""
    seeds: dict[str, list[int]] = {}
    for run in runs:
        seeds.setdefault(run.label, []).append(run.seed)
    parts = [f"{label} seed{'s' if len(ss) > 1 else ''} {', '.join(map(str, ss))}" for label, ss in seeds.items()]
    return (f"{len(runs)} runs: " if len(runs) > 1 else "") + "; ".join(parts)


def _figure_stem(kind: str, shows: str, used: set[str]) -> str:
    """`kind_<slug of what the figure shows>` (a run folder's name, a strategy label), unique within the report.
    Named by content, not by position, so adding runs to a report leaves the other figures' files as they were."""
    slug = re.sub(r"[^a-z0-9]+", "-", shows.lower()).strip("-") or "figure"
    stem, n = f"{kind}_{slug}", 2
    while stem in used:
        stem, n = f"{kind}_{slug}_{n}", n + 1
    used.add(stem)
    return stem


def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")  # "tight": keeps legends below the panels
    plt.close(fig)
    return buf.getvalue()


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda c: str(c).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, r)) + " |" for r in rows]
    return "\n".join(lines)


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_CSS = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}table{border-collapse:collapse;"
        "margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%}")


def build_report(run_dirs: Sequence[str | Path], out_dir: str | Path,
                 baseline_single: dict[str, str | Path] | None = None, paired_ref: str | None = None,
                 paired_interval: str = "normal", conclusion: str | Path | None = None) -> dict[str, Path]:
    """Write `out_dir/report.html`, `out_dir/report.md` (+ PNGs) and `out_dir/report.json` (the numbers shown).
    `paired_ref`: the strategy label the paired differences are taken against (default `mixed`, else the first);
    `paired_interval`: a name in `mgs.reports.paired.INTERVALS` (normal, bootstrap); `conclusion`: a markdown
    file of the author's conclusion, shown as the "Conclusion" section after the summary (paragraphs verbatim)."""
    if not run_dirs:
        raise ValueError("give at least one run directory")
    conclusion_text = None
    if conclusion is not None:
        path = Path(conclusion)
        if not path.is_file():
            raise FileNotFoundError(f"conclusion file {path} not found: give a markdown file, or leave --conclusion out")
        conclusion_text = path.read_text().strip()
    runs = [RunDir(Path(p)) for p in run_dirs]
    single = {d: RunDir(Path(p)) for d, p in (baseline_single or {}).items()}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections, data = _sections(runs, single, paired_ref, paired_interval)
    if conclusion_text:
        sections.insert(1, Section("Conclusion", text=[p.strip() for p in conclusion_text.split("\n\n") if p.strip()]))
    title = "MGS report: " + _runs_title(runs)
    md = [f"# {title}", ""]
    body = [f"<h1>{html.escape(title)}</h1>"]
    written: list[str] = []
    for sec in sections:
        md += [f"## {sec.title}", ""]
        body.append(f"<h2>{html.escape(sec.title)}</h2>")
        for t in sec.text:
            md += [t, ""]
            body.append(f"<p>{html.escape(t)}</p>")
        for header, rows in sec.tables:
            md += [_md_table(header, rows), ""]
            body.append(_html_table(header, rows))
        for stem, png in sec.figures:
            (out / f"{stem}.png").write_bytes(png)
            written.append(f"{stem}.png")
            md += [f"![{sec.title}: {stem}]({stem}.png)", ""]
            b64 = base64.b64encode(png).decode("ascii")
            body.append(f'<img alt="{html.escape(stem)}" src="data:image/png;base64,{b64}">')
    paths = {"markdown": out / "report.md", "html": out / "report.html", "json": out / "report.json"}
    paths["markdown"].write_text("\n".join(md))
    paths["html"].write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                             f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>")
    paths["json"].write_text(json.dumps(data, indent=1, default=_json_default))
    _drop_stale_figures(out, written)
    return paths


FIGURE_MANIFEST = "figures.txt"


def _drop_stale_figures(out: Path, written: list[str]) -> None:
    """Delete the PNGs an earlier build of this folder wrote that this one did not (fewer runs, a renumbered
    figure), so the folder holds only what report.md links. Only files named in our own manifest are touched."""
    manifest = out / FIGURE_MANIFEST
    before = manifest.read_text().split() if manifest.is_file() else []
    for name in set(before) - set(written):
        (out / name).unlink(missing_ok=True)
    manifest.write_text("".join(f"{n}\n" for n in written))


def _json_default(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return str(x)
