"""The math reward: extraction, equivalence, unscorable cases, robustness (never raises, bounded time, threads)."""

from __future__ import annotations

import math
import random
import threading
import time

import pytest

from mgs.domains import build_domain
from mgs.domains.base import RewardResult, Sample
from mgs.domains.math import MathDomain
from mgs.domains.math import answer as answer_mod
from mgs.domains.math.answer import check_answer, extract_answer


@pytest.fixture(scope="module")
def domain() -> MathDomain:
    return MathDomain()


# (response, gold, expected score, expected extraction method)
CASES = [
    # correct / incorrect / absent
    ("So the answer is \\boxed{42}.", "42", 1.0, "boxed"),
    ("So the answer is \\boxed{41}.", "42", 0.0, "boxed"),
    ("I am not sure.", "42", 0.0, "none"),
    ("", "42", 0.0, "none"),
    # equivalent forms
    ("\\boxed{0.5}", "1/2", 1.0, "boxed"),
    ("\\boxed{\\frac12}", "0.5", 1.0, "boxed"),
    ("\\boxed{\\frac{1}{2}}", "\\frac12", 1.0, "boxed"),
    ("\\boxed{1/2}", "\\frac{1}{2}", 1.0, "boxed"),
    ("\\boxed{1,000}", "1000", 1.0, "boxed"),
    ("\\boxed{1000}", "1,000", 1.0, "boxed"),
    ("\\boxed{\\$5}", "5", 1.0, "boxed"),
    ("The total is $5.", "5", 1.0, "last_number"),
    ("\\boxed{3.0}", "3", 1.0, "boxed"),
    ("\\boxed{3}", "3.0", 1.0, "boxed"),
    ("\\boxed{3.5}", "3", 0.0, "boxed"),
    # boxed vs #### vs trailing number, precedence
    ("work...\n#### 18", "18", 1.0, "hash"),
    ("#### 1,234", "1234", 1.0, "hash"),
    ("She has 3 then 7 and finally 18 eggs.", "18", 1.0, "last_number"),
    ("She has 18 eggs, 3 for breakfast.", "18", 0.0, "last_number"),  # the LAST number counts
    ("\\boxed{18} and #### 5 and 7", "18", 1.0, "boxed"),  # a box beats the fallbacks
    ("#### 18\nthen 5", "18", 1.0, "hash"),  # #### beats the trailing number
    # several boxes: the last counts
    ("First \\boxed{1}, corrected: \\boxed{2}", "2", 1.0, "boxed"),
    ("First \\boxed{2}, corrected: \\boxed{1}", "2", 0.0, "boxed"),
    ("\\boxed{2} then a cut-off \\boxed{1", "2", 1.0, "boxed"),  # an unclosed last box falls back to the one before
    # nested braces
    ("\\boxed{\\frac{1}{2}}", "1/2", 1.0, "boxed"),
    ("\\boxed{\\frac{\\sqrt{3}}{2}}", "\\frac{\\sqrt{3}}{2}", 1.0, "boxed"),
    ("\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}", "\\left( 3, \\frac{\\pi}{2} \\right)", 1.0, "boxed"),
    # negatives
    ("\\boxed{-3}", "-3", 1.0, "boxed"),
    ("\\boxed{-3}", "3", 0.0, "boxed"),
    ("the result is -7", "-7", 1.0, "last_number"),
    # units, dollar signs, percent
    ("\\boxed{18 \\text{ eggs}}", "18", 1.0, "boxed"),
    ("\\boxed{\\$18.00}", "18", 1.0, "boxed"),
    ("\\boxed{50\\%}", "50", 1.0, "boxed"),
    ("\\boxed{50\\%}", "0.5", 1.0, "boxed"),
    ("\\boxed{40\\%}", "50", 0.0, "boxed"),
    # symbolic
    ("\\boxed{x=5}", "5", 1.0, "boxed"),
    ("\\boxed{2\\sqrt{2}}", "\\sqrt{8}", 1.0, "boxed"),
    ("\\fbox{7}", "7", 1.0, "boxed"),
]


@pytest.mark.parametrize("response,gold,expected,method", CASES)
def test_reward_table(domain, response, gold, expected, method):
    r = domain.score_one(gold, response)
    assert r.score == expected, r.info
    assert r.info["method"] == method
    assert r.info["gold"] == gold
    assert r.parts == {"correct": expected}


def test_info_holds_extracted_answer(domain):
    r = domain.score_one("1/2", "thus \\boxed{\\frac{1}{2}}.")
    assert r.info == {"extracted": "\\frac{1}{2}", "method": "boxed", "gold": "1/2", "error": None}


@pytest.mark.parametrize("gold", ["\\frac{", "}{", "", "   "])
def test_bad_gold_is_unscorable_not_zero(domain, gold):
    r = domain.score_one(gold, "\\boxed{1}")
    assert r.score is None
    assert "gold" in r.info["error"]


def test_non_string_gold_and_response_are_unscorable(domain):
    assert domain.score_one(None, "\\boxed{1}").score is None
    assert domain.score_one("1", None).score is None  # type: ignore[arg-type]


