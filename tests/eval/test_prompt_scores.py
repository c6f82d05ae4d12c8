"""Per-prompt scores files (`<tag>.scores.json`): for every kind of set `mgs eval` writes (math greedy and avg@k,
IFEval prompt-level strict, chat proxy) the mean of the per-prompt scores times the scale is the set's headline
score; sets whose headline does not decompose over prompts get a note instead of scores."""

from __future__ import annotations

import json
import statistics
import sys
from mgs.rl.rollout import Completion
from pathlib import Path

import pytest

from mgs.domains.base import RewardResult, Sample
from mgs.eval.benchmarks import parse_benchmarks
from mgs.eval.results import SetInfo, read_scores, write_eval
from mgs.eval.runner import EvalResult, aggregate
from mgs.eval.suite import SuiteSettings, run_benchmarks

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "experiments"))
from test_run_matrix import _tiny_data  # noqa: E402  (the tiny benchmark files of the experiment test)


def _check_scores_match_headlines(path: Path, expect_sets: set[str]) -> dict:
    payload = json.loads(path.read_text())
    scores = read_scores(path)
    assert payload["scores_file"] == path.stem + ".scores.json" and scores is not None
    assert set(scores) == set(payload["sets"])
    assert {n for n, e in scores.items() if "scores" in e} == expect_sets, scores
    for name in expect_sets:
        entry, s = scores[name], payload["sets"][name]
        assert entry["main_metric"] == s["main_metric"] and entry["scale"] == 100.0
        assert len(entry["scores"]) == s["metrics"]["num_prompts"]
        assert abs(statistics.fmean(entry["scores"].values()) * entry["scale"] - s["score"]) < 1e-9
    return scores


def test_tiny_model_eval_writes_scores_whose_mean_is_each_headline(tiny_policy, tmp_path):
    """Real generation (tiny random Llama) through `mgs eval`'s engine: greedy math, avg@2 math, IFEval, chat proxy."""
    from mgs.rl.rollout import HFGenerateBackend

    data = _tiny_data(tmp_path / "data")
    backend = HFGenerateBackend(tiny_policy.model, tiny_policy.tokenizer, max_batch_size=4)
    settings = SuiteSettings(data_dir=str(data), samples=2, max_new_tokens=8, batch_size=4)
    results, infos = run_benchmarks(backend, tiny_policy.tokenizer, parse_benchmarks("gsm8k,ifeval,alpaca_eval"),
                                    settings, log=lambda _: None)
    path = tmp_path / "eval" / "bench.json"
    write_eval(path, results, infos, tag="bench", model="tiny")
    scores = _check_scores_match_headlines(path, {"gsm8k", "gsm8k@2", "ifeval", "alpaca_eval"})
    assert set(scores["gsm8k"]["scores"]) == {r["uid"] for r in results["gsm8k"].records}


class AnswerBackend:
    """Rollout-contract backend that answers each prompt from a table keyed by a phrase of the prompt and the
    sample index, so the real math / IFEval rewards see right and wrong answers (a random model gets all wrong)."""

    def __init__(self, tokenizer, table):
        self.tokenizer, self.table = tokenizer, table

    def generate(self, prompt_ids, *, num_samples, max_new_tokens, temperature, top_p, seed):
        out = []
        for i, ids in enumerate(prompt_ids):
            text = self.tokenizer.decode(ids)
            (answers,) = [v for k, v in self.table.items() if k in text]
            out += [Completion(i, ids, [], answers[k], True) for k in range(num_samples)]
        return out


def test_varied_right_and_wrong_answers_decompose_exactly(smollm2_tokenizer, tmp_path):
    data = _tiny_data(tmp_path / "data")
    table = {"2 + 3": ["The answer is \\boxed{5}.", "\\boxed{5}"], "4 * 4": ["\\boxed{16}", "\\boxed{15}"],
             "Say hi": ["hi there", "hi, there"], "Write a poem": ["roses are red", "violets are blue"]}
    settings = SuiteSettings(data_dir=str(data), samples=2, max_new_tokens=8, batch_size=4)
    results, infos = run_benchmarks(AnswerBackend(smollm2_tokenizer, table), smollm2_tokenizer,
                                    parse_benchmarks("gsm8k,ifeval"), settings, log=lambda _: None)
    path = tmp_path / "bench.json"
    write_eval(path, results, infos, tag="bench", model="scripted")
    scores = _check_scores_match_headlines(path, {"gsm8k", "gsm8k@2", "ifeval"})
    uid = {s: sorted(scores[s]["scores"]) for s in scores}
    assert sorted(scores["gsm8k"]["scores"].values()) == [1.0, 1.0]  # greedy: first answers, both right
    assert sorted(scores["gsm8k@2"]["scores"].values()) == [0.5, 1.0]  # 4*4: one of two samples right
    assert sorted(scores["ifeval"]["scores"].values()) == [0.0, 1.0]  # no comma followed; 300 words not
    assert len(uid["ifeval"]) == 2


def test_headlines_that_do_not_decompose_get_a_note(tmp_path):
    """avg@k with an unscorable response weights prompts unequally; a win rate has no per-response rule."""
    from mgs.domains import build_domain

    math_domain = build_domain("math", name="math", num_train=4, num_test=2)
    samples = [Sample(uid=f"p{i}", domain="math", messages=({"role": "user", "content": "q"},), target="1")
               for i in range(2)]
    per_sample = [[RewardResult(1.0), RewardResult(None)], [RewardResult(0.0), RewardResult(0.0)]]
    metrics = aggregate(math_domain, samples, per_sample, main_metric="accuracy")
    assert metrics["accuracy"] == pytest.approx(1 / 3)  # over responses; per-prompt means average to 1/2
    records = [{"uid": s.uid, "sample_index": k, "score": r.score, "info": {}}
               for s, rs in zip(samples, per_sample) for k, r in enumerate(rs)]
    win = EvalResult({"win_rate_vs_reference": 0.5, "num_prompts": 2.0}, records[:1], "win_rate_vs_reference")
    results = {"math@2": EvalResult(metrics, records, "accuracy"), "alpaca_eval": win}
    infos = {"math@2": SetInfo(domain="math", main_metric="accuracy"),
             "alpaca_eval": SetInfo(domain="chat", main_metric="win_rate_vs_reference")}
    write_eval(tmp_path / "x.json", results, infos, tag="x", model="m")
    scores = read_scores(tmp_path / "x.json")
    assert "scores" not in scores["math@2"] and "count unequally" in scores["math@2"]["note"]
    assert "scores" not in scores["alpaca_eval"] and "no per-response rule" in scores["alpaca_eval"]["note"]
    assert read_scores(tmp_path / "missing.json") is None
