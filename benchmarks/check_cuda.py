"""First-contact checks of the CUDA-only code paths, as one script with a PASS/FAIL table (no pytest needed on the
GPU machine). The CPU test suite cannot reach these paths, so run this on a new card, a new torch, or after
changing them:

1. varlen attention: `packed_attention(kernel=True)` (torch's variable-length flash kernel, bf16, GQA 9/3 heads)
   against the exact per-sample path in float64, values and input gradients.
2. packed training forward on the real policy (SmolLM2-135M, bf16): `token_logprobs(packed=True)` and the padded
   path, each against an fp32 padded reference of the same weights, on one rollout-like batch, eager and compiled,
   and the gradient norm of a loss on each: packing must add no error beyond the padded path's bf16 round-off.
3. surgery kernels: Triton Gramians and combine on SmolLM2-shaped bf16 stacked buffers against float64 torch.
4. no host sync in a training micro-batch: `mgs.rl.step.micro_batch_loss` + backward (padded and packed, eager and
   compiled, after one warm-up) under `torch.cuda.set_sync_debug_mode("error")`: any operation that makes the host
   wait for the GPU (`.item()`, `nonzero`, a pageable copy) raises and names itself. Each such wait keeps the host
   from queueing the next kernels while the GPU works, which cost ~60 ms per micro-batch on an H200.

    python benchmarks/check_cuda.py [--model smollm2-135m-instruct] [--skip-model]

Tolerances are bf16 round-off (stated per row). Exit status 1 if any check fails.
"""

from __future__ import annotations

import argparse
import itertools
import math
import random
import sys
import time
import traceback
from typing import Callable

import torch

RESULTS: list[tuple[str, bool, str]] = []


def check(name: str) -> Callable:
    """Run the decorated check now; record PASS/FAIL with its detail line (an exception is a FAIL)."""

    def run(fn: Callable[[], tuple[bool, str]]) -> Callable:
        t0 = time.perf_counter()
        try:
            ok, detail = fn()
        except Exception as error:  # report and go on with the other checks
            traceback.print_exc()
            ok, detail = False, f"{type(error).__name__}: {error}"
        RESULTS.append((name, ok, f"{detail} ({time.perf_counter() - t0:.1f} s)"))
        print(f"[{'PASS' if ok else 'FAIL'}] {name}: {detail}", flush=True)
        return fn

    return run


def varlen_attention() -> tuple[bool, str]:
    from mgs.rl.attention import _per_sample_sdpa, packed_attention, packed_max_len, varlen_kernel_applies

    gen = torch.Generator(device="cuda").manual_seed(0)
    lengths = [37, 1, 200, 64, 511]
    n, heads, kv_heads, dim = sum(lengths), 9, 3, 64
    q = torch.randn(1, heads, n, dim, generator=gen, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(1, kv_heads, n, dim, generator=gen, device="cuda", dtype=torch.bfloat16,
                        requires_grad=True) for _ in range(2))
    cu = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32, device="cuda")
    if not varlen_kernel_applies(q.device, q.dtype):
        return False, "varlen_kernel_applies() is False on this card/torch: packing would take the slow exact path"
    fast = packed_attention(q, k, v, cu, packed_max_len(max(lengths)), scaling=dim ** -0.5, kernel=True)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    exact = _per_sample_sdpa(q64, k64, v64, cu, dim ** -0.5, 0.0)
    upstream = torch.randn(exact.shape, generator=gen, device="cuda", dtype=torch.float64)
    (fast.double() * upstream).sum().backward()
    (exact * upstream).sum().backward()
    errs = [float((fast.double() - exact).abs().max())] + [
        float((a.grad.double() - b.grad).abs().max() / b.grad.abs().max()) for a, b in ((q, q64), (k, k64), (v, v64))]
    ok = errs[0] < 2e-2 and max(errs[1:]) < 2e-2
    return ok, f"max |out - exact| {errs[0]:.2e} (< 2e-2); grad q/k/v max rel err {max(errs[1:]):.2e} (< 2e-2)"


