"""Math data: the procedural generator (determinism, disjoint splits, exact golds) and the JSONL/HF loaders."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from mgs.domains.math import MathDomain
from mgs.domains.math import arith

REAL_GSM8K_TEST = Path("/work/shared/data/gsm8k/test.jsonl")


def _solve(question: str) -> int:
    """An independent solver of the generator's sentences (a reference for its golds)."""
    value = int(re.match(r"\w+ has (\d+) ", question).group(1))
    for sentence in re.split(r"(?<=\.) ", question)[1:-1]:
        if m := re.search(r"buys (\d+) packs with (\d+) ", sentence):
            value += int(m.group(1)) * int(m.group(2))
        elif m := re.search(r"(?:buys|gives \w+) (\d+) more", sentence):
            value += int(m.group(1))
        elif m := re.search(r"(?:gives|loses) (\d+) ", sentence):
            value -= int(m.group(1))
        elif m := re.search(r"into (\d+) equal piles", sentence):
            assert value % int(m.group(1)) == 0
            value //= int(m.group(1))
        else:
            raise AssertionError(f"unknown sentence {sentence!r}")
    return value


@pytest.mark.parametrize("level", sorted(arith.LEVELS))
def test_generator_golds_are_exact_and_steps_match(level):
    d = arith.LEVELS[level]
    problems = arith.generate("train", 200, seed=3, difficulty=level)
    for p in problems:
        assert _solve(p.question) == p.answer >= 0
        assert p.question.count(".") == d.steps + 1


def test_generator_is_deterministic_and_seeded():
    a = arith.generate("train", 50, seed=1)
    assert a == arith.generate("train", 50, seed=1)
    assert a != arith.generate("train", 50, seed=2)
    assert arith.generate("train", 20, seed=1) == a[:20]  # a prefix: growing n keeps earlier problems


def test_generator_train_test_disjoint_and_unique():
    train = {p.question for seed in range(3) for p in arith.generate("train", 500, seed=seed)}
    test = {p.question for seed in range(3) for p in arith.generate("test", 200, seed=seed)}
    assert not train & test
    assert len({p.question for p in arith.generate("test", 300, seed=0)}) == 300
    assert all(arith.split_of(q) == "test" for q in test)


def test_generator_rejects_bad_settings():
    with pytest.raises(ValueError, match="steps >= 1"):
        arith.Difficulty(steps=0)
    with pytest.raises(ValueError, match="unknown arithmetic ops"):
        arith.Difficulty(ops=("pow",))
    with pytest.raises(ValueError, match="distinct"):
        arith.generate("test", 5000, difficulty=arith.Difficulty(steps=1, max_value=4, ops=("add",)))
    with pytest.raises(ValueError, match="unknown math difficulty"):
        MathDomain(difficulty="insane")


def test_procedural_domain_samples():
    d = MathDomain(difficulty="easy", instruction="Box it.", system_prompt="You are good at math.")
    samples = d.load("test", limit=5, seed=0)
    assert len(samples) == 5 and len({s.uid for s in samples}) == 5
    assert samples == d.load("test", limit=5, seed=0)
    s = samples[0]
    assert s.domain == "math" and s.uid.startswith("arith:")
    assert s.messages[0] == {"role": "system", "content": "You are good at math."}
    assert s.messages[1] == {"role": "user", "content": f"{s.meta['question']}\nBox it."}
    assert d.score([s], [f"\\boxed{{{s.target}}}"])[0].score == 1.0
    assert len(MathDomain(num_test=7).load("test")) == 7


GSM8K_ROWS = [
    {"question": "Tom has 3 apples and buys 2. How many?", "answer": "3+2=<<3+2=5>>5\n#### 5"},
    {"question": "A shop sells 1,000 pens a day. How many in 2 days?", "answer": "so 2,000\n#### 2,000"},
    {"question": "Tom has 3 apples and buys 2. How many?", "answer": "duplicate question\n#### 5"},
]
MATH_ROWS = [
    {"problem": "What is $\\frac{1}{2}+\\frac{1}{4}$?", "answer": "\\frac{3}{4}", "level": 2,
     "subject": "Algebra", "unique_id": "test/algebra/1.json"},
    {"problem": "Find $x$ if $2x=6$.", "solution": "Divide: $x=\\boxed{3}$.", "level": "Level 4",
     "subject": "Algebra"},
    {"problem": "Compute $\\sqrt{8}$.", "solution": "It is $\\boxed{2\\sqrt{2}}$.", "level": 5,
     "subject": "Prealgebra"},
]


