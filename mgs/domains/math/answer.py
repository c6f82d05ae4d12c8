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
This works from any thread (calls are serialised by a lock), costs ~1-2 s once to start the worker, and never raises.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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


class MathVerifier:
    """Client of one `_verify_worker` child process; thread-safe; restarts the child after a kill or a crash."""

    def __init__(self, max_memory_mb: int = 2048, start_timeout_s: float = 60.0) -> None:
        self.max_memory_mb, self.start_timeout_s = max_memory_mb, start_timeout_s
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._owner_pid = -1
        self.restarts = 0

    def _start(self) -> subprocess.Popen:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[3])  # so the child imports this same `mgs`
        env["PYTHONPATH"] = root + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else root
        proc = subprocess.Popen(
            [sys.executable, "-m", "mgs.domains.math._verify_worker", str(self.max_memory_mb)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )
        if self._read(proc, self.start_timeout_s) != {"ready": True}:
            self._kill(proc)
            raise RuntimeError(f"the math-verify worker did not start within {self.start_timeout_s:g} s")
        self._owner_pid = os.getpid()
        return proc

    @staticmethod
    def _read(proc: subprocess.Popen, timeout_s: float) -> dict | None:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout_s)
        if not ready:
            return None
        line = proc.stdout.readline()
        return json.loads(line) if line else None

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        proc.kill()
        proc.wait()

    def close(self) -> None:
        with self._lock:
            if self._proc is not None and self._owner_pid == os.getpid():
                self._kill(self._proc)
            self._proc = None

    def check(self, gold: str, answer: str, timeout_s: float) -> dict:
        """The worker's reply ({"correct"} | {"gold_error"} | {"error"}); raises TimeoutError/RuntimeError."""
        with self._lock:
            if self._proc is None or self._proc.poll() is not None or self._owner_pid != os.getpid():
                self._proc = self._start()  # first call, after a kill/crash, or in a forked child process
            proc = self._proc
            assert proc.stdin is not None
            try:
                proc.stdin.write(json.dumps({"gold": gold, "answer": answer}) + "\n")
                proc.stdin.flush()
                reply = self._read(proc, timeout_s)
            except (OSError, ValueError) as e:
                reply, why = None, f"worker pipe failed: {e}"
            else:
                why = f"verification did not finish within {timeout_s:g} s"
            if reply is None:
                self._kill(proc)
                self._proc = None
                self.restarts += 1
                raise TimeoutError(why)
            return reply


VERIFIER = MathVerifier()
atexit.register(VERIFIER.close)


def check_answer(
    gold: str,
    answer: str,
    *,
    timeout_s: float = 5.0,
    max_answer_chars: int = 300,
    max_brace_depth: int = 20,
) -> CheckResult:
    """Is `answer` (an extracted final answer) equivalent to `gold`? Never raises."""
    if len(answer) > max_answer_chars:
        return CheckResult(False, f"answer longer than {max_answer_chars} chars: not checked, counted wrong")
    if _max_depth(answer) > max_brace_depth:
        return CheckResult(False, f"answer nested deeper than {max_brace_depth} braces: not checked, counted wrong")
    if _max_depth(gold) < 0 or gold.count("{") != gold.count("}"):
        return CheckResult(None, f"gold answer {gold[:200]!r} has unbalanced braces")
    try:
        reply = VERIFIER.check(normalize_answer(gold), normalize_answer(answer), timeout_s)
    except Exception as e:  # noqa: BLE001 - timeouts, a dead worker: "can't score", never a crash
        return CheckResult(None, f"verifier failed: {type(e).__name__}: {e}")
    if "gold_error" in reply:
        return CheckResult(None, reply["gold_error"])
    if "error" in reply:
        return CheckResult(None, f"verifier failed: {reply['error']}")
    return CheckResult(bool(reply["correct"]))
