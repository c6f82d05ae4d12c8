"""Benchmark of mgs.surgery as a trainer calls it, on gradients shaped like Qwen2.5-7B.

Per step the trainer holds one pre-stacked buffer per parameter, [D, *param.shape], and calls
`local_gramians` -> `weights` -> `combine(..., out=param_grads)`. This script times exactly that (median of
`--iters` synchronised runs after warm-up) for D = 2 and 3, fp32 and bf16 buffers, `sum` and `pcgrad`,
`module` and `tensor` granularity, and compares with the floor of any two-pass algorithm: (2D + 1) x one domain's
gradient bytes (read D buffers for the Gramians; read D buffers + write one gradient for the combine) over the
device's copy bandwidth, measured here with a large tensor copy.

    python benchmarks/bench_surgery.py --device cuda --layers 28 --iters 3
    python benchmarks/bench_surgery.py --device cpu --layers 2
    python benchmarks/bench_surgery.py --phases --device cuda   # fixed per-step cost of one resolve, per phase

Implementations (`--impl`, the `impl` column): torch, triton, auto (what the library picks). Default: both
torch and triton where Triton runs on the device (CUDA), else auto. Per (D, dtype) it also prints the error of
every implementation's Gramians and combined gradients against a float64 computation of the same buffers, and
at the end, on CUDA with Triton, a short sweep of the kernels' launch configurations on one
embedding-sized bf16 tensor (`--no-sweep`).

Shapes: hidden 3584, intermediate 18944, 28 query / 4 KV heads (head dim 128, q/k/v biases), vocab 152064,
untied embedding and LM head. When the buffers of a configuration would not fit in `--max-gb` (default: 85% of
free GPU memory, 50% of available RAM on CPU), fewer layers (then a smaller vocabulary) are used and the table says so.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mgs.surgery import StackedGrads, combine, kernels, local_gramians, partition, weights
from mgs.surgery.gramian import GRAM_CHUNK_COLUMNS, choose_impl

HIDDEN, INTERMEDIATE, HEADS, KV_HEADS, VOCAB = 3584, 18944, 28, 4, 152064


def qwen25_7b_shapes(layers: int, vocab: int) -> dict[str, tuple[int, ...]]:
    head_dim = HIDDEN // HEADS
    kv = KV_HEADS * head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, HIDDEN)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "self_attn.q_proj.weight": (HIDDEN, HIDDEN),
                p + "self_attn.q_proj.bias": (HIDDEN,),
                p + "self_attn.k_proj.weight": (kv, HIDDEN),
                p + "self_attn.k_proj.bias": (kv,),
                p + "self_attn.v_proj.weight": (kv, HIDDEN),
                p + "self_attn.v_proj.bias": (kv,),
                p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
                p + "mlp.gate_proj.weight": (INTERMEDIATE, HIDDEN),
                p + "mlp.up_proj.weight": (INTERMEDIATE, HIDDEN),
                p + "mlp.down_proj.weight": (HIDDEN, INTERMEDIATE),
                p + "input_layernorm.weight": (HIDDEN,),
                p + "post_attention_layernorm.weight": (HIDDEN,),
            }
        )
    shapes.update({"model.norm.weight": (HIDDEN,), "lm_head.weight": (vocab, HIDDEN)})
    return shapes


def numel(shapes: dict[str, tuple[int, ...]]) -> int:
    total = 0
    for shape in shapes.values():
        n = 1
        for s in shape:
            n *= s
        total += n
    return total


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def copy_bandwidth_gbs(device: torch.device, gb: float, iters: int) -> float:
    """Bytes moved (read + write) per second by a large tensor copy."""
    n = int(gb * 1e9 / 4)
    src = torch.ones(n, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    median = statistics.median(timed(lambda: dst.copy_(src), device, warmup=2, iters=iters))
    del src, dst
    return 2 * n * 4 / median / 1e9


def memory_budget_gb(device: torch.device) -> float:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return 0.85 * free / 1e9
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) for line in f}
    return 0.5 * info["MemAvailable"] * 1024 / 1e9


def fit(layers: int, vocab: int, num_domains: int, element_bytes: int, budget_gb: float) -> tuple[int, int]:
    """(layers, vocab) whose D buffers + one output gradient fit the budget: fewer layers first (down to 1),
    then a halved vocabulary; (0, 0) if nothing fits."""

    def gb(lay: int, voc: int) -> float:
        return (num_domains + 1) * numel(qwen25_7b_shapes(lay, voc)) * element_bytes / 1e9

    while layers > 1 and gb(layers, vocab) > budget_gb:
        layers -= 1
    while vocab > 1024 and gb(layers, vocab) > budget_gb:
        vocab //= 2
    return (layers, vocab) if gb(layers, vocab) <= budget_gb else (0, 0)


FP64_CHUNK_COLUMNS = 1 << 24


def _fp64_gram(rows: torch.Tensor) -> torch.Tensor:
    """rows [D, n] @ rows.T in float64, converting 16M columns at a time (no full fp64 copy)."""
    total = torch.zeros(rows.shape[0], rows.shape[0], dtype=torch.float64, device=rows.device)
    for part in rows.split(FP64_CHUNK_COLUMNS, dim=1):
        wide = part.double()
        total += wide @ wide.T
    return total


def check_against_fp64(stacked, shapes, out, domains, impl: str, label: str, exact_cache: dict,
                       max_combine_tensors: int = 16) -> str:
    """Max relative error of `impl`'s module Gramians (per group, against its largest entry) and of its
    combined gradients (first tensors + LM head, against the largest |c_i g_i| term) vs float64."""
    groups = partition(list(shapes), "module")
    grams = local_gramians(stacked, groups, impl=impl).double()
    gram_err = 0.0
    if "grams" not in exact_cache:  # once per set of buffers, shared by the implementations
        exact_cache["grams"] = [sum(_fp64_gram(stacked.tensors[n].reshape(len(domains), -1)) for n in names)
                                for names in groups.values()]
    exact_grams = exact_cache["grams"]
    for index, exact in enumerate(exact_grams):
        gram_err = max(gram_err, float((grams[index] - exact).abs().max() / exact.abs().max().clamp_min(1e-300)))
    coeffs = weights(torch.stack(exact_grams), "pcgrad", seed=0, step=1).coeffs
    combine(stacked, groups, coeffs, out=out, impl=impl)
    group_of = {n: g for g, names in enumerate(groups.values()) for n in names}
    names = list(dict.fromkeys(list(shapes)[:max_combine_tensors] + ["lm_head.weight"]))
    combine_err = 0.0
    for name in names:
        rows = stacked.tensors[name].reshape(len(domains), -1)
        c = coeffs[group_of[name]].to(rows.device)
        got = out[name].reshape(-1)
        for start in range(0, rows.shape[1], FP64_CHUNK_COLUMNS):
            part = rows[:, start : start + FP64_CHUNK_COLUMNS].double()
            exact = c @ part
            scale = (c.abs()[:, None] * part.abs()).max().clamp_min(1e-300)
            err = (got[start : start + FP64_CHUNK_COLUMNS].double() - exact).abs().max() / scale
            combine_err = max(combine_err, float(err))
    return (f"| check vs float64 | impl {label} | Gramian max rel err {gram_err:.2e} | combine max rel err "
            f"{combine_err:.2e} |")


def sweep_triton(device, num_domains: int = 2, n: int = VOCAB * HIDDEN) -> str:
    """GB/s of the Triton Gramian and combine on one embedding-sized bf16 tensor [D, n] for a few launch
    configurations (each new tile size / warp count is one more compilation, so the list is short)."""
    gen = torch.Generator(device=device).manual_seed(1)
    rows = torch.randn(num_domains, n, generator=gen, device=device, dtype=torch.bfloat16)
    target = torch.empty(n, device=device, dtype=torch.bfloat16)
    coeffs = torch.ones(1, num_domains, dtype=torch.float32, device=device)
    element = rows.element_size()
    lines = [f"| sweep | Triton on [{num_domains}, {n}] bf16 | GB/s; Gramian: D rows read; combine: D read + 1 write |"]
    gram_configs = [(4096, 16, 8), (2048, 16, 8), (8192, 16, 8), (4096, 4, 8), (4096, 64, 8), (4096, 16, 4)]
    for tile, per_program, warps in gram_configs:
        config = kernels.LaunchConfig(gram_tile_elements=tile, gram_tiles_per_program=per_program, gram_warps=warps)
        label = f"| sweep | gram tile {tile} tiles/program {per_program} warps {warps}"
        try:
            t = statistics.median(timed(lambda: kernels.gramians_triton([[rows]], num_domains, device, config),
                                        device, warmup=1, iters=5))
            lines.append(f"{label} | {num_domains * n * element / t / 1e9:.0f} GB/s |")
        except Exception as error:  # a configuration the compiler rejects: report, go on
            lines.append(f"{label} | failed ({error!r:.120}) |")
    for columns, warps in [(2048, 8), (1024, 4), (4096, 8), (8192, 8), (2048, 4)]:
        config = kernels.LaunchConfig(combine_columns=columns, combine_warps=warps)
        label = f"| sweep | combine columns {columns} warps {warps}"
        try:
            t = statistics.median(timed(lambda: kernels.combine_triton(rows, coeffs, 0, target, config),
                                        device, warmup=1, iters=5))
            lines.append(f"{label} | {(num_domains + 1) * n * element / t / 1e9:.0f} GB/s |")
        except Exception as error:
            lines.append(f"{label} | failed ({error!r:.120}) |")
    del rows, target
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# --phases: the fixed per-step overhead of one `resolve` on SmolLM2-135M-shaped buffers (issue 7).

SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True)


def smollm2_135m_shapes() -> dict[str, tuple[int, ...]]:
    """Names and shapes of SmolLM2-135M's trainable tensors, from its config (a meta-device model: no weights)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(LlamaConfig(**SMOLLM2_135M))
    return {name: tuple(p.shape) for name, p in model.named_parameters()}


