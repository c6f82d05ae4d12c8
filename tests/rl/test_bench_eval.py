"""`eval.benchmarks`: the trainer evaluates the benchmarks itself once training has finished, with the trained weights
and its own rollout backend. Its RUN/eval/bench.json must be what `mgs eval RUN --tag bench` writes from the final
checkpoint (same greedy responses, same per-response scores, same headlines), and a bad benchmark config fails at
load time, before any training."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mgs.cli import main
from mgs.config import ConfigError, from_dict
from mgs.rl import trainer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from test_run_matrix import _tiny_data  # noqa: E402  (tiny benchmark files laid out like shared/data)

BENCH = ["gsm8k", "ifeval", "alpaca_eval"]


def config(tmp_path, data, **eval_section):
    return from_dict({
        "model": {"name": "tiny:llama"},
        "domains": [{"name": "vowels", "kind": "toy", "params": {"chars": "aeiou"}, "eval_limit": 2},
                    {"name": "digits", "kind": "toy", "params": {"chars": "0123456789 "}, "eval_limit": 2}],
        "grpo": {"group_size": 2, "prompts_per_step": 2, "kl_coef": 0.0},
        "rollout": {"max_new_tokens": 6},
        "optim": {"lr": 1e-2, "weight_decay": 0.0},
        "train": {"steps": 2, "out_dir": str(tmp_path / "run"), "micro_batch_size": 4, "save_final": True},
        "eval": {"before": False, "after": True, "benchmarks": BENCH, "data_dir": str(data),
                 "benchmark_limit": 2, "benchmark_max_new_tokens": 7, **eval_section},
        "logging": {"progress": False, "save_completions": False},
    })


def _records(path: Path) -> list[tuple]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return sorted((r["set"], r["uid"], r["response"], r["score"]) for r in rows)


def test_in_process_benchmarks_equal_mgs_eval_of_the_final_checkpoint(tmp_path):
    data = _tiny_data(tmp_path / "data")
    summary = trainer.train(config(tmp_path, data))
    run = tmp_path / "run"
    ours = json.loads((run / "eval" / "bench.json").read_text())
    assert list(ours["sets"]) == BENCH and ours["step"] == 2
    assert (run / "eval" / "bench.scores.json").is_file()
    assert set(summary["eval"]["bench"]) == set(BENCH)
    assert summary["eval"]["bench"]["ifeval"]["score"] == ours["sets"]["ifeval"]["score"]
    assert json.loads((run / "summary.json").read_text())["eval"]["bench"] == summary["eval"]["bench"]

    assert main(["eval", str(run), "--data-dir", str(data), "--benchmarks", ",".join(BENCH), "--limit", "2",
                 "--max-new-tokens", "7", "--batch-size", "4", "--device", "cpu", "--tag", "again"]) == 0
    theirs = json.loads((run / "eval" / "again.json").read_text())
    mine, other = _records(run / "eval" / "bench.records.jsonl"), _records(run / "eval" / "again.records.jsonl")
    assert len(mine) == 2 * len(BENCH) and mine == other
    assert any(r[2].strip() for r in mine)  # real generated text, not all empty
    for name in BENCH:
        assert ours["sets"][name]["main_metric"] == theirs["sets"][name]["main_metric"]
        assert ours["sets"][name]["score"] == pytest.approx(theirs["sets"][name]["score"], abs=1e-9)
    assert ours["total"]["value"] == pytest.approx(theirs["total"]["value"], abs=1e-9)


@pytest.mark.parametrize("section,match", [
    ({"benchmarks": ["gsm8k", "nope"]}, "eval.benchmarks"),
    ({"benchmarks": ["gsm8k", "gsm8k"]}, "twice"),
    ({"data_dir": None}, "eval.data_dir"),
    ({"benchmarks": ["gsm8k", "ifbench"]}, "ifbench"),  # no ifbench file in the tiny data folder
    ({"benchmark_limit": 0}, "benchmark_limit"),
])
def test_bad_benchmark_config_fails_at_load(tmp_path, section, match):
    data = _tiny_data(tmp_path / "data")
    with pytest.raises(ConfigError, match=match):
        config(tmp_path, data, **section)
    assert not (tmp_path / "run").exists()
