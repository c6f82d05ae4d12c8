"""IFEval's four accuracies as the evaluator aggregates them, on hand-built responses with known verdicts.

prompt-level = fraction of prompts whose every instruction is followed; instruction-level = fraction of all
instructions followed; loose = also accept the response with its first line, last line or both removed, or with
markdown asterisks removed (IFEval's definition)."""

from __future__ import annotations

import json

import pytest

from mgs.domains import build_domain
from mgs.eval.runner import aggregate

ROWS = [
    {"key": 1, "prompt": "p1", "instruction_id_list": ["punctuation:no_comma", "change_case:english_lowercase"],
     "kwargs": [{}, {}]},
    {"key": 2, "prompt": "p2", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
    {"key": 3, "prompt": "p3", "instruction_id_list": ["length_constraints:number_words", "punctuation:no_comma"],
     "kwargs": [{"relation": "at least", "num_words": 50}, {}]},
]
RESPONSES = [
    "Sure, here:\nall lowercase words here\nBye, friend",  # strict: both fail; loose (drop first+last line): both pass
    "no commas at all",  # passes both ways
    "too short",  # word count fails both ways, no_comma passes
]


@pytest.fixture()
def domain_and_samples(tmp_path):
    path = tmp_path / "ifeval.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    domain = build_domain("ifeval", test_path=str(path))
    return domain, domain.load("test")


def test_prompt_and_instruction_level_strict_and_loose(domain_and_samples):
    domain, samples = domain_and_samples
    by_key = {s.meta["key"]: s for s in samples}
    samples = [by_key[r["key"]] for r in ROWS]
    results = domain.score(samples, RESPONSES)
    m = aggregate(domain, samples, [[r] for r in results], main_metric="prompt_level_strict_acc")
    assert m["prompt_level_strict_acc"] == pytest.approx(1 / 3)
    assert m["inst_level_strict_acc"] == pytest.approx(2 / 5)
    assert m["prompt_level_loose_acc"] == pytest.approx(2 / 3)
    assert m["inst_level_loose_acc"] == pytest.approx(4 / 5)
    # per-prompt standard error of the headline: prompt verdicts 0, 1, 0
    mean = 1 / 3
    expected = ((2 * mean**2 + (1 - mean) ** 2) / 2 / 3) ** 0.5
    assert m["prompt_level_strict_acc_stderr"] == pytest.approx(expected)


def test_avg_at_k_counts_every_response(domain_and_samples):
    """With two responses per prompt (one good, one bad for p2), accuracies average over all responses."""
    domain, samples = domain_and_samples
    by_key = {s.meta["key"]: s for s in samples}
    samples = [by_key[r["key"]] for r in ROWS]
    second = ["still, failing", "a, b", "too short"]  # p1 fails both ways (commas in the only line), p2 now fails
    first_r = domain.score(samples, RESPONSES)
    second_r = domain.score(samples, second)
    m = aggregate(domain, samples, [[a, b] for a, b in zip(first_r, second_r)], main_metric="prompt_level_strict_acc")
    assert m["prompt_level_strict_acc"] == pytest.approx(1 / 6)  # only p2's first response
    assert m["inst_level_strict_acc"] == pytest.approx(3 / 10)  # 2 of 5, then 1 of 5 (p3's no_comma)
    assert m["prompt_level_loose_acc"] == pytest.approx(2 / 6)
    assert m["samples_per_prompt"] == 2
