"""The results file's headline standard error: a domain without `main_metric` (math, chat, ifeval in the default
demo) falls back to `prompt_reward_mean`, and its stderr must be the runner's `prompt_reward_stderr`, not NaN."""

from __future__ import annotations

import math

import pytest

from mgs.domains.base import RewardResult, Sample
from mgs.eval.results import SetInfo, build_payload, normalize
from mgs.eval.runner import EvalResult, aggregate, stderr_key, stderr_of_mean


class NoMainMetricDomain:
    """Reward = the number in the response; no `main_metric` attribute (like the math and chat domains)."""

    name = "plain"

    def score(self, samples, responses):
        return [RewardResult(float(r)) for r in responses]

    def metrics(self, samples, results):
        return {"reward_mean": sum(r.score for r in results) / len(results)}


def _aggregate(per_prompt_scores):
    samples = [Sample(uid=f"u{i}", domain="plain", messages=({"role": "user", "content": "q"},), target=None)
               for i in range(len(per_prompt_scores))]
    results = [[RewardResult(v) for v in vs] for vs in per_prompt_scores]
    return aggregate(NoMainMetricDomain(), samples, results)


def test_stderr_key_names_what_the_runner_writes():
    metrics = _aggregate([[1.0], [0.0], [0.5]])
    assert stderr_key("prompt_reward_mean") in metrics
    assert stderr_key("accuracy") == "accuracy_stderr"


def test_fallback_headline_has_finite_stderr_in_percent():
    per_prompt = [[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.5, 0.5]]  # prompt means 0.5, 0, 1, 0.5
    res = EvalResult(metrics=_aggregate(per_prompt))
    payload = build_payload({"plain": res}, {"plain": SetInfo(domain="plain")}, tag="before", model="m")
    s = payload["sets"]["plain"]
    assert s["main_metric"] == "prompt_reward_mean"
    assert s["score"] == pytest.approx(50.0)
    # by hand: mean 0.5, deviations (0, -.5, .5, 0) -> var = 0.5/3, stderr = sqrt(var/4)
    assert s["stderr"] == pytest.approx(100.0 * math.sqrt((0.5 / 3) / 4))
    assert s["stderr"] == pytest.approx(100.0 * stderr_of_mean([0.5, 0.0, 1.0, 0.5]))


def test_normalize_reads_the_fallback_stderr_too():
    res = EvalResult(metrics=_aggregate([[1.0], [0.0]]))
    payload = normalize({"plain": res.to_dict()}, "after")
    assert payload["sets"]["plain"]["stderr"] == pytest.approx(100.0 * stderr_of_mean([1.0, 0.0]))
