"""How much do N processes sharing one GPU get done together, versus one alone? (The experiment runs 6-9 training
processes per GPU: whether more processes, or CUDA MPS, raise the total throughput decides how many to start.)

Each worker builds a random SmolLM2-135M-shaped Llama (from a config: no weights needed) in bf16 on the GPU and
runs the two kinds of work an RL step has, for a fixed number of iterations after a warm-up:
  decode: one forward of [rows, 1] new tokens over a [rows, ctx] static KV cache (launch-bound, like a rollout);
  train:  forward + backward of [rows_train, seq] tokens (larger kernels).
The parent starts N workers at once and prints, per N, the wall time and the throughput relative to N = 1.

    python scripts/probe_gpu_sharing.py --procs 1,3,6,9          # time-sliced sharing (the default)
    nvidia-cuda-mps-control -d && python scripts/probe_gpu_sharing.py --procs 6,9 --tag mps; echo quit | nvidia-cuda-mps-control
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time


def worker(args: dict, start, out) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, StaticCache

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048)
    dev = args["device"]
    model = LlamaForCausalLM(cfg).to(dev, torch.bfloat16)
    rows, ctx = args["rows"], args["ctx"]
    cache = StaticCache(config=cfg, max_cache_len=ctx)
    ids = torch.randint(0, 49152, (rows, 1), device=dev)
    pos = torch.full((rows, 1), ctx // 2, device=dev)
    cache_pos = torch.tensor([ctx // 2], device=dev)
    train_ids = torch.randint(0, 49152, (args["train_rows"], args["seq"]), device=dev)

    def decode():
        with torch.no_grad():
            model(input_ids=ids, position_ids=pos, cache_position=cache_pos, past_key_values=cache, use_cache=True,
                  logits_to_keep=1)

    def train():
        model(input_ids=train_ids, labels=train_ids).loss.backward()

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()

    for fn in (decode, train):
        fn()
    sync()
    start.wait()
    times = {}
    for name, fn, iters in (("decode", decode, args["decode_iters"]), ("train", train, args["train_iters"])):
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        sync()
        times[name] = time.perf_counter() - t0
    out.put(times)


def run(n: int, args: dict) -> dict:
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(args, start, out)) for _ in range(n)]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    return {k: max(r[k] for r in results) for k in results[0]}  # the slowest worker ends the phase


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--procs", default="1,3,6,9")
    p.add_argument("--rows", type=int, default=192)
    p.add_argument("--ctx", type=int, default=1280)
    p.add_argument("--decode-iters", type=int, default=50)
    p.add_argument("--train-rows", type=int, default=16)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--train-iters", type=int, default=4)
    p.add_argument("--tag", default="time-sliced")
    p.add_argument("--device", default="cuda", help="cuda (what it is for) or cpu (a smoke test of the script)")
    p.add_argument("--out", default=None)
    a = p.parse_args()
    args = dict(rows=a.rows, ctx=a.ctx, decode_iters=a.decode_iters, train_rows=a.train_rows, seq=a.seq,
                train_iters=a.train_iters, device=a.device)
    rows, base = [], None
    print(f"sharing: {a.tag}; decode [{a.rows}, 1] over a {a.ctx}-token static cache x {a.decode_iters}; "
          f"train fwd+bwd [{a.train_rows}, {a.seq}] x {a.train_iters}")
    print("| procs | decode wall s | decode work/s vs 1 proc | train wall s | train work/s vs 1 proc |")
    print("|---|---|---|---|---|")
    for n in [int(x) for x in a.procs.split(",")]:
        t = run(n, args)
        if base is None:
            base = {k: v / n for k, v in t.items()}  # per-process time of the first row
        rel = {k: n * base[k] / t[k] for k in t}
        rows.append({"procs": n, **{f"{k}_s": t[k] for k in t}, **{f"{k}_rel": rel[k] for k in t}})
        print(f"| {n} | {t['decode']:.2f} | {rel['decode']:.2f}x | {t['train']:.2f} | {rel['train']:.2f}x |",
              flush=True)
    if a.out:
        with open(a.out, "w") as f:
            json.dump({"tag": a.tag, "args": args, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
