"""Evaluate one domain: generate responses to its samples, score them with the domain's own reward, aggregate.

This is the single evaluation path of the project: the trainer's before/after held-out eval and `mgs eval` both call
`evaluate_domain`, so a benchmark number and a training reward come from the same scoring code. With
`num_samples=1, temperature=0` it is greedy accuracy; with `num_samples=k` and sampling it is avg@k (every metric is
the mean over the k responses of each prompt, then over prompts). The standard error of the main score treats the
prompt as the unit (the k responses of one prompt are averaged first), so it does not shrink with k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from mgs.domains.base import Domain, RewardResult, Sample
from mgs.domains.template import apply_template, score_responses, split_response

__all__ = ["EvalResult", "evaluate_domain", "stderr_of_mean", "stderr_key", "aggregate"]

FALLBACK_METRIC = "prompt_reward_mean"
"""The headline of a domain without a `main_metric`: mean over prompts of the mean reward of their responses."""


@dataclass
class EvalResult:
    """`metrics`: flat name -> float (the domain's metrics + `prompt_reward_mean/_stderr`, `<main>_stderr`, counts);
    `records`: one dict per response (uid, sample_index, prompt, response, score, parts, info, finished)."""

    metrics: dict[str, float]
    records: list[dict[str, Any]] = field(default_factory=list)
    main_metric: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"main_metric": self.main_metric, "metrics": self.metrics, "records": self.records}


def stderr_of_mean(values: Sequence[float]) -> float:
    """Standard error of the mean of `values` (sample std with n-1, over sqrt(n)); 0.0 for fewer than 2 values."""
    n = len(values)
    if n < 2:
        return 0.0
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return math.sqrt(var / n)


def stderr_key(metric: str) -> str:
    """Name of the standard error of `metric` in `EvalResult.metrics`: `<metric>_stderr`, except the fallback
    headline `prompt_reward_mean`, whose standard error is `prompt_reward_stderr`. Readers use this, never a
    hand-built name (a mismatch here once made every headline stderr NaN)."""
    return "prompt_reward_stderr" if metric == FALLBACK_METRIC else f"{metric}_stderr"


def _encode(tokenizer: Any, messages_list: list[list[dict[str, str]]]) -> list[list[int]]:
    """Prompt token ids exactly as the trainer builds them (mgs.rl.model.encode_prompts)."""
    from mgs.rl.model import encode_prompts  # the policy's encoder: one prompt format for training and eval

    return [list(ids) for ids in encode_prompts(tokenizer, messages_list)]


def aggregate(
    domain: Domain,
    samples: Sequence[Sample],
    results_per_sample: Sequence[Sequence[RewardResult]],
    *,
    main_metric: str | None = None,
) -> dict[str, float]:
    """Metrics of scored responses: `results_per_sample[i]` are the k results of `samples[i]`.

    The domain's `metrics()` over all (sample, result) pairs (= avg@k for per-prompt means), plus
    `prompt_reward_mean` (mean over prompts of the mean reward of their scorable responses), `prompt_reward_stderr`,
    `unscorable_frac`, `num_prompts`, `samples_per_prompt`, and for `main_metric` its standard error over prompts
    `<main_metric>_stderr` (from the domain's metrics of each prompt's k results; prompts where it is undefined,
    e.g. all responses unscorable, are left out). A domain's own `<main_metric>_stderr` moves to `..._domain`."""
    if len(samples) != len(results_per_sample):
        raise ValueError(f"{len(samples)} samples but {len(results_per_sample)} result lists")
    if not samples:
        raise ValueError("nothing to evaluate: the sample list is empty (check --limit and the data path)")
    flat_samples = [s for s, rs in zip(samples, results_per_sample) for _ in rs]
    flat_results = [r for rs in results_per_sample for r in rs]
    metrics = {k: float(v) for k, v in domain.metrics(flat_samples, flat_results).items()}

    per_prompt_reward: list[float] = []
    none_count = 0
    for rs in results_per_sample:
        scored = [r.score for r in rs if r.score is not None]
        none_count += len(rs) - len(scored)
        if scored:
            per_prompt_reward.append(sum(scored) / len(scored))
    ours = {
        "prompt_reward_mean": sum(per_prompt_reward) / len(per_prompt_reward) if per_prompt_reward else float("nan"),
        "prompt_reward_stderr": stderr_of_mean(per_prompt_reward),
        "unscorable_frac": none_count / len(flat_results),
        "num_prompts": float(len(samples)),
        "samples_per_prompt": len(flat_results) / len(samples),
    }
    clash = sorted(set(ours) & set(metrics))
    if clash:
        raise ValueError(f"domain {domain.name!r} metrics use names reserved by the evaluator {clash}; rename them")
    metrics.update(ours)

    if main_metric is not None:
        if main_metric not in metrics:
            raise KeyError(f"main metric {main_metric!r} is not among the domain's metrics {sorted(metrics)}")
        per_prompt = [float(domain.metrics([s] * len(rs), list(rs)).get(main_metric, float("nan")))
                      for s, rs in zip(samples, results_per_sample)]
        key = f"{main_metric}_stderr"
        if key in metrics:  # the domain's own (per-response) estimate, kept for comparison
            metrics[f"{key}_domain"] = metrics[key]
        metrics[key] = stderr_of_mean([v for v in per_prompt if math.isfinite(v)])
    return metrics


def evaluate_domain(
    backend: Any,
    tokenizer: Any,
    domain: Domain,
    samples: Sequence[Sample],
    *,
    num_samples: int = 1,
    temperature: float = 0.0,
    max_new_tokens: int,
    template: str = "none",
    seed: int = 0,
    batch_size: int = 32,
    top_p: float = 1.0,
    main_metric: str | None = None,
) -> EvalResult:
    """Generate `num_samples` responses per sample with `backend`, score them with `domain.score`, aggregate.

    `backend.generate(prompt_ids, num_samples=, max_new_tokens=, temperature=, top_p=, seed=)` is the rollout
    contract (mgs/rl/rollout.py). `template` is the prompt template of training ("none" or a name known to
    `mgs.domains.template`): the reward sees only the response part, and a malformed output gets the same penalty
    as in training (`score_responses`). Prompts go in chunks of `batch_size` (default 32: a decode step of the
    135M model on CPU costs about the same for 8 or 24 rows, so greedy eval of 24 prompts is ~2x faster than in
    chunks of 8; the backend may split a chunk further by its own `max_batch_size`); chunk c
    uses seed `seed + c`, so results depend on (seed, batch_size), not on anything global. `main_metric` (default:
    the domain's `main_metric` attribute if it has one) gets a per-prompt standard error `<main_metric>_stderr`.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_samples > 1 and temperature == 0.0:
        raise ValueError("num_samples > 1 with temperature 0 repeats one greedy answer; set temperature > 0 for avg@k")
    samples = list(samples)
    if not samples:
        raise ValueError(f"no samples to evaluate for domain {domain.name!r}")
    main_metric = main_metric or getattr(domain, "main_metric", None)

    prompt_messages = [list(apply_template(s.messages, template)) for s in samples]
    prompt_ids = _encode(tokenizer, prompt_messages)

    texts: list[list[str]] = [[] for _ in samples]
    finished: list[list[bool]] = [[] for _ in samples]
    for chunk, start in enumerate(range(0, len(samples), batch_size)):
        ids = prompt_ids[start : start + batch_size]
        completions = backend.generate(ids, num_samples=num_samples, max_new_tokens=max_new_tokens,
                                       temperature=temperature, top_p=top_p, seed=seed + chunk)
        if len(completions) != len(ids) * num_samples:
            raise RuntimeError(f"backend returned {len(completions)} completions for {len(ids)} prompts x "
                               f"{num_samples} samples")
        for c in completions:
            texts[start + c.prompt_index].append(c.text)
            finished[start + c.prompt_index].append(bool(c.finished))

    flat_samples = [s for s, ts in zip(samples, texts) for _ in ts]
    flat_raw = [t for ts in texts for t in ts]
    flat_responses = [split_response(t, template)[1] for t in flat_raw]
    flat_results = score_responses(domain, flat_samples, flat_raw, template)  # malformed -> the training penalty
    if len(flat_results) != len(flat_responses):
        raise RuntimeError(f"domain {domain.name!r} returned {len(flat_results)} rewards for {len(flat_responses)} "
                           "responses")

    results_per_sample: list[list[RewardResult]] = []
    records: list[dict[str, Any]] = []
    i = 0
    for s, ts, fs in zip(samples, texts, finished):
        rs = flat_results[i : i + len(ts)]
        results_per_sample.append(list(rs))
        for k, (raw, done, r) in enumerate(zip(ts, fs, rs)):
            rec = {"uid": s.uid, "domain": s.domain, "sample_index": k, "prompt": _prompt_text(s),
                   "response": flat_responses[i + k], "score": r.score, "parts": dict(r.parts),
                   "info": r.info, "finished": done}
            if template != "none":
                rec["raw_response"] = raw
            records.append(rec)
        i += len(ts)

    metrics = aggregate(domain, samples, results_per_sample, main_metric=main_metric)
    metrics["temperature"] = float(temperature)
    metrics["max_new_tokens"] = float(max_new_tokens)
    metrics["finished_frac"] = sum(r["finished"] for r in records) / len(records)
    return EvalResult(metrics=metrics, records=records, main_metric=main_metric)


def _prompt_text(sample: Sample) -> str:
    """The prompt as a reader wants it in a record: the user turns, joined (multi-turn prompts keep every turn)."""
    users = [m["content"] for m in sample.messages if m.get("role") == "user"]
    return "\n\n".join(users) if users else "\n\n".join(m.get("content", "") for m in sample.messages)