def _write(path: Path, rows: list[dict]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    return str(path)


def test_gsm8k_jsonl_loader(tmp_path):
    path = _write(tmp_path / "gsm8k" / "test.jsonl", GSM8K_ROWS)
    d = MathDomain(source="jsonl", paths={"test": path}, shuffle=False)
    samples = d.load("test")
    assert [s.target for s in samples] == ["5", "2,000", "5"]
    assert samples[0].uid.startswith("gsm8k:") and samples[2].uid == samples[0].uid + "#2"
    assert samples[0].meta["format"] == "gsm8k"
    assert d.score(samples[1:2], ["They sell \\boxed{2000} pens."])[0].score == 1.0
    assert [s.uid for s in d.load("test")] == [s.uid for s in d.load("test")]  # stable


def test_math_jsonl_loader_with_level_filter_and_shuffle(tmp_path):
    path = _write(tmp_path / "math500" / "test.jsonl", MATH_ROWS)
    all_ = MathDomain(source="jsonl", paths={"test": path}, shuffle=False).load("test")
    assert [s.target for s in all_] == ["\\frac{3}{4}", "3", "2\\sqrt{2}"]
    assert all_[0].uid == "math500:test/algebra/1.json"
    assert [s.meta["level"] for s in all_] == [2, 4, 5]
    hard = MathDomain(source="jsonl", paths={"test": path}, levels=[3, 4, 5]).load("test", seed=0)
    assert sorted(s.target for s in hard) == ["2\\sqrt{2}", "3"]
    algebra = MathDomain(source="jsonl", paths={"test": path}, subjects=["Algebra"]).load("test", limit=1)
    assert len(algebra) == 1 and algebra[0].meta["subject"] == "Algebra"
    orders = {tuple(s.uid for s in MathDomain(source="jsonl", paths={"test": path}).load("test", seed=k))
              for k in range(8)}
    assert len(orders) > 1  # the seed changes the order...
    assert MathDomain(source="jsonl", paths={"test": path}).load("test", seed=3) == MathDomain(
        source="jsonl", paths={"test": path}).load("test", seed=3)  # ...deterministically


def test_loader_errors_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="needs `paths`"):
        MathDomain(source="jsonl")
    d = MathDomain(source="jsonl", paths={"test": str(tmp_path / "missing.jsonl")})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        d.load("test")
    with pytest.raises(ValueError, match="no path for split 'train'"):
        d.load("train")
    bad = _write(tmp_path / "bad.jsonl", [{"prompt": "x", "label": 1}])
    with pytest.raises(ValueError, match="record 0: unrecognised math record"):
        MathDomain(source="jsonl", paths={"test": bad}).load("test")
    (tmp_path / "broken.jsonl").write_text('{"question": \n')
    with pytest.raises(ValueError, match="broken.jsonl:1 is not valid JSON"):
        MathDomain(source="jsonl", paths={"test": str(tmp_path / "broken.jsonl")}).load("test")
    with pytest.raises(KeyError, match="choose from"):
        MathDomain(source="s3")
    with pytest.raises(ValueError, match="split must be"):
        MathDomain().load("validation")


def test_hf_source_without_datasets_gives_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail as if not installed
    d = MathDomain(source="hf", dataset="openai/gsm8k", config="main")
    with pytest.raises(ImportError, match="pip install datasets"):
        d.load("test", limit=3)
    with pytest.raises(ValueError, match="needs `dataset`"):
        MathDomain(source="hf")


@pytest.mark.skipif(not REAL_GSM8K_TEST.is_file(), reason="the shared GSM8K copy is not on this machine")
def test_real_gsm8k_test_file():
    d = MathDomain(source="jsonl", paths={"test": str(REAL_GSM8K_TEST)})
    samples = d.load("test", limit=20, seed=0)
    assert len(samples) == 20 and len({s.uid for s in samples}) == 20
    assert all(re.fullmatch(r"-?[\d,]+(\.\d+)?", s.target) for s in samples)
    results = d.score(samples, [f"#### {s.target}" for s in samples])
    assert [r.score for r in results] == [1.0] * 20
