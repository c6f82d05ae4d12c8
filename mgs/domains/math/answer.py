"""Final-answer extraction and checking for the math reward: find the answer in a response, compare it to the gold.

Extraction is ours and linear-time (the reward must stay fast on a 1 MB response): the last `\\boxed{...}` (or
`\\fbox{...}`, braces balanced), else the last GSM8K-style `#### n` line, else the last number of the text. The
comparison is math-verify's (`parse` + `verify`: 1/2 = 0.5 = \\frac12, 1,000 = 1000, \\$5 = 5, 3.0 = 3, ...).

Timeouts: math-verify's own timeouts use `signal.alarm`, which only works on the main thread, so we switch them
off (`parsing_timeout=None`, `timeout_seconds=None`) and bound the work ourselves, twice:
1. input caps: an extracted answer longer than `max_answer_chars` or nested deeper than `max_brace_depth` is not
   handed to the parser at all (scored as a wrong answer: the model did not give a usable final answer);
2. a deadline on a worker process: parse + verify run in one long-lived child process (`_verify_worker.py`, with
   an address-space limit); if it has not replied after `timeout_s` it is killed (and restarted on the next call)
   and the check returns `None` ("can't score", reason in the error). A thread could not do this: some answers
   (`10^{10^{10^{10}}}`) make sympy compute inside one C call that holds the GIL, which no thread deadline interrupts.
Speed (a GRPO step scores hundreds of answers): when gold and answer are both plain integers after normalisation
the verdict is integer equality, computed here without a worker round trip (`integer_verdict`, which gives exactly
math-verify's verdict and declines anything it is not sure of); the rest go to a pool of workers (`verifier.py`),
and `check_answers` runs a batch on several threads, one worker each. Results never depend on the path taken.
Works from any thread, costs ~0.5-2 s once per worker started, and never raises.
"""

from __future__ import annotations

import atexit
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

from mgs.domains.math.verifier import VerifierPool

EXTRACTORS = ("boxed", "hash", "last_number")
"""Extraction methods, tried in this order; `answer_fallbacks` of the domain may switch the last two off."""

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE_RE = re.compile(r"(?<!\\)[{}]")
_NUMBER_RE = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?")
_THOUSANDS_RE = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


@dataclass(frozen=True)
class Extraction:
    """The final answer found in a response (`answer` None when there is none) and how it was found."""

    answer: str | None
    method: str  # "boxed" | "hash" | "last_number" | "none"


def last_boxed(text: str, max_boxes: int = 8, scan_chars: int = 2000) -> str | None:
    """Content of the last `\\boxed{...}` whose braces close; None if there is none. A box still open at the end
    of the text (a truncated response) is skipped for the one before it; a box whose content runs past
    `scan_chars` is returned cut there (too long to be a final answer: the length cap then counts it wrong).
    Bounded work: at most `max_boxes` boxes from the end, `scan_chars` characters each."""
    starts = [m.end() for m in _BOX_RE.finditer(text)][-max_boxes:]
    for start in reversed(starts):
        depth = 1
        for m in _BRACE_RE.finditer(text, start, min(len(text), start + scan_chars)):
            depth += 1 if m.group(0) == "{" else -1
            if depth == 0:
                return text[start : m.start()].strip()
        if start + scan_chars < len(text):
            return text[start : start + scan_chars]
    return None


def _after_hashes(text: str) -> str | None:
    idx = text.rfind("####")
    if idx < 0:
        return None
    line = text[idx + 4 :].split("\n", 1)[0].strip()
    return line or None


def _last_number(text: str) -> str | None:
    last = None
    for last in _NUMBER_RE.finditer(text):
        pass
    return last.group(0) if last else None


_EXTRACT: dict[str, Callable[[str], str | None]] = {
    "boxed": last_boxed,
    "hash": _after_hashes,
    "last_number": _last_number,
}


def extract_answer(text: str, methods: tuple[str, ...] = EXTRACTORS) -> Extraction:
    """The response's final answer by the first method (in `methods` order) that finds one."""
    for method in methods:
        answer = _EXTRACT[method](text)
        if answer:
            return Extraction(answer, method)
    return Extraction(None, "none")


def normalize_answer(answer: str) -> str:
    """Light clean-up math-verify doesn't do on a bare answer: thousands separators of a plain number
    (1,000 -> 1000; "1, 2" stays a list), a trailing full stop, and unescaped `$` (dollar amounts or math mode)."""
    answer = answer.strip().rstrip(".").strip()
    answer = re.sub(r"(?<!\\)\$", "", answer).strip()
    if _THOUSANDS_RE.match(answer):
        answer = answer.replace(",", "")
    return answer


@dataclass(frozen=True)
class CheckResult:
    """`correct` is True/False, or None when the pair can't be checked (`error` says why)."""

    correct: bool | None
    error: str | None = None


def _max_depth(text: str) -> int:
    """Deepest brace nesting of `text`; -1 when a `}` closes more than was opened."""
    depth = max_depth = 0
    for c in text:
        depth += (c == "{") - (c == "}")
        if depth < 0:
            return -1
        max_depth = max(max_depth, depth)
    return max_depth


