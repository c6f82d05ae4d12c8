"""The plain-integer fast path of the math reward gives exactly math-verify's verdict (and declines what it can't)."""

from __future__ import annotations

import random

import pytest

from mgs.domains.math.answer import check_answer, check_answers, integer_verdict, normalize_answer


def _forms(value: int, rng: random.Random) -> list[str]:
    """Ways a model or a dataset writes an integer, plain or not (the fast path must be exact or decline)."""
    digits = str(abs(value))
    sign = "-" if value < 0 else ""
    return [
        f"{value}", f"{value:,}", f"{sign}00{digits}", f"{value}.0", f"{value}.000", f"{value}.",
        f"${value}", f"\\${value}", f"\\boxed{{{value}}}", f"{sign.replace('-', '−')}{digits}",  # unicode minus
        f"+{digits}" if value >= 0 else f"−{digits}", f" {value} ", f"{value}.5", f"{value}e0", f"{value}\\%",
        f"{value} apples", f"{{{value}}}", f"{value}.0000001", rng.choice(["-0", "0.0", "-0.0", "00"]),
    ]


def _pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    values = [rng.randint(-30, 30) for _ in range(8)] + [999, 1000, 1234567, 10**14 + 7, 10**15 - 1, 10**15 + 1]
    pairs = []
    for _ in range(n):
        gold_value = rng.choice(values)
        answer_value = gold_value if rng.random() < 0.6 else rng.choice([gold_value + 1, -gold_value, gold_value * 10])
        pairs.append((rng.choice(_forms(gold_value, rng)[:8]), rng.choice(_forms(answer_value, rng))))
    return pairs


def test_fast_path_equals_math_verify_on_many_integer_forms():
    pairs = _pairs(700) + [("1,000", "1000"), ("-3", "−3"), ("7", "007"), ("5", "5.0"), ("12", "\\boxed{12}"),
                           ("0", "-0"), ("12345678901234567", "12345678901234567.0"), ("100", "1e2")]
    golds, answers = zip(*pairs)
    slow = check_answers(golds, answers, workers=2, fast_path=False, timeout_s=20)
    fast = check_answers(golds, answers, workers=1, fast_path=True, timeout_s=20)
    decided = [integer_verdict(normalize_answer(g), normalize_answer(a)) for g, a in pairs]
    mismatches = [(p, s, f) for p, s, f in zip(pairs, slow, fast) if s != f]
    assert not mismatches, mismatches[:10]
    assert all(s.correct is not None for s in slow)  # every pair was really checked by math-verify
    # the fast path really decided the plain ones, both ways (a test where it always declines proves nothing)
    verdicts = [(d, s.correct) for d, s in zip(decided, slow) if d is not None]
    assert len(verdicts) > 150 and {True, False} <= {d for d, _ in verdicts}
    assert all(d == s for d, s in verdicts)


@pytest.mark.parametrize(
    "gold,answer,verdict",
    [
        ("1000", "1000", True), ("1000", "1001", False), ("-3", "3", False), ("-0", "0", True), ("7", "007", True),
        ("5", "5.0", True), ("5", "5.000000", True), ("123456789012345", "123456789012345.0", True),
        # declined: math-verify decides (floats past 15 digits, unicode minus, signs, exponents, fractions, units)
        ("1234567890123456", "1234567890123456", None), ("5", "5.0000000", None), ("-3", "−3", None),
        ("5", "+5", None), ("100", "1e2", None), ("1", "1/1", None), ("5", "5.5", None), ("5", "5 cm", None),
        ("٣", "3", None), ("", "", None), ("-", "-", None), ("5", "5.", None),
    ],
)
def test_integer_verdict_table(gold, answer, verdict):
    assert integer_verdict(gold, answer) is verdict


def test_fast_path_keeps_the_caps_and_the_gold_check():
    assert check_answer("1", "1" * 400).correct is False  # over max_answer_chars: counted wrong, as before
    assert check_answer("1}", "1").correct is None  # a broken gold stays unscorable
    assert check_answer("1,000", "$1,000.").correct is True  # normalised before the fast path