def test_fallbacks_can_be_switched_off():
    strict = MathDomain(answer_fallbacks=())
    assert strict.score_one("18", "#### 18").score == 0.0
    assert strict.score_one("18", "so 18").info["method"] == "none"
    hash_only = MathDomain(answer_fallbacks=["hash"])
    assert hash_only.score_one("18", "#### 18").score == 1.0
    assert hash_only.score_one("18", "so 18").score == 0.0
    with pytest.raises(ValueError, match="answer_fallbacks"):
        MathDomain(answer_fallbacks=["boxed_twice"])


def test_overlong_answer_counts_wrong_without_parsing(domain):
    r = domain.score_one("1", "\\boxed{" + "1+" * 400 + "1}")
    assert r.score == 0.0 and "longer" in r.info["error"]
    assert len(r.info["extracted"]) <= domain.max_answer_chars + 20  # info stays small (it goes to JSONL)


def _garbage() -> list[str]:
    rng = random.Random(0)
    alphabet = "\\{}$#0123456789.,-/^_ abcxyz()[]%frac boxed\n"
    return [
        "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 300))) for _ in range(60)
    ] + [
        "1" * 1_000_000,
        "\\boxed{" * 100_000,
        "}" * 10_000 + "\\boxed{" + "{" * 10_000,
        "\\boxed{" + "{" * 5000 + "1" + "}" * 5001,
        "\\boxed{" + "\\frac{" * 200 + "1" + "}{2}" * 200 + "}",
        "#### " + "9" * 5000,
        "数学 \\boxed{答案} ∑∫√ 🙂 \x00\ud800",
        "\\boxed{\\frac{1}{0}}",
        "\\boxed{10^{10^{10^{10}}}}",  # killed at the deadline: score None
        "\\boxed{x^2+}}{{",
        "\\boxed{}",
    ]


def test_fuzz_never_raises_and_stays_fast():
    domain = MathDomain(timeout_s=2.0)
    texts = _garbage()
    t0 = time.perf_counter()
    results = domain.score([Sample("u", "math", (), "3")] * len(texts), texts)
    elapsed_s = time.perf_counter() - t0
    assert all(isinstance(r, RewardResult) for r in results)
    assert all(r.score in (0.0, 1.0, None) for r in results)
    assert elapsed_s < 20.0, f"{len(texts)} garbage responses took {elapsed_s:.1f} s"


def test_works_from_worker_thread(domain):
    out: list[RewardResult] = []
    thread = threading.Thread(target=lambda: out.append(domain.score_one("1/2", "\\boxed{0.5}")))
    thread.start()
    thread.join(30)
    assert out and out[0].score == 1.0 and out[0].info["error"] is None


def test_runaway_verification_is_killed_and_the_worker_restarts():
    # sympy evaluates this power tower inside one GIL-holding C call: only killing a process stops it
    restarts = answer_mod.VERIFIER.restarts
    t0 = time.perf_counter()
    r = check_answer("3", "10^{10^{10^{10}}}", timeout_s=1.0)
    assert time.perf_counter() - t0 < 5.0
    assert r.correct is None and "did not finish within 1 s" in r.error
    assert answer_mod.VERIFIER.restarts == restarts + 1
    assert check_answer("3", "3.0").correct is True  # a fresh worker answers the next call


@pytest.mark.parametrize(
    "text,answer,method",
    [
        ("\\boxed{\\boxed{3}}", "3", "boxed"),
        ("a \\boxed { 4 } b", "4", "boxed"),
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}", "boxed"),  # escaped braces don't count as nesting
        ("x\n#### $1,000.\nmore", "$1,000.", "hash"),
        ("costs 1,234,567.5 total", "1,234,567.5", "last_number"),
        ("ratio 3 / 4", "3 / 4", "last_number"),
        ("nothing here", None, "none"),
    ],
)
def test_extract_answer(text, answer, method):
    e = extract_answer(text)
    assert (e.answer, e.method) == (answer, method)


def test_metrics_accuracy_stderr_none_frac(domain):
    results = [RewardResult(1.0, info={"method": "boxed"}), RewardResult(0.0, info={"method": "none"}),
               RewardResult(1.0, info={"method": "hash"}), RewardResult(1.0, info={"method": "boxed"}),
               RewardResult.unscorable("gold does not parse")]
    m = domain.metrics([None] * 5, results)  # type: ignore[list-item]
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["accuracy_stderr"] == pytest.approx(math.sqrt(0.75 * 0.25 / 4))
    assert m["count"] == 5 and m["none_frac"] == pytest.approx(0.2)
    assert m["answer_found_frac"] == pytest.approx(0.6)


def test_score_checks_lengths_and_registry(domain):
    with pytest.raises(ValueError, match="one per sample"):
        domain.score([Sample("u", "math", (), "1")], [])
    built = build_domain("math", name="gsm", difficulty="easy")
    assert isinstance(built, MathDomain) and built.name == "gsm"
