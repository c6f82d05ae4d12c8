"""Seconds per GRPO step: our trainer (`mgs.rl.trainer.Run`) vs TRL's GRPOTrainer on the same workload and device.

Why: users compare us against TRL, and generation dominates RL on small models, so the number that matters is
the whole step (sample -> score -> update), measured the same way on both sides in one command.

Same on both sides: the policy (our `load_policy`, or the tiny random model; TRL gets the same cached weights /
the same in-memory architecture and weights), dtype, the prompts (GSM8K train questions from `--data`, else our
procedural math generator; the same seeded order, 64 distinct prompts per step), G completions per prompt,
max new tokens, temperature (top_p 1, top_k off), one optimizer step per rollout batch (TRL: num_iterations=1 and
steps_per_generation = gradient_accumulation_steps, so it skips the old-log-prob pass, as we do), token-mean loss
(TRL `loss_type="dapo"`: normalised by the active tokens of the whole accumulated batch), clip 0.2, group-std
advantage scaling, the KL coefficient (0 = no reference model on either side), AdamW with the same learning rate,
weight decay 0 and grad-norm clip 1, and the reward (our math domain's reward wrapped as a TRL reward function).
Each side otherwise runs at its best settings: ours with its CUDA defaults (static KV cache, compiled decode) and
token-bucketed micro-batches; TRL with its default generation (`--trl-cache static` tries the static cache) and the
largest `per_device_train_batch_size` that fits (halved on out-of-memory).

Each side runs in its own subprocess (clean peak-memory numbers; one side failing doesn't lose the other).
Steps: `--warmup` untimed (compilation, allocator warm-up), then `--steps` timed; the table shows medians.

GPU (the lead; see benchmarks/gpu_all.sh):
  python benchmarks/bench_rl_step.py --device cuda --model smollm2-135m-instruct --dtype bfloat16 \
      --data $MGS_DATA/gsm8k --prompts 64 --samples 8 --max-new-tokens 256 --kl 0 --out $OUT/rl_step.json
CPU (small):
  python benchmarks/bench_rl_step.py --device cpu --prompts 4 --samples 2 --max-new-tokens 16 --model tiny
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

SIDES = ("ours", "trl")


# ------------------------------------------------------------------------------------------------ shared workload
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="tiny", help="'tiny' (random 2-layer Llama) or a policy alias / directory")
    ap.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                    help="default: bfloat16 on CUDA, float32 on CPU")
    ap.add_argument("--data", default=None, help="GSM8K directory with train.jsonl (default: procedural math)")
    ap.add_argument("--prompts", type=int, default=64, help="distinct prompts per step")
    ap.add_argument("--samples", type=int, default=8, help="G: completions per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--kl", type=float, default=0.0, help="KL coefficient (0: no reference model on either side)")
    ap.add_argument("--lr", type=float, default=1e-6)
    ap.add_argument("--strategy", default="mixed", choices=["mixed", "mgs"],
                    help="ours: one domain here, so both give the same update (the 3-domain overhead: "
                         "bench_mgs_overhead.py)")
    ap.add_argument("--micro-batch-tokens", type=int, default=None,
                    help="ours: tokens per micro-batch, padded (real when packed; default on CUDA 65536 packed, "
                         "32768 padded; 4096 on CPU)")
    ap.add_argument("--pack", default="auto", choices=["off", "auto", "on"],
                    help="ours: train.pack (packed, padding-free micro-batches; auto, the trainer's default = on "
                         "CUDA in bf16/fp16); --micro-batch-tokens then counts real tokens")
    ap.add_argument("--rollout-batch", type=int, default=None, help="ours: rows per generate call (default per device)")
    ap.add_argument("--trl-batch", type=int, default=None,
                    help="TRL per_device_train_batch_size (default: 128 on CUDA, all completions on CPU; halved on OOM)")
    ap.add_argument("--trl-cache", default="dynamic", choices=["dynamic", "static"],
                    help="TRL generation KV cache (TRL generates with compile disabled)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per side (median over them)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps per side before the timed ones")
    ap.add_argument("--ours-warmup", type=int, default=None, help="override --warmup for ours (compile, cache growth)")
    ap.add_argument("--sides", default="ours,trl", help="comma list from " + ",".join(SIDES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--timeout", type=float, default=None, help="seconds per side before it is killed")
    ap.add_argument("--total-timeout", type=float, default=None,
                    help="seconds for all sides together: a later side gets at most what is left")
    ap.add_argument("--out", default=None, help="JSON file for the raw numbers")
    ap.add_argument("--side", default=None, choices=SIDES, help=argparse.SUPPRESS)  # internal: run one side
    ap.add_argument("--side-out", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    if args.micro_batch_tokens is None:
        # CUDA: the fastest budget measured per layout (H200, docs/performance.md sessions 7-8); "auto" packs there
        args.micro_batch_tokens = (4096 if not args.device.startswith("cuda")
                                   else 32768 if args.pack == "off" else 65536)
    for name in ("prompts", "samples", "max_new_tokens", "steps"):
        if getattr(args, name) <= 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be positive")
    return args


def math_params(args: argparse.Namespace) -> dict[str, Any]:
    """Our math domain's constructor params for the workload (GSM8K JSONL or the procedural generator)."""
    if args.data:
        train = Path(args.data) / "train.jsonl"
        if not train.is_file():
            raise SystemExit(f"--data {args.data}: no train.jsonl there (give the GSM8K directory)")
        return {"source": "jsonl", "paths": {"train": str(train)}}
    return {"source": "procedural", "difficulty": "medium"}


