"""The math domain: word/competition problems with a binary reward from the final answer (as in the paper).

Reward: 1 if the response's final answer (last `\\boxed{}`; else `#### n`; else the last number, see `answer.py`)
is equivalent to the gold per math-verify, else 0 (no answer found counts as wrong: 0). `None` ("can't score",
reason in `info["error"]`) only when the gold itself doesn't parse or the verifier crashed / timed out.
Data: the offline arithmetic generator (default), local GSM8K/MATH JSONL files, or a Hugging Face dataset
(`data.py`). Built from config as `MathDomain(name="math", **params)`.
Speed: `score` extracts every answer, decides plain-integer pairs at once and runs the other checks on
`verify_workers` math-verify processes in parallel (`answer.check_answers`); scores equal one-by-one `score_one`.
"""

from __future__ import annotations

import math
import random
from typing import Any, Sequence

from mgs.domains.base import DOMAINS, RewardResult, Sample
from mgs.domains.math import arith
from mgs.domains.math.answer import EXTRACTORS, CheckResult, check_answers, extract_answer
from mgs.domains.math.verifier import default_pool_size
from mgs.domains.math.data import SOURCES, Record

__all__ = ["MathDomain"]

DEFAULT_INSTRUCTION = "Put the final answer in \\boxed{}."
NUMBER_INSTRUCTION = "Answer with just the final number."
"""The procedural source's default: SmolLM2-135M solves 1-step sums 37% greedy with it vs 17% with the boxed one
(it rarely fills a box; scripts/probe_math_difficulty.py, docs/domains.md)."""
SPLITS = ("train", "test")


