"""A test domain whose reward varies with the output: the fraction of the response's characters in a chosen set.

Why: a tiny random model earns the same reward everywhere on real tasks, so every GRPO group has zero variance and
zero gradient, and a test on it proves nothing. Here any random text earns a reward between 0 and 1 that differs
between samples, so advantages and policy gradients are non-zero; two toy domains with disjoint character sets
(`chars`) pull the policy towards different tokens, so their gradients conflict. Prompts are short generated
strings; the empty response is "can't score" (None), which exercises the trainer's None handling.
"""

from __future__ import annotations

import random
from typing import Sequence

from mgs.domains.base import DOMAINS, RewardResult, Sample

_WORDS = ("apple", "river", "stone", "cloud", "seven", "green", "quiet", "north", "laugh", "metal")


@DOMAINS.register("toy")
class ToyDomain:
    """`chars`: the rewarded characters; `num_prompts`: size of each split."""

    main_metric = "score_mean"

    def __init__(self, name: str = "toy", chars: str = "aeiou", num_prompts: int = 64) -> None:
        if not chars:
            raise ValueError("toy domain: `chars` must name at least one character")
        self.name = name
        self.chars = frozenset(chars)
        self.num_prompts = num_prompts

    def load(self, split: str, limit: int | None = None, seed: int = 0) -> list[Sample]:
        if split not in ("train", "test"):
            raise ValueError(f"toy domain: split must be 'train' or 'test', got {split!r}")
        rng = random.Random(f"{self.name}/{split}/{seed}")
        n = self.num_prompts if limit is None else min(limit, self.num_prompts)
        samples = []
        for i in range(n):
            words = " ".join(rng.choice(_WORDS) for _ in range(3))
            messages = ({"role": "user", "content": f"Say something about {words}."},)
            samples.append(Sample(uid=f"{self.name}/{split}/{i}", domain=self.name, messages=messages))
        return samples

    def score(self, samples: Sequence[Sample], responses: Sequence[str]) -> list[RewardResult]:
        results = []
        for response in responses:
            if not response:
                results.append(RewardResult.unscorable("empty response"))
                continue
            hits = sum(c in self.chars for c in response)
            results.append(RewardResult(score=hits / len(response), info={"hits": hits, "length": len(response)}))
        return results

    def metrics(self, samples: Sequence[Sample], results: Sequence[RewardResult]) -> dict[str, float]:
        scored = [r.score for r in results if r.score is not None]
        return {"score_mean": sum(scored) / len(scored) if scored else float("nan")}
