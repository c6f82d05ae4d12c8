"""Where an RL step's time goes on CUDA: decode milliseconds per step by attention implementation, backend and row
count, and one update on fixed rollouts timed with and without the padding mask, then under torch.profiler.

Why: the "Fast" issue's step is ~10x its physical floor; this script finds which kernels and which Python own
the time before anything is tuned. It prints short tables and writes the profiler tables (and a Chrome trace) under
--out.

  python benchmarks/profile_gpu.py --device cuda --model smollm2-135m-instruct --data $MGS_DATA/gsm8k --out $OUT
  python benchmarks/profile_gpu.py --device cpu --model tiny --parts update --per-domain 4   (smoke)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_mgs_overhead import fixed_rollouts  # noqa: E402

import mgs.rl.logprobs as logprobs  # noqa: E402
from mgs.rl.model import build_tiny_policy, encode_prompts, load_policy  # noqa: E402
from mgs.rl.rollout import ROLLOUT_BACKENDS  # noqa: E402
from mgs.rl.step import StepSettings, TrainSample, plan_schedule, update  # noqa: E402


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def questions(data: str | None, n: int) -> list[str]:
    if data:
        rows = [json.loads(line) for line in Path(data, "train.jsonl").read_text().splitlines()[:n]]
        return [r["question"] + "\nAnswer with just the final number." for r in rows]
    return [f"What is {i} + {2 * i + 1}? Answer with just the final number." for i in range(n)]


def decode_part(policy, args, out: Path) -> list[dict]:
    """configs: BACKEND:IMPL:PROMPTS (rows = PROMPTS x --samples)."""
    tok, model, device = policy.tokenizer, policy.model, next(policy.model.parameters()).device
    qs = questions(args.data, max(int(c.split(":")[2]) for c in args.decode))
    rows = []
    for spec in args.decode:
        backend_name, impl, n = spec.split(":")
        model.set_attn_implementation(impl)
        prompts = encode_prompts(tok, [[{"role": "user", "content": q}] for q in qs[: int(n)]])
        backend = ROLLOUT_BACKENDS.get(backend_name)(model, tok)
        times, steps, means = [], [], []
        for run in range(1 + args.decode_runs):
            sync(device)
            t0 = time.perf_counter()
            comps = backend.generate(prompts, num_samples=args.samples, max_new_tokens=args.max_new_tokens,
                                     temperature=0.7, seed=run)
            sync(device)
            dt = time.perf_counter() - t0
            lens = [len(c.completion_ids) for c in comps]
            if run == 0:
                first = dt
                continue
            times.append(dt)
            steps.append(max(lens))
            means.append(sum(lens) / len(lens))
        row = {"backend": backend_name, "attn": impl, "rows": int(n) * args.samples, "first_s": first,
               "median_s": statistics.median(times), "decode_steps": statistics.median(steps),
               "ms_per_step": 1000 * statistics.median(t / s for t, s in zip(times, steps)),
               "mean_len": statistics.mean(means)}
        rows.append(row)
        print(f"[decode] {spec}: {row}", flush=True)
        del backend
        torch.cuda.empty_cache() if device.type == "cuda" else None
    model.set_attn_implementation("mgs_sdpa")
    print("\n| backend | attention | rows | first call s | median s | decode steps | ms/step | mean len |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['backend']} | {r['attn']} | {r['rows']} | {r['first_s']:.1f} | {r['median_s']:.2f} | "
              f"{r['decode_steps']:.0f} | {r['ms_per_step']:.2f} | {r['mean_len']:.0f} |")
    return rows


def update_part(policy, args, out: Path) -> dict:
    model, device = policy.model, next(policy.model.parameters()).device
    samples = fixed_rollouts(len(policy.tokenizer), 3, args.per_domain, (60, 160), args.max_new_tokens, 0)
    pooled = [TrainSample("all", s.prompt_ids, s.completion_ids, s.advantage) for s in samples]
    schedule = plan_schedule(pooled, ["all"], args.micro_batch_tokens, unit="tokens")
    settings = StepSettings(per_domain=False, surgery=False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-7, weight_decay=0.0, fused=device.type == "cuda" or None)

    def once(step: int) -> dict:
        sync(device)
        t0 = time.perf_counter()
        m = update(model, opt, pooled, schedule, settings, step=step, pad_id=policy.tokenizer.pad_token_id).metrics
        sync(device)
        return {"update_s": time.perf_counter() - t0, "train_s": m["time/train_s"], "optim_s": m["time/optim_s"]}

    result = {"micro_batches": len(schedule.micro_batches),
              "tokens": sum(len(s.prompt_ids) + len(s.completion_ids) for s in pooled)}
    keep_mask = logprobs._body_mask
    for label, mask_fn in (("padding mask (before)", lambda m: m), ("no mask when right-padded", keep_mask)):
        logprobs._body_mask = mask_fn
        for w in range(2):
            once(w + 1)
        reps = [once(10 + r) for r in range(args.reps)]
        result[label] = {k: statistics.median(r[k] for r in reps) for k in reps[0]}
        print(f"[update] {label}: {result[label]}", flush=True)
    logprobs._body_mask = keep_mask
    acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=acts) as prof:
        once(99)
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=30, max_name_column_width=70)
    cpu_table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=70)
    (out / "update_profile.txt").write_text(table + "\n\n" + cpu_table)
    prof.export_chrome_trace(str(out / "update_trace.json"))
    print(table)
    print(cpu_table)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--data", default=None, help="GSM8K folder (train.jsonl) for real prompts")
    ap.add_argument("--parts", default="decode,update")
    ap.add_argument("--decode", nargs="*", default=["graph:sdpa:64", "graph:mgs_sdpa:64", "graph:mgs_sdpa:16",
                                                    "hf:mgs_sdpa:64"], help="BACKEND:ATTN:PROMPTS")
    ap.add_argument("--decode-runs", type=int, default=2)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--per-domain", type=int, default=171)
    ap.add_argument("--micro-batch-tokens", type=int, default=None)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default="/tmp/mgs-profile")
    args = ap.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.dtype = args.dtype or ("bfloat16" if cuda else "float32")
    args.micro_batch_tokens = args.micro_batch_tokens or (32768 if cuda else 4096)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.model == "tiny":
        policy = build_tiny_policy("llama", dtype=args.dtype, device=args.device)
    else:
        policy = load_policy(args.model, dtype=args.dtype, device=args.device)
    results = {"device": torch.cuda.get_device_name() if cuda else "cpu"}
    parts = args.parts.split(",")
    if "update" in parts:
        results["update"] = update_part(policy, args, out)
    if "decode" in parts:
        results["decode"] = decode_part(policy, args, out)
    (out / "profile.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
