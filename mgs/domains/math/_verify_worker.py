"""The math-verify worker process: reads `{"gold", "answer"}` JSON lines on stdin, writes one JSON line per request.

Why a process: some answers make sympy compute for minutes inside one C call that holds the GIL
(`10^{10^{10^{10}}}`), which no thread deadline can interrupt; a process can be killed. It also gets an
address-space limit so a huge integer dies with MemoryError instead of eating the machine.
Reply: `{"correct": bool}`, or `{"gold_error": str}` when the gold doesn't parse, or `{"error": str}`.
Started and killed by `verifier.MathVerifier` (one per pool slot); not meant to be run by hand.
"""

from __future__ import annotations

import functools
import json
import logging
import sys


def _limit_memory(max_mb: int) -> None:
    try:
        import resource

        limit = max_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):  # not POSIX, or not allowed: run without the limit
        pass


def _parse(text: str) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    # parsing_timeout=None: math-verify's signal-based timeout is off; the parent kills us past the deadline
    return parse(f"${text}$", [LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=None)


@functools.lru_cache(maxsize=65536)
def _parse_gold(gold: str) -> tuple:
    return tuple(_parse(gold))


def handle(gold: str, answer: str) -> dict:
    from math_verify import verify

    gold_parsed = _parse_gold(gold)
    if not gold_parsed:
        return {"gold_error": f"gold answer {gold[:200]!r} does not parse as math"}
    pred = _parse(answer)
    if not pred:
        return {"correct": False}
    return {"correct": bool(verify(list(gold_parsed), pred, timeout_seconds=None))}


def main() -> None:
    logging.disable(logging.WARNING)  # math-verify warns that its timeouts are off; we handle them
    _limit_memory(int(sys.argv[1]) if len(sys.argv) > 1 else 2048)
    _parse("1")  # warm the imports before the first real request
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        try:
            req = json.loads(line)
            reply = handle(req["gold"], req["answer"])
        except BaseException as e:  # noqa: BLE001 - report any failure (MemoryError, RecursionError...) and go on
            reply = {"error": f"{type(e).__name__}: {str(e)[:300]}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__":
    main()
