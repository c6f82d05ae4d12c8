"""Offline generator of multi-step arithmetic word problems: the embedded default math data (no files, no internet).

"Mia has 12 stickers. Mia buys 3 packs with 4 stickers each. Mia gives 9 stickers to a friend. How many stickers
does Mia have now?" -> 15. Every intermediate value is a non-negative integer, so the gold is exact.

Difficulty = number of operations (`steps`) and operand size (`max_value`); the `LEVELS` presets are tuned so that
SmolLM2-135M-Instruct solves a useful fraction (measured by `scripts/probe_math_difficulty.py`, numbers in
docs/domains.md). Train and test are disjoint by construction: a problem belongs to the split picked by a hash of
its text (`split_of`), so the same problem can never be generated in both, whatever the seeds; within a split,
duplicates are dropped. Output is a deterministic function of (split, n, seed, difficulty).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

NAMES = ("Mia", "Leo", "Ava", "Noah", "Zoe", "Omar", "Lena", "Ravi", "Sara", "Tom", "Ines", "Kai", "Nora", "Ben")
ITEMS = ("apples", "stickers", "marbles", "pencils", "cookies", "stamps", "shells", "coins", "cards", "books")
OPS = ("add", "sub", "mul", "div")
TEST_BUCKETS = 2
"""A problem is in the test split iff hash(text) % 10 < TEST_BUCKETS (20% of the problem space)."""


@dataclass(frozen=True)
class Difficulty:
    """`steps` operations after the starting amount, operands in [2, max_value], drawn from `ops`."""

    steps: int = 2
    max_value: int = 20
    ops: tuple[str, ...] = ("add", "sub")

    def __post_init__(self) -> None:
        if self.steps < 1 or self.max_value < 4:
            raise ValueError(f"need steps >= 1 and max_value >= 4, got steps={self.steps} max_value={self.max_value}")
        unknown = set(self.ops) - set(OPS)
        if unknown or not self.ops:
            raise ValueError(f"unknown arithmetic ops {sorted(unknown)}; choose a non-empty subset of {list(OPS)}")


LEVELS: dict[str, Difficulty] = {
    "easy": Difficulty(steps=1, max_value=10, ops=("add",)),
    "medium": Difficulty(steps=1, max_value=20, ops=("add", "sub")),
    "hard": Difficulty(steps=2, max_value=20, ops=("add", "sub")),
    "expert": Difficulty(steps=3, max_value=30, ops=("add", "sub", "mul", "div")),
}


@dataclass(frozen=True)
class Problem:
    question: str
    answer: int


def split_of(question: str) -> str:
    """'test' or 'train', fixed by the question's text (hash partition)."""
    bucket = int(hashlib.sha256(question.encode()).hexdigest(), 16) % 10
    return "test" if bucket < TEST_BUCKETS else "train"


def _one_problem(rng: random.Random, d: Difficulty) -> Problem:
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    value = rng.randint(2, d.max_value)
    sentences = [f"{name} has {value} {item}."]
    for _ in range(d.steps):
        choices = [op for op in d.ops if op != "sub" or value >= 3]
        divisors = [k for k in range(2, 7) if value % k == 0 and value // k >= 1]
        if not divisors:
            choices = [op for op in choices if op != "div"] or ["add"]
        op = rng.choice(choices)
        if op == "add":
            b = rng.randint(2, d.max_value)
            value += b
            sentences.append(rng.choice([f"{name} buys {b} more.", f"A friend gives {name} {b} more {item}."]))
        elif op == "sub":
            b = rng.randint(1, min(value - 1, d.max_value))
            value -= b
            sentences.append(rng.choice([f"{name} gives {b} {item} to a friend.", f"{name} loses {b} {item}."]))
        elif op == "mul":
            k, b = rng.randint(2, 5), rng.randint(2, max(2, d.max_value // 2))
            value += k * b
            sentences.append(f"{name} buys {k} packs with {b} {item} each.")
        else:
            k = rng.choice(divisors)
            value //= k
            sentences.append(f"{name} splits them into {k} equal piles and keeps one pile.")
    sentences.append(f"How many {item} does {name} have now?")
    return Problem(" ".join(sentences), value)


def generate(split: str, n: int, seed: int = 0, difficulty: Difficulty | str = "medium") -> list[Problem]:
    """`n` distinct problems of `split` ("train" | "test"). Raises if the problem space is too small for `n`."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    d = LEVELS[difficulty] if isinstance(difficulty, str) else difficulty
    rng = random.Random(f"mgs-arith/{seed}/{d}")
    seen: set[str] = set()
    out: list[Problem] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(f"only {len(out)} distinct {split} problems found for n={n} at {d}; raise max_value/steps")
        p = _one_problem(rng, d)
        if p.question in seen or split_of(p.question) != split:
            continue
        seen.add(p.question)
        out.append(p)
    return out
