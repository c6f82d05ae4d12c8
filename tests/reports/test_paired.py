"""Paired differences between strategies on the same prompts: known answers on synthetic scores (a constant shift,
pure noise, seed averaging, prompts missing from a run), and the "Paired differences" section of `mgs report` on
small run folders written through `write_eval` (so the scores files are the real ones)."""

from __future__ import annotations

import json
import math
import random
import statistics
from pathlib import Path

import pytest
import yaml

from mgs.cli import main
from mgs.eval.results import SetInfo, write_eval
from mgs.eval.runner import EvalResult
from mgs.reports.paired import Z95, combined_total, paired_comparisons, paired_difference


def _uids(n):
    return [f"p{i:03d}" for i in range(n)]


def test_constant_shift_is_exact_with_zero_stderr():
    rng = random.Random(0)
    b = {u: rng.choice([0.0, 0.5, 1.0]) * 0.8 for u in _uids(50)}
    a = {u: v + 0.1 for u, v in b.items()}
    for interval in ("normal", "bootstrap"):
        d = paired_difference([a], [b], interval=interval)
        assert d.n == 50 and d.mean == pytest.approx(10.0) and d.stderr == pytest.approx(0.0, abs=1e-12)
        assert d.low == pytest.approx(10.0) and d.high == pytest.approx(10.0) and d.excludes_zero


def test_noise_interval_covers_zero_and_matches_the_formula():
    rng = random.Random(1)
    a = {u: float(rng.random() < 0.4) for u in _uids(300)}
    b = {u: float(rng.random() < 0.4) for u in _uids(300)}
    d = paired_difference([a], [b])
    diffs = [100 * (a[u] - b[u]) for u in sorted(a)]
    se = statistics.stdev(diffs) / math.sqrt(300)
    assert d.mean == pytest.approx(statistics.fmean(diffs)) and d.stderr == pytest.approx(se)
    assert (d.low, d.high) == pytest.approx((d.mean - Z95 * se, d.mean + Z95 * se))
    assert d.low < 0 < d.high and not d.excludes_zero
    boot = paired_difference([a], [b], interval="bootstrap")
    assert boot.low < 0 < boot.high
    assert boot.high - boot.low == pytest.approx(2 * Z95 * se, rel=0.15)  # bootstrap ~ normal at n = 300
    assert paired_difference([a], [b], interval="bootstrap") == boot  # seeded: reproducible


def test_seeds_are_averaged_per_prompt_and_only_shared_prompts_count():
    a1 = {"x": 1.0, "y": 0.0, "z": 1.0, "w": 1.0}
    a2 = {"x": 0.0, "y": 0.0, "z": 1.0}  # w missing from one run: left out
    b1 = {"x": 0.0, "y": 1.0, "z": 0.0, "w": 0.0}
    d = paired_difference([a1, a2], [b1])
    diffs = [50.0, -100.0, 100.0]  # x: 0.5 - 0, y: 0 - 1, z: 1 - 0 (points)
    assert d.n == 3 and d.mean == pytest.approx(statistics.fmean(diffs))
    assert d.stderr == pytest.approx(statistics.stdev(diffs) / math.sqrt(3))
    assert paired_difference([{"x": 1.0}], [{"x": 0.0}]) is None  # one prompt: no standard error


def test_total_combines_set_stderrs_assuming_independence():
    rng = random.Random(2)
    sets = {"gsm8k": 0.05, "ifeval": -0.02, "alpaca_eval": 0.3}
    ref, other = [{}], [{}]
    for name, shift in sets.items():
        b = {u: rng.random() for u in _uids(40)}
        ref[0][name] = {"main_metric": "m", "scale": 100.0, "scores": b}
        other[0][name] = {"main_metric": "m", "scale": 100.0,
                          "scores": {u: v + shift + 0.05 * rng.gauss(0, 1) for u, v in b.items()}}
    res = paired_comparisons({"mixed": ref, "mgs": other}, reference="mixed", in_total=["gsm8k", "ifeval"],
                             proxies=["alpaca_eval"])
    per = res["comparisons"]["mgs"]
    assert set(per) == {"gsm8k", "ifeval", "alpaca_eval", "Total"} and res["total_sets"]["mgs"] == ["gsm8k", "ifeval"]
    assert per["gsm8k"]["mean"] == pytest.approx(5.0, abs=2.0) and per["gsm8k"]["excludes_zero"]
    tot = per["Total"]
    assert tot["mean"] == pytest.approx((per["gsm8k"]["mean"] + per["ifeval"]["mean"]) / 2)
    assert tot["stderr"] == pytest.approx(math.hypot(per["gsm8k"]["stderr"], per["ifeval"]["stderr"]) / 2)
    assert combined_total([]) is None
    with pytest.raises(ValueError, match="choose from"):
        paired_comparisons({"mixed": ref}, reference="nope", in_total=[])


# ----------------------------------------------------------------------------------------- through mgs report
def _run(root: Path, name: str, strategy: str, seed: int, per_prompt: dict[str, list[float]] | None) -> Path:
    """A run folder with config, one metrics row and eval/bench.json written by write_eval from per-response
    records (None: an old-style eval without records, so its scores file holds only notes)."""
    path = root / name
    path.mkdir(parents=True)
    cfg = {"strategy": {"name": strategy}, "train": {"seed": seed},
           "domains": [{"name": "math", "kind": "math", "weight": 1.0}, {"name": "ifeval", "kind": "ifeval"}]}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    (path / "metrics.jsonl").write_text(json.dumps({"step": 1, "stage": "main"}) + "\n")
    results, infos = {}, {}
    for name_, values in (per_prompt or {"gsm8k": [0.0], "ifeval": [0.0]}).items():
        records = [{"uid": f"q{i}", "sample_index": 0, "score": v, "info": {}} for i, v in enumerate(values)]
        acc = statistics.fmean(values)
        results[name_] = EvalResult({"accuracy": acc, "num_prompts": float(len(values))},
                                    records if per_prompt else [], "accuracy")
        infos[name_] = SetInfo(domain=name_, main_metric="accuracy")
    write_eval(path / "eval" / "bench.json", results, infos, tag="bench", model="tiny", step=1)
    return path


