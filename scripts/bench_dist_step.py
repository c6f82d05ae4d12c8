"""Time and memory of one distributed MGS step (mgs.dist) on the default model, with synthetic scored rollouts.

Launch with torchrun (any world size, CUDA/NCCL or CPU/gloo):
    torchrun --nproc-per-node 1 scripts/bench_dist_step.py --parallel fsdp2 [--model smollm2-135m-instruct]
Prints, on rank 0, per step: step time, the train/surgery/optim split, peak CUDA memory and the domain buffers.
The rollouts are random token ids (3 domains, uneven per rank) with varying advantages, so every domain has a
non-zero gradient; what is measured is the update, not generation.
"""

from __future__ import annotations

import argparse
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parallel", default="fsdp2", choices=["ddp", "fsdp2"])
    ap.add_argument("--model", default="smollm2-135m-instruct", help="mgs.rl.model.load_policy name or 'tiny:llama'")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--buffer-dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--samples", type=int, default=48, help="samples per rank per step")
    ap.add_argument("--completion-tokens", type=int, default=256)
    ap.add_argument("--micro-batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()

    from mgs.dist import PARALLEL, distributed_update, init_from_env, shutdown
    from mgs.rl.model import build_tiny_policy, load_policy
    from mgs.rl.step import StepSettings, TrainSample

    ctx = init_from_env()
    device = str(ctx.device)
    if args.model.startswith("tiny:"):
        policy = build_tiny_policy(args.model.split(":", 1)[1], dtype=args.dtype, device=device)
    else:
        policy = load_policy(args.model, dtype=args.dtype, device=device)
    parallel = PARALLEL.get(args.parallel)
    model = parallel.wrap(policy.model, ctx)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6, weight_decay=0.0)
    settings = StepSettings(per_domain=True, surgery=True, method="pcgrad", granularity="module",
                            buffer_dtype=getattr(torch, args.buffer_dtype))
    vocab = policy.model.config.vocab_size if hasattr(policy.model, "config") else 1000
    g = torch.Generator().manual_seed(ctx.rank)
    domains = ["math", "chat", "ifeval"]
    for step in range(1, args.steps + 1):
        samples = []
        for i in range(args.samples):
            domain = domains[(i + ctx.rank) % 3 if i % 5 else 0]  # uneven per domain and rank
            n = int(torch.randint(args.completion_tokens // 2, args.completion_tokens + 1, (1,), generator=g))
            samples.append(TrainSample(domain, torch.randint(0, vocab, (64,), generator=g).tolist(),
                                       torch.randint(0, vocab, (n,), generator=g).tolist(),
                                       float(torch.randn((), generator=g))))
        if ctx.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = distributed_update(model, opt, samples, domains, settings, step=step,
                                 pad_id=policy.tokenizer.pad_token_id or 0, micro_batch_size=args.micro_batch_size,
                                 unit="samples", ctx=ctx, parallel=parallel)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        step_s = time.perf_counter() - t0
        m = out.metrics
        peak = torch.cuda.max_memory_allocated() / 1e9 if ctx.device.type == "cuda" else float("nan")
        if ctx.is_main:
            print(f"step {step}: {args.parallel} world {ctx.world_size} {args.model} {args.dtype}: step {step_s:.3f} s "
                  f"(train {m['time/train_s']:.3f}, surgery {m['time/surgery_s']:.3f}, optim {m['time/optim_s']:.3f}); "
                  f"peak {peak:.2f} GB; domain buffers {m['mem/domain_buffers_gb']:.3f} GB per rank; "
                  f"grad_norm {m['train/grad_norm']:.4f}; conflicted groups {m.get('surgery/groups_conflicted_frac', 0):.2f}",
                  flush=True)
    shutdown()


if __name__ == "__main__":
    main()
