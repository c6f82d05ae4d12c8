"""Benchmark of reward scoring for one RL step: ms to score N completions per domain, as `Run.rollout` calls it
(`score_responses` -> the domain's batched `score`), the old sequential path vs the new one.

Math (the slow one: ~0.86 s per 512 GSM8K completions on a 16-core H100 box before the fast path and the pool):
GSM8K-like integer golds and a seeded mix of responses shaped like a small model's: `#### n`, `\\boxed{n}`, prose
ending in a number (right or wrong), boxed LaTeX (`\\frac`, `\\sqrt`, decimals, `\\$`), thousands separators, and
no answer at all. Paths (rows of the table):
  sequential   `score_one` per response, every pair through math-verify, one worker  (before: the baseline)
  fast         batched `score`: plain-integer fast path, each distinct remaining pair checked once, one worker
  fast+pool    the same on `--workers` worker processes                              (the default `MathDomain()`)
IFEval: prompts from our generator and generic responses (scored sequentially; its checkers are pure Python).
Chat: the offline similarity proxy (MiniLM embeddings) on the builtin prompts, if `--chat` (loads the model).
Every path's scores are compared with the baseline's (the run fails if any differs). Timing: median of `--reps`
after one warm-up batch (all workers started first, then each path's gold caches warm).

    PYTHONPATH=. python benchmarks/bench_reward.py --n 512 --reps 5          # CPU or GPU box, same command
    PYTHONPATH=. python benchmarks/bench_reward.py --n 512 --reps 5 --workers 16 --chat
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from typing import Callable

from mgs.domains.base import Sample
from mgs.domains.math import MathDomain
from mgs.domains.math.answer import VERIFIER, integer_verdict, normalize_answer
from mgs.domains.math.verifier import default_pool_size
from mgs.domains.template import score_responses

LATEX_FORMS = ["\\frac{{{twice}}}{{2}}", "{v}.0", "\\${v}", "\\sqrt{{{square}}}", "{half}.5", "\\frac{{{v}}}{{3}}",
               "{v} \\text{{ dollars}}", "{v}\\%"]


def math_batch(n: int, seed: int) -> tuple[list[Sample], list[str]]:
    """n GSM8K-like (sample, response) pairs, 8 responses per prompt, ~half of them right."""
    rng = random.Random(seed)
    samples, responses = [], []
    for i in range(n):
        if i % 8 == 0:
            gold = rng.choice([rng.randint(1, 100), rng.randint(100, 5000), rng.randint(5000, 200_000)])
            sample = Sample(f"gsm/{i // 8}", "math", ({"role": "user", "content": "q"},), str(gold))
        v = gold if rng.random() < 0.5 else gold + rng.choice([-10, -1, 1, 2, 100])
        work = "Let's compute step by step. " + " ".join(f"{rng.randint(1, 99)} + {rng.randint(1, 99)} = "
                                                         f"{rng.randint(2, 198)}." for _ in range(rng.randint(2, 6)))
        kind = rng.random()
        if kind < 0.30:
            text = f"{work}\n#### {v:,}" if v >= 1000 and rng.random() < 0.5 else f"{work}\n#### {v}"
        elif kind < 0.60:
            text = f"{work} So the answer is $\\boxed{{{v}}}$."
        elif kind < 0.78:
            text = f"{work} Therefore she has {v} apples left."
        elif kind < 0.92:
            form = rng.choice(LATEX_FORMS).format(v=v, twice=2 * v, square=v * v, half=v // 2 if v > 1 else 0)
            text = f"{work} The answer is \\boxed{{{form}}}."
        else:
            text = f"{work} I am not sure how to finish this."
        samples.append(sample)
        responses.append(text)
    return samples, responses


def ifeval_batch(n: int, seed: int) -> tuple[object, list[Sample], list[str]]:
    from mgs.domains.ifeval.domain import IFEvalDomain

    domain = IFEvalDomain()
    prompts = domain.load("train", limit=max(1, n // 8), seed=seed)
    rng = random.Random(seed)
    words = ("the model writes a short answer about rivers cities music history science and gardens with some "
             "detail because the user asked for it").split()
    samples, responses = [], []
    for i in range(n):
        sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(6, 16))).capitalize() + "."
                     for _ in range(rng.randint(4, 14))]
        text = " ".join(sentences)
        style = rng.random()
        if style < 0.2:
            text = text.upper()
        elif style < 0.4:
            text = "\n\n".join(sentences) + "\nP.S. thanks"
        elif style < 0.5:
            text = json.dumps({"answer": text})
        samples.append(prompts[(i // 8) % len(prompts)])
        responses.append(text)
    return domain, samples, responses


def chat_batch(n: int, seed: int) -> tuple[object, list[Sample], list[str]]:
    from mgs.domains.chat.domain import ChatDomain

    domain = ChatDomain()
    prompts = domain.load("train", seed=seed)
    rng = random.Random(seed)
    samples = [prompts[(i // 8) % len(prompts)] for i in range(n)]
    responses = [(s.target or "I do not know.")[: rng.randint(40, 400)] + " " + "More detail. " * rng.randint(0, 5)
                 for s in samples]
    return domain, samples, responses


def timed(fn: Callable[[], list], reps: int) -> tuple[float, list]:
    out = fn()  # warm-up: worker processes started, models loaded
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=512, help="completions per domain (8 per prompt)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--workers", type=int, default=None, help="math-verify processes (default: min(8, CPUs))")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chat", action="store_true", help="also time the chat similarity proxy (loads MiniLM)")
    ap.add_argument("--no-ifeval", action="store_true")
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args()
    workers = args.workers or default_pool_size()
    per = 512 / args.n
    rows = []

    samples, responses = math_batch(args.n, args.seed)
    paths = {"sequential": MathDomain(verify_workers=1, fast_integer_check=False),
             "fast": MathDomain(verify_workers=1),
             "fast+pool": MathDomain(verify_workers=workers)}
    VERIFIER.reserve(workers)
    VERIFIER.warm(workers)  # every worker started before timing (a trainer pays this once per run)
    base = None
    for label, domain in paths.items():
        if label == "sequential":
            def run(d=domain):  # what the domain's score did before: one check at a time, all through the worker
                return [d.score_one(s.target, r) for s, r in zip(samples, responses)]
        else:
            def run(d=domain):
                return score_responses(d, samples, responses)
        median_s, results = timed(run, args.reps)
        scores = [(r.score, r.info) for r in results]
        if base is None:
            base = scores
        elif scores != base:
            diff = sum(a != b for a, b in zip(scores, base))
            raise SystemExit(f"math path {label!r} changed {diff} of {len(scores)} scores: a bug, report it")
        rows.append({"domain": "math", "path": label, "workers": domain.verify_workers, "n": args.n,
                     "ms_per_512": 1e3 * median_s * per})
    answers = [r.info.get("extracted") for r in results]
    fast_frac = sum(a is not None and integer_verdict(normalize_answer(s.target), normalize_answer(a)) is not None
                    for s, a in zip(samples, answers)) / len(samples)
    found = sum(a is not None for a in answers) / len(samples)
    accuracy = sum(r.score or 0.0 for r in results) / len(results)

    if not args.no_ifeval:
        domain, samples_if, responses_if = ifeval_batch(args.n, args.seed)
        median_s, _ = timed(lambda: score_responses(domain, samples_if, responses_if), args.reps)
        rows.append({"domain": "ifeval", "path": "sequential", "workers": 1, "n": args.n,
                     "ms_per_512": 1e3 * median_s * per})
    if args.chat:
        domain, samples_c, responses_c = chat_batch(args.n, args.seed)
        median_s, _ = timed(lambda: score_responses(domain, samples_c, responses_c), args.reps)
        rows.append({"domain": "chat", "path": "similarity-proxy", "workers": 1, "n": args.n,
                     "ms_per_512": 1e3 * median_s * per})

    print(f"CPUs usable: {len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()}; "
          f"math batch: answer found {found:.0%}, plain-integer pairs {fast_frac:.0%}, accuracy {accuracy:.0%}; "
          f"median of {args.reps} reps")
    seq = rows[0]["ms_per_512"]
    print(f"{'domain':8} {'path':18} {'workers':>7} {'ms/512':>9} {'speed-up':>9}")
    for r in rows:
        speedup = f"{seq / r['ms_per_512']:.1f}x" if r["domain"] == "math" else ""
        print(f"{r['domain']:8} {r['path']:18} {r['workers']:>7} {r['ms_per_512']:>9.1f} {speedup:>9}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