def packed_forward(model_name: str, device: str = "cuda", dtype: str = "bfloat16") -> list[tuple[str, Callable[[], tuple[bool, str]]]]:
    """Packed vs padded log-probs, both measured against a higher-precision reference (the same weights in fp32,
    or fp64 for an fp32 run, padded, eager). Comparing the two bf16 paths with each other only measures bf16
    noise: on 2026-12-01 (H200) they differed by a mean 5.9e-2 nats on random tokens, which is not an error of
    either. The check asks that packing adds no error of its own: the packed path is within 1.5x (+ a small floor)
    of the padded path's own distance to the reference, in mean, max and gradient norm. Wrong packing (a sample
    attending to its neighbour, positions not restarting) puts it orders of magnitude further away."""
    import copy

    from mgs.rl.logprobs import build_batch, token_logprobs
    from mgs.rl.model import load_policy
    from mgs.rl.rollout import Completion

    policy = load_policy(model_name, dtype=dtype, device=device)
    model = policy.model.eval()
    ref_dtype = torch.float64 if model.dtype == torch.float32 else torch.float32
    reference = copy.deepcopy(model).to(ref_dtype)
    vocab = model.get_input_embeddings().num_embeddings
    rng = random.Random(0)
    comps = [Completion(prompt_index=i, prompt_ids=[rng.randrange(vocab) for _ in range(rng.randint(40, 300))],
                        completion_ids=[rng.randrange(vocab) for _ in range(rng.randint(1, 256))], text="",
                        finished=False)
             for i in range(48 if device.startswith("cuda") else 6)]
    batch = build_batch(comps, pad_token_id=policy.tokenizer.pad_token_id or 0).to(device)
    mask = batch.completion_mask.bool()

    def run(net: torch.nn.Module, packed: bool, compile: bool) -> tuple[torch.Tensor, float]:
        net.zero_grad(set_to_none=True)
        logp, _ = token_logprobs(net, batch.input_ids, batch.attention_mask, start=batch.start, packed=packed,
                                 compile=compile)
        (logp[mask].sum() / mask.sum()).backward()
        norm = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in net.parameters() if p.grad is not None))
        net.zero_grad(set_to_none=True)
        return logp.detach()[mask].double(), norm

    exact, exact_norm = run(reference, False, False)
    del reference

    def compare(compile: bool) -> tuple[bool, str]:
        errs = {}
        for name, packed in (("padded", False), ("packed", True)):
            got, norm = run(model, packed, compile)
            diff = (got - exact).abs()
            errs[name] = (float(diff.mean()), float(diff.max()), abs(norm - exact_norm) / exact_norm)
        (pad_mean, pad_max, pad_g), (pk_mean, pk_max, pk_g) = errs["padded"], errs["packed"]
        ok = pk_mean <= 1.5 * pad_mean + 2e-3 and pk_max <= 1.5 * pad_max + 0.05 and pk_g <= 1.5 * pad_g + 5e-3
        return ok, (f"{mask.sum().item()} tokens vs the {str(ref_dtype).split('.')[-1]} padded reference: mean |dlogp| "
                    f"packed {pk_mean:.2e} / padded {pad_mean:.2e}, max {pk_max:.2e} / {pad_max:.2e}, grad-norm rel "
                    f"err {pk_g:.2e} / {pad_g:.2e} (packed <= 1.5 x padded + floor)")

    def no_sync() -> tuple[bool, str]:
        from mgs.rl.step import StepSettings, TrainSample, micro_batch_loss

        samples = [TrainSample("d", list(c.prompt_ids), list(c.completion_ids), advantage=(-1.0) ** i)
                   for i, c in enumerate(comps)]
        pad = policy.tokenizer.pad_token_id or 0
        found = []
        for pack, compile in itertools.product((False, True), (False, True)):
            settings = StepSettings(pack=pack, compile=compile)
            for mode in ("default", "error"):  # the first call warms up (compilation may sync), the second is checked
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode(mode)
                try:
                    loss, _ = micro_batch_loss(model, samples, settings, pad, 1000.0)
                    loss.backward()
                except RuntimeError as error:
                    found.append(f"pack={pack} compile={compile}: {str(error).splitlines()[0]}")
                    break
                finally:
                    torch.cuda.set_sync_debug_mode("default")
                    model.zero_grad(set_to_none=True)
        if found:
            return False, "; ".join(found)
        return True, "padded and packed, eager and compiled: forward + backward of 48 samples without a host sync"

    checks = [("packed vs padded token_logprobs, eager", lambda: compare(False)),
              ("packed vs padded token_logprobs, compiled", lambda: compare(True))]
    if device.startswith("cuda"):
        checks.append(("no host sync in a training micro-batch", no_sync))
    return checks


