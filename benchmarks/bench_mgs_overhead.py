"""What MGS costs on top of Mixed RL: backward + surgery + optimizer step on identical fixed rollouts.

Why: the paper claims surgery costs ~0.1% of training time; our target is an MGS update within 3% of Mixed RL's
and a peak-memory difference within the per-domain gradient buffers. Generation is left out on purpose (it is the
same for both and would drown the difference): fixed rollouts of D domains (seeded random prompt and completion
token ids of varied lengths, random advantages) are injected straight into `mgs.rl.step.update`, the step the
trainer runs.

Variants (each on the same samples, each with its own best batching):
Each variant runs at every `--micro-batch-tokens` budget given and every `--pack` setting (packed = padding-free
micro-batches, train.pack: the budget then counts real tokens); "vs mixed" is against the fastest Mixed RL row of
the same pack setting, and the "best" lines compare each variant's fastest budget with it (each with its own best
batching).
- mixed: Mixed RL as the trainer runs it without monitor mode: one backward over all domains' samples bucketed by
  length together (the domains don't matter), plain `.grad`, no per-domain buffers.
- mgs-sum: per-domain gradients (micro-batches grouped by domain) combined by the plain sum: the cost of keeping
  D gradients alone.
- mgs-module / mgs-tensor / mgs-global: per-domain gradients + PCGrad per transformer module / per parameter
  tensor / on the whole model (global PCGrad).
Per variant: median over `--reps` synchronised updates after `--warmup` ones, the step's own split (train =
forward+backward, surgery, optim = norm + clip + AdamW (fused on CUDA); variants run round-robin so drift hits all
alike), and on CUDA the peak allocated memory of an update minus
the memory held before it. Expected extra memory of MGS: with `--buffer-dtype param` (default) each domain's
backward accumulates into its row of the [D, *param] buffer and the combine writes row 0 in place, which becomes
`.grad`: (D-1) gradients more than Mixed RL (which holds one `.grad`), the issue's target. With another buffer dtype
the step copies: D buffers plus the combined `.grad`, D x numel x buffer bytes more.
`--time-budget` stops the timed round-robin early (after the round that crosses it), so a slow device still
prints a table (with fewer reps, said in the header).

  python benchmarks/bench_mgs_overhead.py --device cuda --model smollm2-135m-instruct --dtype bfloat16
  python benchmarks/bench_mgs_overhead.py --device cuda --model smollm2-135m-instruct --pack on,off --variants mixed,mgs-module
  python benchmarks/bench_mgs_overhead.py --device cpu --model tiny --per-domain 4 --max-new-tokens 16 --reps 5
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from mgs.rl.step import StepSettings, TrainSample, plan_schedule, update
from mgs.rl.logprobs import forward_tokens
from mgs.rl.trainer import resolve_pack

DOMAIN_NAMES = ("math", "chat", "ifeval", "code", "science")
# name -> (per_domain, surgery, granularity, method)
VARIANTS: dict[str, tuple[bool, bool, str, str]] = {
    "mixed": (False, False, "module", "sum"),
    "mgs-sum": (True, False, "module", "sum"),
    "mgs-module": (True, True, "module", "pcgrad"),
    "mgs-tensor": (True, True, "tensor", "pcgrad"),
    "mgs-global": (True, True, "global", "pcgrad"),
}
BUFFER_DTYPES = {"param": None, "float32": torch.float32, "bfloat16": torch.bfloat16}  # param: the model's dtype


def fixed_rollouts(vocab: int, domains: int, per_domain: int, prompt_tokens: tuple[int, int], max_new_tokens: int,
                   seed: int) -> list[TrainSample]:
    """Seeded fake rollouts: per domain `per_domain` samples, prompt lengths uniform in `prompt_tokens`,
    completion lengths uniform in [max_new_tokens // 8, max_new_tokens], advantages ~ N(0, 1)."""
    rng = random.Random(seed)
    samples = []
    for d in range(domains):
        for _ in range(per_domain):
            p = rng.randint(*prompt_tokens)
            c = rng.randint(max(1, max_new_tokens // 8), max_new_tokens)
            samples.append(TrainSample(DOMAIN_NAMES[d], [rng.randrange(vocab) for _ in range(p)],
                                       [rng.randrange(vocab) for _ in range(c)], rng.gauss(0.0, 1.0)))
    return samples


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Variant:
    """One update configuration with its own schedule (best batching) and optimizer; `run_once` times one update."""

    def __init__(self, name: str, model: torch.nn.Module, samples: list[TrainSample], order: list[str], args,
                 pad_id: int, family: str | None, budget: int, label: str, pack: bool = False) -> None:
        per_domain, surgery, granularity, method = VARIANTS[name]
        if per_domain:
            self.samples, run_order = samples, order
        else:  # Mixed RL's own best batching: one length-bucketed pool, domains ignored
            self.samples = [TrainSample("all", s.prompt_ids, s.completion_ids, s.advantage) for s in samples]
            run_order = ["all"]
        self.name, self.label, self.budget, self.model, self.pad_id = name, label, budget, model, pad_id
        self.pack = pack
        self.device = next(model.parameters()).device
        self.schedule = plan_schedule(self.samples, run_order, budget, unit="tokens", packed=pack)
        self.settings = StepSettings(per_domain=per_domain, surgery=surgery, granularity=granularity, method=method,
                                     compile=args.compile_forward, pack=pack,
                                     buffer_dtype=BUFFER_DTYPES[args.buffer_dtype], family=family, seed=args.seed)
        self.optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr,
                                           weight_decay=0.0, fused=True if self.device.type == "cuda" else None)
        self.rows: list[dict[str, float]] = []
        self.peak_extra: float | None = None

    def run_once(self, rep: int, record: bool) -> None:
        cuda = self.device.type == "cuda"
        if cuda:
            sync(self.device)
            base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        t0 = time.perf_counter()
        outcome = update(self.model, self.optimizer, self.samples, self.schedule, self.settings, step=rep + 1,
                         pad_id=self.pad_id)
        sync(self.device)
        dt = time.perf_counter() - t0
        if cuda:
            extra = (torch.cuda.max_memory_allocated(self.device) - base) / 1e9
            self.peak_extra = extra if self.peak_extra is None else max(self.peak_extra, extra)
        if record:
            m = outcome.metrics
            self.rows.append({"update_s": dt, "train_s": m["time/train_s"], "surgery_s": m["time/surgery_s"],
                              "optim_s": m["time/optim_s"], "skipped": m["train/skipped"],
                              "buffers_gb": m.get("mem/domain_buffers_gb", 0.0)})

    def result(self) -> dict[str, Any]:
        rows = self.rows
        med = {k: statistics.median(r[k] for r in rows) for k in ("update_s", "train_s", "surgery_s", "optim_s")}
        fwd_tokens = sum(forward_tokens([len(self.samples[i].prompt_ids) + len(self.samples[i].completion_ids)
                                              for i in mb.indices], self.pack) for mb in self.schedule.micro_batches)
        return {"variant": self.label, "kind": self.name, "budget": self.budget, "pack": self.pack,
                "micro_batches": len(self.schedule.micro_batches), "forward_tokens": fwd_tokens, "rows": rows, **med,
                "update_s_min": min(r["update_s"] for r in rows), **_quartiles([r["update_s"] for r in rows]),
                "buffers_gb": rows[-1]["buffers_gb"],
                "peak_update_gb": self.peak_extra}


def _quartiles(update_s: list[float]) -> dict[str, float]:
    """The middle half of the timed updates (a host that jitters widens it: on 2026-12-02 the same code gave MGS a
    +2.9% median on one H200 host and +17.7% on another, with floors within 2.3% on both)."""
    if len(update_s) < 2:
        return {"update_s_q25": update_s[0], "update_s_q75": update_s[0]}
    q25, _, q75 = statistics.quantiles(update_s, n=4, method="inclusive")
    return {"update_s_q25": q25, "update_s_q75": q75}


def profile_update(variant: "Variant", rep: int, top: int = 8) -> dict[str, Any]:
    """One update of `variant` under torch.profiler: where its time goes. On 2026-12-01 (H200) every extra micro-batch
    cost ~60 ms at a fixed token count (mixed: 5 micro-batches 509 ms, 3 micro-batches 401 ms), which is most of
    MGS's overhead (it needs >= D micro-batches). GPU kernel time well below the wall time means launch- or
    sync-bound; the host-sync count says how often the CPU waited for the GPU."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = variant.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    sync(variant.device)
    t0 = time.perf_counter()
    with profile(activities=activities) as prof:
        variant.run_once(rep, record=False)
    wall_ms = 1000 * (time.perf_counter() - t0)
    events = prof.key_averages()

    def device_us(e) -> float:
        return float(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0)))

    kernels = [e for e in events if e.device_type == DeviceType.CUDA]
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC",
                                                          "cudaGraphLaunch"))
    syncs = sum(e.count for e in events if e.key in ("cudaStreamSynchronize", "cudaDeviceSynchronize",
                                                       "cudaEventSynchronize"))
    memcpy = sum(e.count for e in events if e.key in ("cudaMemcpyAsync", "cudaMemcpy"))
    key = device_us if cuda else (lambda e: float(e.self_cpu_time_total))
    ranked = sorted((e for e in (kernels if cuda else events)), key=key, reverse=True)[:top]
    return {"variant": variant.label, "micro_batches": len(variant.schedule.micro_batches), "wall_ms": wall_ms,
            "gpu_kernel_ms": sum(device_us(e) for e in kernels) / 1000, "kernel_launches": launches,
            "host_syncs": syncs, "memcpy_calls": memcpy,
            "top": [{"name": e.key[:80], "count": e.count, "ms": key(e) / 1000} for e in ranked]}


def bookkeeping_ms(params: list[torch.nn.Parameter], domains: int, buffer_dtype: torch.dtype, reps: int) -> dict:
    """The step's norm/finite bookkeeping on this model's shapes, two ways (median ms):
    per_tensor = what mgs.rl.step did before commit ac9d36c (one `float()` host sync per tensor and domain for the
    per-domain squared norms, `isfinite(t).all()` per buffer, one `float()` per tensor for the grad norm);
    batched = what it did from ac9d36c to session 3 (`_sq_norms` over the buffers): per-tensor norms stacked on the
    device, read back once. Since session 3 the step takes the per-domain norms from the surgery's Gramian
    diagonals (no pass at all); only the grad norm after the combine still runs the batched form."""
    device = params[0].device
    buffers = [torch.randn((domains, *p.shape), device=device).to(buffer_dtype or p.dtype) for p in params]
    grads = [torch.randn_like(p) for p in params]

    def per_tensor():
        sq = [sum(float(b[d].float().pow(2).sum()) for b in buffers) for d in range(domains)]
        ok = all(bool(torch.isfinite(b).all()) for b in buffers)
        gsq = sum(float(g.float().pow(2).sum()) for g in grads)
        return sq, ok, gsq

    def batched():
        norms = torch.stack([torch.linalg.vector_norm(b.reshape(domains, -1), dim=1, dtype=torch.float32)
                             for b in buffers])  # [P, D]
        sq = norms.double().pow(2).sum(0).tolist()
        gsq = float(torch.stack([torch.linalg.vector_norm(g, dtype=torch.float32) for g in grads]).double()
                    .pow(2).sum())
        return sq, all(map(math.isfinite, sq)), gsq

    out = {}
    for name, fn in (("per_tensor", per_tensor), ("batched", batched)):
        times = []
        for _ in range(reps + 1):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - t0)
        out[name] = 1000 * statistics.median(times[1:])
    del buffers, grads
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="tiny", help="'tiny' (random 2-layer Llama) or a policy alias / directory")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16"],
                    help="default: bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--domains", type=int, default=3, help=f"D (at most {len(DOMAIN_NAMES)})")
    ap.add_argument("--per-domain", type=int, default=64, help="samples per domain (e.g. 8 prompts x G=8)")
    ap.add_argument("--prompt-tokens", default="60,160", help="min,max prompt length")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--micro-batch-tokens", default=None,
                    help="comma list of padded-token budgets, each variant runs at each (its best is the one that "
                         "counts); default 32768 on CUDA, 4096 on CPU")
    ap.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                    help="torch.compile the training forward as the trainer's train.compile (auto = on CUDA)")
    ap.add_argument("--pack", default="auto",
                    help="comma list of auto/on/off: packed (padding-free) micro-batches as the trainer's train.pack "
                         "(auto = on CUDA in fp16/bf16 with torch's varlen attention); each variant runs at each")
    ap.add_argument("--buffer-dtype", default="param", choices=list(BUFFER_DTYPES),
                    help="param = the model's dtype (in place, (D-1) extra gradients); others copy (D + 1)")
    ap.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list from {list(VARIANTS)}")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--time-budget", type=float, default=None,
                    help="seconds for the timed reps (all variants); stop after the round that crosses it")
    ap.add_argument("--profile", action="store_true",
                    help="after the timed reps, profile one update of each variant (torch.profiler): GPU kernel time "
                         "vs wall, kernel launches, host syncs, top kernels")
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="JSON file for the raw numbers")
    args = ap.parse_args(argv)
    if not 1 <= args.domains <= len(DOMAIN_NAMES):
        raise SystemExit(f"--domains must be in 1..{len(DOMAIN_NAMES)}")
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        raise SystemExit(f"unknown variants {sorted(unknown)}; choose from {list(VARIANTS)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    budgets = [int(x) for x in str(args.micro_batch_tokens or (32768 if args.device.startswith("cuda") else 4096)).split(",")]
    args.compile_forward = {"on": True, "off": False, "auto": args.device.startswith("cuda")}[args.compile]

    from mgs.rl.model import build_tiny_policy, load_policy

    if args.model == "tiny":
        policy = build_tiny_policy("llama", seed=args.seed, dtype=args.dtype, device=args.device)
    else:
        policy = load_policy(args.model, dtype=args.dtype, device=args.device)
    model = policy.model
    model.eval()  # as the trainer: no dropout
    packs = list(dict.fromkeys(resolve_pack(x.strip(), model, distributed=False) for x in args.pack.split(",")))
    device = next(model.parameters()).device
    lo, hi = (int(x) for x in args.prompt_tokens.split(","))
    vocab = model.get_input_embeddings().num_embeddings
    samples = fixed_rollouts(vocab, args.domains, args.per_domain, (lo, hi), args.max_new_tokens, args.seed)
    order = list(DOMAIN_NAMES[: args.domains])
    family = getattr(model.config, "model_type", None)
    params = [p for p in model.parameters() if p.requires_grad]
    numel = sum(p.numel() for p in params)
    grad_gb = sum(p.numel() * p.element_size() for p in params) / 1e9
    in_place = BUFFER_DTYPES[args.buffer_dtype] in (None, params[0].dtype)
    buffer_gb = grad_gb if BUFFER_DTYPES[args.buffer_dtype] is None else (
        numel * torch.tensor([], dtype=BUFFER_DTYPES[args.buffer_dtype]).element_size() / 1e9)
    expected_extra_gb = (args.domains - 1) * grad_gb if in_place else args.domains * buffer_gb
    tokens = sum(len(s.prompt_ids) + len(s.completion_ids) for s in samples)

    # Round-robin over the variants (rep 1 of each, rep 2 of each, ...): load drift hits all variants alike.
    def label(name: str, budget: int, pack: bool) -> str:
        at = "" if len(budgets) == 1 else f"@{budget // 1024}k" if budget >= 1024 else f"@{budget}"
        return f"{name}{at}{'+pack' if pack and len(packs) > 1 else ''}"

    variants = [Variant(name, model, samples, order, args, policy.tokenizer.pad_token_id, family, budget,
                        label(name, budget, pack), pack)
                for pack in packs for budget in budgets for name in args.variants.split(",")]
    t_timed = None
    for rep in range(args.warmup + args.reps):
        if rep == args.warmup:
            t_timed = time.perf_counter()
        for v in variants:
            v.run_once(rep, record=rep >= args.warmup)
        if t_timed is not None and args.time_budget and time.perf_counter() - t_timed > args.time_budget:
            print(f"time budget {args.time_budget} s reached after {rep + 1 - args.warmup} timed reps", flush=True)
            break
        print(f"rep {rep + 1}/{args.warmup + args.reps} done", flush=True)
    args.reps = len(variants[0].rows)
    results = [v.result() for v in variants]
    profiles = [profile_update(v, args.warmup + args.reps) for v in variants] if args.profile else []
    for res in results:
        print(f"[{res['variant']}] update {res['update_s'] * 1000:.1f} ms (surgery {res['surgery_s'] * 1000:.2f} ms)")

    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print()
    print(f"model: {policy.note} ({args.dtype}, {numel / 1e6:.1f}M trainable) on {dev_name}; D={args.domains} x "
          f"{args.per_domain} samples ({tokens} tokens), micro-batches <= {'/'.join(map(str, budgets))} tokens (padded; "
          f"real when packed), packed {'/'.join(map(str, packs))}, compiled forward {args.compile_forward}, buffers "
          f"{args.buffer_dtype}; median of {args.reps} updates after {args.warmup} warm-up")
    bases = {pack: min((r for r in results if r["kind"] == "mixed" and r["pack"] == pack),
                       key=lambda r: r["update_s"], default=None) for pack in packs}
    print(f"{'variant':<22}{'mbs':>5}{'fwd tokens':>11}{'update ms':>11}{'vs mixed':>10}{'min ms':>9}{'q25-q75 ms':>14}"
          f"{'train ms':>10}"
          f"{'surgery ms':>12}{'optim ms':>10}{'peak GB':>9}{'+GB':>8}{'buffers GB':>12}")
    for r in results:
        base = bases[r["pack"]]
        rel = f"{100 * (r['update_s'] / base['update_s'] - 1):+.1f}%" if base else "-"
        peak = "-" if r["peak_update_gb"] is None else f"{r['peak_update_gb']:.3f}"
        extra = ("-" if r["peak_update_gb"] is None or not base or base["peak_update_gb"] is None
                 else f"{r['peak_update_gb'] - base['peak_update_gb']:+.3f}")
        iqr = f"{1000 * r['update_s_q25']:.0f}-{1000 * r['update_s_q75']:.0f}"
        print(f"{r['variant']:<22}{r['micro_batches']:>5}{r['forward_tokens']:>11}{1000 * r['update_s']:>11.1f}{rel:>10}"
              f"{1000 * r['update_s_min']:>9.1f}{iqr:>14}{1000 * r['train_s']:>10.1f}{1000 * r['surgery_s']:>12.2f}"
              f"{1000 * r['optim_s']:>10.1f}{peak:>9}"
              f"{extra:>8}{r['buffers_gb']:>12.3f}")
    for pack, base in bases.items():
        if base is None or (len(budgets) == 1 and len(packs) == 1):
            continue
        for kind in dict.fromkeys(r["kind"] for r in results):
            best = min((r for r in results if r["kind"] == kind and r["pack"] == pack), key=lambda r: r["update_s"])
            print(f"best {kind}{' packed' if pack else ''}: {best['variant']} {1000 * best['update_s']:.1f} ms "
                  f"({100 * (best['update_s'] / base['update_s'] - 1):+.1f}% vs the best mixed, {base['variant']})")
    mixed_rows = [r for r in results if r["kind"] == "mixed"]
    if len(packs) > 1 and mixed_rows:  # the comparison: each side at its best batching, packed or not
        base = min(mixed_rows, key=lambda r: r["update_s"])
        floor_base = min(mixed_rows, key=lambda r: r["update_s_min"])
        for kind in dict.fromkeys(r["kind"] for r in results if r["kind"] != "mixed"):
            best = min((r for r in results if r["kind"] == kind), key=lambda r: r["update_s"])
            floor = min((r for r in results if r["kind"] == kind), key=lambda r: r["update_s_min"])
            print(f"best {kind} overall (padded or packed): {best['variant']} {1000 * best['update_s']:.1f} ms "
                  f"({100 * (best['update_s'] / base['update_s'] - 1):+.1f}% vs the best mixed overall, "
                  f"{base['variant']} {1000 * base['update_s']:.1f} ms); floors (fastest single update): "
                  f"{floor['variant']} {1000 * floor['update_s_min']:.1f} ms vs {floor_base['variant']} "
                  f"{1000 * floor_base['update_s_min']:.1f} ms, "
                  f"{100 * (floor['update_s_min'] / floor_base['update_s_min'] - 1):+.1f}%")
    book = bookkeeping_ms(params, args.domains, BUFFER_DTYPES[args.buffer_dtype], reps=5)
    print(f"norm/finite bookkeeping of one MGS step (D={args.domains}, {len(params)} tensors): per-tensor host syncs "
          f"(before ac9d36c) {book['per_tensor']:.1f} ms, batched on device (now) {book['batched']:.1f} ms")
    how = ("in place: D buffers, row 0 becomes .grad" if in_place
           else f"copy: D {args.buffer_dtype} buffers + the combined .grad")
    print(f"expected extra memory of MGS ({how}): {expected_extra_gb:.3f} GB; target (D-1) gradients = "
          f"{args.domains - 1} x {grad_gb:.3f} GB = {(args.domains - 1) * grad_gb:.3f} GB "
          f"(one gradient in the model dtype: {grad_gb:.3f} GB)")
    print("peak GB = peak allocated during one update minus what was allocated before it (CUDA only); "
          "vs mixed = median update time relative to Mixed RL's; min / q25-q75 = the fastest update and the middle "
          "half (a wide middle half = a host that jitters: compare medians on one run only); surgery = Gramians + "
          "weights + combine (+ per-domain norms)")
    for prof in profiles:
        print(f"profile {prof['variant']}: {prof['micro_batches']} micro-batches, wall {prof['wall_ms']:.1f} ms "
              f"(profiled), GPU kernels {prof['gpu_kernel_ms']:.1f} ms, {prof['kernel_launches']} launches, "
              f"{prof['host_syncs']} host syncs, {prof['memcpy_calls']} memcpy calls; top: "
              + "; ".join(f"{t['name']} x{t['count']} {t['ms']:.1f} ms" for t in prof["top"]))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "settings": {k: v for k, v in vars(args).items() if k != "out"}, "device": dev_name,
            "model_note": policy.note, "numel": numel, "grad_gb": grad_gb, "buffer_gb": buffer_gb, "tokens": tokens,
            "expected_extra_gb": expected_extra_gb, "in_place": in_place, "target_extra_gb": (args.domains - 1) * grad_gb,
            "bookkeeping_ms": book, "results": results, "profiles": profiles}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