_PLAIN_INTEGER_RE = re.compile(r"(-?)([0-9]{1,15})(?:\.0{1,6})?")
"""A normalised answer the fast path decides: optional ASCII minus, 1-15 ASCII digits (leading zeros allowed), and an
optional `.0`..`.000000`. The 15-digit cap is caution (a double holds every such integer exactly); longer numbers
go to math-verify."""


def integer_verdict(gold: str, answer: str) -> bool | None:
    """math-verify's verdict on a pair of normalised answers when both are plain integers (see `_PLAIN_INTEGER_RE`):
    integer equality (math-verify compares two sympy Integers with `==`; `-0` is `0`, `007` is `7`, `5.0` is `5`).
    None for anything else (fractions, unicode minus, `+5`, exponents, units, ...): the worker decides those."""
    g, a = _PLAIN_INTEGER_RE.fullmatch(gold), _PLAIN_INTEGER_RE.fullmatch(answer)
    if g is None or a is None:
        return None
    return int(g.group(1) + g.group(2)) == int(a.group(1) + a.group(2))


VERIFIER = VerifierPool()
"""The process-wide worker pool (workers start on demand; `reserve(n)` lets a batch use n of them)."""
atexit.register(VERIFIER.close)


def _precheck(
    gold: str, answer: str, max_answer_chars: int, max_brace_depth: int, fast_path: bool
) -> CheckResult | tuple[str, str]:
    """The verdict when it needs no worker (caps, bad gold, plain integers), else the normalised (gold, answer)."""
    if len(answer) > max_answer_chars:
        return CheckResult(False, f"answer longer than {max_answer_chars} chars: not checked, counted wrong")
    if _max_depth(answer) > max_brace_depth:
        return CheckResult(False, f"answer nested deeper than {max_brace_depth} braces: not checked, counted wrong")
    if _max_depth(gold) < 0 or gold.count("{") != gold.count("}"):
        return CheckResult(None, f"gold answer {gold[:200]!r} has unbalanced braces")
    gold_n, answer_n = normalize_answer(gold), normalize_answer(answer)
    verdict = integer_verdict(gold_n, answer_n) if fast_path else None
    return (gold_n, answer_n) if verdict is None else CheckResult(verdict)


def _ask_worker(gold_n: str, answer_n: str, timeout_s: float) -> CheckResult:
    try:
        reply = VERIFIER.check(gold_n, answer_n, timeout_s)
    except Exception as e:  # noqa: BLE001 - timeouts, a dead worker: "can't score", never a crash
        return CheckResult(None, f"verifier failed: {type(e).__name__}: {e}")
    if "gold_error" in reply:
        return CheckResult(None, reply["gold_error"])
    if "error" in reply:
        return CheckResult(None, f"verifier failed: {reply['error']}")
    return CheckResult(bool(reply["correct"]))


def check_answer(
    gold: str,
    answer: str,
    *,
    timeout_s: float = 5.0,
    max_answer_chars: int = 300,
    max_brace_depth: int = 20,
    fast_path: bool = True,
) -> CheckResult:
    """Is `answer` (an extracted final answer) equivalent to `gold`? Never raises. `fast_path=False` sends plain
    integers to math-verify too (same verdicts, slower: for tests and benchmarks)."""
    pre = _precheck(gold, answer, max_answer_chars, max_brace_depth, fast_path)
    return pre if isinstance(pre, CheckResult) else _ask_worker(*pre, timeout_s)


def check_answers(
    golds: Sequence[str],
    answers: Sequence[str],
    *,
    workers: int = 1,
    timeout_s: float = 5.0,
    max_answer_chars: int = 300,
    max_brace_depth: int = 20,
    fast_path: bool = True,
) -> list[CheckResult]:
    """`check_answer` of each pair, in order; the distinct pairs that need math-verify run on up to `workers`
    threads, each with its own worker process (same results as one by one). Never raises on the answers."""
    if len(golds) != len(answers):
        raise ValueError(f"{len(golds)} golds but {len(answers)} answers: pass one gold per answer")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    results = [_precheck(g, a, max_answer_chars, max_brace_depth, fast_path) for g, a in zip(golds, answers)]
    todo: dict[tuple[str, str], list[int]] = {}  # each distinct normalised pair is checked once (GRPO groups repeat)
    for i, r in enumerate(results):
        if not isinstance(r, CheckResult):
            todo.setdefault(r, []).append(i)
    threads = min(int(workers), len(todo))
    if threads <= 1:
        replies = [_ask_worker(*pair, timeout_s) for pair in todo]
    else:
        VERIFIER.reserve(threads)
        with ThreadPoolExecutor(threads, thread_name_prefix="math-verify") as pool:
            replies = list(pool.map(lambda pair: _ask_worker(*pair, timeout_s), todo))
    for indices, reply in zip(todo.values(), replies):
        for i in indices:
            results[i] = reply
    return results  # type: ignore[return-value]