def surgery_kernels() -> tuple[bool, str]:
    from mgs.surgery import StackedGrads, combine, kernels, local_gramians, partition

    if not kernels.available(torch.device("cuda")):
        return False, "Triton kernels not available on this CUDA setup (the torch path would be used)"
    gen = torch.Generator(device="cuda").manual_seed(0)
    shapes = {f"model.layers.{i}.{m}.weight": s for i in range(4) for m, s in (
        ("self_attn.q_proj", (576, 576)), ("self_attn.k_proj", (192, 576)), ("mlp.down_proj", (576, 1536)),
        ("input_layernorm", (576,)))}
    shapes["model.embed_tokens.weight"] = (49152, 576)
    tensors = {n: torch.randn((3, *s), generator=gen, device="cuda").to(torch.bfloat16) for n, s in shapes.items()}
    grads = StackedGrads(["a", "b", "c"], tensors)
    groups = partition(list(shapes), "module")
    fast = local_gramians(grads, groups, impl="triton")
    ref = local_gramians(StackedGrads(["a", "b", "c"], {n: t.double() for n, t in tensors.items()}), groups,
                         impl="torch")
    gram_err = float(((fast.double() - ref).abs() / ref.abs().amax(dim=(1, 2), keepdim=True)).max())
    coeffs = torch.rand(len(groups), 3, dtype=torch.float64)
    got = combine(grads, groups, coeffs, impl="triton")
    want = combine(StackedGrads(["a", "b", "c"], {n: t.double() for n, t in tensors.items()}), groups, coeffs,
                   impl="torch")
    comb_err = max(float((got[n].double() - want[n]).abs().max() / want[n].abs().max()) for n in shapes)
    ok = gram_err < 1e-4 and comb_err < 1e-2
    return ok, f"Gramian max rel err {gram_err:.2e} (< 1e-4, fp32 accumulation); combine {comb_err:.2e} (< 1e-2, bf16 out)"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--skip-model", action="store_true", help="skip the checks that load the policy")
    ap.add_argument("--device", default="cuda",
                    help="cpu: only the packed-forward comparison, exact path, float32 (a smoke test of this script)")
    ap.add_argument("--dtype", default=None, choices=["bfloat16", "float16", "float32"],
                    help="policy dtype of the packed-forward check (default: bfloat16 on CUDA, float32 on CPU)")
    args = ap.parse_args(argv)
    on_cuda = args.device.startswith("cuda")
    if on_cuda and not torch.cuda.is_available():
        print("check_cuda.py needs a CUDA device (the CPU paths are covered by the test suite)")
        return 2
    print(f"{torch.cuda.get_device_name() if on_cuda else 'cpu'} | torch {torch.__version__}", flush=True)
    if on_cuda:
        check("varlen attention vs exact (bf16, GQA 9/3)")(varlen_attention)
        check("surgery Triton kernels vs float64 torch")(surgery_kernels)
    if not args.skip_model:
        try:
            pairs = packed_forward(args.model, args.device, args.dtype or ("bfloat16" if on_cuda else "float32"))
        except Exception as error:
            traceback.print_exc()
            RESULTS.append(("load policy", False, f"{type(error).__name__}: {error}"))
            pairs = []
        for name, fn in pairs:
            check(name)(fn)
    print("\n| check | result | detail |\n|---|---|---|")
    for name, ok, detail in RESULTS:
        print(f"| {name} | {'PASS' if ok else 'FAIL'} | {detail} |")
    return 0 if all(ok for _, ok, _ in RESULTS) else 1


if __name__ == "__main__":
    sys.exit(main())
