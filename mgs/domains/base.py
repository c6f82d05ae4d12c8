"""The contract every domain implements: its prompts (data) and its reward, so the trainer never branches on it.

A domain turns a data source into `Sample`s (chat messages + whatever the reward needs: a gold answer, a list of
constraints, a reference answer) and scores a model response into a `RewardResult`. Rewards never raise on model
output: they return `score=None` ("can't score", excluded from that sample's GRPO group) with the reason in
`info["error"]`. Domains are built from config through the `DOMAINS` registry:
`DOMAINS.get(kind)(**params)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

from mgs.registry import Registry

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": str}


@dataclass(frozen=True)
class Sample:
    """One prompt of one domain. `target` is what the reward compares against (gold answer, constraint list,
    reference answer...), opaque to everything but the domain's reward. `uid` is stable across runs."""

    uid: str
    domain: str
    messages: tuple[Message, ...]
    target: Any = None
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass
class RewardResult:
    """A scored response. `score` in the domain's range (math/IF: [0, 1]) or None when it can't be scored;
    `parts` are named sub-scores (floats) that sum or combine to `score`; `info` is free-form and JSON-serialisable
    (extracted answer, gold, failed constraints, `error` text when score is None)."""

    score: float | None
    parts: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def unscorable(cls, reason: str, **info: Any) -> "RewardResult":
        return cls(score=None, info={"error": reason, **info})


@runtime_checkable
class Domain(Protocol):
    """What the trainer and the evaluator need from a domain."""

    name: str

    def load(self, split: str, limit: int | None = None, seed: int = 0) -> list[Sample]:
        """Prompts of `split` ("train" or "test"), at most `limit` of them, deterministic given `seed`."""
        ...

    def score(self, samples: Sequence[Sample], responses: Sequence[str]) -> list[RewardResult]:
        """Rewards for responses (the response text only: no prompt, no thinking part) to `samples`."""
        ...

    def metrics(self, samples: Sequence[Sample], results: Sequence[RewardResult]) -> dict[str, float]:
        """Evaluation metrics of a set of scored responses (e.g. accuracy, prompt/instruction-level accuracy)."""
        ...


DOMAINS: Registry[type] = Registry("domain")
