"""What the experiment's results page needs from `mgs report`, on hand-written run directories with known numbers:
strategy labels that tell single-domain runs and sequential orders apart, bold only for a best mean whose lead
exceeds the spread, conflict heatmaps pooled over seeds (event counts add), and the time/memory table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from mgs.diagnostics.rundir import RunDir
from mgs.reports import tables
from mgs.reports.build import _pooled
from mgs.diagnostics.conflict import ConflictMatrix

DOMAINS = [{"name": "math", "kind": "math", "weight": 1.0}, {"name": "chat", "kind": "chat", "weight": 1.0}]


def _run(root: Path, name: str, cfg: dict, score: float | None = None, metrics: list[dict] | None = None) -> RunDir:
    path = root / name
    (path / "eval").mkdir(parents=True)
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in (metrics or [{"step": 1, "stage": "x"}])))
    if score is not None:
        (path / "eval" / "bench.json").write_text(json.dumps({
            "tag": "bench", "step": 1, "sets": {"gsm8k": {"domain": "math", "main_metric": "accuracy", "score": score,
                                                         "stderr": 1.0, "proxy": False, "metrics": {}}},
            "total": {"value": score, "formula": "Total = gsm8k", "sets": ["gsm8k"]}}))
    return RunDir(path)


def _cfg(strategy: str, seed: int, weights=(1.0, 1.0), stages=None) -> dict:
    domains = [dict(d, weight=w) for d, w in zip(DOMAINS, weights)]
    return {"strategy": {"name": strategy, "stages": stages or []}, "domains": domains, "train": {"seed": seed}}


def test_labels_tell_single_domain_runs_and_sequential_orders_apart(tmp_path):
    st = lambda *ds: [{"name": d, "steps": 1, "domains": {d: 1.0}} for d in ds]  # noqa: E731
    assert _run(tmp_path, "a", _cfg("mixed", 0, (0.0, 1.0))).label == "chat-only"
    assert _run(tmp_path, "b", _cfg("sequential", 0, stages=st("math"))).label == "math-only"
    assert _run(tmp_path, "c", _cfg("sequential", 0, stages=st("math", "chat"))).label == "sequential (math -> chat)"
    assert _run(tmp_path, "d", _cfg("sequential", 0, stages=st("chat", "math"))).label == "sequential (chat -> math)"
    assert _run(tmp_path, "e", _cfg("mixed", 0)).label == "mixed"
    cfg = _cfg("mgs", 0)
    cfg["surgery"] = {"granularity": "global", "method": "pcgrad"}
    assert _run(tmp_path, "f", cfg).label == "global-pcgrad"


def test_run_table_lists_trained_domains_and_surgery_only_where_it_shaped_the_update(tmp_path):
    mono = _cfg("mixed", 0, (1.0, 0.0))
    monitored = dict(_cfg("mixed", 1), surgery={"granularity": "module", "method": "pcgrad", "monitor": True})
    mgs = dict(_cfg("mgs", 0), surgery={"granularity": "tensor", "method": "pcgrad"})
    seq = _cfg("sequential", 0, stages=[{"name": "chat", "steps": 1, "domains": {"chat": 1.0}}])
    runs = [_run(tmp_path, n, c) for n, c in (("m", mono), ("x", monitored), ("g", mgs), ("s", seq))]
    header, rows = tables.run_table(runs)
    col = {h: i for i, h in enumerate(header)}
    assert [r[col["trained domains"]] for r in rows] == ["math", "math, chat", "math, chat", "chat"]
    assert [r[col["surgery"]] for r in rows] == ["none", "none (stats at module)", "tensor/pcgrad", "none"]


def test_bold_only_where_the_lead_exceeds_the_spread(tmp_path):
    # mixed 50 ± 1 vs mgs 60 ± 2 (lead 10 > 2): bold; then a third run widens mgs to 55 ± 5 (lead 5 == 5): not bold
    runs = [_run(tmp_path, f"m{s}", _cfg("mixed", s), score) for s, score in enumerate((49.0, 50.0, 51.0))]
    runs += [_run(tmp_path, f"g{s}", _cfg("mgs", s), score) for s, score in enumerate((58.0, 62.0))]
    header, rows, data = tables.strategy_table(runs)
    assert rows[1][2] == "**60.0 ± 2.8**" and rows[0][2] == "50.0 ± 1.0" and data["mgs"]["gsm8k"]["best"]
    assert tables.clear_best({"a": {"mean": 55.0, "std": 5.0}, "b": {"mean": 50.0, "std": 1.0}}) is None
    assert tables.clear_best({"a": {"mean": 55.1, "std": 5.0}, "b": {"mean": 50.0, "std": 1.0}}) == "a"
    assert tables.clear_best({"a": {"mean": 90.0, "std": None}, "b": {"mean": 10.0, "std": 1.0}}) is None  # 1 seed
    assert tables.clear_best({"a": {"mean": 90.0, "std": 1.0}, "b": {"mean": math.nan, "std": None}}) is None


def test_conflict_heatmaps_pool_event_counts_over_seeds():
    a = ConflictMatrix("chat__math", [0, 1], ["attn", "mlp"], [[0.5, 1.0], [0.0, math.nan]], [[2, 1], [4, 0]],
                       {"embed": 0.0}, {"embed": 3})
    b = ConflictMatrix("chat__math", [1, 2], ["attn", "mlp"], [[1.0, 0.25], [0.5, 0.5]], [[4, 4], [2, 2]],
                       {"embed": 1.0}, {"embed": 1})
    m = _pooled([a, b])
    assert m.layers == [0, 1, 2] and m.parts == ["attn", "mlp"]
    assert m.counts == [[2, 1], [8, 4], [2, 2]]
    assert m.rate[0] == [0.5, 1.0] and m.rate[1] == [pytest.approx(0.5), pytest.approx(0.25)]  # (0 + 4) / 8, 1 / 4
    assert m.rate[2] == [0.5, 0.5] and m.outside == {"embed": pytest.approx(0.25)} and m.outside_counts == {"embed": 4}


def test_time_and_memory_table_skips_the_warm_up_step(tmp_path):
    def metrics(step_s, surgery_s, peak):
        return [{"step": i + 1, "stage": "x", "time/step_s": t, "time/surgery_s": g, "mem/peak_gb": p}
                for i, (t, g, p) in enumerate(zip(step_s, surgery_s, peak))]

    runs = [_run(tmp_path, "g0", _cfg("mgs", 0), metrics=metrics([60.0, 2.0, 4.0, 3.0], [9, 0.1, 0.1, 0.1],
                                                                    [5, 6, 7, 6])),
            _run(tmp_path, "g1", _cfg("mgs", 1), metrics=metrics([50.0, 5.0, 5.0, 5.0], [9, 0.2, 0.2, 0.2],
                                                                    [5, 5, 5, 5]))]
    header, rows = tables.cost_table(runs)
    cells = dict(zip(header, rows[0]))
    assert cells["strategy"] == "mgs" and cells["runs"] == "2"
    assert cells["step s"] == "4 ± 1.4"  # medians 3 and 5 (step 1 left out)
    assert cells["peak GB"] == "6 ± 1.4"  # max over steps 2-4: 7 and 5
    assert cells["surgery share"] == f"{100 * 0.15 / 4:.1f}%"
    assert cells["rollout s"] == ""