class OpCounter:
    """Counts the aten ops dispatched inside (every tensor op, whatever the device), and among them the reads
    from a device to the host (`_local_scalar_dense` of a device tensor, copies from a device to the CPU: each
    one a host sync; always 0 on CPU)."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        counter = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                counter.ops += 1
                name = func.__name__
                if name.startswith("_local_scalar_dense"):
                    counter.syncs += args[0].device.type != "cpu"
                elif name.startswith(("_to_copy", "copy_")):
                    src = args[1] if name.startswith("copy_") else args[0]
                    dst = args[0].device if name.startswith("copy_") else kwargs.get("device")
                    if isinstance(src, torch.Tensor) and src.device.type != "cpu" and dst is not None \
                            and torch.device(dst).type == "cpu":
                        counter.syncs += 1
                return func(*args, **kwargs)

        self.ops = 0
        self.syncs = 0
        self._mode = _Mode()

    def __enter__(self) -> "OpCounter":
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)


def kernel_launches(fn, device: torch.device) -> int | None:
    """CUDA kernels launched by one call of `fn` (torch.profiler; Triton launches included), None off CUDA."""
    if device.type != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    try:
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            fn()
            sync(device)
        return sum(1 for e in prof.events() if "LaunchKernel" in e.name)  # cuda* and cu* (Triton) launches
    except Exception:  # a profiler that can't start here: the table shows "-"
        return None


def phase_times(stacked, names, granularity: str, method: str, out, device, impl: str) -> dict[str, float]:
    """One resolve's work split into its phases as resolve runs them, each synchronised (seconds): partition
    (memoised where the library has `cached_partition`), gramians, weights (with the one device -> host read of
    the Gramians), stats (building SurgeryStats), summary (what the trainer reads each step), combine."""
    from mgs.surgery import SurgeryStats

    try:
        from mgs.surgery.partition import cached_partition as grouping
    except ImportError:  # a library from before the memo (to compare against it)
        grouping = partition
    t0 = time.perf_counter()
    groups = grouping(names, granularity)
    t1 = time.perf_counter()
    grams = local_gramians(stacked, groups, impl=impl)
    sync(device)
    t2 = time.perf_counter()
    cpu_grams = grams.detach().to("cpu", torch.float64)
    result = weights(cpu_grams, method=method, seed=0, step=1)
    t3 = time.perf_counter()
    stats = SurgeryStats(domains=stacked.domains, group_names=list(groups), gramians=cpu_grams, weights=result,
                         method=method, granularity=granularity, seed=0, step=1,
                         numels=[sum(stacked.tensors[n][0].numel() for n in m) for m in groups.values()])
    t4 = time.perf_counter()
    stats.summary()
    t5 = time.perf_counter()
    combine(stacked, groups, result.coeffs, out=out, impl=impl)
    sync(device)
    t6 = time.perf_counter()
    return {"partition": t1 - t0, "gramians": t2 - t1, "weights": t3 - t2, "stats": t4 - t3, "summary": t5 - t4,
            "combine": t6 - t5}


def to_dict_ms(stacked, granularity: str, method: str) -> float:
    """ms of `stats.to_dict()` (what the trainer writes to surgery/step_*.json every step, on rank 0)."""
    from mgs.surgery import resolve

    _, stats = resolve(stacked, granularity=granularity, method=method, seed=0, step=1)
    start = time.perf_counter()
    stats.to_dict()
    return 1e3 * (time.perf_counter() - start)


def run_phases(args, device: torch.device) -> None:
    """Per-phase ms of resolve on SmolLM2-135M-shaped stacked buffers, real size and tiny (same names, 4 columns
    per tensor: what is left is the fixed per-step cost), plus the end-to-end resolve (with its stats summary),
    the number of aten ops / host syncs / CUDA kernel launches one resolve issues, and the ms of to_dict."""
    from mgs.surgery import resolve

    shapes = smollm2_135m_shapes()
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"phases: SmolLM2-135M shapes ({len(shapes)} tensors, {numel(shapes) / 1e6:.1f}M params), D={args.phase_domains}, "
          f"device {name}, torch {torch.__version__}; median ms of {args.iters} after {args.warmup} warm-up")
    header = ("| size | dtype | impl | granularity | method | groups | partition | gramians | weights | stats | summary "
              "| combine | sum of phases | resolve+summary | aten ops | host syncs | kernel launches | to_dict |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    domains = [f"d{i}" for i in range(args.phase_domains)]
    for size in args.phase_sizes:
        for dtype_name in args.dtypes:
            dtype = dtypes[dtype_name]
            gen = torch.Generator(device=device).manual_seed(0)
            tensors = {}
            for n, s in shapes.items():
                shape = (len(domains), *s) if size == "real" else (len(domains), 4)
                tensors[n] = torch.randn(shape, generator=gen, device=device, dtype=dtype)
            stacked = StackedGrads(domains, tensors)
            names = list(tensors)
            out = {n: torch.empty(t.shape[1:], device=device, dtype=dtype) for n, t in tensors.items()}
            impl = choose_impl(stacked, domains, args.impl[0] if args.impl else "auto")
            for granularity in args.granularities:
                for method in args.methods:
                    runs = [phase_times(stacked, names, granularity, method, out, device, impl)
                            for _ in range(args.warmup + args.iters)][args.warmup:]
                    ms = {k: 1e3 * statistics.median(r[k] for r in runs) for k in runs[0]}

                    def whole() -> None:
                        _, stats = resolve(stacked, granularity=granularity, method=method, seed=0, step=1, out=out,
                                           impl=impl)
                        stats.summary()

                    total_ms = 1e3 * statistics.median(timed(whole, device, args.warmup, args.iters))
                    with OpCounter() as counter:
                        whole()
                    launches = kernel_launches(whole, device)
                    groups = len(partition(names, granularity))
                    dict_ms = statistics.median(to_dict_ms(stacked, granularity, method) for _ in range(3))
                    print(f"| {size} | {dtype_name} | {impl} | {granularity} | {method} | {groups} "
                          + "".join(f"| {ms[k]:.2f} " for k in ms)
                          + f"| {sum(ms.values()):.2f} | {total_ms:.2f} | {counter.ops} | {counter.syncs} "
                          f"| {'-' if launches is None else launches} | {dict_ms:.1f} |", flush=True)
            del stacked, tensors, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--layers", type=int, default=28, help="decoder layers (plus embeddings and LM head)")
    parser.add_argument("--vocab", type=int, default=VOCAB, help="vocabulary size (shrink only to fit small machines)")
    parser.add_argument("--domains", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    parser.add_argument("--methods", nargs="+", default=["sum", "pcgrad"])
    parser.add_argument("--granularities", nargs="+", default=["module", "tensor"])
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--max-gb", type=float, default=None, help="memory for buffers + output (default: see above)")
    parser.add_argument("--gram-chunk", type=int, default=GRAM_CHUNK_COLUMNS,
                        help="column block of the batched Gramian (0 = one plain matmul per tensor)")
    parser.add_argument("--impl", nargs="+", default=None, choices=["auto", "torch", "triton"],
                        help="implementations to time (default: torch and triton where Triton runs, else auto)")
    parser.add_argument("--sweep", action=argparse.BooleanOptionalAction, default=None,
                        help="time the Triton kernels' launch configurations on the largest tensor (default: on CUDA)")
    parser.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                        help="errors against float64 per (D, dtype)")
    parser.add_argument("--batch-below", type=int, default=None,
                        help="Triton: tensors with fewer columns share one table launch (default: kernels.CONFIG)")
    parser.add_argument("--phases", action="store_true",
                        help="instead: per-phase ms, aten ops and host syncs of one resolve on SmolLM2-135M shapes")
    parser.add_argument("--phase-sizes", nargs="+", default=["real", "tiny"], choices=["real", "tiny"],
                        help="--phases: real tensor sizes and/or 4 columns per tensor (the fixed cost alone)")
    parser.add_argument("--phase-domains", type=int, default=3, help="--phases: number of domains")
    args = parser.parse_args()
    if args.batch_below is not None:
        kernels.CONFIG.batch_below = args.batch_below

    device = torch.device(args.device)
    if args.phases:
        run_phases(args, device)
        return
    triton_here = device.type == "cuda" and kernels.available(device)
    impls = args.impl or (["triton", "torch"] if triton_here else ["auto"])
    sweep = triton_here if args.sweep is None else args.sweep
    budget_gb = args.max_gb if args.max_gb is not None else memory_budget_gb(device)
    copy_gb = min(4.0, budget_gb / 4) if device.type == "cuda" else min(1.0, budget_gb / 4)
    bandwidth = copy_bandwidth_gbs(device, copy_gb, iters=max(args.iters, 10))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; copy bandwidth {bandwidth:.1f} GB/s (read+write); "
          f"memory budget {budget_gb:.1f} GB; median of {args.iters} after {args.warmup} warm-up; "
          f"Gramian column block {args.gram_chunk} (torch impl); Triton "
          f"{getattr(kernels.triton, '__version__', 'not installed')}, launch config {kernels.CONFIG}")
    header = ("| D | dtype | layers | vocab | params (M) | impl | granularity | method | groups | gram ms | weights ms | combine ms "
              "| total ms | GB/s | floor ms | x floor |")
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    for num_domains in args.domains:
        for dtype_name in args.dtypes:
            dtype = dtypes[dtype_name]
            element_bytes = torch.empty((), dtype=dtype).element_size()
            layers, vocab = fit(args.layers, args.vocab, num_domains, element_bytes, budget_gb)
            if layers == 0:
                print(f"| {num_domains} | {dtype_name} | - | does not fit in {budget_gb:.1f} GB |")
                continue
            shapes = qwen25_7b_shapes(layers, vocab)
            domains = [f"d{i}" for i in range(num_domains)]
            gen = torch.Generator(device=device).manual_seed(0)
            stacked = StackedGrads(
                domains,
                {n: torch.randn((num_domains, *s), generator=gen, device=device, dtype=dtype) for n, s in shapes.items()},
            )
            out = {n: torch.empty(s, device=device, dtype=dtype) for n, s in shapes.items()}
            params = numel(shapes)
            grad_bytes = params * element_bytes
            floor_s = (2 * num_domains + 1) * grad_bytes / (bandwidth * 1e9)
            rows_printed = []
            exact_cache: dict = {}
            for impl in impls:
                chosen = choose_impl(stacked, domains, impl)
                label = impl if impl == chosen else f"{impl}:{chosen}"
                for granularity in args.granularities:
                    groups = partition(list(shapes), granularity)
                    for method in args.methods:
                        phases: dict[str, list[float]] = {"gram": [], "weights": [], "combine": []}

                        def step() -> None:
                            t0 = time.perf_counter()
                            grams = local_gramians(stacked, groups, chunk_columns=args.gram_chunk, impl=chosen)
                            sync(device)
                            t1 = time.perf_counter()
                            result = weights(grams, method=method, seed=0, step=1)
                            t2 = time.perf_counter()
                            combine(stacked, groups, result.coeffs, out=out, impl=chosen)
                            sync(device)
                            t3 = time.perf_counter()
                            for key, value in zip(phases, (t1 - t0, t2 - t1, t3 - t2)):
                                phases[key].append(value)

                        try:
                            totals = timed(step, device, args.warmup, args.iters)
                        except Exception as error:  # e.g. a Triton kernel that does not compile: report, go on
                            print(f"| {num_domains} | {dtype_name} | {layers} | {vocab} | {params / 1e6:.0f} | {label} "
                                  f"| {granularity} | {method} | {len(groups)} | failed: {error!r:.300} |", flush=True)
                            continue
                        total = statistics.median(totals)
                        ms = {k: 1e3 * statistics.median(v[args.warmup:]) for k, v in phases.items()}
                        moved_gb = (2 * num_domains + 1) * grad_bytes / 1e9
                        print(
                            f"| {num_domains} | {dtype_name} | {layers} | {vocab} | {params / 1e6:.0f} | {label} "
                            f"| {granularity} | {method} | {len(groups)} | {ms['gram']:.1f} | {ms['weights']:.1f} "
                            f"| {ms['combine']:.1f} | {1e3 * total:.1f} | {moved_gb / total:.1f} | {1e3 * floor_s:.1f} "
                            f"| {total / floor_s:.2f} |",
                            flush=True,
                        )
                if args.check:
                    try:
                        rows_printed.append(check_against_fp64(stacked, shapes, out, domains, chosen, label, exact_cache))
                    except Exception as error:
                        rows_printed.append(f"| check vs float64 | impl {label} | failed ({error!r:.300}) |")
            for line in rows_printed:
                print(line, flush=True)
            del stacked, out, exact_cache
            if device.type == "cuda":
                torch.cuda.empty_cache()
    if sweep:  # last, so a time limit cuts only this
        try:
            print(sweep_triton(device), flush=True)
        except Exception as error:
            print(f"| sweep | failed ({error!r:.300}) |", flush=True)


if __name__ == "__main__":
    main()