@DOMAINS.register("math")
class MathDomain:
    """Math prompts + final-answer reward.

    Params (all optional; the defaults run offline in seconds):
    - `source`: "procedural" (default) | "jsonl" | "hf".
    - procedural: `difficulty` (a level of `arith.LEVELS`: easy | medium | hard | expert, default easy) or explicit
      `steps` / `max_value` / `ops`; `num_train` / `num_test` (problems per split when `load` has no limit).
    - jsonl: `paths` {split: path} (GSM8K or MATH format).
    - hf: `dataset` (e.g. "openai/gsm8k"), `config` (e.g. "main"), `hf_splits` {split: hf split name}.
    - filters: `levels` (MATH levels to keep, e.g. [3, 4, 5]), `subjects`; `shuffle` (default True, by `seed`).
    - prompt: `instruction` appended to the question (default: "Put the final answer in \\boxed{}.", or for the
      procedural source "Answer with just the final number."; "" for none),
      `system_prompt` (default none).
    - reward: `answer_fallbacks` (subset of ["hash", "last_number"], default both), `timeout_s` (per check,
      default 5), `max_answer_chars` (300), `verify_workers` (math-verify processes a batch runs on; default
      `verifier.default_pool_size()`: min(8, CPUs / local ranks)), `fast_integer_check` (default True: plain
      integer pairs skip math-verify with the same verdict; False only to measure the slow path).
    """

    min_score = 0.0
    max_score = 1.0

    def __init__(
        self,
        name: str = "math",
        source: str = "procedural",
        *,
        difficulty: str = "easy",
        steps: int | None = None,
        max_value: int | None = None,
        ops: Sequence[str] | None = None,
        num_train: int = 2000,
        num_test: int = 200,
        paths: dict[str, str] | None = None,
        dataset: str | None = None,
        config: str | None = None,
        hf_splits: dict[str, str] | None = None,
        levels: Sequence[int] | None = None,
        subjects: Sequence[str] | None = None,
        shuffle: bool = True,
        instruction: str | None = None,
        system_prompt: str | None = None,
        answer_fallbacks: Sequence[str] = ("hash", "last_number"),
        timeout_s: float = 5.0,
        max_answer_chars: int = 300,
        verify_workers: int | None = None,
        fast_integer_check: bool = True,
    ) -> None:
        SOURCES.get(source)  # fails early with the list of sources
        self.name, self.source = name, source
        if difficulty not in arith.LEVELS:
            raise ValueError(f"unknown math difficulty {difficulty!r}; choose from {sorted(arith.LEVELS)}")
        base = arith.LEVELS[difficulty]
        self.difficulty = arith.Difficulty(
            steps=base.steps if steps is None else int(steps),
            max_value=base.max_value if max_value is None else int(max_value),
            ops=base.ops if ops is None else tuple(ops),
        )
        self.num_per_split = {"train": int(num_train), "test": int(num_test)}
        self.paths = dict(paths or {})
        self.dataset, self.config = dataset, config
        self.hf_splits = dict(hf_splits or {"train": "train", "test": "test"})
        if source == "jsonl" and not self.paths:
            raise ValueError("math source 'jsonl' needs `paths`, e.g. {train: data/gsm8k/train.jsonl, test: ...}")
        if source == "hf" and not dataset:
            raise ValueError("math source 'hf' needs `dataset`, e.g. openai/gsm8k (with config: main)")
        self.levels = None if levels is None else {int(x) for x in levels}
        self.subjects = None if subjects is None else set(subjects)
        self.shuffle = bool(shuffle)
        if instruction is None:
            instruction = NUMBER_INSTRUCTION if source == "procedural" else DEFAULT_INSTRUCTION
        self.instruction, self.system_prompt = instruction, system_prompt
        unknown = set(answer_fallbacks) - set(EXTRACTORS[1:])
        if unknown:
            raise ValueError(f"unknown answer_fallbacks {sorted(unknown)}; choose from {list(EXTRACTORS[1:])}")
        self.extractors = ("boxed",) + tuple(m for m in EXTRACTORS[1:] if m in answer_fallbacks)
        self.timeout_s, self.max_answer_chars = float(timeout_s), int(max_answer_chars)
        if verify_workers is not None and int(verify_workers) < 1:
            raise ValueError(f"verify_workers must be >= 1 (or null for the default), got {verify_workers}")
        self.verify_workers = default_pool_size() if verify_workers is None else int(verify_workers)
        self.fast_integer_check = bool(fast_integer_check)

    # ---- data ----
    def _records(self, split: str, limit: int | None, seed: int) -> list[Record]:
        if self.source == "procedural":
            n = self.num_per_split[split] if limit is None else limit
            return SOURCES.get("procedural")(split, n=n, seed=seed, difficulty=self.difficulty)
        if self.source == "jsonl":
            if split not in self.paths:
                raise ValueError(f"math domain {self.name!r} has no path for split {split!r}; set paths.{split}")
            return SOURCES.get("jsonl")(split, path=self.paths[split])
        return SOURCES.get("hf")(split, dataset=self.dataset, hf_split=self.hf_splits[split], config=self.config)

    def _keep(self, record: Record) -> bool:
        meta = record["meta"]
        if self.levels is not None and meta.get("level") not in self.levels:
            return False
        return self.subjects is None or meta.get("subject") in self.subjects

    def prompt(self, question: str) -> tuple[dict[str, str], ...]:
        """The chat messages for one question."""
        user = f"{question.strip()}\n{self.instruction}" if self.instruction else question.strip()
        system = ({"role": "system", "content": self.system_prompt},) if self.system_prompt else ()
        return system + ({"role": "user", "content": user},)

    def load(self, split: str, limit: int | None = None, seed: int = 0) -> list[Sample]:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        records = [r for r in self._records(split, limit, seed) if self._keep(r)]
        if self.shuffle:
            random.Random(seed).shuffle(records)
        if limit is not None:
            records = records[:limit]
        return [
            Sample(
                uid=r["uid"],
                domain=self.name,
                messages=self.prompt(r["question"]),
                target=r["answer"],
                meta={**r["meta"], "question": r["question"]},
            )
            for r in records
        ]

    # ---- reward ----
    def _extract(self, gold: Any, response: Any) -> RewardResult | tuple[dict[str, Any], str]:
        """The result when no check is needed (bad input, no answer found), else (info, extracted answer)."""
        if not isinstance(gold, str) or not gold.strip():
            return RewardResult.unscorable(f"gold answer must be a non-empty string, got {gold!r}")
        if not isinstance(response, str):
            return RewardResult.unscorable(f"response must be a string, got {type(response).__name__}")
        found = extract_answer(response, self.extractors)
        extracted = found.answer if found.answer is None else found.answer[: self.max_answer_chars + 20]
        info: dict[str, Any] = {"extracted": extracted, "method": found.method, "gold": gold}
        if found.answer is None:
            return RewardResult(0.0, {"correct": 0.0}, {**info, "error": None})
        return info, found.answer

    @staticmethod
    def _result(info: dict[str, Any], check: CheckResult) -> RewardResult:
        info = {**info, "error": check.error}
        if check.correct is None:
            return RewardResult(None, {}, info)
        score = 1.0 if check.correct else 0.0
        return RewardResult(score, {"correct": score}, info)

    def _score_all(self, golds: Sequence[Any], responses: Sequence[Any], workers: int) -> list[RewardResult]:
        out: list[Any] = []
        for gold, response in zip(golds, responses):
            try:
                out.append(self._extract(gold, response))
            except Exception as e:  # noqa: BLE001 - a reward never raises on model output
                out.append(RewardResult.unscorable(f"math reward crashed: {type(e).__name__}: {e}"))
        todo = [i for i, r in enumerate(out) if not isinstance(r, RewardResult)]
        try:
            checks = check_answers([golds[i] for i in todo], [out[i][1] for i in todo], workers=workers,
                                   timeout_s=self.timeout_s, max_answer_chars=self.max_answer_chars,
                                   fast_path=self.fast_integer_check)
            for i, check in zip(todo, checks):
                out[i] = self._result(out[i][0], check)
        except Exception as e:  # noqa: BLE001 - a reward never raises on model output
            for i in todo:
                out[i] = RewardResult.unscorable(f"math reward crashed: {type(e).__name__}: {e}")
        return out

    def score_one(self, gold: Any, response: str) -> RewardResult:
        return self._score_all([gold], [response], workers=1)[0]

    def warm(self) -> None:
        """Start the verifier worker pool now (the trainer calls this once at start on CUDA runs), so the first
        step's reward time doesn't include ~0.5-2 s of worker start-up."""
        from mgs.domains.math.answer import VERIFIER

        VERIFIER.warm(self.verify_workers)

    def score(self, samples: Sequence[Sample], responses: Sequence[str]) -> list[RewardResult]:
        if len(samples) != len(responses):
            raise ValueError(f"{len(samples)} samples but {len(responses)} responses: pass one per sample")
        return self._score_all([s.target for s in samples], responses, workers=self.verify_workers)

    def metrics(self, samples: Sequence[Sample], results: Sequence[RewardResult]) -> dict[str, float]:
        """accuracy = mean score over scorable results (None excluded, counted in none_frac);
        accuracy_stderr = sqrt(p (1 - p) / n); answer_found_frac = share of responses with any final answer."""
        count = len(results)
        scores = [r.score for r in results if r.score is not None]
        n = len(scores)
        acc = sum(scores) / n if n else float("nan")
        found = [r.info.get("method") not in (None, "none") for r in results]
        return {
            "accuracy": acc,
            "accuracy_stderr": math.sqrt(acc * (1 - acc) / n) if n else float("nan"),
            "count": float(count),
            "none_frac": (count - n) / count if count else float("nan"),
            "answer_found_frac": sum(found) / count if count else float("nan"),
        }