def test_report_paired_section_matches_hand_computed_differences(tmp_path):
    rng = random.Random(3)
    n = 60
    base = {s: [float(rng.random() < 0.5) for _ in range(n)] for s in ("gsm8k", "ifeval")}
    runs = []
    for seed in (0, 1):
        runs.append(_run(tmp_path, f"mixed-s{seed}", "mixed", seed, base))
        better = {"gsm8k": [1.0 if i < n // 2 else v for i, v in enumerate(base["gsm8k"])],  # strictly better
                  "ifeval": [v if rng.random() < 0.9 else 1 - v for v in base["ifeval"]]}
        runs.append(_run(tmp_path, f"global-s{seed}", "global-pcgrad", seed, better))
    runs.append(_run(tmp_path, "seq-s0", "sequential", 0, None))  # no per-prompt scores: reported as missing
    out = tmp_path / "report"
    assert main(["report", *map(str, runs), "--out", str(out)]) == 0
    md = (out / "report.md").read_text()
    data = json.loads((out / "report.json").read_text())["paired"]
    assert data["reference"] == "mixed" and [m.split()[0] for m in data["missing"]] == ["sequential"]
    label = next(iter(data["comparisons"]))
    per = data["comparisons"][label]

    def expected(name):
        mixed = {f"q{i}": base[name][i] for i in range(n)}
        runs_ = [json.loads((tmp_path / f"global-s{s}" / "eval" / "bench.scores.json").read_text())[name]["scores"]
                 for s in (0, 1)]
        return [100 * (statistics.fmean(r[u] for r in runs_) - mixed[u]) for u in sorted(mixed)]

    for name in ("gsm8k", "ifeval"):
        diffs = expected(name)
        assert per[name]["n"] == n and per[name]["mean"] == pytest.approx(statistics.fmean(diffs))
        assert per[name]["stderr"] == pytest.approx(statistics.stdev(diffs) / math.sqrt(n))
    assert per["gsm8k"]["mean"] > 0 and per["gsm8k"]["excludes_zero"]
    row = next(line for line in md.splitlines() if line.startswith(f"| {label} | mixed | gsm8k |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[3:] == [str(n), f"{per['gsm8k']['mean']:+.2f}", f"{per['gsm8k']['stderr']:.2f}",
                         f"[{per['gsm8k']['low']:+.2f}, {per['gsm8k']['high']:+.2f}]", "yes"]
    assert f"| {label} | mixed | Total (gsm8k, ifeval) |" in md and "sequential" in md.split("## Paired")[1]

    # the summary opens the page and states the same Total difference, interval and verdict as the table
    summary = md.split("## Summary")[1].split("\n## ")[0]
    assert md.index("## Summary") < md.index("## Runs")
    total = per["Total"]
    verdict = ("ahead of mixed" if total["mean"] > 0 else "behind mixed") if total["excludes_zero"] else \
        "no difference from mixed resolved"
    assert (f"- {label} - mixed: Total {total['mean']:+.2f} points, 95% interval [{total['low']:+.2f}, "
            f"{total['high']:+.2f}] over {total['n']} prompts: {verdict}") in summary
    assert f"gsm8k {per['gsm8k']['mean']:+.2f} [{per['gsm8k']['low']:+.2f}, {per['gsm8k']['high']:+.2f}]" in summary

    # the author's conclusion comes verbatim after the summary; a missing file fails before anything is built
    (tmp_path / "conclusion.md").write_text("**Held:** global beats mixed on gsm8k.\n\nSecond paragraph.\n")
    assert main(["report", *map(str, runs), "--out", str(out), "--conclusion", str(tmp_path / "conclusion.md")]) == 0
    md = (out / "report.md").read_text()
    assert md.index("## Summary") < md.index("## Conclusion") < md.index("## Runs")
    assert "**Held:** global beats mixed on gsm8k.\n\nSecond paragraph." in md
    with pytest.raises(SystemExit, match="conclusion file .* not found"):
        main(["report", *map(str, runs), "--out", str(tmp_path / "r2"), "--conclusion", str(tmp_path / "nope.md")])
    assert not (tmp_path / "r2").exists()

    # another reference, the bootstrap interval, and an unknown reference fails with the list of strategies
    assert main(["report", str(runs[0]), str(runs[2]), "--out", str(out)]) == 0  # mixed seeds only
    assert "Needs evaluations of at least two strategies" in (out / "report.md").read_text()
    assert main(["report", *map(str, runs[:4]), "--out", str(out), "--paired-interval", "bootstrap"]) == 0
    boot = json.loads((out / "report.json").read_text())["paired"]["comparisons"][label]["gsm8k"]
    assert boot["mean"] == pytest.approx(per["gsm8k"]["mean"]) and boot["low"] != per["gsm8k"]["low"]
    assert "paired bootstrap over prompts" in (out / "report.md").read_text()
    assert main(["report", *map(str, runs[:4]), "--out", str(out), "--paired-ref", label]) == 0
    flipped = json.loads((out / "report.json").read_text())["paired"]["comparisons"]["mixed"]
    assert flipped["gsm8k"]["mean"] == pytest.approx(-per["gsm8k"]["mean"])
    with pytest.raises(SystemExit, match="choose from"):
        main(["report", *map(str, runs[:4]), "--out", str(out), "--paired-ref", "nope"])
