"""Forgetting and rigidity of sequential runs (the paper's "mode interference"), from the run's stage evaluations.

- forgetting of domain d after stage k = score of d right after the stage that trained it - score of d after
  stage k (k later). Positive = skill lost. (Paper, Qwen-2.5-7B: chat 47.9 after chat RL, 40.9 after math RL
  follows: forgetting 7.0.)
- rigidity of domain d = score of d in a single-domain run of d - score of d right after the stage of the sequential
  run that trained it. Positive = the earlier stages left the policy unable to learn d as well. (Paper: chat only
  reaches 38.3 after math RL vs 47.9 alone: rigidity 9.6.)
- rigidity at equal steps of domain d = score of d right after the *first* stage of another sequential run, whose
  stage trained d alone for as many steps as this run's later stage did, minus the score after that later stage.
  Both trained d for the same steps; one from the base model, one after the earlier stages. The single-domain
  comparison above mixes in the amount of training when a single-domain run is longer than a stage (at equal total
  compute it is: 3 stages of 10 steps vs 30 steps of one domain); this one does not. Prefer a run of the same seed.
Scores are the headline scores (percent) of the eval sets named like the domains. The eval "after stage k" is the
eval file whose `step` is the last step of stage k (or whose `stage` field names it); stages come from the config
(`strategy.stages`) and the `stage` column of metrics.jsonl.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mgs.diagnostics.rundir import RunDir


@dataclass
class Stage:
    name: str
    domains: list[str]
    first_step: int
    last_step: int
    scores: dict[str, float] = field(default_factory=dict)  # set name -> headline score (percent), after the stage

    @property
    def steps(self) -> int:
        return self.last_step - self.first_step + 1


def _stage_domains(run: RunDir) -> list[list[str]]:
    return [list((s.get("domains") or {}).keys()) for s in (run.cfg("strategy.stages", []) or [])]


def stages(run: RunDir) -> list[Stage]:
    """The run's stages with the scores of the evaluation made right after each (empty scores when none was)."""
    spans = run.stages()
    configured = _stage_domains(run)
    evals = [run.eval(t) for t in run.eval_tags()]
    out = []
    for i, (name, first, last) in enumerate(spans):
        domains = configured[i] if i < len(configured) else [d for d in name.split("+") if d]
        match = [e for e in evals if e.get("stage") == name] or [e for e in evals if e.get("step") == last]
        scores = {k: float(v["score"]) for k, v in match[-1]["sets"].items()} if match else {}
        out.append(Stage(name, domains, first, last, scores))
    return out


def forgetting(run: RunDir) -> dict[str, dict[str, float]]:
    """{domain: {later stage name: forgetting (percentage points)}} for every domain trained before a later stage."""
    st = stages(run)
    out: dict[str, dict[str, float]] = {}
    for s_index, s in enumerate(st):
        for d in s.domains:
            if d not in s.scores:
                continue
            for later in st[s_index + 1 :]:
                if d in later.scores and d not in later.domains:
                    out.setdefault(d, {})[later.name] = s.scores[d] - later.scores[d]
    return out


def final_score(run: RunDir, domain: str) -> float:
    """Score of `domain` in the run's last evaluation (largest step; tag `after` wins ties)."""
    evals = [run.eval(t) for t in run.eval_tags()]
    evals = [e for e in evals if domain in e.get("sets", {})]
    if not evals:
        raise ValueError(f"{run.path} has no evaluation of {domain!r}; its eval tags: {run.eval_tags()}")
    best = max(evals, key=lambda e: (e.get("step") or 0, e.get("tag") == "after"))
    return float(best["sets"][domain]["score"])


def rigidity(run: RunDir, single_runs: dict[str, RunDir]) -> dict[str, float]:
    """{domain: single-domain score - score right after the sequential stage that trained it}, for the domains
    given a single-domain run (`single_runs`: domain -> run dir) and trained after the first stage."""
    st = stages(run)
    out = {}
    for d, single in single_runs.items():
        trained = [i for i, s in enumerate(st) if d in s.domains and d in s.scores]
        if not trained:
            raise ValueError(f"domain {d!r} is not trained (with an eval after its stage) in {run.path}; "
                             f"stages: {[(s.name, s.domains) for s in st]}")
        out[d] = final_score(single, d) - st[trained[0]].scores[d]
    return out


@dataclass(frozen=True)
class MatchedRigidity:
    points: float  # score lost (percentage points; positive = this run learned d worse)
    reference: str  # the run whose first stage is the comparison
    steps: int  # steps of d in either stage


def matched_rigidity(run: RunDir, others: list[RunDir]) -> dict[str, MatchedRigidity]:
    """{domain: rigidity at equal steps} for each domain this run trains alone in a later stage, where one of
    `others` trains it alone in its first stage for the same number of steps (same seed preferred) and evaluated
    it there. Domains without such a reference are left out."""
    st = stages(run)
    candidates = []
    for other in others:
        if other.path == run.path:
            continue
        ost = stages(other)
        if ost and len(ost[0].domains) == 1 and ost[0].scores:
            candidates.append((other.seed != run.seed, other.path.name, ost[0]))
    candidates.sort(key=lambda c: c[:2])
    out: dict[str, MatchedRigidity] = {}
    for later in st[1:]:
        if len(later.domains) != 1 or later.domains[0] not in later.scores:
            continue
        d = later.domains[0]
        for _, name, first in candidates:
            if first.domains == [d] and first.steps == later.steps and d in first.scores:
                out[d] = MatchedRigidity(first.scores[d] - later.scores[d], name, later.steps)
                break
    return out


def is_sequential(run: RunDir) -> bool:
    return run.strategy == "sequential" or len(run.stages()) > 1


def sequential_summary(run: RunDir, single_runs: dict[str, RunDir] | None = None,
                       other_sequential: list[RunDir] | None = None) -> dict[str, Any]:
    st = stages(run)
    matched = matched_rigidity(run, other_sequential or [])
    return {
        "stages": [{"name": s.name, "domains": s.domains, "last_step": s.last_step, "scores": s.scores} for s in st],
        "forgetting": forgetting(run),
        "rigidity": rigidity(run, single_runs) if single_runs else {},
        "rigidity_equal_steps": {d: {"points": m.points, "reference": m.reference, "steps": m.steps}
                                 for d, m in matched.items()},
        "finite": all(math.isfinite(v) for s in st for v in s.scores.values()),
    }
