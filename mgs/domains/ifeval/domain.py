"""The instruction-following domain: IFEval-style prompts whose reward is the fraction of constraints followed.

Data: IFEval-format JSONL (`key`, `prompt`, `instruction_id_list`, `kwargs`) read from a path (IFEval's
input_data.jsonl, IFBench_test.jsonl, ...), or, for training without a path, prompts from our seeded generator
(`generator.py`). The checkers are the maintained registries (`checkers.py`): `checker="ifeval"` (25 types) or
`checker="ifbench"` (IFBench's 58 types; also registered as the domain kind `ifbench`).

Reward = fraction of the prompt's instructions the **response alone** follows (strict). Per instruction, the info
holds the strict and loose verdicts (`followed`, `followed_loose`, `failed`, `failed_loose`); a checker that raises
counts as not followed, with its error in `info["errors"]`; when no instruction could be checked the score is None.
Only the kwargs reach a checker (e.g. `prompt_to_repeat`), never the prompt itself.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any, Sequence

from mgs.domains.base import DOMAINS, RewardResult, Sample
from mgs.domains.ifeval.checkers import CHECKERS, InstructionSet
from mgs.domains.ifeval.generator import check_disjoint, generate_prompts

REQUIRED_FIELDS = ("prompt", "instruction_id_list", "kwargs")


def read_ifeval_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of an IFEval-format JSONL file, validated (clear errors on a wrong file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IFEval-format data file {str(path)!r} not found; pass an existing JSONL path")
    rows = []
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            missing = [k for k in REQUIRED_FIELDS if k not in row]
            if missing or len(row["instruction_id_list"]) != len(row["kwargs"]):
                raise ValueError(f"{path}:{line_no}: not IFEval format (need {REQUIRED_FIELDS} with one kwargs dict "
                                 f"per instruction; missing {missing})")
            row.setdefault("key", str(line_no))
            rows.append(row)
    return rows


def _short_error(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    found = re.search(r"Resource (\S+) not found", text)  # nltk's LookupError is a 20-line banner
    return f"{type(exc).__name__}: missing nltk data {found.group(1)}" if found else f"{type(exc).__name__}: {text[:300]}"


@DOMAINS.register("ifeval")
class IFEvalDomain:
    """Instruction following with verifiable constraints (see the module docstring).

    Params: `train_path` / `test_path` (IFEval-format JSONL; None -> generated prompts of that split, whose base tasks
    are disjoint from the other split's), `checker` ("ifeval" | "ifbench"), `preset` (generator preset: "small" |
    "full"), `num_train` / `num_test` (generated prompts per split when `load` has no limit),
    `system_prompt` (optional system message), `max_response_chars` (longer responses are not checked: score None;
    some checkers are pure-Python tokenizers, ~1 min on 1 MB)."""

    def __init__(self, name: str = "ifeval", *, train_path: str | None = None, test_path: str | None = None,
                 checker: str = "ifeval", preset: str = "small", num_train: int = 2048, num_test: int = 256,
                 system_prompt: str | None = None, max_response_chars: int = 100_000) -> None:
        self.name = name
        self.paths = {"train": train_path, "test": test_path}
        self.checker = checker
        self.instructions: InstructionSet = CHECKERS.get(checker)()
        self.preset = preset
        self.num_train = num_train
        self.num_test = num_test
        self.system_prompt = system_prompt
        self.max_response_chars = max_response_chars

    # ------------------------------------------------------------------------------------------------------ data
    def load(self, split: str, limit: int | None = None, seed: int = 0) -> list[Sample]:
        if split not in self.paths:
            raise ValueError(f"unknown split {split!r}; choose from {sorted(self.paths)}")
        path = self.paths[split]
        if path is not None:
            rows = read_ifeval_jsonl(path)
            if limit is not None and limit < len(rows):
                keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
                rows = [rows[i] for i in keep]
        else:
            if self.checker != "ifeval":
                raise ValueError(f"generated prompts use the IFEval registry; checker={self.checker!r} needs "
                                 f"{split}_path (IFEval-format JSONL)")
            count = limit or (self.num_train if split == "train" else self.num_test)
            rows = generate_prompts(self.instructions, self.preset, count, seed, split=split)
            if split == "test":  # disjoint by construction; checked against this seed's training prompts anyway
                check_disjoint(generate_prompts(self.instructions, self.preset, self.num_train, seed), rows)
        unknown = sorted({i for r in rows for i in r["instruction_id_list"]} - set(self.instructions.classes))
        if unknown:
            raise ValueError(f"{path}: instruction types unknown to checker={self.checker!r}: {unknown[:5]}... "
                             f"(IFBench data needs checker='ifbench' or the domain kind 'ifbench')")
        return [self._sample(r, source=str(path or "generated")) for r in rows]

    def _sample(self, row: dict[str, Any], source: str) -> Sample:
        messages = ([{"role": "system", "content": self.system_prompt}] if self.system_prompt else [])
        messages.append({"role": "user", "content": row["prompt"]})
        target = {"instruction_id_list": list(row["instruction_id_list"]),
                  "kwargs": [{k: v for k, v in kw.items() if v is not None} for kw in row["kwargs"]]}
        return Sample(uid=f"{self.name}/{row['key']}", domain=self.name, messages=tuple(messages), target=target,
                      meta={"key": row["key"], "source": source})

    # ---------------------------------------------------------------------------------------------------- reward
    def score(self, samples: Sequence[Sample], responses: Sequence[str]) -> list[RewardResult]:
        if len(samples) != len(responses):
            raise ValueError(f"{len(samples)} samples but {len(responses)} responses")
        return [self.score_one(s.target, r) for s, r in zip(samples, responses)]

    def score_one(self, target: dict[str, Any], response: Any) -> RewardResult:
        """Reward of one response for a target {instruction_id_list, kwargs}; never raises on the response."""
        if not isinstance(response, str):
            return RewardResult.unscorable(f"response is {type(response).__name__}, not str")
        if len(response) > self.max_response_chars:
            return RewardResult.unscorable(f"response of {len(response)} chars exceeds max_response_chars="
                                           f"{self.max_response_chars} (raise it to check such responses)")
        followed: dict[str, bool] = {}
        loose: dict[str, bool] = {}
        errors: dict[str, str] = {}
        for instruction_id, kwargs in zip(target["instruction_id_list"], target["kwargs"]):
            key = instruction_id if instruction_id not in followed else f"{instruction_id}#{len(followed)}"
            try:
                followed[key], loose[key] = self.instructions.check(instruction_id, kwargs, response)
            except Exception as exc:  # a checker bug or missing resource: not followed, recorded
                followed[key], loose[key] = False, False
                errors[key] = _short_error(exc)
        if not followed:
            return RewardResult.unscorable("sample has no instructions")
        if len(errors) == len(followed):
            return RewardResult.unscorable("no instruction could be checked", errors=errors)
        strict_frac = sum(followed.values()) / len(followed)
        loose_frac = sum(loose.values()) / len(loose)
        info = {"followed": followed, "failed": [k for k, v in followed.items() if not v],
                "followed_loose": loose, "failed_loose": [k for k, v in loose.items() if not v],
                "checker": self.checker}
        if errors:
            info["errors"] = errors
        return RewardResult(score=strict_frac, parts={"strict": strict_frac, "loose": loose_frac}, info=info)

    # --------------------------------------------------------------------------------------------------- metrics
    def metrics(self, samples: Sequence[Sample], results: Sequence[RewardResult]) -> dict[str, float]:
        """IFEval's four accuracies over the scored samples, plus mean reward, counts and the None fraction."""
        scored = [r for r in results if r.score is not None]
        out: dict[str, float] = {"num_samples": float(len(results)), "num_scored": float(len(scored)),
                                 "none_frac": (1 - len(scored) / len(results)) if results else 0.0}
        if not scored:
            return out
        for mode, field in (("strict", "followed"), ("loose", "followed_loose")):
            verdicts = [list(r.info[field].values()) for r in scored]
            out[f"prompt_level_{mode}_acc"] = sum(all(v) for v in verdicts) / len(verdicts)
            out[f"inst_level_{mode}_acc"] = sum(map(sum, verdicts)) / sum(map(len, verdicts))
        out["reward_mean"] = sum(r.score for r in scored) / len(scored)
        out["num_instructions"] = float(sum(len(r.info["followed"]) for r in scored))
        return out


@DOMAINS.register("ifbench")
class IFBenchDomain(IFEvalDomain):
    """IFBench (58 instruction types): `IFEvalDomain` with `checker="ifbench"`; needs train_path/test_path."""

    def __init__(self, name: str = "ifbench", **params: Any) -> None:
        params.setdefault("checker", "ifbench")
        super().__init__(name, **params)