def load_workload_policy(args: argparse.Namespace):
    from mgs.rl.model import build_tiny_policy, load_policy

    if args.model == "tiny":
        return build_tiny_policy("llama", seed=args.seed, dtype=args.dtype, device=args.device)
    return load_policy(args.model, dtype=args.dtype, device=args.device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def peak_gb(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 1e9 if device.startswith("cuda") else None


def step_prompts(args: argparse.Namespace, domain, total_steps: int):
    """The prompts of each step, in the order our trainer's DomainStream draws them (same seed, same data)."""
    from mgs.rl.trainer import DomainStream

    stream = DomainStream(domain.load("train", seed=args.seed), "math", args.seed)
    return [stream.take(args.prompts) for _ in range(total_steps)]


def save_partial(args: argparse.Namespace, side: str, rows: list[dict[str, Any]], note: str | None) -> None:
    """After every step: the rows so far, so a side killed by --timeout still reports its finished steps."""
    if args.side_out:
        Path(args.side_out).write_text(json.dumps({
            "side": side, "model_note": note, "settings": {}, "rows": rows, "peak_mem_gb": peak_gb(args.device),
            "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu", "partial": True}))


# ------------------------------------------------------------------------------------------------------- ours
def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    from mgs.config import from_dict
    from mgs.rl.logprobs import compiled_graphs
    from mgs.rl.trainer import Run

    policy = load_workload_policy(args)
    name = "tiny:llama" if args.model == "tiny" else args.model
    cfg = from_dict({
        "model": {"name": name, "dtype": args.dtype, "device": args.device},
        "domains": [{"name": "math", "kind": "math", "weight": 1.0, "params": math_params(args), "eval_limit": 0}],
        "strategy": {"name": args.strategy},
        "grpo": {"group_size": args.samples, "prompts_per_step": args.prompts, "kl_coef": args.kl,
                 "entropy_coef": 0.0, "clip_eps": 0.2},
        "rollout": {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_p": 1.0},
        "optim": {"lr": args.lr, "weight_decay": 0.0, "grad_clip": 1.0},
        "train": {"seed": args.seed, "micro_batch_size": args.micro_batch_tokens, "micro_batch_unit": "tokens",
                  "pack": args.pack},
        "eval": {"before": False, "after": False},
        "logging": {"progress": False, "save_completions": False},
    })
    run = Run(cfg, policy=policy)
    if args.rollout_batch:
        run.backend.max_batch_size, run.backend.auto_batch = args.rollout_batch, False
    stage = run.plan.stages[0]
    warmup = args.warmup if args.ours_warmup is None else args.ours_warmup
    rows = []
    for step in range(1, warmup + args.steps + 1):
        sync(args.device)
        graphs0 = compiled_graphs()
        t0 = time.perf_counter()
        scored, times = run.rollout(step, stage)
        t1 = time.perf_counter()
        outcome, _ = run.learn(scored, step, stage)
        sync(args.device)
        t2 = time.perf_counter()
        m = outcome.metrics
        learn_s = t2 - t1
        inner = m["time/train_s"] + m["time/surgery_s"] + m["time/optim_s"]
        rows.append({
            "step": step, "timed": step > warmup, "step_s": t2 - t0,
            "rollout_s": times["time/rollout_s"], "reward_s": times["time/reward_s"],
            "other_s": (t1 - t0) - times["time/rollout_s"] - times["time/reward_s"] + learn_s - inner,
            "train_s": m["time/train_s"], "surgery_s": m["time/surgery_s"], "optim_s": m["time/optim_s"],
            "completions": len(scored), "completion_tokens": sum(len(s.completion_ids) for s in scored),
            "reward_mean": m.get("train/math/reward_mean"), "skipped": m.get("train/skipped"),
            "new_graphs": compiled_graphs() - graphs0,  # torch.compile recompiles in this step (rollout + update)
        })
        print(f"[ours] step {step}: {rows[-1]['step_s']:.2f} s (rollout {rows[-1]['rollout_s']:.2f}, train "
              f"{rows[-1]['train_s']:.2f}), {rows[-1]['completion_tokens']} tokens", flush=True)
        save_partial(args, "ours", rows, policy.note)
    settings = {
        "trainer": "mgs.rl.trainer.Run (rollout + learn, no logging)", "strategy": args.strategy,
        "rollout_backend": type(run.backend).__name__, "kv_cache": getattr(run.backend, "cache_implementation", "static"),
        "compiled_decode": run.backend.compile, "rollout_batch_rows": run.backend.max_batch_size or "all",
        "compiled_training_forward": run.settings.compile,
        "micro_batch": (f"{args.micro_batch_tokens} real tokens, packed" if run.settings.pack
                        else f"{args.micro_batch_tokens} padded tokens, length-bucketed"), "loss": "token mean (global)",
        "optimizer": "torch AdamW", "reference_model": bool(args.kl),
    }
    return {"side": "ours", "model_note": policy.note, "settings": settings, "rows": rows,
            "peak_mem_gb": peak_gb(args.device)}


# ------------------------------------------------------------------------------------------------------- TRL
def math_reward_for_trl(domain, samples_by_uid: dict[str, Any], stats: dict[str, float]):
    """Our math reward as a TRL reward function: TRL passes the dataset's extra columns (`uid`) per completion;
    a conversational completion is a list of messages whose last content is the answer."""
    from mgs.domains.template import score_responses

    def math_reward(prompts, completions, uid, completion_ids=None, **_):
        t0 = time.perf_counter()
        texts = [c[-1]["content"] if isinstance(c, list) else str(c) for c in completions]
        results = score_responses(domain, [samples_by_uid[u] for u in uid], texts, "none")
        stats["reward_s"] += time.perf_counter() - t0
        stats["completions"] += len(texts)
        stats["completion_tokens"] += sum(len(ids) for ids in completion_ids) if completion_ids is not None else 0
        # A reward that can't score returns None. Our trainer leaves such a sample out of its group; TRL turns a
        # sample that no reward function scores into NaN, and NaN advantages would make the weights NaN. So TRL
        # gets the domain's lowest score for it, counted. (Not the cause of TRL's failed step-6 generation on the
        # H200 on 2026-12-01: that run counted 0 unscored.)
        unscored = sum(r.score is None for r in results)
        stats["unscored"] += unscored
        return [float(getattr(domain, "min_score", 0.0)) if r.score is None else r.score for r in results]

    return math_reward


def run_trl(args: argparse.Namespace, batch: int) -> dict[str, Any]:
    import trl
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from mgs.domains.math import MathDomain

    policy = load_workload_policy(args)
    domain = MathDomain(name="math", **math_params(args))
    total = args.warmup + args.steps
    per_step = step_prompts(args, domain, total)
    rows_data = [{"prompt": [dict(m) for m in s.messages], "uid": s.uid} for step in per_step for s in step]
    by_uid = {s.uid: s for step in per_step for s in step}
    n_completions = args.prompts * args.samples
    if n_completions % batch:
        raise SystemExit(f"TRL batch {batch} must divide prompts x samples = {n_completions}")
    accumulation = n_completions // batch
    stats = {"reward_s": 0.0, "generate_s": 0.0, "completions": 0, "completion_tokens": 0, "unscored": 0,
             "skipped": 0}
    on_cuda = args.device.startswith("cuda")
    with tempfile.TemporaryDirectory() as out_dir:
        source = str(getattr(policy.model.config, "_name_or_path", "") or "")
        if args.kl and not (source and Path(source).is_dir()):
            # TRL builds its reference model from the policy's config path: give the in-memory tiny model one
            policy.model.save_pretrained(Path(out_dir) / "policy")
            policy.model.config._name_or_path = str(Path(out_dir) / "policy")
        config = GRPOConfig(
            output_dir=out_dir, report_to="none", save_strategy="no", logging_strategy="steps", logging_steps=1,
            disable_tqdm=True,
            seed=args.seed,
            max_steps=total, per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
            steps_per_generation=accumulation, num_iterations=1, num_generations=args.samples,
            max_completion_length=args.max_new_tokens, temperature=args.temperature, top_p=1.0, top_k=0,
            beta=args.kl, loss_type="dapo", epsilon=0.2, scale_rewards="group", learning_rate=args.lr,
            lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
            bf16=on_cuda and args.dtype == "bfloat16", fp16=on_cuda and args.dtype == "float16",
            use_cpu=not on_cuda, disable_dropout=True, shuffle_dataset=False, dataloader_num_workers=0,
            cache_implementation="static" if args.trl_cache == "static" else None, log_completions=False,
        )
        trainer = GRPOTrainer(model=policy.model, reward_funcs=math_reward_for_trl(domain, by_uid, stats),
                              args=config, train_dataset=Dataset.from_list(rows_data),
                              processing_class=policy.tokenizer)
        generate = trainer._generate  # timed by wrapping: TRL's own profiling only reports to trackers

        def timed_generate(*a, **k):
            sync(args.device)
            t0 = time.perf_counter()
            out = generate(*a, **k)
            sync(args.device)
            stats["generate_s"] += time.perf_counter() - t0
            return out

        trainer._generate = timed_generate
        rows: list[dict[str, Any]] = []

        class StepTimer(TrainerCallback):
            def on_log(self, a, state, control, logs=None, **kw):  # runs after on_step_end of the same step
                if not logs or not rows or "loss" not in logs:  # (the end-of-training summary has no loss)
                    return
                seen = {k: float(v) for k, v in logs.items() if isinstance(v, (int, float))}
                for key in ("loss", "grad_norm", "reward", "reward_std"):
                    if key in seen:
                        rows[-1][f"trl_{key}"] = seen[key]
                print(f"[trl] step {len(rows)} log: loss {seen.get('loss', float('nan')):.4g}, grad norm "
                      f"{seen.get('grad_norm', float('nan')):.4g}, reward {seen.get('reward', float('nan')):.4g}",
                      flush=True)
                save_partial(args, "trl", rows, policy.note)

            def on_pre_optimizer_step(self, a, state, control, **kw):
                # Our trainer skips the optimizer step when the gradient is non-finite (train/skipped); TRL applies
                # it, and on 2026-12-02 (H200) step 5's NaN gradient made every weight NaN, so step 6's sampling
                # hit a device assert. Same guard on both sides: drop the gradients (AdamW then leaves every
                # parameter as it is), count the step as skipped. Costs one norm per parameter, like ours.
                grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
                if grads and not bool(torch.isfinite(torch.stack([g.float().norm() for g in grads]).sum())):
                    for p in trainer.model.parameters():
                        p.grad = None
                    stats["skipped"] += 1

            def on_step_begin(self, a, state, control, **kw):
                sync(args.device)
                self.t0 = time.perf_counter()
                self.before = dict(stats)

            def on_step_end(self, a, state, control, **kw):
                sync(args.device)
                step = len(rows) + 1
                rows.append({
                    "step": step, "timed": step > args.warmup, "step_s": time.perf_counter() - self.t0,
                    "rollout_s": stats["generate_s"] - self.before["generate_s"],
                    "reward_s": stats["reward_s"] - self.before["reward_s"],
                    "completions": stats["completions"] - self.before["completions"],
                    "completion_tokens": stats["completion_tokens"] - self.before["completion_tokens"],
                    "unscored": stats["unscored"] - self.before["unscored"],
                    "skipped": stats["skipped"] - self.before["skipped"],
                })
                # after the timed window: are the weights still finite? (on 2026-12-02, H200, this showed that
                # TRL's step-5 update with a NaN gradient, not its generation, broke step 6; hence the guard above)
                rows[-1]["weights_finite"] = bool(all(torch.isfinite(p).all() for p in trainer.model.parameters()))
                print(f"[trl] step {step}: {rows[-1]['step_s']:.2f} s (generate {rows[-1]['rollout_s']:.2f}), "
                      f"{rows[-1]['completion_tokens']} tokens, {rows[-1]['unscored']} unscored, "
                      f"{'SKIPPED (non-finite gradient), ' if rows[-1]['skipped'] else ''}weights finite "
                      f"{rows[-1]['weights_finite']}", flush=True)
                for r in rows:
                    r.setdefault("train_s", r["step_s"] - r["rollout_s"] - r["reward_s"])
                save_partial(args, "trl", rows, policy.note)

        trainer.add_callback(StepTimer())
        trainer.train()
    for r in rows:
        r["train_s"] = r["step_s"] - r["rollout_s"] - r["reward_s"]  # TRL: everything else (fwd/bwd/optim/logging)
    settings = {
        "trainer": f"trl.GRPOTrainer {trl.__version__}", "kv_cache": args.trl_cache, "compiled_decode": False,
        "per_device_train_batch_size": batch, "gradient_accumulation_steps": accumulation,
        "steps_per_generation": accumulation, "num_iterations": 1, "loss_type": "dapo (token mean, global)",
        "optimizer": config.optim, "reference_model": bool(args.kl), "bf16": config.bf16,
        "logging": "every step (loss / grad norm / reward recorded per step)",
    }
    return {"side": "trl", "model_note": policy.note, "settings": settings, "rows": rows,
            "peak_mem_gb": peak_gb(args.device)}


# ------------------------------------------------------------------------------------------------------- driver
def run_side(args: argparse.Namespace) -> int:
    """Child process: run one side, write its JSON. Exit code 3 = out of memory (the parent may retry)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        if args.side == "ours":
            result = run_ours(args)
        else:
            result = run_trl(args, args.trl_batch or args.prompts * args.samples)
    except torch.OutOfMemoryError as e:
        Path(args.side_out).write_text(json.dumps({"side": args.side, "error": f"out of memory: {e}"[:500]}))
        return 3
    result["device"] = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    Path(args.side_out).write_text(json.dumps(result))
    return 0


def summarize(result: dict[str, Any]) -> dict[str, float]:
    timed = [r for r in result["rows"] if r["timed"]] or result["rows"][-1:]  # partial: at least the last step
    med = lambda key: statistics.median(r[key] for r in timed if r.get(key) is not None)  # noqa: E731
    step_s = med("step_s")
    tokens = sum(r["completion_tokens"] for r in timed)
    completions = sum(r["completions"] for r in timed)
    total_s = sum(r["step_s"] for r in timed)
    out = {"steps_timed": len(timed), "step_s": step_s, "step_s_min": min(r["step_s"] for r in timed),
           "step_s_max": max(r["step_s"] for r in timed), "completions_per_s": completions / total_s,
           "tokens_per_s": tokens / total_s, "mean_completion_tokens": tokens / max(completions, 1),
           "peak_mem_gb": result.get("peak_mem_gb"),
           "skipped_steps": sum(1 for r in timed if r.get("skipped"))}
    if any("new_graphs" in r for r in timed):
        out["new_graphs"] = sum(r.get("new_graphs", 0) for r in timed)
    for key in ("rollout_s", "reward_s", "train_s", "surgery_s", "optim_s", "other_s"):
        if any(r.get(key) is not None for r in timed):
            out[key] = med(key)
    return out


def launch(args: argparse.Namespace, argv: list[str], side: str, workdir: Path, deadline: float | None = None
           ) -> dict[str, Any]:
    """Run one side in a subprocess (TRL: retry with half the batch on out-of-memory) until `args.timeout` or the
    `deadline` (time.monotonic()), whichever comes first."""
    batch = args.trl_batch or ((128 if args.device.startswith("cuda") else args.prompts * args.samples))
    while True:
        out = workdir / f"{side}.json"
        cmd = [sys.executable, os.path.abspath(__file__), *argv, "--side", side, "--side-out", str(out)]
        if side == "trl":
            cmd += ["--trl-batch", str(batch)]
        print(f"== {side}: {' '.join(cmd[1:])}", flush=True)
        limits = [t for t in (args.timeout, None if deadline is None else deadline - time.monotonic()) if t]
        limit = min(limits) if limits else None
        if limit is not None and limit <= 5:
            return {"side": side, "error": "no time left (--total-timeout)"}
        try:
            proc = subprocess.run(cmd, timeout=limit)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            partial = json.loads(out.read_text()) if out.is_file() else {}
            if partial.get("rows"):  # the steps finished before the limit still make a (marked) table row
                partial["incomplete"] = f"timed out after {limit:.0f} s with {len(partial['rows'])} steps done"
                return partial
            return {"side": side, "error": f"timed out after {limit:.0f} s before its first step"}
        result = json.loads(out.read_text()) if out.is_file() else {"side": side, "error": f"exit code {code}"}
        if code == 3 and side == "trl" and batch % 2 == 0 and batch > args.samples:
            print(f"== trl: out of memory at per_device_train_batch_size {batch}; retrying with {batch // 2}")
            batch //= 2
            continue
        if code != 0 and result.get("rows") and result.get("partial"):
            result["incomplete"] = f"exited with code {code} after {len(result['rows'])} steps (see its log above)"
        elif code != 0 and "error" not in result:
            result["error"] = f"exit code {code}"
        return result


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.side:
        return run_side(args)
    sides = [s for s in args.sides.split(",") if s]
    if "trl" in sides:
        try:
            import trl  # noqa: F401
        except ImportError as e:
            print(f"TRL side skipped: `import trl` fails ({e}); pip install trl==1.16.0 (the `bench` extra)")
            sides.remove("trl")
    results: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + args.total_timeout if args.total_timeout else None
    with tempfile.TemporaryDirectory() as tmp:
        for side in sides:
            results[side] = launch(args, argv, side, Path(tmp), deadline)  # a repeated --trl-batch: the last one wins
    for side, res in results.items():
        if "error" not in res:
            res["summary"] = summarize(res)
    print_report(args, results)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        workload = {k: v for k, v in vars(args).items() if k not in ("side", "side_out", "out")}
        Path(args.out).write_text(json.dumps({"workload": workload, "results": results}, indent=1))
    return 0 if all("error" not in r for r in results.values()) else 1


def print_report(args: argparse.Namespace, results: dict[str, dict[str, Any]]) -> None:
    print()
    print(f"workload: model {args.model} ({args.dtype}) on {args.device}; {args.prompts} prompts x {args.samples} "
          f"completions, max {args.max_new_tokens} new tokens, temperature {args.temperature}, kl {args.kl}, "
          f"lr {args.lr}; data {args.data or 'procedural math'}; median of {args.steps} steps after warm-up")
    for side, res in results.items():
        if "error" in res:
            print(f"{side}: FAILED: {res['error']}")
            continue
        print(f"{side} ({res['device']}): " + ", ".join(f"{k}={v}" for k, v in res["settings"].items()))
        if res.get("incomplete"):
            timed = sum(r["timed"] for r in res["rows"])
            print(f"{side}: PARTIAL, {res['incomplete']} ({timed} timed; "
                  + ("median over those)" if timed else "no timed step: its row is the last warm-up step)"))
    cols = [("step_s", "s/step", ".2f"), ("completions_per_s", "compl/s", ".1f"), ("tokens_per_s", "tok/s", ".0f"),
            ("mean_completion_tokens", "mean len", ".1f"), ("peak_mem_gb", "peak GB", ".2f"),
            ("rollout_s", "rollout", ".2f"), ("reward_s", "reward", ".2f"), ("train_s", "train", ".2f"),
            ("surgery_s", "surgery", ".3f"), ("optim_s", "optim", ".3f"), ("other_s", "other", ".2f"),
            ("skipped_steps", "skipped", "d"), ("new_graphs", "recomp", "d")]
    trl_s = (results.get("trl") or {}).get("summary", {}).get("step_s")
    if trl_s:
        for res in results.values():
            if res.get("summary"):
                res["summary"]["speedup_vs_trl"] = trl_s / res["summary"]["step_s"]
        cols.append(("speedup_vs_trl", "vs TRL", ".2f"))
    print(f"{'side':<6}" + "".join(f"{title:>10}" for _, title, _ in cols))
    for side, res in results.items():
        s = res.get("summary")
        if not s:
            continue
        cells = []
        for key, _, fmt in cols:
            v = s.get(key)
            cells.append(f"{'-' if v is None else format(v, fmt):>10}")
        print(f"{side:<6}" + "".join(cells))
    if "ours" in results and "trl" in results and results["ours"].get("summary") and results["trl"].get("summary"):
        ratio = results["trl"]["summary"]["step_s"] / results["ours"]["summary"]["step_s"]
        print(f"speed-up (TRL s/step / ours s/step): {ratio:.2f}x (target >= 3x, stretch 5x)")
    print("columns: medians over the timed steps; rollout = generation, reward = scoring, train = forward+backward "
          "(TRL: everything but generation and reward), surgery / optim = ours only, other = ours' advantages, "
          "reference log-probs and bookkeeping; skipped = timed steps whose gradient was non-finite (both sides "
          "drop such an update); recomp = graphs torch.compile built during the timed steps (ours; each ~1 s on a "
          "GPU, a cause of slow outlier steps); vs TRL = TRL s/step / the side's s/step")


if __name__ == "__main__":
    sys.exit(main())
