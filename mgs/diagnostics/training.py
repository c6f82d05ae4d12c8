"""Per-domain training curves of a run: reward, policy entropy and response length over steps (from metrics.jsonl).

Entropy matters for the paper's "rigidity" story (math RL collapses entropy ~0.57 -> ~0.07, and a later chat stage
can no longer explore), reward and length show which domain a strategy favours.
"""

from __future__ import annotations

import math

from mgs.diagnostics.rundir import RunDir

# quantity -> (metric suffix under train/<domain>/, axis label with unit)
QUANTITIES: dict[str, tuple[str, str]] = {
    "reward": ("reward_mean", "mean reward (domain's scale)"),
    "entropy": ("entropy", "policy entropy (nats / token)"),
    "length": ("response_tokens_mean", "response length (tokens)"),
}


def train_domains(run: RunDir) -> list[str]:
    """Domains that logged training metrics (in config order where the config names them)."""
    logged = {k.split("/")[1] for k in run.keys(r"^train/[^/]+/reward_mean$")}
    ordered = [d for d in run.domains if d in logged]
    return ordered + sorted(logged - set(ordered))


def domain_curves(run: RunDir) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """{quantity: {domain: (steps, values)}} for reward, entropy, length; domains missing a quantity are left out."""
    out: dict[str, dict[str, tuple[list[int], list[float]]]] = {}
    for quantity, (suffix, _) in QUANTITIES.items():
        per_domain = {}
        for d in train_domains(run):
            steps, values = run.series(f"train/{d}/{suffix}")
            if steps:
                per_domain[d] = (steps, values)
        out[quantity] = per_domain
    return out


def curve_summary(run: RunDir, window: int = 5) -> dict[str, dict[str, float]]:
    """{domain: {"<quantity>_first", "<quantity>_last"}}: means over the first / last `window` logged steps."""
    out: dict[str, dict[str, float]] = {}
    for quantity, per_domain in domain_curves(run).items():
        for d, (_, values) in per_domain.items():
            head, tail = values[:window], values[-window:]
            out.setdefault(d, {})[f"{quantity}_first"] = sum(head) / len(head) if head else math.nan
            out[d][f"{quantity}_last"] = sum(tail) / len(tail) if tail else math.nan
    return out
