"""The report's computed summary: verdicts follow the intervals (a difference is called only where its interval
excludes 0), numbers are the data's, and a strategy with one seed gets no spread."""

from __future__ import annotations

from mgs.reports.summary import conflict_line, findings, paired_lines, strategy_lines


def _cmp(mean, low, high, n=300):
    return {"n": n, "mean": mean, "stderr": (high - low) / 3.92, "low": low, "high": high,
            "excludes_zero": low > 0 or high < 0}


def test_verdicts_follow_the_intervals():
    paired = {"reference": "mixed", "comparisons": {
        "mgs": {"gsm8k": _cmp(1.5, 0.2, 2.8), "ifeval": _cmp(-0.5, -1.9, 0.9), "Total": _cmp(0.5, -0.3, 1.3, 600)},
        "global": {"gsm8k": _cmp(-2.0, -3.0, -1.0), "Total": _cmp(-1.2, -2.0, -0.4, 600)},
        "seq": {"gsm8k": _cmp(3.0, 1.0, 5.0), "Total": _cmp(2.0, 0.5, 3.5, 600)},
    }}
    lines = paired_lines(paired)
    assert lines[0] == ("mgs - mixed: Total +0.50 points, 95% interval [-0.30, +1.30] over 600 prompts: no "
                        "difference from mixed resolved; sets whose interval excludes 0: gsm8k +1.50 [+0.20, +2.80]")
    assert "Total -1.20 points" in lines[1] and lines[1].split(": ")[2].startswith("behind mixed")
    assert "ahead of mixed" in lines[2]
    no_total = paired_lines({"reference": "mixed", "comparisons": {"x": {"gsm8k": _cmp(0.1, -1, 1.2)}}})
    assert no_total == ["x - mixed: no Total (no in-Total set with per-prompt scores in both); sets whose interval "
                        "excludes 0: none"]


def test_strategy_lines_and_conflict_range():
    strategies = {"mixed": {"seeds": [0, 1, 2], "Total": {"mean": 8.0, "std": 0.19}},
                  "one": {"seeds": [0], "Total": {"mean": 7.25, "std": None}},
                  "none": {"seeds": [0], "gsm8k": {"mean": 1.0}}}
    assert strategy_lines(strategies) == ["mixed: benchmark Total 8.00 ± 0.19 (3 seeds)",
                                          "one: benchmark Total 7.25 (1 seed)"]
    interference = {"a": {"x__y": {"cos_mean": -0.02, "cos_neg_frac": 0.75}, "x__z": {"cos_mean": 0.01,
                                                                                    "cos_neg_frac": 0.25}},
                    "b": {"x__y": {"cos_mean": float("nan"), "cos_neg_frac": float("nan")}}}
    assert conflict_line(interference) == ("gradient conflict: the mean whole-model cosine between two domains' "
                                           "gradients ranges -0.020 to +0.010 over 2 (run, domain pair) "
                                           "combinations, negative on 25-75% of the steps")
    assert conflict_line({}) is None
    assert findings({}) == []
    assert findings({"strategies": strategies, "interference": interference})[-1].startswith("gradient conflict")
