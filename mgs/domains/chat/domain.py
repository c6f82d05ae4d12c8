"""`ChatDomain`: chat prompts from a source (`data.py`) scored by a reward model (`rewards.py`), as one `Domain`.

Config: `{kind: chat, source: builtin | wildchat | arena_hard | alpaca_eval | mt_bench | jsonl, path: ...,
source_params: {...}, reward: similarity-proxy | hf-classifier | http | callable, reward_params: {...}}`.
Sources with one file are split into train/test by a hash of each uid (`test_fraction`), so the two never overlap;
split "all" returns everything. A reward that needs references (the similarity proxy) refuses reference-less data
at `load` with an error that says what to use instead.
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from typing import Any, Sequence

from mgs.domains.base import DOMAINS, RewardResult, Sample
from mgs.domains.chat.data import CHAT_SOURCES, ChatRecord
from mgs.domains.chat.rewards import RewardModel, as_bool, build_reward_model

log = logging.getLogger(__name__)

SPLITS = ("train", "test", "all")


def in_test_split(uid: str, test_fraction: float) -> bool:
    """Whether `uid` falls in the test part of a hash split (stable across runs, machines and orderings)."""
    digest = hashlib.sha1(uid.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < test_fraction


@DOMAINS.register("chat")
class ChatDomain:
    """General chat: prompts without a verifiable answer, scored by a reward model (default: the offline
    MiniLM similarity proxy against the built-in prompts' reference answers)."""

    def __init__(self, name: str = "chat", source: str = "builtin", path: str | None = None,
                 source_params: dict[str, Any] | None = None, reward: str | RewardModel = "similarity-proxy",
                 reward_params: dict[str, Any] | None = None, test_fraction: float = 0.2,
                 skip_missing_references: bool = False, min_score: float | None = None) -> None:
        test_fraction = float(test_fraction)
        if not 0.0 < test_fraction < 1.0:
            raise ValueError(f"chat: test_fraction must be in (0, 1), got {test_fraction}")
        self.name = name
        self.source, self.path, self.source_params = source, path, dict(source_params or {})
        self._read = CHAT_SOURCES.get(source)  # unknown source: fails now, listing the known ones
        self.reward: RewardModel = (build_reward_model(reward, **(reward_params or {})) if isinstance(reward, str)
                                    else reward)
        self.test_fraction = float(test_fraction)
        self.skip_missing_references = as_bool(skip_missing_references)
        self._reference_scores: dict[str, float | None] = {}
        # What a malformed thinking template scores (mgs.domains.template): the reward's floor. Reward models are
        # unbounded, so they have none unless configured; 0.0 would then be an arbitrary, possibly generous penalty.
        floor = min_score if min_score is not None else getattr(self.reward, "min_score", None)
        self.min_score = float(floor) if floor is not None else 0.0

    # -- data -------------------------------------------------------------------------------------------------
    def _records(self, split: str) -> list[ChatRecord]:
        if split not in SPLITS:
            raise ValueError(f"chat: unknown split {split!r}; choose from {list(SPLITS)}")
        params = dict(self.source_params)
        if self.source != "builtin" or self.path is not None:
            params["path"] = self.path
        by_split = self._read(**params)
        if "all" in by_split:  # one file: split it by uid hash
            records = by_split["all"]
            if split != "all":
                records = [r for r in records if in_test_split(r.uid, self.test_fraction) == (split == "test")]
        else:
            records = by_split["train"] + by_split["test"] if split == "all" else by_split[split]
        return records

    def load(self, split: str, limit: int | None = None, seed: int = 0) -> list[Sample]:
        records = self._records(split)
        if self.reward.needs_reference:
            missing = [r.uid for r in records if r.reference is None]
            if missing and not self.skip_missing_references:
                raise ValueError(
                    f"chat source {self.source!r} has {len(missing)} of {len(records)} prompts without a reference "
                    f"answer (e.g. {missing[:3]}), and the reward {self.reward.name!r} compares against one. Use a "
                    "reward model instead (reward: hf-classifier with reward_params: {path: <Skywork-Reward-V2 "
                    "dir>}, or http / callable), or set skip_missing_references: true to drop those prompts.")
            if missing:
                log.warning("chat: dropping %d of %d prompts without a reference answer", len(missing), len(records))
                records = [r for r in records if r.reference is not None]
        if not records:
            raise ValueError(f"chat source {self.source!r} split {split!r} has no usable prompts")
        records = sorted(records, key=lambda r: r.uid)
        random.Random(seed).shuffle(records)
        if limit is not None:
            records = records[:limit]
        return [Sample(uid=r.uid, domain=self.name, messages=r.messages, target=r.reference,
                       meta={"source": self.source, **r.meta}) for r in records]

    # -- reward -----------------------------------------------------------------------------------------------
    def score(self, samples: Sequence[Sample], responses: Sequence[str]) -> list[RewardResult]:
        if len(samples) != len(responses):
            raise ValueError(f"chat: {len(samples)} samples but {len(responses)} responses")
        if not samples:
            return []
        return self.reward.score([s.messages for s in samples], list(responses), [s.target for s in samples])

    def _reference_score(self, samples: Sequence[Sample]) -> dict[str, float | None]:
        """The reward model's score of each sample's reference answer (cached per uid)."""
        todo = {s.uid: s for s in samples if s.target is not None and s.uid not in self._reference_scores}
        if todo:
            todo_samples = list(todo.values())
            results = self.reward.score([s.messages for s in todo_samples], [s.target for s in todo_samples],
                                        [s.target for s in todo_samples])
            for s, r in zip(todo_samples, results):
                self._reference_scores[s.uid] = r.score
        return self._reference_scores

    def metrics(self, samples: Sequence[Sample], results: Sequence[RewardResult]) -> dict[str, float]:
        """`score_mean` / `score_stderr` (named `proxy_score_*` when the reward is a proxy), `none_frac`,
        `num_samples`; and, for a real reward model on prompts with references, `win_rate_vs_reference`: the
        fraction of scored responses whose score is strictly above the score of their reference answer."""
        if len(samples) != len(results):
            raise ValueError(f"chat: {len(samples)} samples but {len(results)} results")
        scores = [r.score for r in results if r.score is not None]
        out: dict[str, float] = {"num_samples": float(len(results)),
                                 "none_frac": (1.0 - len(scores) / len(results)) if results else 0.0}
        label = "proxy_score" if self.reward.proxy else "score"
        if scores:
            mean = sum(scores) / len(scores)
            var = sum((s - mean) ** 2 for s in scores) / (len(scores) - 1) if len(scores) > 1 else 0.0
            out[f"{label}_mean"] = mean
            out[f"{label}_stderr"] = math.sqrt(var / len(scores))
        if not self.reward.proxy and any(s.target is not None for s in samples):
            reference = self._reference_score(samples)
            pairs = [(r.score, reference.get(s.uid)) for s, r in zip(samples, results) if s.target is not None]
            pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
            if pairs:
                out["win_rate_vs_reference"] = sum(a > b for a, b in pairs) / len(pairs)
                out["win_rate_num_pairs"] = float(len(pairs))
        return out
