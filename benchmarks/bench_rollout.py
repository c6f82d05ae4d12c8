"""Rollout throughput: dynamic vs static vs compiled-static KV cache with the HF generate backend, and the
experimental "graph" backend (mgs.rl.fast_decode: own decode loop, CUDA-graphed decode step on CUDA).

Why: generation dominates an RL step on small models; this prints the numbers behind the backend's defaults.
For each mode it times `HFGenerateBackend.generate` on N chat prompts x G samples (median of --runs timed runs
after --warmup untimed ones; the first compiled run includes compilation) and prints ms per decode step (a decode
step = one token for every row of a batch; a batch runs as many steps as its longest completion), generated
tokens/s and completions/s.

GPU (the lead runs this):
  python benchmarks/bench_rollout.py --device cuda --model smollm2-135m-instruct --dtype bfloat16 \
      --prompts 64 --samples 8 --max-new-tokens 256
  python benchmarks/bench_rollout.py --device cuda --model smollm2-135m-instruct --dtype bfloat16 \
      --prompts 64 --samples 8 --max-new-tokens 256 --modes graph,static-compiled --runs 2 --warmup 1
CPU (small):
  python benchmarks/bench_rollout.py --device cpu --model tiny --prompts 8 --samples 2 --max-new-tokens 16
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from mgs.rl.model import build_tiny_policy, encode_prompts, load_policy
from mgs.rl.fast_decode import GraphDecodeBackend
from mgs.rl.rollout import HFGenerateBackend

MODES = {  # name -> backend factory (model, tokenizer, max_batch_size)
    "dynamic": lambda m, t, b: HFGenerateBackend(m, t, max_batch_size=b, cache_implementation="dynamic", compile=False),
    "static": lambda m, t, b: HFGenerateBackend(m, t, max_batch_size=b, cache_implementation="static", compile=False),
    "static-compiled": lambda m, t, b: HFGenerateBackend(
        m, t, max_batch_size=b, cache_implementation="static", compile=True
    ),
    "graph": lambda m, t, b: GraphDecodeBackend(m, t, max_batch_size=b),  # compiles on CUDA only
}

WORDS = "the a prime number sum of two cubes write a haiku about rivers explain why sky blue in one line".split()


def make_prompts(tokenizer, n: int, seed: int) -> list[list[int]]:
    """n chat prompts of varied length (5-60 words), like a mixed math/chat/instruction batch."""
    rng = random.Random(seed)
    questions = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 60))) + "?" for _ in range(n)]
    return encode_prompts(tokenizer, [[{"role": "user", "content": q}] for q in questions])


def batches_of(backend, prompt_ids, num_samples: int) -> list[list[int]]:
    """Row indices of each decode batch: the HF backend's length-sorted plan; the graph backend's row chunks."""
    rows = [p for p in range(len(prompt_ids)) for _ in range(num_samples)]
    if isinstance(backend, HFGenerateBackend):
        return backend.plan_batches([len(prompt_ids[r]) for r in rows])
    size = backend.max_batch_size or len(rows)
    return [list(range(i, min(i + size, len(rows)))) for i in range(0, len(rows), size)]


def decode_steps(backend, prompt_ids, completions, num_samples: int) -> int:
    """Sum over batches of the longest completion (the graph backend may run up to check_every - 1 more)."""
    batches = batches_of(backend, prompt_ids, num_samples)
    return sum(max(len(completions[i].completion_ids) for i in b) for b in batches)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="tiny", help="'tiny' (random 2-layer Llama), an alias or a model dir")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--max-batch-size", type=int, default=None, help="rows per generate call (default per device)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--modes", default=None, help=f"comma list from {list(MODES)} (default: all on CUDA; dynamic, static, graph on CPU)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model == "tiny":
        policy = build_tiny_policy("llama", seed=0, dtype=args.dtype, device=args.device)
    else:
        policy = load_policy(args.model, dtype=args.dtype, device=args.device)
    cpu_modes = ["dynamic", "static", "graph"]
    modes = args.modes.split(",") if args.modes else (list(MODES) if args.device.startswith("cuda") else cpu_modes)
    prompt_ids = make_prompts(policy.tokenizer, args.prompts, seed=0)
    lens = sorted(len(p) for p in prompt_ids)
    print(f"model: {policy.note} | device {args.device} {torch.cuda.get_device_name() if args.device.startswith('cuda') else ''}")
    print(f"{args.prompts} prompts ({lens[0]}-{lens[-1]} tokens) x {args.samples} samples, max_new_tokens "
          f"{args.max_new_tokens}, temperature {args.temperature}, dtype {args.dtype}, torch threads {torch.get_num_threads()}")
    header = f"{'mode':<16}{'batch':>6}{'first_s':>9}{'median_s':>10}{'steps':>7}{'ms/step':>9}{'tok/s':>10}{'compl/s':>9}{'finished':>9}"
    print(header)
    for mode in modes:
        backend = MODES[mode](policy.model, policy.tokenizer, args.max_batch_size)
        times, first_s = [], None
        for run in range(args.warmup + args.runs):
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            comps = backend.generate(
                prompt_ids, num_samples=args.samples, max_new_tokens=args.max_new_tokens,
                temperature=args.temperature, seed=run,
            )
            dt = time.perf_counter() - t0
            first_s = dt if first_s is None else first_s
            if run >= args.warmup:
                steps = decode_steps(backend, prompt_ids, comps, args.samples)
                tokens = sum(len(c.completion_ids) for c in comps)
                times.append((dt, steps, tokens, sum(c.finished for c in comps) / len(comps)))
        med = sorted(times)[len(times) // 2]
        dt, steps, tokens, fin = med
        batch = max(len(b) for b in batches_of(backend, prompt_ids, args.samples))
        print(f"{mode:<16}{batch:>6}{first_s:>9.2f}{statistics.median(t[0] for t in times):>10.3f}"
              f"{steps:>7}{1000 * dt / steps:>9.2f}{tokens / dt:>10.0f}{len(comps) / dt:>9.1f}{fin:>9.2f}")


if __name__ == "__main__":
    main()
